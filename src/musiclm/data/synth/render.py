"""The renderer: SMF bytes to float audio with the `fluidsynth` program and a General MIDI soundfont."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from musiclm.audio import load_audio

SOUNDFONTS = (
    "/usr/share/sounds/sf2/TimGM6mb.sf2",  # Debian timgm6mb-soundfont: 6 MB, fast
    "/usr/share/sounds/sf2/default-GM.sf2",
    "/usr/share/soundfonts/default.sf2",
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
    "/opt/homebrew/share/soundfonts/default.sf2",
)
APT_HINT = "sudo apt-get install --no-install-recommends fluidsynth timgm6mb-soundfont"


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
    raise FileNotFoundError(
        f"no General MIDI soundfont found (looked in {', '.join(SOUNDFONTS)}): install one with "
        f"`{APT_HINT}` (Debian package timgm6mb-soundfont) or set MUSICLM_SOUNDFONT=/path/to/GM.sf2"
    )


def find_fluidsynth() -> str:
    """The `fluidsynth` executable; the error names the install command."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise FileNotFoundError(
            f"the `fluidsynth` program is not installed: `{APT_HINT}` (macOS: brew install fluid-synth)"
        )
    return exe


def render_midi(midi: bytes, sample_rate: int, soundfont: str | None = None, gain: float = 0.4) -> np.ndarray:
    """Render SMF bytes with the FluidSynth CLI (float WAV, no clipping) to float32 mono at `sample_rate`."""
    soundfont = soundfont or find_soundfont()
    with tempfile.TemporaryDirectory(prefix="musiclm-synth-") as tmp:
        mid, wav = Path(tmp) / "in.mid", Path(tmp) / "out.wav"
        mid.write_bytes(midi)
        cmd = [find_fluidsynth(), "-ni", "-q", "-g", str(gain), "-r", str(sample_rate),
               "-T", "wav", "-O", "float", "-F", str(wav), soundfont, str(mid)]  # fmt: skip
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0 or not wav.is_file():
            raise RuntimeError(f"fluidsynth failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
        return load_audio(wav, sample_rate)
