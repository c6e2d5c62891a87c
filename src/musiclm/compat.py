"""Every use of another library's private internals, in one place, so a library upgrade breaks here (and in
tests/test_compat.py, which names the pinned version) instead of somewhere deep in a training run.

- vector-quantize-pytorch: codebook syncing is decided in the codebook's constructor from the process group of that
  moment, and k-means init runs once per codebook; the codec needs to switch both after construction.
- Lightning: `LastCheckpoint` drives `ModelCheckpoint`'s private save steps; `TrainerHookCLI` wraps LightningCLI's
  private trainer construction; the strategies adjust private settings
  (DDP keyword arguments, FSDP2 mesh sizes); a module's trainer is read without raising when it has none.
- x-transformers: `LayerIntermediates` and `apply_rotary_pos_emb` are importable only from its private module path.
- torch: composable activation checkpointing has no public import path.
- webdataset: URL schemes it cannot open (s3, gcs through fsspec, ...) are added to its module-level `gopen_schemes`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy
from torch import nn
from torch.distributed._composable import checkpoint as _composable_checkpoint
from vector_quantize_pytorch import ResidualVQ
from vector_quantize_pytorch.vector_quantize_pytorch import batched_sample_vectors, noop, sample_vectors_distributed
from x_transformers.x_transformers import LayerIntermediates, apply_rotary_pos_emb

__all__ = [
    "LastCheckpoint",
    "LayerIntermediates",
    "TrainerHookCLI",
    "apply_rotary_pos_emb",
    "attached_trainer",
    "checkpoint_module",
    "codebook_synced",
    "ddp_kwargs",
    "fresh_hparams_scope",
    "fsspec_gopen",
    "model_parallel_sizes",
    "reset_codebook_init",
    "saves_distributed_checkpoint",
    "set_codebook_sync",
    "set_data_parallel_size",
]


# ---------------------------------------------------------------- vector-quantize-pytorch
def set_codebook_sync(rvq: ResidualVQ, enabled: bool) -> None:
    """Switch k-means init, dead-code sampling and EMA statistics of every level to all-reduce across processes.

    vector-quantize-pytorch decides this once in its constructor from the process group of that moment; a module
    built before the group exists (the usual case with Lightning) would otherwise train unsynced codebooks."""
    for layer in rvq.layers:
        cb = layer._codebook
        cb.use_ddp = enabled
        cb.sample_fn = cb.replace_sample_fn = sample_vectors_distributed if enabled else batched_sample_vectors
        cb.kmeans_all_reduce_fn = cb.all_reduce_fn = dist.all_reduce if enabled else noop


def codebook_synced(rvq: ResidualVQ) -> bool:
    return all(layer._codebook.use_ddp and layer._codebook.all_reduce_fn is dist.all_reduce for layer in rvq.layers)


def reset_codebook_init(rvq: ResidualVQ) -> None:
    """Mark every level's codebook as not yet k-means initialised: the next training forward re-runs k-means."""
    for layer in rvq.layers:
        layer._codebook.initted.fill_(False)


# ---------------------------------------------------------------- Lightning
class LastCheckpoint(ModelCheckpoint):
    """`checkpoints/last.ckpt` and nothing else, rewritten at every validation end (every train epoch end when there
    is no validation) and when training stops: what a killed run resumes from. Lightning 2.6's own `save_last` with
    `save_top_k=0` writes it only when training ends, so a `kill -9` would lose the whole run."""

    def __init__(self, dirpath: str | Path) -> None:
        super().__init__(dirpath=dirpath, save_last=True, save_top_k=0, enable_version_counter=False)

    def _save_last_now(self, trainer: L.Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._should_save_on_train_epoch_end(trainer):
            self._save_last_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._save_last_now(trainer)


class TrainerHookCLI(LightningCLI):
    """LightningCLI with a public hook, `prepare_trainer(config, callbacks)`, that sees the parsed trainer config and
    the callbacks together before the Trainer is built: LightningCLI itself only offers its private
    `_instantiate_trainer` for that."""

    def prepare_trainer(self, config: dict[str, Any], callbacks: list) -> None:
        """Edit `config` (the trainer's arguments) and `callbacks` in place."""

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list) -> L.Trainer:
        self.prepare_trainer(config, callbacks)
        return super()._instantiate_trainer(config, callbacks)


def ddp_kwargs(strategy: DDPStrategy) -> dict[str, Any]:
    """The (mutable) keyword arguments the strategy passes to DistributedDataParallel."""
    return strategy._ddp_kwargs


def model_parallel_sizes(strategy: ModelParallelStrategy) -> tuple[int | str, int | str]:
    """(data_parallel_size, tensor_parallel_size) as configured, each an int or "auto" until the mesh is set up."""
    return strategy._data_parallel_size, strategy._tensor_parallel_size


def set_data_parallel_size(strategy: ModelParallelStrategy, size: int) -> None:
    """Resolve the data-parallel size before the strategy builds its device mesh."""
    strategy._data_parallel_size = size


def saves_distributed_checkpoint(strategy: ModelParallelStrategy) -> bool:
    """Whether the strategy writes sharded checkpoint folders (else one consolidated file)."""
    return strategy._save_distributed_checkpoint


def attached_trainer(module: L.LightningModule) -> L.Trainer | None:
    """The module's trainer, None when it has none (`module.trainer` raises then)."""
    return module._trainer


def checkpoint_module(module: nn.Module) -> nn.Module:
    """Composable, non-reentrant activation checkpointing of `module` (its activations recomputed in backward)."""
    return _composable_checkpoint(module)


# ---------------------------------------------------------------- Lightning: nested save_hyperparameters
@contextmanager
def fresh_hparams_scope() -> Iterator[None]:
    """Build a LightningModule inside another one's construction (a hand-off loaded by a stage's `__init__`, e.g.
    the semantic tokenizer's MuLan). LightningCLI leaves the outer module's arguments in a context variable that
    `save_hyperparameters` reads; without clearing it the inner module would record the outer one's hparams."""
    from lightning.pytorch.core.mixins.hparams_mixin import _given_hyperparameters

    token = _given_hyperparameters.set(None)
    try:
        yield
    finally:
        _given_hyperparameters.reset(token)


def _fsspec_open(url: str, mode: str = "rb", bufsize: int = 8192, **kw: Any):
    import fsspec

    return fsspec.open(url, mode).open()


def fsspec_gopen() -> None:
    """Let webdataset (1.0.2) open any fsspec URL: its `gopen` looks schemes up in `webdataset.gopen.gopen_schemes`
    and raises for unknown ones (`__default__`); that default becomes fsspec. Loader workers fork after this runs."""
    import importlib

    table = importlib.import_module("webdataset.gopen").gopen_schemes
    table["__default__"] = _fsspec_open
