"""Uncaptioned clips: MuLan's data module leaves them out and counts them, every other stage reads them, a split
without captions stops MuLan at once, and eval prompts only with captioned test clips."""

from __future__ import annotations

from functools import partial

import pytest

from musiclm.data.datamodules import AudioTextDataModule
from musiclm.data.shards import NoCaptionsError, write_split_shards
from musiclm.evaluate import test_prompts as captioned_prompts
from tests.conftest import half_captioned_sample


def half_captioned(root, counts: dict[str, int]):
    for split, n in counts.items():
        write_split_shards(
            root, split, list(range(n)), partial(half_captioned_sample, split=split, seconds=0.5, sample_rate=16_000), 4
        )
    return root


def dm(root, **kw) -> AudioTextDataModule:
    args = dict(data_dir=str(root), sample_rate=16_000, clip_seconds=0.5, batch_size=2, num_workers=0, shuffle_buffer=4)
    return AudioTextDataModule(**{**args, **kw})


def test_captioned_only_leaves_uncaptioned_clips_out_and_counts_them(tmp_path):
    root = half_captioned(tmp_path, {"train": 12, "val": 6})
    mulan = dm(root, captioned_only=True)
    mulan.setup("fit")
    val = list(mulan.loader("val"))
    assert sorted(k for b in val for k in b["key"]) == ["val-00000", "val-00002", "val-00004"]
    assert sum(int(b["filtered"]) for b in val) == 2  # a count rides on the next kept sample: val-00005 has none
    assert all(int(b["skipped"]) == 0 for b in val)
    train = [k for b in mulan.loader("train") for k in b["key"]]
    assert len(train) == 6  # the epoch is the captioned clips, from the manifest
    assert all(int(k.split("-")[1]) % 2 == 0 for k in train)
    codec = [(k, t) for b in dm(root).loader("val") for k, t in zip(b["key"], b["text"], strict=True)]
    assert len(codec) == 6 and sum(t is None for _, t in codec) == 3  # every other stage reads every clip


def test_captioned_only_without_captions_stops_at_setup(tmp_path):
    def uncaptioned(index: int) -> list[dict]:
        return half_captioned_sample(2 * index + 1, "train", 0.5, 16_000)

    write_split_shards(tmp_path, "train", list(range(4)), uncaptioned, 4)
    with pytest.raises(NoCaptionsError, match="--captions"):
        dm(tmp_path, captioned_only=True).setup("fit")
    dm(tmp_path).setup("fit")  # the codec's module does not care


def test_eval_prompts_come_from_captioned_test_clips(tmp_path, capsys):
    root = half_captioned(tmp_path, {"test": 7})
    prompts = captioned_prompts(root, 100)
    assert [p["key"] for p in prompts] == ["test-00000", "test-00002", "test-00004", "test-00006"]
    assert all(p["caption"] for p in prompts)
    assert "4 captioned test clips" in capsys.readouterr().out
    assert len(captioned_prompts(root, 2)) == 2
    none = tmp_path / "none"
    write_split_shards(none, "test", [1, 3], partial(half_captioned_sample, split="test", seconds=0.5,
                                                      sample_rate=16_000))  # fmt: skip
    with pytest.raises(NoCaptionsError, match="no captioned clip"):
        captioned_prompts(none, 4)


def test_stages_that_learn_from_text_read_captioned_clips_only():
    """The registry's `captions` stages (MuLan) set data.captioned_only in their config; eval forces it for them."""
    import yaml

    from musiclm.config import config_root
    from musiclm.stages import STAGES

    text = [s for s in STAGES.values() if s.captions]
    assert [s.name for s in text] == ["mulan"]
    for s in text:
        assert yaml.safe_load((config_root() / f"{s.name}.yaml").read_text())["data"]["captioned_only"] is True
