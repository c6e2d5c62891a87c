"""Synthetic captioned music corpus: procedurally composed General MIDI pieces rendered with FluidSynth.

Each clip is a small multi-track piece (melody, harmony, bass, optional pad and drums) whose style, lead
instrument, tempo, key, mode, meter, mood and dynamics are drawn first and then *made audible*: a waltz is in 3/4
with oom-pah-pah accompaniment, a chiptune plays square-wave leads, a jazz tune swings over a walking bass, a
piece without drums has no channel-10 track. Those attributes are stored as ground truth next to a
MusicCaps-like caption, so later stages can measure zero-shot classification and tempo adherence exactly.

Conventions: `tempo_bpm` counts the felt beat (quarter note in 3/4 and 4/4, dotted quarter in 6/8; the MIDI
tempo event is per quarter note, so in 6/8 it is 1.5 x tempo_bpm). Tempo buckets: slow < 90 <= medium < 130
<= fast. Standard MIDI files are written here (format 1, 480 ticks per quarter) to keep the stack free of
MIDI dependencies; rendering shells out to the `fluidsynth` program.
"""

from __future__ import annotations

import argparse
import os
import re
import resource
import shutil
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from musiclm.audio import encode_audio, is_silent, load_audio

TPQ = 480  # MIDI ticks per quarter note
PEAK = 10 ** (-1 / 20)  # -1 dBFS
SOUNDFONTS = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",  # Debian timgm6mb-soundfont: 6 MB, fast
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)
APT_HINT = "sudo apt-get install --no-install-recommends fluidsynth timgm6mb-soundfont"

