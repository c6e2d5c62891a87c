"""`make bench` section `lm`: training throughput and model-FLOPs utilisation of the demo semantic stage, and
generation speed with and without the KV cache at 1,024 tokens of context, and the speed of feeding a prompt
through the cache in one call against one step per call.

MFU = model FLOPs per second / fp32 matmul FLOP/s, both measured in this run: each training step is timed next to
a short matmul measurement and the median of the per-step ratios is reported, because the cores are shared and a
rate measured minutes apart from the step it divides can be off by 2x. Model FLOPs per training step = 6 x (matmul
parameters: attention, feed-forward and output head; not the embedding lookup) x tokens + attention scores and
values with the causal half counted: 6 x depth x dim x seq^2 per sequence (forward 2, backward 4).
"""

from __future__ import annotations

import statistics
import time

import torch

from musiclm.bench import matmul_gflops
from musiclm.config import build_stage, stage_settings
from musiclm.lm.module import SemanticStage
from musiclm.tokenize import profile_vocab


def matmul_params(module: SemanticStage) -> int:
    return sum(m.weight.numel() for m in module.model.modules() if isinstance(m, torch.nn.Linear))


def train_flops(module: SemanticStage, batch: int, seq: int) -> float:
    hp = module.hparams
    return 6 * matmul_params(module) * batch * seq + 6 * hp.depth * hp.dim * seq**2 * batch


def random_batch(module: SemanticStage, batch: int) -> dict:
    hp = module.hparams
    return {
        "mulan": torch.randint(0, hp.mulan_codebook_size, (batch, hp.mulan_levels)),
        "semantic": torch.randint(0, hp.semantic_codebook_size, (batch, module.window_frames)),
    }


def time_training(module: SemanticStage, batch: int, steps: int) -> list[tuple[float, float]]:
    """(seconds per optimizer step, fp32 matmul GFLOP/s measured right before it) for `steps` steps after one
    warm-up step; a step is forward, backward and AdamW."""
    opt = module.make_optimizer()
    data = random_batch(module, batch)

    def step() -> None:
        ce, _, valid, _ = module.forward_loss(data)
        loss = ce[valid.expand_as(ce)].mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    module.train()
    step()
    out = []
    for _ in range(steps):
        rate = matmul_gflops(torch.float32, seconds=0.3)
        t0 = time.perf_counter()
        step()
        out.append((time.perf_counter() - t0, rate))
    return out


def time_generation(module: SemanticStage, context: int, new_tokens: int, use_cache: bool) -> float:
    """New tokens per second after a `context`-token prefix, batch 1, sampling at temperature 1."""
    from musiclm.lm.sampling import sample_steps

    module.eval()
    hp = module.hparams
    mulan = torch.randint(0, hp.mulan_codebook_size, (1, hp.mulan_levels))
    semantic = torch.randint(0, hp.semantic_codebook_size, (1, context - hp.mulan_levels))
    prefix = torch.cat([module.mulan_ids(mulan), module.vocab.encode("semantic", semantic, 0)], dim=1)[..., None]
    layout = module.target_layout(new_tokens)
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    sample_steps(module.model, prefix, layout, generator=g, use_cache=use_cache)
    return new_tokens / (time.perf_counter() - t0)


def time_prefill(module: SemanticStage, cached: int, prompt: int, per_call: int) -> float:
    """Prompt tokens per second fed through the KV cache after `cached` tokens, `per_call` tokens per decoder call
    (1: all that an exact cache allowed before multi-step calls were fixed; `prompt`: one call), batch 1."""
    module.eval()
    hp = module.hparams
    ids = module.vocab.encode("semantic", torch.randint(0, hp.semantic_codebook_size, (1, cached + prompt)), 0)
    with torch.no_grad():
        _, cache = module.model(ids[:, :cached, None])
        t0 = time.perf_counter()
        for a in range(cached, cached + prompt, per_call):
            _, cache = module.model(ids[:, a : a + per_call, None], cache=cache)
    return prompt / (time.perf_counter() - t0)


def bench(profile: str = "demo", steps: int = 7, context: int = 1024, new_tokens: int = 64) -> dict:
    _, data = stage_settings("semantic", profile)
    batch = int(data.get("batch_size", 16))
    torch.manual_seed(0)
    module = build_stage("semantic", profile, profile_vocab(profile))
    seq = module.hparams.mulan_levels + module.window_frames
    timings = time_training(module, batch, steps)
    flops = train_flops(module, batch, seq)
    step_s = statistics.median(t for t, _ in timings)
    rate = statistics.median(r for _, r in timings)
    mfu = statistics.median(flops / t / 1e9 / r for t, r in timings)
    cached = time_generation(module, context, new_tokens, use_cache=True)
    uncached = time_generation(module, context, new_tokens // 4, use_cache=False)
    return {
        "profile": profile,
        "stage": "semantic",
        "params_m": round(sum(p.numel() for p in module.parameters()) / 1e6, 2),
        "batch_size": batch,
        "seq_len": seq,
        "train_step_s": round(step_s, 3),
        "train_tokens_per_s": round(batch * seq / step_s, 1),
        "train_model_gflops_per_s": round(flops / step_s / 1e9, 1),
        "matmul_fp32_gflops": round(rate, 1),
        "train_mfu": round(mfu, 3),
        "gen_context_tokens": context,
        "gen_tokens_per_s_cached": round(cached, 1),
        "gen_tokens_per_s_uncached": round(uncached, 1),
        "gen_cache_speedup": round(cached / uncached, 2),
        "prefill_tokens_per_s_one_call": round(time_prefill(module, context // 2, context // 2, context // 2), 1),
        "prefill_tokens_per_s_stepwise": round(time_prefill(module, context // 2, new_tokens, 1), 1),
    }
