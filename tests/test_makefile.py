"""What the Makefile runs for a target, read from `make -n` without running anything: the variables a profile
sets reach the commands."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def dry_make(tmp_path, *args: str) -> list[str]:
    """The command lines `make -n` prints for these targets and variables (continuation lines joined)."""
    cmd = ["make", "-n", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path), "-o", str(ROOT / ".venv/.installed")]
    dry = subprocess.run([*cmd, *args], capture_output=True, text=True, check=True)
    return dry.stdout.replace("\\\n", " ").splitlines()


def test_make_generate_passes_melody_cfg(tmp_path):
    steps = dry_make(tmp_path, "generate", "TEXT=a tune", "MELODY=hum.wav", "MELODY_CFG=4.5")
    line = next(x for x in steps if "musiclm.cli generate" in x)
    assert '--melody "hum.wav"' in line and "--melody-cfg-scale 4.5" in line


def test_demo_profile_follows_a_melody_with_pitch_classes(tmp_path):
    """make demo's `melody` step: pitch-class tokens (nothing trained) and only eval's test melodies rendered; the
    coarse stage then trains on them. Another profile, or MELODY_COND= on the demo, keeps the chain text-only."""
    steps = dry_make(tmp_path, "melody", "RUN=x")
    synth = next(x for x in steps if "data synth" in x)
    assert "--melody-pairs --val-fraction 0 --test-fraction 1" in synth and "--num-clips 32" in synth
    assert any("melody pitch-classes --run x" in x for x in steps)
    coarse = next(x for x in dry_make(tmp_path, "train-acoustic", "RUN=x") if "train coarse" in x)
    assert "--model.melody_conditioning=true" in coarse
    for off in (["PROFILE=long"], ["MELODY_COND="]):
        assert not any("musiclm.cli" in x for x in dry_make(tmp_path, "melody", "RUN=x", *off))
        assert not any("melody_conditioning" in x for x in dry_make(tmp_path, "train-acoustic", "RUN=x", *off))
    learned = dry_make(tmp_path, "train-melody", "RUN=x", "PROFILE=long")
    assert any("train melody" in x for x in learned) and not any("test-fraction" in x for x in learned)


def test_eval_batch_follows_the_profile(tmp_path):
    """The demo's small LMs generate eval's prompts 32 at a time; any other profile 8 (a paper-size KV cache)."""
    def batch(*args: str) -> str:
        line = next(x for x in dry_make(tmp_path, "eval", "RUN=x", *args) if "musiclm.cli eval" in x)
        return line.split("--batch-size ")[1].split()[0]

    assert batch() == "32" and batch("PROFILE=paper") == "8" and batch("PROFILE=long") == "8"
    assert batch("EVAL_BATCH=4") == "4"
