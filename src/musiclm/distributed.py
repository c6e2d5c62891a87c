"""Process-group helpers shared by the stages: FSDP2 sharding and world-size checks made at train time.

Anything that depends on the process group is decided when training starts (`setup`/`configure_model`), never in
`__init__`: a module built before the group exists (the normal case with Lightning) must still gather and sync.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
from lightning.pytorch.strategies import FSDPStrategy
from torch import nn


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def shard_blocks(
    module: nn.Module,
    block_types: tuple[type[nn.Module], ...],
    device_mesh=None,
    activation_checkpointing: bool = False,
    param_dtype: torch.dtype | None = None,
) -> nn.Module:
    """FSDP2: `fully_shard` every block of `block_types`, then the root, so each block's weights are gathered only
    while it runs. Idempotent (a resumed or re-configured module is not wrapped twice)."""
    from torch.distributed._composable import checkpoint
    from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard

    if isinstance(module, FSDPModule):
        return module
    mesh = device_mesh["data_parallel"] if device_mesh is not None and "data_parallel" in (device_mesh.mesh_dim_names or ()) else device_mesh
    mp = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=torch.float32) if param_dtype else MixedPrecisionPolicy()
    for block in module.modules():
        if isinstance(block, block_types):
            if activation_checkpointing:
                checkpoint(block)
            fully_shard(block, mesh=mesh, mp_policy=mp)
    fully_shard(module, mesh=mesh, mp_policy=mp)
    return module


def transformer_block_types() -> tuple[type[nn.Module], ...]:
    """x-transformers' attention and feed-forward blocks: the FSDP wrap unit for every transformer stage."""
    from x_transformers.x_transformers import Attention, FeedForward

    return (Attention, FeedForward)


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
