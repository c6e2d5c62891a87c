"""Evaluation metrics: FAD, MuLan cycle consistency, tempo estimation and adherence, codec distances, process sync."""

from __future__ import annotations

import math
import os
import socket

import numpy as np
import pytest
import scipy.linalg
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from musiclm.metrics.codec import input_dependence, mel_distance, si_sdr_db
from musiclm.metrics.fad import FrechetAudioDistance, frechet_distance, logmel_stats_embedding
from musiclm.metrics.mcc import MuLanCycleConsistency
from musiclm.metrics.spectral import SpectralFlatness, spectral_flatness
from musiclm.metrics.tempo import TempoAdherence, estimate_tempo

SR = 16_000


def gaussian_set(n: int, mean: torch.Tensor, cov: torch.Tensor, seed: int) -> torch.Tensor:
    """n samples whose *empirical* mean and covariance are exactly `mean` and `cov` (whitened, then coloured)."""
    x = torch.randn(n, len(mean), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    x = x - x.mean(0)
    x = x @ torch.linalg.inv(torch.linalg.cholesky(x.T @ x / (n - 1))).T
    return x @ torch.linalg.cholesky(cov).T + mean


def random_cov(d: int, seed: int) -> torch.Tensor:
    a = torch.randn(d, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / d + 0.1 * torch.eye(d, dtype=torch.float64)


def fad_of(real: torch.Tensor, fake: torch.Tensor, **kwargs) -> float:
    m = FrechetAudioDistance(**kwargs)
    m.update(real, real=True)
    m.update(fake, real=False)
    return float(m.compute())


def test_fad_zero_for_identical_sets_and_grows_with_mean_shift():
    x = torch.randn(64, 16, generator=torch.Generator().manual_seed(0))
    assert fad_of(x, x) == pytest.approx(0.0, abs=1e-4)
    shifts = [fad_of(x, x + s) for s in (0.1, 0.5, 1.0)]
    assert shifts == sorted(shifts) and shifts[0] > 0
    assert shifts[-1] == pytest.approx(16.0, rel=1e-3)  # |mu shift|^2 = 16 * 1^2, same covariance


def test_fad_matches_closed_form_for_two_gaussians():
    d = 5
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.linspace(-1, 1, d, dtype=torch.float64)
    c1, c2 = random_cov(d, 1), random_cov(d, 2)  # non-commuting covariances
    cross = scipy.linalg.sqrtm(c1.numpy() @ c2.numpy()).real  # the textbook formula, independent of ours
    closed = float((mu1 - mu2).square().sum() + np.trace(c1.numpy() + c2.numpy() - 2 * cross))
    assert float(frechet_distance(mu1, c1, mu2, c2)) == pytest.approx(closed, rel=1e-6)
    measured = fad_of(gaussian_set(200, mu1, c1, 3), gaussian_set(300, mu2, c2, 4), eps=0.0)
    assert measured == pytest.approx(closed, rel=1e-3)


def test_fad_one_update_equals_many_and_survives_few_samples():
    g = torch.Generator().manual_seed(0)
    real, fake = torch.randn(40, 8, generator=g), torch.randn(30, 8, generator=g) + 0.3
    many = FrechetAudioDistance(num_features=8)
    for chunk in real.split(7):
        many.update(chunk, real=True)
    for chunk in fake.split(4):
        many.update(chunk, real=False)
    assert float(many.compute()) == pytest.approx(fad_of(real, fake), rel=1e-5)
    few = fad_of(torch.randn(3, 64, generator=g), torch.randn(4, 64, generator=g))  # rank-deficient covariances
    assert math.isfinite(few) and few > 0
    with pytest.raises(ValueError, match="at least 2"):
        fad_of(real[:1], fake)


def test_logmel_stats_embedding_separates_sounds():
    t = torch.arange(SR) / SR
    tones = torch.stack([torch.sin(2 * math.pi * f * t) * 0.3 for f in (220.0, 230.0, 3000.0)])
    emb = logmel_stats_embedding(tones, SR)
    assert emb.shape == (3, 128) and torch.isfinite(emb).all()
    assert (emb[0] - emb[1]).norm() < (emb[0] - emb[2]).norm()


def test_mcc_matched_pairs_and_shuffled():
    d = 32
    text = torch.eye(d)
    m = MuLanCycleConsistency()
    m.update(text[:10], text[:10] * 3.0)  # scale is irrelevant: embeddings are re-normalised
    m.update(text[10:], text[10:])
    out = m.compute()
    assert float(out["mcc"]) == pytest.approx(1.0) and float(out["mcc_margin"]) == pytest.approx(1.0)

    g = torch.Generator().manual_seed(0)
    text, audio = torch.randn(200, 8, generator=g), torch.randn(200, 8, generator=g)
    audio = audio + 2 * text  # audio follows its prompt
    follow = MuLanCycleConsistency()
    follow.update(text, audio)
    shuffled = MuLanCycleConsistency()
    shuffled.update(text, audio[torch.randperm(200, generator=g)])
    assert float(follow.compute()["mcc_margin"]) > 0.5 and float(follow.compute()["mcc_margin_p"]) < 0.01
    assert abs(float(shuffled.compute()["mcc_margin"])) < 0.05 and float(shuffled.compute()["mcc_margin_p"]) > 0.01


def rhythm(bpm: float, seconds: float = 8.0, drums: bool = False, seed: int = 0) -> np.ndarray:
    """A click track, or a drum loop (kick on 1 and 3, snare on 2 and 4, hi-hat on every eighth note)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(0.15 * SR)) / SR
    kick = np.sin(2 * np.pi * np.cumsum(50 + 100 * np.exp(-t * 30)) / SR) * np.exp(-t * 15)
    snare = rng.standard_normal(len(t)) * np.exp(-t * 25) * 0.5 + 0.3 * np.sin(2 * np.pi * 200 * t) * np.exp(-t * 20)
    hat = rng.standard_normal(len(t)) * np.exp(-t * 150) * 0.15
    click = rng.standard_normal(len(t)) * np.exp(-t * 100)
    x = np.zeros(int(seconds * SR))
    step = 60 / bpm / (2 if drums else 1)
    for i, onset in enumerate(np.arange(0.1, seconds - 0.2, step)):
        event = (hat + (0 if i % 2 else kick if (i // 2) % 2 == 0 else snare)) if drums else click
        x[int(onset * SR) : int(onset * SR) + len(t)] += event
    return (0.4 * x).astype(np.float32)


@pytest.mark.parametrize("bpm", [55, 70, 100, 128, 160, 190])  # 55 and 190: octave handling at the range ends
def test_tempo_of_click_and_drum_tracks(bpm):
    assert estimate_tempo(rhythm(bpm), SR) == pytest.approx(bpm, rel=0.05)
    assert estimate_tempo(torch.from_numpy(rhythm(bpm, drums=True, seed=1)), SR) == pytest.approx(bpm, rel=0.05)


def test_tempo_of_rendered_synth_pieces():
    """Two FluidSynth renders of the synthetic corpus in styles with a steady pulse (see the tempo module for the
    corpus-wide accuracy, where sparse ambient pieces and bossa nova rhythms cause octave-type misses)."""
    synth = pytest.importorskip("musiclm.data.synth")
    try:
        synth.find_soundfont()
    except FileNotFoundError as e:
        pytest.skip(str(e))
    pieces = (synth.compose(np.random.default_rng(k), 8.0) for k in range(200))
    steady = [(midi, at) for midi, at in pieces if at["style"] in ("march", "techno", "waltz", "rock")][:2]
    for midi, at in steady:
        audio = synth.render_midi(midi, 24_000)[: 8 * 24_000]
        assert estimate_tempo(audio, 24_000) == pytest.approx(at["tempo_bpm"], rel=0.05), at["style"]


def test_tempo_of_silence_is_nan():
    assert math.isnan(estimate_tempo(np.zeros(SR * 4, np.float32), SR))


def test_tempo_adherence_and_chance():
    m = TempoAdherence(sample_rate=SR)
    clips = [rhythm(b, seconds=6.0) for b in (70, 100)]
    m.update(clips, [70.0, 100.0])
    batch = torch.from_numpy(np.stack([rhythm(b, seconds=6.0) for b in (128, 160, 90)]))
    m.update(batch, torch.tensor([128.0, 105.0, math.nan]))
    out = m.compute()  # estimates 70, 100, 128, 160 against targets 70, 100, 128, 105 (the NaN target is skipped)
    assert float(out["adherence"]) == pytest.approx(0.75)
    assert float(out["chance"]) == pytest.approx(1 / 12)  # only estimate 100 vs the other target 105 is within 10%
    with pytest.raises(ValueError, match="sample_rate"):
        TempoAdherence().update(clips, [70.0, 100.0])


def test_mel_distance_and_si_sdr():
    g = torch.Generator().manual_seed(0)
    ref = torch.randn(2, SR, generator=g) * 0.1
    assert float(mel_distance(ref, ref, SR)) == 0.0
    noise = torch.randn(2, SR, generator=g)
    dists = [float(mel_distance(ref, ref + a * noise, SR)) for a in (0.001, 0.01, 0.1)]
    assert 0 < dists[0] < dists[1] < dists[2]
    assert mel_distance(ref, ref + 0.01 * noise, SR, reduction="none").shape == (2,)
    sdr = [float(si_sdr_db(ref, ref + a * noise)) for a in (0.001, 0.01, 0.1)]
    assert sdr[0] > sdr[1] > sdr[2] and sdr[1] == pytest.approx(20.0, abs=0.5)
    assert float(si_sdr_db(ref, 3 * ref)) > 60  # invariant to scale


def test_codec_loss_and_metric_share_one_mel_distance_with_unchanged_numbers():
    """MultiResolutionMelLoss and mel_distance are one implementation; both return bit for bit what their separate
    implementations did (the loss: each resolution's mean over the batch; the metric: the mean of per-clip values)."""
    from musiclm.audio import LogMel
    from musiclm.codec.losses import MultiResolutionMelLoss
    from musiclm.metrics.codec import N_MELS, WINDOWS, MelDistance

    def banks(windows, n_mels):
        return [LogMel(SR, w, w // 4, m, power=1.0, floor=1e-5) for w, m in zip(windows, n_mels, strict=True)]

    g = torch.Generator().manual_seed(1)
    ref = torch.randn(3, SR // 2, generator=g) * 0.1
    est = (ref + 0.05 * torch.randn(3, SR // 2, generator=g)).requires_grad_()
    windows, bands = [64, 256, 1024], [10, 40, 160]

    loss = MultiResolutionMelLoss(SR, windows, bands)
    assert isinstance(loss, MelDistance)
    old_loss = sum((mel(ref) - mel(est)).abs().mean() for mel in banks(windows, bands)) / math.log(10)
    new_loss = loss(ref, est)
    assert torch.equal(new_loss, old_loss)
    (old_grad,) = torch.autograd.grad(old_loss, est)
    (new_grad,) = torch.autograd.grad(new_loss, est)
    assert torch.equal(new_grad, old_grad)

    est = est.detach()  # mel_distance's cached filterbanks may have been built under inference mode by an earlier test
    old = ref.new_zeros(3)
    for mel in banks(WINDOWS, N_MELS):
        old = old + (mel(ref) - mel(est)).abs().mean(dim=(-2, -1)) / math.log(10)
    assert torch.equal(mel_distance(ref, est, SR, reduction="none"), old)
    assert torch.equal(mel_distance(ref, est, SR), old.mean())
    assert torch.allclose(MelDistance(SR)(ref, est), old.mean())  # the two reductions agree up to rounding


def test_input_dependence_one_for_an_output_that_ignores_its_input():
    g = torch.Generator().manual_seed(0)
    t = torch.arange(SR) / SR
    ref = torch.stack([0.3 * torch.sin(2 * math.pi * f * t) for f in (220.0, 440.0, 880.0, 1760.0)])
    noisy = ref + 1e-3 * torch.randn(ref.shape, generator=g)
    assert float(input_dependence(ref, noisy, SR)) > 2.0
    average = noisy.mean(0, keepdim=True).expand_as(ref)  # the same output whatever the input
    assert float(input_dependence(ref, average, SR)) == pytest.approx(1.0, abs=1e-5)


def sync_batches() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(5)
    return tuple(torch.randn(12, 6, generator=g) for _ in range(4))


def metric_values(rows: slice) -> torch.Tensor:
    """FAD, MCC and MCC margin on the given rows of the fixed batches (after cross-process sync, if any)."""
    text, audio, real, fake = (t[rows] for t in sync_batches())
    fad, mcc = FrechetAudioDistance(), MuLanCycleConsistency()
    for i in range(0, len(text), 2):  # several updates per process
        fad.update(real[i : i + 2], real=True)
        fad.update(fake[i : i + 2] + 0.5, real=False)
        mcc.update(text[i : i + 2], audio[i : i + 2] + text[i : i + 2])
    c = mcc.compute()
    return torch.stack([fad.compute(), c["mcc"], c["mcc_margin"]])


def sync_worker(rank: int, world_size: int, port: int, out_dir: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        n = 12 // world_size
        torch.save(metric_values(slice(rank * n, (rank + 1) * n)), os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()


def test_metric_state_syncs_across_two_processes(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(sync_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    single = metric_values(slice(None))
    for rank in range(2):
        torch.testing.assert_close(torch.load(tmp_path / f"rank{rank}.pt"), single, rtol=1e-5, atol=1e-6)


def test_spectral_flatness_orders_tone_below_hiss_and_skips_silence():
    sr = 24_000
    t = torch.arange(2 * sr) / sr
    tone = sum(torch.sin(2 * math.pi * 220 * k * t) / k for k in range(1, 6))
    hiss = 0.1 * torch.randn(2 * sr, generator=torch.Generator().manual_seed(0))
    gap = torch.cat([torch.zeros(sr), tone[:sr]])  # the silent first half must not count as noise
    flat = spectral_flatness(torch.stack([tone, hiss, tone + hiss, gap]), sr)
    assert flat[0] < 1e-3 and flat[1] > 0.8 and flat[0] < flat[2] < flat[1]
    assert flat[3] < 1e-3
    metric = SpectralFlatness()
    metric.update(torch.stack([tone, torch.zeros(2 * sr)]), sr)  # an all-silent clip is skipped, not NaN
    metric.update(hiss[None], sr)
    assert math.isclose(metric.compute().item(), (flat[0] + flat[1]).item() / 2, rel_tol=1e-4)


def test_fad_logmel_other_real_floor_is_small_within_a_corpus_and_large_across(tmp_path):
    """eval's floor for `generation.fad_logmel`: two draws of one corpus score far below a corpus of another sound,
    and above 0 (a few clips in 128 dimensions)."""
    from musiclm.audio import save_audio
    from musiclm.evaluate import fad_logmel_other_real

    sr, rng = 16_000, np.random.default_rng(0)
    t = np.arange(sr) / sr

    def clips(kind: str, n: int) -> list[dict]:
        out = []
        for i in range(n):
            x = 0.3 * np.sin(2 * np.pi * rng.uniform(200, 800) * t) if kind == "tone" else 0.3 * rng.standard_normal(sr)
            out.append({"flac": save_audio(tmp_path / f"{kind}{i}.wav", x.astype(np.float32), sr)})
        return out

    tones, more_tones, noise = clips("tone", 12), clips("tone", 12), clips("noise", 12)
    within = fad_logmel_other_real(tones, more_tones, sr, sr)
    across = fad_logmel_other_real(tones, noise, sr, sr)
    assert 0 < within < across / 5
