"""Melody pairs: one composed melody heard with other acoustics, what MusicLM's melody embedding trains on.

The paper had to collect such pairs by hand; here the composer's parts are re-arranged exactly. Each clip of a
`--melody-pairs` corpus keeps its default rendering (`original`, the same key and audio as the default corpus) and
adds renderings of the same melody notes, same tempo and timing:

- `instrument`  the lead on an instrument of another family, accompaniment kept
- `arrangement` the accompaniment on other instruments, without pad and drums
- `octave`      the lead an octave up or down, accompaniment kept
- `solo`        the lead alone
- `hummed`      the bare line as a whistle, an ocarina (General MIDI 78, 79) or a sine tone (synthesised here)

Every sample's json carries `melody`: {"id" (the original's key), "variant", "program" (None for the sine),
"notes": [[onset s, offset s, MIDI pitch], ...]} with the notes as they sound in that variant. Variants draw from
their own generator (`MELODY_STREAM`), so the original clips stay those of the default corpus.
"""

from __future__ import annotations

import numpy as np

from musiclm.data.synth.captions import write_caption
from musiclm.data.synth.composer import Piece
from musiclm.data.synth.midi import TPQ
from musiclm.data.synth.render import render_midi
from musiclm.data.synth.styles import GM

VARIANTS = ("original", "instrument", "arrangement", "octave", "solo", "hummed")
HUM_PROGRAMS = {78: "whistle", 79: "ocarina", None: "sine tone"}  # None: a sine synthesised from the notes
MELODY_STREAM = 2  # salt of the variants' generator, apart from the composer's and the prompt kinds'
LEAD_FAMILIES = ("piano", "mallet percussion", "organ", "guitar", "strings", "brass", "saxophone", "woodwind",
                 "synth lead")  # fmt: skip
ACCOMPANIMENT_FAMILIES = {"harmony": ("piano", "organ", "guitar", "strings", "synth pad"), "bass": ("bass",),
                          "pad": ("synth pad", "strings")}  # fmt: skip


def melody_notes(tracks: list[dict], quarter_bpm: float, seconds: float) -> list[list[float]]:
    """The melody part's notes that start within `seconds`: [onset s, offset s, pitch]."""
    tick_s = 60.0 / (quarter_bpm * TPQ)
    melody = next(t for t in tracks if t["name"] == "melody")
    return [
        [round(s * tick_s, 4), round(min(e * tick_s, seconds), 4), int(p)]
        for s, e, p, _ in melody["notes"]
        if s * tick_s < seconds
    ]


def sine_line(notes: list[list[float]], velocities: list[int], sample_rate: int, seconds: float) -> np.ndarray:
    """A plain sine per note (10-ms attack, 40-ms release): the most neutral "hummed" timbre there is."""
    n = int(round(seconds * sample_rate))
    out = np.zeros(n + sample_rate, dtype=np.float64)
    ramp_in, ramp_out = int(0.01 * sample_rate), int(0.04 * sample_rate)
    for (on, off, pitch), vel in zip(notes, velocities, strict=True):
        a, b = int(on * sample_rate), int(off * sample_rate) + ramp_out
        t = np.arange(b - a) / sample_rate
        env = np.minimum(1.0, np.minimum(np.arange(b - a) / ramp_in, (b - a - np.arange(b - a)) / ramp_out))
        out[a:b] += (vel / 127) * env * np.sin(2 * np.pi * 440.0 * 2 ** ((pitch - 69) / 12) * t)
    return out[:n].astype(np.float32)


def _choose(rng: np.random.Generator, programs: list[int]) -> int:
    return int(programs[int(rng.integers(len(programs)))])


def _with_program(track: dict, program: int | None) -> dict:
    return track | {"program": program}


