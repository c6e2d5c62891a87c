"""Lightning data modules: one per input kind (audio+text shards, token shards), over one shard-reading base."""

from __future__ import annotations

import inspect
import json
import math
import random
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Self

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from musiclm.audio import AudioError, crop, load_audio
from musiclm.data.locations import LocalDir, Location, locations
from musiclm.data.shards import NoCaptionsError, is_captioned, list_shards, read_manifest
from musiclm.data.streams import Filtered, collate, mixed_stream, per_worker, shard_stream, train_seed
from musiclm.data.tokens import check_token_freshness, collate_tokens, decode_token_sample
from musiclm.paths import resolve

CaptionMode = Literal["caption", "tags", "random"]


class ShardDataModule(L.LightningDataModule):
    """Batches from webdataset shards in `<data dir>/<split>/`: train streams resampled for an epoch of
    `train_epoch_clips` (default: the train manifests' size) over all ranks, val/test read once and split over ranks.
    Several datasets (`sources`) train as one stream, each drawn with its `weights` entry (default: its clip count,
    i.e. the plain union); val/test read all of them once.

    Subclasses set `locations` (`data/locations.py`: local folders or shard URLs) and save their own hyperparameters
    (`batch_size`, `num_workers`, `shuffle_buffer`, `train_epoch_clips`, `seed`, `weights`), and provide the
    per-sample decoder; the stored hyperparameters are what a hand-off records, so each subclass keeps its own
    constructor."""

    locations: list[Location]
    shard_kind: ClassVar[str]  # "token shards", ...: names what is missing in the error message
    build_command: ClassVar[str]  # the command that builds the shards
    decode_errors: ClassVar[tuple[type[BaseException], ...]]  # a sample failing with these is dropped and counted
    collate_fn: ClassVar[Callable[[list[dict]], dict[str, Any]]]

    @classmethod
    def from_hparams(cls, hparams: dict[str, Any], **overrides: Any) -> Self:
        """Rebuild from a hand-off's `datamodule_hyper_parameters`: keys the constructor does not take (LightningCLI's
        bookkeeping such as `_instantiator`) are dropped; `overrides` win and are passed as they are."""
        accepted = inspect.signature(cls).parameters
        return cls(**{k: v for k, v in hparams.items() if k in accepted} | overrides)

    def decoder(self, train: bool, seed: int, rank: int) -> Callable[[dict], dict[str, Any] | None]:
        """One split's sample decoder (None or a `decode_errors` exception drops a sample); `train` picks random crops,
        `seed` and `rank` seed its draws so ranks differ."""
        raise NotImplementedError

    def manifest_clips(self, manifest: dict) -> int:
        """The clips of a split's manifest this module reads: an epoch's length and a dataset's default weight."""
        return manifest["num_samples"]

    def sources(self, split: str) -> list[tuple[list[str], int | None]]:
        """(shard URLs, clips this module reads; None without a manifest) of each dataset in the split."""
        out = []
        for loc in self.locations:
            manifest = loc.manifest(split)
            out.append((loc.shards(split), None if manifest is None else self.manifest_clips(manifest)))
        return out

    def shards(self, split: str) -> list[str]:
        urls = [u for loc in self.locations for u in loc.shards(split)]
        if not urls:
            where = ", ".join(f"{loc}/{split}" for loc in self.locations)
            raise FileNotFoundError(f"no {self.shard_kind} in {where}: build them with `{self.build_command}`")
        return urls

    def train_groups(self) -> tuple[list[list[str]], list[float], int]:
        """The train split's datasets with something to read: shard URLs, sampling weights, and their clips."""
        self.shards("train")  # a clear error when nothing is built
        sources, hp = self.sources("train"), self.hparams
        where = ", ".join(map(str, self.locations))
        if hp.weights is not None and len(hp.weights) != len(sources):
            raise ValueError(f"data.weights has {len(hp.weights)} entries for {len(sources)} datasets ({where})")
        if any(c is None for _, c in sources) and (hp.weights is None and len(sources) > 1 or not hp.train_epoch_clips):
            raise ValueError(f"a dataset of {where} has no train manifest to count its clips: set "
                             "--data.train_epoch_clips (and --data.weights for several datasets)")  # fmt: skip
        weights = [float(c or 0) for _, c in sources] if hp.weights is None else [float(w) for w in hp.weights]
        kept = [(urls, w, c) for (urls, c), w in zip(sources, weights, strict=True) if urls and c != 0 and w > 0]
        if not kept:
            raise ValueError(f"nothing to train on in {where}: every dataset is empty or weighted 0")
        return [u for u, _, _ in kept], [w for _, w, _ in kept], sum(c or 0 for _, _, c in kept)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def dataset(self, split: str, rank: int = 0, world_size: int = 1):
        hp, train = self.hparams, split == "train"
        seed = train_seed(hp.seed, self.trainer) if train else hp.seed
        decode = self.decoder(train, seed, rank)
        if not train:
            return shard_stream(self.shards(split), decode, self.decode_errors, train=False, rank=rank,
                                world_size=world_size)  # fmt: skip
        groups, weights, clips = self.train_groups()
        epoch = per_worker(hp.train_epoch_clips or clips, world_size, hp.num_workers)
        return mixed_stream(
            groups, weights, decode, self.decode_errors, rank=rank, world_size=world_size,
            shuffle_buffer=hp.shuffle_buffer, seed=seed, samples_per_worker=epoch,
        )  # fmt: skip

    def loader(self, split: str) -> DataLoader:
        rank, world = self._rank()
        hp = self.hparams
        return DataLoader(
            self.dataset(split, rank, world), batch_size=hp.batch_size, num_workers=hp.num_workers,
            collate_fn=self.collate_fn,
            persistent_workers=hp.num_workers > 0,  # workers keep their stream's epoch counter
        )  # fmt: skip

    def train_dataloader(self) -> DataLoader:
        return self.loader("train")

    def val_dataloader(self) -> DataLoader:
        return self.loader("val")

    def test_dataloader(self) -> DataLoader:
        return self.loader("test")


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

    def __init__(
        self, sample_rate: int, clip_samples: int, train: bool, caption_mode: CaptionMode, seed: int, rank: int,
        captioned_only: bool = False,
    ):  # fmt: skip
        self.sample_rate, self.clip_samples = sample_rate, clip_samples
        self.train, self.caption_mode = train, caption_mode
        self.seed, self.rank = seed, rank
        self.captioned_only = captioned_only
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
        if self.captioned_only and not is_captioned(meta):
            raise Filtered  # before decoding the audio: an uncaptioned clip costs MuLan nothing
        wave = load_audio(sample["flac"], self.sample_rate)
        mode = "random" if self.train else "center"
        wave = crop(wave, self.clip_samples, mode, np.random.default_rng(self.rng.getrandbits(32)))
        return {
            "audio": torch.from_numpy(np.ascontiguousarray(wave)),
            "text": choose_text(meta, self.caption_mode if self.train else "caption", self.rng),
            "key": sample["__key__"],
            "meta": meta,
        }


