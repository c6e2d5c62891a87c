"""Worker for the 2-process gloo test of FSDP2 sharding (spawned by tests/test_distributed.py).

Each rank builds the same tiny module, shards it with the module's own `configure_model` on a 1-D data-parallel
mesh (as Lightning's ModelParallelStrategy does), runs forward/backward on its half of a fixed global batch and
saves, on rank 0, the loss averaged over ranks and the full (unsharded) gradients, for the parent to compare with one
process holding the whole batch.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import init_device_mesh
from torch.distributed.tensor import DTensor

TEXTS = ["a sine tone", "a square wave at 440 hertz", "noise", "a slow sine"]


def build(stage: str, activation_checkpointing: bool):
    torch.manual_seed(0)
    if stage == "mulan":
        from musiclm.mulan.module import MuLanModule

        return MuLanModule(
            sample_rate=16_000, window_seconds=1.0, n_mels=32, hop_length=320, patch_freq=16, patch_time=2,
            audio_dim=32, audio_depth=2, audio_heads=2, text_tower="scratch", text_dim=32, text_depth=1, text_heads=2,
            num_quantizers=2, codebook_size=8, dropout=0.0, activation_checkpointing=activation_checkpointing,
        )  # fmt: skip
    from musiclm.lm.module import SemanticStage

    return SemanticStage(
        mulan_levels=2, mulan_codebook_size=8, semantic_codebook_size=16, semantic_rate=25.0, window_seconds=2.0,
        dim=32, depth=2, heads=2, dropout=0.0, cond_dropout=0.0, activation_checkpointing=activation_checkpointing,
    )  # fmt: skip


def global_batch(stage: str) -> dict:
    g = torch.Generator().manual_seed(1)
    if stage == "mulan":
        return {"audio": 0.3 * torch.randn(4, 16_000, generator=g), "text": list(TEXTS)}
    mulan = torch.randint(0, 8, (4, 2), generator=g)
    return {"mulan": mulan, "semantic": torch.randint(0, 16, (4, 12), generator=g)}


def half(batch: dict, rank: int, world: int) -> dict:
    n = len(batch["text"] if "text" in batch else batch["mulan"]) // world
    return {k: v[rank * n : (rank + 1) * n] for k, v in batch.items()}


def loss_of(module, stage: str, batch: dict) -> torch.Tensor:
    if stage == "mulan":
        return module.loss_fn(module.embed_audio(batch["audio"]), module.embed_text(batch["text"]))
    ce, _, valid, _ = module.forward_loss(batch)
    return ce[valid.expand_as(ce)].mean()


def step(module, stage: str, batch: dict) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    loss = loss_of(module, stage, batch)
    loss.backward()
    grads = {}
    for name, p in module.named_parameters():
        if p.grad is not None:
            g = p.grad
            grads[name] = (g.full_tensor() if isinstance(g, DTensor) else g).detach().clone()
    return loss.detach(), grads


def worker(rank: int, world_size: int, port: int, out_dir: str, cases: list[tuple[str, bool]]) -> None:
    """`cases`: (stage, activation_checkpointing) pairs, run one after the other in the same process group."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world_size)
    try:
        for stage, activation_checkpointing in cases:
            module = build(stage, activation_checkpointing)
            module._device_mesh = init_device_mesh(
                "cpu", (world_size, 1), mesh_dim_names=("data_parallel", "tensor_parallel")
            )
            module.configure_model()
            module.configure_model()  # idempotent: a second call (Lightning re-runs it per fit) wraps nothing twice
            sharded = all(isinstance(p, DTensor) for p in module.parameters())
            loss, grads = step(module, stage, half(global_batch(stage), rank, world_size))
            dist.all_reduce(loss)
            if rank == 0:
                torch.save(
                    {"loss": loss / world_size, "grads": grads, "all_sharded": sharded},
                    os.path.join(out_dir, f"{stage}.pt"),
                )
    finally:
        dist.destroy_process_group()
