"""The shared warm-up + cosine schedule reproduces, step for step, the two schedules it replaced."""

from __future__ import annotations

import math

import pytest

from musiclm.optim import warmup_cosine


def mulan_schedule(warmup: int, max_steps: int, min_ratio: float):
    """MuLanModule.configure_optimizers before the refactor."""
    total = max_steps if max_steps and max_steps > 0 else None

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if total is None:
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return schedule


def lm_schedule(warmup: int, max_steps: int):
    """The LM stages' configure_optimizers before the refactor (floor 0.1)."""
    total = max(max_steps, 0)

    def schedule(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if total <= warmup:
            return 1.0
        progress = min(1.0, (step - warmup) / (total - warmup))
        return 0.1 + 0.45 * (1 + math.cos(math.pi * progress))

    return schedule


CASES = [(0, 50), (10, 100), (1000, 5000), (7, 8), (100, -1), (100, 0), (0, -1)]


@pytest.mark.parametrize("warmup,max_steps", CASES)
@pytest.mark.parametrize("min_ratio", [0.0, 0.1, 0.3])
def test_matches_mulan_schedule(warmup: int, max_steps: int, min_ratio: float):
    new, old = warmup_cosine(warmup, max_steps, min_ratio), mulan_schedule(warmup, max_steps, min_ratio)
    for step in range(2 * max(warmup, max_steps, 10)):
        assert new(step) == old(step), step


@pytest.mark.parametrize("warmup,max_steps", CASES)
def test_matches_lm_schedule(warmup: int, max_steps: int):
    new, old = warmup_cosine(warmup, max_steps, 0.1), lm_schedule(warmup, max_steps)
    for step in range(2 * max(warmup, max_steps, 10)):
        assert new(step) == old(step), step


@pytest.mark.parametrize("warmup,max_steps", [(100, 50), (100, 100)])
def test_horizon_within_warmup_is_constant_after_it(warmup: int, max_steps: int):
    """A run that ends inside its warm-up: every step it trains is a warm-up step, as in both old schedules; after
    the warm-up (never reached) the factor stays 1, as in the LM's (MuLan's dropped to its floor)."""
    new, old = warmup_cosine(warmup, max_steps, 0.1), mulan_schedule(warmup, max_steps, 0.1)
    assert all(new(s) == old(s) for s in range(max_steps))
    assert all(new(s) == lm_schedule(warmup, max_steps)(s) == 1.0 for s in range(warmup, 2 * warmup))


def test_shape():
    f = warmup_cosine(10, 110, 0.2)
    assert f(0) == pytest.approx(0.1) and f(9) == 1.0 and f(10) == 1.0
    assert f(60) == pytest.approx(0.6) and f(110) == pytest.approx(0.2) and f(500) == pytest.approx(0.2)
    assert warmup_cosine(10, None, 0.2)(10_000) == 1.0
