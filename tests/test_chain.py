"""The whole chain as a user runs it: `make demo` at the tiny profile in a scratch directory, then what it made
(generated audio, eval.json), the notebooks executed against that run, and the error a missing stage gives. The
dataset is the synthetic corpus plus as many uncaptioned clips, ingested from plain audio files (DATASET=a+b), as
MusicLM trains: MuLan on the captioned half, every other stage on all of it."""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
RUN = "tiny"
SYNTH = "synth-tiny"
DATASET = f"{SYNTH}+unlabelled"
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
    "generation.captioned_test_clips",
    "story.segment_adherence", "story.segment_adherence_real", "story.segment_adherence_chance", "story.num_segments",
    "continuation.prompt_similarity", "continuation.prompt_similarity_chance", "continuation.prompt_similarity_real",
]  # fmt: skip


def make(workdir: Path, *targets: str, check: bool = True, run: str = RUN) -> subprocess.CompletedProcess:
    cmd = [
        "make", "-f", str(ROOT / "Makefile"), "-C", str(workdir), *targets, f"RUN={run}", "PROFILE=tiny",
        f"DATASET={DATASET}", "SYNTH_CLIPS=40", "SYNTH_SECONDS=3", "NUM_PROMPTS=4", "WORKERS=1",
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if check and proc.returncode != 0:
        logs = "\n".join(
            f"--- {p}\n{p.read_text()[-3000:]}" for p in sorted((workdir / "runs" / run / "logs").glob("*.log"))
        )
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}\n{logs}")
    return proc


