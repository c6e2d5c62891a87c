"""`musiclm train STAGE`: one Lightning CLI per stage, layered configs, resume from last.ckpt, hand-off export.

Config layers, later wins: configs/<stage>.yaml (paper scale) -> configs/trainer/<trainer>.yaml ->
configs/profile/<profile>/<stage>.yaml -> any `--section.key=value` the user adds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.strategies import ModelParallelStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden
from lightning.pytorch.utilities.rank_zero import rank_zero_only
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from musiclm.artifacts import atomic_torch_save, atomic_write_bytes, file_id, handoff, model_path, stage_dir
from musiclm.compat import LastCheckpoint, TrainerHookCLI
from musiclm.config import CONFIG_ROOT, config_layers
from musiclm.distributed import close_process_group, is_sharded, recover_checkpoint
from musiclm.paths import dataset_dirs, resolve
from musiclm.pretrained.hub import PretrainedFolderError
from musiclm.stages import STAGES


class StageCLI(TrainerHookCLI):
    """LightningCLI in subclass mode: the stage config's `model: class_path:` names the implementation (the registry
    only gives the default), `--model=package.Class` swaps it. It adds the run's TensorBoard logger and
    `checkpoints/last.ckpt` unless the config brings its own, and sizes token stages from their token manifest."""

    def __init__(self, *args: Any, links: tuple[tuple[str, str], ...] = (), **kwargs: Any) -> None:
        self.links = links
        super().__init__(*args, **kwargs)

    def prepare_trainer(self, config: dict[str, Any], callbacks: list) -> None:
        out = Path(config["default_root_dir"])
        if config.get("logger") in (None, True):
            config["logger"] = TensorBoardLogger(save_dir=str(out), name="tb", version="")
        given = config.get("callbacks") or []
        if not any(isinstance(c, ModelCheckpoint) for c in given):
            callbacks.append(LastCheckpoint(out / "checkpoints"))
        if config["logger"] and not any(isinstance(c, LearningRateMonitor) for c in given):
            callbacks.append(LearningRateMonitor())

    def add_arguments_to_parser(self, parser) -> None:
        # Values a module shares with its data module (e.g. sample_rate) are set once, in the data section.
        for src, dst in self.links:
            parser.link_arguments(src, f"model.init_args.{dst.removeprefix('model.')}")

    def before_instantiate_classes(self) -> None:
        vocab = token_vocab(self.config.data.get("data_dir"))
        if vocab:
            fill_from_vocab(self.config.model.init_args, vocab, "model")
            fill_from_vocab(self.config.data, vocab, "data")


def token_vocab(data_dir: str | None) -> dict[str, Any]:
    """The stream sizes and rates `make tokenize` recorded in the token manifest (empty for audio shards)."""
    path = resolve(data_dir or "") / "train" / "manifest.json"
    return json.loads(path.read_text()).get("vocab") or {} if path.is_file() else {}


def fill_from_vocab(args: Any, vocab: dict[str, Any], section: str) -> None:
    """Set each unset (None) argument that the token manifest knows; refuse one that a config set otherwise: a
    silent mismatch would train on out-of-range or ignored ids."""
    wrong = {}
    for key, value in vocab.items():
        if key not in args:
            continue
        if args[key] is None:
            args[key] = value
        elif args[key] != value:
            wrong[key] = value
    if wrong:
        fix = " ".join(f"--{section}.{k}={v}" for k, v in wrong.items())
        raise SystemExit(
            f"the token manifest says {wrong}, the config says {({k: args[k] for k in wrong})}: these sizes come from "
            f"the upstream models; remove them from the profile or set {fix}"
        )


def build_cli(
    stage: str, run: str, profile: str, trainer: str, extra: list[str], config_root: Path | None = None
) -> StageCLI:
    spec = STAGES[stage]
    out = stage_dir(run, stage)
    out.mkdir(parents=True, exist_ok=True)
    args: list[str] = []
    for layer in config_layers(stage, profile, trainer, config_root or CONFIG_ROOT):
        args += ["--config", str(layer)]
    args += extra
    return StageCLI(
        L.LightningModule,
        spec.data_class(),
        links=tuple(getattr(spec.module_class(), "cli_links", ())),
        args=args,
        run=False,
        subclass_mode_model=True,
        subclass_mode_data=False,
        save_config_kwargs={"overwrite": True},
        seed_everything_default=0,
        trainer_defaults={"default_root_dir": str(out)},
        parser_kwargs={"parser_mode": "omegaconf"},
    )


def full_state_dict(module: L.LightningModule) -> dict[str, torch.Tensor]:
    """Unsharded CPU weights on every rank (a collective under FSDP2, a plain state_dict otherwise)."""
    if not is_sharded(module):
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def export_model(trainer: L.Trainer, module: L.LightningModule, path: Path) -> Path:
    """Write the hand-off `model.ckpt`: weights + hyperparameters, no optimizer, loadable by `load_from_checkpoint`
    (and by `torch.load(weights_only=True)`) with no config, whatever strategy trained it."""
    state = full_state_dict(module)
    if trainer.is_global_zero:
        dm = trainer.datamodule.hparams if trainer.datamodule is not None else None
        atomic_torch_save(
            handoff(module, dm, state, global_step=trainer.global_step, epoch=trainer.current_epoch), path
        )
    trainer.strategy.barrier()
    return path


def resume_path(out: Path) -> Path | None:
    """What a re-run continues from: the newer of `checkpoints/last.ckpt` and the `hpc_ckpt_N.ckpt` Lightning's SLURM
    environment saves on SIGUSR1 before a requeue. A sharded (FSDP2) checkpoint is a directory: it resumes under FSDP2
    on any number of processes (torch's distributed checkpoint reshards on load)."""
    found = [recover_checkpoint(out / "checkpoints" / "last.ckpt")]
    hpc = sorted(out.glob("hpc_ckpt_*.ckpt"), key=lambda p: int("".join(c for c in p.name if c.isdigit()) or 0))
    if hpc:
        found.append(recover_checkpoint(hpc[-1]))
    found = [p for p in found if p is not None]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def input_ids(cli: LightningCLI) -> dict[str, str]:
    """What a stage's checkpoints are trained from: the training shards (by their checksums, which identify the
    upstream checkpoints for token shards) and a `source` checkpoint (the semantic tokenizer's MuLan)."""
    ids = {}
    dirs = dataset_dirs(cli.datamodule.hparams.get("data_dir", ""))
    manifests = [resolve(d) / "train" / "manifest.json" for d in dirs]
    if all(m.is_file() for m in manifests):  # several datasets (synth+mine): all of their shards
        sums = "".join(s["sha256"] for m in manifests for s in json.loads(m.read_text()).get("shards", []))
        ids["data"] = hashlib.sha256(sums.encode()).hexdigest()[:16]
    source = cli.model.hparams.get("source")
    if source and Path(source).is_file():
        ids["source"] = file_id(source)
    return ids


def inputs_changed(out: Path, ids: dict[str, str]) -> bool:
    """True when `out`'s checkpoints were trained from other inputs (then make rebuilt the target because an
    upstream changed, and resuming would mix the two). Rank 0 moves them aside, nothing is deleted, and records the
    new inputs; every rank decides the same way whatever the order."""
    record, ckpts = out / "inputs.json", out / "checkpoints"
    changed = record.is_file() and json.loads(record.read_text()) != ids
    if rank_zero_only.rank == 0:
        if changed and ckpts.exists():
            stale = out / f"checkpoints.stale-{time.strftime('%Y%m%d-%H%M%S')}"
            ckpts.rename(stale)
            print(f"{out}: inputs changed since its checkpoints ({record.read_text().strip()} -> {ids}); "
                  f"starting fresh, the old checkpoints are in {stale}")  # fmt: skip
        atomic_write_bytes(record, json.dumps(ids).encode())
    return changed


def train(
    stage: str,
    run: str,
    profile: str = "demo",
    trainer: str = "cpu",
    extra: list[str] | None = None,
    callbacks: list[L.Callback] | None = None,
) -> Path:
    """Fit one stage; resume from `checkpoints/last.ckpt` when it exists and its inputs are unchanged; export
    `model.ckpt`. A stage with nothing to shard (the codec, the k-means tokenizer, the judge) asked to train under
    FSDP trains under DDP instead, so one `TRAINER=fsdp` command builds a whole chain. `callbacks` are added to the
    trainer's (tests and notebooks observe a run with them)."""
    cli = build_cli(stage, run, profile, trainer, list(extra or []))
    if isinstance(cli.trainer.strategy, ModelParallelStrategy) and not is_overridden("configure_model", cli.model):
        if rank_zero_only.rank == 0:
            print(f"{stage} has no transformer blocks for FSDP to shard: it trains with the ddp trainer instead")
        cli = build_cli(stage, run, profile, "ddp", list(extra or []))
    cli.trainer.callbacks.extend(callbacks or [])
    fresh = inputs_changed(stage_dir(run, stage), input_ids(cli))
    resume = None if fresh else resume_path(stage_dir(run, stage))
    cli.trainer.fit(cli.model, cli.datamodule, ckpt_path=str(resume) if resume is not None else None)
    return export_model(cli.trainer, cli.model, model_path(run, stage))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm train", description=__doc__)
    p.add_argument("stage", choices=sorted(STAGES))
    p.add_argument("--run", default="demo")
    p.add_argument("--profile", default="demo", help="demo | paper")
    p.add_argument("--trainer", default="cpu", help="cpu | gpu | ddp | fsdp (configs/trainer/)")
    ns, extra = p.parse_known_args(argv)
    try:
        path = train(ns.stage, ns.run, ns.profile, ns.trainer, extra)
    except ValueError as e:  # a wrong or untrusted pretrained folder: one line, no traceback
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, PretrainedFolderError):
            cause = cause.__cause__  # LightningCLI (jsonargparse) wraps what a module's __init__ raises
        if cause is None:
            raise
        raise SystemExit(f"musiclm train {ns.stage}: {cause}") from None
    close_process_group()
    if rank_zero_only.rank == 0:
        print(f"wrote {path}")
