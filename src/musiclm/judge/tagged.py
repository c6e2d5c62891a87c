"""The judges that read the tagger (`musiclm train judge`): lead instrument family, drums, negation and order.

Negation asks what *sounds*: a family sounds when the presence head says so or it is the predicted lead, drums
when the drums head says so. Order is judged per segment: what enters halfway must be more present (presence
or drums probability) in the second half than in the first, by a margin eval calibrates on the val split
(`calibrate.order_margin`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from musiclm.judge.calibrate import half_presence
from musiclm.judge.labels import DRUMS
from musiclm.judge.tagger import TaggerModule

THRESHOLD = 0.5


def sounding(tagger: TaggerModule, waves: torch.Tensor, sample_rate: int) -> list[frozenset[str]]:
    """Per wave: the families (and "drums") the tagger hears."""
    probs = tagger.tag(waves, sample_rate)
    out = []
    for family, drums, presence in zip(probs["family"], probs["drums"], probs["presence"], strict=True):
        heard = {f for f, p in zip(tagger.families, presence.tolist(), strict=True) if p > THRESHOLD}
        heard.add(tagger.families[int(family.argmax())])
        out.append(frozenset(heard | ({DRUMS} if drums > THRESHOLD else set())))
    return out


class TaggerJudge:
    """What the tagger's judges share: the tagger they read."""

    name = "tagger (CNN on log-mel, cross-entropy)"

    def __init__(self, tagger: TaggerModule):
        self.tagger = tagger


class InstrumentFamilyJudge(TaggerJudge):
    """Target: the lead's `instrument_family`; verdict: the family head's argmax."""

    attribute = "instrument_family"

    def target(self, attributes: dict) -> str | None:
        return attributes.get("instrument_family")

    def predict(self, waves: torch.Tensor, sample_rate: int) -> list[str]:
        family = self.tagger.tag(waves, sample_rate)["family"]
        return [self.tagger.families[int(i)] for i in family.argmax(-1)]

    def matches(self, pred: str, target: str) -> bool:
        return pred == target


class DrumsJudge(TaggerJudge):
    """Target: `has_drums` (none on order clips, whose drums start halfway); verdict: the drums head."""

    attribute = "drums"

    def target(self, attributes: dict) -> bool | None:
        return None if "order" in attributes or "has_drums" not in attributes else bool(attributes["has_drums"])

    def predict(self, waves: torch.Tensor, sample_rate: int) -> list[bool]:
        return [bool(p > THRESHOLD) for p in self.tagger.tag(waves, sample_rate)["drums"]]

    def matches(self, pred: bool, target: bool) -> bool:
        return pred == target


class NegationJudge(TaggerJudge):
    """Target: what the prompt says is absent (`negation`: "drums" or a family); matches when it is not heard."""

    attribute = "negation"

    def target(self, attributes: dict) -> str | None:
        return attributes.get("negation")

    def predict(self, waves: torch.Tensor, sample_rate: int) -> list[frozenset[str]]:
        return sounding(self.tagger, waves, sample_rate)

    def matches(self, pred: frozenset[str], target: str) -> bool:
        return target not in pred


@dataclass(frozen=True)
class Halves:
    """The order judge's verdict on one clip: each name's probability (families, "drums") per half."""

    first: dict[str, float]
    second: dict[str, float]

    def __str__(self) -> str:
        heard = (", ".join(n for n, p in h.items() if p > THRESHOLD) or "nothing" for h in (self.first, self.second))
        return "1st half: {} | 2nd half: {}".format(*heard)


class OrderJudge(TaggerJudge):
    """Target: what enters halfway (`order.enters`); matches when its probability in the second half exceeds the
    first half's by more than `margin` (eval sets it from the val split; `DEFAULT_MARGIN` without one)."""

    attribute = "order"
    DEFAULT_MARGIN = 0.1

    def __init__(self, tagger: TaggerModule, margin: float = DEFAULT_MARGIN):
        super().__init__(tagger)
        self.margin = margin

    def target(self, attributes: dict) -> str | None:
        return (attributes.get("order") or {}).get("enters")

    def predict(self, waves: torch.Tensor, sample_rate: int) -> list[Halves]:
        names = [*self.tagger.families, DRUMS]
        first, second = half_presence(self.tagger, waves, sample_rate)
        return [Halves(dict(zip(names, a.tolist(), strict=True)), dict(zip(names, b.tolist(), strict=True)))
                for a, b in zip(first, second, strict=True)]  # fmt: skip

    def matches(self, pred: Halves, target: str) -> bool:
        return pred.second.get(target, 0.0) - pred.first.get(target, 0.0) > self.margin
