"""The judges that read the tagger (`musiclm train judge`): lead instrument family, drums, negation and order.

Negation and order ask what *sounds*: a family sounds when the presence head says so or it is the predicted lead,
drums when the drums head says so. Order is judged per segment: what enters halfway must be absent from the first
half and present in the second.
"""

from __future__ import annotations

import torch

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


class OrderJudge(TaggerJudge):
    """Target: what enters halfway (`order.enters`); matches when it is not heard in the first half but is in the
    second."""

    attribute = "order"

    def target(self, attributes: dict) -> str | None:
        return (attributes.get("order") or {}).get("enters")

    def predict(self, waves: torch.Tensor, sample_rate: int) -> list[tuple[frozenset[str], frozenset[str]]]:
        half = waves.shape[-1] // 2
        first, second = (sounding(self.tagger, w, sample_rate) for w in (waves[..., :half], waves[..., half:]))
        return list(zip(first, second, strict=True))

    def matches(self, pred: tuple[frozenset[str], frozenset[str]], target: str) -> bool:
        return target not in pred[0] and target in pred[1]
