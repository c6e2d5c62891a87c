"""Where stage artifacts live, how they are written atomically, and how downstream code loads them."""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from musiclm.paths import runs_dir
from musiclm.stages import STAGES


class MissingArtifactError(FileNotFoundError):
    """An upstream stage's hand-off is missing; the message names the make target that builds it."""


def run_dir(run: str | os.PathLike) -> Path:
    """`run` is a run name (under runs/, see musiclm.paths) or a path to a run directory."""
    p = Path(run)
    return p if p.is_dir() and len(p.parts) > 1 else runs_dir() / p


def stage_dir(run: str | os.PathLike, stage: str) -> Path:
    return run_dir(run) / stage


def model_path(run: str | os.PathLike, stage: str) -> Path:
    """Path of a stage's hand-off checkpoint, `runs/<RUN>/<stage>/model.ckpt`."""
    return stage_dir(run, stage) / "model.ckpt"


def require_model(run: str | os.PathLike, stage: str) -> Path:
    path = model_path(run, stage)
    if not path.is_file():
        target = STAGES[stage].make_target if stage in STAGES else stage
        name = Path(run).name
        raise MissingArtifactError(f"{path} not found: build it with `make {target} RUN={name}`")
    return path


# Classes a hand-off may name: the package's own, plus any a user registers in code. A checkpoint is data, so
# it never makes us import a module outside these.
_REGISTERED: dict[str, type] = {}
TRUSTED_PACKAGE = "musiclm."


def class_path(cls: type) -> str:
    """"package.module.Class", the form LightningCLI's `class_path:` takes."""
    return f"{cls.__module__}.{cls.__qualname__}"


def register_class(cls: type) -> type:
    """Allow hand-offs to name `cls` (a LightningModule outside this package); usable as a decorator."""
    _REGISTERED[class_path(cls)] = cls
    return cls


def resolve_class(path: str) -> type:
    """The class a hand-off names, if it is registered or lives in this package; anything else is refused."""
    if path in _REGISTERED:
        return _REGISTERED[path]
    module, _, name = path.rpartition(".")
    if not module.startswith(TRUSTED_PACKAGE):
        raise ValueError(
            f"hand-off names class {path!r}, which is neither in the musiclm package nor registered: "
            "call musiclm.artifacts.register_class(YourClass) before loading it"
        )
    cls = getattr(importlib.import_module(module), name, None)
    import lightning as L

    if not (isinstance(cls, type) and issubclass(cls, L.LightningModule)):
        raise ValueError(f"hand-off names {path!r}, which is not a LightningModule")
    return cls


def read_handoff(run: str | os.PathLike, stage: str, map_location: str | torch.device = "cpu") -> dict:
    """A stage's `model.ckpt` as a dict, read with `weights_only=True` (tensors, dicts and primitives only)."""
    return torch.load(require_model(run, stage), map_location=map_location, weights_only=True)


def build_from_handoff(ckpt: dict, stage: str | None = None) -> Any:
    """The module a hand-off describes, in eval mode. Its class comes from the hand-off's `class_path` (hand-offs
    written before it existed fall back to the stage's default class); old hyperparameter names are upgraded by the
    class's `upgrade_hparams`, when it has one."""
    path = ckpt.get("class_path")
    if path is None:
        if stage is None:
            raise ValueError("this hand-off records no class_path: pass the stage it belongs to")
        path = STAGES[stage].module
    cls = resolve_class(path)
    hparams = {k: v for k, v in ckpt.get("hyper_parameters", {}).items() if not k.startswith("_")}
    upgrade = getattr(cls, "upgrade_hparams", None)
    if upgrade is not None:
        hparams = upgrade(hparams)
    from musiclm.compat import fresh_hparams_scope

    with fresh_hparams_scope():
        module = cls(**hparams)
    module.on_load_checkpoint(ckpt)
    module.load_state_dict(ckpt["state_dict"])
    return module.eval()


