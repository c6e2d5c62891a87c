"""The decoder shared by every LM stage: an x-transformers decoder with rotary (relative) positions over steps of
K summed tokens, and one output block per slot (see `patterns.Pattern.slot_levels`)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from x_transformers import Decoder, TransformerWrapper

from musiclm.compat import LayerIntermediates
from musiclm.lm.kv_cache import KVCache, compiled_decode, decode, supported
from musiclm.lm.patterns import PAD


class StepEmbedding(nn.Module):
    """Sum of the K token embeddings of a step (K = 1 for flattened layouts); PAD embeds to zero."""

    def __init__(self, dim: int, num_tokens: int):
        super().__init__()
        self.emb = nn.Embedding(num_tokens, dim, padding_idx=PAD)
        nn.init.normal_(self.emb.weight, std=0.02)
        with torch.no_grad():
            self.emb.weight[PAD].zero_()

    def forward(self, ids: Tensor) -> Tensor:
        return self.emb(ids).sum(dim=-2)


class TokenLM(nn.Module):
    """ids `[B, N, K]` -> logits `[B, N, sum(head_sizes)]`, with a KV cache for sampling.

    `kv_cache` picks the cache an eval-mode forward hands back: "preallocated" (`lm/kv_cache.py`, rotated keys in
    buffers that grow by doubling) or "x-transformers" (the library's own, which copies and re-rotates every key at
    every step; the reference the other is measured against). Training-mode forwards always use the library's.
    `compile_decode` runs the preallocated cache's steps through `torch.compile` (`kv_cache.compiled_decode`)."""

    kv_cache: str = "preallocated"
    compile_decode: bool = False

    def __init__(
        self,
        vocab_size: int,
        head_sizes: list[int],
        dim: int,
        depth: int,
        heads: int,
        ff_mult: int = 4,
        dropout: float = 0.1,
        attn_dropout: float | None = None,
    ):
        """`dropout` is the feed-forward dropout and, unless `attn_dropout` says otherwise, the attention dropout.
        On CPU any attention dropout takes SDPA off its fused kernel (a step costs ~2x), so CPU profiles set it to 0."""
        super().__init__()
        self.head_sizes = list(head_sizes)
        self.net = TransformerWrapper(
            num_tokens=vocab_size,
            max_seq_len=0,  # no absolute positions: rotary only, so windows can slide and the cache can grow
            token_emb=StepEmbedding(dim, vocab_size),
            logits_dim=sum(head_sizes),
            use_abs_pos_emb=False,
            attn_layers=Decoder(
                dim=dim,
                depth=depth,
                heads=heads,
                ff_mult=ff_mult,
                rotary_pos_emb=True,
                attn_flash=True,
                attn_dropout=dropout if attn_dropout is None else attn_dropout,
                ff_dropout=dropout,
            ),
        )

    def forward(
        self, ids: Tensor, cache: LayerIntermediates | KVCache | None = None
    ) -> tuple[Tensor, LayerIntermediates | KVCache]:
        """Without `cache`: the whole sequence. With it: `ids` holds only the new step(s) after the cached ones, any
        number of them (a prompt prefilled in one call, then one step per call). A `KVCache` is updated in place.

        `cache_age` is x-transformers' count of new positions when a cache is given; its default, 1, keeps only the
        last of several new steps (at the first one's position) and adds only that step to the cache."""
        if isinstance(cache, KVCache):
            step = compiled_decode() if self.compile_decode else decode
            return step(self.net, ids, cache), cache
        kw = {} if cache is None else {"input_not_include_cache": True, "cache_age": ids.shape[1]}
        logits, inter = self.net(ids, cache=cache, return_intermediates=True, **kw)
        if cache is None and self.preallocated_cache():
            return logits, KVCache.from_intermediates(inter)
        return logits, inter

    def preallocated_cache(self) -> bool:
        """Whether an eval-mode forward hands back a `KVCache` (checked once: the decoder's layout is fixed)."""
        if self.training or self.kv_cache != "preallocated":
            return False
        if not hasattr(self, "_cache_supported"):
            self._cache_supported = supported(self.net)
        return self._cache_supported

    def block_types(self) -> tuple[type[nn.Module], ...]:
        """x-transformers' attention and feed-forward blocks: the FSDP and activation-checkpointing unit."""
        from musiclm.distributed import transformer_block_types

        return transformer_block_types()

    def slot_logits(self, logits: Tensor, head_index: Tensor, codebook_size: int) -> Tensor:
        """`[B, N, sum(head_sizes)]` -> `[B, N, K, C]`: for each slot, the block of its level
        (`head_index` `[N, K]`)."""
        out = []
        for k, block in enumerate(logits.split(self.head_sizes, dim=-1)):
            block = block.unflatten(-1, (-1, codebook_size))  # [B, N, n_k, C]
            idx = head_index[:, k].to(logits.device)[None, :, None, None].expand(block.shape[0], -1, 1, codebook_size)
            out.append(block.gather(2, idx).squeeze(2))
        return torch.stack(out, dim=2)
