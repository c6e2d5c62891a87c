"""Which eval prompts a judge may grade, and the negation prompts eval writes for real clips that lack something.

A prompt is graded on an attribute only when its caption states it (a caption that never names the key cannot be
followed or missed on key): the lead instrument is always named; drums, a BPM figure and "<key> <mode>" only in some
caption plans. Negation and temporal-order prompts state their claim by construction.

The default corpus has no clip that changes halfway (its prompt-kinds rate is 0, so training is unchanged), so eval
renders its own temporal-order clips (`order_prompts`): composed with the corpus's code, forced to the "order" kind,
from a corpus seed no `make data` builds. They set the order judge's ceiling and their captions are its prompts.
"""

from __future__ import annotations

import re

import numpy as np

from musiclm.audio import encode_audio
from musiclm.data.synth.captions import negation_phrase
from musiclm.judge.labels import DRUMS, present

# Families often heard in the accompaniment, so "without piano" is a claim a generator could get wrong.
NEGATABLE = ("piano", "strings", "guitar", "brass", "organ", "bass")
ORDER_SEED = 14  # the corpus seed of eval's own order clips: `make data` builds seed 0, so none is a training clip


def states(attribute: str, caption: str, target: object) -> bool:
    """Whether `caption` states `attribute` (so a generation can follow it or not)."""
    low = caption.lower()
    if attribute == "drums":
        return "drum" in low or "percussion" in low
    if attribute == "tempo":
        return re.search(r"\d+ (bpm|beats per minute)", low) is not None
    if attribute == "key_mode":
        return str(target).lower() in low
    return True


def negation_prompt(clip: dict, rng: np.random.Generator) -> dict | None:
    """`clip` (a test prompt: caption, meta, flac) with a negation its ground truth supports added to its caption
    and to its attributes; None when it has drums and every negatable family."""
    at = clip["meta"]["attributes"]
    sounding = present(at)
    absent = [DRUMS] * (not at.get("has_drums", True)) + [f for f in NEGATABLE if f not in sounding]
    if not absent:
        return None
    what = absent[int(rng.integers(len(absent)))]
    caption = f"{clip['caption'].removesuffix('.')}, {negation_phrase(what, rng)}."
    meta = clip["meta"] | {"caption": caption, "attributes": at | {"negation": what}}
    return clip | {"caption": caption, "meta": meta, "written": True}


def kind_prompts(clips: list[dict], n: int, seed: int = 0) -> list[dict]:
    """Up to `n` negation / temporal-order prompts: first the clips whose json already carries one (a corpus built
    with --prompt-kinds-rate), then negation prompts written for clips whose ground truth supports them. Temporal
    order cannot be written for a clip that does not change halfway, so without such clips there are none."""
    native = [c for c in clips if {"negation", "order"} & set(c["meta"].get("attributes") or {})][:n]
    rng = np.random.default_rng(seed)
    written = []
    for clip in clips:
        if len(native) + len(written) >= n:
            break
        if clip in native or not (clip["meta"].get("attributes") or {}):
            continue
        prompt = negation_prompt(clip, rng)
        if prompt is not None:
            written.append(prompt)
    return native + written


def order_prompts(n: int, seconds: float, sample_rate: int, seed: int = ORDER_SEED) -> list[dict]:
    """`n` temporal-order clips of corpus `seed` as test prompts (caption, meta, flac, "written"), rendered like
    the corpus's (`make_clip` with kind "order"; FileNotFoundError without FluidSynth or a soundfont). A piece that
    cannot carry the kind (no drums, lead and harmony of one family) is passed over."""
    from musiclm.data.synth.corpus import make_clip

    out: list[dict] = []
    for index in range(4 * n):  # about 1 in 10 pieces cannot carry it: 4n draws never run short in practice
        if len(out) == n:
            break
        clip = make_clip(index, seed, seconds, sample_rate, kind="order")
        if "order" in clip.meta["attributes"]:
            flac = encode_audio(clip.audio, sample_rate)
            out.append({"key": clip.key, "caption": clip.meta["caption"], "meta": clip.meta, "flac": flac,
                        "written": True})  # fmt: skip
    return out
