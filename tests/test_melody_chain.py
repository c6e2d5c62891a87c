"""Melody conditioning through the whole chain at the tiny profile: `make train-melody`, then the chain with
MELODY_COND="semantic coarse" (tokenize writes melody tokens, both stages read them), `MusicLM.generate(melody=...)`
with audio at another rate, `make generate MELODY=file.wav`, and eval's melody.* figures."""

from __future__ import annotations

import json
import math
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

ROOT = Path(__file__).resolve().parents[1]
RUN, DATASET = "tiny-melody", "synth-melody-tiny"


def make(workdir: Path, *args: str) -> None:
    cmd = ["make", "-f", str(ROOT / "Makefile"), "-C", str(workdir), *args, f"RUN={RUN}", "PROFILE=tiny",
           f"DATASET={DATASET}", f"MELODY_DATASET={DATASET}", "MELODY_CLIPS=30", "SYNTH_SECONDS=3",
           "WORKERS=1"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")


@pytest.fixture(scope="module")
def chain(tmp_path_factory) -> Path:
    workdir = tmp_path_factory.mktemp("melody-chain")
    make(workdir, "train-melody")
    make(workdir, "train-semantic", "train-acoustic", "MELODY_COND=semantic coarse")
    return workdir


def hum(rate: int, seconds: float = 3.0) -> np.ndarray:
    """A whistled line at an odd rate: a sine stepping up a C major triad."""
    t = np.arange(int(rate * seconds)) / rate
    pitch = np.array([60, 64, 67])[np.minimum((t // (seconds / 3)).astype(int), 2)]
    return (0.3 * np.sin(2 * np.pi * 440 * 2 ** ((pitch - 69) / 12) * t)).astype(np.float32)


def test_generate_follows_a_melody_at_any_rate(chain: Path, monkeypatch):
    from musiclm.pipeline import MusicLM

    monkeypatch.chdir(chain)
    lm = MusicLM.from_run(chain / "runs" / RUN)
    assert lm.melody is not None and lm.melody_stages == ("semantic", "coarse")
    out = lm.generate(["a calm piano line", "a fast rock song"], seconds=2, melody=hum(44_100),
                      melody_sample_rate=44_100, progress=False)  # fmt: skip
    assert out.waves.shape[0] == 2 and out.tokens["melody"].shape[:2] == (2, lm.melody.num_levels)
    assert out.settings["melody"] and "melody" in out.timings and np.isfinite(out.waves.numpy()).all()
    tokens = json.loads((chain / "data" / "tokens" / RUN / "train" / "manifest.json").read_text())["vocab"]
    assert tokens["melody_levels"] == lm.melody.num_levels


def test_make_generate_with_a_melody_file(chain: Path):
    sf.write(chain / "hum.wav", hum(22_050), 22_050)
    make(chain, "generate", "TEXT=a gentle lullaby", "SECONDS=2", f"MELODY={chain / 'hum.wav'}")
    info = json.loads(next((chain / "outputs" / RUN).glob("*.json")).read_text())
    assert info["settings"]["melody"] is True


def test_eval_melody_figures(chain: Path, monkeypatch):
    from musiclm.melody.evaluate import melody_report
    from musiclm.pipeline import MusicLM

    monkeypatch.chdir(chain)
    lm = MusicLM.from_run(chain / "runs" / RUN)
    report = melody_report(lm, chain / "data" / "shards" / DATASET, seconds=2, batch_size=4, cfg_scale=3.0, seed=0,
                           plots=chain / "plots", num_examples=2)  # fmt: skip
    keys = ["melody.embedding_recall@1", "melody.embedding_recall@1_chance", "melody.chroma_similarity",
            "melody.chroma_similarity_chance", "melody.p", "melody.num_melodies"]  # fmt: skip
    assert all(math.isfinite(report[k]) for k in keys), report
    assert 0 <= report["melody.embedding_recall@1"] <= 1 and 0 < report["melody.p"] <= 1
    # the examples to listen to: the hummed input at its own rate, the output at the chain's, 2 s each, and a PNG
    examples = chain / "plots" / "melody"
    assert sorted(p.name for p in examples.iterdir()) == ["000.png", "000_input.wav", "000_output.wav", "001.png",
                                                          "001_input.wav", "001_output.wav"]  # fmt: skip
    hummed, rate = sf.read(examples / "000_input.wav")
    made, out_rate = sf.read(examples / "000_output.wav")
    assert (rate, out_rate) == (lm.melody.sample_rate, lm.sample_rate)
    assert len(hummed) == 2 * rate and len(made) == 2 * out_rate and np.abs(hummed).max() > 0.01


def test_text_to_music_notebook_follows_a_melody(chain: Path, monkeypatch):
    """Notebook 04's melody cell runs where the run is melody-conditioned (the tiny chain in test_chain.py is not,
    so there the cell only says how to make one)."""
    from tests.test_chain import run_notebook

    last = run_notebook("04_text_to_music.ipynb", chain, RUN, DATASET, monkeypatch)[-1]
    said = "".join(o.get("text", "") for o in last.outputs)
    assert "chroma similarity to the hummed line" in said
    assert any("image/png" in o.get("data", {}) for o in last.outputs)
