"""MuLan tokens: a residual VQ fitted on the training set's audio embeddings after the towers are trained
(`musiclm.mulan.fit_quantizer` runs the fit on a checkpoint).

The quantizer lives inside the MuLan module's state (`model.ckpt`), so every downstream stage, at training and at
inference, maps audio and text embeddings through the same table. Fitting runs in one process; codebook syncing is
switched off explicitly (vector-quantize-pytorch would otherwise decide it when the module is built, e.g. inside
DDP training, and then try to all-reduce during a single-process fit).
"""

from __future__ import annotations

import torch
from vector_quantize_pytorch import ResidualVQ

from musiclm.modes import eval_mode


def build_quantizer(dim: int, num_quantizers: int, codebook_size: int, kmeans_iters: int = 20) -> ResidualVQ:
    """Residual VQ with k-means initialisation, EMA codebooks and dead-code replacement; never synced."""
    return ResidualVQ(
        dim=dim,
        num_quantizers=num_quantizers,
        codebook_size=codebook_size,
        kmeans_init=True,
        kmeans_iters=kmeans_iters,
        decay=0.9,
        threshold_ema_dead_code=1,
        sync_codebook=False,
        sync_kmeans=False,
    )


def quantize(rvq: ResidualVQ, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, D] -> (quantized [B, D], indices [B, Q])."""
    q, idx, _ = rvq(x[:, None, :].float())
    return q[:, 0], idx[:, 0]


def relative_error(rvq: ResidualVQ, x: torch.Tensor) -> float:
    """sum ||x - q(x)||^2 / sum ||x||^2 with the codebooks frozen (eval mode)."""
    with eval_mode(rvq), torch.inference_mode():
        q, _ = quantize(rvq, x)
    return float((x - q).pow(2).sum() / x.pow(2).sum().clamp(min=1e-12))


def fit_residual_vq(rvq: ResidualVQ, x: torch.Tensor, epochs: int = 20, batch_size: int = 4096, seed: int = 0) -> float:
    """Fit the codebooks on embeddings x [N, D]: k-means on the first (largest possible) batch initialises each
    level on its residual, then EMA passes over shuffled batches refine them and revive dead codes.
    Returns the relative quantization error. The same x and seed give the same codebooks: vector-quantize-pytorch
    draws its k-means seeds and revived codes from torch's global generator, so the fit seeds it (and restores it
    afterwards); unseeded, two runs of one commit wrote different tokens from the same embeddings."""
    g = torch.Generator().manual_seed(seed)
    rvq.train()
    with torch.random.fork_rng(devices=[x.device.index or 0] if x.is_cuda else []), torch.no_grad():
        torch.manual_seed(seed)
        quantize(rvq, x[torch.randperm(len(x), generator=g)[: max(batch_size, rvq.codebook_size)]])  # k-means init
        for _ in range(epochs):
            for chunk in x[torch.randperm(len(x), generator=g)].split(batch_size):
                quantize(rvq, chunk)
    rvq.eval()
    return relative_error(rvq, x)
