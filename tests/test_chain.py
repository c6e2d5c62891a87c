"""The whole chain as a user runs it: `make demo` at the tiny profile in a scratch directory, then what it made
(generated audio, eval.json), the notebooks executed against that run, and the error a missing stage gives."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUN = "tiny"
DATASET = "synth-tiny"
EVAL_KEYS = [
    "mulan.t2a_recall@10", "mulan.zero_shot_instrument_acc", "mulan.zero_shot_instrument_chance",
    "codec.mel_distance", "codec.si_sdr_db", "codec.kbps", "codec.opus_mel_distance", "codec.opus_si_sdr_db",
    "semantic_tokens.perplexity", "lm.semantic_val_loss", "lm.coarse_val_loss", "lm.fine_val_loss",
    "lm.semantic_top1", "lm.coarse_top1", "lm.fine_top1",
    "generation.mcc", "generation.mcc_margin", "generation.mcc_margin_p", "generation.mcc_margin_real",
    "generation.mcc_margin_codec",
    "generation.fad_mulan", "generation.fad_logmel",
    "generation.spectral_flatness", "generation.spectral_flatness_real",
    "judge.instrument_family.real", "judge.drums.real", "judge.tempo.real", "judge.key_mode.real",
    *(f"oracle.{o}.{k}" for o in ("semantic", "coarse", "tokens")
      for k in ("mcc_margin", "fad_logmel", "spectral_flatness")),
    "generation.adherence_tempo", "generation.adherence_tempo_chance", "generation.num_prompts",
]  # fmt: skip


def make(workdir: Path, *targets: str, check: bool = True) -> subprocess.CompletedProcess:
    cmd = [
        "make", "-f", str(ROOT / "Makefile"), "-C", str(workdir), *targets, f"RUN={RUN}", "PROFILE=tiny",
        f"DATASET={DATASET}", "SYNTH_CLIPS=40", "SYNTH_SECONDS=3", "NUM_PROMPTS=4", "WORKERS=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "runs" / RUN / "logs").glob("*.log"))
        )
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{logs}")
    return proc


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("chain")
    make(workdir, "demo")
    return workdir


def test_demo_generates_audio_with_spectrogram_and_metadata(chain: Path):
    out = chain / "outputs" / RUN
    prompts = [p for p in (ROOT / "configs" / "demo_prompts.txt").read_text().splitlines() if p.strip()]
    wavs = sorted(out.glob("*.wav"))
    assert len(wavs) == len(prompts)
    for wav in wavs:
        info = json.loads(wav.with_suffix(".json").read_text())
        assert info["prompt"] in prompts
        assert info["seconds"] > 0 and -1.0 <= info["mulan_similarity"] <= 1.0
        assert set(info["timings_s"]) == {"mulan", "semantic", "coarse", "fine", "codec"}
        assert wav.with_suffix(".png").stat().st_size > 1000


def test_eval_report_has_every_key_as_a_number(chain: Path):
    report = json.loads((chain / "reports" / RUN / "eval.json").read_text())
    missing = [k for k in EVAL_KEYS if k not in report]
    assert not missing
    for k in EVAL_KEYS:
        assert isinstance(report[k], (int, float)), k
    finite = [k for k in EVAL_KEYS if "adherence" not in k]
    assert all(math.isfinite(report[k]) for k in finite), report
    assert report["generation.num_prompts"] == 4
    assert 0 < report["mulan.zero_shot_instrument_chance"] < 1
    assert report["codec.kbps"] > 0


def test_every_lm_stage_logged_listening_samples(chain: Path):
    """The demo trains the acoustic LMs before the semantic LM, so all three render samples through the run's codec."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    for stage in ("semantic", "coarse", "fine"):
        events = EventAccumulator(str(chain / "runs" / RUN / stage / "tb"), size_guidance={"audio": 0, "images": 0})
        events.Reload()
        assert {"listen/0_generated", "listen/0_real"} <= set(events.Tags()["audio"]), stage
        assert "listen_spectrogram/0" in events.Tags()["images"], stage


def test_rerun_is_a_no_op(chain: Path):
    """Every step is a make target: a finished chain has nothing left to do."""
    proc = make(
        chain,
        "-q",
        "train-mulan",
        "train-codec",
        "fit-semantic",
        "tokenize",
        "train-semantic",
        "train-acoustic",
        "train-judge",
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_missing_stage_names_its_make_target(chain: Path, tmp_path: Path):
    from musiclm.artifacts import MissingArtifactError
    from musiclm.pipeline import MusicLM

    run = tmp_path / RUN
    shutil.copytree(chain / "runs" / RUN, run, ignore=shutil.ignore_patterns("tb", "*.ckpt.tmp", "last.ckpt"))
    (run / "coarse" / "model.ckpt").unlink()
    with pytest.raises(MissingArtifactError, match="make train-acoustic"):
        MusicLM.from_run(run)


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebook_runs_on_the_tiny_run(chain: Path, notebook: str):
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs must be stripped in git"
    os.environ.update(
        MUSICLM_RUN=str(chain / "runs" / RUN),
        MUSICLM_DATA=str(chain / "data" / "shards" / DATASET),
        MUSICLM_SECONDS="1",
    )
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(chain)}}).execute()
    outputs = [o for c in nb.cells for o in c.get("outputs", [])]
    assert not [o for o in outputs if o.get("output_type") == "error"]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook's plots did not render"

