"""The order judge's margin, calibrated on the val split (never test): how much more present the entering source
must be in the second half than in the first.

The tagger's presence probability for a quiet accompaniment part is often under 0.5 in the half where it plays and
its drums probability is often over 0.5 in a drumless half of a drummed style, so "absent, then present" at 0.5 fails
on real order clips; what the prompt asserts is that the source is *more* present after the midpoint. Val clips
do not change halfway, so the margin is chosen on pairs of them: the second half of clip x against the first half of
clip y, where a family (or drums) "enters" when x has it and y does not. The margin with the best balanced accuracy
(entering vs not) over all families is the one eval uses.
"""

from __future__ import annotations

import torch

from musiclm.judge.labels import DRUMS, present

MARGINS = torch.linspace(0.0, 0.9, 91)


def half_presence(tagger, waves: torch.Tensor, sample_rate: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, F + 1] probabilities (families in `tagger.families` order, then drums) of each wave's first and second
    half."""
    half = waves.shape[-1] // 2

    def probs(w: torch.Tensor) -> torch.Tensor:
        p = tagger.tag(w, sample_rate)
        return torch.cat([p["presence"], p["drums"][:, None]], dim=1)

    return probs(waves[..., :half]), probs(waves[..., half:])


def order_margin(tagger, waves: torch.Tensor, attributes: list[dict], sample_rate: int) -> float | None:
    """The margin with the best balanced accuracy on cross-clip half pairs of clips that do not change halfway
    (`waves` [B, T], their ground-truth `attributes`); None when too few clips have a ground truth to calibrate."""
    keep = [i for i, at in enumerate(attributes) if present(at) and "order" not in at]
    if len(keep) < 2:
        return None
    names = [*tagger.families, DRUMS]
    y = torch.tensor([[n in present(attributes[i]) for n in names] for i in keep])
    first, second = half_presence(tagger, waves[keep], sample_rate)
    diff = second[:, None, :] - first[None, :, :]  # [x, y, name]: x's second half against y's first half
    enters = y[:, None, :] & ~y[None, :, :]
    other = ~torch.eye(len(keep), dtype=torch.bool)[..., None].expand_as(enters)
    pos, neg = diff[enters & other], diff[~enters & other]
    if not len(pos) or not len(neg):
        return None
    hit = (pos[None] > MARGINS[:, None]).float().mean(1)
    reject = (neg[None] <= MARGINS[:, None]).float().mean(1)
    return float(MARGINS[int((hit + reject).argmax())])
