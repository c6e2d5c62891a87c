"""`musiclm tokenize`: audio shards -> token shards with the run's token producers (MuLan, the semantic tokenizer
and the codec by default; any implementation of their roles in `musiclm.contracts`).

Audio shard i of a split becomes token shard i. Every model runs once per batch in eval mode (quantizer dropout in
train mode would write -1 codes) under inference_mode. The checkpoints' content ids are part of each shard's plan,
so a re-run keeps complete shards made with the same checkpoints and rebuilds everything after one changed.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.nn.utils import parametrize

from musiclm.artifacts import handoff, load_model, model_path
from musiclm.audio import AudioError, load_audio, resample_batch
from musiclm.contracts import TokenProducer, stream_spec
from musiclm.data.shards import SPLITS, iter_tar_samples, list_shards, write_split_shards
from musiclm.data.tokens import OPTIONAL_STAGES, TOKEN_STAGES, current_ids, token_sample
from musiclm.paths import data_dir, dataset_dirs
from musiclm.stages import OPTIONAL_STREAMS, TOKEN_STREAMS


@dataclass(frozen=True)
class TokenJob:
    """One audio shard to tokenize, with the checkpoint ids it will be tokenized with."""

    shard: str
    ids: str

    def __str__(self) -> str:  # the shard plan hashes str(item): new checkpoints -> new plan -> rebuild
        return f"{self.shard}@{self.ids}"


@functools.lru_cache(maxsize=2)
def models(run: str) -> dict[str, TokenProducer]:
    """The run's token producers by stage name, loaded once per process; an optional one (melody) where the run
    has its hand-off."""
    present = tuple(s for s in OPTIONAL_STAGES if model_path(run, s).is_file())
    return {s: load_model(run, s) for s in TOKEN_STAGES + present}


def streams(m: dict[str, TokenProducer]) -> dict[str, str]:
    """Stage -> stream for the producers in `m`: every required stream, and the optional ones loaded."""
    return TOKEN_STREAMS | {s: v for s, v in OPTIONAL_STREAMS.items() if s in m}


@torch.inference_mode()
def tokenize_waves(
    m: dict[str, TokenProducer], waves: list[np.ndarray], sample_rate: int
) -> list[dict[str, torch.Tensor]]:
    """Equal-length clips at `sample_rate` -> `{stream: ids}` per clip (mulan [Qm], semantic [Ts], acoustic [Q, Ta]).
    Each producer gets the audio at its own rate; a timed stream keeps round(seconds * frame_rate) frames."""
    batch = torch.from_numpy(np.stack(waves))
    seconds = len(waves[0]) / sample_rate
    out: dict[str, torch.Tensor] = {}
    for stage, stream in streams(m).items():
        producer = m[stage]
        ids = producer.tokenize(resample_batch(batch, sample_rate, producer.sample_rate))
        rate = stream_spec(producer).get("rate")
        out[stream] = ids if rate is None else ids[..., : round(seconds * rate)]
    return [{s: t[i] for s, t in out.items()} for i in range(len(waves))]


def vocab(m: dict[str, TokenProducer]) -> dict[str, float | int]:
    """Each stream's levels, codebook size and frame rate (`<stream>_levels`, ...), recorded in the manifest: the LM
    stages size themselves from it."""
    return {f"{stream}_{k}": v for stage, stream in streams(m).items() for k, v in stream_spec(m[stage]).items()}


def tokenize_shard(job: TokenJob, run: str, batch_size: int, threads: int) -> list[dict]:
    torch.set_num_threads(threads)  # workers x threads = cores: oversubscribed OpenMP threads spin and stall
    m = models(run)
    ids = json.loads(job.ids)
    samples = list(iter_tar_samples(job.shard))
    out: list[dict] = []
    groups: dict[int, list[tuple[dict, np.ndarray, dict]]] = {}
    for s in samples:  # clips of equal length batch together (ingest's last clip of a file may be shorter)
        try:
            meta = json.loads(s["json"])
            wave = load_audio(s["flac"], meta["sample_rate"])
        except (AudioError, KeyError, ValueError):
            continue  # counted by the audio shards' own checks; a token shard simply lacks it
        groups.setdefault(len(wave), []).append((s, wave, meta))
    with parametrize.cached():  # weight-normed weights (the codec's) computed once per shard, not once per batch
        for group in groups.values():
            for i in range(0, len(group), batch_size):
                chunk = group[i : i + batch_size]
                sr = chunk[0][2]["sample_rate"]
                for (s, _, meta), tokens in zip(chunk, tokenize_waves(m, [w for _, w, _ in chunk], sr), strict=True):
                    out.append(token_sample(s["__key__"], tokens, {**meta, "checkpoint_ids": ids}))
    out.sort(key=lambda d: d["__key__"])
    return out


def tokenize(run: str, dataset_dir: Path | list[Path], out_dir: Path, splits=SPLITS, workers: int = 1,
             batch_size: int = 16) -> dict:  # fmt: skip
    """Token shards of every clip (captioned or not: the LM stages condition on MuLan *audio* tokens) of one audio
    dataset, or of several (a list, or `synth+mine`) into one folder whose manifest records which token shards came
    from which (`datasets`), so the LM stages can weight them."""
    dirs = dataset_dir if isinstance(dataset_dir, list) else dataset_dirs(dataset_dir)
    ids = current_ids(run)
    missing = [s for s in TOKEN_STAGES if s not in ids]
    if missing:
        load_model(run, missing[0])  # raises MissingArtifactError naming the make target
    ids_text = json.dumps(ids, sort_keys=True)
    manifests, sizes = {}, vocab(models(str(run)))
    for split in splits:
        jobs, datasets = [], []
        for d in dirs:
            shards = list_shards(d / split)
            datasets.append({"audio_dir": str(d / split), "first": len(jobs), "count": len(shards)})
            jobs += [TokenJob(s, ids_text) for s in shards]
        if not jobs:
            where = ", ".join(str(d / split) for d in dirs)
            raise FileNotFoundError(f"no audio shards in {where}: build them with `make data`")
        threads = max(1, (os.cpu_count() or 1) // max(1, workers))
        make = functools.partial(tokenize_shard, run=str(run), batch_size=batch_size, threads=threads)
        where = {"audio_dir": str(dirs[0] / split)} if len(dirs) == 1 else {"datasets": datasets}
        manifests[split] = write_split_shards(
            out_dir, split, jobs, make, items_per_shard=1, workers=workers,
            extra_manifest={"checkpoint_ids": ids, **where, "run": str(run), "vocab": sizes},
        )  # fmt: skip
    return manifests


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm tokenize", description=__doc__)
    p.add_argument("--run", default="demo")
    p.add_argument("--dataset", default="synth", help="audio shards under data/shards/<DATASET> (synth+mine: both)")
    p.add_argument("--out", type=Path, default=None, help="default: data/tokens/<RUN>")
    p.add_argument("--splits", nargs="+", default=list(SPLITS))
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=16)
    a = p.parse_args(argv)
    out = a.out or data_dir() / "tokens" / Path(a.run).name
    t0 = time.perf_counter()
    manifests = tokenize(a.run, data_dir() / "shards" / a.dataset, out, a.splits, a.workers, a.batch_size)
    seconds = sum(m["seconds"] for m in manifests.values())
    dt = time.perf_counter() - t0
    for split, m in manifests.items():
        print(f"{split}: {m['num_samples']} clips -> {out / split}")
    print(f"{seconds:.0f} s of audio in {dt:.1f} s ({seconds / dt:.1f} audio-s/s, includes skipped complete shards)")


def untrained_producers(
    profile: str, tmp: str | Path, args: dict[str, list[str]] | None = None
) -> dict[str, TokenProducer]:
    """The profile's token producers, freshly initialised (a fitted-looking MuLan quantizer and random k-means
    centroids): what speed benchmarks and vocabulary-only callers need, since neither depends on training. `tmp`
    holds the MuLan hand-off the semantic tokenizer reads; `args` adds CLI overrides per stage."""
    from musiclm.train import build_cli

    args = args or {}
    m = {}
    for stage in ("mulan", "codec"):
        m[stage] = build_cli(stage, tmp, profile, "cpu", ["--trainer.logger=false", *args.get(stage, [])]).model.eval()
    m["mulan"].quantizer_fitted.fill_(True)
    source = Path(tmp) / "mulan.ckpt"
    torch.save(handoff(m["mulan"]), source)
    sem = build_cli(
        "semantic_tokens", tmp, profile, "cpu", ["--trainer.logger=false", f"--model.source={source}"]
    ).model
    sem.initialized.fill_(True)
    sem.centroids.data.normal_()
    m["semantic_tokens"] = sem.eval()
    return m


def profile_vocab(profile: str, args: dict[str, list[str]] | None = None) -> dict[str, float | int]:
    """The token manifest's `vocab` that a chain of this profile would write: what LM stages built outside
    `musiclm train` (benchmarks) are sized with."""
    with tempfile.TemporaryDirectory() as tmp:
        return vocab(untrained_producers(profile, tmp, args))


def bench(clips: int = 16, seconds: float = 8.0) -> dict:
    """Audio-seconds tokenised per second with freshly initialised demo-profile models (the cost does not depend
    on training)."""
    with tempfile.TemporaryDirectory() as tmp:
        m = untrained_producers("demo", tmp)
        waves = [
            np.random.default_rng(i).standard_normal(int(seconds * 24_000)).astype(np.float32) * 0.1
            for i in range(clips)
        ]
        tokenize_waves(m, waves[:2], 24_000)  # warm-up
        t0 = time.perf_counter()
        for i in range(0, clips, 8):
            tokenize_waves(m, waves[i : i + 8], 24_000)
        dt = time.perf_counter() - t0
    return {"audio_seconds_per_s": round(clips * seconds / dt, 2), "clips": clips, "clip_seconds": seconds}
