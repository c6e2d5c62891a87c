"""Semantic tokenizer: k-means recovers known clusters, extractors (hf on a tiny model, mulan, logmel), a Lightning
fit on tone shards, and a changed upstream model refusing to load."""

from __future__ import annotations

import lightning as L
import pytest
import torch

from musiclm.artifacts import handoff
from musiclm.data.datamodules import AudioTextDataModule
from musiclm.semantic_tokens.extractors import HFFeatures, LogMelFeatures, to_rate
from musiclm.semantic_tokens.kmeans import assign, kmeans_pp, lloyd, perplexity
from musiclm.semantic_tokens.module import SemanticTokenizer, StaleSourceError
from tests.conftest import FAMILIES


def blobs(k: int = 6, n: int = 200, dim: int = 8, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(k, dim, generator=g) * 10
    labels = torch.arange(k).repeat_interleave(n)
    return centres[labels] + torch.randn(k * n, dim, generator=g) * 0.5, labels, centres


def test_kmeans_recovers_known_clusters():
    x, labels, centres = blobs()
    c = lloyd(x, kmeans_pp(x, 6, torch.Generator().manual_seed(1)), 10)
    ids, _ = assign(x, c)
    # the clustering is the true partition up to relabelling
    for k in range(6):
        assert ids[labels == k].unique().numel() == 1
    assert ids.unique().numel() == 6
    matched = assign(centres, c)[1]
    assert matched.max() < 0.5
    assert abs(perplexity(torch.bincount(ids)) - 6) < 1e-6


def test_to_rate_resamples_time():
    f = torch.arange(10.0).reshape(1, 10, 1).repeat(1, 1, 3)
    assert to_rate(f, 16_000, 16_000, 5.0).shape == (1, 5, 3)  # area-average down
    up = to_rate(f, 16_000, 16_000, 20.0)
    assert up.shape == (1, 20, 3) and torch.all(up[0, 1:, 0] >= up[0, :-1, 0])


def test_hf_extractor_on_a_tiny_model(tmp_path):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 8), num_feat_extract_layers=2,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
    )  # fmt: skip
    Wav2Vec2Model(cfg).save_pretrained(tmp_path / "tiny")
    ext = HFFeatures(str(tmp_path / "tiny"), layer=1, sample_rate=16_000)
    assert ext.frame_rate == 800 and ext.dim == 32
    out = ext(torch.randn(2, 1600))
    assert out.shape[0] == 2 and abs(out.shape[1] - 80) <= 3 and out.shape[2] == 32  # valid convs lose edge frames
    tok = SemanticTokenizer(
        sample_rate=16_000, extractor="hf", source=str(tmp_path / "tiny"), layer=2, token_rate=25.0, num_clusters=4
    )
    assert tok.features(torch.randn(1, 16_000)).shape == (1, 25, 32)


def fit_logmel(tone_shards, root, steps: int = 12) -> tuple[SemanticTokenizer, L.Trainer]:
    dm = AudioTextDataModule(str(tone_shards), 16_000, 1.0, batch_size=6, num_workers=0, caption_mode="caption")
    tok = SemanticTokenizer(
        sample_rate=16_000,
        extractor="logmel",
        token_rate=25.0,
        num_clusters=6,
        init_frames=300,
        frames_per_step=500,
    )
    trainer = L.Trainer(
        max_steps=steps, accelerator="cpu", logger=False, enable_progress_bar=False, default_root_dir=root,
        val_check_interval=steps, check_val_every_n_epoch=None, num_sanity_val_steps=0, limit_val_batches=2,
    )  # fmt: skip
    trainer.fit(tok, dm)
    return tok, trainer


def test_lightning_fit_tokenizes_tones_by_timbre(tone_shards, tmp_path):
    tok, trainer = fit_logmel(tone_shards, tmp_path)
    assert bool(tok.initialized) and trainer.global_step == 12
    assert 1.5 < trainer.callback_metrics["val/perplexity"] <= 6
    dm = AudioTextDataModule(str(tone_shards), 16_000, 1.0, batch_size=9, num_workers=0)
    batch = next(iter(dm.loader("val")))
    ids = tok.tokenize(batch["audio"])
    assert ids.shape == (9, 25) and ids.max() < 6
    families = [m["attributes"]["instrument_family"] for m in batch["meta"]]
    mode = {f: torch.mode(ids[[i for i, x in enumerate(families) if x == f]].flatten()).values.item() for f in FAMILIES}
    assert len(set(mode.values())) >= 2  # different timbres land in different clusters
    path = tmp_path / "tok.ckpt"
    trainer.save_checkpoint(path)
    again = SemanticTokenizer.load_from_checkpoint(path, weights_only=False)
    assert torch.equal(again.tokenize(batch["audio"]), ids)


def tiny_mulan():
    from musiclm.mulan.module import MuLanModule

    return MuLanModule(
        sample_rate=16_000, window_seconds=1.0, n_mels=32, hop_length=320, patch_freq=16, audio_dim=32, audio_depth=1,
        audio_heads=2, text_tower="scratch", text_dim=32, text_depth=1, text_heads=2, num_quantizers=2, codebook_size=8,
    )  # fmt: skip


def test_mulan_source_change_is_refused(tmp_path):
    mulan = tiny_mulan()
    src = tmp_path / "mulan.ckpt"
    torch.save(handoff(mulan), src)
    tok = SemanticTokenizer(sample_rate=16_000, extractor="mulan", source=str(src), layer=1, num_clusters=4)
    assert tok.features(torch.randn(2, 16_000)).shape == (2, 25, 32)
    assert "mulan" not in "".join(tok.state_dict())  # the extractor's weights stay in their own checkpoint
    ckpt = tmp_path / "tok.ckpt"
    torch.save(handoff(tok), ckpt)
    SemanticTokenizer.load_from_checkpoint(ckpt, weights_only=False)
    with torch.no_grad():
        mulan.audio_proj.weight.add_(1.0)
    torch.save(handoff(mulan), src)
    with pytest.raises(StaleSourceError, match="make fit-semantic"):
        SemanticTokenizer.load_from_checkpoint(ckpt, weights_only=False)


def test_cli_builds_tokenizer_over_a_mulan_checkpoint(tmp_path):
    """`make fit-semantic` path: under LightningCLI the nested MuLan must load with its own hyperparameters."""
    from musiclm.train import build_cli

    src = tmp_path / "mulan.ckpt"
    torch.save(handoff(tiny_mulan()), src)
    extra = ["--trainer.logger=false", f"--model.source={src}", "--model.layer=1", "--data.sample_rate=16000"]
    tok = build_cli("semantic_tokens", str(tmp_path / "run"), "demo", "cpu", extra).model
    assert tok._extractor[0].mulan.hparams.audio_dim == 32 and "audio_dim" not in tok.hparams
    assert tok.features(torch.randn(1, 16_000)).shape == (1, 25, 32)


def test_logmel_extractor_rate():
    ext = LogMelFeatures(24_000)
    assert ext.frame_rate == 50 and ext(torch.randn(1, 24_000)).shape == (1, 51, 80)
