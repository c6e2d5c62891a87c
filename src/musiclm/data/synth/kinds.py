"""Prompt kinds MusicLM is known to fail at, made true in the audio: negation ("... with no drums") and temporal
order ("drums enter halfway", "starts with solo piano, then the strings come in").

A clip draws its kind from its own generator (`draw_kind`), never from the composer's, so at rate 0 nothing is
drawn and the corpus stays bit-identical. `apply_kind` then edits the composed parts so the claim holds (a part is
left out; parts start at the midpoint) and returns the ground truth the json stores: `negation` (what is absent:
"drums" or an instrument family) or `order` ({"enters", "solo", "seconds"}: what is silent before `seconds`).
"""

from __future__ import annotations

import numpy as np

from musiclm.data.synth.styles import GM

KINDS = ("negation", "order")
KIND_STREAM = 1  # salt of the generator that draws a clip's kind, apart from the composer's


def draw_kind(seed: int, index: int, rate: float) -> str | None:
    """The prompt kind of clip `index` of corpus `seed` (None with probability 1 - rate), half negation, half order."""
    if rate <= 0:
        return None
    rng = np.random.default_rng([seed, index, KIND_STREAM])
    return str(rng.choice(KINDS)) if rng.random() < rate else None


def _family(track: dict) -> str:
    return "drums" if track["program"] is None else GM[track["program"]][2]


def _negation(tracks: list[dict], rng: np.random.Generator) -> tuple[list[dict], str] | None:
    """Leave out the drums, the harmony or the bass part when nothing else left in the piece shares its family."""
    options = []
    for i, t in enumerate(tracks):
        others = {_family(o) for j, o in enumerate(tracks) if j != i}
        if t["name"] in ("drums", "harmony", "bass") and _family(t) not in others:
            options.append(i)
    if not options:
        return None
    drop = options[int(rng.integers(len(options)))]
    return [t for i, t in enumerate(tracks) if i != drop], _family(tracks[drop])


def _order(tracks: list[dict], rng: np.random.Generator, mid: int) -> tuple[list[dict], dict] | None:
    """The drums enter at the midpoint, or the lead plays solo until the band (harmony first) comes in there."""
    names = {t["name"]: t for t in tracks}
    lead = _family(names["melody"])
    options = ["drums"] if "drums" in names else []
    if _family(names["harmony"]) != lead:
        options.append("band")
    if not options:
        return None
    choice = options[int(rng.integers(len(options)))]
    late = {"drums"} if choice == "drums" else {n for n in names if n != "melody"}
    edited = [t | {"notes": [n for n in t["notes"] if n[0] >= mid]} if t["name"] in late else t for t in tracks]
    enters = "drums" if choice == "drums" else _family(names["harmony"])
    return edited, {"enters": enters, "solo": lead if choice == "band" else None}


def apply_kind(
    kind: str | None, tracks: list[dict], rng: np.random.Generator, mid_tick: int, mid_seconds: float
) -> tuple[list[dict], dict]:
    """(parts, ground-truth attributes to add); the parts unchanged and {} when the piece cannot carry the kind."""
    if kind == "negation" and (out := _negation(tracks, rng)) is not None:
        return out[0], {"negation": out[1]}
    if kind == "order" and (out := _order(tracks, rng, mid_tick)) is not None:
        return out[0], {"order": out[1] | {"seconds": round(mid_seconds, 3)}}
    return tracks, {}
