"""Every implementation of a role (musiclm.contracts) through the same checks: shapes, rates and ranges, determinism
in eval mode, decode(encode(x)) length, and a hand-off save/load round trip that rebuilds the class it records.
A new implementation joins by adding one builder to its role's list."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from musiclm import artifacts
from musiclm.codec.module import CodecModule
from musiclm.contracts import AudioTokenizer, ConditionEncoder, SemanticTokenizer, TokenBackbone
from musiclm.lm.backbones import BACKBONES, build_backbone
from musiclm.mulan.module import MuLanModule
from musiclm.semantic_tokens.module import SemanticTokenizer as KMeansTokenizer
from tests.test_codec import TINY as TINY_CODEC
from tests.test_mulan import TINY as TINY_MULAN
from tests.tiny_hf import save_clap, save_dac, save_encodec, save_hubert, save_w2v_bert

SR = 16_000


def conv_codec() -> CodecModule:
    return CodecModule(**TINY_CODEC)


def spectral_codec() -> CodecModule:
    return CodecModule(**{**TINY_CODEC, "architecture": "spectral", "window_frames": 2})


def encodec_adapter(tmp_path):
    """A pretrained EnCodec (24 kHz) read at the tests' 16 kHz: the adapter resamples both ways."""
    from musiclm.pretrained.importer import codec_adapter

    return codec_adapter(save_encodec(tmp_path / "encodec"), bandwidth=3.0, sample_rate=SR)


def dac_adapter(tmp_path):
    from musiclm.pretrained.importer import codec_adapter

    return codec_adapter(save_dac(tmp_path / "dac"), levels=3, sample_rate=SR)


def mulan() -> MuLanModule:
    m = MuLanModule(**TINY_MULAN)
    m.fit_quantizer(torch.nn.functional.normalize(torch.randn(64, m.embed_dim), dim=-1), epochs=1)
    return m


def clap_adapter(tmp_path):
    """A pretrained CLAP (48 kHz) in MuLan's role at the tests' 16 kHz, its token quantizer fitted as after import."""
    from musiclm.pretrained.importer import mulan_adapter

    m = mulan_adapter(save_clap(tmp_path / "clap"), sample_rate=SR, levels=3, codebook_size=8)
    m.fit_quantizer(torch.nn.functional.normalize(torch.randn(64, m.embed_dim), dim=-1), epochs=1)
    return m


def logmel_tokenizer() -> KMeansTokenizer:
    tok = KMeansTokenizer(sample_rate=SR, extractor="logmel", num_clusters=7)
    tok.initialized.fill_(True)
    tok.centroids.data.normal_()
    return tok


def mulan_feature_tokenizer(tmp_path) -> KMeansTokenizer:
    source = tmp_path / "mulan.ckpt"
    torch.save(artifacts.handoff(mulan().eval()), source)
    tok = KMeansTokenizer(sample_rate=SR, extractor="mulan", source=str(source), layer=1, num_clusters=5)
    tok.initialized.fill_(True)
    tok.centroids.data.normal_()
    return tok


CODECS: list[Callable] = [conv_codec, spectral_codec, encodec_adapter, dac_adapter]
ENCODERS: list[Callable] = [mulan, clap_adapter]
def hf_tokenizer(folder, rate: int = SR) -> KMeansTokenizer:
    tok = KMeansTokenizer(sample_rate=rate, extractor="hf", source=str(folder), layer=2, num_clusters=5)
    tok.initialized.fill_(True)
    tok.centroids.data.normal_()
    return tok


def hubert_tokenizer(tmp_path) -> KMeansTokenizer:
    return hf_tokenizer(save_hubert(tmp_path / "hubert"))


def w2v_bert_tokenizer(tmp_path) -> KMeansTokenizer:
    return hf_tokenizer(save_w2v_bert(tmp_path / "w2v-bert"))


SEMANTIC: list[Callable] = [logmel_tokenizer, mulan_feature_tokenizer, hubert_tokenizer, w2v_bert_tokenizer]


def build(factory: Callable, tmp_path):
    torch.manual_seed(0)
    return (factory(tmp_path) if "tmp_path" in factory.__code__.co_varnames else factory()).eval()


