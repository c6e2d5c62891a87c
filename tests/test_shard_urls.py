"""Data modules read shard URLs as well as folders: `pipe:` commands, `file://` and fsspec URLs, counted from the
split manifests (no listing), exactly once for val and for a full epoch of train."""

from __future__ import annotations

from pathlib import Path

import pytest

from musiclm.data.datamodules import AudioTextDataModule
from tests.conftest import make_tone_shards


@pytest.fixture(scope="module")
def shards(tmp_path_factory) -> Path:
    return make_tone_shards(tmp_path_factory.mktemp("urls"), {"train": 10, "val": 7}, seconds=0.3, per_shard=3)


def keys(data_dir: str, split: str, **kw) -> list[str]:
    dm = AudioTextDataModule(data_dir, sample_rate=16_000, clip_seconds=0.3, batch_size=4, num_workers=0, **kw)
    return [k for b in dm.loader(split) for k in b["key"]]


def test_pipe_url_reads_every_val_clip_once_and_a_train_epoch(shards):
    url = f"pipe:cat {shards}/{{path}}"
    assert sorted(keys(url, "val")) == [f"val-{i:05d}" for i in range(7)]
    assert len(keys(url, "train")) == 10  # the epoch's length comes from the manifest read through the command
    with pytest.raises(ValueError, match="needs \\{path\\}"):
        keys(f"pipe:cat {shards}/val/shard-000000.tar", "val")


def test_file_url_and_a_list_of_urls(shards):
    assert sorted(keys(f"file://{shards}", "val")) == [f"val-{i:05d}" for i in range(7)]
    both = keys([f"file://{shards}", f"pipe:cat {shards}/{{path}}"], "val")
    assert len(both) == 14 and len(set(both)) == 7


def test_fsspec_url_through_webdataset(shards):
    """`memory://` stands in for s3/gcs: the manifest and the shards are read through fsspec."""
    import fsspec

    fs = fsspec.filesystem("memory")
    for f in sorted((shards / "val").iterdir()):
        fs.pipe(f"/musiclm-test/val/{f.name}", f.read_bytes())
    assert sorted(keys("memory://musiclm-test", "val")) == [f"val-{i:05d}" for i in range(7)]
    with pytest.raises(FileNotFoundError, match="memory://musiclm-test/train"):  # no train split uploaded
        keys("memory://musiclm-test", "train", train_epoch_clips=4)
