"""One root for data, runs, reports and outputs: $MUSICLM_ROOT, `musiclm --root`, and the older $MUSICLM_RUNS."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from musiclm import paths
from musiclm.artifacts import model_path, run_dir
from musiclm.cli import main as cli_main


@pytest.fixture
def clean_env(monkeypatch):
    monkeypatch.delenv("MUSICLM_ROOT", raising=False)
    monkeypatch.delenv("MUSICLM_RUNS", raising=False)
    return monkeypatch


def test_default_root_is_the_working_directory(clean_env):
    assert paths.runs_dir() == Path("runs") and paths.data_dir() == Path("data")
    assert run_dir("demo") == Path("runs/demo")


def test_paths_follow_musiclm_root_set_after_import(clean_env, tmp_path):
    clean_env.setenv("MUSICLM_ROOT", str(tmp_path))
    assert paths.root() == tmp_path
    assert paths.data_dir() == tmp_path / "data"
    assert paths.runs_dir() == tmp_path / "runs"
    assert paths.reports_dir() == tmp_path / "reports"
    assert paths.outputs_dir() == tmp_path / "outputs"
    assert model_path("demo", "mulan") == tmp_path / "runs" / "demo" / "mulan" / "model.ckpt"


def test_musiclm_runs_still_wins_for_runs(clean_env, tmp_path):
    clean_env.setenv("MUSICLM_ROOT", str(tmp_path / "root"))
    clean_env.setenv("MUSICLM_RUNS", str(tmp_path / "elsewhere"))
    assert run_dir("demo") == tmp_path / "elsewhere" / "demo"
    assert paths.reports_dir() == tmp_path / "root" / "reports"


@pytest.mark.parametrize("flag", [["--root", "ROOT"], ["--root=ROOT"]])
def test_cli_root_flag_sets_the_root_before_dispatch(clean_env, tmp_path, flag, capsys):
    clean_env.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        cli_main([f.replace("ROOT", "scratch") for f in flag] + ["--help"])
    assert exit_.value.code == 0 and "--root DIR" in capsys.readouterr().out
    assert os.environ["MUSICLM_ROOT"] == str(tmp_path / "scratch")  # absolute, so later chdirs do not move it


def test_cli_root_flag_reaches_the_subcommand(clean_env, tmp_path):
    """`musiclm --root DIR tokenize ...` from another directory looks for shards under DIR."""
    env = {k: v for k, v in os.environ.items() if k not in ("MUSICLM_ROOT", "MUSICLM_RUNS")}
    cmd = [sys.executable, "-m", "musiclm.cli", "--root", str(tmp_path / "root"), "tokenize", "--run", "missing"]
    out = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert out.returncode != 0 and str(tmp_path / "root" / "runs" / "missing") in out.stderr


def test_relative_data_dirs_resolve_under_the_root(clean_env, tmp_path):
    from musiclm.data.datamodules import AudioTextDataModule, TokenDataModule
    from musiclm.paths import resolve

    clean_env.setenv("MUSICLM_ROOT", str(tmp_path))
    assert resolve("data/shards/synth") == tmp_path / "data/shards/synth" and resolve("/abs/x") == Path("/abs/x")
    assert [loc.path for loc in AudioTextDataModule("data/shards/synth").locations] == [tmp_path / "data/shards/synth"]
    assert TokenDataModule(str(tmp_path / "tokens")).data_dir == tmp_path / "tokens"
