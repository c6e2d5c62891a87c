"""Autoregressive sampling for the LM stages: temperature / top-k / top-p, classifier-free guidance, seeds,
an x-transformers KV cache (one decoder step per new step), and sliding windows for output longer than the
training window."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from musiclm.lm.model import TokenLM
from musiclm.lm.patterns import EMPTY


@dataclass
class TargetLayout:
    """What the sampler needs to know about the steps it generates (all `[S, K]`)."""

    head_index: Tensor  # which level block of the slot's output head to read
    offsets: Tensor  # input-vocabulary offset of the slot's level (code + offset = input id)
    valid: Tensor  # False where the slot holds no code (fed as EMPTY, returned as 0)
    codebook_size: int

    def __getitem__(self, s: slice) -> TargetLayout:
        return TargetLayout(self.head_index[s], self.offsets[s], self.valid[s], self.codebook_size)


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Keep the `top_k` largest logits and the smallest set whose probability reaches `top_p`; -inf elsewhere."""
    if top_k is not None and 0 < top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and 0 < top_p < 1:
        sorted_logits, order = logits.sort(dim=-1, descending=True)
        probs = sorted_logits.softmax(dim=-1)
        drop = probs.cumsum(dim=-1) - probs >= top_p  # keeps the token that crosses top_p
        logits = logits.masked_fill(torch.zeros_like(drop).scatter(-1, order, drop), float("-inf"))
    return logits


def choose(
    logits: Tensor,
    temperature: float,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """`[..., C]` logits -> `[...]` codes; temperature 0 is greedy."""
    if temperature <= 0:
        return logits.argmax(dim=-1)
    logits = filter_logits(logits.float() / temperature, top_k, top_p)
    probs = logits.softmax(dim=-1)
    flat = torch.multinomial(probs.reshape(-1, probs.shape[-1]), 1, generator=generator)
    return flat.reshape(probs.shape[:-1])


def guide(cond: Tensor, uncond: Tensor, scale: float) -> Tensor:
    """Classifier-free guidance: extrapolate from the unconditional towards the conditional logits."""
    return uncond + scale * (cond - uncond)


def guide_two(both: Tensor, first: Tensor, uncond: Tensor, scale: float, second_scale: float) -> Tensor:
    """Compositional guidance for two conditions (InstructPix2Pix's form, eq. 3, with text as the first condition
    and the melody as the second): `uncond + scale * (first - uncond) + second_scale * (both - first)`.

    Chosen over summing two independent "one condition vs. none" terms because it needs three rows per sample
    (both, first alone, neither) where that needs four (a "second alone" row too), and because it nests the
    single-scale form: `second_scale == scale` is `guide(both, uncond, scale)`, and `second_scale` 0
    drops the second condition's contribution, leaving text-only guidance."""
    return uncond + scale * (first - uncond) + second_scale * (both - first)


@torch.no_grad()
def sample_steps(
    model: TokenLM,
    prefix: Tensor,
    layout: TargetLayout,
    *,
    null_prefix: Tensor | None = None,
    first_prefix: Tensor | None = None,
    forced: Tensor | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    cfg_scale: float | None = None,
    second_cfg_scale: float | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
) -> Tensor:
    """Generate `S` steps after `prefix` (`[B, P, K]` input ids). Returns `[B, S, K]` codes (0 in invalid slots).

    `null_prefix` (same shape, the condition replaced by the null condition) and `cfg_scale` turn on guidance:
    both branches run as one batch and share the sampled tokens. With two conditions in the prefix, `first_prefix`
    (only the second condition replaced by its null) and `second_cfg_scale` guide each separately (`guide_two`):
    three rows per sample, one forward and one KV cache. `forced` (`[B, S, K]`, -1 = free) pins slots
    whose codes are known (a prompt). `use_cache=False` re-runs the whole sequence each step (the reference the
    cached path is tested against)."""
    guided = cfg_scale is not None and null_prefix is not None
    two = guided and first_prefix is not None and second_cfg_scale is not None
    b, steps = prefix.shape[0], layout.valid.shape[0]
    rows = [prefix, first_prefix, null_prefix] if two else [prefix, null_prefix] if guided else [prefix]
    x = torch.cat(rows)
    device = x.device
    layout = TargetLayout(
        layout.head_index.to(device), layout.offsets.to(device), layout.valid.to(device), layout.codebook_size
    )
    codes = torch.zeros(b, steps, layout.valid.shape[1], dtype=torch.long, device=device)
    logits, cache = model(x)
    last = logits[:, -1:]
    for s in range(steps):
        step_logits = model.slot_logits(last, layout.head_index[s : s + 1], layout.codebook_size)[:, 0]  # [B', K, C]
        if two:
            both, first, uncond = step_logits.chunk(3)
            step_logits = guide_two(both, first, uncond, cfg_scale, second_cfg_scale)
        elif guided:
            cond, uncond = step_logits.chunk(2)
            step_logits = guide(cond, uncond, cfg_scale)
        new = choose(step_logits, temperature, top_k, top_p, generator)
        if forced is not None:
            new = torch.where(forced[:, s] >= 0, forced[:, s], new)
        new = new.masked_fill(~layout.valid[s], 0)
        codes[:, s] = new
        if s == steps - 1:
            break
        ids = torch.where(layout.valid[s], new + layout.offsets[s], torch.full_like(new, EMPTY))[:, None]
        if len(rows) > 1:
            ids = torch.cat([ids] * len(rows))
        if use_cache:
            logits, cache = model(ids, cache=cache)
        else:
            x = torch.cat([x, ids], dim=1)
            logits, _ = model(x)
        last = logits[:, -1:]
    return codes


def slide(
    total: int,
    window: int,
    context: int,
    generate_window: Callable[[int, int, Tensor | None], Tensor],
    initial: Tensor | None = None,
) -> Tensor:
    """Generate `total` frames in windows of at most `window` frames; each later window is prompted with the last
    `context` frames already there, so its conditioning never exceeds what the model was trained on.

    `generate_window(start, frames, prompt)` returns codes `[B, L, frames]` for frames `[start, start + frames)`
    whose first `prompt.shape[-1]` frames equal `prompt` (None: nothing before). `initial` `[B, L, T0]` is a
    given beginning to continue (returned as the first T0 frames)."""
    if not 0 <= context < window:
        raise ValueError(f"context ({context}) must be in [0, window={window})")
    out = initial if initial is not None else generate_window(0, min(total, window), None)
    while out.shape[-1] < total:
        keep = min(context, out.shape[-1])
        start = out.shape[-1] - keep
        frames = min(window, total - start)
        chunk = generate_window(start, frames, out[..., start:] if keep else None)
        out = torch.cat([out, chunk[..., keep:]], dim=-1)
    return out[..., :total]
