"""Scale-out on CPU with gloo, 2 processes: DDP and FSDP2 (ModelParallelStrategy) fits through the `musiclm train`
CLI whose hand-off loads on 1 process, FSDP2 gradients equal to one process's, resume of a sharded run after
`kill -9`, the trainer configs' strategies, bf16 autocast steps, safetensors export.

Multi-process runs are CLI subprocesses launched the way torchrun does (every rank started at once with RANK,
WORLD_SIZE, MASTER_ADDR/PORT in the environment; Lightning then creates no processes itself), in their own session
so a failure or a kill takes every rank down."""

from __future__ import annotations

import json
import math
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
        make = lambda i: [token_sample(f"{split}-{i}", *samples[i], {"caption": "toy"})]  # noqa: B023
        write_split_shards(root / "tokens", split, list(range(n)), make, items_per_shard=16)
    return {"audio": audio, "tokens": root / "tokens", "root": root}


def stage_args(stage: str, data: dict[str, Path]) -> list[str]:
    if stage in ("semantic", "coarse", "fine"):
        return [f"--data.data_dir={data['tokens']}"]
    return [f"--data.data_dir={data['audio']}", *AUDIO_ARGS]


def launch(stage: str, run: Path, trainer: str, args: list[str], nprocs: int = 2) -> list[subprocess.Popen]:
    """Start `musiclm train` on `nprocs` CPU ranks at once (torchrun's environment), each in the same new session."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(free_port()),
           "WORLD_SIZE": str(nprocs), "LOCAL_WORLD_SIZE": str(nprocs), "NODE_RANK": "0", "PYTHONUNBUFFERED": "1"}  # fmt: skip
    cmd = [sys.executable, "-m", "musiclm.cli", "train", stage, "--run", str(run), "--profile", "tiny", "--trainer", trainer,
           "--trainer.accelerator=cpu", f"--trainer.devices={nprocs}", *args]  # fmt: skip
    procs, pgid = [], None
    for rank in range(nprocs):
        log = open(run.parent / f"{run.name}-{stage}-rank{rank}.log", "a")
        procs.append(subprocess.Popen(
            cmd, env={**env, "RANK": str(rank), "LOCAL_RANK": str(rank)}, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT,
            process_group=pgid if pgid is not None else 0,
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
        assert module.encode_text(["a sine tone"]).shape == (1, module.embed_dim)
    else:
        assert module.generate(torch.zeros(1, 2, dtype=torch.long), 4, seed=0).shape == (1, 4)


# -- FSDP2 sharding is exact -------------------------------------------------------------------------------------


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


def test_sharded_run_killed_then_rerun_continues(data, tmp_path):
    """FSDP2 semantic LM: kill -9 every rank once a sharded last.ckpt exists; the same command with a budget of two
    more steps restores it (weights, optimizer, step), runs only those steps, and its loss continues from the
    checkpoint's instead of restarting; the hand-off loads on 1 process."""
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    run, stage = tmp_path / "run", "semantic"
    args = [*stage_args(stage, data), "--model.lr=1e-2", "--trainer.val_check_interval=10", "--trainer.limit_val_batches=1"]
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
    initial, at_kill, final = lm_loss(ckpt["hyper_parameters"], None), lm_loss(ckpt["hyper_parameters"], saved_weights), lm_loss(ckpt["hyper_parameters"], ckpt["state_dict"])
    assert at_kill < initial - 0.1 and final < at_kill + 0.05, (initial, at_kill, final)
    assert artifacts.load_model(run, stage).generate(token_batch(1)["mulan"], 3, seed=0).shape == (1, 3)
