"""The composer: a drawn style becomes a multi-track piece (melody, harmony, bass, optional pad and drums) as SMF bytes.

`tempo_bpm` counts the felt beat (quarter note in 3/4 and 4/4, dotted quarter in 6/8; the MIDI tempo is per quarter
note, so in 6/8 it is 1.5 x tempo_bpm). Tempo buckets: slow < 90 <= medium < 130 <= fast.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from musiclm.data.synth.kinds import apply_kind
from musiclm.data.synth.midi import METERS, TPQ, write_midi
from musiclm.data.synth.styles import (
    DRUM,
    DRUM_PATTERNS,
    DYNAMICS,
    GM,
    KEYS,
    MOODS,
    PROGRESSIONS,
    SCALES,
    STYLES,
    VOLUME,
    Style,
)


def _pitch(root: int, scale: tuple[int, ...], degree: int, centre: int) -> int:
    """MIDI pitch of a scale degree (may be negative or > 6), in the octave placing degree 0 nearest `centre`."""
    octave, step = divmod(degree, 7)
    base = centre - ((centre - root) % 12)
    if centre - base > 6:
        base += 12
    return int(np.clip(base + 12 * octave + scale[step], 21, 108))


def _chord(degree: int, sevenths: bool) -> list[int]:
    return [degree, degree + 2, degree + 4] + ([degree + 6] if sevenths else [])


def _bar_rhythm(rng: np.random.Generator, beats: int, beat_ticks: int, density: str, cadence: bool) -> list[int]:
    """Note durations (ticks, negative = rest) filling one bar, built beat by beat from rhythm cells."""
    unit = beat_ticks // (6 if beat_ticks != TPQ else 4)
    if beat_ticks != TPQ:  # compound beat: three eighths
        cells = [[6], [2, 2, 2], [4, 2], [2, 4], [3, 1, 2]]
    else:
        cells = {
            "sparse": [[4], [4], [2, 2], [3, 1]],
            "medium": [[4], [2, 2], [3, 1], [2, 1, 1], [1, 1, 2]],
            "busy": [[2, 2], [1, 1, 1, 1], [2, 1, 1], [1, 1, 2], [3, 1]],
        }[density]
    durs = [d * unit for b in range(beats) for d in cells[rng.integers(len(cells))]]
    merge = {"sparse": 0.45, "medium": 0.2, "busy": 0.08}[density]
    out = [durs[0]]
    for d in durs[1:]:
        if rng.random() < merge:
            out[-1] += d
        else:
            out.append(d)
    if cadence:  # land: the last beat(s) become one long note
        keep, total = [], 0
        for d in out:
            if total + d > (beats - 1) * beat_ticks:
                break
            keep.append(d)
            total += d
        out = keep + [beats * beat_ticks - total]
    if len(out) > 2 and rng.random() < 0.25:  # an occasional breath
        i = int(rng.integers(1, len(out) - 1))
        out[i] = -out[i]
    return out


def _bar_melody(
    rng, rhythm: list[int], chord: list[int], prev: int, beat_ticks: int, final: int | None
) -> list[tuple[int, int, int]]:
    """(onset, duration, degree) for one bar: chord tones on beats, mostly stepwise motion in between."""
    notes, t = [], 0
    for i, d in enumerate(rhythm):
        if d > 0:
            if final is not None and i == len(rhythm) - 1:
                deg = min((final + 7 * k for k in (-1, 0, 1)), key=lambda x: abs(x - prev))
            elif t % beat_ticks == 0:
                tones = [c + 7 * k for c in chord[:3] for k in (-2, -1, 0, 1)]
                near = sorted(tones, key=lambda x: abs(x - prev))[:3]
                deg = near[int(rng.integers(len(near)))]
            else:
                step = rng.choice([-1, 1, -1, 1, -2, 2, 3, -3], p=[0.2, 0.2, 0.15, 0.15, 0.1, 0.1, 0.05, 0.05])
                deg = prev + int(step)
            deg = int(np.clip(deg, -3, 10))
            notes.append((t, d, deg))
            prev = deg
        t += abs(d)
    return notes


def _melody(rng, bars: int, beats: int, beat_ticks: int, style: Style, progression) -> list[tuple[int, int, int]]:
    """Phrase structure A A' B A' (4 bars each): a motif in bars 1 and 3, its rhythm and contour reused across
    phrases and transposed with the chord (a sequence), a free bar 2, and a cadence bar (tonic at A' ends)."""
    bar_ticks = beats * beat_ticks
    cache: dict[tuple, tuple[list[int], list[int]]] = {}  # (section, bar role) -> (rhythm, degrees relative to chord)
    out, prev = [], 2
    for b in range(bars):
        phrase, pos = divmod(b, 4)
        section = "B" if phrase % 4 == 2 else "A"
        chord_root = progression[section][(b // style.chord_bars) % 4]
        chord = _chord(chord_root, style.sevenths)
        role = ("motif", "free", "motif", "cadence")[pos]
        ending = "tonic" if (pos == 3 and phrase % 2 == 1) else None
        slot = (section, role, ending)
        if slot in cache:
            rhythm, rel = cache[slot]
            notes, k = [], 0
            t = 0
            for d in rhythm:
                if d > 0:
                    notes.append((t, d, int(np.clip(chord_root + rel[k], -3, 10))))
                    k += 1
                t += abs(d)
        else:
            rhythm = _bar_rhythm(rng, beats, beat_ticks, style.density, cadence=role == "cadence")
            final = 0 if ending == "tonic" else (chord_root if role == "cadence" else None)
            notes = _bar_melody(rng, rhythm, chord, prev, beat_ticks, final)
            cache[slot] = (rhythm, [n[2] - chord_root for n in notes])
        out += [(b * bar_ticks + t, d, deg) for t, d, deg in notes]
        if notes:
            prev = notes[-1][2]
    return out


def _comp(
    pattern: str, beats: int, beat_ticks: int, chord_pitches: list[int], bar: int
) -> list[tuple[int, int, int, float]]:
    """Accompaniment hits in one bar: (onset, duration, pitch, accent)."""
    bt = beat_ticks
    if pattern == "block":  # ambient: a chord held for two bars (its chords change every other bar)
        return [(0, 2 * beats * bt, p, 0.8) for p in chord_pitches] if bar % 2 == 0 else []
    if pattern == "oompah":  # waltz: chord on beats 2 and 3 (the bass takes beat 1)
        return [(b * bt, bt * 3 // 4, p, 0.8) for b in range(1, beats) for p in chord_pitches]
    if pattern == "offbeats":  # march: chords on 2 and 4
        return [(b * bt, bt // 2, p, 0.8) for b in (1, 3) for p in chord_pitches]
    if pattern == "arpeggio":  # broken chord in eighths (sixteenths for fast busy styles would blur; keep eighths)
        step = bt // 2 if bt == TPQ else bt // 3
        seq = chord_pitches + chord_pitches[1:-1][::-1]
        per_beat = bt // step
        return [
            (i * step, step, seq[i % len(seq)], 1.0 if i % per_beat == 0 else 0.65) for i in range(beats * per_beat)
        ]
    if pattern == "strum":  # folk: a chord on every beat, the downbeat strongest
        return [
            (b * bt + 12 * j, bt - 12 * j, p, 0.9 if b == 0 else 0.7)
            for b in range(beats)
            for j, p in enumerate(chord_pitches)
        ]
    if pattern == "eighths":  # rock power chords: root, fifth, octave in straight eighths
        power = [chord_pitches[0], chord_pitches[0] + 7, chord_pitches[0] + 12]
        return [(i * bt // 2, bt // 2 - 20, p, 0.9 if i % 2 == 0 else 0.7) for i in range(beats * 2) for p in power]
    if pattern == "bossa":  # syncopated comping (eighths 0, 3, 4, 6) anchored on beats 1, 3 and 4
        return [(e * bt // 2, bt * 3 // 4, p, 0.85 if e % 2 == 0 else 0.6) for e in (0, 3, 4, 6) for p in chord_pitches]
    if pattern == "jazz":  # short chords on 2 and 4, a push on the "and" of 4 every other bar
        hits = [(bt, 0.8), (3 * bt, 0.8)] + ([(3 * bt + bt // 2, 0.7)] if bar % 2 else [])
        return [(t, bt // 3, p, a) for t, a in hits for p in chord_pitches]
    if pattern == "stabs":  # techno: off-beat stabs
        return [(b * bt + bt // 2, bt // 4, p, 0.8) for b in range(beats) for p in chord_pitches]
    raise ValueError(f"unknown comp pattern {pattern}")


def _bass(
    line: str, beats: int, beat_ticks: int, root: int, next_root: int, scale_pitches: list[int]
) -> list[tuple[int, int, int, float]]:
    """Bass notes in one bar: (onset, duration, pitch, accent); `root` is the chord root's MIDI pitch."""
    bt = beat_ticks
    if line == "whole":
        return [(0, beats * bt, root, 0.9)]
    if line == "downbeat":
        return [(0, bt, root, 1.0)] + ([(bt * 2, bt, root + 7, 0.7)] if beats == 4 else [])
    if line == "root_fifth":
        return [
            (b * bt, bt * 3 // 4, root if (b // max(1, beats // 2)) % 2 == 0 else root + 7, 1.0 if b == 0 else 0.8)
            for b in range(0, beats, 2 if beats == 4 else 1)
        ]
    if line == "eighths":
        return [(i * bt // 2, bt // 2 - 15, root, 0.9 if i % 2 == 0 else 0.75) for i in range(beats * 2)]
    if line == "offbeat":
        return [(b * bt + bt // 2, bt // 2 - 15, root, 0.9) for b in range(beats)]
    if line == "bossa":
        return [
            (0, bt * 3 // 2, root, 0.9),
            (bt * 3 // 2, bt // 2, root + 7, 0.7),
            (2 * bt, bt * 3 // 2, root + 7, 0.85),
            (bt * 7 // 2, bt // 2, root, 0.7),
        ]
    if line == "walking":  # root, a chord/scale tone, the fifth, then a chromatic approach to the next root
        mid = min((p for p in scale_pitches if root < p < root + 7), default=root + 4, key=lambda p: abs(p - root - 4))
        approach = next_root + (1 if next_root <= root + 3 else -1)
        return [
            (0, bt - 20, root, 1.0),
            (bt, bt - 20, mid, 0.85),
            (2 * bt, bt - 20, root + 7, 0.9),
            (3 * bt, bt - 20, approach, 0.85),
        ]
    raise ValueError(f"unknown bass line {line}")


def _swing(t: int) -> int:
    """Swung eighths: the off-beat eighth moves from 1/2 to 2/3 of the beat (warp applied to every onset/offset)."""
    beat, p = divmod(t, TPQ)
    p = p * 320 // 240 if p < 240 else 320 + (p - 240) * 160 // 240
    return beat * TPQ + p


@dataclass
class Piece:
    """A composed piece before it becomes MIDI: its parts (see `write_midi`) and what `write_midi` needs besides,
    kept apart so melody pairs (`melody_pairs`) can re-arrange the same parts."""

    tracks: list[dict]
    quarter_bpm: float
    meter: str
    root: int
    mode: str
    attributes: dict

    def midi(self) -> bytes:
        return write_midi(self.tracks, self.quarter_bpm, self.meter, self.root, self.mode)


def compose(rng: np.random.Generator, seconds: float, kind: str | None = None) -> tuple[bytes, dict]:
    """Draw a style and its attributes, compose enough bars to outlast `seconds`, return (SMF bytes, attributes).

    `kind` ("negation", "order", see `kinds`) edits the parts after every other draw, so kind=None composes exactly
    what it always did."""
    piece = compose_piece(rng, seconds, kind)
    return piece.midi(), piece.attributes


def compose_piece(rng: np.random.Generator, seconds: float, kind: str | None = None) -> Piece:
    """`compose`'s piece as parts: the same draws in the same order."""
    style_name = str(rng.choice(list(STYLES)))
    style = STYLES[style_name]
    meter = str(rng.choice(style.meters))
    beats, beat_ticks, denom = METERS[meter]
    lo, hi = style.tempo
    if meter == "6/8":  # dotted-quarter beat: keep the eighth pulse playable
        lo, hi = max(60, lo * 2 // 3), max(70, hi * 2 // 3)
    bpm = int(rng.integers(lo, hi + 1))
    quarter_bpm = bpm * beat_ticks / TPQ
    mode = "minor" if rng.random() < style.minor_prob else "major"
    root = int(rng.integers(12))
    scale = SCALES[mode]
    lead = int(rng.choice(style.leads))
    harmony_prog = int(rng.choice([p for p in style.harmony if p != lead] or style.harmony))
    bass_prog = int(rng.choice(style.bass))
    pad_prog = int(rng.choice(style.pad)) if style.pad and rng.random() < 0.6 else None
    has_drums = style.drums is not None and meter == "4/4" and rng.random() < style.drum_prob
    dynamics = str(rng.choice(list(DYNAMICS)))
    bucket = tempo_bucket(bpm)
    mood = str(rng.choice(MOODS[(mode, bucket == "slow" or style_name in ("lullaby", "ambient"))]))
    progs = PROGRESSIONS[mode]
    a, b = rng.choice(len(progs), size=2, replace=False)
    progression = {"A": progs[a], "B": progs[b]}

    bar_ticks = beats * beat_ticks
    bars = int(np.ceil(seconds * bpm / 60 / beats)) + 1
    total = min(bars * bar_ticks, int((seconds + 0.25) * quarter_bpm / 60 * TPQ))  # render little past the cut
    v_start, v_end = DYNAMICS[dynamics]
    audible = seconds * bpm / 60 * beat_ticks  # ticks that end up in the clip: the crescendo spans them

    def vel(t: int, accent: float, part: str) -> int:
        base = v_start + (v_end - v_start) * min(1.0, t / audible)
        return int(np.clip(base * accent * (1.0 if part == "melody" else 0.85) + rng.normal(0, 4), 15, 127))

    lead_centre = GM[lead][3]
    melody = [
        (t, t + d - 10, _pitch(root, scale, deg, lead_centre), vel(t, 1.0 + 0.1 * (t % beat_ticks == 0), "melody"))
        for t, d, deg in _melody(rng, bars, beats, beat_ticks, style, progression)
    ]
    harmony, bass, pad, drums = [], [], [], []
    scale_bass = [_pitch(root, scale, d, 40) for d in range(-7, 8)]
    for bar in range(bars):
        section = "B" if (bar // 4) % 4 == 2 else "A"
        deg = progression[section][(bar // style.chord_bars) % 4]
        nxt = progression["B" if ((bar + 1) // 4) % 4 == 2 else "A"][((bar + 1) // style.chord_bars) % 4]
        pitches = sorted({_pitch(root, scale, d, 60) for d in _chord(deg, style.sevenths)})
        t0 = bar * bar_ticks
        comp = _comp(style.comp, beats, beat_ticks, pitches, bar)
        harmony += [(t0 + t, t0 + t + d, p, vel(t0 + t, a, "harmony")) for t, d, p, a in comp]
        low, low_next = _pitch(root, scale, deg, 40), _pitch(root, scale, nxt, 40)
        line = _bass(style.bass_line, beats, beat_ticks, low, low_next, scale_bass)
        bass += [(t0 + t, t0 + t + d, p, vel(t0 + t, a, "bass")) for t, d, p, a in line]
        if pad_prog is not None:
            pad += [(t0, t0 + bar_ticks, p, vel(t0, 0.6, "pad")) for p in pitches[:3]]
        if has_drums:
            for name, positions, accent in DRUM_PATTERNS[style.drums]:
                if name == "crash" and bar % 4:
                    continue
                for pos in positions:
                    t = t0 + pos * beat_ticks // 4
                    drums.append(
                        (t, t + beat_ticks // 4, DRUM[name], vel(t, accent * (1.1 if pos % 4 == 0 else 1.0), "drums"))
                    )
    if style.swing:
        melody, harmony, bass, drums = (
            [(_swing(s), _swing(e), p, v) for s, e, p, v in part] for part in (melody, harmony, bass, drums)
        )

    tracks = [
        {"name": "melody", "channel": 0, "program": lead, "volume": VOLUME["melody"], "notes": melody},
        {"name": "harmony", "channel": 1, "program": harmony_prog, "volume": VOLUME["harmony"], "notes": harmony},
        {"name": "bass", "channel": 2, "program": bass_prog, "volume": VOLUME["bass"], "notes": bass},
    ]
    if pad_prog is not None:
        tracks.append({"name": "pad", "channel": 3, "program": pad_prog, "volume": VOLUME["pad"], "notes": pad})
    if has_drums:
        tracks.append({"name": "drums", "channel": 9, "program": None, "volume": VOLUME["drums"], "notes": drums})
    mid = int(seconds / 2 * quarter_bpm / 60 * TPQ)
    tracks, truth = apply_kind(kind, tracks, rng, mid, seconds / 2)
    has_drums = any(t["name"] == "drums" for t in tracks)  # a negation may have left them out
    for t in tracks:  # nothing may sound past the end (the swing warp can move notes a little later)
        t["notes"] = [(s, min(e, total), p, v) for s, e, p, v in t["notes"] if s < total and e > s]
    programs = [t["program"] for t in tracks if t["program"] is not None]
    attributes = {
        "instrument": GM[lead][0],
        "instrument_name": GM[lead][1],
        "instrument_family": GM[lead][2],
        "instrument_program": lead,
        "instruments": [GM[p][0] for p in programs] + (["Drum Kit"] if has_drums else []),
        "accompaniment": [GM[p][1] for p in programs[1:]],
        "tempo_bpm": bpm,
        "tempo_bucket": bucket,
        "key": KEYS[root],
        "mode": mode,
        "meter": meter,
        "style": style_name,
        "mood": mood,
        "dynamics": dynamics,
        "has_drums": bool(has_drums),
        "swing": style.swing,
    }
    return Piece(tracks, quarter_bpm, meter, root, mode, attributes | truth)


def tempo_bucket(bpm: float) -> str:
    """slow < 90 BPM <= medium < 130 BPM <= fast."""
    return "slow" if bpm < 90 else "medium" if bpm < 130 else "fast"