def ingest_uncaptioned(workdir: Path) -> None:
    """20 six-second files with neither caption nor tags (chords over noise): 40 three-second clips, as many as the
    synthetic corpus."""
    import numpy as np
    import soundfile as sf

    src = workdir / "music"
    src.mkdir()
    rng = np.random.default_rng(0)
    t = np.arange(6 * 24_000) / 24_000
    for i in range(20):
        x = sum(np.sin(2 * np.pi * f * t) for f in rng.uniform(110, 880, 3)) / 3 + 0.05 * rng.standard_normal(len(t))
        sf.write(src / f"track{i:02d}.wav", (0.3 * x).astype(np.float32), 24_000)
    proc = subprocess.run(
        [sys.executable, "-m", "musiclm.cli", "data", "ingest", str(src), str(workdir / "data/shards/unlabelled"),
         "--clip-seconds", "3", "--val-fraction", "0.1", "--test-fraction", "0.1"],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert proc.returncode == 0 and "uncaptioned 40 clips" in proc.stdout, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("chain")
    ingest_uncaptioned(workdir)
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


def test_demo_records_what_it_cost(chain: Path):
    """runs/<RUN>/logs/timing.json: what the compute curve reads (wall time of each step, CPU-hours, matmul rate)."""
    timing = json.loads((chain / "runs" / RUN / "logs" / "timing.json").read_text())
    assert timing["profile"] == "tiny"
    steps = {"synthetic corpus", "MuLan", "codec", "tokenize", "acoustic LMs", "semantic LM", "eval"}
    assert steps <= set(timing["steps_s"])
    assert timing["wall_s"] >= max(timing["steps_s"].values()) > 0
    assert timing["cpu_hours"] == pytest.approx(timing["wall_s"] * timing["cores"] / 3600, abs=1e-3)
    assert timing["matmul_gflops"]["fp32"] > 0


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
    assert not any(k.startswith("judge.clap.") for k in report)  # no CLAP_FROM: no CLAP judge


def test_uncaptioned_half_trains_every_stage_but_mulan(chain: Path):
    """Token shards hold the uncaptioned clips too (MuLan audio tokens), MuLan's data module left them out, and eval
    prompted with captioned test clips only."""
    tokens = json.loads((chain / "data" / "tokens" / RUN / "train" / "manifest.json").read_text())
    audio = [json.loads((chain / "data/shards" / d / "train/manifest.json").read_text()) for d in (SYNTH, "unlabelled")]
    assert tokens["num_samples"] == sum(m["num_samples"] for m in audio)
    assert tokens["num_uncaptioned"] == audio[1]["num_samples"] > 0 and audio[1]["num_captioned"] == 0
    assert [d["count"] for d in tokens["datasets"]] == [m["num_shards"] for m in audio]
    mulan = torch.load(chain / "runs" / RUN / "mulan" / "model.ckpt", map_location="cpu", weights_only=True)
    assert mulan["datamodule_hyper_parameters"]["captioned_only"] is True
    codec = torch.load(chain / "runs" / RUN / "codec" / "model.ckpt", map_location="cpu", weights_only=True)
    assert codec["datamodule_hyper_parameters"]["data_dir"].endswith(DATASET)
    report = json.loads((chain / "reports" / RUN / "eval.json").read_text())
    assert report["generation.captioned_test_clips"] >= report["generation.num_prompts"]


def test_pretrained_components_replace_their_stages(chain: Path, tmp_path: Path):
    """Tiny EnCodec and CLAP folders imported instead of training (CODEC_FROM, MULAN_FROM) and semantic tokens over a
    tiny HuBERT's features (SEMANTIC_FROM) on the same corpus: fit-quantizer -> semantic tokens -> tokenize -> the
    three LM stages -> generate -> eval, nothing else changed. The judge reads only the corpus: the tiny run's; the
    CLAP judge reads another tiny CLAP (CLAP_FROM), whose random weights certify too little for a verdict."""
    from tests.tiny_hf import save_clap, save_encodec, save_hubert

    run = "tiny-pretrained"
    shutil.copytree(chain / "runs" / RUN / "judge", chain / "runs" / run / "judge",
                    ignore=shutil.ignore_patterns("tb", "checkpoints"))  # fmt: skip
    make(chain, "generate", "eval", f"CODEC_FROM={save_encodec(tmp_path / 'encodec')}",
         "CODEC_IMPORT_ARGS=--bandwidth 3", f"MULAN_FROM={save_clap(tmp_path / 'clap')}",
         "MULAN_IMPORT_ARGS=--levels 2 --codebook-size 8", f"SEMANTIC_FROM={save_hubert(tmp_path / 'hubert')}",
         f"CLAP_FROM={save_clap(tmp_path / 'judge-clap', seed=1)}", "TEXT=a calm piano piece", "SECONDS=1",
         run=run)  # fmt: skip
    classes = {s: torch.load(chain / "runs" / run / s / "model.ckpt", weights_only=True)["class_path"]
               for s in ("codec", "mulan")}  # fmt: skip
    assert classes == {"codec": "musiclm.pretrained.codec.HFCodec", "mulan": "musiclm.pretrained.clap.ClapEncoder"}
    vocab = json.loads((chain / "data" / "tokens" / run / "train" / "manifest.json").read_text())["vocab"]
    assert (vocab["acoustic_levels"], vocab["acoustic_codebook_size"], vocab["acoustic_rate"]) == (6, 64, 75.0)
    assert (vocab["mulan_levels"], vocab["mulan_codebook_size"]) == (2, 8) and vocab["semantic_rate"] == 25.0
    semantic = torch.load(chain / "runs" / run / "semantic_tokens" / "model.ckpt", weights_only=True)
    assert semantic["hyper_parameters"]["extractor"] == "hf"
    [wav] = (chain / "outputs" / run).glob("*.wav")
    assert json.loads(wav.with_suffix(".json").read_text())["sample_rate"] == 24_000
    report = json.loads((chain / "reports" / run / "eval.json").read_text())
    assert all(isinstance(report[k], (int, float)) for k in EVAL_KEYS)
    assert math.isfinite(report["generation.mcc"]) and report["codec.kbps"] == 2.7
    assert 0 <= report["judge.clap.real"] <= 1 and -1 <= report["judge.clap.score_real"] <= 1


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


def run_notebook(notebook: str, chain: Path, run: str, dataset: str, monkeypatch) -> list:
    """Execute notebooks/`notebook` in `chain` against its run `run` and shards `dataset` (1-s generations), as a
    user would after `make demo`; fails on any cell's error. Returns the executed cells."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(ROOT / "notebooks" / notebook, as_version=4)
    assert all(not c.get("outputs") for c in nb.cells if c.cell_type == "code"), "outputs must be stripped in git"
    monkeypatch.setenv("MUSICLM_RUN", str(chain / "runs" / run))
    monkeypatch.setenv("MUSICLM_DATA", str(chain / "data" / "shards" / dataset))
    monkeypatch.setenv("MUSICLM_SECONDS", "1")
    NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(chain)}}).execute()
    assert not [o for c in nb.cells for o in c.get("outputs", []) if o.get("output_type") == "error"]
    return nb.cells


@pytest.mark.parametrize("notebook", sorted(p.name for p in (ROOT / "notebooks").glob("*.ipynb")))
def test_notebook_runs_on_the_tiny_run(chain: Path, notebook: str, monkeypatch):
    cells = run_notebook(notebook, chain, RUN, SYNTH, monkeypatch)
    outputs = [o for c in cells for o in c.get("outputs", [])]
    assert any("image/png" in o.get("data", {}) for o in outputs), "the notebook's plots did not render"

