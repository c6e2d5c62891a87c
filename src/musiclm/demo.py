"""`make demo`: the whole chain at the demo profile with one progress display.

Each step is a make target, so a re-run skips what is finished and resumes what was interrupted. Step output goes
to runs/<RUN>/logs/<step>.log; on failure the log's tail is printed.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path

import torch
from tqdm import tqdm

from musiclm.config import config_root
from musiclm.paths import outputs_dir, reports_dir, root, runs_dir

PROMPTS = config_root() / "demo_prompts.txt"


Step = tuple[str, list[str]]
Lane = list[Step]


def plan(run: str, dataset: str, profile: str, makefile: str, make_vars: list[str]) -> list[list[Lane]]:
    """Phases run one after another; the lanes of a phase run side by side. MuLan (+ the semantic tokenizer fitted
    on its features) and the codec are independent, and the demo codec uses one thread, so on 2 cores they share
    the machine instead of leaving a core idle for the codec's 8 minutes. make runs in the musiclm root (-C) because
    the Makefile's targets are paths relative to its working directory."""
    where = ["-f", str(Path(makefile).resolve()), "-C", str(root().resolve())]
    make = ["make", *where, f"RUN={run}", f"DATASET={dataset}", f"PROFILE={profile}", *make_vars]
    out = str(outputs_dir() / run)
    generate = [sys.executable, "-m", "musiclm.cli", "generate", "--run", run, "--prompts", str(PROMPTS), "--out", out]
    return [
        # the melody tokens where the profile conditions on them (the demo's pitch classes: eval's 32 test melodies
        # rendered, nothing trained; no-op otherwise)
        [[("synthetic corpus", [*make, "data"]), ("melody", [*make, "melody"])]],
        [
            [("MuLan", [*make, "train-mulan"]), ("semantic tokenizer", [*make, "fit-semantic"]),
             ("judge", [*make, "train-judge"])],  # the tagger eval's judges read: fills this lane's wait on the codec
            [("codec", [*make, "train-codec"])],
        ],
        [[("tokenize", [*make, "tokenize"])]],
        # the acoustic LMs first (they train on real tokens, not the semantic LM's): the semantic LM's listening
        # samples (lm/listen.py) then go through them
        [[("acoustic LMs", [*make, "train-acoustic"])]],
        [[("semantic LM", [*make, "train-semantic"])]],
        [[("generate", generate + (["--seconds", "2"] if profile == "tiny" else []))]],
        [[("eval", [*make, "eval"])]],
    ]


def choose_lm_precision(make_vars: list[str], fp32: float, bf16: float) -> list[str]:
    """`make_vars` with LM_PRECISION set: as given, else bf16-mixed where this CPU multiplies bf16 (`bf16` GFLOP/s)
    at least 1.5x faster than fp32 (AVX512-BF16/AMX: 2-7x here), else 32-true (AVX2-only CPUs run bf16 ~100x
    slower). Measured, never assumed: the same figure decides on every machine, so one machine always trains the
    same way."""
    given = [v for v in make_vars if v.startswith("LM_PRECISION=")]
    if given and given[-1] != "LM_PRECISION=":
        return make_vars
    precision = "bf16-mixed" if bf16 >= 1.5 * fp32 else "32-true"
    print(f"matmul fp32 {fp32:.0f} GFLOP/s, bf16 {bf16:.0f} GFLOP/s: LM stages train in {precision}")
    return [v for v in make_vars if not v.startswith("LM_PRECISION=")] + [f"LM_PRECISION={precision}"]


def run_lane(lane: Lane, logs: Path, env: dict[str, str], report) -> tuple[str, int, Path] | None:
    """Run a lane's steps in order; returns (name, exit code, log) of the first failure, else None."""
    for name, cmd in lane:
        log = logs / f"{name.replace(' ', '_')}.log"
        t0 = time.perf_counter()
        with open(log, "w") as f:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, env=env).returncode
        report(name, time.perf_counter() - t0, log)
        if code != 0:
            return name, code, log
    return None


