"""Synthetic captioned music corpus: procedurally composed General MIDI pieces rendered with FluidSynth.

Each clip is a small multi-track piece (melody, harmony, bass, optional pad and drums) whose style, lead
instrument, tempo, key, mode, meter, mood and dynamics are drawn first and then *made audible*: a waltz is in 3/4
with oom-pah-pah accompaniment, a chiptune plays square-wave leads, a jazz tune swings over a walking bass, a
piece without drums has no channel-10 track. Those attributes are stored as ground truth next to a
MusicCaps-like caption, so later stages can measure zero-shot classification and tempo adherence exactly.

One module per job: `styles` (what can be drawn), `composer` (the piece), `midi` (SMF bytes, via mido),
`captions`, `render` (the `fluidsynth` program), `corpus` (clips and shards) and `cli` (`musiclm data synth`).
The names below are re-exported so callers import everything from `musiclm.data.synth`.
"""

from musiclm.data.synth.captions import DYNAMICS_WORDS, METER_WORDS, STYLE_WORDS, TEMPO_WORDS, write_caption
from musiclm.data.synth.cli import main
from musiclm.data.synth.composer import compose, tempo_bucket
from musiclm.data.synth.corpus import (
    PEAK,
    SynthClip,
    bench,
    build,
    clip_key,
    clip_samples,
    make_clip,
    melody_pair_clips,
)
from musiclm.data.synth.melody_pairs import VARIANTS as MELODY_VARIANTS
from musiclm.data.synth.midi import METERS, TPQ, key_name, write_midi
from musiclm.data.synth.render import APT_HINT, SOUNDFONTS, find_fluidsynth, find_soundfont, render_midi
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

__all__ = [
    "APT_HINT", "DRUM", "DRUM_PATTERNS", "DYNAMICS", "DYNAMICS_WORDS", "GM", "KEYS", "METERS", "METER_WORDS", "MOODS",
    "PEAK", "PROGRESSIONS", "SCALES", "SOUNDFONTS", "STYLES", "STYLE_WORDS", "TEMPO_WORDS", "TPQ", "VOLUME", "Style",
    "SynthClip", "bench", "build", "clip_key", "clip_samples", "compose", "find_fluidsynth", "find_soundfont",
    "key_name", "main", "make_clip", "render_midi", "tempo_bucket", "write_caption", "write_midi", "MELODY_VARIANTS",
    "melody_pair_clips",
]
