"""The order judge's margin rule and its calibration on val (without a trained net)."""

from __future__ import annotations

import torch

from musiclm.judge import OrderJudge, default_judges
from musiclm.judge.calibrate import order_margin
from musiclm.judge.labels import FAMILIES

SR = 16_000


class LevelTagger:
    """Presence of piano = the half's peak level (so a quiet piano reads as a low probability); drums = 0.7 wherever
    there is sound (a tagger that invents drums from context); nothing else sounds."""

    families = list(FAMILIES)

    def tag(self, waves: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
        level = waves.abs().amax(-1)
        presence = torch.zeros(len(waves), len(self.families))
        presence[:, self.families.index("piano")] = level
        return {"family": presence.clone(), "drums": 0.7 * (level > 0).float(), "presence": presence}


def test_order_judge_asks_for_more_presence_after_the_midpoint():
    """A quiet piano entering (0 -> 0.3) is "more present" though never above 0.5; drums heard in both halves do
    not enter; a margin above the rise rejects it."""
    silent, quiet = torch.zeros(1, SR), torch.full((1, SR), 0.3)
    [pred] = OrderJudge(LevelTagger()).predict(torch.cat([silent, quiet], -1), SR)
    assert OrderJudge(LevelTagger()).matches(pred, "piano") and "1st half: nothing" in str(pred)
    [both] = OrderJudge(LevelTagger()).predict(torch.cat([quiet, quiet], -1), SR)
    assert not OrderJudge(LevelTagger()).matches(both, "drums")
    assert not OrderJudge(LevelTagger(), margin=0.5).matches(pred, "piano")
    assert default_judges(LevelTagger(), 0.25)[-1].margin == 0.25
    assert default_judges(LevelTagger())[-1].margin == OrderJudge.DEFAULT_MARGIN


def test_order_margin_separates_entering_from_not_on_val_pairs():
    """Clips with piano at level 0.4 and clips without: cross-clip pairs where piano enters rise by 0.4, the others by
    0 or less, so the best margin lies in [0, 0.4); too few clips with ground truth give None."""
    waves = torch.cat([torch.full((3, 2 * SR), 0.4), torch.zeros(3, 2 * SR)])
    attributes = [{"instruments": ["Acoustic Grand Piano"]}] * 3 + [{"instruments": ["Violin"]}] * 3
    margin = order_margin(LevelTagger(), waves, attributes, SR)
    assert margin is not None and 0.0 <= margin < 0.4
    assert order_margin(LevelTagger(), waves[:1], attributes[:1], SR) is None
