"""Streaming readers over WebDataset shards, shared by every data module.

Training streams resample shards with replacement (`SlotShards` + `with_epoch`): every rank and worker gets an
endless, differently seeded stream drawn from its own share of the shards, so no two ranks or workers read the same
shard while there are at least as many shards as (rank, worker) slots; with fewer shards every slot draws from all of
them, so fewer shards than workers cannot hang. An epoch has a fixed length on any number of nodes. Streams are
reproducible for a seed (`train_seed`): webdataset cannot resume mid-stream, so a resumed run salts the seed with
its restored step instead of replaying the first samples. Evaluation reads every shard once and splits *samples*
round-robin over (rank, worker), so each val/test sample is seen exactly once per epoch whatever the shard count.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterator
from typing import Any

import torch
import webdataset as wds


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (info.id, info.num_workers) if info else (0, 1)


def split_samples(rank: int, world_size: int) -> Callable[[Iterator[dict]], Iterator[dict]]:
    """Keep sample i on the (rank, worker) slot i % (world_size * num_workers)."""

    def _split(samples: Iterator[dict]) -> Iterator[dict]:
        worker, num_workers = _worker()
        slot, slots = rank * num_workers + worker, world_size * num_workers
        for i, sample in enumerate(samples):
            if i % slots == slot:
                yield sample

    return _split


class SlotShards(torch.utils.data.IterableDataset):
    """Endless `{"url": ...}` shard draws, with replacement, for one (rank, worker) slot: from `urls[slot::slots]`
    when every slot can have a shard of its own, else from all of `urls`. Seeded by (seed, slot, epoch), the epoch
    advancing with each iteration of a persistent worker, so a run repeats exactly."""

    def __init__(self, urls: list[str], rank: int, world_size: int, seed: int):
        super().__init__()
        self.urls, self.rank, self.world_size, self.seed, self.epoch = list(urls), rank, world_size, seed, -1

    def __iter__(self) -> Iterator[dict[str, str]]:
        self.epoch += 1
        worker, num_workers = _worker()
        slot, slots = self.rank * num_workers + worker, self.world_size * num_workers
        mine = self.urls[slot::slots] if len(self.urls) >= slots else self.urls
        rng = random.Random(f"{self.seed}-{slot}-{self.epoch}")
        while True:
            yield {"url": rng.choice(mine)}


def skip_bad(decode: Callable[[dict], dict | None], errors: tuple[type[BaseException], ...]) -> Callable:
    """Apply `decode`, dropping samples that fail with `errors` (or return None); the number dropped since the
    previous sample rides along in `sample["skipped"]` so the module can log it."""

    def _stage(samples: Iterator[dict]) -> Iterator[dict]:
        dropped = 0
        for raw in samples:
            try:
                out = decode(raw)
            except errors:
                out = None
            if out is None:
                dropped += 1
                continue
            out["skipped"] = dropped
            dropped = 0
            yield out

    return _stage


def shard_stream(
    urls: list[str],
    decode: Callable[[dict], dict | None],
    errors: tuple[type[BaseException], ...],
    *,
    train: bool,
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int = 256,
    seed: int = 0,
    samples_per_worker: int | None = None,
) -> wds.DataPipeline:
    """A webdataset pipeline yielding decoded samples (batching happens in the DataLoader)."""
    read = wds.tarfile_to_samples(handler=wds.warn_and_continue)
    if train:
        # the loaders keep their workers (persistent_workers), so SlotShards' epoch counter advances
        stages: list[Any] = [SlotShards(urls, rank, world_size, seed), read]
        if shuffle_buffer > 1:
            stages.append(wds.shuffle(shuffle_buffer, initial=min(shuffle_buffer, 64), seed=seed))
        stages.append(skip_bad(decode, errors))
        pipe = wds.DataPipeline(*stages)
        return pipe.with_epoch(samples_per_worker) if samples_per_worker else pipe
    return wds.DataPipeline(wds.SimpleShardList(urls), read, split_samples(rank, world_size), skip_bad(decode, errors))


def train_seed(seed: int, trainer) -> int:
    """The training streams' seed: the data module's `seed`, salted with the global step the trainer restored (0 on
    a fresh run), so runs repeat exactly and a resumed run draws new samples."""
    step = trainer.global_step if trainer is not None else 0
    return seed if step == 0 else hash((seed, step)) % 2**31


def per_worker(total: int, world_size: int, num_workers: int) -> int:
    """Samples each worker yields so that one epoch covers `total` samples across all ranks and workers."""
    return max(1, math.ceil(total / (world_size * max(1, num_workers))))


def collate(samples: list[dict]) -> dict[str, Any]:
    """Stack tensors, keep strings/dicts as lists, and sum the skip counters."""
    out: dict[str, Any] = {}
    for k in samples[0]:
        values = [s[k] for s in samples]
        if k == "skipped":
            out[k] = torch.tensor(sum(values))
        elif isinstance(values[0], torch.Tensor):
            out[k] = torch.stack(values)
        else:
            out[k] = values
    return out
