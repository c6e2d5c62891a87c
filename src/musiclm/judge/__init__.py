"""Independent judges of prompt adherence: they share no weights with the chain (not MuLan, not the codec).

Every judge has one interface (`Judge`: `name`, `attribute`, `target(attributes)`, `predict(waves, sample_rate)`,
`matches(pred, target)`), so eval grades real clips (the judge's ceiling), generations and shuffled prompts (the
floor) the same way (`scoring.score`). The judges:

- `tempo.TempoJudge`: a beat tracker (librosa's, or the hand-written onset autocorrelation), within 10%;
- `key.KeyModeJudge`: basic-pitch's notes (`notes`, onnxruntime) and bass chroma against the synthetic corpus's
  own key profiles; it needs whole 8-s clips;
- `tagged.InstrumentFamilyJudge`, `DrumsJudge`, `NegationJudge`, `OrderJudge`: read `tagger.TaggerModule`, a small
  CNN trained with cross-entropy on the synthetic train split's ground truth (`make train-judge`).
"""

from __future__ import annotations

from musiclm.judge.base import Judge, agreement, match_matrix
from musiclm.judge.key import KeyModeJudge
from musiclm.judge.tagged import DrumsJudge, InstrumentFamilyJudge, NegationJudge, OrderJudge
from musiclm.judge.tagger import TaggerModule
from musiclm.judge.tempo import TempoJudge

ATTRIBUTES = ("instrument_family", "drums", "tempo", "key_mode", "negation", "order")


def default_judges(tagger: TaggerModule, order_margin: float | None = None) -> list[Judge]:
    """One judge per attribute, in ATTRIBUTES order; `order_margin` (calibrated on val) replaces the order judge's
    default."""
    order = OrderJudge(tagger) if order_margin is None else OrderJudge(tagger, order_margin)
    return [InstrumentFamilyJudge(tagger), DrumsJudge(tagger), TempoJudge(), KeyModeJudge(), NegationJudge(tagger),
            order]  # fmt: skip


__all__ = [
    "ATTRIBUTES", "DrumsJudge", "InstrumentFamilyJudge", "Judge", "KeyModeJudge", "NegationJudge", "OrderJudge",
    "TaggerModule", "TempoJudge", "agreement", "default_judges", "match_matrix",
]
