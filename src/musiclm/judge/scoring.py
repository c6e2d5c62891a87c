"""Judges to eval numbers: each judge's ceiling on real clips, and its verdicts on the generations against their own
prompts, against shuffled prompts (the floor) and with a permutation p-value.

`judge.<A>.real` is the judge's accuracy on the real test clips against their ground truth: what it can certify at
best. `judge.<A>.generated` / `.chance` / `.p` grade the generations of the prompts that state A. Other conditions
(`codec`: the real clips through the codec alone; `audio_tokens`: the chain conditioned on the real clip's MuLan
audio tokens instead of text) are graded against the same prompts and say which stage loses the prompt.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from musiclm.judge.base import Judge, agreement, match_matrix
from musiclm.judge.prompts import states

log = logging.getLogger(__name__)
MIN_CEILING = 0.8  # a judge that certifies real clips less often than this gives no verdict on generations
ASKED = {"negation": "no {}", "order": "{} enter halfway"}  # how the report words what a prompt asks


def describe(pred: Any) -> str:
    """A verdict as the report prints it."""
    if isinstance(pred, bool):
        return "drums" if pred else "no drums"
    if isinstance(pred, float):
        return f"{pred:.0f} BPM"
    if isinstance(pred, frozenset):
        return ", ".join(sorted(pred)) or "nothing"
    return str(pred)


def ceiling(judge: Judge, waves: torch.Tensor, attributes: list[dict], sample_rate: int) -> float | None:
    """Accuracy on real clips against their ground truth, over the clips the judge has a target for."""
    keep = [i for i, at in enumerate(attributes) if judge.target(at) is not None]
    if not keep:
        return None
    preds = judge.predict(waves[keep], sample_rate)
    hits = [judge.matches(p, judge.target(attributes[i])) for p, i in zip(preds, keep, strict=True)]
    return sum(hits) / len(hits)


def score(
    judges: list[Judge],
    sample_rate: int,
    real: tuple[torch.Tensor, list[dict]],
    prompts: list[dict],
    generated: torch.Tensor,
    conditions: dict[str, torch.Tensor] | None = None,
) -> tuple[dict[str, float], list[dict[str, dict]]]:
    """(`judge.*` metrics, per prompt {attribute: {"target", "verdict", "ok"}} for the report). `real` is (waves,
    attributes) of the clips for the ceilings; `generated` [N, T] and each of `conditions` pair row i with prompt i.
    Every judge with real clips to grade writes its ceiling; the verdict keys need two prompts that state the
    attribute and a ceiling of at least `MIN_CEILING` (an unreliable judge gives no verdict). Skips are logged."""
    metrics: dict[str, float] = {}
    verdicts: list[dict[str, dict]] = [{} for _ in prompts]
    for judge in judges:
        a = judge.attribute
        targets = [judge.target(p["meta"].get("attributes") or {}) for p in prompts]
        pairs = enumerate(zip(prompts, targets, strict=True))
        use = [i for i, (p, t) in pairs if t is not None and states(a, p["caption"], t)]
        top = ceiling(judge, *real, sample_rate)
        if top is None:
            log.warning("judge.%s: no keys written: no real clip carries its ground truth", a)
            continue
        metrics[f"judge.{a}.real"] = top
        if top < MIN_CEILING:
            log.warning("judge.%s: ceiling %.2f < %.2f on real clips: no verdict on generations", a, top, MIN_CEILING)
            seconds, need = generated.shape[-1] / sample_rate, getattr(judge, "min_seconds", 0.0)
            if seconds < need:  # a judge that needs longer clips than these says so, and how to give it them
                log.warning("judge.%s needs %g-s clips, these are %g s: `musiclm eval --seconds %g`", a, need, seconds,
                            need)  # fmt: skip
            continue
        if len(use) < 2:
            log.warning("judge.%s: no verdict: %d of %d prompts state it (2 needed)", a, len(use), len(prompts))
            continue
        wanted = [targets[i] for i in use]
        preds = judge.predict(generated[use], sample_rate)
        stats = agreement(match_matrix(judge, preds, wanted))
        metrics |= {f"judge.{a}.generated": stats["rate"], f"judge.{a}.chance": stats["chance"],
                    f"judge.{a}.p": stats["p"], f"judge.{a}.num_prompts": float(len(use))}  # fmt: skip
        for name, waves in (conditions or {}).items():
            hits = [judge.matches(p, t) for p, t in zip(judge.predict(waves[use], sample_rate), wanted, strict=True)]
            metrics[f"judge.{a}.{name}"] = sum(hits) / len(hits)
        for i, p, t in zip(use, preds, wanted, strict=True):
            asked = ASKED.get(a, "{}").format(describe(t))
            verdicts[i][a] = {"target": asked, "verdict": describe(p), "ok": judge.matches(p, t)}
    return metrics, verdicts
