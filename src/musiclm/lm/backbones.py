"""LM backbones by name: every token stage builds its decoder here, so a new architecture is one registered factory
and one config line (`model.backbone: NAME`). A backbone satisfies `musiclm.contracts.TokenBackbone`."""

from __future__ import annotations

from collections.abc import Callable

from musiclm.contracts import TokenBackbone

# factory(vocab_size, head_sizes, dim, depth, heads, ff_mult, dropout, attn_dropout) -> TokenBackbone;
# attn_dropout None means `dropout`.
BackboneFactory = Callable[[int, list[int], int, int, int, int, float, "float | None"], TokenBackbone]


def _x_transformers(vocab_size: int, head_sizes: list[int], dim: int, depth: int, heads: int, ff_mult: int,
                    dropout: float, attn_dropout: float | None) -> TokenBackbone:  # fmt: skip
    from musiclm.lm.model import TokenLM

    return TokenLM(vocab_size, head_sizes, dim, depth, heads, ff_mult, dropout, attn_dropout)


BACKBONES: dict[str, BackboneFactory] = {"x-transformers": _x_transformers}


def register_backbone(name: str, factory: BackboneFactory) -> None:
    """Make `model.backbone: name` build `factory(...)` (call it before the stage is built or loaded)."""
    BACKBONES[name] = factory


def build_backbone(
    name: str,
    vocab_size: int,
    head_sizes: list[int],
    dim: int,
    depth: int,
    heads: int,
    ff_mult: int = 4,
    dropout: float = 0.1,
    attn_dropout: float | None = None,
) -> TokenBackbone:
    if name not in BACKBONES:
        raise ValueError(
            f"unknown LM backbone {name!r}: one of {sorted(BACKBONES)} (or musiclm.lm.backbones.register_backbone)"
        )
    return BACKBONES[name](vocab_size, list(head_sizes), dim, depth, heads, ff_mult, dropout, attn_dropout)
