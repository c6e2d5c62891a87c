"""The stage registry and the hand-off contract: the Makefile and the chain agree with the registry, hand-offs
rebuild the class they record (and only classes we trust), LightningCLI's subclass mode swaps an implementation,
and LM stages work at any pair of token rates."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

from musiclm import artifacts
from musiclm.data.datamodules import TokenDecoder
from musiclm.data.tokens import ARRAYS, OPTIONAL_ARRAYS, RANKS, TOKEN_STAGES
from musiclm.lm.module import CoarseStage, FineStage, SemanticStage
from musiclm.pipeline import STAGES as GENERATE_STAGES
from musiclm.stages import CHAIN_STAGES, JUDGE_STAGES, LM_STAGES, OPTIONAL_STAGES, STAGES, TOKEN_STREAMS
from musiclm.train import train
from tests.test_lm import COARSE, SEMANTIC, SMALL, SR, TS, toy_tokens, write_toy_token_shards

MAKEFILE = (Path(__file__).resolve().parents[1] / "Makefile").read_text()


class WiderSemantic(SemanticStage):
    """A user's own implementation of the semantic stage, outside the package."""

    def __init__(self, *args, extra_width: int = 0, **kwargs):
        super().__init__(*args, **kwargs)
        self.save_hyperparameters()


def test_makefile_and_chain_follow_the_registry():
    ckpts = re.search(r"STAGE_CKPTS := \$\(foreach s,([\w ]+),", MAKEFILE).group(1).split()
    assert ckpts == list(CHAIN_STAGES)
    judges = re.search(r"JUDGE_CKPTS := \$\(foreach s,([\w ]+),", MAKEFILE).group(1).split()
    assert judges == list(JUDGE_STAGES) and set(CHAIN_STAGES) | set(JUDGE_STAGES) | set(OPTIONAL_STAGES) == set(STAGES)
    eval_rule = re.search(r"^reports/\$\(RUN\)/eval.json: (.*)\|", MAKEFILE, re.M).group(1)
    assert "$(STAGE_CKPTS)" in eval_rule and "$(JUDGE_CKPTS)" in eval_rule  # eval judges the chain
    for stage in STAGES.values():
        assert re.search(rf"^{stage.make_target}:", MAKEFILE, re.M), stage.make_target
        assert f"$(R)/{stage.name}/model.ckpt:" in MAKEFILE
    tokenize_rule = re.search(r"^\$\(TOKENS\)/train/manifest.json: (.*)\|", MAKEFILE, re.M).group(1)
    assert sorted(re.findall(r"\$\(R\)/(\w+)/model.ckpt", tokenize_rule)) == sorted(TOKEN_STREAMS)
    assert set(TOKEN_STAGES) == set(TOKEN_STREAMS) and set(ARRAYS) | set(OPTIONAL_ARRAYS) == set(RANKS)
    assert set(GENERATE_STAGES) == set(CHAIN_STAGES) - {"semantic_tokens"} and set(LM_STAGES) <= set(GENERATE_STAGES)


def semantic(cls=SemanticStage, **kw) -> SemanticStage:
    torch.manual_seed(0)
    return cls(**SEMANTIC, window_seconds=TS / SR, **SMALL, **kw).eval()


def save(module, run: Path, stage: str, **edits) -> None:
    ckpt = {**artifacts.handoff(module), **edits}
    artifacts.model_path(run, stage).parent.mkdir(parents=True, exist_ok=True)
    torch.save(ckpt, artifacts.model_path(run, stage))


def test_handoff_builds_the_class_it_records(tmp_path):
    artifacts.register_class(WiderSemantic)
    module = semantic(WiderSemantic, extra_width=3)
    save(module, tmp_path / "run", "semantic")
    loaded = artifacts.load_model(tmp_path / "run", "semantic")
    assert type(loaded) is WiderSemantic and loaded.hparams.extra_width == 3
    m = torch.stack([b["mulan"] for b in toy_tokens(2, 1)])
    assert torch.equal(loaded.generate(m, 6, temperature=0), module.generate(m, 6, temperature=0))


def test_untrusted_class_paths_are_refused_without_importing(tmp_path):
    save(semantic(), tmp_path / "run", "semantic", class_path="evil_plugin_module.Payload")
    with pytest.raises(ValueError, match="neither in the musiclm package nor registered"):
        artifacts.load_model(tmp_path / "run", "semantic")
    assert "evil_plugin_module" not in sys.modules
    save(semantic(), tmp_path / "run2", "semantic", class_path="musiclm.audio.AudioError")
    with pytest.raises(ValueError, match="not a LightningModule"):
        artifacts.load_model(tmp_path / "run2", "semantic")


