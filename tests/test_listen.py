"""Listening while training (`lm/listen.py`): each LM stage's validation logs generated samples decoded with the
run's codec as TensorBoard audio and spectrograms, and turns itself off with one line when the codec is missing."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from musiclm import artifacts
from musiclm.config import build_stage
from musiclm.train import train
from tests.test_lm import TOY_VOCAB, write_toy_token_shards

TINY = ["--model.dim=32", "--model.depth=1", "--model.heads=2", "--trainer.max_steps=2",
        "--trainer.val_check_interval=2", "--trainer.limit_val_batches=1"]  # fmt: skip


def toy_run(tmp_path: Path, with_codec: bool) -> tuple[str, Path]:
    """A run folder (with a tiny codec hand-off that decodes the toy language's codes, when asked) and toy token
    shards whose manifest names it, as `make tokenize` writes."""
    run = str(tmp_path / "run")
    if with_codec:
        codec = build_stage("codec", "tiny")
        assert codec.num_levels >= TOY_VOCAB["acoustic_levels"]
        assert codec.codebook_size >= TOY_VOCAB["acoustic_codebook_size"]
        artifacts.atomic_torch_save(artifacts.handoff(codec), artifacts.model_path(run, "codec"))
    tokens = tmp_path / "tokens"
    write_toy_token_shards(tokens)
    for manifest in tokens.glob("*/manifest.json"):
        manifest.write_text(json.dumps({**json.loads(manifest.read_text()), "run": run}))
    return run, tokens


def logged(run: str, stage: str) -> dict[str, list[str]]:
    events = EventAccumulator(str(artifacts.stage_dir(run, stage) / "tb"), size_guidance={"audio": 0, "images": 0})
    events.Reload()
    tags = events.Tags()
    return {"audio": sorted(tags["audio"]), "images": sorted(tags["images"])}


def test_every_lm_stage_logs_generated_and_real_samples(tmp_path):
    """Coarse and fine decode with the codec; semantic goes through the run's coarse and fine LMs (trained
    first, as the demo does). `listen_examples` sets how many; each is a generated and a real clip of equal
    length, and one image of both spectrograms."""
    run, tokens = toy_run(tmp_path, with_codec=True)
    for stage in ("coarse", "fine", "semantic"):
        train(stage, run, "tiny", "cpu", [f"--data.data_dir={tokens}", "--model.listen_examples=2", *TINY])
        tags = logged(run, stage)
        assert tags["audio"] == ["listen/0_generated", "listen/0_real", "listen/1_generated", "listen/1_real"], stage
        assert "listen_spectrogram/0" in tags["images"] and "listen_spectrogram/1" in tags["images"], stage
    events = EventAccumulator(str(artifacts.stage_dir(run, "fine") / "tb"), size_guidance={"audio": 0})
    events.Reload()
    generated, real = (events.Audio(f"listen/0_{k}")[-1] for k in ("generated", "real"))
    assert generated.length_frames == real.length_frames > 0


def test_listening_is_off_with_a_notice_when_the_codec_is_missing(tmp_path, caplog):
    run, tokens = toy_run(tmp_path, with_codec=False)
    with caplog.at_level(logging.INFO):
        train("coarse", run, "tiny", "cpu", [f"--data.data_dir={tokens}", *TINY])
    notices = [r.getMessage() for r in caplog.records if "listening samples off" in r.getMessage()]
    assert len(notices) == 1 and "make train-codec" in notices[0]
    assert logged(run, "coarse")["audio"] == []


def test_listen_examples_zero_turns_it_off(tmp_path):
    run, tokens = toy_run(tmp_path, with_codec=True)
    train("fine", run, "tiny", "cpu", [f"--data.data_dir={tokens}", "--model.listen_examples=0", *TINY])
    assert logged(run, "fine")["audio"] == []
