"""The learning-rate schedule shared by the contrastive and the autoregressive stages."""

from __future__ import annotations

import math
from collections.abc import Callable


def warmup_cosine(warmup_steps: int, total_steps: int | None, min_ratio: float) -> Callable[[int], float]:
    """LambdaLR factor: linear warm-up over `warmup_steps`, then cosine decay to `min_ratio` at `total_steps`.

    When `total_steps` is unknown (None, or Lightning's -1) or no longer than the warm-up, the factor stays at 1
    after warm-up: there is no decay horizon to aim for."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if total_steps is None or total_steps <= warmup_steps:
            return 1.0
        progress = min(1.0, (step - warmup_steps) / (total_steps - warmup_steps))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor
