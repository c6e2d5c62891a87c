"""K-means in torch: k-means++ seeding and mini-batch updates (Sculley, 2010): the
per-batch statistics here, the per-centroid rate counts/seen in SemanticTokenizer.

Mini-batch updates let the codebook be fitted by streaming frames through a normal Lightning training loop, so
fitting resumes from a checkpoint and scales across processes by summing per-cluster statistics.
"""

from __future__ import annotations

import torch


def assign(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Nearest centroid of each row of x [N, D]: (ids [N], squared distances [N])."""
    d = (x.pow(2).sum(-1, keepdim=True) - 2 * x @ centroids.T + centroids.pow(2).sum(-1)).clamp_min_(0)
    dist, ids = d.min(-1)
    return ids, dist


def kmeans_pp(x: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """k-means++ seeding: each new centre drawn with probability proportional to its squared distance."""
    n = x.shape[0]
    if n < k:
        raise ValueError(f"k-means++ needs at least k={k} points, got {n}")
    centres = [x[torch.randint(n, (1,), generator=generator)]]
    dist = (x - centres[0]).pow(2).sum(-1)
    for _ in range(1, k):
        probs = dist / dist.sum() if dist.sum() > 0 else torch.full_like(dist, 1 / n)
        c = x[torch.multinomial(probs, 1, generator=generator)]
        centres.append(c)
        dist = torch.minimum(dist, (x - c).pow(2).sum(-1))
    return torch.cat(centres)


def lloyd(x: torch.Tensor, centroids: torch.Tensor, iters: int = 10) -> torch.Tensor:
    """Full-batch refinement; an empty cluster keeps its centre."""
    for _ in range(iters):
        ids, _ = assign(x, centroids)
        sums = torch.zeros_like(centroids).index_add_(0, ids, x)
        counts = torch.bincount(ids, minlength=len(centroids)).to(x.dtype)
        nonempty = counts > 0
        centroids = centroids.clone()
        centroids[nonempty] = sums[nonempty] / counts[nonempty, None]
    return centroids


def minibatch_stats(x: torch.Tensor, centroids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per-cluster sums [K, D], counts [K] and the batch's mean squared distance (all-reducible)."""
    ids, dist = assign(x, centroids)
    sums = torch.zeros_like(centroids).index_add_(0, ids, x)
    counts = torch.bincount(ids, minlength=len(centroids)).to(x.dtype)
    return sums, counts, dist.mean()


def perplexity(counts: torch.Tensor) -> float:
    """exp(entropy) of the cluster histogram: the effective number of clusters in use."""
    p = counts.double() / counts.sum().clamp_min(1)
    p = p[p > 0]
    return float(torch.exp(-(p * p.log()).sum()))
