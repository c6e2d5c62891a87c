"""Melody tokens as a condition of an LM stage (the semantic stage, the coarse stage, or both).

Melody tokens (`musiclm.melody`: `melody_levels` ids per column, `melody_rate` columns per second) follow the
stage's other conditions in the prefix, time-major: the `round(window_seconds * melody_rate)` columns from the one
nearest the window's start (missing columns, e.g. past a clip's end, are the melody null). They are replaced by
their own null condition with probability `melody_dropout`, independently of MuLan's `cond_dropout`, so either
condition can be left out at inference and guided on its own (`sampling.guide_two`).

Which stage can carry a melody is measured, not assumed: eval's `oracle.<stage>.chroma_similarity` says whether a
stage's input tokens keep a clip's notes (docs/measurements.md: the demo's semantic tokens barely do, its coarse
codes do).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from musiclm.lm.hparams import require, seconds_to_frames

MELODY_HPARAMS = ("melody_levels", "melody_codebook_size", "melody_rate")
RETRAIN = "retrain it with model.melody_conditioning: true (README, Melody conditioning)"


def check_melody_guidance(melody_cfg_scale: float | None, cfg_scale: float | None, has_melody: bool,
                          conditioned: bool) -> None:  # fmt: skip
    """A melody guidance scale needs a melody-conditioned stage, a melody and the text scale it is composed with."""
    if melody_cfg_scale is None:
        return
    if not conditioned:
        raise ValueError(f"melody_cfg_scale needs a stage trained with melody tokens: {RETRAIN}")
    if not has_melody:
        raise ValueError("melody_cfg_scale guides a melody: give one (melody=..., --melody, MELODY=)")
    if cfg_scale is None:
        raise ValueError("melody_cfg_scale is composed with the text's cfg_scale: give cfg_scale too")


class MelodyConditioned:
    """Mixin for a `TokenStage` whose hparams have `melody_conditioning`, `melody_dropout`, MELODY_HPARAMS,
    `window_seconds` and `semantic_rate` (melody columns are placed by semantic frame, which both stages crop on)."""

    hparams: Any
    device: torch.device
    training: bool

    @property
    def melody_conditioned(self) -> bool:
        return bool(self.hparams.get("melody_conditioning"))

    def melody_streams(self) -> dict[str, tuple[int, int]]:
        """The vocabulary's melody streams; none without the flag, so a stage without melody keeps its vocabulary."""
        if not self.melody_conditioned:
            return {}
        require(self.hparams, MELODY_HPARAMS, f"{type(self).__name__} with melody")
        hp = self.hparams
        return {"melody": (hp.melody_levels, hp.melody_codebook_size), "melody_null": (hp.melody_levels, 1)}

    @property
    def melody_windows(self) -> int:
        """Melody columns in the prefix: those a training window spans."""
        return seconds_to_frames(self.hparams.window_seconds, self.hparams.melody_rate)

    def melody_offset(self, semantic_start: int) -> int:
        """The melody column nearest semantic frame `semantic_start`."""
        return round(semantic_start / self.hparams.semantic_rate * self.hparams.melody_rate)

    def melody_ids(self, melody: Tensor | None, batch_size: int, start: int = 0) -> Tensor:
        """Melody tokens `[B, Q, T]` (or None: no melody) -> `[B, melody_windows * Q]` prefix ids, time-major, from
        column `start`; columns past the end (or negative ids) become the melody null."""
        n, q = self.melody_windows, self.hparams.melody_levels
        codes = torch.full((batch_size, q, n), -1, dtype=torch.long, device=self.device)
        if melody is not None:
            part = melody[..., start : start + n].long().to(self.device)
            codes[..., : part.shape[-1]] = part
        level = torch.arange(q, device=self.device)[:, None].expand(q, n)
        ids = torch.where(codes >= 0, self.vocab.encode("melody", codes.clamp(min=0), level),
                          self.vocab.encode("melody_null", torch.zeros_like(codes), level))  # fmt: skip
        return ids.transpose(1, 2).flatten(1)

    def drop_condition(self, prefix: Tensor, droppable: Tensor) -> Tensor:
        """MuLan's dropout (`cond_dropout`), then the melody's own (`melody_dropout`) on the prefix's tail."""
        prefix = super().drop_condition(prefix, droppable)
        p = self.hparams.melody_dropout
        if not self.melody_conditioned or not self.training or p <= 0:
            return prefix
        null = prefix.clone()
        null[:, prefix.shape[1] - self.melody_windows * self.hparams.melody_levels :] = self.melody_ids(None, 1)
        drop = torch.rand(prefix.shape[0], 1, device=prefix.device) < p
        return torch.where(drop, null, prefix)

    def with_melody(self, batch: dict[str, Any], ids: Tensor, droppable: Tensor) -> tuple[Tensor, Tensor]:
        """A training prefix with the batch's melody columns appended (none without the flag); they are not
        `droppable` by MuLan's dropout: `drop_condition` drops them by its own draw."""
        if not self.melody_conditioned:
            return ids, droppable
        if "melody" not in batch:
            raise ValueError("melody_conditioning needs melody tokens: train the melody model (make train-melody) "
                             "and re-tokenize (make tokenize), or set model.melody_conditioning: false")  # fmt: skip
        melody = batch["melody"]
        if "melody_mask" in batch:  # padded columns (a shorter clip in the batch) are no melody
            melody = melody.masked_fill(~batch["melody_mask"][:, None], -1)
        mel = self.melody_ids(melody, ids.shape[0], batch.get("melody_start", 0))
        keep = torch.zeros(mel.shape[1], dtype=torch.bool, device=ids.device)
        return torch.cat([ids, mel], dim=1), torch.cat([droppable, keep])

    def melody_prefixes(
        self, cond: Tensor, null: Tensor | None, melody: Tensor | None, semantic_start: int,
        melody_cfg_scale: float | None,
    ) -> tuple[Tensor, Tensor | None, dict[str, Any]]:  # fmt: skip
        """A generation window's (prefix, null prefix, extra `sample_window` kwargs) from its other conditions
        `cond` and their null: the melody columns from the window's start, the null with no melody either; with
        `melody_cfg_scale`, the text-only branch (`first_prefix`) that guides the melody on its own scale."""
        if not self.melody_conditioned:
            return cond, null, {}
        b = cond.shape[0]
        mel, no_mel = self.melody_ids(melody, b, self.melody_offset(semantic_start)), self.melody_ids(None, b)
        null_mel = None if null is None else torch.cat([null, no_mel], dim=1)
        extra = {} if melody_cfg_scale is None else {"first_prefix": torch.cat([cond, no_mel], dim=1),
                                                      "second_cfg_scale": melody_cfg_scale}  # fmt: skip
        return torch.cat([cond, mel], dim=1), null_mel, extra

    def check_melody(self, melody: Tensor | None, melody_cfg_scale: float | None, cfg_scale: float | None) -> None:
        """What `generate` refuses: a melody for a stage trained without one, and guidance that cannot apply."""
        if melody is not None and not self.melody_conditioned:
            raise ValueError(f"this {self.target} stage was trained without melody tokens: {RETRAIN}")
        check_melody_guidance(melody_cfg_scale, cfg_scale, melody is not None, self.melody_conditioned)
