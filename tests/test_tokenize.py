"""Token shards: schema round trip, crops aligned across rates, tokenize with real (tiny) stage modules, resume,
and stale tokens refused after an upstream checkpoint changed."""

from __future__ import annotations

import json

import pytest
import torch

from musiclm.artifacts import handoff, model_path
from musiclm.data.datamodules import TokenDataModule, TokenDecoder
from musiclm.data.shards import iter_tar_samples, list_shards, write_split_shards
from musiclm.data.tokens import (
    StaleTokensError,
    check_token_freshness,
    collate_tokens,
    decode_token_sample,
    token_sample,
)
from musiclm.tokenize import tokenize


def test_token_sample_round_trip(tmp_path):
    mulan, sem, ac = torch.tensor([1, 2, 3]), torch.arange(50) % 7, torch.randint(0, 256, (4, 100))
    ac[3, 5] = -1  # a dropped level must survive the int16 trip
    write_split_shards(
        tmp_path,
        "train",
        [0],
        lambda i: [token_sample("k0", {"mulan": mulan, "semantic": sem, "acoustic": ac}, {"caption": "x"})],
    )
    raw = next(iter_tar_samples(list_shards(tmp_path / "train")[0]))
    x = decode_token_sample(raw)
    assert torch.equal(x["mulan"], mulan) and torch.equal(x["semantic"], sem) and torch.equal(x["acoustic"], ac)
    assert x["json"]["caption"] == "x"
    with pytest.raises(ValueError):
        token_sample("bad", {"mulan": mulan, "semantic": sem, "acoustic": ac + 40_000}, {})
    with pytest.raises(ValueError, match="acoustic"):
        token_sample("missing", {"mulan": mulan, "semantic": sem}, {})


def test_crops_are_aligned_across_rates():
    frames = torch.arange(100)
    streams = {"mulan": torch.zeros(4), "semantic": frames, "acoustic": torch.stack([frames.repeat_interleave(2)] * 3)}
    sample = token_sample("k", streams, {"caption": "c"})
    sample = {k: (json.dumps(v).encode() if k == "json" else v) for k, v in sample.items()}
    decode = TokenDecoder(crop_seconds=1.0, semantic_rate=25.0, acoustic_rate=50.0, train=True, seed=0)
    starts = set()
    for _ in range(20):
        x = decode(sample)
        assert x["semantic"].shape == (25,) and x["acoustic"].shape == (3, 50)
        assert torch.equal(x["acoustic"][:, ::2], x["semantic"].expand(3, -1))  # same instants in both streams
        starts.add(int(x["semantic"][0]))
    assert len(starts) > 3
    whole = TokenDecoder(5.0, 25.0, 50.0, train=True, seed=0)(sample)  # shorter than the crop: kept whole
    assert torch.equal(whole["semantic"], frames) and whole["acoustic"].shape == (3, 200)


def test_short_clips_are_padded_and_masked():
    decode = TokenDecoder(crop_seconds=2.0, semantic_rate=25.0, acoustic_rate=50.0, train=True, seed=0)
    samples = []
    for key, n in (("long", 80), ("short", 30)):
        streams = {
            "mulan": torch.zeros(2), "semantic": torch.arange(n) + 1, "acoustic": torch.arange(2 * n).expand(3, -1) + 1
        }
        raw = token_sample(key, streams, {"caption": key})
        samples.append(decode({k: (json.dumps(v).encode() if k == "json" else v) for k, v in raw.items()}))
    batch = collate_tokens([{**s, "skipped": 0} for s in samples])
    assert (
        batch["semantic"].shape == (2, 50) and batch["acoustic"].shape == (2, 3, 100) and batch["mulan"].shape == (2, 2)
    )
    assert batch["semantic_mask"].sum(1).tolist() == [50, 30] and batch["acoustic_mask"].sum(1).tolist() == [100, 60]
    assert torch.all((batch["semantic"] > 0) == batch["semantic_mask"])  # real frames are nonzero here, pads are 0
    assert torch.all((batch["acoustic"][:, 0] > 0) == batch["acoustic_mask"])
    assert batch["text"] == ["long", "short"]


