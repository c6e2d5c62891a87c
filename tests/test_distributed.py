"""Scale-out on CPU with gloo, 2 processes: DDP and FSDP2 (ModelParallelStrategy) fits through the `musiclm train`
CLI whose hand-off loads on 1 process, FSDP2 gradients equal to one process's, resume of a sharded run after
`kill -9`, the trainer configs' strategies, bf16 autocast steps, safetensors export.

Multi-process runs are CLI subprocesses launched the way torchrun does (every rank started at once with RANK,
WORLD_SIZE, MASTER_ADDR/PORT in the environment; Lightning then creates no processes itself), in their own session
so a failure or a kill takes every rank down."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from musiclm import artifacts
from musiclm.data.shards import write_split_shards
from musiclm.data.tokens import token_sample
from musiclm.distributed import recover_checkpoint
from tests import dist_fsdp_grads
from tests.conftest import make_tone_shards

ROOT = Path(__file__).resolve().parents[1]
AUDIO_ARGS = ["--data.sample_rate=16000", "--data.clip_seconds=1.0", "--data.batch_size=4"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TINY_VOCAB = {"mulan_levels": 2, "mulan_codebook_size": 8, "semantic_levels": 1, "semantic_codebook_size": 16,
              "semantic_rate": 25.0, "acoustic_levels": 4, "acoustic_codebook_size": 32, "acoustic_rate": 50.0}


def toy_tokens(n: int, seed: int, frames: int = 50) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Token samples in the tiny profile's vocabularies: MuLan 2 x 8, semantic 16, codec 4 x 32 (50 Hz = 2 x 25 Hz)."""
    g = torch.Generator().manual_seed(seed)
    mulan = torch.randint(0, 8, (n, 2), generator=g)
    semantic = (mulan[:, :1] * 2 + (mulan[:, 1:] % 3 + 1) * torch.arange(frames)) % 16
    acoustic = torch.stack([(semantic.repeat_interleave(2, -1) * (q + 1) + q) % 32 for q in range(4)], dim=1)
    return [(mulan[i], semantic[i], acoustic[i]) for i in range(n)]


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("scale")
    audio = make_tone_shards(root / "shards", {"train": 16, "val": 4}, seconds=1.0, sample_rate=16_000)
    for split, n, seed in [("train", 32, 0), ("val", 8, 1)]:
        samples = toy_tokens(n, seed)
        write_split_shards(
            root / "tokens",
            split,
            list(range(n)),
            lambda i: [
                token_sample(
                    f"{split}-{i}",  # noqa: B023
                    dict(zip(("mulan", "semantic", "acoustic"), samples[i], strict=True)),  # noqa: B023
                    {"caption": "toy"},
                )
            ],
            items_per_shard=16,
            extra_manifest={"vocab": TINY_VOCAB},
        )
    return {"audio": audio, "tokens": root / "tokens", "root": root}


def stage_args(stage: str, data: dict[str, Path]) -> list[str]:
    if stage in ("semantic", "coarse", "fine"):
        return [f"--data.data_dir={data['tokens']}"]
    return [f"--data.data_dir={data['audio']}", *AUDIO_ARGS]


def launch(stage: str, run: Path, trainer: str, args: list[str], nprocs: int = 2) -> list[subprocess.Popen]:
    """Start `musiclm train` on `nprocs` CPU ranks at once (torchrun's environment), each in the same new session."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": str(nprocs), "LOCAL_WORLD_SIZE": str(nprocs), "NODE_RANK": "0",
           "PYTHONUNBUFFERED": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "musiclm.cli", "train", stage, "--run", str(run), "--profile", "tiny",
           "--trainer", trainer, "--trainer.accelerator=cpu", f"--trainer.devices={nprocs}", *args]  # fmt: skip
    procs, pgid = [], None
    for rank in range(nprocs):
        log = open(run.parent / f"{run.name}-{stage}-rank{rank}.log", "a")
        procs.append(subprocess.Popen(
            cmd, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, cwd=ROOT, stdout=log,
            stderr=subprocess.STDOUT, process_group=pgid if pgid is not None else 0,
        ))  # fmt: skip
        pgid = procs[0].pid
        log.close()
    return procs


def wait(procs: list[subprocess.Popen], run: Path, stage: str, timeout: float = 120) -> str:
    """Wait for every rank; on failure or timeout kill them all and show rank 0's log."""
    log = (run.parent / f"{run.name}-{stage}-rank0.log")
    try:
        codes = [p.wait(timeout=timeout) for p in procs]
    except subprocess.TimeoutExpired:
        os.killpg(procs[0].pid, signal.SIGKILL)
        codes = [p.wait() for p in procs]
    text = log.read_text()
    assert codes == [0] * len(procs), f"ranks exited with {codes}:\n{text[-4000:]}"
    return text


