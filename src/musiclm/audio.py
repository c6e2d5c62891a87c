"""The one place that decodes, resamples, crops and analyses audio; every stage goes through here.

Decoding is libsndfile (soundfile): wav/flac/ogg-vorbis/opus/mp3 at any rate, depth and channel count.
Resampling is soxr. Spectrograms are torch.stft so they run batched on any device.
"""

from __future__ import annotations

import functools
import io
import math
import os
import tempfile
from pathlib import Path
from typing import Literal

import numpy as np
import soundfile as sf
import soxr
import torch
import torch.nn.functional as F
from torch import nn

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".oga", ".opus", ".mp3", ".aif", ".aiff", ".au", ".w64", ".caf")


class AudioError(ValueError):
    """Base class: the input is not usable audio. `reason` is a short stable tag for manifests and counters."""

    reason = "audio_error"


class DecodeError(AudioError):
    reason = "undecodable"


class EmptyAudioError(AudioError):
    reason = "empty"


class NonFiniteAudioError(AudioError):
    reason = "non_finite"


class TooShortError(AudioError):
    reason = "too_short"


Source = str | os.PathLike | bytes


def load_audio(
    src: Source,
    sample_rate: int,
    *,
    min_seconds: float = 0.0,
    offset_seconds: float = 0.0,
    duration_seconds: float | None = None,
) -> np.ndarray:
    """Decode `src` (path or encoded bytes) to float32 mono at `sample_rate`.

    Raises a typed AudioError subclass for undecodable, empty, non-finite or too-short input so callers
    can skip and count bad files instead of crashing.
    """
    name = "<bytes>" if isinstance(src, bytes) else os.fspath(src)
    try:
        with sf.SoundFile(io.BytesIO(src) if isinstance(src, bytes) else name) as f:
            sr_in = f.samplerate
            if offset_seconds:
                f.seek(min(int(offset_seconds * sr_in), f.frames))
            frames = -1 if duration_seconds is None else int(round(duration_seconds * sr_in))
            x = f.read(frames, dtype="float32", always_2d=True)
    except Exception as e:
        raise DecodeError(f"{name}: cannot decode ({e})") from e
    if x.size == 0:
        raise EmptyAudioError(f"{name}: no samples")
    if not np.isfinite(x).all():
        raise NonFiniteAudioError(f"{name}: contains NaN or inf samples")
    x = x.mean(axis=1) if x.shape[1] > 1 else x[:, 0]
    x = resample(x, sr_in, sample_rate)
    if len(x) < min_seconds * sample_rate:
        raise TooShortError(f"{name}: {len(x) / sample_rate:.3f} s is shorter than {min_seconds} s")
    return np.ascontiguousarray(x, dtype=np.float32)


def resample(x: np.ndarray, sr_in: int, sr_out: int) -> np.ndarray:
    """Band-limited resampling of a 1-D or [T, C] float array (soxr, high quality)."""
    if sr_in == sr_out:
        return x.astype(np.float32, copy=False)
    return soxr.resample(x, sr_in, sr_out, quality="HQ").astype(np.float32, copy=False)


