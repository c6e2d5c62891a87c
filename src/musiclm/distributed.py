"""Process-group helpers shared by the stages: FSDP2 sharding and world-size checks made at train time.

Anything that depends on the process group is decided when training starts (`setup`/`configure_model`), never in
`__init__`: a module built before the group exists (the normal case with Lightning) must still gather and sync.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
from torch import nn

from musiclm.compat import (
    checkpoint_module,
    ddp_kwargs,
    model_parallel_sizes,
    saves_distributed_checkpoint,
    set_data_parallel_size,
)


def world() -> tuple[int, int]:
    """(rank, world size) of the default process group, (0, 1) when there is none. Asked on every call, never
    cached: a module built before the group exists must still gather and sync once it does."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def world_size() -> int:
    return world()[1]


def launcher_rank() -> int:
    """This process's global rank as set by the launcher (torchrun's RANK, SLURM's SLURM_PROCID), 0 when launched
    alone: lets a single-process step that follows training under `srun make ...` run once, not once per rank."""
    for var in ("RANK", "SLURM_PROCID"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return 0


def close_process_group() -> None:
    """Destroy the process group before the interpreter exits: left to shutdown, gloo's threads can abort a rank
    ("terminate called without an active exception") after its work is done, and its launcher then sees a crash."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def checkpoint_blocks(module: nn.Module, block_types: tuple[type[nn.Module], ...]) -> int:
    """Activation checkpointing (composable, non-reentrant) on every block of `block_types`: their activations are
    recomputed in backward instead of stored. Idempotent; returns the number of blocks newly checkpointed."""
    n = 0
    for block in module.modules():
        if isinstance(block, block_types) and not getattr(block, "_musiclm_checkpointed", False):
            checkpoint_module(block)
            block._musiclm_checkpointed = True
            n += 1
    return n


def shard_blocks(
    module: nn.Module,
    block_types: tuple[type[nn.Module], ...],
    device_mesh=None,
    activation_checkpointing: bool = False,
    param_dtype: torch.dtype | None = None,
) -> nn.Module:
    """FSDP2: `fully_shard` every block of `block_types`, then the root, so each block's weights are gathered only
    while it runs. Idempotent (a resumed or re-configured module is not wrapped twice).

    A LightningModule is not itself made an FSDP unit (its class must stay the registered stage class, and Lightning
    calls its hooks, not its `forward`): each of its direct children that holds parameters becomes a root unit
    instead, so every trainable parameter is sharded and its gradient reduced across the data-parallel ranks."""
    import lightning as L
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    if isinstance(module, FSDPModule):
        return module
    mesh = (
        device_mesh["data_parallel"]
        if device_mesh is not None and "data_parallel" in (device_mesh.mesh_dim_names or ())
        else device_mesh
    )
    mp = (
        MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32)
        if param_dtype
        else MixedPrecisionPolicy()
    )
    if activation_checkpointing:
        checkpoint_blocks(module, block_types)
    for block in module.modules():
        if (
            isinstance(block, block_types)
            and not isinstance(block, FSDPModule)
            and any(True for _ in block.parameters())
        ):
            fully_shard(block, mesh=mesh, mp_policy=mp)
    if not isinstance(module, L.LightningModule):
        fully_shard(module, mesh=mesh, mp_policy=mp)
        return module
    if any(True for _ in module.parameters(recurse=False)):
        raise ValueError(f"{type(module).__name__} holds parameters of its own: move them into a submodule to shard it")
    for child in module.children():
        if not isinstance(child, FSDPModule) and any(True for _ in child.parameters()):
            fully_shard(child, mesh=mesh, mp_policy=mp)
    return module


def configure_sharding(
    module, activation_checkpointing: bool = False, block_types: tuple[type[nn.Module], ...] | None = None
) -> None:
    """The stages' `configure_model`: FSDP2 of the transformer blocks (`block_types`, by default x-transformers')
    under Lightning's ModelParallelStrategy (`module.device_mesh` is set), activation checkpointing of those blocks
    when asked (any strategy)."""
    blocks = block_types or transformer_block_types()
    mesh = getattr(module, "device_mesh", None)
    if mesh is not None:
        shard_blocks(module, blocks, mesh, activation_checkpointing)
    elif activation_checkpointing:
        checkpoint_blocks(module, blocks)


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in module.parameters())


def plain(x: torch.Tensor) -> torch.Tensor:
    """A DTensor's full value (a collective: call it on every rank), any other tensor unchanged."""
    from torch.distributed.tensor import DTensor

    return x.full_tensor() if isinstance(x, DTensor) else x