def variant_tracks(piece: Piece, variant: str, rng: np.random.Generator) -> tuple[list[dict], int | None]:
    """(the parts of `variant`, the lead's program): the melody notes are the piece's, moved an octave for
    `octave`; `hummed` comes back with the lead on a hum program (None: synthesise a sine)."""
    tracks = piece.tracks
    melody = next(t for t in tracks if t["name"] == "melody")
    lead = melody["program"]
    if variant == "original":
        return tracks, lead
    if variant == "instrument":
        family = GM[lead][2]
        other = [p for p, g in GM.items() if g[2] in LEAD_FAMILIES and g[2] != family]
        lead = _choose(rng, other)
        return [_with_program(t, lead) if t is melody else t for t in tracks], lead
    if variant == "arrangement":
        out = []
        for t in tracks:
            if t["name"] in ("harmony", "bass"):
                same = [p for p, g in GM.items() if g[2] in ACCOMPANIMENT_FAMILIES[t["name"]] and p != t["program"]]
                t = _with_program(t, _choose(rng, same))
            if t["name"] not in ("pad", "drums"):
                out.append(t)
        return out, lead
    if variant == "octave":
        pitches = [n[2] for n in melody["notes"]] or [60]
        shift = -12 if max(pitches) + 12 > 96 else 12 if rng.random() < 0.5 or min(pitches) < 48 else -12
        moved = melody | {"notes": [(s, e, p + shift, v) for s, e, p, v in melody["notes"]]}
        return [moved if t is melody else t for t in tracks], lead
    if variant == "solo":
        return [melody], lead
    if variant == "hummed":
        hum = list(HUM_PROGRAMS)[int(rng.integers(len(HUM_PROGRAMS)))]
        return [_with_program(melody, hum)], hum
    raise ValueError(f"unknown melody variant {variant!r}: one of {VARIANTS}")


def _attributes(at: dict, tracks: list[dict], lead: int | None) -> dict:
    """The original's attributes with what a variant changed (lead, accompaniment, drums)."""
    programs = [t["program"] for t in tracks if t["name"] not in ("melody", "drums")]
    drums = any(t["name"] == "drums" for t in tracks)
    out = at | {"accompaniment": [GM[p][1] for p in programs], "has_drums": drums}
    if lead in GM:
        out |= {"instrument": GM[lead][0], "instrument_name": GM[lead][1], "instrument_family": GM[lead][2],
                "instrument_program": lead}  # fmt: skip
    out["instruments"] = ([GM[lead][0]] if lead in GM else []) + [GM[p][0] for p in programs] + (
        ["Drum Kit"] if drums else []
    )
    return out


def render_variant(
    piece: Piece, variant: str, rng: np.random.Generator, seconds: float, sample_rate: int, soundfont: str | None
) -> tuple[np.ndarray, dict]:
    """(audio at `sample_rate`, not yet cut or normalised; the variant's meta minus `sample_rate`/`duration`)."""
    tracks, lead = variant_tracks(piece, variant, rng)
    notes = melody_notes(tracks, piece.quarter_bpm, seconds)
    if variant == "hummed" and lead is None:
        vel = [v for s, _, _, v in tracks[0]["notes"] if s * 60.0 / (piece.quarter_bpm * TPQ) < seconds]
        audio = sine_line(notes, vel, sample_rate, seconds)
    else:
        audio = render_midi(Piece(tracks, piece.quarter_bpm, piece.meter, piece.root, piece.mode, {}).midi(),
                            sample_rate, soundfont)  # fmt: skip
    at = _attributes(piece.attributes, tracks, lead)
    if variant in ("solo", "hummed"):
        name = GM[lead][1] if lead in GM else HUM_PROGRAMS[lead]
        caption = f"a {'solo ' + name if variant == 'solo' else 'melody hummed as a plain ' + name} line, " \
                  f"{at['tempo_bpm']} bpm, in {at['key']} {at['mode']}"  # fmt: skip
        tags = [name, "solo melody"]
    else:
        caption, tags = write_caption(at, rng)
    melody = {"variant": variant, "program": lead, "notes": notes}
    return audio, {"caption": caption, "tags": tags, "source": "synth", "attributes": at, "melody": melody}