def resample_batch(waves: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    """[B, T] float waves -> [B, T'] at `sr_out`, the batch resampled in one soxr call (its channels)."""
    if sr_in == sr_out:
        return waves
    return torch.from_numpy(resample(waves.detach().cpu().numpy().T, sr_in, sr_out).T.copy())


def rms_db(x: np.ndarray | torch.Tensor) -> float:
    """Root-mean-square level in dBFS (-inf for digital silence)."""
    x = torch.as_tensor(x, dtype=torch.float32)
    rms = float(x.pow(2).mean().sqrt()) if x.numel() else 0.0
    return 20 * math.log10(rms) if rms > 0 else -math.inf


def is_silent(x: np.ndarray | torch.Tensor, threshold_db: float = -60.0) -> bool:
    """True when the clip's RMS level is below `threshold_db` dBFS."""
    return rms_db(x) < threshold_db


def crop(
    x: np.ndarray | torch.Tensor,
    length: int,
    mode: Literal["random", "center", "start"] = "random",
    rng: np.random.Generator | None = None,
) -> np.ndarray | torch.Tensor:
    """Crop the last axis to `length` samples, zero-padding on the right when shorter."""
    n = x.shape[-1]
    if n < length:
        pad = [(0, 0)] * (x.ndim - 1) + [(0, length - n)]
        return F.pad(x, (0, length - n)) if isinstance(x, torch.Tensor) else np.pad(x, pad)
    if mode == "random":
        start = int((rng or np.random.default_rng()).integers(0, n - length + 1))
    elif mode == "center":
        start = (n - length) // 2
    else:
        start = 0
    return x[..., start : start + length]


def encode_audio(x: np.ndarray, sample_rate: int, format: str = "FLAC", subtype: str | None = None) -> bytes:
    """Encode mono float audio to bytes (FLAC 16-bit by default, the shard format)."""
    buf = io.BytesIO()
    if format.upper() == "FLAC" and subtype is None:
        subtype = "PCM_16"
    sf.write(buf, np.clip(x, -1.0, 1.0), sample_rate, format=format, subtype=subtype)
    return buf.getvalue()


def save_audio(path: str | os.PathLike, x: np.ndarray | torch.Tensor, sample_rate: int) -> Path:
    """Write a wav/flac atomically (temp file + rename), so an interrupted write leaves no half file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    x = x.detach().float().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x, np.float32)
    fmt = path.suffix.lstrip(".").upper() or "WAV"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        sf.write(tmp, np.clip(x.reshape(-1), -1.0, 1.0), sample_rate, format=fmt, subtype="PCM_16")
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, f_min: float, f_max: float) -> torch.Tensor:
    """Slaney-normalised mel filterbank [n_freqs, n_mels] (HTK mel scale), built in torch."""

    def hz_to_mel(f: torch.Tensor) -> torch.Tensor:
        return 2595.0 * torch.log10(1.0 + f / 700.0)

    def mel_to_hz(m: torch.Tensor) -> torch.Tensor:
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = torch.linspace(0, sample_rate / 2, n_fft // 2 + 1, dtype=torch.float64)
    mels = torch.linspace(
        hz_to_mel(torch.tensor(f_min)), hz_to_mel(torch.tensor(f_max)), n_mels + 2, dtype=torch.float64
    )
    hz = mel_to_hz(mels)
    lower, center, upper = hz[:-2], hz[1:-1], hz[2:]
    up = (freqs[:, None] - lower) / (center - lower)
    down = (upper - freqs[:, None]) / (upper - center)
    fb = torch.clamp(torch.minimum(up, down), min=0.0)
    fb = fb * (2.0 / (upper - lower))  # slaney area normalisation: equal energy per band
    return fb.float()


class LogMel(nn.Module):
    """Batched log-mel spectrogram: wave [..., T] -> [..., n_mels, frames]; the one implementation for all stages.

    Frames are centred (torch.stft center=True), so frames = T // hop + 1.
    """

    def __init__(
        self,
        sample_rate: int = 24_000,
        n_fft: int = 1024,
        hop_length: int = 240,
        n_mels: int = 80,
        f_min: float = 0.0,
        f_max: float | None = None,
        power: float = 2.0,
        floor: float = 1e-5,
    ):
        super().__init__()
        self.sample_rate, self.n_fft, self.hop_length, self.n_mels = sample_rate, n_fft, hop_length, n_mels
        self.power, self.floor = power, floor
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        fb = mel_filterbank(n_fft, n_mels, sample_rate, f_min, f_max or sample_rate / 2)
        self.register_buffer("fb", fb, persistent=False)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        shape = wave.shape
        x = wave.reshape(-1, shape[-1]).float()
        spec = torch.stft(
            x, self.n_fft, self.hop_length, window=self.window.to(x.device), center=True, return_complex=True
        )
        mag = spec.abs().pow(self.power)  # [B, F, frames]
        mel = torch.matmul(mag.transpose(1, 2), self.fb.to(x.device)).transpose(1, 2)
        out = torch.log(torch.clamp(mel, min=self.floor))
        return out.reshape(*shape[:-1], self.n_mels, out.shape[-1])

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length


@functools.lru_cache(maxsize=16)
def _logmel(sample_rate: int, n_fft: int, hop_length: int, n_mels: int) -> LogMel:
    return LogMel(sample_rate, n_fft, hop_length, n_mels)


def log_mel(
    wave: torch.Tensor | np.ndarray, sample_rate: int, n_fft: int = 1024, hop_length: int = 240, n_mels: int = 80
) -> torch.Tensor:
    """Functional form of LogMel for scripts and notebooks (same filterbank, cached per configuration)."""
    wave = torch.as_tensor(wave)
    return _logmel(sample_rate, n_fft, hop_length, n_mels).to(wave.device)(wave)
