"""`musiclm bench`: speed and memory of every stage on this machine -> reports/bench.json.

Each section's figures come with the machine's fp32/bf16 matmul rate measured in the same run, so numbers from
different machines are compared as ratios, not absolute times.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import time
import traceback
from pathlib import Path

import torch

from musiclm.artifacts import atomic_write_bytes
from musiclm.paths import reports_dir
from musiclm.stages import load_object

SECTIONS = {
    "data": "musiclm.data.bench:bench",
    "mulan": "musiclm.mulan.bench:bench",
    "codec": "musiclm.codec.bench:bench",
    "tokenize": "musiclm.tokenize:bench",
    "pretrained": "musiclm.pretrained.bench:bench",
    "lm": "musiclm.lm.bench:bench",
    "sampler": "musiclm.lm.sampler_bench:bench",
    "precision": "musiclm.precision_bench:bench",
    "generate": "musiclm.pipeline:bench",
}


def matmul_gflops(dtype: torch.dtype = torch.float32, n: int = 1024, seconds: float = 1.0) -> float:
    """Sustained square-matmul rate, the denominator of every MFU figure."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    for _ in range(3):
        a @ b
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        count += 1
    return 2 * n**3 * count / (time.perf_counter() - t0) / 1e9


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def machine() -> dict:
    return {
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python": platform.python_version(),
        "processor": platform.processor() or platform.machine(),
        "matmul_fp32_gflops": round(matmul_gflops(torch.float32), 1),
        "matmul_bf16_gflops": round(matmul_gflops(torch.bfloat16), 1),
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm bench", description=__doc__)
    p.add_argument("--out", type=Path, default=None, help="default: reports/bench.json under the root")
    p.add_argument("--only", nargs="*", choices=sorted(SECTIONS), help="run these sections only")
    a = p.parse_args(argv)
    report: dict = {"machine": machine()}
    for name, target in SECTIONS.items():
        if a.only and name not in a.only:
            continue
        print(f"bench {name} ...", flush=True)
        t0 = time.perf_counter()
        try:
            report[name] = load_object(target)()
        except Exception as e:  # one broken section must not hide the others' figures
            traceback.print_exc()
            report[name] = {"error": f"{type(e).__name__}: {e}"}
        report[name]["bench_seconds"] = round(time.perf_counter() - t0, 1)
    report["peak_rss_mb"] = round(peak_rss_mb(), 1)
    atomic_write_bytes(a.out or reports_dir() / "bench.json", json.dumps(report, indent=2).encode())
    print(json.dumps(report, indent=2))
