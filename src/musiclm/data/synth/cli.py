"""`musiclm data synth`: render the synthetic captioned music corpus into train/val/test audio shards."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from musiclm.data.synth.corpus import build

DESCRIPTION = "Synthetic captioned music corpus: procedurally composed General MIDI pieces rendered with FluidSynth."


def main(argv: list[str] | None = None) -> None:
    """Build the corpus; exit status 1 when FluidSynth or a soundfont is missing or no clip was kept."""
    p = argparse.ArgumentParser(prog="musiclm data synth", description=DESCRIPTION)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--num-clips", type=int, required=True)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--sample-rate", type=int, default=24_000)
    p.add_argument("--val-fraction", type=float, default=0.1)
    p.add_argument("--test-fraction", type=float, default=0.1)
    p.add_argument("--clips-per-shard", type=int, default=64)
    p.add_argument("--prompt-kinds-rate", type=float, default=0.0,
                   help="share of clips with a negation or temporal-order prompt, made true in the audio (default 0: "
                   "the corpus is bit-identical to one built without this flag)")  # fmt: skip
    p.add_argument("--melody-pairs", action="store_true",
                   help="also render each clip's melody with another instrument, arrangement and octave, solo and "
                   "hummed (keys <key>-<variant>, the notes in the json's `melody`): the melody model's training "
                   "pairs; the clips themselves stay the default corpus's")  # fmt: skip
    a = p.parse_args(argv)
    from musiclm.data.ingest import summary

    try:
        t0 = time.perf_counter()
        manifests = build(a.out_dir, a.num_clips, a.seconds, a.seed, a.workers, a.sample_rate, a.val_fraction,
                          a.test_fraction, a.clips_per_shard, a.prompt_kinds_rate, a.melody_pairs)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(1)
    kept, text = summary(manifests)
    print(text)
    print(f"{a.out_dir}: {kept} clips in {time.perf_counter() - t0:.1f} s")
    if kept == 0:
        sys.exit(1)
