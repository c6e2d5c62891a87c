"""`make bench` section `precision`: the keep/drop rule, and one stage timed in both precisions at the tiny size."""

from __future__ import annotations

import math

import torch

from musiclm import precision_bench
from musiclm.bench import matmul_gflops


def row(step_s: float, loss: float, finite: bool = True) -> dict:
    return {"step_s": step_s, "loss_last": loss, "loss_finite": finite}


def test_a_setting_is_kept_only_when_faster_and_training_alike():
    base = row(1.0, 2.0)
    assert precision_bench.verdict(base, row(0.5, 2.01)) == {"speedup": 2.0, "loss_rel_diff": 0.005, "keep": True}
    assert not precision_bench.verdict(base, row(0.95, 2.0))["keep"]  # not faster enough
    assert not precision_bench.verdict(base, row(0.5, 2.2))["keep"]  # trains differently
    assert not precision_bench.verdict(base, row(0.5, 2.0, finite=False))["keep"]


def test_precision_section_times_a_stage_with_its_loss():
    r = precision_bench.bench(profile="tiny", steps=4, stages=("semantic",), compile_lms=False)
    assert r["matmul_fp32_gflops"] > 0 and isinstance(r["cpu_flags"], list)
    s = r["semantic"]
    assert s["fp32_step_s"] > 0 and math.isfinite(s["fp32_loss_last"])
    if matmul_gflops(torch.bfloat16, seconds=0.2) >= 0.5 * r["matmul_fp32_gflops"]:
        assert s["bf16_step_s"] > 0 and abs(s["bf16_loss_last"] - s["fp32_loss_last"]) < 0.1 * s["fp32_loss_last"]
    else:
        assert "not timed" in s["bf16"]
    assert "compile_step_s" not in s
