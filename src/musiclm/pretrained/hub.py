"""Reading a pretrained model from a local folder, never from the network.

Every load goes through `local_files_only=True` with the hub's offline mode set before transformers is imported, so
a typo in a path fails at once instead of trying a download. A folder is checked before anything is built: it must
hold `config.json` of a supported `model_type` and weights, or the error names what is missing and the types that
are supported, in one line.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

WEIGHT_PATTERNS = ("*.safetensors", "*.bin")
# the transformers `model_type`s each role's adapter drives, and how an error names the role
CODEC_TYPES = ("encodec", "dac")
CLAP_TYPES = ("clap",)
ROLE_TYPES = {"codec": (CODEC_TYPES, "the codec"), "mulan": (CLAP_TYPES, "MuLan's role")}


class PretrainedFolderError(ValueError):
    """A folder that is not a usable pretrained model of the asked role."""


def weight_files(folder: Path) -> list[Path]:
    """The folder's weight files (safetensors preferred, as transformers does), sorted."""
    for pattern in WEIGHT_PATTERNS:
        found = sorted(folder.glob(pattern))
        if found:
            return found
    return []


def read_config(folder: str | os.PathLike, supported: tuple[str, ...], role: str, remote_code: bool = False) -> dict:
    """`folder/config.json` after checking the folder holds weights and a `model_type` in `supported`; a model whose
    code ships in the folder (`auto_map`, e.g. MERT) passes only with `remote_code` (the user's explicit trust)."""
    path = Path(folder).expanduser()
    kinds = ", ".join(supported)
    if not (path / "config.json").is_file():
        raise PretrainedFolderError(f"{path}: no config.json; {role} imports a save_pretrained folder of: {kinds}")
    if not weight_files(path):
        raise PretrainedFolderError(f"{path}: no *.safetensors or *.bin weights; {role} imports: {kinds}")
    config = json.loads((path / "config.json").read_text())
    if config.get("model_type") not in supported and "auto_map" in config:
        if remote_code:
            return config
        raise PretrainedFolderError(
            f"{path}: model_type {config.get('model_type')!r} runs code from that folder (e.g. MERT): pass "
            "--model.trust_remote_code=true (make: SEMANTIC_ARGS=--model.trust_remote_code=true) if you trust it; "
            f"built in: {kinds}"
        )
    if config.get("model_type") not in supported:
        raise PretrainedFolderError(
            f"{path}: model_type {config.get('model_type')!r} is not supported for {role}; supported: {kinds}"
        )
    return config


def load_pretrained(folder: str | os.PathLike, **kwargs):
    """The folder's bare model (EncodecModel, DacModel, ClapModel, ...), frozen, in eval mode, read from disk only."""
    from transformers import AutoModel
    from transformers.utils import logging

    logging.disable_progress_bar()  # a bar per load is noise in make's output
    model = AutoModel.from_pretrained(str(Path(folder).expanduser()), local_files_only=True, **kwargs)
    return model.eval().requires_grad_(False)


def build_from_config(config: dict):
    """A model of this config with random weights, frozen, in eval mode: what a hand-off's state_dict is loaded
    into (the weights travel in the hand-off, the config in its hyperparameters)."""
    from transformers import AutoConfig, AutoModel

    config = dict(config)
    cfg = AutoConfig.for_model(config.pop("model_type"), **config)
    return AutoModel.from_config(cfg).eval().requires_grad_(False)
