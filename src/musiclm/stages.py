"""The stage registry: which LightningModule and DataModule each stage trains, and which make target builds it.

Classes are named as import strings so `musiclm --help` does not import every model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # "package.module:Class" of the LightningModule
    data: str  # "package.module:Class" of the LightningDataModule
    make_target: str  # the make target that produces runs/<RUN>/<name>/model.ckpt

    def module_class(self) -> type:
        return load_object(self.module)

    def data_class(self) -> type:
        return load_object(self.data)


STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("mulan", "musiclm.mulan.module:MuLanModule", "musiclm.data.datamodules:AudioTextDataModule", "train-mulan"),
        Stage("codec", "musiclm.codec.module:CodecModule", "musiclm.data.datamodules:AudioTextDataModule", "train-codec"),
        Stage(
            "semantic_tokens",
            "musiclm.semantic_tokens.module:SemanticTokenizer",
            "musiclm.data.datamodules:AudioTextDataModule",
            "fit-semantic",
        ),
        Stage("semantic", "musiclm.lm.module:SemanticStage", "musiclm.data.datamodules:TokenDataModule", "train-semantic"),
        Stage("coarse", "musiclm.lm.module:CoarseStage", "musiclm.data.datamodules:TokenDataModule", "train-acoustic"),
        Stage("fine", "musiclm.lm.module:FineStage", "musiclm.data.datamodules:TokenDataModule", "train-acoustic"),
    ]
}


def load_object(path: str):
    """Import "package.module:attr"."""
    module, _, attr = path.partition(":")
    return getattr(importlib.import_module(module), attr)
