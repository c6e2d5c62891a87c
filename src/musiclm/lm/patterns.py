"""Token layout for the LM stages, kept apart from the model.

Two ideas live here and nowhere else:
- `Vocab`: every stream (MuLan levels, the null condition, semantic clusters, codec levels) gets its own id range
  in one input vocabulary, so the decoder knows which stream and level a token came from without extra embeddings.
- `Pattern`: how codec codes `[B, Q, T]` become LM steps `[B, S, K]` (K tokens summed into one position) and back.
  `FlattenPattern` is AudioLM's time-major flattening (K = 1, S = T * Q); `DelayPattern` is MusicGen's delay
  (K = Q, level k shifted by k steps, S = T + Q - 1). A new layout is one subclass that defines `layout`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor

PAD = 0  # fills unused slots of conditioning steps; its embedding is zero
EMPTY = 1  # a target slot with no code (delay pattern's ragged edges); never a loss target
RESERVED = 2


class Vocab:
    """Offsets of named streams, each `levels` x `size`, in one input vocabulary after the reserved ids."""

    def __init__(self, streams: dict[str, tuple[int, int]]):
        self.streams = dict(streams)
        self.offsets: dict[str, Tensor] = {}
        offset = RESERVED
        for name, (levels, size) in self.streams.items():
            self.offsets[name] = offset + size * torch.arange(levels)
            offset += levels * size
        self.size = offset

    def encode(self, name: str, codes: Tensor, level: Tensor | int) -> Tensor:
        """Stream-local codes -> input ids; `level` broadcasts against `codes`."""
        offsets = self.offsets[name].to(codes.device)
        return codes + offsets[level]

    def encode_levels(self, name: str, codes: Tensor) -> Tensor:
        """`[..., L, T]` codes of levels 0..L-1 -> ids, level-major like the input."""
        offsets = self.offsets[name].to(codes.device)[: codes.shape[-2]]
        return codes + offsets[:, None]


class Pattern(ABC):
    """Maps `[B, Q, T]` codes to `[B, S, K]` steps. Subclasses define the geometry in `layout`; building,
    reverting and per-slot output levels follow from it."""

    def __init__(self, num_levels: int):
        self.num_levels = num_levels

    tokens_per_step: int

    @abstractmethod
    def layout(self, frames: int) -> tuple[Tensor, Tensor]:
        """(level, time) of every slot, each `[S, K]`; time is -1 where the slot holds no code."""

    @abstractmethod
    def known_steps(self, frames: int) -> int:
        """Leading steps fully determined by the first `frames` frames (a prompt's length in steps)."""

    @abstractmethod
    def slot_levels(self, slot: int) -> list[int]:
        """Levels that can appear in slot `slot`: the output head of that slot predicts exactly these."""

    def num_steps(self, frames: int) -> int:
        return self.layout(frames)[0].shape[0]

    def valid(self, frames: int) -> Tensor:
        return self.layout(frames)[1] >= 0

    def head_index(self, frames: int) -> Tensor:
        """`[S, K]`: index of each slot's level within `slot_levels(k)` (selects the output head's sub-block)."""
        level, _ = self.layout(frames)
        index = torch.zeros_like(level)
        for k in range(self.tokens_per_step):
            lookup = {lv: i for i, lv in enumerate(self.slot_levels(k))}
            index[:, k] = torch.tensor([lookup[int(lv)] for lv in level[:, k]], dtype=torch.long)
        return index

    def build(self, codes: Tensor) -> Tensor:
        """`[B, Q, T]` codes -> `[B, S, K]` step codes (0 where the slot is empty; see `valid`)."""
        level, time = self.layout(codes.shape[-1])
        level, time = level.to(codes.device), time.to(codes.device)
        steps = codes[:, level, time.clamp(min=0)]
        return steps.masked_fill(time < 0, 0)

    def revert(self, steps: Tensor, frames: int) -> Tensor:
        """`[B, S, K]` -> `[B, Q, T]`, the inverse of `build` on its valid slots."""
        level, time = self.layout(frames)
        level, time = level.to(steps.device), time.to(steps.device)
        keep = time >= 0
        codes = steps.new_zeros(steps.shape[0], self.num_levels, frames)
        codes[:, level[keep], time[keep]] = steps[:, keep]
        return codes


class FlattenPattern(Pattern):
    """AudioLM: one token per step, time-major (t0q0, t0q1, ..., t1q0, ...)."""

    tokens_per_step = 1

    def layout(self, frames: int) -> tuple[Tensor, Tensor]:
        s = torch.arange(frames * self.num_levels)
        return (s % self.num_levels)[:, None], (s // self.num_levels)[:, None]

    def known_steps(self, frames: int) -> int:
        return frames * self.num_levels

    def slot_levels(self, slot: int) -> list[int]:
        return list(range(self.num_levels))


class DelayPattern(Pattern):
    """MusicGen: all levels in one step, level k delayed by k steps, so level k of frame t is predicted after
    levels < k of the same frame. Q times fewer steps than flattening."""

    @property
    def tokens_per_step(self) -> int:  # type: ignore[override]
        return self.num_levels

    def layout(self, frames: int) -> tuple[Tensor, Tensor]:
        steps = frames + self.num_levels - 1
        level = torch.arange(self.num_levels).expand(steps, -1)
        time = torch.arange(steps)[:, None] - level
        return level.clone(), time.masked_fill((time < 0) | (time >= frames), -1)

    def known_steps(self, frames: int) -> int:
        return frames

    def slot_levels(self, slot: int) -> list[int]:
        return [slot]


PATTERNS: dict[str, type[Pattern]] = {"flatten": FlattenPattern, "delay": DelayPattern}


def make_pattern(name: str, num_levels: int) -> Pattern:
    if name not in PATTERNS:
        raise ValueError(f"unknown pattern {name!r}; choose from {sorted(PATTERNS)}")
    return PATTERNS[name](num_levels)


def as_steps(ids: Tensor, tokens_per_step: int) -> Tensor:
    """`[B, N]` conditioning ids -> `[B, N, K]` steps with the ids in slot 0 and PAD elsewhere."""
    steps = ids.new_full((*ids.shape, tokens_per_step), PAD)
    steps[..., 0] = ids
    return steps
