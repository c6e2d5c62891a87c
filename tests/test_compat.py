"""Every private internal that musiclm.compat relies on still exists, with the expected signature and effect.

When an upgrade of a pinned library breaks one, the failure names the library, the pinned and the installed versions,
and the internal that moved: update src/musiclm/compat.py (the only place that touches it) for the new version.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version
from pathlib import Path

import pytest
import tomllib
import torch

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def pinned(dist: str) -> str:
    for req in tomllib.loads(PYPROJECT.read_text())["project"]["dependencies"]:
        name, _, pin = req.partition("==")
        if name.strip().lower() == dist:
            return pin.strip()
    return "unpinned"


def require(ok: bool, dist: str, what: str) -> None:
    if not ok:
        pytest.fail(
            f"{dist} {version(dist)} (pinned: {pinned(dist)}) changed a private internal musiclm.compat relies on: "
            f"{what}. Adapt src/musiclm/compat.py to the installed version or pin {dist}=={pinned(dist)} again.",
            pytrace=False,
        )


def params(fn) -> list[str]:
    return [p for p in inspect.signature(fn).parameters if p != "self"]


def private(module: str, name: str, dist: str):
    try:
        obj = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError):
        obj = None
    require(obj is not None, dist, f"`from {module} import {name}` fails")
    return obj


def test_private_imports():
    vq = "vector_quantize_pytorch.vector_quantize_pytorch"
    require(params(private(vq, "batched_sample_vectors", "vector-quantize-pytorch")) == ["samples", "num"],
            "vector-quantize-pytorch", "batched_sample_vectors(samples, num)")  # fmt: skip
    require(params(private(vq, "sample_vectors_distributed", "vector-quantize-pytorch")) == ["local_samples", "num"],
            "vector-quantize-pytorch", "sample_vectors_distributed(local_samples, num)")  # fmt: skip
    private(vq, "noop", "vector-quantize-pytorch")
    require(inspect.isclass(private("x_transformers.x_transformers", "LayerIntermediates", "x-transformers")),
            "x-transformers", "x_transformers.x_transformers.LayerIntermediates is a class")  # fmt: skip
    checkpoint = private("torch.distributed._composable", "checkpoint", "torch")
    require(params(checkpoint)[:1] == ["module"], "torch", "torch.distributed._composable.checkpoint(module, ...)")


def test_codebook_internals():
    from vector_quantize_pytorch import ResidualVQ
    from vector_quantize_pytorch.vector_quantize_pytorch import batched_sample_vectors, noop

    from musiclm.compat import codebook_synced, reset_codebook_init, set_codebook_sync

    dist = "vector-quantize-pytorch"
    rvq = ResidualVQ(dim=4, num_quantizers=2, codebook_size=8, kmeans_init=True, kmeans_iters=2, sync_codebook=False)
    for layer in rvq.layers:
        cb = getattr(layer, "_codebook", None)
        require(cb is not None, dist, "VectorQuantize._codebook")
        attrs = ("use_ddp", "sample_fn", "replace_sample_fn", "kmeans_all_reduce_fn", "all_reduce_fn", "initted")
        missing = [a for a in attrs if not hasattr(cb, a)]
        require(not missing, dist, f"codebook attributes {missing}")
        methods = inspect.getsource(type(cb)).replace(inspect.getsource(type(cb).__init__), "")
        unread = [a for a in attrs[1:] if f"self.{a}" not in methods]
        require(not unread, dist, f"the codebook no longer reads {unread} outside __init__")
        # unsynced defaults are exactly the functions set_codebook_sync swaps back in
        require(cb.sample_fn is batched_sample_vectors and cb.replace_sample_fn is batched_sample_vectors, dist,
                "unsynced codebooks sample with batched_sample_vectors")  # fmt: skip
        require(
            cb.all_reduce_fn is noop and cb.kmeans_all_reduce_fn is noop, dist, "unsynced codebooks reduce with noop"
        )
        require(
            isinstance(cb.initted, torch.Tensor) and not bool(cb.initted), dist, "codebook.initted is a bool buffer"
        )
    require(
        "_codebook.use_ddp" in inspect.getsource(type(rvq.layers[0])), dist, "VectorQuantize reads _codebook.use_ddp"
    )
    set_codebook_sync(rvq, True)
    assert codebook_synced(rvq)
    set_codebook_sync(rvq, False)
    assert not codebook_synced(rvq)
    rvq.train()(torch.randn(1, 32, 4))
    require(all(bool(layer._codebook.initted) for layer in rvq.layers), dist, "a training forward k-means initialises")
    reset_codebook_init(rvq)
    assert not any(bool(layer._codebook.initted) for layer in rvq.layers)


def test_lightning_internals():
    import lightning as L
    from lightning.pytorch.callbacks import ModelCheckpoint
    from lightning.pytorch.strategies import DDPStrategy, ModelParallelStrategy

    from musiclm.compat import attached_trainer, ddp_kwargs, model_parallel_sizes, saves_distributed_checkpoint

    dist = "lightning"
    expected = {
        "_save_last_checkpoint": ["trainer", "monitor_candidates"],
        "_should_skip_saving_checkpoint": ["trainer"],
        "_monitor_candidates": ["trainer"],
        "_should_save_on_train_epoch_end": ["trainer"],
    }
    for name, args in expected.items():
        fn = getattr(ModelCheckpoint, name, None)
        require(fn is not None and params(fn) == args, dist, f"ModelCheckpoint.{name}({', '.join(args)})")
    ddp = DDPStrategy()
    require(isinstance(getattr(ddp, "_ddp_kwargs", None), dict), dist, "DDPStrategy._ddp_kwargs is a dict")
    require(
        "_ddp_kwargs" in inspect.getsource(DDPStrategy),
        dist,
        "DDPStrategy passes _ddp_kwargs to DistributedDataParallel",
    )
    assert ddp_kwargs(ddp) is ddp._ddp_kwargs
    mp = ModelParallelStrategy()
    names = ("_data_parallel_size", "_tensor_parallel_size", "_save_distributed_checkpoint")
    require(all(hasattr(mp, n) for n in names), dist, f"ModelParallelStrategy.{{{', '.join(names)}}}")
    source = inspect.getsource(ModelParallelStrategy)
    require(
        all(n in source for n in names), dist, "ModelParallelStrategy builds its mesh and saves from those attributes"
    )
    assert model_parallel_sizes(mp) == ("auto", "auto") and saves_distributed_checkpoint(mp) is True
    require(hasattr(L.LightningModule(), "_trainer"), dist, "LightningModule._trainer")
    from lightning.pytorch.cli import LightningCLI

    fn = getattr(LightningCLI, "_instantiate_trainer", None)
    require(
        fn is not None and params(fn) == ["config", "callbacks"],
        dist,
        "LightningCLI._instantiate_trainer(config, callbacks)",
    )
    assert attached_trainer(L.LightningModule()) is None


def test_last_checkpoint_writes_last_ckpt(tmp_path):
    """LastCheckpoint, end to end: last.ckpt exists after a one-step fit with validation."""
    import lightning as L

    from musiclm.compat import LastCheckpoint

    class Tiny(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Linear(2, 1)

        def training_step(self, batch, batch_idx):
            return self.w(batch[0]).pow(2).mean()

        def validation_step(self, batch, batch_idx):
            self.log("val/loss", self.w(batch[0]).pow(2).mean())

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    data = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(torch.randn(4, 2)), batch_size=2)
    trainer = L.Trainer(max_steps=1, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[LastCheckpoint(tmp_path)], accelerator="cpu", devices=1)  # fmt: skip
    trainer.fit(Tiny(), data, data)
    require((tmp_path / "last.ckpt").is_file(), "lightning", "LastCheckpoint writes last.ckpt")
