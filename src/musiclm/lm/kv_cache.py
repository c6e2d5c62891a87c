"""A preallocated, pre-rotated KV cache for incremental decoding of `TokenLM`'s x-transformers decoder.

x-transformers' own cache keeps keys *before* rotary positions and, at every new step and in every layer,
concatenates the whole cache with the new key/value (`torch.cat`, a copy of everything so far) and rotates all keys
again: per-step work that grows with the length, which made the concatenation alone half of a step at batch 8
(docs/measurements.md). Here keys are rotated once, when written, into buffers that double when full, and a step
attends to a view of them. The decoder's own modules (norms, projections, feed-forwards, rotary frequencies, output
head) compute everything else, so the logits equal the uncached forward's (`tests/test_lm.py`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from x_transformers.x_transformers import Attention, FeedForward

from musiclm.compat import LayerIntermediates, apply_rotary_pos_emb


def supported(net: nn.Module) -> bool:
    """Whether `net` (a TransformerWrapper) is the plain pre-norm rotary decoder this cache reproduces exactly;
    anything else keeps x-transformers' cache."""
    layers = net.attn_layers
    rotary = layers.rotary_pos_emb
    attns = [block for _, block, _ in layers.layers if isinstance(block, Attention)]
    plain_attn = all(
        a.kv_heads == a.heads == a.rotate_num_heads and not a.qk_norm and a.num_mem_kv == 0 and a.to_v_gate is None
        and a.to_output_gate is None and a.q_rmsnorm is None and a.k_rmsnorm is None and a.value_rmsnorm is None
        and not a.use_latent_q and not a.use_latent_kv and a.hybrid_module is None and a.data_dependent_alibi is None
        and a.attend.attn_fn is not None and not a.attend.selective and a.attend.head_learned_sink is False
        for a in attns
    )  # fmt: skip
    return (
        plain_attn
        and set(layers.layer_types) <= {"a", "f"}
        and rotary is not None and rotary.scale is None and layers.rel_pos is None
        and layers.pre_norm and not layers.sandwich_norm and not layers.residual_attn
        and not layers.add_value_residual and layers.num_residual_streams == 1
        and all(n[1] is None and n[2] is None for n, _, _ in layers.layers)
        and all(m is None for m in (*layers.layer_integrators, *layers.skip_combines))
        and net.num_memory_tokens == 0 and not net.l2norm_embed and not layers.need_condition
    )  # fmt: skip


class KVCache:
    """Rotated keys and values of every attention layer, `[B, H, capacity, Dh]` each, filled to `length`."""

    def __init__(self, keys: list[Tensor], values: list[Tensor], length: int):
        self.keys, self.values, self.length = keys, values, length
        self._pending: LayerIntermediates | None = None

    @property
    def cache_length(self) -> int:
        """The positions held (x-transformers' `LayerIntermediates.cache_length`)."""
        return self.length

    @classmethod
    def from_intermediates(cls, inter: LayerIntermediates) -> KVCache:
        """A cache of an uncached forward's unrotated keys/values (the prefix pass of sampling, by x-transformers),
        adopted at the first decoding step: a forward whose cache is never used (validation) pays nothing."""
        cache = cls([], [], inter.cache_length)
        cache._pending = inter
        return cache

    def adopt(self, net: nn.Module) -> None:
        """Rotate and copy the pending intermediates' keys/values into buffers."""
        inter, self._pending = self._pending, None
        n = self.length
        freqs, _ = net.attn_layers.rotary_pos_emb(torch.arange(n, device=inter.last_hidden.device))
        for a in inter.attn_intermediates:
            k, v = a.cached_kv
            self.keys.append(self.grown(apply_rotary_pos_emb(k, freqs), n))
            self.values.append(self.grown(v, n))

    @staticmethod
    def grown(t: Tensor, filled: int) -> Tensor:
        """A buffer of twice the needed room (at least 64 more positions) holding `t[..., :filled, :]`."""
        b, h, _, d = t.shape
        out = t.new_empty(b, h, max(2 * filled, filled + 64), d)
        out[:, :, :filled] = t[:, :, :filled]
        return out

    def append(self, layer: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Write the new steps' rotated `k`, `v` (`[B, H, n, Dh]`) after the held ones; views of all of them."""
        start, end = self.length, self.length + k.shape[2]
        if end > self.keys[layer].shape[2]:
            self.keys[layer] = self.grown(self.keys[layer], start)
            self.values[layer] = self.grown(self.values[layer], start)
        self.keys[layer][:, :, start:end] = k
        self.values[layer][:, :, start:end] = v
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]


def attend(attn: Attention, x: Tensor, freqs: Tensor, cache: KVCache, layer: int) -> Tensor:
    """One x-transformers `Attention` over the new steps `x` `[B, n, D]` and everything cached."""
    b, n, _ = x.shape
    h = attn.heads
    q, k, v = (proj(x).view(b, n, h, -1).transpose(1, 2) for proj in (attn.to_q, attn.to_k, attn.to_v))
    q, k = apply_rotary_pos_emb(q, freqs), apply_rotary_pos_emb(k, freqs)
    keys, values = cache.append(layer, k, v)
    mask = None
    if n > 1:  # several new steps (a prompt): each sees the cache and the new steps up to itself
        total = keys.shape[2]
        mask = torch.ones(n, total, dtype=torch.bool, device=x.device).tril(total - n)
    out = F.scaled_dot_product_attention(q, keys, values, attn_mask=mask, scale=attn.attend.scale)
    return attn.to_out(out.transpose(1, 2).reshape(b, n, -1))


def decode(net: nn.Module, ids: Tensor, cache: KVCache) -> Tensor:
    """Logits `[B, n, V]` of the new steps `ids` after the cached ones; `cache` grows by them."""
    if cache._pending is not None:
        cache.adopt(net)
    layers = net.attn_layers
    x = net.project_emb(net.emb_dropout(net.post_emb_norm(net.token_emb(ids))))
    start = cache.length
    freqs, _ = layers.rotary_pos_emb(torch.arange(start, start + ids.shape[1], device=ids.device))
    layer = 0
    for (norm, _, _), block, residual in layers.layers:
        if isinstance(block, Attention):
            out = attend(block, norm(x), freqs, cache, layer)
            layer += 1
        else:
            assert isinstance(block, FeedForward)
            out = block(norm(x))
        x = residual(out, x)
    cache.length += ids.shape[1]
    return net.to_logits(layers.final_norm(x))


@functools.cache
def compiled_decode() -> Callable[[nn.Module, Tensor, KVCache], Tensor]:
    """`decode` under `torch.compile` (dynamic shapes: the cache grows every step). Not bit-exact with `decode`
    (fused kernels round differently), so it is opt-in: `TokenLM.compile_decode = True`. Each model, batch size
    of 1 against more, and cache growth compiles a variant: Dynamo's default of 8 per function would send a second
    model back to eager silently, so the limit is raised to 64."""
    torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
    return torch.compile(decode, dynamic=True)