def train_distributed(stage: str, run: Path, trainer: str, args: list[str], nprocs: int = 2) -> str:
    return wait(launch(stage, run, trainer, args, nprocs), run, stage)


# -- DDP and FSDP2 fits whose hand-off loads on one process --------------------------------------------------------


@pytest.mark.slow  # 2 processes
@pytest.mark.parametrize("stage,trainer", [("mulan", "ddp"), ("mulan", "fsdp"), ("semantic", "ddp")])
def test_two_process_fit_hands_off_a_full_checkpoint(stage, trainer, data, tmp_path):
    run = tmp_path / "run"
    train_distributed(stage, run, trainer, [*stage_args(stage, data), "--trainer.max_steps=2"])
    ckpt = torch.load(artifacts.model_path(run, stage), map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == 2
    module = artifacts.load_model(run, stage)  # one process, no process group, no config
    fresh = type(module)(**{k: v for k, v in ckpt["hyper_parameters"].items() if not k.startswith("_")}).state_dict()
    assert {k: v.shape for k, v in ckpt["state_dict"].items()} == {k: v.shape for k, v in fresh.items()}
    assert all(not hasattr(v, "device_mesh") for v in ckpt["state_dict"].values())  # plain tensors, not DTensors
    last = run / stage / "checkpoints" / "last.ckpt"
    if trainer == "fsdp":  # sharded: one file per rank plus Lightning's metadata
        assert last.is_dir() and len(list(last.glob("*.distcp"))) == 2 and (last / "meta.pt").is_file()
    else:
        assert last.is_file()
    if stage == "mulan":
        assert module.embed_text(["a sine tone"]).shape == (1, module.embed_dim)
    else:
        assert module.generate(torch.zeros(1, 2, dtype=torch.long), 4, seed=0).shape == (1, 4)


# -- FSDP2 sharding is exact -------------------------------------------------------------------------------------


@pytest.mark.slow  # 2 processes
def test_fsdp2_gradients_equal_one_process(tmp_path):
    """Every parameter is sharded, and the 2-rank loss and full gradients equal one process on the whole batch
    (MuLan: negatives gathered over ranks; the semantic LM with activation checkpointing: recomputation changes
    nothing)."""
    cases = [("mulan", False), ("semantic", True)]
    mp.spawn(dist_fsdp_grads.worker, args=(2, free_port(), str(tmp_path), cases), nprocs=2, join=True)
    for stage, _ in cases:
        got = torch.load(tmp_path / f"{stage}.pt")
        assert got["all_sharded"], stage
        module = dist_fsdp_grads.build(stage, False)
        loss, grads = dist_fsdp_grads.step(module, stage, dist_fsdp_grads.global_batch(stage))
        assert got["loss"].item() == pytest.approx(loss.item(), rel=1e-5), stage
        assert grads.keys() == got["grads"].keys() and len(grads) > 10, stage
        for k, g in grads.items():
            torch.testing.assert_close(got["grads"][k], g, rtol=1e-4, atol=1e-6, msg=f"{stage} {k}")


# -- resume after kill -9 ----------------------------------------------------------------------------------------


def token_batch(n: int = 16) -> dict[str, torch.Tensor]:
    samples = toy_tokens(n, 1)
    return {"mulan": torch.stack([s[0] for s in samples]), "semantic": torch.stack([s[1] for s in samples])}


def lm_loss(hparams: dict, state_dict: dict | None) -> float:
    from musiclm.lm.module import SemanticStage

    torch.manual_seed(0)
    module = SemanticStage(**{k: v for k, v in hparams.items() if not k.startswith("_")}).eval()
    if state_dict is not None:
        module.load_state_dict(state_dict)
    with torch.no_grad():
        ce, _, valid, _ = module.forward_loss(token_batch())
    return ce[valid.expand_as(ce)].mean().item()


def logged_steps(stage_dir: Path, tag: str = "train/loss") -> list[int]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(sorted((stage_dir / "tb").glob("events.out.tfevents.*"), key=os.path.getmtime)[-1]))
    events.Reload()
    return [e.step for e in events.Scalars(tag)]


