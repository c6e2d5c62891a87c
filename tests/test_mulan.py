"""MuLan: contrastive losses, gathered loss over 2 gloo processes, towers' shapes, quantizer round trip, and a tiny
end-to-end fit on tone shards followed by fit-quantizer and a config-free reload."""

from __future__ import annotations

import math
import socket
import warnings

import lightning as L
import pytest
import torch
import torch.multiprocessing as mp
import torch.nn.functional as F

from musiclm.data.datamodules import AudioTextDataModule
from musiclm.mulan import fit_quantizer
from musiclm.mulan.loss import ContrastiveLoss
from musiclm.mulan.metrics import retrieval_metrics, zero_shot_accuracy
from musiclm.mulan.module import MuLanModule, QuantizerNotFittedError
from tests import dist_mulan_loss

TINY = dict(
    sample_rate=16_000,
    window_seconds=1.0,
    window_hop_seconds=0.5,
    embed_dim=16,
    n_fft=512,
    hop_length=160,
    n_mels=32,
    patch_freq=16,
    patch_time=4,
    audio_dim=32,
    audio_depth=2,
    audio_heads=2,
    dropout=0.0,
    text_tower="scratch",
    text_dim=32,
    text_depth=1,
    text_heads=2,
    num_quantizers=3,
    codebook_size=16,
)


def tiny(**over) -> MuLanModule:
    torch.manual_seed(0)
    return MuLanModule(**{**TINY, **over})


# ------------------------------------------------------------------------------------------------ losses
def test_clip_loss_matches_hand_computed_case():
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    loss = ContrastiveLoss("clip", init_temperature=1.0)(audio, text)
    # a2t logits [[1, .6], [0, .8]]; t2a logits [[1, 0], [.6, .8]]; each row's target is its diagonal
    a2t = -math.log(math.e / (math.e + math.exp(0.6))) - math.log(math.exp(0.8) / (1 + math.exp(0.8)))
    t2a = -math.log(math.e / (math.e + 1)) - math.log(math.exp(0.8) / (math.exp(0.6) + math.exp(0.8)))
    assert loss.item() == pytest.approx(0.5 * (a2t / 2 + t2a / 2), rel=1e-6)


def test_siglip_loss_matches_hand_computed_case():
    audio = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    text = torch.tensor([[1.0, 0.0], [0.6, 0.8]])
    fn = ContrastiveLoss("siglip", init_temperature=0.5, init_bias=-1.0)  # scale 2
    z = [[2 * 1.0 - 1, 2 * 0.6 - 1], [2 * 0.0 - 1, 2 * 0.8 - 1]]
    sign = [[1, -1], [-1, 1]]
    expected = -sum(math.log(1 / (1 + math.exp(-sign[i][j] * z[i][j]))) for i in range(2) for j in range(2)) / 2
    assert fn(audio, text).item() == pytest.approx(expected, rel=1e-6)


def test_temperature_is_clamped():
    fn = ContrastiveLoss("clip", max_scale=100.0)
    with torch.no_grad():
        fn.log_scale.fill_(20.0)
    assert fn.scale.item() == pytest.approx(100.0)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("kind", ["clip", "siglip"])
def test_gathered_loss_over_two_processes_equals_single_process(kind, tmp_path):
    mp.spawn(dist_mulan_loss.worker, args=(2, _free_port(), str(tmp_path), kind), nprocs=2, join=True)
    got = torch.load(tmp_path / f"{kind}.pt")
    audio, text = dist_mulan_loss.global_batch()
    loss, grads = dist_mulan_loss.step(kind, audio, text)
    assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5)
    assert grads.keys() == got["grads"].keys()
    for k, g in grads.items():
        assert g.abs().sum() > 0, k
        torch.testing.assert_close(got["grads"][k], g, rtol=1e-4, atol=1e-6, msg=k)


