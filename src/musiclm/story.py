"""Story mode: the MuLan conditioning changes at given seconds while generation goes on (the paper switches the
text every 15 s). A story is `[(seconds, prompt), ...]`: the first at 0, strictly increasing, each before the end.

Files hold one `seconds<TAB>prompt` line per segment (blank lines and `#` comments are skipped):

    0	a calm piano intro
    8	energetic rock with drums
"""

from __future__ import annotations

from pathlib import Path

Segment = tuple[float, "str | list[str]"]  # a start in seconds and one prompt, or one per row of the batch


class StoryError(ValueError):
    """A story that cannot be generated; the message says what to change."""


def check_story(story: list[Segment], seconds: float) -> list[Segment]:
    """The story as given when it can be generated `seconds` long; else a one-line StoryError."""
    if not story:
        raise StoryError("the story has no segments: give at least `0<TAB>a prompt`")
    times = [float(t) for t, _ in story]
    if times[0] != 0:
        raise StoryError(f"the story's first segment starts at {times[0]:g} s: the first must start at 0")
    for a, b in zip(times, times[1:], strict=False):
        if b <= a:
            raise StoryError(f"the story's times must increase: {b:g} s comes after {a:g} s; sort the segments")
    if times[-1] >= seconds:
        raise StoryError(f"a segment starts at {times[-1]:g} s, not before the end ({seconds:g} s): "
                         "ask for more seconds or drop it")  # fmt: skip
    for t, prompt in story:
        if not prompt or (isinstance(prompt, str) and not prompt.strip()):
            raise StoryError(f"the segment at {t:g} s has no prompt")
    return [(float(t), p) for t, p in story]


def read_story(path: Path) -> list[Segment]:
    """`seconds<TAB>prompt` lines -> a story (checked against a length by `check_story`)."""
    story: list[Segment] = []
    for n, line in enumerate(Path(path).read_text().splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        time, tab, prompt = line.partition("\t")
        try:
            seconds = float(time)
        except ValueError:
            seconds = None
        if not tab or seconds is None or not prompt.strip():
            raise StoryError(f"{path}:{n}: expected `seconds<TAB>prompt`, got {line!r}")
        story.append((seconds, prompt.strip()))
    return story


def label(story: list[Segment], row: int = 0) -> str:
    """One line naming a story's segments (row `row` of per-row prompts), for file names and reports."""
    return " | ".join(f"{t:g}s: {p if isinstance(p, str) else p[row]}" for t, p in story)
