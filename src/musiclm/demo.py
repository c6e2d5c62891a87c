"""`make demo`: the whole chain at the demo profile with one progress display.

Each step is a make target, so a re-run skips what is finished and resumes what was interrupted. Step output goes
to runs/<RUN>/logs/<step>.log; on failure the log's tail is printed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from tqdm import tqdm

PROMPTS = Path(__file__).resolve().parents[2] / "configs" / "demo_prompts.txt"


def steps(run: str, dataset: str, profile: str, makefile: str, make_vars: list[str]) -> list[tuple[str, list[str]]]:
    make = ["make", "-f", makefile, f"RUN={run}", f"DATASET={dataset}", f"PROFILE={profile}", *make_vars]
    generate = [sys.executable, "-m", "musiclm.cli", "generate", "--run", run, "--prompts", str(PROMPTS), "--out", f"outputs/{run}"]
    return [
        ("synthetic corpus", [*make, "data"]),
        ("MuLan", [*make, "train-mulan"]),
        ("codec", [*make, "train-codec"]),
        ("semantic tokenizer", [*make, "fit-semantic"]),
        ("tokenize", [*make, "tokenize"]),
        ("semantic LM", [*make, "train-semantic"]),
        ("acoustic LMs", [*make, "train-acoustic"]),
        ("generate", generate + (["--seconds", "2"] if profile == "tiny" else [])),
        ("eval", [*make, "eval"]),
    ]


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm demo", description=__doc__)
    p.add_argument("--run", default="demo")
    p.add_argument("--dataset", default="synth")
    p.add_argument("--profile", default="demo")
    p.add_argument("--makefile", default=str(Path(__file__).resolve().parents[2] / "Makefile"))
    p.add_argument("make_vars", nargs="*", help="VAR=value passed to every make step")
    a = p.parse_args(argv)
    logs = Path("runs") / a.run / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    plan = steps(a.run, a.dataset, a.profile, a.makefile, a.make_vars)
    t_start = time.perf_counter()
    bar = tqdm(plan, desc="demo", unit="step", bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}]")
    timings = {}
    for name, cmd in bar:
        bar.set_description(f"demo: {name}")
        log = logs / f"{name.replace(' ', '_')}.log"
        t0 = time.perf_counter()
        with open(log, "w") as f:
            code = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT).returncode
        timings[name] = time.perf_counter() - t0
        bar.write(f"  {name:<20} {timings[name]:7.1f} s  (log: {log})")
        if code != 0:
            bar.close()
            tail = log.read_text(errors="replace").splitlines()[-40:]
            print("\n".join(tail), file=sys.stderr)
            print(f"\nstep '{name}' failed (exit {code}); fix it and re-run `make demo`: finished steps are kept.", file=sys.stderr)
            sys.exit(code)
    bar.close()
    total = time.perf_counter() - t_start
    print(
        f"\ndemo finished in {total / 60:.1f} min\n"
        f"  generated audio + spectrograms: outputs/{a.run}/\n"
        f"  evaluation report:              reports/{a.run}/eval.json\n"
        f"  checkpoints:                    runs/{a.run}/<stage>/model.ckpt\n"
        f"  TensorBoard:                    make tensorboard RUN={a.run}   (logs in runs/{a.run}/<stage>/tb)"
    )


if __name__ == "__main__":
    main()
