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

import itertools
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


class Filtered(Exception):
    """Raised by a decoder to leave a good sample out on purpose (MuLan's uncaptioned clips): counted apart from
    corrupt samples."""


COUNTERS = ("skipped", "filtered")  # per-sample counters that `collate` sums into the batch


def skip_bad(decode: Callable[[dict], dict | None], errors: tuple[type[BaseException], ...]) -> Callable:
    """Apply `decode`, dropping samples that fail with `errors` (or return None) and those it `Filtered` out; the
    numbers dropped since the previous sample ride along in `sample["skipped"]` and `sample["filtered"]` so the
    module can log them."""

    def _stage(samples: Iterator[dict]) -> Iterator[dict]:
        dropped = filtered = 0
        for raw in samples:
            try:
                out = decode(raw)
            except Filtered:
                filtered += 1
                continue
            except errors:
                out = None
            if out is None:
                dropped += 1
                continue
            out["skipped"], out["filtered"] = dropped, filtered
            dropped = filtered = 0
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


class WeightedMix(torch.utils.data.IterableDataset):
    """Several endless training streams (one per dataset) as one: each sample comes from stream i with probability
    weights[i] / sum(weights), drawn from an RNG seeded by (seed, rank, worker, epoch) like the streams themselves,
    for `samples_per_worker` samples an epoch."""

    def __init__(self, streams: list[wds.DataPipeline], weights: list[float], seed: int, rank: int,
                 samples_per_worker: int | None):  # fmt: skip
        super().__init__()
        self.streams, self.weights = streams, weights
        self.seed, self.rank, self.samples_per_worker = seed, rank, samples_per_worker
        self.epoch = 0  # persistent loader workers keep it, so each epoch draws anew

    def __iter__(self) -> Iterator[dict]:
        self.epoch += 1
        worker, _ = _worker()
        rng = random.Random(hash((self.seed, self.rank, worker, self.epoch)))
        sources = [iter(s) for s in self.streams]
        picks = range(len(sources))
        for _ in itertools.count() if self.samples_per_worker is None else range(self.samples_per_worker):
            yield next(sources[rng.choices(picks, weights=self.weights)[0]])


def mixed_stream(
    groups: list[list[str]],
    weights: list[float],
    decode: Callable[[dict], dict | None],
    errors: tuple[type[BaseException], ...],
    *,
    rank: int = 0,
    world_size: int = 1,
    shuffle_buffer: int = 256,
    seed: int = 0,
    samples_per_worker: int | None = None,
) -> torch.utils.data.IterableDataset:
    """The training stream of several datasets (`groups`: each one's shard URLs) sampled by `weights`; one group
    is `shard_stream` itself."""
    streams = [
        shard_stream(urls, decode, errors, train=True, rank=rank, world_size=world_size, shuffle_buffer=shuffle_buffer,
                     seed=seed + i)  # fmt: skip
        for i, urls in enumerate(groups)
    ]
    if len(streams) == 1:
        return streams[0].with_epoch(samples_per_worker) if samples_per_worker else streams[0]
    return WeightedMix(streams, weights, seed, rank, samples_per_worker)


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
        if k in COUNTERS:
            out[k] = torch.tensor(sum(values))
        elif isinstance(values[0], torch.Tensor):
            out[k] = torch.stack(values)
        else:
            out[k] = values
    return out
