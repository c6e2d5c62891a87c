"""Lightning data modules: one per input kind (audio+text shards, token shards)."""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from musiclm.audio import AudioError, crop, load_audio
from musiclm.data.streams import collate, per_worker, shard_stream
from musiclm.data.shards import list_shards, read_manifest

CaptionMode = Literal["caption", "tags", "random"]


def log_skipped(module: L.LightningModule, batch: dict[str, Any]) -> None:
    """Log how many corrupt samples the loader dropped (summed over the epoch)."""
    if "skipped" in batch:
        module.log("data/skipped", batch["skipped"].float(), on_step=False, on_epoch=True, reduce_fx="sum", batch_size=1)


def choose_text(meta: dict, mode: CaptionMode, rng: random.Random | None) -> str:
    """The caption, or the tags as a comma list; `random` picks one per sample (MuLan trains on both)."""
    tags = ", ".join(meta.get("tags") or [])
    if mode == "tags" and tags:
        return tags
    if mode == "random" and tags and rng is not None and rng.random() < 0.5:
        return tags
    return meta["caption"]


class AudioTextDecoder:
    """Decode + crop one audio sample. Its RNG is seeded lazily inside each loader worker, so workers and ranks
    draw different crops and caption choices (a copied RNG would make every worker identical)."""

    def __init__(self, sample_rate: int, clip_samples: int, train: bool, caption_mode: CaptionMode, seed: int, rank: int):
        self.sample_rate, self.clip_samples, self.train, self.caption_mode = sample_rate, clip_samples, train, caption_mode
        self.seed, self.rank = seed, rank
        self._rng: random.Random | None = None

    @property
    def rng(self) -> random.Random:
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            worker = info.id if info else 0
            # eval crops are centred, so only training needs fresh randomness per run
            salt = int.from_bytes(os.urandom(4), "little") if self.train else 0
            self._rng = random.Random(hash((self.seed, self.rank, worker, salt)))
        return self._rng

    def __call__(self, sample: dict) -> dict[str, Any]:
        meta = json.loads(sample["json"])
        wave = load_audio(sample["flac"], self.sample_rate)
        mode = "random" if self.train else "center"
        wave = crop(wave, self.clip_samples, mode, np.random.default_rng(self.rng.getrandbits(32)))
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(wave)),
            "text": choose_text(meta, self.caption_mode if self.train else "caption", self.rng),
            "key": sample["__key__"],
            "meta": meta,
        }


class AudioTextDataModule(L.LightningDataModule):
    """Audio shards (`data/shards/<DATASET>/<split>/`) -> batches {audio [B,T], text, key, meta, skipped}.

    `batch_size` is per device. `train_epoch_clips` sets the epoch length over all ranks (default: the train split's
    size from its manifest), which keeps multi-node epochs equal without counting shards.
    """

    def __init__(
        self,
        data_dir: str = "data/shards/synth",
        sample_rate: int = 24_000,
        clip_seconds: float = 10.0,
        batch_size: int = 8,
        num_workers: int = 2,
        shuffle_buffer: int = 256,
        caption_mode: CaptionMode = "random",
        train_epoch_clips: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)

    @property
    def clip_samples(self) -> int:
        return int(round(self.hparams.clip_seconds * self.hparams.sample_rate))

    def shards(self, split: str) -> list[str]:
        urls = list_shards(self.data_dir / split)
        if not urls:
            raise FileNotFoundError(f"no shards in {self.data_dir / split}: build them with `make data`")
        return urls

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def dataset(self, split: str, rank: int = 0, world_size: int = 1):
        train = split == "train"
        hp = self.hparams
        decode = AudioTextDecoder(hp.sample_rate, self.clip_samples, train, hp.caption_mode, hp.seed, rank)
        epoch = None
        if train:
            total = hp.train_epoch_clips or read_manifest(self.data_dir / split)["num_samples"]
            epoch = per_worker(total, world_size, hp.num_workers)
        return shard_stream(
            self.shards(split),
            decode,
            (AudioError, KeyError, ValueError),
            train=train,
            rank=rank,
            world_size=world_size,
            shuffle_buffer=hp.shuffle_buffer,
            seed=hp.seed,
            samples_per_worker=epoch,
        )

    def loader(self, split: str) -> DataLoader:
        rank, world = self._rank()
        return DataLoader(
            self.dataset(split, rank, world),
            batch_size=self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            collate_fn=collate,
            persistent_workers=False,
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


class TokenDataModule(L.LightningDataModule):
    """Token shards (`data/tokens/<RUN>/<split>/`) for the LM stages. Filled in by the tokenize issue (#5)."""
