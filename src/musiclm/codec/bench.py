"""`make bench` section for the codec: encode+decode real-time factor (seconds of compute per second of audio,
< 1 = faster than real time) of the demo and paper profiles with random weights, parameter counts, peak memory."""

from __future__ import annotations

import resource
import time

import torch

from musiclm.codec.module import CodecModule
from musiclm.config import linked, stage_settings


def profile_settings(profile: str) -> dict:
    """Model kwargs of configs/codec.yaml overlaid with the profile, as `musiclm train codec` sees them."""
    return linked(*stage_settings("codec", profile), CodecModule.cli_links)


@torch.inference_mode()
def measure(profile: str, seconds: float, repeats: int = 2) -> dict:
    torch.manual_seed(0)
    m = CodecModule(**profile_settings(profile)).eval()
    wave = 0.1 * torch.randn(1, int(seconds * m.sample_rate))
    m.decode(m.encode(wave))  # warm-up (and k-means init of the random codebooks)
    enc = dec = 0.0
    for _ in range(repeats):
        t0 = time.perf_counter()
        codes = m.encode(wave)
        t1 = time.perf_counter()
        m.decode(codes)
        enc, dec = enc + t1 - t0, dec + time.perf_counter() - t1
    return {
        "kbps": m.kbps(),
        "frame_rate_hz": m.frame_rate,
        "generator_params_m": round(sum(p.numel() for p in m.generator.parameters()) / 1e6, 2),
        "discriminator_params_m": round(sum(p.numel() for p in m.discriminators.parameters()) / 1e6, 2),
        "audio_seconds": seconds,
        "encode_rtf": round(enc / repeats / seconds, 4),
        "decode_rtf": round(dec / repeats / seconds, 4),
        "encode_decode_rtf": round((enc + dec) / repeats / seconds, 4),
    }


def bench() -> dict:
    out = {"demo": measure("demo", 10.0), "paper": measure("paper", 2.0)}
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out