@pytest.mark.slow  # 2 processes
def test_sharded_run_killed_then_rerun_continues(data, tmp_path):
    """FSDP2 semantic LM: kill -9 every rank once a sharded last.ckpt exists; the same command with a budget of two
    more steps restores it (weights, optimizer, step), runs only those steps, and its loss continues from the
    checkpoint's instead of restarting; the hand-off loads on 1 process."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    run, stage = tmp_path / "run", "semantic"
    args = [
        *stage_args(stage, data), "--model.lr=1e-2", "--trainer.val_check_interval=10", "--trainer.limit_val_batches=1"
    ]
    procs = launch(stage, run, "fsdp", [*args, "--trainer.max_steps=400"])
    last = run / stage / "checkpoints" / "last.ckpt"
    deadline = time.time() + 120
    while not (last / "meta.pt").is_file() and time.time() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.2)
    os.killpg(procs[0].pid, signal.SIGKILL)
    codes = [p.wait() for p in procs]
    recover_checkpoint(last)  # (a kill between the save's two renames leaves last.ckpt.old)
    assert (last / "meta.pt").is_file(), f"no checkpoint before the kill (exit codes {codes})"
    assert codes == [-signal.SIGKILL] * 2, f"the run ended before it was killed: {codes}"
    saved = torch.load(last / "meta.pt", map_location="cpu", weights_only=False)["global_step"]
    assert 10 <= saved < 400 and saved % 10 == 0
    dcp_to_torch_save(last, tmp_path / "saved.pt")  # the sharded checkpoint as one file, on one process
    saved_weights = torch.load(tmp_path / "saved.pt", map_location="cpu", weights_only=True)["state_dict"]

    log = train_distributed(stage, run, "fsdp", [*args, f"--trainer.max_steps={saved + 2}"])
    assert "Restored all states from the checkpoint" in log
    ckpt = torch.load(artifacts.model_path(run, stage), map_location="cpu", weights_only=True)
    assert ckpt["global_step"] == saved + 2
    assert logged_steps(run / stage) == [saved, saved + 1]  # the rerun trained only the two missing steps
    initial, at_kill, final = (
        lm_loss(ckpt["hyper_parameters"], None),
        lm_loss(ckpt["hyper_parameters"], saved_weights),
        lm_loss(ckpt["hyper_parameters"], ckpt["state_dict"]),
    )
    print(
        f"checkpoint at step {saved} when killed, resumed to {saved + 2}; "
        f"loss init {initial:.3f}, at kill {at_kill:.3f}, final {final:.3f}"
    )
    assert at_kill < initial - 0.1 and final < at_kill + 0.05, (initial, at_kill, final)
    assert artifacts.load_model(run, stage).generate(token_batch(1)["mulan"], 3, seed=0).shape == (1, 3)


# -- trainer configs -----------------------------------------------------------------------------------------------


def test_trainer_configs_build_their_strategies(data, tmp_path):
    """fsdp.yaml -> ModelParallelStrategy (FSDP2, sharded checkpoints); fsdp_classic.yaml -> FSDPStrategy wrapping
    exactly the x-transformers Attention/FeedForward blocks (checked against the real modules); ddp.yaml -> DDP."""
    from lightning.pytorch.strategies import DDPStrategy, FSDPStrategy, ModelParallelStrategy
    from torch.distributed.fsdp.wrap import ModuleWrapPolicy

    from musiclm.distributed import BlockFSDPStrategy, FSDP2Strategy, transformer_block_types
    from musiclm.train import build_cli

    def strategy(trainer: str, stage: str = "semantic", *extra: str):
        cli = build_cli(
            stage, tmp_path / trainer, "tiny", trainer, [*stage_args(stage, data), "--trainer.accelerator=cpu", *extra]
        )
        return cli.trainer.strategy, cli.model

    fsdp, _ = strategy("fsdp")
    assert (
        isinstance(fsdp, FSDP2Strategy)
        and isinstance(fsdp, ModelParallelStrategy)
        and fsdp._save_distributed_checkpoint
    )
    ddp, _ = strategy("ddp")
    assert isinstance(ddp, DDPStrategy) and ddp.find_unused_parameters is None  # decided per module at fit time
    blocks = set(transformer_block_types())
    for stage in ("semantic", "mulan"):
        classic, model = strategy("fsdp_classic", stage, "--trainer.devices=1", "--trainer.precision=32-true")
        assert isinstance(classic, BlockFSDPStrategy) and isinstance(classic, FSDPStrategy)
        policy = classic.kwargs["auto_wrap_policy"]
        assert isinstance(policy, ModuleWrapPolicy) and set(policy._module_classes) == blocks
        wrapped = [m for m in model.modules() if isinstance(m, tuple(blocks))]
        depth = model.hparams.depth if stage == "semantic" else model.hparams.audio_depth + model.hparams.text_depth
        assert len(wrapped) == 2 * depth  # one Attention and one FeedForward per layer
    assert BlockFSDPStrategy(activation_checkpointing=True)._activation_checkpointing_kwargs


# -- bf16 autocast -------------------------------------------------------------------------------------------------

LOSS = {"mulan": "train/loss", "codec": "train/mel_loss", "semantic_tokens": "train/inertia",
        "semantic": "train/loss", "coarse": "train/loss", "fine": "train/loss"}  # fmt: skip


@pytest.mark.parametrize("stage", list(LOSS))
def test_bf16_mixed_training_step_is_finite(stage, data, tmp_path):
    """One optimisation step of the stage's tiny config under `--trainer.precision=bf16-mixed` on CPU: layers really
    run in bf16 and the logged loss is finite."""
    from torch import nn

    from musiclm.artifacts import atomic_torch_save, handoff
    from musiclm.train import build_cli

    args = [
        *stage_args(stage, data), "--trainer.precision=bf16-mixed", "--trainer.max_steps=1", "--trainer.logger=false"
    ]
    if stage == "semantic_tokens":  # k-means needs a MuLan to read features from, and a step to initialise
        from musiclm.mulan.module import MuLanModule

        mulan = MuLanModule(sample_rate=16_000, window_seconds=1.0, n_mels=32, hop_length=320, patch_freq=16,
                            patch_time=2, audio_dim=32, audio_depth=2, audio_heads=2, text_tower="scratch",
                            text_dim=32, text_depth=1, text_heads=2, num_quantizers=2, codebook_size=8)  # fmt: skip
        atomic_torch_save(handoff(mulan), tmp_path / "mulan.ckpt")
        args += [f"--model.source={tmp_path / 'mulan.ckpt'}", "--trainer.max_steps=4"]
    if stage == "codec":  # past gan_start_step, so the discriminators' step runs under autocast too
        args.append("--trainer.max_steps=3")
    cli = build_cli(stage, tmp_path / "run", "tiny", "cpu", args)
    dtypes: set[torch.dtype] = set()
    modules = list(cli.model.modules())
    if stage == "semantic_tokens":  # the frozen feature extractor is kept out of the module tree
        modules += list(cli.model.extractor.modules())
    for m in modules:
        if isinstance(m, (nn.Linear, nn.Conv1d, nn.Conv2d)):
            m.register_forward_hook(
                lambda _m, _i, out: dtypes.add(out.dtype) if isinstance(out, torch.Tensor) else None
            )
    cli.trainer.fit(cli.model, cli.datamodule)
    loss = cli.trainer.callback_metrics[LOSS[stage]]
    print(f"{stage} bf16-mixed step {cli.trainer.global_step}: {LOSS[stage]} = {loss.item():.4f}")
    assert torch.isfinite(loss), loss
    assert torch.bfloat16 in dtypes, dtypes
    assert all(torch.isfinite(p).all() for p in cli.model.parameters())


# -- safetensors -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("stage", ["mulan", "semantic"])
def test_export_safetensors_round_trip(stage, tmp_path, capsys):
    """`musiclm export-safetensors` writes the hand-off's tensors plus its hyperparameters as JSON metadata; the file
    loads back (no config) into a module equal to the one `load_model` gives."""
    from safetensors import safe_open

    from musiclm.artifacts import atomic_torch_save, handoff, load_safetensors
    from musiclm.cli import main
    from tests.dist_fsdp_grads import build

    run = tmp_path / "run"
    module = build(stage, False)
    extra = {"mulan_quantizer": {"relative_error": 0.5}} if stage == "mulan" else {}
    atomic_torch_save(
        handoff(module, {"data_dir": "data/x", "batch_size": 4}, global_step=7, **extra),
        artifacts.model_path(run, stage),
    )
    main(["export-safetensors", "--run", str(run), "--stage", stage])
    path = artifacts.safetensors_path(run, stage)
    assert f"wrote {path}" in capsys.readouterr().out
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata()
    assert meta["stage"] == stage and json.loads(meta["global_step"]) == 7
    assert json.loads(meta["hyper_parameters"]) == json.loads(json.dumps(dict(module.hparams)))
    assert json.loads(meta["datamodule_hyper_parameters"])["batch_size"] == 4
    got, ref = load_safetensors(path), artifacts.load_model(run, stage)
    assert type(got) is type(ref) and not got.training and dict(got.hparams) == dict(ref.hparams)
    a, b = got.state_dict(), ref.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    with pytest.raises(ValueError, match="not a musiclm hand-off"):
        from safetensors.torch import save_file

        save_file({"x": torch.zeros(1)}, str(tmp_path / "other.safetensors"))
        load_safetensors(tmp_path / "other.safetensors")
