"""Pretrained CLAP in MuLan's role (musiclm.pretrained.clap): `musiclm import mulan` with no network, then
`musiclm mulan fit-quantizer` as for a trained MuLan, then the retrieval and zero-shot figures eval reports.
The role's shared checks run in tests/test_contracts.py (clap_adapter)."""

from __future__ import annotations

import shutil

import pytest
import torch

from musiclm import artifacts
from musiclm.evaluate import validate_stage
from musiclm.mulan.fit_quantizer import fit_checkpoint
from musiclm.mulan.module import QuantizerNotFittedError
from musiclm.pretrained.importer import mulan_adapter
from tests.test_pretrained_codec import cli, no_network
from tests.tiny_hf import save_clap, save_dac


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory):
    return save_clap(tmp_path_factory.mktemp("clap") / "clap")


def test_clap_adapter_embeds_as_the_model_does(clap_folder):
    from transformers import ClapProcessor

    from musiclm.pretrained.hub import load_pretrained

    adapter = mulan_adapter(clap_folder, sample_rate=48_000)
    model = load_pretrained(clap_folder)
    x = 0.1 * torch.randn(2, 48_000, generator=torch.Generator().manual_seed(0))  # shorter than the 2-s window
    proc = ClapProcessor(feature_extractor=adapter.features, tokenizer=adapter.tokenizer)
    want = model.get_audio_features(**proc.feature_extractor(list(x.numpy()), sampling_rate=48_000,
                                                              return_tensors="pt")).pooler_output  # fmt: skip
    torch.testing.assert_close(adapter.embed_audio(x), torch.nn.functional.normalize(want, dim=-1))
    longer = 0.1 * torch.randn(1, 5 * 48_000, generator=torch.Generator().manual_seed(1))
    assert adapter.windows(longer, 48_000).shape[1] == 4  # 2-s windows 1 s apart, the last flush with the end
    torch.testing.assert_close(adapter.embed_audio(longer).norm(dim=-1), torch.ones(1))
    with pytest.raises(QuantizerNotFittedError):
        adapter.tokenize(x)


def test_import_fit_quantizer_and_eval_figures(clap_folder, tone_shards, tmp_path):
    folder = shutil.copytree(clap_folder, tmp_path / "clap")
    proc = cli("import", "mulan", "--from", str(folder), "--run", "r", "--data-dir", str(tone_shards),
               "--sample-rate", "16000", "--levels", "2", "--codebook-size", "4", root=tmp_path,
               sandbox=no_network())  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    shutil.rmtree(folder)  # the hand-off carries model, feature extractor and tokenizer
    run = str(tmp_path / "runs" / "r")
    err = fit_checkpoint(run, epochs=2)  # `musiclm mulan fit-quantizer --run r`, on the import's recorded data
    assert 0 <= err < 1
    mulan = artifacts.load_model(run, "mulan")
    assert type(mulan).__name__ == "ClapEncoder" and bool(mulan.quantizer_fitted)
    x = 0.1 * torch.randn(3, 16_000, generator=torch.Generator().manual_seed(2))
    ids = mulan.tokenize(x)
    assert ids.shape == (3, 2) and 0 <= int(ids.min()) and int(ids.max()) < 4
    assert mulan.tokens_from_text(["a sine tone"]).shape == (1, 2)
    metrics = validate_stage(run, "mulan", data_dir=str(tone_shards))
    assert 0 <= metrics["val/t2a_recall@10"] <= 1
    assert 0 < metrics["val/zero_shot/instrument_family_chance"] < 1  # tone clips: sine, square, noise
    assert "val/zero_shot/instrument_family_acc" in metrics


def test_a_codec_folder_is_refused_for_mulan_in_one_line(tmp_path):
    proc = cli("import", "mulan", "--from", str(save_dac(tmp_path / "dac")), "--run", "r", root=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1 and "'dac' is not supported" in lines[0] and "clap" in lines[0]
