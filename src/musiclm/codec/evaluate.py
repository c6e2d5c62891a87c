"""`musiclm eval codec --run RUN [--audio-dir DIR] [--out FILE] [--split val] [--max-clips N]`

Reconstructs the val split of the run's dataset (or every audio file under DIR, resampled) with the trained codec
at its full bitrate and reports mel distance and SI-SDR next to two references measured on the same clips: Opus
(ffmpeg/libopus) at the same nominal bitrate, and a freshly initialised codec of the same hyperparameters and seed
(the "untrained" floor the training must beat).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
from pathlib import Path

import numpy as np
import torch

from musiclm.artifacts import atomic_write_bytes, build_from_handoff, read_handoff, run_dir
from musiclm.audio import AudioError, load_audio
from musiclm.codec.module import CodecModule
from musiclm.data.shards import iter_tar_samples, list_shards
from musiclm.metrics.codec import mel_distance, si_sdr_db
from musiclm.paths import dataset_dirs, reports_dir, resolve


def clips_from_shards(split_dirs: list[Path], sample_rate: int, max_clips: int | None,
                      max_seconds: float) -> list[np.ndarray]:  # fmt: skip
    """The first clips of a split; of several datasets' splits, an equal share of `max_clips` from each."""
    out = []
    quota = math.ceil(max_clips / len(split_dirs)) if max_clips else None
    for split_dir in split_dirs:
        taken = 0
        for s in (s for shard in list_shards(split_dir) for s in iter_tar_samples(shard)):
            if quota and taken == quota:
                break
            out.append(load_audio(s["flac"], sample_rate, duration_seconds=max_seconds))
            taken += 1
    if not out:
        raise FileNotFoundError(f"no shards in {', '.join(map(str, split_dirs))}: build them with `make data`")
    return out[:max_clips] if max_clips else out


def clips_from_dir(audio_dir: Path, sample_rate: int, max_clips: int | None, max_seconds: float) -> list[np.ndarray]:
    """Every file under audio_dir that decodes (any format audio.py reads); others are skipped."""
    out = []
    for path in sorted(p for p in audio_dir.rglob("*") if p.is_file()):
        try:
            out.append(load_audio(path, sample_rate, min_seconds=0.5, duration_seconds=max_seconds))
        except AudioError:
            continue
        if max_clips and len(out) == max_clips:
            break
    if not out:
        raise FileNotFoundError(f"no decodable audio under {audio_dir}")
    return out


def opus_roundtrip(x: np.ndarray, sample_rate: int, kbps: float) -> tuple[np.ndarray, float]:
    """Encode with libopus at `kbps` and decode back; returns (audio aligned to x, actual kbps of the Ogg stream)."""
    common = ["ffmpeg", "-hide_banner", "-loglevel", "error"]
    raw = ["-f", "f32le", "-ar", str(sample_rate), "-ac", "1"]
    enc = subprocess.run(
        [*common, *raw, "-i", "pipe:", "-c:a", "libopus", "-b:a", f"{int(kbps * 1000)}", "-f", "ogg", "pipe:"],
        input=x.astype(np.float32).tobytes(), capture_output=True, check=True,
    ).stdout  # fmt: skip
    dec = subprocess.run([*common, "-i", "pipe:", *raw, "pipe:"], input=enc, capture_output=True, check=True).stdout
    y = np.frombuffer(dec, dtype=np.float32)
    return align(x, y), len(enc) * 8 / (len(x) / sample_rate) / 1000


def align(ref: np.ndarray, est: np.ndarray, max_lag: int = 2048) -> np.ndarray:
    """est shifted by the lag (|lag| <= max_lag) that maximises its cross-correlation with ref, cut/padded to ref."""
    n = len(ref) + len(est)
    xc = np.fft.irfft(np.fft.rfft(est, n) * np.conj(np.fft.rfft(ref, n)), n)
    lags = np.r_[0 : max_lag + 1, -max_lag:0]
    lag = int(lags[np.argmax(xc[lags])])
    est = est[lag:] if lag >= 0 else np.pad(est, (-lag, 0))
    return np.pad(est[: len(ref)], (0, max(0, len(ref) - len(est))))


@torch.no_grad()
def scores(ref: torch.Tensor, est: torch.Tensor, sample_rate: int) -> tuple[float, float]:
    return float(mel_distance(ref[None], est[None], sample_rate)), float(si_sdr_db(ref[None], est[None]))


def evaluate_codec(
    run: str, split: str = "val", data_dir: str | None = None, audio_dir: str | None = None, max_clips: int | None = 32,
    max_seconds: float = 10.0, seed: int = 0,
) -> dict:  # fmt: skip
    ckpt = read_handoff(run, "codec")
    model: CodecModule = build_from_handoff(ckpt, "codec")
    if model.hparams.get("cpu_threads"):  # the profile's choice for this small model on a shared CPU (see module.setup)
        torch.set_num_threads(model.hparams.cpu_threads)
    torch.manual_seed(seed)
    untrained = type(model)(**dict(model.hparams)).eval()  # the same class and config, never trained
    sr, kbps = model.sample_rate, model.kbps()
    if audio_dir is not None:
        clips = clips_from_dir(Path(audio_dir), sr, max_clips, max_seconds)
    else:
        data_dir = data_dir or ckpt.get("datamodule_hyper_parameters", {}).get("data_dir", "data/shards/synth")
        clips = clips_from_shards([resolve(d) / split for d in dataset_dirs(data_dir)], sr, max_clips, max_seconds)
    rows = []
    for x in clips:
        ref = torch.from_numpy(x)
        opus, opus_kbps = opus_roundtrip(x, sr, kbps)
        rows.append(
            (*scores(ref, model.reconstruct(ref[None])[0].cpu(), sr), *scores(ref, torch.from_numpy(opus), sr),
             scores(ref, untrained.reconstruct(ref[None])[0], sr)[0], opus_kbps)
        )  # fmt: skip
    m = np.asarray(rows, dtype=np.float64).mean(0)
    return {
        "mel_distance": m[0],
        "si_sdr_db": m[1],
        "kbps": kbps,
        "opus_mel_distance": m[2],
        "opus_si_sdr_db": m[3],
        "opus_kbps_actual": m[5],
        "untrained_mel_distance": m[4],
        "num_clips": len(clips),
        "source": str(audio_dir) if audio_dir else f"{data_dir}/{split}",
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="musiclm eval codec", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", default="demo")
    p.add_argument("--audio-dir", default=None, help="evaluate every audio file under DIR instead of the val split")
    p.add_argument("--data-dir", default=None, help="dataset folder (default: the one the codec was trained on)")
    p.add_argument("--split", default="val")
    p.add_argument("--max-clips", type=int, default=32)
    p.add_argument("--max-seconds", type=float, default=10.0, help="evaluate at most this much of each clip")
    p.add_argument("--out", type=Path, default=None, help="JSON report (default reports/<RUN>/codec_eval.json)")
    a = p.parse_args(argv)
    report = evaluate_codec(a.run, a.split, a.data_dir, a.audio_dir, a.max_clips, a.max_seconds)
    out = a.out or reports_dir() / run_dir(a.run).name / "codec_eval.json"
    atomic_write_bytes(out, json.dumps(report, indent=1).encode())
    print(json.dumps(report, indent=1))
    print(f"wrote {out}")
