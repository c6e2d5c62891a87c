"""`make bench` section `pretrained`: tokenize throughput (audio-seconds per second) through the EnCodec adapter at
the real facebook/encodec_24khz size (random weights: speed does not depend on them) beside the demo profile's
trained codec on the same clips, plus decode real-time factors and parameter counts."""

from __future__ import annotations

import json
import time

import torch

from musiclm.codec.bench import profile_settings
from musiclm.codec.module import CodecModule
from musiclm.pretrained.codec import HFCodec


def encodec_24khz_config() -> dict:
    """facebook/encodec_24khz's architecture (its config.json's values), as plain JSON values."""
    from transformers import EncodecConfig

    config = EncodecConfig(target_bandwidths=[1.5, 3.0, 6.0, 12.0, 24.0], sampling_rate=24_000, audio_channels=1,
                           normalize=False, chunk_length_s=None, overlap=None, hidden_size=128, num_filters=32,
                           num_residual_layers=1, upsampling_ratios=[8, 5, 4, 2], codebook_size=1024,
                           num_lstm_layers=2, use_causal_conv=True)  # fmt: skip
    return json.loads(config.to_json_string(use_diff=False))


@torch.inference_mode()
def measure(codec, clips: int, seconds: float, batch: int) -> dict:
    waves = 0.1 * torch.randn(clips, int(seconds * codec.sample_rate), generator=torch.Generator().manual_seed(0))
    codec.decode(codec.tokenize(waves[:2]))  # warm-up (and, for our codec, k-means init of its random codebooks)
    t0 = time.perf_counter()
    codes = [codec.tokenize(waves[i : i + batch]) for i in range(0, clips, batch)]
    t1 = time.perf_counter()
    codec.decode(codes[0][:1])
    t2 = time.perf_counter()
    return {
        "levels": codec.num_levels,
        "frame_rate_hz": codec.frame_rate,
        "kbps": round(codec.kbps(), 3),
        "params_m": round(sum(p.numel() for n, p in codec.named_parameters() if "discriminator" not in n) / 1e6, 2),
        "tokenize_audio_seconds_per_s": round(clips * seconds / (t1 - t0), 2),
        "decode_rtf": round((t2 - t1) / seconds, 4),
    }


def bench(clips: int = 8, seconds: float = 8.0, batch: int = 4) -> dict:
    torch.manual_seed(0)
    encodec = HFCodec(encodec_24khz_config(), num_quantizers=8).eval()  # 6 kbps
    trained = CodecModule(**profile_settings("demo")).eval()
    out = {"encodec_24khz_6kbps": measure(encodec, clips, seconds, batch),
           "trained_codec_demo": measure(trained, clips, seconds, batch)}  # fmt: skip
    out["encodec_over_trained_throughput"] = round(
        out["encodec_24khz_6kbps"]["tokenize_audio_seconds_per_s"]
        / out["trained_codec_demo"]["tokenize_audio_seconds_per_s"], 3)  # fmt: skip
    out.update(clips=clips, clip_seconds=seconds, batch=batch)
    return out
