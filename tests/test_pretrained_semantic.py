"""Semantic tokens over a pretrained model's features (extractor `hf`): w2v-BERT 2.0, HuBERT, wav2vec2 resampled to
16 kHz inside; a tokenizer fitted on one model is refused with another; remote code (MERT) only when trusted; make's
SEMANTIC_FROM / MULAN_FROM pick the features. The role's shared checks run in tests/test_contracts.py."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from musiclm import artifacts
from musiclm.pretrained.hub import PretrainedFolderError
from musiclm.semantic_tokens.extractors import HFFeatures
from musiclm.semantic_tokens.module import SemanticTokenizer, StaleSourceError
from tests.test_pretrained_codec import ROOT, cli
from tests.tiny_hf import save_dac, save_hubert, save_w2v_bert


@pytest.mark.parametrize("save", [save_hubert, save_w2v_bert], ids=["hubert", "w2v-bert"])
def test_features_are_the_models_at_16_khz_whatever_the_input_rate(save, tmp_path):
    from musiclm.audio import resample_batch

    ext = HFFeatures(str(save(tmp_path / "m")), layer=1, sample_rate=24_000)
    assert ext.model_rate == 16_000 and ext.frame_rate == 50
    x = 0.1 * torch.randn(1, 24_000, generator=torch.Generator().manual_seed(0))
    same = HFFeatures(str(tmp_path / "m"), layer=1, sample_rate=16_000)
    torch.testing.assert_close(ext(x), same(resample_batch(x, 24_000, 16_000)))


def test_a_tokenizer_fitted_on_one_model_is_refused_with_another(tmp_path):
    folder = save_hubert(tmp_path / "hubert")
    tok = SemanticTokenizer(sample_rate=16_000, extractor="hf", source=str(folder), layer=1, num_clusters=4)
    ckpt = artifacts.handoff(tok)
    shutil.rmtree(folder)
    save_hubert(folder, seed=1)  # another model in the same place
    with pytest.raises(StaleSourceError, match="make fit-semantic"):
        artifacts.build_from_handoff(ckpt)


def mert_like(folder):
    """A folder that asks to run its own code, as MERT's does (config.json `auto_map`)."""
    save_hubert(folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(model_type="mert_model", auto_map={"AutoModel": "modeling_MERT.MERTModel"})
    (folder / "config.json").write_text(json.dumps(config))
    return folder


def test_remote_code_needs_trust_in_one_line(tmp_path, tone_shards):
    with pytest.raises(PretrainedFolderError, match="trust_remote_code=true"):
        HFFeatures(str(mert_like(tmp_path / "mert")), layer=1, sample_rate=16_000)
    with pytest.raises(PretrainedFolderError, match="supported: wav2vec2-bert, hubert, wav2vec2"):
        HFFeatures(str(save_dac(tmp_path / "dac")), layer=1, sample_rate=16_000)
    proc = cli("train", "semantic_tokens", "--run", "r", "--profile", "tiny", "--model.extractor=hf",
               f"--model.source={tmp_path / 'mert'}", f"--data.data_dir={tone_shards}", root=tmp_path)  # fmt: skip
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert last.startswith("musiclm train semantic_tokens:") and "mert_model" in last, proc.stderr[-2000:]


def dry_run(tmp_path, *make_vars: str) -> str:
    cmd = ["make", "-n", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path), "-o", str(ROOT / ".venv/.installed"),
           "-o", "runs/demo/mulan/model.ckpt", "fit-semantic", *make_vars]  # fmt: skip
    return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout


def test_make_picks_the_semantic_features(tmp_path):
    folder = save_hubert(tmp_path / "hubert")
    assert "--model.source=runs/demo/mulan/model.ckpt" in dry_run(tmp_path)
    assert "--model.extractor=logmel" in dry_run(tmp_path, f"MULAN_FROM={folder}")  # CLAP has no frame features
    out = dry_run(tmp_path, f"MULAN_FROM={folder}", f"SEMANTIC_FROM={folder}", "SEMANTIC_ARGS=--model.layer=2")
    assert f"--model.extractor=hf --model.source={folder} --model.layer=2" in out