@pytest.fixture(scope="module")
def tiny_run(tone_shards, tmp_path_factory):
    """runs/<tmp>/{mulan,codec,semantic_tokens}/model.ckpt from tiny, untrained but real stage modules."""
    from musiclm.codec.module import CodecModule
    from musiclm.mulan.module import MuLanModule
    from musiclm.semantic_tokens.module import SemanticTokenizer

    run = tmp_path_factory.mktemp("run")
    mulan = MuLanModule(
        sample_rate=16_000, window_seconds=1.0, n_mels=32, hop_length=320, patch_freq=16, audio_dim=32, audio_depth=1,
        audio_heads=2, text_tower="scratch", text_dim=32, text_depth=1, text_heads=2, num_quantizers=2, codebook_size=8,
    )  # fmt: skip
    mulan.quantizer_fitted.fill_(True)
    codec = CodecModule(
        sample_rate=16_000, channels=4, strides=[4, 4, 5, 4], latent_dim=16, num_quantizers=3, codebook_size=16
    )
    sem = SemanticTokenizer(sample_rate=16_000, extractor="logmel", num_clusters=5)
    sem.initialized.fill_(True)
    sem.centroids.data.normal_()
    for stage, module in (("mulan", mulan), ("codec", codec), ("semantic_tokens", sem)):
        model_path(run, stage).parent.mkdir(parents=True)
        torch.save(handoff(module.eval()), model_path(run, stage))
    return run


def test_tokenize_writes_aligned_streams_resumes_and_detects_staleness(tone_shards, tiny_run, tmp_path):
    out = tmp_path / "tokens"
    manifests = tokenize(str(tiny_run), tone_shards, out, ["train", "val"])
    assert manifests["val"]["num_samples"] == 9 and manifests["train"]["num_samples"] == 24
    x = decode_token_sample(next(iter_tar_samples(list_shards(out / "val")[0])))
    assert x["mulan"].shape == (2,) and x["semantic"].shape == (25,) and x["acoustic"].shape == (3, 50)
    assert x["acoustic"].min() >= 0  # eval mode: no dropped (-1) levels
    assert set(x["json"]["checkpoint_ids"]) == {"mulan", "codec", "semantic_tokens"}
    check_token_freshness(out, tiny_run)
    first = list_shards(out / "val")[0]
    mtime = (out / "val" / first.split("/")[-1]).stat().st_mtime_ns
    tokenize(str(tiny_run), tone_shards, out, ["val"])  # nothing changed: complete shards are kept
    assert (out / "val" / first.split("/")[-1]).stat().st_mtime_ns == mtime
    dm = TokenDataModule(str(out), run=str(tiny_run), crop_seconds=0.8, batch_size=4, num_workers=0)
    dm.setup("fit")
    assert dm.vocab == {"mulan_levels": 2, "mulan_codebook_size": 8, "semantic_levels": 1, "semantic_codebook_size": 5,
                        "semantic_rate": 25.0, "acoustic_levels": 3, "acoustic_codebook_size": 16,
                        "acoustic_rate": 50.0}
    batch = next(iter(dm.loader("train")))
    assert (
        batch["semantic"].shape == (4, 20) and batch["acoustic"].shape == (4, 3, 40) and batch["mulan"].shape == (4, 2)
    )
    assert batch["semantic_mask"].all() and batch["acoustic_mask"].all()
    # an upstream checkpoint changes: training refuses the old tokens, re-tokenizing rebuilds them
    ckpt = torch.load(model_path(tiny_run, "codec"), weights_only=False)
    next(v for v in ckpt["state_dict"].values() if v.is_floating_point()).add_(0.5)
    torch.save(ckpt, model_path(tiny_run, "codec"))
    with pytest.raises(StaleTokensError, match="make tokenize"):
        dm.setup("fit")
    tokenize(str(tiny_run), tone_shards, out, ["train", "val"])
    assert (out / "val" / first.split("/")[-1]).stat().st_mtime_ns != mtime
    dm.setup("fit")
