"""`musiclm showcase`: runs at several budgets -> quality against CPU-hours (PNG + Markdown) and audio samples."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musiclm import showcase


def fake_run(root: Path, name: str, cpu_hours: float, margin: float, clip_seconds: float = 3.0) -> None:
    """What `make demo` leaves of a run: its eval report, its cost and two generated clips."""
    report = {"generation.mcc_margin": margin, "generation.mcc_margin_real": 0.57, "generation.fad_logmel":
              100 / cpu_hours, "judge.instrument_family.generated": margin, "judge.instrument_family.chance": 0.1}
    (root / "reports" / name).mkdir(parents=True)
    (root / "reports" / name / "eval.json").write_text(json.dumps(report))
    (root / "runs" / name / "logs").mkdir(parents=True)
    timing = {"profile": name, "wall_s": cpu_hours * 1800, "cores": 2, "cpu_hours": cpu_hours, "steps_s": {},
              "matmul_gflops": {"fp32": 300, "bf16": 1200}}  # fmt: skip
    (root / "runs" / name / "logs" / "timing.json").write_text(json.dumps(timing))
    out = root / "outputs" / name
    out.mkdir(parents=True)
    t = np.arange(int(clip_seconds * 16000)) / 16000
    for i, prompt in enumerate(["a calm piano", "loud drums"]):
        sf.write(out / f"00{i}_p.wav", 0.3 * np.sin(2 * np.pi * 220 * (i + 1) * t), 16000)
        meta = {"prompt": prompt, "sample_rate": 16000, "wav": f"00{i}_p.wav"}
        (out / f"00{i}_p.json").write_text(json.dumps(meta))


def test_showcase_writes_curve_table_and_samples(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICLM_ROOT", str(tmp_path))
    fake_run(tmp_path, "small", 0.5, 0.2)
    fake_run(tmp_path, "big", 4.0, 0.4, clip_seconds=1.5)
    showcase.main(["small", "big", "--out", str(tmp_path / "docs"), "--prompts", "1", "--seconds", "2"])

    assert (tmp_path / "docs" / "compute_curve.png").stat().st_size > 10_000
    table = (tmp_path / "docs" / "compute_curve.md").read_text()
    assert "|  | small | big | reference |" in table
    assert "| CPU-hours | 0.50 | 4.00 |  |" in table
    assert "`generation.mcc_margin`) | 0.2 | 0.4 | 0.57 (real clips) |" in table
    assert "`generation.fad_logmel`) | 200.0 | 25.0 |" in table
    assert "`lm.coarse_top1`) | n/a | n/a |" in table  # a figure a report lacks is shown as missing, not dropped
    for run, seconds in (("small", 2.0), ("big", 1.5)):  # the first 2 s, or all of a shorter clip
        flacs = sorted((tmp_path / "docs" / "samples" / run).glob("*.flac"))
        assert [f.name for f in flacs] == ["000_p.flac"]
        assert sf.info(flacs[0]).duration == pytest.approx(seconds)
        assert flacs[0].with_suffix(".png").stat().st_size > 1000


def test_showcase_says_which_command_makes_a_missing_run(tmp_path, monkeypatch):
    monkeypatch.setenv("MUSICLM_ROOT", str(tmp_path))
    fake_run(tmp_path, "demo", 0.8, 0.3)
    (tmp_path / "runs" / "demo" / "logs" / "timing.json").unlink()
    with pytest.raises(SystemExit, match="timing.json is missing: run `make demo RUN=demo"):
        showcase.main(["demo"])
    with pytest.raises(SystemExit, match="eval.json is missing"):
        showcase.main(["long"])


def test_a_runs_cost_adds_up_over_interrupted_invocations(tmp_path):
    """`make demo` stopped by a failed step and resumed: both invocations' time counts, step by step."""
    from musiclm.demo import write_timing

    path = tmp_path / "timing.json"
    write_timing(path, "long", 100.0, {"codec": 60.0, "acoustic LMs": 30.0}, 300, 1200)
    write_timing(path, "long", 50.0, {"codec": 0.5, "acoustic LMs": 45.0, "eval": 4.0}, 310, 1250)
    timing = json.loads(path.read_text())
    assert timing["wall_s"] == 150.0 and timing["cpu_hours"] == pytest.approx(150 * timing["cores"] / 3600, abs=1e-3)
    assert timing["steps_s"] == {"codec": 60.5, "acoustic LMs": 75.0, "eval": 4.0}
    assert timing["matmul_gflops"] == {"fp32": 310, "bf16": 1250}  # the latest measurement