def test_old_handoffs_still_load(tmp_path):
    """Written before hand-offs named their class and before windows were in seconds: `window_frames`, the
    `codec_*` names and no rates (then 25 / 50 Hz)."""
    module = semantic()
    old = artifacts.handoff(module)
    del old["class_path"]
    hp = old["hyper_parameters"]
    hp["window_frames"] = round(hp.pop("window_seconds") * hp.pop("semantic_rate"))
    path = artifacts.model_path(tmp_path / "run", "semantic")
    path.parent.mkdir(parents=True)
    torch.save(old, path)
    loaded = artifacts.load_model(tmp_path / "run", "semantic")
    assert type(loaded) is SemanticStage and loaded.window_frames == TS and loaded.hparams.semantic_rate == 25.0
    fine = FineStage.upgrade_hparams({"codec_codebook_size": 16, "codec_levels": 4, "window_frames": 150})
    assert fine == {"acoustic_codebook_size": 16, "acoustic_levels": 4, "acoustic_rate": 50.0, "window_seconds": 3.0}


def test_subclass_mode_swaps_the_implementation(tmp_path):
    """`--model=CLASS` (LightningCLI's class_path) picks the implementation; its hand-off records it."""
    artifacts.register_class(WiderSemantic)
    write_toy_token_shards(tmp_path / "tokens")
    args = [f"--data.data_dir={tmp_path / 'tokens'}", "--data.crop_seconds=null", "--data.batch_size=8",
            f"--model={WiderSemantic.__module__}.WiderSemantic", "--model.extra_width=5", "--model.dim=32",
            "--model.depth=1", "--model.heads=2", "--trainer.max_steps=2", "--trainer.limit_val_batches=0"]  # fmt: skip
    path = train("semantic", str(tmp_path / "run"), "demo", "cpu", args)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["class_path"].endswith("test_stages.WiderSemantic")
    assert not any(k.startswith("_") for k in ckpt["hyper_parameters"])
    loaded = artifacts.load_model(tmp_path / "run", "semantic")
    assert type(loaded) is WiderSemantic and loaded.hparams.extra_width == 5 and loaded.hparams.dim == 32


@pytest.mark.parametrize("acoustic_rate", [75.0, 44_100 / 512])  # EnCodec / DAC 24 kHz, DAC 44.1 kHz
def test_coarse_stage_at_rates_that_are_not_whole_multiples(acoustic_rate):
    torch.manual_seed(0)
    ratio = acoustic_rate / SR
    module = CoarseStage(**{**COARSE, "acoustic_rate": acoustic_rate}, coarse_levels=2, window_seconds=0.4, **SMALL)
    sem_frames = 30
    batch = {"mulan": torch.randint(0, 8, (2, 4)), "semantic": torch.randint(0, 16, (2, sem_frames)),
             "acoustic": torch.randint(0, 16, (2, 4, int(sem_frames * ratio)))}  # fmt: skip
    module.train()
    for _ in range(5):
        crop = module.crop(batch)
        assert crop["semantic"].shape[-1] == round(0.4 * SR)
        assert abs(crop["acoustic"].shape[-1] - crop["semantic"].shape[-1] * ratio) <= 1
    ce, _, mask, _ = module.forward_loss(batch)
    assert torch.isfinite(ce[mask.expand_as(ce)]).all()
    codes = module.eval().generate(batch["mulan"], batch["semantic"], seed=0)
    assert codes.shape == (2, 2, round(sem_frames * ratio))
    decode = TokenDecoder(crop_seconds=0.4, semantic_rate=SR, acoustic_rate=acoustic_rate, train=True, seed=0)
    sample = write_free_sample(batch, ratio)
    x = decode(sample)
    assert x["semantic"].shape == (10,) and abs(x["acoustic"].shape[-1] - 10 * ratio) <= 1
    assert abs(int(x["acoustic"][0, 0]) - int(x["semantic"][0])) <= 1  # both streams start at the same instant


def write_free_sample(batch: dict, ratio: float) -> dict:
    """A raw token-shard sample whose acoustic frames carry the index of the semantic frame they fall in."""
    import json

    from musiclm.data.tokens import token_sample

    sem = torch.arange(batch["semantic"].shape[-1])
    ac = (torch.arange(batch["acoustic"].shape[-1]) / ratio).floor().long().expand(4, -1)
    raw = token_sample("k", {"mulan": batch["mulan"][0], "semantic": sem, "acoustic": ac}, {"caption": "c"})
    return {k: (json.dumps(v).encode() if k == "json" else v) for k, v in raw.items()}
