"""Worker for the 2-process gloo test of the gathered contrastive loss (spawned by tests/test_mulan.py).

Each rank holds half of a fixed global batch, embeds it with a shared linear layer, and saves its loss and its
gradients (after averaging over ranks, as DDP does) for the parent to compare with a single-process run.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F

from musiclm.mulan.loss import ContrastiveLoss


def global_batch(n: int = 8, d_in: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, d_in, generator=g), torch.randn(n, d_in, generator=g)


def model(kind: str, seed: int = 1) -> tuple[torch.nn.Linear, torch.nn.Linear, ContrastiveLoss]:
    torch.manual_seed(seed)
    return torch.nn.Linear(6, 4), torch.nn.Linear(6, 4), ContrastiveLoss(kind, init_temperature=0.5)


def step(kind: str, audio_in: torch.Tensor, text_in: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Loss on this process's rows and the parameter gradients of the two projections and the temperature."""
    fa, ft, loss_fn = model(kind)
    loss = loss_fn(F.normalize(fa(audio_in), dim=-1), F.normalize(ft(text_in), dim=-1))
    loss.backward()
    named = {**{f"a.{k}": p for k, p in fa.named_parameters()}, **{f"t.{k}": p for k, p in ft.named_parameters()}}
    named.update({f"loss.{k}": p for k, p in loss_fn.named_parameters()})
    return loss.detach(), {k: p.grad.detach().clone() for k, p in named.items()}


def worker(rank: int, world_size: int, port: int, out_dir: str, kind: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        audio, text = global_batch()
        n = len(audio) // world_size
        loss, grads = step(kind, audio[rank * n : (rank + 1) * n], text[rank * n : (rank + 1) * n])
        dist.all_reduce(loss)
        for g in grads.values():
            dist.all_reduce(g)  # DDP averages gradients over processes
        if rank == 0:
            torch.save(
                {"loss": loss / world_size, "grads": {k: g / world_size for k, g in grads.items()}},
                os.path.join(out_dir, f"{kind}.pt"),
            )
    finally:
        dist.destroy_process_group()
