"""Frechet Audio Distance between two sets of clip embeddings, accumulated as sums so it syncs by all-reduce.

FAD fits a Gaussian to each set (mean, covariance) and measures the Frechet (2-Wasserstein) distance between them:
|mu_r - mu_f|^2 + tr(S_r + S_f - 2 (S_r^1/2 S_f S_r^1/2)^1/2). The symmetric form keeps every matrix square root
on a symmetric PSD matrix, so eigh gives it exactly with no complex round-off, even when few samples make the
covariances singular.
"""

from __future__ import annotations

import math

import torch
from torchmetrics import Metric

from musiclm.audio import log_mel


class FrechetAudioDistance(Metric):
    """update(emb [N, D], real=True|False) any number of times (and on any number of processes); compute() -> FAD.

    States are count, sum and sum of outer products per set (float64), reduced by "sum" across processes, so
    memory is O(D^2) whatever the number of clips. `num_features` allocates them up front; without it they are
    sized on the first update (then every process must see at least one batch before compute()).
    `eps` is added to both covariances' diagonals so that near-singular estimates (fewer clips than dimensions)
    stay well conditioned. Use update()/compute(): a single batch holds one set only, so forward() has no meaning.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = False

    def __init__(self, num_features: int | None = None, eps: float = 1e-6, **kwargs):
        super().__init__(**kwargs)
        self.eps = eps
        d = num_features or 0
        for split in ("real", "fake"):
            self.add_state(f"{split}_n", torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{split}_sum", torch.zeros(d, dtype=torch.float64), dist_reduce_fx="sum")
            self.add_state(f"{split}_outer", torch.zeros(d, d, dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, emb: torch.Tensor, real: bool) -> None:
        x = emb.detach().reshape(len(emb), -1).to(torch.float64)
        split = "real" if real else "fake"
        if getattr(self, f"{split}_sum").numel() == 0:  # lazily sized states
            for s in ("real", "fake"):
                setattr(self, f"{s}_sum", x.new_zeros(x.shape[1]))
                setattr(self, f"{s}_outer", x.new_zeros(x.shape[1], x.shape[1]))
        setattr(self, f"{split}_n", getattr(self, f"{split}_n") + len(x))
        setattr(self, f"{split}_sum", getattr(self, f"{split}_sum") + x.sum(0))
        setattr(self, f"{split}_outer", getattr(self, f"{split}_outer") + x.T @ x)

    def _gaussian(self, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        n, s, outer = getattr(self, f"{split}_n"), getattr(self, f"{split}_sum"), getattr(self, f"{split}_outer")
        if n < 2:
            raise ValueError(f"FAD needs at least 2 {split} embeddings, got {int(n)}")
        mu = s / n
        cov = (outer - n * torch.outer(mu, mu)) / (n - 1)
        return mu, cov + self.eps * torch.eye(len(mu), dtype=cov.dtype, device=cov.device)

    def compute(self) -> torch.Tensor:
        mu_r, cov_r = self._gaussian("real")
        mu_f, cov_f = self._gaussian("fake")
        return frechet_distance(mu_r, cov_r, mu_f, cov_f).float()


def _sqrt_psd(a: torch.Tensor) -> torch.Tensor:
    """Square root of a symmetric PSD matrix by eigen-decomposition (negative round-off eigenvalues clamped)."""
    w, v = torch.linalg.eigh((a + a.T) / 2)
    return (v * w.clamp(min=0).sqrt()) @ v.T


def frechet_distance(mu1: torch.Tensor, cov1: torch.Tensor, mu2: torch.Tensor, cov2: torch.Tensor) -> torch.Tensor:
    """Frechet distance between N(mu1, cov1) and N(mu2, cov2), in float64."""
    mu1, cov1, mu2, cov2 = (t.to(torch.float64) for t in (mu1, cov1, mu2, cov2))
    r = _sqrt_psd(cov1)
    cross = torch.linalg.eigvalsh(r @ cov2 @ r).clamp(min=0).sqrt().sum()  # tr((S1^1/2 S2 S1^1/2)^1/2)
    return ((mu1 - mu2).square().sum() + cov1.trace() + cov2.trace() - 2 * cross).clamp(min=0)


def logmel_stats_embedding(wave: torch.Tensor, sample_rate: int, n_mels: int = 64) -> torch.Tensor:
    """Clip embedding that no trained model of ours produced: per mel band, mean and std of log-mel over time.

    wave [B, T] -> [B, 2 * n_mels]. Window ~43 ms (power of two), hop ~10 ms, so it means the same at any rate.
    Compare sets only at the same sample rate (the mel range ends at Nyquist).
    """
    n_fft = 2 ** round(math.log2(0.043 * sample_rate))
    hop = round(sample_rate / 100)
    mel = log_mel(torch.as_tensor(wave).float(), sample_rate, n_fft=n_fft, hop_length=hop, n_mels=n_mels)
    return torch.cat([mel.mean(-1), mel.std(-1)], dim=-1)
