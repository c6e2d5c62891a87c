"""AudioTextDataModule against the known webdataset traps: exactly-once eval, few shards, epoch length, bad samples."""

from __future__ import annotations

from collections import Counter
from functools import partial

import pytest
import torch

from musiclm.data.datamodules import AudioTextDataModule, ShardDataModule, TokenDataModule
from musiclm.data.shards import write_split_shards
from tests.conftest import make_tone_shards, tone_sample


def keys_of(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def dm(root, **kw) -> AudioTextDataModule:
    args = dict(data_dir=str(root), sample_rate=16_000, clip_seconds=0.5, batch_size=4, num_workers=2, shuffle_buffer=8)
    return AudioTextDataModule(**{**args, **kw})


@pytest.mark.parametrize("num_workers", [0, 2])
def test_val_seen_exactly_once(tone_shards, num_workers):
    loader = dm(tone_shards, num_workers=num_workers).loader("val")
    for _ in range(2):  # two epochs, same answer
        keys = keys_of(loader)
        assert sorted(keys) == [f"val-{i:05d}" for i in range(9)]


def test_val_exactly_once_across_ranks_and_fewer_shards_than_workers(tmp_path):
    root = make_tone_shards(tmp_path, {"val": 5}, seconds=0.3, per_shard=8)  # a single shard, 2 ranks x 2 workers
    module = dm(root, clip_seconds=0.3)
    seen = Counter()
    for rank in range(2):
        loader = torch.utils.data.DataLoader(
            module.dataset("val", rank, 2), batch_size=2, num_workers=2, collate_fn=module.loader("val").collate_fn
        )
        seen.update(keys_of(loader))
    assert seen == Counter({f"val-{i:05d}": 1 for i in range(5)})


def test_val_batches_are_centre_crops_with_captions(tone_shards):
    batch = next(iter(dm(tone_shards, num_workers=0).loader("val")))
    assert batch["audio"].shape == (4, 8000) and batch["audio"].dtype == torch.float32
    assert batch["text"][0] == batch["meta"][0]["caption"]
    again = next(iter(dm(tone_shards, num_workers=0).loader("val")))
    assert torch.equal(batch["audio"], again["audio"])


def test_train_epoch_length_and_random_crops(tone_shards):
    module = dm(tone_shards, train_epoch_clips=40)
    keys = keys_of(module.loader("train"))
    assert len(keys) == 40  # 2 workers x 20, from only 6 train shards resampled with replacement
    assert len(set(keys)) > 10
    single = dm(tone_shards, num_workers=0, train_epoch_clips=12)
    a = torch.cat([b["audio"] for b in single.loader("train")])
    assert a.shape == (12, 8000)
    texts = {t for b in dm(tone_shards, num_workers=0, caption_mode="random").loader("train") for t in b["text"]}
    assert any(t.startswith("a ") for t in texts) and any("," in t for t in texts)  # captions and tag lists


def test_train_stream_is_reproducible_new_each_epoch_and_after_a_resume(tone_shards):
    """Same seed -> same samples and crops; the next epoch and a resumed run (salted with its step) draw new ones."""

    loader = dm(tone_shards, train_epoch_clips=16).loader("train")
    first, second = keys_of(loader), keys_of(loader)
    assert first == keys_of(dm(tone_shards, train_epoch_clips=16).loader("train"))  # reproducible
    assert first != second  # a new epoch is a new draw, although the workers are kept

    class Resumed:
        global_step, global_rank, world_size = 120, 0, 1

    resumed = dm(tone_shards, train_epoch_clips=16)
    resumed.trainer = Resumed()
    assert keys_of(resumed.loader("train")) != first


def broken_or_tone(index: int) -> list[dict]:
    sample = tone_sample(index, "train", 0.5, 16_000)
    if index % 3 == 0:
        sample[0]["flac"] = b"not audio at all"
    return sample


def test_corrupt_samples_are_skipped_and_counted(tmp_path):
    write_split_shards(tmp_path, "val", list(range(9)), partial(broken_or_tone), items_per_shard=3)
    batches = list(dm(tmp_path, num_workers=0, batch_size=2).loader("val"))
    assert sum(len(b["key"]) for b in batches) == 6
    assert sum(int(b["skipped"]) for b in batches) == 3


def test_missing_shards_name_the_make_target(tmp_path):
    with pytest.raises(FileNotFoundError, match="make data"):
        dm(tmp_path).loader("train")


def test_from_hparams_drops_cli_bookkeeping_and_applies_overrides(tone_shards):
    """A hand-off's stored `datamodule_hyper_parameters` rebuild the module; LightningCLI's extra keys are dropped."""
    stored = {**dict(dm(tone_shards).hparams), "_instantiator": "lightning.pytorch.cli.instantiate_module"}
    rebuilt = AudioTextDataModule.from_hparams(stored, batch_size=2)
    assert isinstance(rebuilt, ShardDataModule) and dict(rebuilt.hparams) == {
        **dict(dm(tone_shards).hparams),
        "batch_size": 2,
    }
    stored = {
        "data_dir": "nowhere", "crop_seconds": 2.0, "semantic_rate": 25.0, "acoustic_rate": 50.0, "_class_path": "x"
    }
    tokens = TokenDataModule.from_hparams(stored)
    assert tokens.hparams.crop_seconds == 2.0 and tokens.collate_fn is not rebuilt.collate_fn
    with pytest.raises(FileNotFoundError, match="make tokenize"):
        tokens.loader("val")