def write_timing(path: Path, profile: str, total: float, steps: dict[str, float], fp32: float, bf16: float) -> None:
    """What the run cost, beside the CPU's speed (`musiclm showcase` reads it): wall time of the whole chain
    and of each step, CPU-hours as wall time x the cores the chain keeps busy. Times add up over invocations, so a
    run interrupted and resumed counts both parts (a step a re-run finds finished adds its ~1 s of make)."""
    old = json.loads(path.read_text()) if path.is_file() else {"wall_s": 0.0, "steps_s": {}}
    total += old["wall_s"]
    steps = {k: round(old["steps_s"].get(k, 0.0) + v, 1) for k, v in steps.items()}
    cores = os.cpu_count() or 1
    record = {
        "profile": profile, "wall_s": round(total, 1), "cores": cores, "cpu_hours": round(total * cores / 3600, 3),
        "steps_s": steps, "matmul_gflops": {"fp32": round(fp32), "bf16": round(bf16)},
    }  # fmt: skip
    path.write_text(json.dumps(record, indent=2) + "\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm demo", description=__doc__)
    p.add_argument("--run", default="demo")
    p.add_argument("--dataset", default="synth")
    p.add_argument("--profile", default="demo")
    p.add_argument("--makefile", default=str(Path(__file__).resolve().parents[2] / "Makefile"))
    p.add_argument("make_vars", nargs="*", help="VAR=value passed to every make step")
    a = p.parse_args(argv)
    logs = runs_dir() / a.run / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    from musiclm.bench import matmul_gflops

    fp32, bf16 = matmul_gflops(torch.float32, seconds=0.5), matmul_gflops(torch.bfloat16, seconds=0.5)
    phases = plan(a.run, a.dataset, a.profile, a.makefile, choose_lm_precision(a.make_vars, fp32, bf16))
    t_start = time.perf_counter()
    steps: dict[str, float] = {}
    bar = tqdm(total=sum(len(lane) for phase in phases for lane in phase), desc="demo", unit="step",
               bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]")  # fmt: skip
    lock = threading.Lock()

    def report(name: str, seconds: float, log: Path) -> None:
        with lock:
            bar.write(f"  {name:<20} {seconds:7.1f} s  (log: {log})")
            steps[name] = round(seconds, 1)
            bar.update()

    for phase in phases:
        bar.set_description("demo: " + " + ".join(lane[0][0] for lane in phase))
        env = dict(os.environ, MUSICLM_ROOT=str(root().resolve()))  # absolute: make -C changes the steps' cwd
        if len(phase) > 1:  # side-by-side lanes split the cores instead of each oversubscribing all of them
            env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(phase)))
        with ThreadPoolExecutor(len(phase)) as pool:
            failures = [f for f in pool.map(partial(run_lane, logs=logs, env=env, report=report), phase) if f]
        if failures:
            bar.close()
            write_timing(logs / "timing.json", a.profile, time.perf_counter() - t_start, steps, fp32, bf16)
            for name, code, log in failures:
                print("\n".join(log.read_text(errors="replace").splitlines()[-40:]), file=sys.stderr)
                msg = f"\nstep '{name}' failed (exit {code}); fix it and re-run `make demo`: finished steps are kept."
                print(msg, file=sys.stderr)
            sys.exit(failures[0][1])
    bar.close()
    total = time.perf_counter() - t_start
    write_timing(logs / "timing.json", a.profile, total, steps, fp32, bf16)
    print(
        f"\ndemo finished in {total / 60:.1f} min\n"
        f"  generated audio + spectrograms: {outputs_dir() / a.run}/\n"
        f"  evaluation report:              {reports_dir() / a.run / 'eval.json'}\n"
        f"  checkpoints:                    {runs_dir() / a.run}/<stage>/model.ckpt\n"
        f"  TensorBoard:                    make tensorboard RUN={a.run}   (logs in {runs_dir() / a.run}/<stage>/tb)"
    )


if __name__ == "__main__":
    main()
