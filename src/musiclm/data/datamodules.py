"""Lightning data modules: one per input kind (audio+text shards, token shards)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from musiclm.audio import AudioError, crop, load_audio
from musiclm.data.streams import collate, per_worker, shard_stream, train_seed
from musiclm.data.shards import list_shards, read_manifest
from musiclm.data.tokens import check_token_freshness, collate_tokens, decode_token_sample

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
    """Decode + crop one audio sample. Its RNG is seeded lazily inside each loader worker from (seed, rank, worker),
    so workers and ranks draw different crops and caption choices (a copied RNG would make every worker identical)."""

    def __init__(self, sample_rate: int, clip_samples: int, train: bool, caption_mode: CaptionMode, seed: int, rank: int):
        self.sample_rate, self.clip_samples, self.train, self.caption_mode = sample_rate, clip_samples, train, caption_mode
        self.seed, self.rank = seed, rank
        self._rng: random.Random | None = None

    @property
    def rng(self) -> random.Random:
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            worker = info.id if info else 0
            self._rng = random.Random(hash((self.seed, self.rank, worker)))
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
        seed = train_seed(hp.seed, self.trainer) if train else hp.seed
        decode = AudioTextDecoder(hp.sample_rate, self.clip_samples, train, hp.caption_mode, seed, rank)
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
            seed=seed,
            samples_per_worker=epoch,
        )

    def loader(self, split: str) -> DataLoader:
        rank, world = self._rank()
        return DataLoader(
            self.dataset(split, rank, world),
            batch_size=self.hparams.batch_size,
            num_workers=self.hparams.num_workers,
            collate_fn=collate,
            persistent_workers=self.hparams.num_workers > 0,  # workers keep their stream's epoch counter
        )

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


class TokenDecoder:
    """Decode a token sample and crop a window aligned across streams: the crop starts on a semantic frame, so
    acoustic frame = semantic frame * (acoustic_rate / semantic_rate). Clips shorter than the crop are kept whole
    (`collate_tokens` pads and masks them)."""

    def __init__(self, crop_seconds: float | None, semantic_rate: float, acoustic_rate: float, train: bool, seed: int):
        self.crop_seconds, self.semantic_rate, self.acoustic_rate, self.train = crop_seconds, semantic_rate, acoustic_rate, train
        self.ratio = acoustic_rate / semantic_rate
        if self.ratio != int(self.ratio):
            raise ValueError("acoustic_rate must be a whole multiple of semantic_rate")
        self.ratio = int(self.ratio)
        self.seed = seed
        self._rng: random.Random | None = None

    def __call__(self, sample: dict) -> dict[str, Any] | None:
        x = decode_token_sample(sample)
        sem, ac = x["semantic"], x["acoustic"]
        frames = min(len(sem), ac.shape[-1] // self.ratio)
        if frames == 0:
            return None
        n_sem = frames if self.crop_seconds is None else min(frames, round(self.crop_seconds * self.semantic_rate))
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            self._rng = random.Random(hash((self.seed, info.id if info else 0)))
        last = frames - n_sem
        start = self._rng.randint(0, last) if self.train and last > 0 else max(0, last // 2)
        return {
            "mulan": x["mulan"],
            "semantic": sem[start : start + n_sem],
            "acoustic": ac[:, start * self.ratio : (start + n_sem) * self.ratio],
            "text": x["json"]["caption"],
            "key": sample["__key__"],
            "meta": x["json"],
        }


class TokenDataModule(L.LightningDataModule):
    """Token shards (`data/tokens/<RUN>/<split>/`) -> batches {mulan [B,Qm], semantic [B,Ts], acoustic [B,Q,Ta],
    semantic_mask [B,Ts], acoustic_mask [B,Ta], text, key, meta, skipped}, windows aligned across the 25-Hz semantic
    and 50-Hz acoustic streams.

    `crop_seconds=None` keeps whole clips; shorter clips are padded to the batch's longest and masked. With `run` set, tokens made by other
    checkpoints than the run's current ones are refused (`make tokenize` rebuilds them). Batch size is per device.
    """

    def __init__(
        self,
        data_dir: str = "data/tokens/demo",
        run: str | None = None,
        crop_seconds: float | None = None,
        semantic_rate: float = 25.0,
        acoustic_rate: float = 50.0,
        batch_size: int = 16,
        num_workers: int = 2,
        shuffle_buffer: int = 512,
        train_epoch_clips: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = Path(data_dir)

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.run is not None:
            check_token_freshness(self.data_dir, self.hparams.run)

    @property
    def vocab(self) -> dict[str, int] | None:
        """Stream sizes of the models that made the tokens (`make tokenize` records them), None if unknown."""
        path = self.data_dir / "train" / "manifest.json"
        return json.loads(path.read_text()).get("vocab") if path.exists() else None

    def shards(self, split: str) -> list[str]:
        urls = list_shards(self.data_dir / split)
        if not urls:
            raise FileNotFoundError(f"no token shards in {self.data_dir / split}: build them with `make tokenize`")
        return urls

    def dataset(self, split: str, rank: int = 0, world_size: int = 1):
        hp, train = self.hparams, split == "train"
        seed = train_seed(hp.seed, self.trainer) if train else hp.seed
        decode = TokenDecoder(hp.crop_seconds, hp.semantic_rate, hp.acoustic_rate, train, hash((seed, rank)))
        epoch = None
        if train:
            total = hp.train_epoch_clips or read_manifest(self.data_dir / split)["num_samples"]
            epoch = per_worker(total, world_size, hp.num_workers)
        return shard_stream(
            self.shards(split), decode, (KeyError, ValueError), train=train, rank=rank, world_size=world_size,
            shuffle_buffer=hp.shuffle_buffer, seed=seed, samples_per_worker=epoch,
        )  # fmt: skip

    def loader(self, split: str) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)
        hp = self.hparams
        return DataLoader(
            self.dataset(split, rank, world), batch_size=hp.batch_size, num_workers=hp.num_workers,
            collate_fn=collate_tokens, persistent_workers=hp.num_workers > 0,
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")
