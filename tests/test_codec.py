"""Codec: shapes and frame rate, every bitrate, streaming = full signal, a tiny fit, G/D steps, checkpoints,
DDP sync."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DataLoader

from musiclm.codec.module import CodecModule
from musiclm.codec.spectral import ISTFTDecoder
from musiclm.compat import codebook_synced
from musiclm.modes import eval_mode

SR = 16_000
TINY = dict(
    sample_rate=SR, channels=4, strides=[2, 4, 5], latent_dim=16, num_quantizers=3, codebook_size=16,
    stft_ffts=[128], stft_channels=4, periods=[2], period_channels=4, mel_windows=[64, 256], mel_bands=[10, 40],
    val_quantizers=[1, 2], lr=3e-3, lr_d=3e-3, lr_gamma=1.0,
)  # fmt: skip


def tiny(**kw) -> CodecModule:
    torch.manual_seed(0)
    return CodecModule(**{**TINY, **kw})


def tones(n: int, samples: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / SR
    f = 200 + 400 * torch.rand(n, 1, generator=g)
    return 0.4 * torch.sin(2 * math.pi * f * t) * (0.5 + 0.5 * torch.sin(2 * math.pi * 3 * t))


def test_shapes_strides_and_frame_rate():
    m = tiny().eval()
    assert m.hop_length == 40 and m.frame_rate == SR / 40
    wave = tones(2, 1000)  # 25 frames
    codes = m.encode(wave)
    assert codes.shape == (2, 3, 25) and codes.dtype == torch.long
    assert m.encode(wave[:, None]).equal(codes)
    assert m.encode(wave[:, :990]).shape[-1] == 25  # padded up to whole frames
    assert m.decode(codes).shape == (2, 1000)
    assert codes.min() >= 0 and codes.max() < m.codebook_size
    assert abs(m.kbps() - 400 * 3 * 4 / 1000) < 1e-9


def test_paper_profile_is_50hz_12x1024():
    m = CodecModule(channels=1, latent_dim=8, stft_ffts=[64], periods=[2])
    assert (m.sample_rate, m.hop_length, m.frame_rate) == (24_000, 480, 50.0)
    assert (m.num_levels, m.codebook_size, m.kbps()) == (12, 1024, 6.0)


def test_quantizer_dropout_in_training_only():
    m = tiny(num_quantizers=4).train()
    wave = tones(4, 800)
    with torch.no_grad():
        m.generator(wave[:, None])  # k-means init
        levels = set()
        for _ in range(30):
            _, codes, _ = m.generator(wave[:, None])
            levels.add(int((codes[:, :, 0] >= 0).all(0).sum()))
    assert len(levels) > 1 and min(levels) >= 1  # some steps drop trailing levels, never the first
    assert m.encode(wave).min() >= 0  # encode() always runs eval mode: no dropped (-1) levels
    assert m.training  # and restores the mode


def test_eval_mode_restores_the_mode_also_when_the_block_raises():
    m = torch.nn.Sequential(torch.nn.Dropout()).train()
    with pytest.raises(RuntimeError), eval_mode(m):
        assert not m.training and not m[0].training
        raise RuntimeError
    assert m.training and m[0].training


SPECTRAL = dict(architecture="spectral", channels=16)


@pytest.mark.parametrize("arch", [{}, SPECTRAL], ids=["conv", "spectral"])
def test_pointwise_matmul_is_the_same_codec(arch):
    """`compile_inference` runs kernel-1 convs as matmuls (bf16 autocast then reaches the matmul units): the same
    codes and audio to float rounding; in training the flag is ignored, so no trained model depends on it."""
    from musiclm.codec.layers import CausalConv1d

    m = tiny(**arch).eval()
    wave = tones(2, 1200)
    codes, audio = m.encode(wave), m.decode(m.encode(wave))
    layers = [x for x in m.generator.modules() if isinstance(x, CausalConv1d)]
    assert any(x.conv.kernel_size[0] == 1 for x in layers)
    for x in layers:
        x.pointwise_matmul = True
    assert m.encode(wave).equal(codes)
    torch.testing.assert_close(m.decode(codes), audio, atol=1e-5, rtol=1e-5)
    pointwise = next(x for x in layers if x.conv.kernel_size[0] == 1)
    h = torch.randn(2, pointwise.conv.in_channels, 30)
    assert pointwise.train()(h).equal(pointwise.conv(h))


@pytest.mark.parametrize("arch", [{}, SPECTRAL], ids=["conv", "spectral"])
def test_decode_encode_at_every_bitrate(arch):
    m = tiny(**arch).eval()
    wave = tones(2, 1200)
    codes = m.encode(wave)
    for q in range(1, m.num_levels + 1):
        assert m.encode(wave, num_levels=q).equal(codes[:, :q])  # a prefix of the full code
        y = m.decode(codes[:, :q])
        assert y.shape == wave.shape and torch.isfinite(y).all()
    with pytest.raises(ValueError):
        m.decode(torch.zeros(1, 4, 5, dtype=torch.long))


@pytest.mark.parametrize("arch", [{}, SPECTRAL], ids=["conv", "spectral"])
def test_streaming_equals_full_signal(arch):
    m = tiny(**arch).eval()
    with torch.no_grad():
        m.train().generator(tones(4, 4000)[:, None])  # k-means init so codes are informative
    m.eval()
    wave = tones(2, 4000, seed=1)  # 100 frames, receptive field spans many chunks
    codes = m.encode(wave)
    assert m.encode(wave, chunk_frames=7).equal(codes)
    full = m.decode(codes)
    torch.testing.assert_close(m.decode(codes, chunk_frames=9), full, atol=1e-5, rtol=1e-4)
    assert m.generator.decoder.history_frames() > 9  # chunks really needed the left context


class _Waves(torch.utils.data.Dataset):
    def __init__(self, n: int, samples: int):
        self.x = tones(n, samples, seed=3)

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> dict:
        return {"audio": self.x[i], "skipped": torch.tensor(0)}


def _loader(n: int = 8, samples: int = 1600, batch: int = 4) -> DataLoader:
    def collate(items):
        return {"audio": torch.stack([i["audio"] for i in items]), "skipped": torch.tensor(0)}

    return DataLoader(_Waves(n, samples), batch_size=batch, collate_fn=collate)


def _trainer(tmp_path: Path, steps: int, **kw) -> L.Trainer:
    """`steps` counts optimiser steps (generator + discriminator under manual optimisation); one epoch at most."""
    return L.Trainer(
        accelerator="cpu", max_steps=steps, logger=False, enable_checkpointing=False, enable_progress_bar=False,
        enable_model_summary=False, default_root_dir=tmp_path, num_sanity_val_steps=0, **{"max_epochs": 1, **kw},
    )  # fmt: skip


@pytest.mark.parametrize("arch", [{}, SPECTRAL], ids=["conv", "spectral"])
def test_tiny_fit_reconstruction_improves(tmp_path, arch):
    m = tiny(gan_start_step=10_000, quantizer_dropout=False, **arch)
    val = _loader(4, 1600)
    before = _trainer(tmp_path, 1).validate(m, val, verbose=False)[0]["val/mel_distance"]
    _trainer(tmp_path, 40, max_epochs=20).fit(m, _loader(), val)
    after = _trainer(tmp_path, 1).validate(m, val, verbose=False)[0]["val/mel_distance"]
    assert after < 0.8 * before
    assert int(m.generator_steps) == 40 and int(m.skipped_nonfinite) == 0


def _snapshot(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: p.detach().clone() for k, p in module.named_parameters()}


def _changed(before: dict, module: torch.nn.Module) -> bool:
    return any(not before[k].equal(p) for k, p in module.named_parameters())


@pytest.mark.parametrize("frozen", ["generator", "discriminator"])
def test_each_step_updates_its_own_weights_only(tmp_path, frozen):
    # lr 0 for one side: its weights must not move, so the other side's step cannot have touched them.
    m = tiny(gan_start_step=0, **({"lr": 0.0} if frozen == "generator" else {"lr_d": 0.0}))
    m.generator_steps.fill_(1)  # past the first step's data-dependent init, which rescales the encoder once
    g, d = _snapshot(m.generator), _snapshot(m.discriminators)
    _trainer(tmp_path, 2, limit_val_batches=0).fit(m, _loader(4))
    assert _changed(g, m.generator) == (frozen != "generator")
    assert _changed(d, m.discriminators) == (frozen != "discriminator")


class _NaNLoss(torch.nn.Module):
    def forward(self, ref: torch.Tensor, est: torch.Tensor) -> torch.Tensor:
        return (est - ref).abs().mean() * float("nan")


def test_nonfinite_loss_skips_the_step(tmp_path):
    m = tiny(gan_start_step=10_000)
    m.mel_loss = _NaNLoss()
    m.generator_steps.fill_(1)  # past the data-dependent init
    before = _snapshot(m.generator)
    _trainer(tmp_path, 2, limit_val_batches=0).fit(m, _loader(8))
    assert int(m.skipped_nonfinite) == 2
    assert not _changed(before, m.generator)


def test_load_from_checkpoint_without_config(tmp_path):
    m = tiny(gan_start_step=0)
    trainer = _trainer(tmp_path, 1, limit_val_batches=0)
    trainer.fit(m, _loader(4))
    path = tmp_path / "model.ckpt"
    trainer.save_checkpoint(path, weights_only=True)
    loaded = CodecModule.load_from_checkpoint(path).eval()
    wave = tones(2, 800)
    assert loaded.encode(wave).equal(m.eval().encode(wave))
    assert loaded.num_levels == 3 and loaded.sample_rate == SR


def _ddp_worker(rank: int, world: int, init_file: str, out: str) -> None:
    torch.set_num_threads(1)
    m = tiny()  # built before the process group exists, as Lightning does
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        before = codebook_synced(m.generator.quantizer)
        m.setup("fit")
        with torch.no_grad():
            m.train().generator(tones(4, 800, seed=rank)[:, None])  # different audio per rank
        torch.save({"before": before, "after": codebook_synced(m.generator.quantizer),
                    "codebooks": m.generator.quantizer.codebooks.clone()}, f"{out}.{rank}")  # fmt: skip
    finally:
        dist.destroy_process_group()


def test_codebook_sync_switched_on_at_setup_under_a_process_group():
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "result")
        mp.spawn(_ddp_worker, args=(2, os.path.join(tmp, "init"), out), nprocs=2, join=True)
        r0, r1 = (torch.load(f"{out}.{r}") for r in range(2))
    assert not r0["before"] and r0["after"] and r1["after"]
    torch.testing.assert_close(r0["codebooks"], r1["codebooks"])  # k-means init + EMA all-reduced


def test_no_sync_in_a_single_process():
    m = tiny()
    m.setup("fit")
    assert not codebook_synced(m.generator.quantizer)


def test_opus_reference_is_aligned_and_at_the_asked_bitrate():
    from musiclm.codec.evaluate import align, opus_roundtrip

    x = tones(1, 24_000)[0].numpy()
    assert np.array_equal(align(x, np.r_[np.zeros(37, np.float32), x]), x)
    y, kbps = opus_roundtrip(x, 24_000, 6.0)
    assert y.shape == x.shape and np.isfinite(y).all()
    assert 4.0 < kbps < 10.0  # Ogg overhead on a 1-s clip
    assert np.corrcoef(x, y)[0, 1] > 0.5  # aligned: a misaligned tone would decorrelate


def test_kmeans_init_over_collected_latents(tmp_path):
    # 2 batches of 4 x 40 frames < 320 vectors: the quantizer is bypassed (codes -1) until enough latents are collected,
    # then every level is k-means initialised on them and used from the next step on.
    m = tiny(kmeans_init_vectors=320, gan_start_step=10_000, codebook_dim=4)
    assert not bool(m.kmeans_done) and m.generator.quantizer.project_in.out_features == 4
    _trainer(tmp_path, 2, limit_val_batches=0).fit(m, _loader(8))
    assert bool(m.kmeans_done)
    assert all(bool(layer._codebook.initted) for layer in m.generator.quantizer.layers)
    codes = m.encode(tones(8, 1600, seed=3))
    assert codes.min() >= 0 and len(codes[:, 0].unique()) > 1  # not collapsed onto one code


def test_encoder_latents_start_centred():
    # zero-initialised encoder biases: at init the latents vary around 0 instead of sitting on a constant offset
    z = tiny().generator.encoder(tones(4, 1600)[:, None]).transpose(1, 2).reshape(-1, TINY["latent_dim"])
    assert z.mean(0).norm() < z.std(0).mean() * math.sqrt(TINY["latent_dim"])


def test_first_step_scales_latents_to_unit_std(tmp_path):
    # lr 0: only the data-dependent init moves the weights, so the first batch's latents end with std 1
    m = tiny(lr=0.0, lr_d=0.0, gan_start_step=10_000)
    batch = next(iter(_loader()))["audio"][:, None]
    before = m.generator.encoder(batch).std()
    _trainer(tmp_path, 1, limit_val_batches=0).fit(m, _loader())
    assert before < 0.5 and m.generator.encoder(batch).std().item() == pytest.approx(1.0, rel=1e-3)


def test_first_step_standardizes_spectral_features(tmp_path):
    m = tiny(lr=0.0, lr_d=0.0, gan_start_step=10_000, **SPECTRAL)
    batch = next(iter(_loader()))["audio"][:, None]
    _trainer(tmp_path, 1, limit_val_batches=0).fit(m, _loader())
    enc = m.generator.encoder
    f = (enc.features(batch) - enc.feature_mean) / enc.feature_std
    assert f.mean(dim=(0, 2)).abs().max() < 1e-4 and f.std().item() == pytest.approx(1.0, rel=1e-3)
    assert enc(batch).std().item() == pytest.approx(1.0, rel=1e-3)
    assert set(m.state_dict()) >= {"generator.encoder.feature_mean", "generator.encoder.feature_std"}  # saved


@pytest.mark.parametrize("start", [0, 3])
def test_istft_steady_frames_give_a_steady_tone(start):
    # Every frame asks for the same magnitude and phase in one bin. Relative to the bin's clock that is a steady
    # sinusoid at the bin's frequency; with absolute per-frame phases it would repeat every hop (a comb at the
    # frame rate), which is how the decoder used to lose every note.
    dec = ISTFTDecoder(hop=40, window_frames=4, channels=8, latent_dim=4)
    k = 13  # not a multiple of window_frames: its frequency (SR / 160 * 13 = 1300 Hz) is no frame-rate harmonic
    head = dec.net[-1].conv
    with torch.no_grad():
        head.parametrizations.weight.original0.zero_()
        head.bias.fill_(-30.0)
        head.bias[k] = 0.0
        head.bias[dec.bins + k] = 0.5
    wave = dec(torch.zeros(1, 4, 50), start_frame=start)[0, 0, 200:1800]  # away from the ends
    spectrum = torch.fft.rfft(wave * torch.hann_window(len(wave))).abs()
    peak = int(spectrum.argmax())
    assert abs(peak * SR / len(wave) - 1300) <= SR / len(wave)
    assert spectrum[peak] > 50 * spectrum[(torch.arange(len(spectrum)) - peak).abs() > 10].max()


def test_codec_bench_times_each_path_and_counts_unchanged_codes():
    """`make bench`'s codec section on the demo codec (1 s, eager only): every time positive and the bf16
    agreement a share."""
    from musiclm.codec.bench import measure

    out = measure("demo", seconds=1.0, repeats=1, compiled=False)
    assert out["encode_decode_s_per_10s"] > 0 and out["encode_decode_s_per_10s_bf16_autocast"] > 0
    assert 0.0 <= out["codes_unchanged_bf16_autocast"] <= 1.0
    assert out["frame_rate_hz"] > 0 and out["generator_params_m"] > 0