class AudioTextDataModule(ShardDataModule):
    """Audio shards (`data/shards/<DATASET>/<split>/`) -> batches {audio [B,T], text, key, meta, skipped}.

    `batch_size` is per device. `train_epoch_clips` sets the epoch length over all ranks (default: the train split's
    size from its manifest), which keeps multi-node epochs equal without counting shards. `captioned_only` (MuLan's
    config sets it) leaves uncaptioned clips out of every split and counts them (`data/filtered`); the epoch is then
    the captioned clips, and a split without any stops at `setup`.
    """

    shard_kind, build_command = "shards", "make data"
    decode_errors = (AudioError, KeyError, ValueError)
    collate_fn = staticmethod(collate)

    def __init__(
        self,
        data_dir: str | list[str] = "data/shards/synth",
        sample_rate: int = 24_000,
        clip_seconds: float = 10.0,
        batch_size: int = 8,
        num_workers: int = 2,
        shuffle_buffer: int = 256,
        caption_mode: CaptionMode = "random",
        train_epoch_clips: int | None = None,
        seed: int = 0,
        captioned_only: bool = False,
        weights: list[float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.locations = locations(data_dir, resolve)  # local folders under the root, like every other path

    @property
    def clip_samples(self) -> int:
        return int(round(self.hparams.clip_seconds * self.hparams.sample_rate))

    def manifest_clips(self, manifest: dict) -> int:
        if self.hparams.captioned_only:
            return manifest.get("num_captioned", manifest["num_samples"])
        return manifest["num_samples"]

    def setup(self, stage: str | None = None) -> None:
        """With `captioned_only`, stop at once on a split that has clips but no caption, rather than after an
        endless search of the stream."""
        if not self.hparams.captioned_only:
            return
        for split in {"fit": ("train", "val"), "validate": ("val",), "test": ("test",)}.get(stage or "fit", ()):
            manifests = [loc.manifest(split) for loc in self.locations]
            if None in manifests:
                continue  # nothing to count: the loader names the make target or filters as it reads
            clips = sum(m["num_samples"] for m in manifests)
            if clips and not sum(self.manifest_clips(m) for m in manifests):
                where = " + ".join(f"{loc}/{split}" for loc in self.locations)
                raise NoCaptionsError(
                    f"{where} has {clips} clips and none with a caption: MuLan "
                    "trains on text. Add captions (re-run `musiclm data ingest SRC OUT --captions table.csv`, a "
                    ".txt/.json beside each file, tags, or --folder-tags) or train MuLan on a captioned DATASET "
                    "(e.g. DATASET=synth+mine)"
                )

    def decoder(self, train: bool, seed: int, rank: int) -> AudioTextDecoder:
        hp = self.hparams
        return AudioTextDecoder(
            hp.sample_rate, self.clip_samples, train, hp.caption_mode, seed, rank, hp.captioned_only
        )


class TokenDecoder:
    """Decode a token sample and crop a window aligned across streams: the crop starts on a semantic frame, so
    acoustic frame = round(semantic frame * acoustic_rate / semantic_rate), whatever the ratio (2 for a 50-Hz
    codec, 3 for EnCodec's 75 Hz, 3.45 for DAC 44.1 kHz). Clips shorter than the crop are kept whole
    (`collate_tokens` pads and masks them)."""

    def __init__(self, crop_seconds: float | None, semantic_rate: float, acoustic_rate: float, train: bool, seed: int,
                 melody_rate: float | None = None):  # fmt: skip
        self.crop_seconds, self.semantic_rate, self.melody_rate = crop_seconds, semantic_rate, melody_rate
        self.acoustic_rate, self.train = acoustic_rate, train
        self.ratio = acoustic_rate / semantic_rate
        self.seed = seed
        self._rng: random.Random | None = None

    def __call__(self, sample: dict) -> dict[str, Any] | None:
        x = decode_token_sample(sample)
        sem, ac = x["semantic"], x["acoustic"]
        frames = min(len(sem), math.floor(ac.shape[-1] / self.ratio + 1e-6))
        if frames == 0:
            return None
        n_sem = frames if self.crop_seconds is None else min(frames, round(self.crop_seconds * self.semantic_rate))
        if self._rng is None:
            info = torch.utils.data.get_worker_info()
            self._rng = random.Random(hash((self.seed, info.id if info else 0)))
        last = frames - n_sem
        start = self._rng.randint(0, last) if self.train and last > 0 else max(0, last // 2)
        out = {
            "mulan": x["mulan"],
            "semantic": sem[start : start + n_sem],
            "acoustic": ac[:, round(start * self.ratio) : round((start + n_sem) * self.ratio)],
            "text": x["json"]["caption"],
            "key": sample["__key__"],
            "meta": x["json"],
        }
        if "melody" in x and self.melody_rate:  # from the melody window nearest the crop's start
            out["melody"] = x["melody"][:, round(start / self.semantic_rate * self.melody_rate) :]
        return out


class TokenDataModule(ShardDataModule):
    """Token shards (`data/tokens/<RUN>/<split>/`) -> batches {mulan [B,Qm], semantic [B,Ts], acoustic [B,Q,Ta],
    semantic_mask [B,Ts], acoustic_mask [B,Ta], text, key, meta, skipped} (+ melody [B,Qmel,Tmel] and melody_mask where
    the shards hold melody tokens), windows aligned across the semantic and acoustic streams at the frame rates the
    manifest records (unless `semantic_rate` / `acoustic_rate` are given).

    `crop_seconds=None` keeps whole clips; shorter clips are padded to the batch's longest and masked. With `run`
    set, tokens made by other checkpoints than the run's current ones are refused (`make tokenize` rebuilds them).
    Batch size is per device.
    """

    shard_kind, build_command = "token shards", "make tokenize"
    decode_errors = (KeyError, ValueError)
    collate_fn = staticmethod(collate_tokens)

    def __init__(
        self,
        data_dir: str = "data/tokens/demo",
        run: str | None = None,
        crop_seconds: float | None = None,
        semantic_rate: float | None = None,
        acoustic_rate: float | None = None,
        batch_size: int = 16,
        num_workers: int = 2,
        shuffle_buffer: int = 512,
        train_epoch_clips: int | None = None,
        seed: int = 0,
        weights: list[float] | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.data_dir = resolve(data_dir)  # relative to the root (musiclm --root), like every other path
        self.locations = [LocalDir(self.data_dir)]

    def sources(self, split: str) -> list[tuple[list[str], int]]:
        """Tokens of several audio datasets share one folder; the manifest says which shards came from which
        (`datasets`), so each keeps its own weight."""
        manifest = read_manifest(self.data_dir / split)
        urls = list_shards(self.data_dir / split)
        ranges = manifest.get("datasets") or [{"first": 0, "count": len(urls)}]
        counts = [e["num_samples"] for e in manifest["shards"]]
        return [
            (urls[r["first"] : r["first"] + r["count"]], sum(counts[r["first"] : r["first"] + r["count"]]))
            for r in ranges
        ]

    def setup(self, stage: str | None = None) -> None:
        if self.hparams.run is not None:
            check_token_freshness(self.data_dir, self.hparams.run)

    @property
    def vocab(self) -> dict[str, int] | None:
        """Stream sizes of the models that made the tokens (`make tokenize` records them), None if unknown."""
        path = self.data_dir / "train" / "manifest.json"
        return json.loads(path.read_text()).get("vocab") if path.exists() else None

    def decoder(self, train: bool, seed: int, rank: int) -> TokenDecoder:
        hp = self.hparams
        rates = {
            k: hp[k] if hp[k] is not None else (self.vocab or {}).get(k) for k in ("semantic_rate", "acoustic_rate")
        }
        if None in rates.values():
            raise ValueError(f"{self.data_dir}: its manifest records no frame rates: rebuild it with `make tokenize`")
        melody_rate = (self.vocab or {}).get("melody_rate")  # melody tokens, where the shards hold them
        return TokenDecoder(hp.crop_seconds, rates["semantic_rate"], rates["acoustic_rate"], train, hash((seed, rank)),
                            melody_rate)  # fmt: skip
