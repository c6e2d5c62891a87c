"""The one interface every judge has, and the statistics that turn its verdicts into eval numbers.

A judge reads audio only (no weights shared with the chain) and answers one question about it: which instrument
family leads, are there drums, what tempo, which key. The same judge then grades real clips against their ground
truth (its ceiling), generated clips against their prompts, and generated clips against other prompts (the floor).
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch


@runtime_checkable
class Judge(Protocol):
    """`target(attributes)` is what a clip's ground truth says (None: the judge has nothing to check on it);
    `predict` gives one verdict per wave; `matches(pred, target)` grades one verdict against one target. A judge
    may also set `min_seconds`, the clip length it needs to reach its ceiling (the key judge: whole 8-s clips)."""

    name: str  # what does the judging, for the report ("librosa beat tracker")
    attribute: str  # the eval keys it writes: judge.<attribute>.*

    def target(self, attributes: dict) -> Any | None: ...

    def predict(self, waves: torch.Tensor, sample_rate: int) -> list[Any]: ...

    def matches(self, pred: Any, target: Any) -> bool: ...


def match_matrix(judge: Judge, preds: list[Any], targets: list[Any]) -> torch.Tensor:
    """[clip, target] booleans: clip i's verdict graded against target j (the diagonal pairs each clip with its own)."""
    return torch.tensor([[judge.matches(p, t) for t in targets] for p in preds], dtype=torch.bool).reshape(
        len(preds), len(targets)
    )


def agreement(hits: torch.Tensor, permutations: int = 2000, seed: int = 0) -> dict[str, float]:
    """From a square match matrix: `rate` (matched pairs), `chance` (all mismatched pairs: the rate with prompts
    shuffled) and `p`, the share of random prompt-to-clip pairings (plus the observed one) whose rate is at least
    the observed: with a few dozen prompts a rate above chance can be noise, and p says whether it is."""
    n = hits.shape[0]
    h = hits.double()
    rate = float(h.diagonal().mean())
    if n < 2:
        return {"rate": rate, "chance": float("nan"), "p": float("nan")}
    chance = float((h.sum() - h.diagonal().sum()) / (n * (n - 1)))
    g = torch.Generator().manual_seed(seed)
    perms = torch.stack([torch.randperm(n, generator=g) for _ in range(permutations)])
    null = h[torch.arange(n), perms].mean(-1)
    p = float(((null >= rate - 1e-12).sum() + 1) / (permutations + 1))
    return {"rate": rate, "chance": chance, "p": p}
