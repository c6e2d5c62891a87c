"""`make bench` section for MuLan: training throughput and memory of the demo profile on random audio."""

from __future__ import annotations

import resource
import time

import torch

from musiclm.config import linked, stage_settings
from musiclm.mulan.module import MuLanModule

CAPTIONS = [
    "a calm piano piece in a minor key", "fast rock drums and electric guitar", "a slow ambient pad", "strings, waltz"
]


def demo_settings(profile: str = "demo") -> tuple[dict, dict]:
    """(model kwargs, data section) of configs/mulan.yaml overlaid with the profile, as `musiclm train` sees them:
    with the data section's sample rate and clip length linked into the model."""
    model, data = stage_settings("mulan", profile)
    return linked(model, data, MuLanModule.cli_links), data


def bench(steps: int = 6, profile: str = "demo") -> dict:
    model_kwargs, data = demo_settings(profile)
    torch.manual_seed(0)
    module = MuLanModule(**model_kwargs).train()
    optimizer = torch.optim.AdamW(p for p in module.parameters() if p.requires_grad)
    b, t = data["batch_size"], module.window_samples
    audio = 0.1 * torch.randn(b, t)
    texts = [CAPTIONS[i % len(CAPTIONS)] for i in range(b)]

    def step() -> None:
        loss = module.loss_fn(module.embed_audio(audio), module.embed_text(texts))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()  # warm-up: allocator, kernels
    t0 = time.perf_counter()
    for _ in range(steps):
        step()
    dt = (time.perf_counter() - t0) / steps
    return {
        "profile": profile,
        "batch_size": b,
        "clip_seconds": data["clip_seconds"],
        "trainable_params_m": round(sum(p.numel() for p in module.parameters() if p.requires_grad) / 1e6, 2),
        "train_step_s": round(dt, 3),
        "clips_per_s": round(b / dt, 1),
        "audio_seconds_per_s": round(b * data["clip_seconds"] / dt, 1),
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
    }
