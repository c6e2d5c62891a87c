"""Several datasets as one (`DATASET=synth+mine`): weighted training streams, every val clip once, token shards of
several audio datasets weighted by the ranges their manifest records, and the Makefile's paths for a `+` name."""

from __future__ import annotations

import subprocess
from collections import Counter
from functools import partial
from pathlib import Path

import pytest

from musiclm.data.datamodules import AudioTextDataModule, TokenDataModule
from musiclm.data.shards import write_split_shards
from musiclm.paths import dataset_dirs
from tests.conftest import make_tone_shards, tone_sample

ROOT = Path(__file__).resolve().parents[1]


def dm(data_dir, **kw) -> AudioTextDataModule:
    args = dict(sample_rate=16_000, clip_seconds=0.3, batch_size=8, num_workers=0, shuffle_buffer=4)
    return AudioTextDataModule(data_dir=data_dir, **{**args, **kw})


@pytest.fixture(scope="module")
def two_datasets(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("mix")
    make_tone_shards(root / "a", {"train": 8, "val": 3}, seconds=0.3, per_shard=4)
    for split, n in {"train": 24, "val": 5}.items():  # b's keys start with "b-" so a batch tells the two apart
        write_split_shards(root / "b", split, list(range(n)),
                           partial(lambda i, s: [{**tone_sample(i, s, 0.3, 16_000)[0], "__key__": f"b-{s}-{i:05d}"}],
                                   s=split), 4)  # fmt: skip
    return root


def origin(keys: list[str]) -> Counter:
    return Counter("b" if k.startswith("b-") else "a" for k in keys)


def test_plus_name_and_list_are_the_same_datasets(tmp_path):
    assert dataset_dirs("data/shards/synth+mine") == [Path("data/shards/synth"), Path("data/shards/mine")]
    assert dataset_dirs(["x", "y/z"]) == [Path("x"), Path("y/z")]
    assert dataset_dirs("data/sh+ards/synth") == [Path("data/sh+ards/synth")]  # only the last component


def test_weighted_training_stream_and_every_val_clip_once(two_datasets):
    plus = str(two_datasets / "a+b")
    union = [k for b in dm(plus, train_epoch_clips=2000).loader("train") for k in b["key"]]
    assert len(union) == 2000 and 0.2 < origin(union)["a"] / 2000 < 0.3  # by clip count: 8 of 32
    weighted = dm([str(two_datasets / "a"), str(two_datasets / "b")], weights=[3.0, 1.0], train_epoch_clips=2000)
    keys = [k for b in weighted.loader("train") for k in b["key"]]
    assert 0.7 < origin(keys)["a"] / 2000 < 0.8
    assert len([k for b in dm(plus).loader("train") for k in b["key"]]) == 32  # an epoch: both train splits
    val = [k for b in dm(plus).loader("val") for k in b["key"]]
    assert sorted(val) == sorted(set(val)) and origin(val) == Counter(a=3, b=5)
    with pytest.raises(ValueError, match="3 entries for 2 datasets"):
        dm(plus, weights=[1, 1, 1]).loader("train")


def test_token_shards_of_two_datasets_keep_their_weights(tmp_path):
    """`musiclm tokenize --dataset a+b` writes one folder; its manifest's `datasets` ranges weight the LM stages."""
    make = partial(tone_sample, split="train", seconds=0.3, sample_rate=16_000)
    ranges = [{"audio_dir": "a/train", "first": 0, "count": 1}, {"audio_dir": "b/train", "first": 1, "count": 3}]
    write_split_shards(tmp_path, "train", list(range(16)), make, 4, extra_manifest={"datasets": ranges})
    tokens = TokenDataModule(str(tmp_path), weights=[1.0, 1.0])
    groups, weights, clips = tokens.train_groups()
    assert [len(g) for g in groups] == [1, 3] and weights == [1.0, 1.0] and clips == 16
    assert TokenDataModule(str(tmp_path)).train_groups()[1] == [4.0, 12.0]


def test_makefile_reads_every_dataset_of_a_plus_name(tmp_path):
    """`make -n` for DATASET=synth+mine: both datasets' manifests are prerequisites, synth is rendered, mine is
    expected ingested, and the stages get the `+` path and the weights."""
    dry = subprocess.run(
        ["make", "-n", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path), "-o", str(ROOT / ".venv/.installed"),
         "train-codec", "DATASET=synth+mine", "DATASET_WEIGHTS=1,3"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "data synth data/shards/synth " in dry.stdout
    assert "no shards for DATASET=mine" in dry.stdout
    (tmp_path / "data/shards/synth/train").mkdir(parents=True)
    (tmp_path / "data/shards/mine/train").mkdir(parents=True)
    for d in ("synth", "mine"):
        (tmp_path / f"data/shards/{d}/train/manifest.json").write_text("{}")
    dry = subprocess.run(
        ["make", "-n", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path), "-o", str(ROOT / ".venv/.installed"),
         "train-codec", "DATASET=synth+mine", "DATASET_WEIGHTS=1,3"],
        capture_output=True, text=True,
    )  # fmt: skip
    assert "--data.weights=[1,3]" in dry.stdout and "--data.data_dir=data/shards/synth+mine" in dry.stdout
