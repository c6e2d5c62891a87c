"""The captioner: MusicCaps-like captions and aspect tags describing exactly the attributes a piece was drawn with."""

from __future__ import annotations

import re

import numpy as np

from musiclm.data.synth.styles import STYLES

TEMPO_WORDS = {
    "slow": ("slow", "unhurried", "leisurely"),
    "medium": ("moderate", "medium", "steady"),
    "fast": ("fast", "brisk", "lively", "quick"),
}
STYLE_WORDS = {
    "waltz": ("waltz", "waltz", "lilting waltz"),
    "march": ("march", "military-style march", "marching tune"),
    "rock": ("rock song", "rock track", "rock piece"),
    "ballad": ("ballad", "gentle ballad", "ballad"),
    "bossa nova": ("bossa nova", "bossa nova tune", "laid-back bossa nova"),
    "ambient": ("ambient piece", "ambient soundscape", "ambient track"),
    "chiptune": ("chiptune", "8-bit chiptune", "chiptune track"),
    "jazz swing": ("jazz swing tune", "swing jazz piece", "jazz swing number"),
    "folk": ("folk tune", "folk song", "acoustic folk piece"),
    "lullaby": ("lullaby", "gentle lullaby", "lullaby"),
    "techno": ("techno track", "techno tune", "electronic techno piece"),
}
DYNAMICS_WORDS = {
    "soft": ("played softly", "at a soft, quiet volume", "with a delicate touch"),
    "moderate": ("at a comfortable volume", "played with a relaxed touch", ""),
    "loud": ("played loudly", "with bold, loud dynamics", "played with force"),
    "crescendo": ("gradually growing louder", "building in volume from start to end", "with a gradual crescendo"),
}
METER_WORDS = {
    "3/4": ("in 3/4 time", "in triple meter"),
    "4/4": ("in 4/4 time", "in common time"),
    "6/8": ("in 6/8 time", "in a rolling 6/8 meter"),
}


def _a(word: str) -> str:
    vowel_sound = (word[0].lower() in "aeiou8" and not word.startswith("uni")) or word.startswith("FM")
    return ("an " if vowel_sound else "a ") + word


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _join(items: list[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _tidy(text: str) -> str:
    """Collapse the gaps an empty optional clause leaves (double spaces, ", ,", ",.")."""
    text = re.sub(r"\s+", " ", text).strip()
    text = re.sub(r"(\s*,)+", ",", text)
    return re.sub(r"\s*,?\s*\.", ".", text)


def write_caption(attributes: dict, rng: np.random.Generator) -> tuple[str, list[str]]:
    """A MusicCaps-like caption (one of several sentence plans, synonyms, optional clauses) and an aspect list."""
    at = attributes
    pick = lambda xs: xs[int(rng.integers(len(xs)))]  # noqa: E731
    lead, family = at["instrument_name"], at["instrument_family"]
    tempo = pick(TEMPO_WORDS[at["tempo_bucket"]])
    style = pick(STYLE_WORDS[at["style"]])
    key = pick([f"{at['key']} {at['mode']}", f"a {at['mode']} key", f"the key of {at['key']} {at['mode']}"])
    bpm = pick([f"around {at['tempo_bpm']} BPM", f"about {at['tempo_bpm']} beats per minute", f"{at['tempo_bpm']} BPM"])
    fallback = [f"{lead} chords"] + ([] if at.get("negation") == "bass" else ["bass"])
    acc = [name for name in dict.fromkeys(at["accompaniment"]) if name != lead] or fallback
    backing = _join(acc + (["drums"] if at["has_drums"] else []))
    drums = (
        pick(["The drums keep the beat.", "A drum kit keeps time.", "Drums drive the rhythm."])
        if at["has_drums"]
        else pick(["There are no drums.", "There is no percussion.", ""])
    )
    dyn = pick(DYNAMICS_WORDS[at["dynamics"]])
    meter = pick(METER_WORDS[at["meter"]])
    setting = STYLES[at["style"]].setting
    lead_phrase = pick(
        [
            f"played on {_a(lead)}",
            f"led by {_a(lead)}",
            f"featuring {_a(lead)} melody",
            f"with {_a(lead)} carrying the melody",
        ]
    )
    plans = [
        lambda: (
            f"{_cap(_a(tempo))}, {at['mood']} {style} in {key} {lead_phrase}, with {backing} in the background, {bpm}."
        ),
        lambda: f"This is {_a(at['mood'])} {style} {lead_phrase}. The {tempo} tempo sits at {bpm}, {meter}. {drums}",
        lambda: (
            f"{_cap(_a(lead))} plays {_a(at['mood'])} melody over {backing}. "
            f"The piece is {_a(style)} in {key}, {dyn}, at {_a(tempo)} tempo."
        ),
        lambda: (
            f"Instrumental {style} {lead_phrase} ({family}). The mood is {at['mood']} and the tempo is {tempo}, {bpm}. "
            f"{drums} This could be playing {setting}."
        ),
        lambda: (
            f"{_cap(_a(style))} {meter} with {_a(lead)} on the melody and {backing} accompanying it. "
            f"{_cap(at['mood'])}, {dyn}, at {_a(tempo)} tempo."
        ),
        lambda: (
            f"The recording features {_a(lead)} playing {_a(tempo)} {style} in {key}. It sounds {at['mood']}. "
            f"This music could be heard {setting}."
        ),
    ]
    caption = _tidy(pick(plans)())
    if "negation" in at:
        caption = f"{caption.removesuffix('.')}, {negation_phrase(at['negation'], rng)}."
    if "order" in at:
        caption = f"{caption} {order_sentence(at, rng)}"
    tags = [
        family,
        lead,
        at["style"],
        f"{at['tempo_bucket']} tempo",
        f"{at['mode']} key",
        at["mood"],
        at["meter"],
        "drums" if at["has_drums"] else "no drums",
        at["dynamics"],
    ]
    tags += ["swing"] if at.get("swing") else []
    tags += [f"no {at['negation']}"] if "negation" in at else []
    tags += [f"{at['order']['enters']} enter halfway"] if "order" in at else []
    return caption, list(dict.fromkeys(tags))


def negation_phrase(absent: str, rng: np.random.Generator) -> str:
    """"with no drums", "without piano", "no bass": what a negation prompt says is absent (`absent` is "drums" or an
    instrument family); eval uses it to write negation prompts for real clips that lack something."""
    forms = (f"with no {absent}", f"without {absent}", f"no {absent}")
    return forms[int(rng.integers(len(forms)))]


def order_sentence(attributes: dict, rng: np.random.Generator) -> str:
    """The temporal-order claim of a clip whose `order` ground truth says what enters halfway."""
    order, lead = attributes["order"], attributes["instrument_name"]
    if order["enters"] == "drums":
        forms = ("The drums enter halfway.", "Drums come in halfway through.", "Halfway through, the drums come in.")
    else:
        band = attributes["accompaniment"][0]  # the harmony part, whose family is order["enters"]
        forms = (
            f"It starts with solo {lead}; halfway through, {_a(band)} and the band come in.",
            f"{_cap(_a(lead))} plays alone at first; halfway through, {_a(band)} and the band come in.",
        )
    return forms[int(rng.integers(len(forms)))]
