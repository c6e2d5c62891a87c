"""The stage runner: config layering, resume from last.ckpt, the model.ckpt hand-off, missing-artifact errors."""

from __future__ import annotations

import pytest
import torch

from musiclm import artifacts
from musiclm.train import config_layers, train
from tests.conftest import make_tone_shards

TINY_MULAN = [
    "--model.audio_dim=32", "--model.audio_depth=1", "--model.audio_heads=2", "--model.n_mels=32",
    "--model.patch_freq=16", "--model.hop_length=320", "--model.text_tower=scratch", "--model.text_dim=32",
    "--model.text_depth=1",
    "--model.text_heads=2", "--model.num_quantizers=2", "--model.codebook_size=8", "--model.warmup_steps=1",
    "--data.sample_rate=16000", "--data.clip_seconds=1.0", "--data.batch_size=4", "--data.num_workers=0",
    "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1", "--trainer.log_every_n_steps=1",
    "--trainer.enable_progress_bar=false", "--trainer.max_time=null",
]  # fmt: skip


def test_layers_in_order_and_missing_profile_is_an_error(tmp_path):
    layers = config_layers("mulan", "demo", "cpu")
    assert [p.parent.name for p in layers] == ["configs", "trainer", "demo"]
    assert config_layers("mulan", "paper", "cpu")[-1].name == "cpu.yaml"
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        config_layers("mulan", "nonexistent", "cpu")


def test_train_exports_resumes_and_hands_off(tone_shards, tmp_path):
    run = str(tmp_path / "run")
    args = TINY_MULAN + [f"--data.data_dir={tone_shards}"]
    path = train("mulan", run, "demo", "cpu", args + ["--trainer.max_steps=3"])
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # the hand-off is plain tensors and dicts
    assert ckpt["global_step"] == 3 and ckpt["hyper_parameters"]["audio_dim"] == 32
    assert ckpt["datamodule_hyper_parameters"]["data_dir"] == str(tone_shards)
    assert not list(path.parent.glob("*.tmp"))
    last = path.parent / "checkpoints" / "last.ckpt"
    assert torch.load(last, map_location="cpu", weights_only=False)["global_step"] == 3
    # re-running with a larger budget continues from last.ckpt instead of starting over
    path = train("mulan", run, "demo", "cpu", args + ["--trainer.max_steps=5"])
    assert torch.load(path, map_location="cpu", weights_only=True)["global_step"] == 5
    module = artifacts.load_model(run, "mulan")
    assert not module.training and module.hparams.audio_dim == 32
    assert (path.parent / "tb").is_dir()


def test_changed_inputs_start_fresh_and_keep_the_old_checkpoints(tone_shards, tmp_path):
    """make rebuilds a stage when its inputs changed; resuming last.ckpt then would mix old and new training data."""
    run = str(tmp_path / "run")
    train("mulan", run, "demo", "cpu", TINY_MULAN + ["--trainer.max_steps=3", f"--data.data_dir={tone_shards}"])
    other = make_tone_shards(tmp_path / "other", {"train": 8, "val": 4}, seconds=1.0)
    path = train("mulan", run, "demo", "cpu", TINY_MULAN + ["--trainer.max_steps=2", f"--data.data_dir={other}"])
    assert torch.load(path, map_location="cpu", weights_only=True)["global_step"] == 2  # a resume would stop at 3
    [stale] = path.parent.glob("checkpoints.stale-*")
    assert (stale / "last.ckpt").is_file()


def test_missing_artifact_names_the_make_target(tmp_path):
    with pytest.raises(artifacts.MissingArtifactError, match="make train-codec RUN=nope"):
        artifacts.require_model(tmp_path / "nope", "codec")