def load_model(run: str | os.PathLike, stage: str, map_location: str | torch.device = "cpu") -> Any:
    """Load a stage's `model.ckpt` in eval mode with no config: the class and its hyperparameters travel in it."""
    return build_from_handoff(read_handoff(run, stage, map_location), stage).to(map_location)


def handoff(module, datamodule_hparams: dict | None = None, state_dict: dict | None = None, **extra) -> dict:
    """The `model.ckpt` payload: the class that made it, its hyperparameters and weights; `build_from_handoff`
    rebuilds it and `torch.load(weights_only=True)` reads it. LightningCLI's private `_class_path`/`_instantiator`
    entries are dropped: loading would otherwise import whatever class they name."""
    import lightning as L

    hparams = {k: v for k, v in dict(module.hparams).items() if not k.startswith("_")}
    ckpt = {
        "class_path": class_path(type(module)),
        "state_dict": (
            state_dict if state_dict is not None else {k: v.detach().cpu() for k, v in module.state_dict().items()}
        ),
        "hyper_parameters": hparams,
        "pytorch-lightning_version": L.__version__,
        **extra,
    }
    if datamodule_hparams is not None:
        ckpt["datamodule_hyper_parameters"] = {
            k: v for k, v in dict(datamodule_hparams).items() if not k.startswith("_")
        }
    return ckpt


def file_id(path: str | os.PathLike) -> str:
    """Content hash (first 16 hex of sha256) identifying a checkpoint, recorded in token shards for staleness."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write to a temp file in the same directory, fsync, then rename: readers never see a partial file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


# ---------------------------------------------------------------- safetensors
SAFETENSORS_FORMAT = "musiclm-handoff/1"


def safetensors_path(run: str | os.PathLike, stage: str) -> Path:
    return stage_dir(run, stage) / "model.safetensors"


def export_safetensors(run: str | os.PathLike, stage: str, out: str | os.PathLike | None = None) -> Path:
    """A stage's `model.ckpt` hand-off as `.safetensors`: the state_dict tensors, and every other entry
    (hyper_parameters, datamodule_hyper_parameters, global_step, ...) as JSON strings in the file's metadata, plus
    `stage` and `format`.
    `load_safetensors` turns it back into the module with no config."""
    from safetensors.torch import save

    ckpt = torch.load(require_model(run, stage), map_location="cpu", weights_only=True)
    tensors, seen = {}, set()
    for k, v in ckpt["state_dict"].items():
        v = v.detach().contiguous()
        if v.numel() and v.data_ptr() in seen:  # safetensors refuses shared storage (tied weights): store a copy
            v = v.clone()
        seen.add(v.data_ptr())
        tensors[k] = v
    meta = {k: json.dumps(v, default=str) for k, v in ckpt.items() if k != "state_dict"}
    meta.update(stage=stage, format=SAFETENSORS_FORMAT)
    path = Path(out) if out is not None else safetensors_path(run, stage)
    return atomic_write_bytes(path, save(tensors, metadata=meta))


def load_safetensors(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """The module of a `.safetensors` hand-off written by `export_safetensors`, in eval mode, with no config."""
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != SAFETENSORS_FORMAT:
        raise ValueError(f"{path} is not a musiclm hand-off (metadata format {meta.get('format')!r})")
    ckpt = {k: json.loads(v) for k, v in meta.items() if k not in ("stage", "format")}
    ckpt["state_dict"] = load_file(str(path), device=str(map_location))
    return build_from_handoff(ckpt, meta["stage"])


def export_safetensors_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm export-safetensors", description=export_safetensors.__doc__)
    p.add_argument("--run", required=True)
    p.add_argument("--stage", required=True, choices=sorted(STAGES))
    p.add_argument("--out", default=None, help="default: runs/RUN/STAGE/model.safetensors")
    ns = p.parse_args(argv)
    print(f"wrote {export_safetensors(ns.run, ns.stage, ns.out)}")
