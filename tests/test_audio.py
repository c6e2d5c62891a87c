"""Audio I/O: every format and odd input goes in, float32 mono at the asked rate comes out, or a typed error."""

from __future__ import annotations

import shutil
import subprocess

import numpy as np
import pytest
import soundfile as sf
import torch

from musiclm import audio
from musiclm.audio import DecodeError, EmptyAudioError, LogMel, NonFiniteAudioError, TooShortError, load_audio


def tone(sr: int, seconds: float = 0.5, channels: int = 1, freq: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    x = 0.5 * np.sin(2 * np.pi * freq * t)
    return np.stack([x] * channels, axis=1) if channels > 1 else x


@pytest.mark.parametrize(
    "ext,fmt,subtype",
    [
        ("wav", "WAV", "PCM_16"),
        ("wav", "WAV", "PCM_U8"),
        ("wav", "WAV", "PCM_24"),
        ("wav", "WAV", "FLOAT"),
        ("flac", "FLAC", "PCM_16"),
        ("ogg", "OGG", "VORBIS"),
        ("opus", "OGG", "OPUS"),
        ("mp3", "MP3", "MPEG_LAYER_III"),
    ],
)
def test_round_trip_formats(tmp_path, ext, fmt, subtype):
    sr = 48_000 if subtype in ("OPUS",) else 44_100
    path = tmp_path / f"x.{ext}"
    sf.write(path, tone(sr, 0.5, 2), sr, format=fmt, subtype=subtype)
    for src in (path, path.read_bytes()):
        x = load_audio(src, 24_000)
        assert x.dtype == np.float32 and x.ndim == 1
        assert abs(len(x) - 12_000) < 2_000  # lossy codecs add priming/padding
        # the tone survives: energy concentrated at 440 Hz
        spec = np.abs(np.fft.rfft(x[2000:10000]))
        assert abs(np.argmax(spec) * 24_000 / 8000 - 440) < 10


def test_96k_six_channels_unicode_name(tmp_path):
    path = tmp_path / "Ünïcödé música 音楽.wav"
    sf.write(path, tone(96_000, 0.25, 6), 96_000, subtype="PCM_24")
    x = load_audio(path, 16_000)
    assert len(x) == 4_000 and x.dtype == np.float32
    assert 0.3 < np.abs(x).max() < 0.6  # mono mixdown averages, it does not sum


def test_errors_are_typed(tmp_path):
    with pytest.raises(DecodeError):
        load_audio(b"this is not audio", 24_000)
    bad = tmp_path / "bad.flac"
    bad.write_bytes(b"fLaC" + b"\0" * 100)
    with pytest.raises(DecodeError):
        load_audio(bad, 24_000)
    empty = tmp_path / "empty.wav"
    sf.write(empty, np.zeros(0), 16_000)
    with pytest.raises(EmptyAudioError):
        load_audio(empty, 24_000)
    nan = tmp_path / "nan.wav"
    x = tone(16_000).astype(np.float32)
    x[100] = np.nan
    sf.write(nan, x, 16_000, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError):
        load_audio(nan, 24_000)
    short = tmp_path / "short.wav"
    sf.write(short, tone(16_000, 0.001), 16_000)  # 1 ms
    assert len(load_audio(short, 16_000)) == 16
    with pytest.raises(TooShortError):
        load_audio(short, 16_000, min_seconds=0.5)
    assert all(
        issubclass(e, audio.AudioError) for e in (DecodeError, EmptyAudioError, NonFiniteAudioError, TooShortError)
    )


def test_silence_detection():
    assert audio.is_silent(np.zeros(1000))
    assert audio.is_silent(1e-5 * np.ones(1000))
    assert not audio.is_silent(tone(16_000))


def test_crop_modes():
    x = np.arange(10, dtype=np.float32)
    assert list(audio.crop(x, 4, "center")) == [3, 4, 5, 6]
    assert list(audio.crop(x, 12, "random")) == list(range(10)) + [0, 0]
    y = audio.crop(torch.arange(10.0)[None], 4, "random", np.random.default_rng(0))
    assert y.shape == (1, 4) and float(y[0, 1] - y[0, 0]) == 1


def test_save_audio_atomic_and_flac_bytes(tmp_path):
    x = tone(24_000).astype(np.float32)
    path = audio.save_audio(tmp_path / "out" / "a.wav", torch.from_numpy(x), 24_000)
    assert np.allclose(load_audio(path, 24_000), x, atol=1e-3)
    assert not list(path.parent.glob("*.tmp"))
    assert np.allclose(load_audio(audio.encode_audio(x, 24_000), 24_000), x, atol=1e-3)


def test_logmel_batched_and_peaks_at_tone():
    sr = 24_000
    mel = LogMel(sr, n_fft=1024, hop_length=240, n_mels=64)
    wave = torch.from_numpy(np.stack([tone(sr, 1.0, freq=f) for f in (300.0, 3000.0)])).float()
    out = mel(wave)
    assert out.shape == (2, 64, sr // 240 + 1)
    assert torch.isfinite(out).all()
    low, high = out.mean(-1).argmax(-1)
    assert low < high  # the 3 kHz tone lands in a higher mel band
    assert torch.allclose(mel(wave[0]), out[0], atol=1e-4)  # unbatched == batched
    assert torch.allclose(audio.log_mel(wave, sr, 1024, 240, 64), out)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="ffmpeg not installed")
def test_ffmpeg_made_mp3_decodes(tmp_path):
    wav = tmp_path / "a.wav"
    sf.write(wav, tone(44_100, 1.0), 44_100)
    mp3 = tmp_path / "a.mp3"
    subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", wav, "-b:a", "64k", mp3], check=True)
    assert len(load_audio(mp3, 22_050)) > 20_000


def test_batch_resampling_matches_one_clip_at_a_time():
    from musiclm.audio import resample, resample_batch

    waves = torch.randn(3, 4800)
    one_by_one = torch.stack([torch.from_numpy(resample(w.numpy(), 24_000, 16_000)) for w in waves])
    assert torch.equal(resample_batch(waves, 24_000, 16_000), one_by_one)
    assert resample_batch(waves, 16_000, 16_000) is waves
