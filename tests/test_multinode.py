"""Two "nodes" on this machine: `torchrun --nnodes 2 --nproc-per-node 1` twice, meeting at a localhost c10d
rendezvous, train the tiny semantic LM under DDP and under FSDP2. Both ranks must read different shards, the loss of
the first global batch must equal a one-process computation on the same samples, and the checkpoint the two nodes
save must resume on one process. The SLURM templates are rendered for 2 nodes with stand-in `srun`/`scontrol` and
must launch the same entry point."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from musiclm import artifacts
from musiclm.lm.module import SemanticStage
from tests.test_distributed import data, free_port  # noqa: F401  (the module-scoped token shards)

ROOT = Path(__file__).resolve().parents[1]
TORCHRUN = Path(sys.executable).with_name("torchrun")


def torchrun_nodes(out: Path, run: Path, trainer: str, tokens: Path, steps: int) -> list[str]:
    """Start both nodes at once (node 0 hosts the rendezvous store) and return each one's output."""
    port, procs = free_port(), []
    path = os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", "PYTHONPATH": path}
    for node in range(2):
        cmd = [str(TORCHRUN), "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=multinode-test", f"--rdzv-conf=is_host={node == 0}",
               "--no-python", sys.executable, str(ROOT / "tests" / "dist_multinode.py"),
               str(out), str(run), trainer, str(tokens), str(steps)]  # fmt: skip
        procs.append(subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      text=True, start_new_session=True))  # fmt: skip
    logs = []
    for p in procs:
        try:
            logs.append(p.communicate(timeout=240)[0])
        except subprocess.TimeoutExpired:
            for q in procs:
                os.killpg(q.pid, signal.SIGKILL)
            raise
    for p, log in zip(procs, logs, strict=True):
        assert p.returncode == 0, log[-4000:]
    return logs