# General MIDI program -> (official name, caption-friendly name, family, lead register centre).
GM = {
    0: ("Acoustic Grand Piano", "grand piano", "piano", 72),
    1: ("Bright Acoustic Piano", "bright acoustic piano", "piano", 72),
    4: ("Electric Piano 1", "electric piano", "piano", 72),
    5: ("Electric Piano 2", "FM electric piano", "piano", 72),
    8: ("Celesta", "celesta", "mallet percussion", 79),
    9: ("Glockenspiel", "glockenspiel", "mallet percussion", 84),
    10: ("Music Box", "music box", "mallet percussion", 79),
    11: ("Vibraphone", "vibraphone", "mallet percussion", 72),
    12: ("Marimba", "marimba", "mallet percussion", 72),
    16: ("Drawbar Organ", "drawbar organ", "organ", 72),
    18: ("Rock Organ", "rock organ", "organ", 72),
    19: ("Church Organ", "church organ", "organ", 67),
    21: ("Accordion", "accordion", "organ", 72),
    24: ("Acoustic Guitar (nylon)", "nylon-string guitar", "guitar", 67),
    25: ("Acoustic Guitar (steel)", "steel-string acoustic guitar", "guitar", 67),
    26: ("Electric Guitar (jazz)", "jazz guitar", "guitar", 67),
    27: ("Electric Guitar (clean)", "clean electric guitar", "guitar", 67),
    29: ("Overdriven Guitar", "overdriven electric guitar", "guitar", 67),
    30: ("Distortion Guitar", "distorted electric guitar", "guitar", 67),
    32: ("Acoustic Bass", "upright bass", "bass", 43),
    33: ("Electric Bass (finger)", "electric bass", "bass", 43),
    34: ("Electric Bass (pick)", "picked electric bass", "bass", 43),
    35: ("Fretless Bass", "fretless bass", "bass", 43),
    38: ("Synth Bass 1", "synth bass", "bass", 43),
    39: ("Synth Bass 2", "synth bass", "bass", 43),
    40: ("Violin", "violin", "strings", 76),
    42: ("Cello", "cello", "strings", 57),
    43: ("Contrabass", "double bass", "strings", 43),
    45: ("Pizzicato Strings", "pizzicato strings", "strings", 67),
    46: ("Orchestral Harp", "harp", "strings", 72),
    48: ("String Ensemble 1", "string ensemble", "strings", 72),
    49: ("String Ensemble 2", "string section", "strings", 72),
    56: ("Trumpet", "trumpet", "brass", 72),
    57: ("Trombone", "trombone", "brass", 60),
    58: ("Tuba", "tuba", "brass", 43),
    60: ("French Horn", "french horn", "brass", 67),
    61: ("Brass Section", "brass section", "brass", 67),
    64: ("Soprano Sax", "soprano saxophone", "saxophone", 74),
    65: ("Alto Sax", "alto saxophone", "saxophone", 70),
    66: ("Tenor Sax", "tenor saxophone", "saxophone", 64),
    68: ("Oboe", "oboe", "woodwind", 74),
    71: ("Clarinet", "clarinet", "woodwind", 70),
    72: ("Piccolo", "piccolo", "woodwind", 84),
    73: ("Flute", "flute", "woodwind", 79),
    74: ("Recorder", "recorder", "woodwind", 79),
    80: ("Lead 1 (square)", "square-wave synth lead", "synth lead", 72),
    81: ("Lead 2 (sawtooth)", "sawtooth synth lead", "synth lead", 72),
    84: ("Lead 5 (charang)", "charang synth lead", "synth lead", 67),
    87: ("Lead 8 (bass + lead)", "bass-and-lead synth", "synth lead", 67),
    88: ("Pad 1 (new age)", "new-age synth pad", "synth pad", 67),
    89: ("Pad 2 (warm)", "warm synth pad", "synth pad", 67),
    90: ("Pad 3 (polysynth)", "polysynth pad", "synth pad", 67),
    91: ("Pad 4 (choir)", "choir pad", "synth pad", 67),
    94: ("Pad 7 (halo)", "halo pad", "synth pad", 67),
    95: ("Pad 8 (sweep)", "sweep pad", "synth pad", 67),
}
KEYS = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")
SCALES = {"major": (0, 2, 4, 5, 7, 9, 11), "minor": (0, 2, 3, 5, 7, 8, 10)}
METERS = {"3/4": (3, TPQ, 4), "4/4": (4, TPQ, 4), "6/8": (2, 3 * TPQ // 2, 8)}  # beats/bar, ticks/beat, denominator
PROGRESSIONS = {  # scale degrees (0 = tonic), one chord per bar
    "major": [(0, 4, 5, 3), (0, 3, 4, 0), (0, 5, 1, 4), (0, 3, 0, 4), (5, 3, 0, 4)],
    "minor": [(0, 5, 2, 6), (0, 3, 4, 0), (0, 6, 5, 6), (0, 3, 6, 2), (0, 5, 3, 4)],
}


@dataclass(frozen=True)
class Style:
    """How a style sounds: every field is something the listener (and a classifier) can hear."""

    meters: tuple[str, ...]
    tempo: tuple[int, int]
    leads: tuple[int, ...]
    harmony: tuple[int, ...]
    bass: tuple[int, ...]
    comp: str  # accompaniment pattern
    bass_line: str
    drums: str | None  # drum pattern, None = never drums
    drum_prob: float = 1.0
    minor_prob: float = 0.4
    density: str = "medium"  # melody rhythm: sparse | medium | busy
    pad: tuple[int, ...] = ()
    sevenths: bool = False
    swing: bool = False
    chord_bars: int = 1
    setting: str = ""  # "this could be playing ..." clause


STYLES = {
    "waltz": Style(("3/4",), (84, 168), (0, 1, 40, 48, 73, 71, 11, 12, 21), (0, 48, 21, 45), (32, 43, 58), "oompah", "downbeat", None,
                   setting="in a ballroom"),
    "march": Style(("4/4",), (100, 128), (56, 57, 60, 61, 71, 72, 73), (61, 60), (58,), "offbeats", "root_fifth", "march",
                   minor_prob=0.15, setting="at a parade"),
    "rock": Style(("4/4",), (96, 160), (29, 30, 27, 18, 81, 84), (29, 30, 18), (33, 34), "eighths", "eighths", "rock",
                  density="busy", setting="in a sports bar"),
    "ballad": Style(("4/4", "6/8"), (60, 84), (0, 4, 5, 24, 40, 42, 65, 66, 73, 68), (0, 24, 4), (32, 35), "arpeggio", "whole",
                    "ballad", drum_prob=0.4, minor_prob=0.6, density="sparse", pad=(48, 49, 89), setting="in a romantic film scene"),
    "bossa nova": Style(("4/4",), (110, 144), (24, 65, 66, 73, 4, 11), (24, 4, 0), (32,), "bossa", "bossa", "bossa",
                        sevenths=True, setting="in a beach cafe"),
    "ambient": Style(("4/4", "3/4"), (60, 88), (88, 89, 91, 94, 95, 11, 8, 19, 48), (88, 89, 94, 95, 49), (89, 42), "block", "whole",
                     None, minor_prob=0.5, density="sparse", chord_bars=2, sevenths=True, setting="during a meditation session"),
    "chiptune": Style(("4/4",), (120, 180), (80,), (80,), (80,), "arpeggio", "eighths", "chip", density="busy",
                      setting="in a retro video game"),
    "jazz swing": Style(("4/4",), (96, 180), (56, 64, 65, 66, 0, 11, 26, 57, 16), (0, 26, 4), (32,), "jazz", "walking", "swing",
                        minor_prob=0.3, sevenths=True, swing=True, setting="in a late-night jazz club"),
    "folk": Style(("4/4", "3/4", "6/8"), (84, 132), (25, 24, 40, 73, 74, 21, 71), (25, 24, 21), (32, 43), "strum", "root_fifth",
                  None, setting="at a village festival"),
    "lullaby": Style(("6/8", "3/4"), (60, 80), (8, 9, 10, 46, 0, 73, 12), (46, 10, 0, 8), (42, 32), "arpeggio", "downbeat", None,
                     minor_prob=0.2, density="sparse", setting="at a child's bedtime"),
    "techno": Style(("4/4",), (120, 140), (81, 80, 87, 90, 4), (90, 81, 88), (38, 39), "stabs", "offbeat", "four_on_floor",
                    minor_prob=0.6, density="busy", setting="in a night club"),
}
MOODS = {  # (mode, tempo is slow?) -> moods
    ("major", True): ("peaceful", "tender", "calm", "warm", "dreamy"),
    ("major", False): ("happy", "cheerful", "uplifting", "playful", "energetic"),
    ("minor", True): ("sad", "melancholic", "somber", "wistful", "mysterious"),
    ("minor", False): ("tense", "dark", "dramatic", "restless", "brooding"),
}
DYNAMICS = {"soft": (48, 48), "moderate": (76, 76), "loud": (104, 104), "crescendo": (40, 112)}
VOLUME = {"melody": 115, "harmony": 80, "bass": 95, "pad": 60, "drums": 90}
DRUM = {"kick": 36, "snare": 38, "stick": 37, "clap": 39, "hat": 42, "pedal": 44, "open": 46, "crash": 49, "ride": 51, "shaker": 70}
# 16th-note positions in a 4/4 bar per instrument: (drum, positions, velocity scale)
DRUM_PATTERNS = {
    "rock": [("kick", (0, 8, 10), 1.0), ("snare", (4, 12), 1.0), ("hat", (0, 2, 4, 6, 8, 10, 12, 14), 0.7)],
    "march": [("kick", (0, 8), 1.0), ("snare", (0, 3, 4, 6, 8, 11, 12, 13, 14, 15), 0.8), ("crash", (0,), 0.6)],
    "ballad": [("kick", (0, 10), 0.8), ("stick", (4, 12), 0.7), ("hat", (0, 4, 8, 12), 0.5)],
    "bossa": [("kick", (0, 8), 0.9), ("kick", (6, 14), 0.5), ("stick", (0, 6, 12), 0.6), ("shaker", (0, 4, 8, 12), 0.8),
              ("shaker", (2, 6, 10, 14), 0.45)],
    "chip": [("kick", (0, 8), 1.0), ("snare", (4, 12), 0.9), ("hat", (0, 2, 4, 6, 8, 10, 12, 14), 0.5)],
    "swing": [("ride", (0, 4, 6, 8, 12, 14), 0.75), ("pedal", (4, 12), 0.7), ("kick", (0, 4, 8, 12), 0.35)],
    "four_on_floor": [("kick", (0, 4, 8, 12), 1.0), ("clap", (4, 12), 0.8), ("open", (2, 6, 10, 14), 0.6), ("hat", (0, 4, 8, 12), 0.4)],
}


@dataclass
class SynthClip:
    key: str
    audio: np.ndarray  # float32 mono at meta["sample_rate"]
    meta: dict


# ---------------------------------------------------------------- Standard MIDI file writing
def _vlq(n: int) -> bytes:
    out = [n & 0x7F]
    while n > 0x7F:
        n >>= 7
        out.append((n & 0x7F) | 0x80)
    return bytes(reversed(out))


def _track(events: list[tuple[int, int, bytes]]) -> bytes:
    """A MTrk chunk from (tick, order, message) events; order puts note-offs before note-ons at the same tick."""
    data, now = bytearray(), 0
    for tick, _, msg in sorted(events, key=lambda e: (e[0], e[1])):
        data += _vlq(tick - now) + msg
        now = tick
    data += b"\x00\xff\x2f\x00"
    return b"MTrk" + struct.pack(">I", len(data)) + bytes(data)


def _meta(kind: int, payload: bytes) -> bytes:
    return bytes([0xFF, kind]) + _vlq(len(payload)) + payload


def _key_signature(root: int, mode: str) -> bytes:
    major_root = root if mode == "major" else (root + 3) % 12
    sharps = (major_root * 7) % 12
    sharps = sharps - 12 if sharps > 6 else sharps
    return _meta(0x59, struct.pack(">bB", sharps, mode == "minor"))


def write_midi(tracks: list[dict], quarter_bpm: float, meter: str, root: int, mode: str) -> bytes:
    """Format-1 SMF: a conductor track (tempo, meter, key) then one track per part.

    A part is {"name", "channel", "program" (None for drums), "volume", "notes": [(start, end, pitch, velocity)]}.
    """
    beats, beat_ticks, denom = METERS[meter]
    numerator = beats * (3 if denom == 8 else 1)
    conductor = [
        (0, 0, _meta(0x03, b"conductor")),
        (0, 0, _meta(0x51, int(round(60e6 / quarter_bpm)).to_bytes(3, "big"))),
        (0, 0, _meta(0x58, bytes([numerator, denom.bit_length() - 1, 36 if denom == 8 else 24, 8]))),
        (0, 0, _key_signature(root, mode)),
    ]
    chunks = [_track(conductor)]
    for t in tracks:
        ch = t["channel"]
        ev = [(0, 0, _meta(0x03, t["name"].encode())), (0, 1, bytes([0xB0 | ch, 7, t["volume"]])), (0, 1, bytes([0xB0 | ch, 91, 40]))]
        if t["program"] is not None:
            ev.append((0, 2, bytes([0xC0 | ch, t["program"]])))
        for start, end, pitch, vel in t["notes"]:
            ev.append((start, 4, bytes([0x90 | ch, pitch, vel])))
            ev.append((end, 3, bytes([0x80 | ch, pitch, 0])))
        chunks.append(_track(ev))
    header = b"MThd" + struct.pack(">IHHH", 6, 1, len(chunks), TPQ)
    return header + b"".join(chunks)


# ---------------------------------------------------------------- composition
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
        cells = {"sparse": [[4], [4], [2, 2], [3, 1]], "medium": [[4], [2, 2], [3, 1], [2, 1, 1], [1, 1, 2]],
                 "busy": [[2, 2], [1, 1, 1, 1], [2, 1, 1], [1, 1, 2], [3, 1]]}[density]
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


def _bar_melody(rng, rhythm: list[int], chord: list[int], prev: int, beat_ticks: int, final: int | None) -> list[tuple[int, int, int]]:
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


def _comp(pattern: str, beats: int, beat_ticks: int, chord_pitches: list[int], bar: int) -> list[tuple[int, int, int, float]]:
    """Accompaniment hits in one bar: (onset, duration, pitch, accent)."""
    bt, n = beat_ticks, len(chord_pitches)
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
        return [(i * step, step, seq[i % len(seq)], 1.0 if i % per_beat == 0 else 0.65) for i in range(beats * per_beat)]
    if pattern == "strum":  # folk: a chord on every beat, the downbeat strongest
        return [(b * bt + 12 * j, bt - 12 * j, p, 0.9 if b == 0 else 0.7) for b in range(beats) for j, p in enumerate(chord_pitches)]
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
        return [(b * bt, bt * 3 // 4, root if (b // max(1, beats // 2)) % 2 == 0 else root + 7, 1.0 if b == 0 else 0.8)
                for b in range(0, beats, 2 if beats == 4 else 1)]
    if line == "eighths":
        return [(i * bt // 2, bt // 2 - 15, root, 0.9 if i % 2 == 0 else 0.75) for i in range(beats * 2)]
    if line == "offbeat":
        return [(b * bt + bt // 2, bt // 2 - 15, root, 0.9) for b in range(beats)]
    if line == "bossa":
        return [(0, bt * 3 // 2, root, 0.9), (bt * 3 // 2, bt // 2, root + 7, 0.7), (2 * bt, bt * 3 // 2, root + 7, 0.85),
                (bt * 7 // 2, bt // 2, root, 0.7)]
    if line == "walking":  # root, a chord/scale tone, the fifth, then a chromatic approach to the next root
        mid = min((p for p in scale_pitches if root < p < root + 7), default=root + 4, key=lambda p: abs(p - root - 4))
        approach = next_root + (1 if next_root <= root + 3 else -1)
        return [(0, bt - 20, root, 1.0), (bt, bt - 20, mid, 0.85), (2 * bt, bt - 20, root + 7, 0.9), (3 * bt, bt - 20, approach, 0.85)]
    raise ValueError(f"unknown bass line {line}")


def _swing(t: int) -> int:
    """Swung eighths: the off-beat eighth moves from 1/2 to 2/3 of the beat (warp applied to every onset/offset)."""
    beat, p = divmod(t, TPQ)
    p = p * 320 // 240 if p < 240 else 320 + (p - 240) * 160 // 240
    return beat * TPQ + p


def compose(rng: np.random.Generator, seconds: float) -> tuple[bytes, dict]:
    """Draw a style and its attributes, compose enough bars to outlast `seconds`, return (SMF bytes, attributes)."""
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
    melody = [(t, t + d - 10, _pitch(root, scale, deg, lead_centre), vel(t, 1.0 + 0.1 * (t % beat_ticks == 0), "melody"))
              for t, d, deg in _melody(rng, bars, beats, beat_ticks, style, progression)]
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
                    drums.append((t, t + beat_ticks // 4, DRUM[name], vel(t, accent * (1.1 if pos % 4 == 0 else 1.0), "drums")))
    if style.swing:
        melody, harmony, bass, drums = ([(_swing(s), _swing(e), p, v) for s, e, p, v in part] for part in (melody, harmony, bass, drums))

    tracks = [
        {"name": "melody", "channel": 0, "program": lead, "volume": VOLUME["melody"], "notes": melody},
        {"name": "harmony", "channel": 1, "program": harmony_prog, "volume": VOLUME["harmony"], "notes": harmony},
        {"name": "bass", "channel": 2, "program": bass_prog, "volume": VOLUME["bass"], "notes": bass},
    ]
    if pad_prog is not None:
        tracks.append({"name": "pad", "channel": 3, "program": pad_prog, "volume": VOLUME["pad"], "notes": pad})
    if has_drums:
        tracks.append({"name": "drums", "channel": 9, "program": None, "volume": VOLUME["drums"], "notes": drums})
    for t in tracks:  # nothing may sound past the end (the swing warp can move notes a little later)
        t["notes"] = [(s, min(e, total), p, v) for s, e, p, v in t["notes"] if s < total and e > s]
    midi = write_midi(tracks, quarter_bpm, meter, root, mode)

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
    return midi, attributes


def tempo_bucket(bpm: float) -> str:
    """slow < 90 BPM <= medium < 130 BPM <= fast."""
    return "slow" if bpm < 90 else "medium" if bpm < 130 else "fast"


# ---------------------------------------------------------------- captions
TEMPO_WORDS = {"slow": ("slow", "unhurried", "leisurely"), "medium": ("moderate", "medium", "steady"),
               "fast": ("fast", "brisk", "lively", "quick")}
STYLE_WORDS = {"waltz": ("waltz", "waltz", "lilting waltz"), "march": ("march", "military-style march", "marching tune"),
               "rock": ("rock song", "rock track", "rock piece"), "ballad": ("ballad", "gentle ballad", "ballad"),
               "bossa nova": ("bossa nova", "bossa nova tune", "laid-back bossa nova"),
               "ambient": ("ambient piece", "ambient soundscape", "ambient track"),
               "chiptune": ("chiptune", "8-bit chiptune", "chiptune track"),
               "jazz swing": ("jazz swing tune", "swing jazz piece", "jazz swing number"),
               "folk": ("folk tune", "folk song", "acoustic folk piece"), "lullaby": ("lullaby", "gentle lullaby", "lullaby"),
               "techno": ("techno track", "techno tune", "electronic techno piece")}
DYNAMICS_WORDS = {"soft": ("played softly", "at a soft, quiet volume", "with a delicate touch"),
                  "moderate": ("at a comfortable volume", "played with a relaxed touch", ""),
                  "loud": ("played loudly", "with bold, loud dynamics", "played with force"),
                  "crescendo": ("gradually growing louder", "building in volume from start to end", "with a gradual crescendo")}
METER_WORDS = {"3/4": ("in 3/4 time", "in triple meter"), "4/4": ("in 4/4 time", "in common time"),
               "6/8": ("in 6/8 time", "in a rolling 6/8 meter")}


def _a(word: str) -> str:
    vowel_sound = (word[0].lower() in "aeiou8" and not word.startswith("uni")) or word.startswith("FM")
    return ("an " if vowel_sound else "a ") + word


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _tidy(text: str) -> str:
    """Collapse the gaps an empty optional clause leaves (double spaces, ", ,", ",.")."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"(\s*,)+", ",", text)
    return re.sub(r"\s*,?\s*\.", ".", text)


def write_caption(attributes: dict, rng: np.random.Generator) -> tuple[str, list[str]]:
    """A MusicCaps-like caption (one of several sentence plans, synonyms, optional clauses) and an aspect list."""
    at = attributes
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    lead, family = at["instrument_name"], at["instrument_family"]
    tempo = pick(TEMPO_WORDS[at["tempo_bucket"]])
    style = pick(STYLE_WORDS[at["style"]])
    key = pick([f"{at['key']} {at['mode']}", f"a {at['mode']} key", f"the key of {at['key']} {at['mode']}"])
    bpm = pick([f"around {at['tempo_bpm']} BPM", f"about {at['tempo_bpm']} beats per minute", f"{at['tempo_bpm']} BPM"])
    acc = [name for name in dict.fromkeys(at["accompaniment"]) if name != lead] or [f"{lead} chords", "bass"]
    backing = _join(acc + (["drums"] if at["has_drums"] else []))
    drums = (pick(["The drums keep the beat.", "A drum kit keeps time.", "Drums drive the rhythm."]) if at["has_drums"]
             else pick(["There are no drums.", "There is no percussion.", ""]))
    dyn = pick(DYNAMICS_WORDS[at["dynamics"]])
    meter = pick(METER_WORDS[at["meter"]])
    setting = STYLES[at["style"]].setting
    lead_phrase = pick([f"played on {_a(lead)}", f"led by {_a(lead)}", f"featuring {_a(lead)} melody",
                        f"with {_a(lead)} carrying the melody"])
    plans = [
        lambda: f"{_cap(_a(tempo))}, {at['mood']} {style} in {key} {lead_phrase}, with {backing} in the background, {bpm}.",
        lambda: f"This is {_a(at['mood'])} {style} {lead_phrase}. The {tempo} tempo sits at {bpm}, {meter}. {drums}",
        lambda: f"{_cap(_a(lead))} plays {_a(at['mood'])} melody over {backing}. "
        f"The piece is {_a(style)} in {key}, {dyn}, at {_a(tempo)} tempo.",
        lambda: f"Instrumental {style} {lead_phrase} ({family}). The mood is {at['mood']} and the tempo is {tempo}, {bpm}. "
        f"{drums} This could be playing {setting}.",
        lambda: f"{_cap(_a(style))} {meter} with {_a(lead)} on the melody and {backing} accompanying it. "
        f"{_cap(at['mood'])}, {dyn}, at {_a(tempo)} tempo.",
        lambda: f"The recording features {_a(lead)} playing {_a(tempo)} {style} in {key}. It sounds {at['mood']}. "
        f"This music could be heard {setting}.",
    ]
    caption = _tidy(pick(plans)())
    tags = [family, lead, at["style"], f"{at['tempo_bucket']} tempo", f"{at['mode']} key", at["mood"], at["meter"],
            "drums" if at["has_drums"] else "no drums", at["dynamics"]]
    tags += ["swing"] if at.get("swing") else []
    return caption, list(dict.fromkeys(tags))


# ---------------------------------------------------------------- rendering
def find_soundfont() -> str:
    """The General MIDI soundfont to render with: $MUSICLM_SOUNDFONT, else the first installed of SOUNDFONTS."""
    env = os.environ.get("MUSICLM_SOUNDFONT")
    if env:
        if not Path(env).is_file():
            raise FileNotFoundError(f"MUSICLM_SOUNDFONT={env} does not exist")
        return env
    for path in SOUNDFONTS:
        if Path(path).is_file():
            return path
    raise FileNotFoundError(f"no General MIDI soundfont found (looked in {', '.join(SOUNDFONTS)}): install one with "
                            f"`{APT_HINT}` (Debian package timgm6mb-soundfont) or set MUSICLM_SOUNDFONT=/path/to/GM.sf2")


def _fluidsynth() -> str:
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise FileNotFoundError(f"the `fluidsynth` program is not installed: `{APT_HINT}` (macOS: brew install fluid-synth)")
    return exe


def render_midi(midi: bytes, sample_rate: int, soundfont: str | None = None, gain: float = 0.4) -> np.ndarray:
    """Render SMF bytes with the FluidSynth CLI (float WAV, no clipping) to float32 mono at `sample_rate`."""
    soundfont = soundfont or find_soundfont()
    with tempfile.TemporaryDirectory(prefix="musiclm-synth-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi)
        cmd = [_fluidsynth(), "-ni", "-q", "-g", str(gain), "-r", str(sample_rate), "-T", "wav", "-O", "float", "-F", str(wav),
               soundfont, str(mid)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"fluidsynth failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        return load_audio(wav, sample_rate)


def _fit(x: np.ndarray, n: int) -> np.ndarray:
    """Exactly n samples (cut, or zero-pad), peak at -1 dBFS."""
    x = x[:n] if len(x) >= n else np.pad(x, (0, n - len(x)))
    peak = float(np.abs(x).max())
    return (x * (PEAK / peak) if peak > 0 else x).astype(np.float32)


def clip_key(seed: int, index: int) -> str:
    return f"synth-{seed}-{index:06d}"


def make_clip(index: int, seed: int, seconds: float, sample_rate: int = 24_000, soundfont: str | None = None) -> SynthClip:
    """Compose, caption and render clip `index` of corpus `seed`; the same (seed, index) gives the same clip.

    A silent render (it should not happen, but a soundfont may lack a preset) is redone with the next attempt's draw.
    """
    n = int(round(seconds * sample_rate))
    for attempt in range(4):
        rng = np.random.default_rng([seed, index, attempt])
        midi, attributes = compose(rng, seconds)
        audio = render_midi(midi, sample_rate, soundfont)
        if not is_silent(audio[:n]):
            break
    else:
        raise RuntimeError(f"clip {index} of seed {seed} rendered silent 4 times: check the soundfont")
    caption, tags = write_caption(attributes, rng)
    meta = {"caption": caption, "tags": tags, "sample_rate": sample_rate, "duration": round(n / sample_rate, 6), "source": "synth",
            "attributes": attributes}
    return SynthClip(clip_key(seed, index), _fit(audio, n), meta)


def clip_samples(index: int, seed: int, seconds: float, sample_rate: int, soundfont: str | None = None) -> list[dict]:
    """Shard writer callback: one audio-shard sample per clip index."""
    clip = make_clip(index, seed, seconds, sample_rate, soundfont)
    return [{"__key__": clip.key, "flac": encode_audio(clip.audio, sample_rate), "json": clip.meta}]


def build(out_dir: str | os.PathLike, num_clips: int, seconds: float = 10.0, seed: int = 0, workers: int = 1, sample_rate: int = 24_000,
          val_fraction: float = 0.1, test_fraction: float = 0.1, clips_per_shard: int = 64) -> dict[str, dict]:
    """Render the corpus into out_dir/{train,val,test}/shard-*.tar (resumable); returns the manifests."""
    from musiclm.data.shards import SPLITS, split_for_key, write_split_shards

    soundfont = find_soundfont()
    _fluidsynth()
    make = partial(clip_samples, seed=seed, seconds=seconds, sample_rate=sample_rate, soundfont=soundfont)
    extra = {"source": "synth", "seed": seed, "seconds": seconds, "sample_rate": sample_rate, "soundfont": Path(soundfont).name}
    manifests = {}
    for split in SPLITS:
        items = [i for i in range(num_clips) if split_for_key(clip_key(seed, i), val_fraction, test_fraction) == split]
        manifests[split] = write_split_shards(out_dir, split, items, make, clips_per_shard, workers, extra)
    return manifests


def bench(num_clips: int = 8, seconds: float = 10.0) -> dict:
    """Single-process synthesis speed (compose + render + decode + normalise): x real time and clips/s by the wall
    clock, and x real time per CPU second (this process + fluidsynth), which a busy shared machine does not skew."""
    make_clip(10_000, 1, 1.0)  # warm the page cache with the soundfont
    cpu = lambda: sum(getattr(resource.getrusage(w), f) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)  # noqa: E731
                      for f in ("ru_utime", "ru_stime"))
    t0, c0 = time.perf_counter(), cpu()
    for i in range(num_clips):
        make_clip(i, 1, seconds)
    dt, dc = time.perf_counter() - t0, cpu() - c0
    audio = num_clips * seconds
    return {"render_x_realtime": audio / dt, "clips_per_s": num_clips / dt, "render_x_realtime_per_cpu": audio / dc}


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm data synth", description=__doc__.split("\n\n")[0])
    p.add_argument("out_dir", type=Path)
    p.add_argument("--num-clips", type=int, required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--sample-rate", type=int, default=24_000)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--clips-per-shard", type=int, default=64)
    a = p.parse_args(argv)
    from musiclm.data.ingest import summary

    try:
        t0 = time.perf_counter()
        manifests = build(
            a.out_dir, a.num_clips, a.seconds, a.seed, a.workers, a.sample_rate, a.val_fraction, a.test_fraction, a.clips_per_shard
        )
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    kept, text = summary(manifests)
    print(text)
    print(f"{a.out_dir}: {kept} clips in {time.perf_counter() - t0:.1f} s")
    if kept == 0:
        sys.exit(1)
