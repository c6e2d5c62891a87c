"""Where the YAML configs live and how their layers combine, in one place for `musiclm train` and the benchmarks.

Layers, later wins: configs/<stage>.yaml (paper scale) -> configs/trainer/<trainer>.yaml ->
[the base profile's configs/profile/<base>/<stage>.yaml, for a profile in PROFILE_BASES ->]
configs/profile/<profile>/<stage>.yaml -> any `--section.key=value` the user adds.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

# Sections that LightningCLI may write in subclass form ({class_path, init_args}) as well as plain keys.
_SUBCLASS_SECTIONS = ("model", "data")


def config_root() -> Path:
    """The configs shipped inside the package: the same folder from a checkout, an editable install or a wheel
    (wheels install unpacked, so this is a real directory LightningCLI can read `--config` files from)."""
    return Path(str(resources.files("musiclm") / "configs"))


CONFIG_ROOT = config_root()


# A profile that extends another is that profile plus its own folder's changes, file by file: `long` is the demo
# given more steps, so its folder holds only what it changes and a stage it leaves alone (the judge, the semantic
# tokenizer) is the demo's, the same yardstick in both runs.
PROFILE_BASES = {"long": "demo"}


def _stage_layers(stage: str, profile: str, trainer: str | None, root: Path) -> list[Path]:
    layers = [root / f"{stage}.yaml"]
    if trainer is not None:
        layers.append(root / "trainer" / f"{trainer}.yaml")
    if profile in PROFILE_BASES:
        layers.append(root / "profile" / PROFILE_BASES[profile] / f"{stage}.yaml")
        own = root / "profile" / profile / f"{stage}.yaml"
        if own.is_file() or not own.parent.is_dir():
            layers.append(own)
    elif profile != "paper":
        layers.append(root / "profile" / profile / f"{stage}.yaml")
    missing = [str(p) for p in layers if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"missing config file(s): {', '.join(missing)}")
    return layers


def config_layers(stage: str, profile: str, trainer: str, config_root: Path = CONFIG_ROOT) -> list[Path]:
    """The `--config` files of `musiclm train STAGE`, in the order LightningCLI applies them."""
    return _stage_layers(stage, profile, trainer, config_root)


def init_args(section: dict[str, Any] | None) -> dict[str, Any]:
    """A section's constructor arguments whether a layer writes plain keys, `{class_path, init_args}` or only
    `{init_args}`: plain keys beside `init_args` are LightningCLI's shorthand for init_args, so both count."""
    section = dict(section or {})
    section.pop("class_path", None)
    nested = section.pop("init_args", None) or {}
    return {**section, **nested}


def stage_settings(stage: str, profile: str = "demo", config_root: Path = CONFIG_ROOT) -> tuple[dict, dict]:
    """(model kwargs, data kwargs) of a stage's config overlaid with its profile, as `musiclm train` merges them
    (trainer layer left out). Each layer is resolved and flattened to init_args before the merge so a plain-key
    profile overrides a class_path/init_args base (and the reverse) key by key."""
    merged: dict[str, dict] = {name: {} for name in _SUBCLASS_SECTIONS}
    for path in _stage_layers(stage, profile, None, config_root):
        layer = OmegaConf.to_container(OmegaConf.load(path), resolve=True) or {}
        for name in _SUBCLASS_SECTIONS:
            if name in layer:
                merged[name] = OmegaConf.to_container(OmegaConf.merge(merged[name], init_args(layer[name])))
    return merged["model"], merged["data"]


def linked(model: dict[str, Any], data: dict[str, Any], links: list[tuple[str, str]]) -> dict[str, Any]:
    """`model` with the module's `cli_links` applied (e.g. data.sample_rate -> model.sample_rate), which LightningCLI
    does at parse time; a link whose data key no layer sets is skipped, leaving the module's default."""
    out = dict(model)
    for src, dst in links:
        key = src.removeprefix("data.")
        if key in data:
            out[dst.removeprefix("model.")] = data[key]
    return out


def build_stage(stage: str, profile: str = "demo", vocab: dict[str, Any] | None = None, **overrides: Any) -> Any:
    """A freshly initialised module of a stage from its configs, without a trainer (what benchmarks time). LM
    stages take their upstream sizes from `vocab` (a token manifest's, or `tokenize.profile_vocab(profile)`)."""
    import inspect

    from musiclm.stages import STAGES

    model, data = stage_settings(stage, profile)
    cls = STAGES[stage].module_class()
    kwargs = linked(model, data, getattr(cls, "cli_links", ()))
    params = inspect.signature(cls).parameters
    kwargs.update({k: v for k, v in (vocab or {}).items() if k in params and kwargs.get(k) is None})
    return cls(**{**kwargs, **overrides})