def transformer_block_types() -> tuple[type[nn.Module], ...]:
    """x-transformers' attention and feed-forward blocks: the FSDP wrap unit for every transformer stage."""
    from x_transformers import Attention, FeedForward

    return (Attention, FeedForward)


class StageDDPStrategy(DDPStrategy):
    """Lightning's DDPStrategy whose `find_unused_parameters` follows the module when left unset: on for manual
    optimisation (the codec's GAN, where each backward reaches only the generator or only the discriminators, and its
    discriminators sit out the first `gan_start_step` steps), off otherwise (no extra graph traversal)."""

    def __init__(
        self,
        find_unused_parameters: bool | None = None,
        static_graph: bool = False,
        gradient_as_bucket_view: bool = False,
        process_group_backend: str | None = None,
    ) -> None:
        super().__init__(
            process_group_backend=process_group_backend,
            static_graph=static_graph,
            gradient_as_bucket_view=gradient_as_bucket_view,
        )
        self.find_unused_parameters = find_unused_parameters

    def configure_ddp(self) -> None:
        find = self.find_unused_parameters
        if find is None:
            find = not self.lightning_module.automatic_optimization
        ddp_kwargs(self)["find_unused_parameters"] = bool(find)
        super().configure_ddp()


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's ModelParallelStrategy (FSDP2 through each module's `configure_model`) whose
    `data_parallel_size: auto` means every process that is not tensor-parallel (world size / tensor_parallel_size),
    so one config serves any DEVICES x NODES; Lightning's own `auto` is the number of nodes."""

    def setup_environment(self) -> None:
        data_parallel, tensor_parallel = model_parallel_sizes(self)
        if data_parallel == "auto" and tensor_parallel != "auto":
            world = self.num_nodes * self.num_processes
            if world % int(tensor_parallel):
                raise ValueError(f"world size {world} is not a multiple of tensor_parallel_size {tensor_parallel}")
            set_data_parallel_size(self, world // int(tensor_parallel))
        super().setup_environment()

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        """A sharded checkpoint is a folder written by every rank: write it beside the old one and swap them on rank
        0, so a `kill -9` during the save leaves the previous complete checkpoint (`last.ckpt`, or `last.ckpt.old`
        for the instant between the two renames, which `recover_checkpoint` puts back)."""
        if not saves_distributed_checkpoint(self):
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        path = Path(self.broadcast(str(filepath)))
        partial, old = path.with_name(path.name + ".partial"), path.with_name(path.name + ".old")
        if self.global_rank == 0 and partial.exists():
            shutil.rmtree(partial)  # left by a save that was killed half-way
        self.barrier()
        super().save_checkpoint(checkpoint, partial, storage_options)
        self.barrier()
        if self.global_rank == 0:
            if old.exists():
                _remove(old)
            if path.exists():
                path.rename(old)
            partial.rename(path)
            if old.exists():
                _remove(old)
        self.barrier()


def _remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def recover_checkpoint(path: Path) -> Path | None:
    """`path` if it exists; else its `.old` twin left by a save killed between two renames (moved back); else None."""
    old = path.with_name(path.name + ".old")
    if not path.exists() and old.exists():
        try:
            old.rename(path)
        except FileNotFoundError:  # another rank moved it first
            pass
    return path if path.exists() else None


class BlockFSDPStrategy(FSDPStrategy):
    """Classic FSDP (GPU only) wrapping each x-transformers block: the alternative to FSDP2 in configs/trainer/."""

    def __init__(
        self,
        activation_checkpointing: bool = False,
        sharding_strategy: str = "FULL_SHARD",
        state_dict_type: str = "sharded",
        cpu_offload: bool = False,
    ) -> None:
        blocks = set(transformer_block_types())
        super().__init__(
            auto_wrap_policy=blocks,
            activation_checkpointing_policy=blocks if activation_checkpointing else None,
            sharding_strategy=sharding_strategy,
            state_dict_type=state_dict_type,
            cpu_offload=cpu_offload,
        )