@pytest.mark.slow  # two torchrun agents and a one-process resume
@pytest.mark.parametrize("trainer", ["ddp", "fsdp"])
def test_two_nodes_under_torchrun(trainer, data, tmp_path):  # noqa: F811
    out, run = tmp_path / "out", tmp_path / "run"
    torchrun_nodes(out, run, trainer, data["tokens"], steps=2)

    keys = [set(json.loads((out / f"rank{r}-keys.json").read_text())) for r in range(2)]
    shard_of = [{int(k.split("-")[1]) // 16 for k in ks} for ks in keys]  # 16 samples per train shard
    assert keys[0] and keys[1] and not keys[0] & keys[1], keys
    assert len(shard_of[0]) == len(shard_of[1]) == 1 and shard_of[0] != shard_of[1], shard_of

    first = [torch.load(out / f"rank{r}-first.pt", weights_only=True) for r in range(2)]
    hp = torch.load(artifacts.model_path(run, "semantic"), map_location="cpu", weights_only=True)["hyper_parameters"]
    one = SemanticStage(**{k: v for k, v in hp.items() if not k.startswith("_")})
    one.load_state_dict(torch.load(out / "initial.pt", weights_only=True))
    one.eval()
    batch = {k: torch.cat([f["batch"][k] for f in first]) for k, v in first[0]["batch"].items() if v.ndim}
    with torch.no_grad():
        ce, _, valid, _ = one.forward_loss(batch)
    global_loss = ce[valid.expand_as(ce)].mean().item()
    assert abs(global_loss - sum(f["loss"] for f in first) / 2) < 1e-5, (global_loss, [f["loss"] for f in first])

    # the two nodes' checkpoint resumes on one process (FSDP2's sharded one with FSDP2 on one device)
    one_proc = ["--trainer.devices=1", "--trainer.num_nodes=1", "--trainer.accelerator=cpu",
                f"--data.data_dir={data['tokens']}", "--trainer.max_steps=4"]  # fmt: skip
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_PORT")}
    res = subprocess.run([sys.executable, "-m", "musiclm.cli", "train", "semantic", "--run", str(run), "--profile",
                          "tiny", "--trainer", trainer, *one_proc], cwd=ROOT, env={**env, "OMP_NUM_THREADS": "1",
                          "MASTER_PORT": str(free_port())}, capture_output=True, text=True, timeout=240)  # fmt: skip
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "Restored all states from the checkpoint" in res.stdout + res.stderr
    assert torch.load(artifacts.model_path(run, "semantic"), map_location="cpu", weights_only=True)["global_step"] == 4


def render(template: str, tmp_path: Path, nodes: int = 2, tasks_per_node: int = 1) -> list[list[str]]:
    """Run a SLURM template with `srun` and `scontrol` stand-ins; return the argv of every `srun` it made."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "srun-calls.jsonl"
    bin_dir.mkdir(parents=True)
    (bin_dir / "srun").write_text(
        f"#!{sys.executable}\nimport json, sys\nopen({str(calls)!r}, 'a').write(json.dumps(sys.argv[1:]) + '\\n')\n"
    )
    (bin_dir / "scontrol").write_text("#!/bin/sh\nprintf 'gpu-node-1\\ngpu-node-2\\n'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "SLURM_NNODES": str(nodes),
           "SLURM_NTASKS_PER_NODE": str(tasks_per_node), "SLURM_JOB_NODELIST": "gpu-node-[1-2]",
           "SLURM_JOB_ID": "4242", "GPUS_PER_NODE": "1"}  # fmt: skip
    subprocess.run(["bash", str(ROOT / "slurm" / template), "train-semantic", "RUN=exp1", "PROFILE=paper"],
                   env=env, cwd=tmp_path, check=True)  # fmt: skip
    return [json.loads(line) for line in calls.read_text().splitlines()]


def test_slurm_templates_launch_the_make_target_on_two_nodes(tmp_path):
    assert shutil.which("bash")
    (ddp,) = render("train.sbatch", tmp_path / "ddp")
    make = ddp[ddp.index("make"):]
    assert make == ["make", "train-semantic", "TRAINER=ddp", "ACCELERATOR=gpu", "DEVICES=1", "NODES=2",
                    "RUN=exp1", "PROFILE=paper"]  # fmt: skip
    (fsdp,) = render("train-fsdp.sbatch", tmp_path / "fsdp")
    assert fsdp[fsdp.index("make"):][:6] == ["make", "train-semantic", "TRAINER=fsdp", "ACCELERATOR=gpu",
                                             "DEVICES=1", "NODES=2"]  # fmt: skip
    (tr,) = render("train-torchrun.sbatch", tmp_path / "torchrun")
    assert tr[tr.index("env"):tr.index("torchrun")] == ["env", "-u", "SLURM_NTASKS"]
    launcher = tr[tr.index("torchrun"):tr.index("--no-python")]
    assert launcher == ["torchrun", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
                        "--rdzv-endpoint=gpu-node-1:29500", "--rdzv-id=4242"]  # fmt: skip
    assert tr[tr.index("--no-python") + 1:] == ["make", "train-semantic", "TRAINER=fsdp", "ACCELERATOR=gpu",
                                                "DEVICES=1", "NODES=2", "RUN=exp1", "PROFILE=paper"]  # fmt: skip


def test_stage_without_blocks_trains_with_ddp_under_fsdp(data, tmp_path):  # noqa: F811
    """`TRAINER=fsdp` on a stage with nothing to shard (the codec) trains it under DDP with a one-line notice, so
    one `make ... TRAINER=fsdp` builds the whole upstream chain."""
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MASTER_PORT": str(free_port())}
    args = ["--trainer.devices=1", "--trainer.accelerator=cpu", f"--data.data_dir={data['audio']}",
            "--data.sample_rate=16000", "--data.clip_seconds=1.0", "--data.batch_size=4",
            "--trainer.max_steps=2"]  # fmt: skip
    res = subprocess.run([sys.executable, "-m", "musiclm.cli", "train", "codec", "--run", str(run), "--profile", "tiny",
                          "--trainer", "fsdp", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=240)  # fmt: skip
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]
    assert "codec has no transformer blocks for FSDP to shard: it trains with the ddp trainer instead" in res.stdout
    assert artifacts.model_path(run, "codec").is_file()
    assert (run / "codec" / "checkpoints" / "last.ckpt").is_file()  # a plain DDP checkpoint, not a sharded folder
