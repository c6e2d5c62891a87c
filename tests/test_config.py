"""The shared config loader: packaged configs, layer order, and stage settings in plain or class_path/init_args form."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from musiclm.config import config_layers, config_root, init_args, linked, stage_settings
from musiclm.stages import STAGES


def write(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(data))


def test_config_root_is_the_package_folder():
    root = config_root()
    assert root.is_dir() and root.parent.name == "musiclm" and (root / "demo_prompts.txt").is_file()
    assert {p.stem for p in root.glob("*.yaml")} == set(STAGES)


@pytest.mark.parametrize("stage", sorted(STAGES))
@pytest.mark.parametrize("profile", ["paper", "demo", "tiny", "long"])
def test_every_stage_and_profile_gives_module_and_data_arguments(stage, profile):
    """What the benchmarks build from: every key is an init argument of the stage's module and data module."""
    model, data = stage_settings(stage, profile)
    spec = STAGES[stage]
    assert set(model) <= set(inspect.signature(spec.module_class()).parameters)
    assert set(data) <= set(inspect.signature(spec.data_class()).parameters)


def test_init_args_accepts_every_section_form():
    assert init_args({"lr": 1.0}) == {"lr": 1.0}
    assert init_args({"class_path": "musiclm.x.Y", "init_args": {"lr": 1.0}}) == {"lr": 1.0}
    assert init_args({"init_args": {"lr": 1.0}, "dim": 2}) == {"lr": 1.0, "dim": 2}
    assert init_args(None) == {}


@pytest.mark.parametrize(
    "base_model,profile_model",
    [
        ({"dim": 8, "lr": 1.0}, {"lr": 2.0}),  # today's plain keys
        ({"class_path": "musiclm.x.Y", "init_args": {"dim": 8, "lr": 1.0}}, {"init_args": {"lr": 2.0}}),
        ({"class_path": "musiclm.x.Y", "init_args": {"dim": 8, "lr": 1.0}}, {"lr": 2.0}),  # plain profile over subclass
        ({"dim": 8, "lr": 1.0}, {"class_path": "musiclm.x.Y", "init_args": {"lr": 2.0}}),
    ],
)
def test_stage_settings_merge_plain_and_subclass_forms(tmp_path, base_model, profile_model):
    write(tmp_path / "s.yaml", {"model": base_model, "data": {"batch_size": 4, "sample_rate": 16000}})
    write(tmp_path / "trainer" / "cpu.yaml", {"trainer": {"accelerator": "cpu"}})
    write(tmp_path / "profile" / "p" / "s.yaml", {"model": profile_model, "data": {"init_args": {"batch_size": 2}}})
    model, data = stage_settings("s", "p", tmp_path)
    assert model == {"dim": 8, "lr": 2.0}
    assert data == {"batch_size": 2, "sample_rate": 16000}
    assert stage_settings("s", "paper", tmp_path)[0] == {"dim": 8, "lr": 1.0}
    assert len(config_layers("s", "p", "cpu", tmp_path)) == 3


def test_missing_profile_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="nonexistent"):
        stage_settings("mulan", "nonexistent")


def test_links_copy_data_values_that_are_set():
    links = [("data.sample_rate", "model.sample_rate"), ("data.clip_seconds", "model.window_seconds")]
    assert linked({"dim": 8}, {"sample_rate": 24000}, links) == {"dim": 8, "sample_rate": 24000}


def test_configs_found_from_another_directory(tmp_path):
    """The configs come from the installed package, not from the working directory."""
    code = "from musiclm.config import config_layers; print(config_layers('mulan', 'demo', 'cpu')[-1])"
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == config_root() / "profile" / "demo" / "mulan.yaml"


def test_wheel_ships_the_configs(tmp_path):
    """`pip wheel` of the repo holds every config, so `pip install .` then `musiclm train` works outside a checkout."""
    import shutil
    import subprocess
    import sys
    import zipfile

    repo = Path(__file__).resolve().parents[1]
    src = tmp_path / "repo"
    shutil.copytree(repo / "src", src / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(repo / name, src / name)
    out = tmp_path / "dist"
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(out), str(src)]
    subprocess.run(cmd, check=True, capture_output=True)
    [wheel] = out.glob("musiclm-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(repo / "src").as_posix() for p in (repo / "src/musiclm/configs").rglob("*") if p.is_file()}
    assert shipped and shipped <= names, sorted(shipped - names)


def test_an_extending_profile_is_its_base_plus_its_own_changes(tmp_path, monkeypatch):
    """`long` layers its own files over the demo's; a stage it leaves alone is exactly the demo's."""
    import musiclm.config as config

    write(tmp_path / "s.yaml", {"model": {"dim": 8, "lr": 1.0, "depth": 2}})
    write(tmp_path / "t.yaml", {"model": {"dim": 8}})
    write(tmp_path / "profile" / "base" / "s.yaml", {"model": {"dim": 4, "lr": 2.0}})
    write(tmp_path / "profile" / "base" / "t.yaml", {"model": {"dim": 2}})
    write(tmp_path / "profile" / "more" / "s.yaml", {"model": {"lr": 3.0}})
    monkeypatch.setattr(config, "PROFILE_BASES", {"more": "base"})
    assert stage_settings("s", "more", tmp_path)[0] == {"dim": 4, "lr": 3.0, "depth": 2}
    assert stage_settings("t", "more", tmp_path)[0] == {"dim": 2}
    write(tmp_path / "trainer" / "cpu.yaml", {"trainer": {"accelerator": "cpu"}})
    assert [p.parent.name for p in config_layers("s", "more", "cpu", tmp_path)[2:]] == ["base", "more"]
    assert [p.parent.name for p in config_layers("t", "more", "cpu", tmp_path)] == [tmp_path.name, "trainer", "base"]


def test_long_profile_trains_longer_than_the_demo_and_judges_with_the_same_judge():
    for stage in ("mulan", "codec", "semantic", "coarse", "fine"):
        long_steps = yaml.safe_load((config_root() / "profile" / "long" / f"{stage}.yaml").read_text())
        demo_steps = yaml.safe_load((config_root() / "profile" / "demo" / f"{stage}.yaml").read_text())
        assert long_steps["trainer"]["max_steps"] > demo_steps["trainer"]["max_steps"], stage
    assert stage_settings("judge", "long") == stage_settings("judge", "demo")
    assert stage_settings("semantic_tokens", "long") == stage_settings("semantic_tokens", "demo")
