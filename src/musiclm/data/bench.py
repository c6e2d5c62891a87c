"""Data benchmarks: synthetic rendering speed, ingest throughput, loader throughput (10-s 24 kHz clips)."""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

from musiclm.data import ingest, synth
from musiclm.data.datamodules import AudioTextDataModule


def _write_sources(folder: Path, num_files: int, seconds: float, sample_rate: int = 44_100) -> None:
    rng = np.random.default_rng(0)
    for i in range(num_files):
        t = np.arange(int(seconds * sample_rate)) / sample_rate
        x = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 1000) * t) + 0.05 * rng.standard_normal(len(t))
        sf.write(folder / f"track{i:03d}.wav", np.stack([x, x], 1).astype(np.float32), sample_rate)
        (folder / f"track{i:03d}.txt").write_text("a test tone")


def bench(num_files: int = 24, file_seconds: float = 30.0, workers: int = 2) -> dict:
    out: dict[str, float] = {}
    out.update({f"synth_{k}": v for k, v in synth.bench(num_clips=6, seconds=10.0).items()})
    with tempfile.TemporaryDirectory() as tmp:
        src, shards = Path(tmp) / "src", Path(tmp) / "shards"
        src.mkdir()
        _write_sources(src, num_files, file_seconds)
        t0 = time.perf_counter()
        manifests = ingest.ingest(
            src, shards, None, 24_000, 10.0, val_fraction=0, test_fraction=0, workers=workers, files_per_shard=4
        )
        clips = manifests["train"]["num_samples"]
        out["ingest_clips_per_s"] = clips / (time.perf_counter() - t0)
        out["ingest_workers"] = workers
        out["ingest_clips_per_s_per_core"] = out["ingest_clips_per_s"] / workers  # what one SLURM-array core adds
        dm = AudioTextDataModule(
            str(shards), 24_000, 10.0, batch_size=8, num_workers=workers, train_epoch_clips=4 * clips
        )
        t0 = time.perf_counter()
        n = sum(len(b["key"]) for b in dm.loader("train"))
        out["loader_clips_per_s"] = n / (time.perf_counter() - t0)
        out["loader_workers"] = workers
    return {k: round(v, 2) if isinstance(v, float) else v for k, v in out.items()}
