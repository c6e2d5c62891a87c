"""`make bench` section `precision`: each trained stage's CPU step time in fp32 and bf16-mixed, and the LMs' under
`torch.compile`, with the loss after the same steps from the same start, so a precision or compile setting is kept
only where it is faster here *and* trains alike.

bf16 matmul runs ~4x fp32 on CPUs with AVX512-BF16/AMX and ~100x slower on AVX2-only ones, so bf16 is timed only
where the matmul measurement in this run says it is at least half as fast as fp32 (else the section would take
hours); the CPU's flags are reported beside the figures. Each configuration trains a fresh module from one seed on
one repeated batch (`gpu_check.fit_steps`), so the loss figures are comparable between configurations.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import torch

from musiclm.bench import matmul_gflops
from musiclm.config import stage_settings
from musiclm.gpu_check import CHECKED, LM, Settings, chain_vocab, fit_steps, mulan_overrides

# a setting is kept where it is at least this much faster and its loss after the same steps within LOSS_TOLERANCE
MIN_SPEEDUP = 1.1
LOSS_TOLERANCE = 0.02


def cpu_flags() -> list[str]:
    """The matmul-relevant CPU flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return []
    flags = set(re.search(r"^flags\s*:(.*)$", text, re.M).group(1).split()) if "flags" in text else set()
    return sorted(f for f in flags if f in {"avx2", "avx512f", "avx512_bf16", "amx_bf16", "amx_tile", "fma"})


def verdict(base: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """`other` against `base`: speedup, relative loss difference after the same steps, and whether to keep it."""
    speedup = base["step_s"] / other["step_s"]
    loss_diff = abs(other["loss_last"] - base["loss_last"]) / max(abs(base["loss_last"]), 1e-8)
    keep = speedup >= MIN_SPEEDUP and loss_diff <= LOSS_TOLERANCE and other["loss_finite"]
    return {"speedup": round(speedup, 2), "loss_rel_diff": round(loss_diff, 4), "keep": keep}


def bench(profile: str = "demo", steps: int = 12, stages: tuple[str, ...] = CHECKED, compile_lms: bool = True) -> dict:
    torch.manual_seed(0)
    fp32, bf16 = matmul_gflops(torch.float32, seconds=0.5), matmul_gflops(torch.bfloat16, seconds=0.5)
    mulan_args = mulan_overrides()
    vocab = chain_vocab(profile, mulan_args)

    def settings(precision: str) -> Settings:
        return Settings("cpu", profile, precision, steps, vocab, mulan_args, fp32 / 1e3)

    out: dict[str, Any] = {"profile": profile, "steps": steps, "cpu_flags": cpu_flags(),
                           "matmul_fp32_gflops": round(fp32, 1), "matmul_bf16_gflops": round(bf16, 1)}  # fmt: skip
    time_bf16 = bf16 >= 0.5 * fp32
    for stage in stages:
        _, data = stage_settings(stage, profile)
        shape = int(data.get("batch_size", 8)), float(data.get("clip_seconds", 1.0))
        base = fit_steps(stage, settings("32-true"), *shape)
        row: dict[str, Any] = {"fp32_step_s": base["step_s"], "fp32_loss_last": base["loss_last"]}
        if time_bf16:
            half = fit_steps(stage, settings("bf16-mixed"), *shape)
            row |= {"bf16_step_s": half["step_s"], "bf16_loss_last": half["loss_last"],
                    **{f"bf16_{k}": v for k, v in verdict(base, half).items()}}  # fmt: skip
        else:
            row["bf16"] = f"not timed: bf16 matmul {bf16:.1f} GFLOP/s against fp32 {fp32:.1f} on this CPU"
        if compile_lms and stage in LM:
            compiled = fit_steps(stage, settings("32-true"), *shape, compile_model=True)
            row |= {"compile_step_s": compiled["step_s"], "compile_first_step_s": compiled["first_step_s"],
                    **{f"compile_{k}": v for k, v in verdict(base, compiled).items()}}  # fmt: skip
        out[stage] = row
    return out
