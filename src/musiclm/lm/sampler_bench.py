"""`make bench` section `sampler`: KV-cached generation speed of the LM decoder, new tokens per second after a
12-token prefix (a MuLan condition), at the demo size (d 384, 4 layers) and a mid size (d 512, 8 layers), batch 1
and 4, with and without classifier-free guidance (which doubles the decoder's batch), with the preallocated cache
(`lm/kv_cache.py`) against x-transformers' own; and with the preallocated cache under bf16 autocast, with bf16
weights (`model.bfloat16()`: neither is bit-exact with fp32) and, at batch 1 without guidance, with `torch.compile`d
steps (`TokenLM.compile_decode`; the first call compiles, `compile_s`).

Randomly initialised weights: speed does not depend on training. The fp32/bf16 matmul rates are measured in the
same section so figures compare across machines as ratios.
"""

from __future__ import annotations

import contextlib
import statistics
import time

import torch

from musiclm.bench import matmul_gflops
from musiclm.lm.model import TokenLM
from musiclm.lm.sampling import TargetLayout, sample_steps

SIZES = {"demo": (384, 4, 6), "mid": (512, 8, 8)}  # dim, depth, heads
CODEBOOK = 1024
OFFSET = 16  # input ids of the target codes start here; ids below are the prefix's


def tokens_per_s(
    model: TokenLM, batch: int, cfg: bool, new_tokens: int, prefix: int = 12, bf16: bool = False
) -> float:
    """New tokens per second per sequence (a batch of B makes B times as many), sampling at temperature 1."""
    layout = TargetLayout(
        torch.zeros(new_tokens, 1, dtype=torch.long),
        torch.full((new_tokens, 1), OFFSET),
        torch.ones(new_tokens, 1, dtype=torch.bool),
        CODEBOOK,
    )
    x = torch.randint(1, OFFSET, (batch, prefix, 1), device=next(model.parameters()).device)
    kw = {"null_prefix": torch.ones_like(x), "cfg_scale": 3.0} if cfg else {}
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with torch.inference_mode(), ctx:
        sample_steps(model, x, layout[:8], generator=torch.Generator().manual_seed(0), **kw)  # warm-up
        t0 = time.perf_counter()
        sample_steps(model, x, layout, generator=torch.Generator().manual_seed(0), **kw)
    return new_tokens / (time.perf_counter() - t0)


def paired(model: TokenLM, batch: int, cfg: bool, new_tokens: int, rounds: int = 3) -> tuple[float, float]:
    """Median tokens/s of the preallocated cache and of x-transformers' cache, measured alternately: other
    processes on the cores change the speed within seconds, and alternating exposes both to the same load."""
    fast, ref = [], []
    for _ in range(rounds):
        model.kv_cache = "x-transformers"
        ref.append(tokens_per_s(model, batch, cfg, new_tokens))
        model.kv_cache = "preallocated"
        fast.append(tokens_per_s(model, batch, cfg, new_tokens))
    return statistics.median(fast), statistics.median(ref)


def bench(new_tokens: int = 256) -> dict:
    out: dict = {
        "new_tokens": new_tokens,
        "matmul_fp32_gflops": round(matmul_gflops(torch.float32), 1),
        "matmul_bf16_gflops": round(matmul_gflops(torch.bfloat16), 1),
    }
    for name, (dim, depth, heads) in SIZES.items():
        torch.manual_seed(0)
        model = TokenLM(OFFSET + CODEBOOK, [CODEBOOK], dim, depth, heads, dropout=0.0).eval()
        params = sum(p.numel() for p in model.parameters())
        rows: dict = {"dim": dim, "depth": depth, "params_m": round(params / 1e6, 2)}
        for batch in (1, 4):
            for cfg in (False, True):
                fast, ref = paired(model, batch, cfg, new_tokens)
                rows[f"batch{batch}" + ("_cfg" if cfg else "")] = {
                    "tokens_per_s": round(fast, 1),
                    "tokens_per_s_x_transformers_cache": round(ref, 1),
                    "speedup": round(fast / ref, 2),
                    "tokens_per_s_bf16_autocast": round(tokens_per_s(model, batch, cfg, new_tokens, bf16=True), 1),
                    "tokens_per_s_bf16_weights": round(tokens_per_s(model.bfloat16(), batch, cfg, new_tokens), 1),
                }
                model.float()
        for batch in (1,):  # batch 4 compiles for 1-3 minutes more at mid size: the batch-1 ratio tells enough
            row = rows[f"batch{batch}"]
            model.compile_decode = True
            t0 = time.perf_counter()
            tokens_per_s(model, batch, False, new_tokens)  # compiles, and recompiles as the cache grows
            row["compile_s"] = round(time.perf_counter() - t0, 1)
            row["tokens_per_s_compiled"] = round(tokens_per_s(model, batch, False, new_tokens), 1)
            model.compile_decode = False  # eager again right after, under the same load
            row["tokens_per_s_eager_beside_compiled"] = round(tokens_per_s(model, batch, False, new_tokens), 1)
        out[name] = rows
    return out