# ------------------------------------------------------------------------------------------------ towers
@pytest.mark.parametrize("tower", ["transformer", "resnet"])
def test_embeddings_and_features_shapes(tower):
    m = tiny(audio_tower=tower, resnet_channels=[8, 16], audio_pool="attention" if tower == "resnet" else "mean").eval()
    wave = torch.randn(2, 40_000)  # 2.5 s = longer than the 1-s window
    with torch.no_grad():
        a, t = m.embed_audio(wave), m.embed_text(["a sine tone", "noise"])
        feats = m.audio_features(wave, 1)
    assert a.shape == t.shape == (2, 16)
    torch.testing.assert_close(a.norm(dim=-1), torch.ones(2))
    assert m.feature_frame_rate == 25.0
    assert feats.shape[:2] == (2, int(2.5 * 25))


def test_long_audio_is_mean_of_hopped_windows():
    m = tiny().eval()
    wave = torch.randn(1, 28_000)  # 1.75 s: 1-s windows at 0 and 0.5 s, plus one flush with the end
    with torch.no_grad():
        got = m.embed_audio(wave)
        starts = [0, 8_000, 12_000]
        parts = [F.normalize(m.audio_proj(m.audio_tower(wave[:, s : s + 16_000])), dim=-1) for s in starts]
        want = F.normalize(torch.stack(parts).mean(0), dim=-1)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)


# ------------------------------------------------------------------------------------------------ metrics
def test_retrieval_and_zero_shot_metrics():
    emb = F.normalize(torch.randn(12, 8), dim=-1)
    perfect = retrieval_metrics(emb, emb)
    assert perfect["t2a_recall@1"] == perfect["a2t_map"] == 1.0
    shuffled = retrieval_metrics(emb, emb.roll(1, 0))
    assert shuffled["t2a_recall@1"] == 0.0 and shuffled["t2a_recall@10"] > 0.0
    # every pair's cosine negative but still the best of its row: a perfect retrieval, and k >= N recalls all
    anti = torch.full((4, 4), -0.9).fill_diagonal_(-0.1)
    text, audio = torch.eye(4), anti.T
    assert retrieval_metrics(text, audio)["t2a_recall@1"] == 1.0
    assert retrieval_metrics(emb[:4], emb.roll(1, 0)[:4])["t2a_recall@5"] == 1.0
    classes = {"c0": emb[0], "c1": emb[1]}
    acc, chance = zero_shot_accuracy(emb[:2], ["c0", "c1"], "{}", lambda ps: torch.stack([classes[p] for p in ps]))
    assert (acc, chance) == (1.0, 0.5)


# ------------------------------------------------------------------------------------------------ quantizer
def test_quantizer_round_trip_and_unfitted_error(tmp_path):
    m = tiny().eval()
    with pytest.raises(QuantizerNotFittedError, match="make train-mulan"):
        m.tokenize(torch.randn(1, 16_000))
    g = torch.Generator().manual_seed(0)
    centres = F.normalize(torch.randn(6, 16, generator=g), dim=-1)
    x = F.normalize(centres.repeat(40, 1) + 0.02 * torch.randn(240, 16, generator=g), dim=-1)
    err = m.fit_quantizer(x, epochs=3)
    assert err < 0.05 and bool(m.quantizer_fitted)
    tokens = m.tokens_from_embeddings(x[:10])
    assert tokens.shape == (10, 3) and tokens.dtype == torch.long and tokens.min() >= 0 and tokens.max() < 16
    back = m.embeddings_from_tokens(tokens)
    assert (back - x[:10]).pow(2).sum(-1).mean() < 0.05
    # the fitted state travels in the state dict
    state = {k: v.clone() for k, v in m.state_dict().items()}
    m2 = tiny().eval()
    m2.load_state_dict(state)
    assert bool(m2.quantizer_fitted) and torch.equal(m2.tokens_from_embeddings(x[:10]), tokens)
    assert m2.tokens_from_text(["a sine tone"]).shape == (1, 3)


