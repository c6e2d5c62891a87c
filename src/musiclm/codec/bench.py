"""`make bench` section for the codec: encode+decode seconds per 10 s of audio (and the real-time factor: seconds of
compute per second of audio, < 1 = faster than real time) of the demo and paper profiles with random weights, in
fp32 eager, under bf16 autocast, `torch.compile`d (`CodecModule.compile_inference`) and both, with the fp32/bf16
matmul rates measured in the same section; the share of codes bf16 and compilation leave unchanged (neither path
is exact, and a deep RVQ level of random weights flips on rounding, so the speed is only worth having where that
share is, on the user's trained codec); parameter counts, peak memory."""

from __future__ import annotations

import contextlib
import resource
import time

import torch

from musiclm.bench import matmul_gflops
from musiclm.codec.module import CodecModule
from musiclm.config import linked, stage_settings


def profile_settings(profile: str) -> dict:
    """Model kwargs of configs/codec.yaml overlaid with the profile, as `musiclm train codec` sees them."""
    return linked(*stage_settings("codec", profile), CodecModule.cli_links)


def time_codec(m: CodecModule, wave: torch.Tensor, repeats: int, bf16: bool = False) -> tuple[float, float]:
    """(encode, decode) seconds, the mean of `repeats` calls after one warm-up call."""
    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if bf16 else contextlib.nullcontext()
    with ctx:
        m.decode(m.encode(wave))
        enc = dec = 0.0
        for _ in range(repeats):
            t0 = time.perf_counter()
            codes = m.encode(wave)
            t1 = time.perf_counter()
            m.decode(codes)
            enc, dec = enc + t1 - t0, dec + time.perf_counter() - t1
    return enc / repeats, dec / repeats


def codes_agreement(m: CodecModule, wave: torch.Tensor, codes: torch.Tensor) -> float:
    """Share of the fp32 codes that encoding under bf16 autocast reproduces (a deep RVQ level flips on tiny
    changes of its residual, so this falls with depth even when the audio is the same)."""
    with torch.autocast("cpu", dtype=torch.bfloat16):
        return (m.encode(wave) == codes).float().mean().item()


@torch.inference_mode()
def measure(profile: str, seconds: float = 10.0, repeats: int = 2, compiled: bool = True) -> dict:
    torch.manual_seed(0)
    m = CodecModule(**profile_settings(profile)).eval()
    wave = 0.1 * torch.randn(1, int(seconds * m.sample_rate))
    codes = m.encode(wave)  # k-means init of the random codebooks
    enc, dec = time_codec(m, wave, repeats)
    enc16, dec16 = time_codec(m, wave, repeats, bf16=True)
    per10 = 10.0 / seconds
    out = {
        "kbps": m.kbps(),
        "frame_rate_hz": m.frame_rate,
        "generator_params_m": round(sum(p.numel() for p in m.generator.parameters()) / 1e6, 2),
        "discriminator_params_m": round(sum(p.numel() for p in m.discriminators.parameters()) / 1e6, 2),
        "audio_seconds": seconds,
        "encode_rtf": round(enc / seconds, 4),
        "decode_rtf": round(dec / seconds, 4),
        "encode_decode_rtf": round((enc + dec) / seconds, 4),
        "encode_decode_s_per_10s": round((enc + dec) * per10, 3),
        "encode_decode_s_per_10s_bf16_autocast": round((enc16 + dec16) * per10, 3),
        "codes_unchanged_bf16_autocast": round(codes_agreement(m, wave, codes), 3),
    }
    if compiled:
        t0 = time.perf_counter()
        m.compile_inference().decode(m.encode(wave))
        out["compile_s"] = round(time.perf_counter() - t0, 1)
        out["codes_unchanged_compiled"] = round((m.encode(wave) == codes).float().mean().item(), 3)
        cenc, cdec = time_codec(m, wave, repeats)
        out["encode_decode_s_per_10s_compiled"] = round((cenc + cdec) * per10, 3)
        cenc16, cdec16 = time_codec(m, wave, repeats, bf16=True)
        out["encode_decode_s_per_10s_compiled_bf16"] = round((cenc16 + cdec16) * per10, 3)
    return out


def bench() -> dict:
    out = {
        "matmul_fp32_gflops": round(matmul_gflops(torch.float32), 1),
        "matmul_bf16_gflops": round(matmul_gflops(torch.bfloat16), 1),
        "demo": measure("demo", compiled=False),  # 0.03 s per 10 s: compiling cannot pay off
        "paper": measure("paper"),
    }
    out["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    return out
