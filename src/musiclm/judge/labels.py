"""What the tagger learns from a synthetic clip's json: lead family, drums, and which families sound at all.

Labels come from the corpus's ground truth only. A temporal-order clip's drums and accompaniment are silent for its
first half, so a random crop may not hold them: those two labels are masked on such clips (the lead plays
throughout, so its family still counts).
"""

from __future__ import annotations

import torch

from musiclm.data.synth.styles import GM

FAMILIES: tuple[str, ...] = tuple(sorted({family for _, _, family, _ in GM.values()}))
FAMILY_OF: dict[str, str] = {official: family for official, _, family, _ in GM.values()}  # "Violin" -> "strings"
DRUMS = "drums"
IGNORE = -100  # cross-entropy's ignore_index


def present(attributes: dict) -> set[str]:
    """Families (and "drums") that sound somewhere in the clip."""
    names = attributes.get("instruments") or []
    return {DRUMS if n == "Drum Kit" else FAMILY_OF[n] for n in names if n == "Drum Kit" or n in FAMILY_OF}


def targets(metas: list[dict], families: list[str]) -> dict[str, torch.Tensor]:
    """Batch labels: family [B] (IGNORE when unknown), drums [B] (0/1, IGNORE on order clips), presence [B, F]
    multi-hot with presence_mask [B]."""
    family, drums, presence, mask = [], [], [], []
    for meta in metas:
        at = meta.get("attributes") or {}
        timed = "order" in at
        family.append(families.index(at["instrument_family"]) if at.get("instrument_family") in families else IGNORE)
        drums.append(IGNORE if timed or "has_drums" not in at else int(at["has_drums"]))
        sounding = present(at)
        presence.append([float(f in sounding) for f in families])
        mask.append(not timed and bool(sounding))
    return {
        "family": torch.tensor(family),
        "drums": torch.tensor(drums),
        "presence": torch.tensor(presence).reshape(len(metas), len(families)),
        "presence_mask": torch.tensor(mask),
    }
