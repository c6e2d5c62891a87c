"""`MelodyPairDataModule`: melody-pair audio shards (`musiclm data synth --melody-pairs`) held in memory as int16.

A pair corpus is small (a few hundred melodies x 6 renderings), and a useful batch needs B *different* melodies
with two renderings each: a streaming shuffle cannot promise either, an in-memory table of melodies can. Samples
group by their json's `melody.id`; a sample that fails to decode is skipped and counted (printed at setup).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from musiclm.audio import AudioError, load_audio
from musiclm.data.shards import iter_tar_samples, list_shards
from musiclm.melody.windows import num_windows
from musiclm.paths import resolve

Groups = dict[str, dict[str, np.ndarray]]  # melody id -> variant -> int16 audio


def load_groups(split_dir: str | Path, sample_rate: int) -> Groups:
    """Every melody of one split of a melody-pair corpus, its renderings cut to the shortest of them."""
    shards = list_shards(split_dir)
    if not shards:
        raise FileNotFoundError(f"no melody-pair shards in {split_dir}: build them with `make train-melody` "
                                "(or musiclm data synth DIR --melody-pairs)")  # fmt: skip
    groups: Groups = {}
    skipped = 0
    for shard in shards:
        for s in iter_tar_samples(shard):
            try:
                meta = json.loads(s["json"])
                melody = meta["melody"]
                wave = load_audio(s["flac"], sample_rate)
            except (AudioError, KeyError, ValueError):
                skipped += 1
                continue
            groups.setdefault(melody["id"], {})[melody["variant"]] = (np.clip(wave, -1, 1) * 32767).astype(np.int16)
    if skipped:
        print(f"{split_dir}: skipped {skipped} samples that failed to decode or lack `melody`", file=sys.stderr)
    groups = {k: v for k, v in groups.items() if len(v) >= 2}
    for g in groups.values():
        n = min(len(w) for w in g.values())
        for v in g:
            g[v] = g[v][:n]
    return groups


def as_float(x: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(x.astype(np.float32) / 32767)


class PairBatches(IterableDataset):
    """Endless batches {anchor, positive: [B, window]}: B different melodies, two different renderings of each at
    the same random window."""

    def __init__(self, groups: Groups, batch_size: int, window: int, seed: int):
        self.groups, self.ids = groups, sorted(groups)
        self.batch_size, self.window, self.seed = min(batch_size, len(groups)), window, seed

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        rng = np.random.default_rng(self.seed)
        while True:
            anchors, positives = [], []
            for i in rng.choice(len(self.ids), self.batch_size, replace=False):
                g = self.groups[self.ids[i]]
                a, b = rng.choice(sorted(g), 2, replace=False)
                start = int(rng.integers(0, max(1, len(g[a]) - self.window + 1)))
                anchors.append(np.pad(g[a][start : start + self.window], (0, max(0, self.window - len(g[a])))))
                positives.append(np.pad(g[b][start : start + self.window], (0, max(0, self.window - len(g[b])))))
            yield {"anchor": as_float(np.stack(anchors)), "positive": as_float(np.stack(positives))}


def fixed_pairs(groups: Groups, sample_rate: int, window: float, hop: float, query: str, gallery: str) -> list[dict]:
    """One batch per window position: every melody's `query` rendering against its `gallery` one (melodies lacking
    either are left out), the melodies in sorted order so row i of each is one melody."""
    ids = sorted(k for k, g in groups.items() if query in g and gallery in g)
    if not ids:
        return []
    n, step = round(window * sample_rate), round(hop * sample_rate)
    count = num_windows(min(len(groups[k][query]) for k in ids) / sample_rate, window, hop)
    return [
        {name: as_float(np.stack([groups[k][v][w * step : w * step + n] for k in ids]))
         for name, v in (("anchor", query), ("positive", gallery))}
        for w in range(count)
    ]  # fmt: skip


class MelodyPairDataModule(L.LightningDataModule):
    """Train: endless `PairBatches`; val: every held-out melody's hummed window against its original mix at the
    same window (recall@1 is over all val melodies at once, so `val_melodies` caps the gallery)."""

    def __init__(
        self,
        data_dir: str = "data/shards/synth-melody",
        sample_rate: int = 16_000,
        window_seconds: float = 4.0,
        hop_seconds: float = 3.0,
        batch_size: int = 64,
        val_melodies: int = 64,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = resolve(data_dir)
        self.groups: dict[str, Groups] = {}

    def setup(self, stage: str | None = None) -> None:
        for split in ("train", "val"):  # an empty val split (a tiny corpus) only leaves validation out
            if split not in self.groups and (split == "train" or list_shards(self.data_dir / split)):
                self.groups[split] = load_groups(self.data_dir / split, self.hparams.sample_rate)
        if not self.groups["train"]:
            raise ValueError(f"{self.data_dir / 'train'} holds no melody pairs: build it with --melody-pairs")

    def train_dataloader(self) -> DataLoader:
        hp = self.hparams
        seed = hp.seed + (self.trainer.global_step if self.trainer is not None else 0)  # a resumed run draws anew
        batches = PairBatches(self.groups["train"], hp.batch_size, round(hp.window_seconds * hp.sample_rate), seed)
        return DataLoader(batches, batch_size=None)

    def val_dataloader(self) -> DataLoader:
        hp = self.hparams
        val = dict(sorted(self.groups.get("val", {}).items())[: hp.val_melodies])
        return DataLoader(fixed_pairs(val, hp.sample_rate, hp.window_seconds, hp.hop_seconds, "hummed", "original"),
                          batch_size=None)  # fmt: skip

    def embedding_waves(self, batch_size: int = 16) -> Iterator[torch.Tensor]:
        """Every rendering of every train melody, whole, in batches `[b, T]` (the quantizer's fitting set)."""
        waves = [w for g in self.groups["train"].values() for w in g.values()]
        n = min(len(w) for w in waves)
        for i in range(0, len(waves), batch_size):
            yield as_float(np.stack([w[:n] for w in waves[i : i + batch_size]]))
