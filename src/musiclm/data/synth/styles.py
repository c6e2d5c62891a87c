"""What a clip can be: the General MIDI instruments, keys, scales and progressions, and the styles built from them.

Every style field is something a listener (and a classifier) can hear, so the drawn attributes are audible ground truth.
"""

from __future__ import annotations

from dataclasses import dataclass

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
    "waltz": Style(
        ("3/4",), (84, 168), (0, 1, 40, 48, 73, 71, 11, 12, 21), (0, 48, 21, 45), (32, 43, 58), "oompah", "downbeat",
        None, setting="in a ballroom",
    ),
    "march": Style(
        ("4/4",), (100, 128), (56, 57, 60, 61, 71, 72, 73), (61, 60), (58,), "offbeats", "root_fifth", "march",
        minor_prob=0.15, setting="at a parade",
    ),
    "rock": Style(
        ("4/4",), (96, 160), (29, 30, 27, 18, 81, 84), (29, 30, 18), (33, 34), "eighths", "eighths", "rock",
        density="busy", setting="in a sports bar",
    ),
    "ballad": Style(
        ("4/4", "6/8"), (60, 84), (0, 4, 5, 24, 40, 42, 65, 66, 73, 68), (0, 24, 4), (32, 35), "arpeggio", "whole",
        "ballad", drum_prob=0.4, minor_prob=0.6, density="sparse", pad=(48, 49, 89), setting="in a romantic film scene",
    ),
    "bossa nova": Style(
        ("4/4",), (110, 144), (24, 65, 66, 73, 4, 11), (24, 4, 0), (32,), "bossa", "bossa", "bossa", sevenths=True,
        setting="in a beach cafe",
    ),
    "ambient": Style(
        ("4/4", "3/4"), (60, 88), (88, 89, 91, 94, 95, 11, 8, 19, 48), (88, 89, 94, 95, 49), (89, 42), "block", "whole",
        None, minor_prob=0.5, density="sparse", sevenths=True, chord_bars=2, setting="during a meditation session",
    ),
    "chiptune": Style(
        ("4/4",), (120, 180), (80,), (80,), (80,), "arpeggio", "eighths", "chip", density="busy",
        setting="in a retro video game",
    ),
    "jazz swing": Style(
        ("4/4",), (96, 180), (56, 64, 65, 66, 0, 11, 26, 57, 16), (0, 26, 4), (32,), "jazz", "walking", "swing",
        minor_prob=0.3, sevenths=True, swing=True, setting="in a late-night jazz club",
    ),
    "folk": Style(
        ("4/4", "3/4", "6/8"), (84, 132), (25, 24, 40, 73, 74, 21, 71), (25, 24, 21), (32, 43), "strum", "root_fifth",
        None, setting="at a village festival",
    ),
    "lullaby": Style(
        ("6/8", "3/4"), (60, 80), (8, 9, 10, 46, 0, 73, 12), (46, 10, 0, 8), (42, 32), "arpeggio", "downbeat", None,
        minor_prob=0.2, density="sparse", setting="at a child's bedtime",
    ),
    "techno": Style(
        ("4/4",), (120, 140), (81, 80, 87, 90, 4), (90, 81, 88), (38, 39), "stabs", "offbeat", "four_on_floor",
        minor_prob=0.6, density="busy", setting="in a night club",
    ),
}
MOODS = {  # (mode, tempo is slow?) -> moods
    ("major", True): ("peaceful", "tender", "calm", "warm", "dreamy"),
    ("major", False): ("happy", "cheerful", "uplifting", "playful", "energetic"),
    ("minor", True): ("sad", "melancholic", "somber", "wistful", "mysterious"),
    ("minor", False): ("tense", "dark", "dramatic", "restless", "brooding"),
}
DYNAMICS = {"soft": (48, 48), "moderate": (76, 76), "loud": (104, 104), "crescendo": (40, 112)}
VOLUME = {"melody": 115, "harmony": 80, "bass": 95, "pad": 60, "drums": 90}
DRUM = {"kick": 36, "snare": 38, "stick": 37, "clap": 39, "hat": 42, "pedal": 44, "open": 46, "crash": 49, "ride": 51,
        "shaker": 70}
# 16th-note positions in a 4/4 bar per instrument: (drum, positions, velocity scale)
DRUM_PATTERNS = {
    "rock": [("kick", (0, 8, 10), 1.0), ("snare", (4, 12), 1.0), ("hat", (0, 2, 4, 6, 8, 10, 12, 14), 0.7)],
    "march": [("kick", (0, 8), 1.0), ("snare", (0, 3, 4, 6, 8, 11, 12, 13, 14, 15), 0.8), ("crash", (0,), 0.6)],
    "ballad": [("kick", (0, 10), 0.8), ("stick", (4, 12), 0.7), ("hat", (0, 4, 8, 12), 0.5)],
    "bossa": [("kick", (0, 8), 0.9), ("kick", (6, 14), 0.5), ("stick", (0, 6, 12), 0.6), ("shaker", (0, 4, 8, 12), 0.8),
              ("shaker", (2, 6, 10, 14), 0.45)],
    "chip": [("kick", (0, 8), 1.0), ("snare", (4, 12), 0.9), ("hat", (0, 2, 4, 6, 8, 10, 12, 14), 0.5)],
    "swing": [("ride", (0, 4, 6, 8, 12, 14), 0.75), ("pedal", (4, 12), 0.7), ("kick", (0, 4, 8, 12), 0.35)],
    "four_on_floor": [("kick", (0, 4, 8, 12), 1.0), ("clap", (4, 12), 0.8), ("open", (2, 6, 10, 14), 0.6),
                      ("hat", (0, 4, 8, 12), 0.4)],
}