def test_quantizer_fit_is_reproducible_whatever_the_global_rng():
    """Two fits on the same embeddings give the same codebooks and tokens, and leave torch's generator alone
    (vector-quantize-pytorch's k-means draws from it: unseeded, two runs of one commit tokenized differently)."""
    x = F.normalize(torch.randn(300, 16, generator=torch.Generator().manual_seed(1)), dim=-1)
    fitted = []
    for global_seed in (11, 12):
        torch.manual_seed(global_seed)
        m = tiny().eval()
        before = torch.get_rng_state()
        m.fit_quantizer(x, epochs=2)
        assert torch.equal(torch.get_rng_state(), before)
        fitted.append((m.tokens_from_embeddings(x), m.quantizer.state_dict()))
    (tokens_a, state_a), (tokens_b, state_b) = fitted
    assert torch.equal(tokens_a, tokens_b)
    assert all(torch.equal(state_a[k], state_b[k]) for k in state_a)


# ------------------------------------------------------------------------------------------------ end to end
def test_tiny_fit_val_loss_falls_then_fit_quantizer_and_reload(tone_shards, tmp_path):
    warnings.filterwarnings("ignore", category=ResourceWarning)
    L.seed_everything(0)
    dm = AudioTextDataModule(
        str(tone_shards), sample_rate=16_000, clip_seconds=1.0, batch_size=8, num_workers=0, caption_mode="caption"
    )
    model = tiny(lr=3e-3, warmup_steps=1)
    trainer = L.Trainer(
        max_steps=40,
        accelerator="cpu",
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        val_check_interval=40,
        check_val_every_n_epoch=None,
    )
    before = trainer.validate(model, dm, verbose=False)[0]
    trainer.fit(model, dm)
    after = trainer.validate(model, dm, verbose=False)[0]
    assert after["val/loss"] < before["val/loss"] - 0.1
    for key in (
        "val/t2a_recall@10",
        "val/a2t_map",
        "val/zero_shot/instrument_family_acc",
        "val/zero_shot/instrument_family_chance",
    ):
        assert key in after
    assert after["val/zero_shot/instrument_family_chance"] == pytest.approx(1 / 3)

    run = tmp_path / "run"
    (run / "mulan").mkdir(parents=True)
    trainer.save_checkpoint(run / "mulan" / "model.ckpt", weights_only=True)
    with pytest.raises(QuantizerNotFittedError):
        MuLanModule.load_from_checkpoint(run / "mulan" / "model.ckpt", weights_only=False).tokens_from_text(["x"])
    err = fit_quantizer.main(["--run", str(run), "--epochs", "2", "--num-workers", "0"])
    assert 0.0 <= err < 1.0
    loaded = MuLanModule.load_from_checkpoint(run / "mulan" / "model.ckpt", weights_only=False).eval()  # no config
    assert bool(loaded.quantizer_fitted) and loaded.hparams.audio_dim == 32
    wave = torch.randn(2, 16_000)
    torch.testing.assert_close(loaded.embed_audio(wave), model.eval().embed_audio(wave))
    assert loaded.tokenize(wave).shape == loaded.tokens_from_text(["a sine tone", "noise"]).shape == (2, 3)


# ------------------------------------------------------------------------------------------------ configs
@pytest.mark.parametrize("profile", ["paper", "demo"])
def test_config_model_keys_are_module_arguments(profile):
    import inspect

    from musiclm.mulan.bench import demo_settings

    model, data = demo_settings(profile)
    assert set(model) <= set(inspect.signature(MuLanModule).parameters)
    assert set(data) <= set(inspect.signature(AudioTextDataModule).parameters)
    assert model["window_seconds"] == data["clip_seconds"] and model["sample_rate"] == data["sample_rate"]


def test_attention_dropout_is_set_apart_from_dropout():
    """`attn_dropout` (the paper config's 0) leaves attention weights undropped while the feed-forward keeps
    `dropout`: dropout on attention weights takes CPU SDPA off its fused kernel (2.2x the memory at 10-s clips)."""

    def attention_rates(m: MuLanModule) -> set[float]:
        return {a.attend.dropout for a in m.audio_tower.encoder.modules() if hasattr(a, "attend")}

    def dropout_rates(m: MuLanModule) -> set[float]:
        return {d.p for d in m.audio_tower.encoder.modules() if isinstance(d, torch.nn.Dropout)}

    apart = tiny(dropout=0.1, attn_dropout=0.0)
    assert attention_rates(apart) == {0.0} and 0.1 in dropout_rates(apart)
    assert attention_rates(tiny(dropout=0.1)) == {0.1}
