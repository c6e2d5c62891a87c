"""Shared fixtures: tiny audio shards made of tones, so layer tests need neither FluidSynth nor a corpus."""

from __future__ import annotations

import zlib
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import torch

from musiclm.audio import encode_audio
from musiclm.data.shards import write_split_shards

FAMILIES = ("sine", "square", "noise")


def tone_sample(index: int, split: str, seconds: float, sample_rate: int) -> list[dict]:
    """A clip whose timbre (family) and pitch are recoverable, with a caption that names them."""
    rng = np.random.default_rng([index, zlib.crc32(split.encode())])
    family = FAMILIES[index % len(FAMILIES)]
    freq = float(rng.choice([220.0, 330.0, 440.0, 660.0]))
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    if family == "sine":
        x = np.sin(2 * np.pi * freq * t)
    elif family == "square":
        x = np.sign(np.sin(2 * np.pi * freq * t))
    else:
        x = rng.standard_normal(len(t))
    x = (0.3 * x * (0.6 + 0.4 * np.sin(2 * np.pi * 2 * t))).astype(np.float32)
    meta = {
        "caption": f"a {family} tone at {int(freq)} hertz",
        "tags": [family, f"{int(freq)} hz"],
        "sample_rate": sample_rate,
        "duration": seconds,
        "source": "test",
        "attributes": {"instrument_family": family, "freq": freq},
    }
    return [{"__key__": f"{split}-{index:05d}", "flac": encode_audio(x, sample_rate), "json": meta}]


def make_tone_shards(
    root: Path, counts: dict[str, int], seconds: float = 1.0, sample_rate: int = 16_000, per_shard: int = 4
) -> Path:
    for split, n in counts.items():
        write_split_shards(
            root,
            split,
            list(range(n)),
            partial(tone_sample, split=split, seconds=seconds, sample_rate=sample_rate),
            per_shard,
        )
    return root


@pytest.fixture(scope="session")
def tone_shards(tmp_path_factory) -> Path:
    """data/shards-like folder with train 24, val 9, test 6 one-second 16 kHz clips."""
    return make_tone_shards(tmp_path_factory.mktemp("tones"), {"train": 24, "val": 9, "test": 6})


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)  # tests share 2 cores; one thread each keeps them predictable


def half_captioned_sample(index: int, split: str, seconds: float, sample_rate: int) -> list[dict]:
    """`tone_sample`, with odd indices uncaptioned as ingest writes them (no caption, no tags)."""
    [sample] = tone_sample(index, split, seconds, sample_rate)
    if index % 2:
        sample["json"].update(caption=None, captioned=False, tags=[])
    return [sample]
