"""The story-mode and continuation eval figures' building blocks (`musiclm.story_eval`)."""

from __future__ import annotations

import torch

from musiclm.judge.tagged import InstrumentFamilyJudge
from musiclm.story_eval import judge_adherence, own_prompt_closest, pick_stories, segment_cuts


def clip(i: int, fam: str) -> dict:
    return {"caption": f"clip {i}", "meta": {"attributes": {"instrument_family": fam}}}


def test_stories_take_each_clip_once_with_distinct_families_where_possible():
    clips = [clip(0, "piano"), clip(1, "piano"), clip(2, "brass"), clip(3, "piano"), clip(4, "strings")]
    stories = pick_stories(clips, num_stories=3, num_segments=2)
    assert [[c["caption"] for c in s] for s in stories] == [["clip 0", "clip 2"], ["clip 1", "clip 4"]]


def test_a_segment_adheres_only_when_its_own_prompt_is_the_closest():
    text = torch.eye(3)[None].repeat(2, 1, 1)  # story s, prompt k: one-hot k
    audio = text.clone()
    audio[1, 2] = torch.tensor([0.0, 1.0, 0.2])  # story 1's last segment sounds like its second prompt
    hits = own_prompt_closest(audio, text)
    assert hits.tolist() == [[True, True, True], [True, True, False]]
    assert not own_prompt_closest(torch.ones(1, 2, 3), torch.eye(3)[None, :2]).any()  # ties are no hit


def test_judge_grades_only_segments_that_differ_from_another():
    judge = InstrumentFamilyJudge(tagger=None)
    attrs = [[{"instrument_family": "piano"}, {"instrument_family": "brass"}],
             [{"instrument_family": "piano"}, {"instrument_family": "piano"}],  # nothing to tell apart
             [{"instrument_family": "piano"}, {}]]  # fmt: skip
    preds = [["piano", "piano"], ["piano", "piano"], ["piano", "brass"]]
    assert judge_adherence(judge, preds, attrs) == (1, 2)


def test_segment_cuts_start_where_generation_switched():
    # 25-Hz semantic frames at 100 Hz audio: a switch at 0.51 s happens on frame 13 = sample 52
    assert segment_cuts([0.0, 0.51], 25.0, 100, 120) == [(0, 52), (52, 104)]