def waves(seconds: float = 0.55, batch: int = 2) -> torch.Tensor:
    t = torch.arange(int(seconds * SR)) / SR
    return torch.stack([0.3 * torch.sin(2 * math.pi * f * t) for f in (220.0, 330.0)][:batch])


def round_trip(module, tmp_path):
    """Save a hand-off, rebuild it from the class it records (not the stage default), in eval mode."""
    path = tmp_path / "model.ckpt"
    torch.save(artifacts.handoff(module), path)
    ckpt = torch.load(path, weights_only=True)
    assert ckpt["class_path"] == f"{type(module).__module__}.{type(module).__qualname__}"
    loaded = artifacts.build_from_handoff(ckpt)
    assert type(loaded) is type(module) and not loaded.training
    return loaded


def check_producer(p, x: torch.Tensor) -> torch.Tensor:
    ids = p.tokenize(x)
    assert ids.dtype == torch.long and ids.shape[0] == x.shape[0]
    assert ids.min() >= 0 and ids.max() < p.codebook_size
    assert torch.equal(ids, p.tokenize(x)), "tokenize must be deterministic in eval mode"
    return ids


@pytest.mark.parametrize("factory", CODECS, ids=lambda f: f.__name__)
def test_audio_tokenizer(factory, tmp_path):
    codec = build(factory, tmp_path)
    assert isinstance(codec, AudioTokenizer)
    x = waves()
    codes = check_producer(codec, x)
    frames = math.ceil(x.shape[-1] * codec.frame_rate / codec.sample_rate)
    assert codes.shape == (2, codec.num_levels, frames)
    assert torch.equal(codec.encode(x, num_levels=2), codes[:, :2])
    for levels in (1, codec.num_levels):
        y = codec.decode(codes[:, :levels])
        assert y.shape[0] == 2 and y.shape[-1] >= x.shape[-1] and torch.isfinite(y).all()
    loaded = round_trip(codec, tmp_path)
    assert torch.equal(loaded.tokenize(x), codes)


@pytest.mark.parametrize("factory", ENCODERS, ids=lambda f: f.__name__)
def test_condition_encoder(factory, tmp_path):
    enc = build(factory, tmp_path)
    assert isinstance(enc, ConditionEncoder)
    x, texts = waves(), ["a sine tone", "a square tone"]
    tokens = check_producer(enc, x)
    assert tokens.shape == (2, enc.num_levels)
    assert enc.tokens_from_text(texts).shape == (2, enc.num_levels)
    a, t = enc.embed_audio(x), enc.embed_text(texts)
    assert a.shape == t.shape and a.shape[0] == 2
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    loaded = round_trip(enc, tmp_path)
    assert torch.equal(loaded.tokenize(x), tokens) and torch.equal(
        loaded.tokens_from_text(texts), enc.tokens_from_text(texts)
    )


@pytest.mark.parametrize("factory", SEMANTIC, ids=lambda f: f.__name__)
def test_semantic_tokenizer(factory, tmp_path):
    tok = build(factory, tmp_path)
    assert isinstance(tok, SemanticTokenizer) and tok.num_levels == 1
    x = waves(1.0)
    ids = check_producer(tok, x)
    assert ids.shape == (2, round(x.shape[-1] * tok.frame_rate / tok.sample_rate))
    loaded = round_trip(tok, tmp_path)
    assert torch.equal(loaded.tokenize(x), ids)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_token_backbone(name):
    torch.manual_seed(0)
    net = build_backbone(name, vocab_size=20, head_sizes=[12, 6], dim=16, depth=2, heads=2, dropout=0.0).eval()
    assert isinstance(net, TokenBackbone)
    ids = torch.randint(1, 20, (2, 7, 1))
    logits, cache = net(ids)
    assert logits.shape == (2, 7, 18)
    step, _ = net(ids[:, -1:], cache=net(ids[:, :-1])[1])  # the cache gives the last step's logits again
    torch.testing.assert_close(step[:, -1], logits[:, -1], atol=1e-5, rtol=1e-4)
    steps, _ = net(ids[:, 3:], cache=net(ids[:, :3])[1])  # several new steps in one call: a prompt's prefill
    torch.testing.assert_close(steps, logits[:, 3:], atol=1e-5, rtol=1e-4)
    blocks = net.block_types()
    assert blocks and any(isinstance(m, blocks) for m in net.modules())
