"""The stage registry: every stage of the chain, the class that trains it by default, what it reads and makes.

The Makefile, tokenize, the pipeline, eval and the demo take their stage lists from here (tests/test_stages.py
checks the Makefile against it). A stage's class is only a default: its YAML config names it as `class_path:`,
`--model=...` swaps it, and each hand-off records the class that made it (`artifacts.build_from_handoff`).
Classes are import strings so `musiclm --help` imports no model.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    module: str  # "package.module.Class" of the default LightningModule
    data: str  # "package.module.Class" of the LightningDataModule
    make_target: str  # the make target that produces runs/<RUN>/<name>/model.ckpt
    stream: str | None = None  # the token stream `musiclm tokenize` makes with this stage's hand-off
    reads_tokens: bool = False  # trains on token shards (so it needs `make tokenize` first)
    chain: bool = True  # part of text-to-music (generate needs it); False for a judge, which only evaluates the chain
    optional: bool = False  # a conditioning model the chain uses only where its hand-off exists (melody)
    captions: bool = False  # learns from text: reads captioned clips only (its config's data.captioned_only; eval too)

    def module_class(self) -> type:
        return load_object(self.module)

    def data_class(self) -> type:
        return load_object(self.data)


AUDIO_DATA = "musiclm.data.datamodules.AudioTextDataModule"
TOKEN_DATA = "musiclm.data.datamodules.TokenDataModule"

STAGES: dict[str, Stage] = {
    s.name: s
    for s in [
        Stage("mulan", "musiclm.mulan.module.MuLanModule", AUDIO_DATA, "train-mulan", stream="mulan", captions=True),
        Stage("codec", "musiclm.codec.module.CodecModule", AUDIO_DATA, "train-codec", stream="acoustic"),
        Stage("semantic_tokens", "musiclm.semantic_tokens.module.SemanticTokenizer", AUDIO_DATA, "fit-semantic",
              stream="semantic"),  # fmt: skip
        Stage("semantic", "musiclm.lm.module.SemanticStage", TOKEN_DATA, "train-semantic", reads_tokens=True),
        Stage("coarse", "musiclm.lm.module.CoarseStage", TOKEN_DATA, "train-acoustic", reads_tokens=True),
        Stage("fine", "musiclm.lm.module.FineStage", TOKEN_DATA, "train-acoustic", reads_tokens=True),
        Stage("judge", "musiclm.judge.tagger.TaggerModule", AUDIO_DATA, "train-judge", chain=False),
        Stage("melody", "musiclm.melody.module.MelodyModule", "musiclm.melody.pairs.MelodyPairDataModule",
              "train-melody", stream="melody", optional=True),  # fmt: skip
    ]
}

# stage name -> token stream name ("mulan", "semantic", "acoustic"), in the order tokenize writes them
TOKEN_STREAMS: dict[str, str] = {s.name: s.stream for s in STAGES.values() if s.stream is not None and not s.optional}
# streams tokenize adds where the run has the stage's hand-off (melody tokens), and LM stages read only when told to
OPTIONAL_STREAMS: dict[str, str] = {s.name: s.stream for s in STAGES.values() if s.stream is not None and s.optional}
LM_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES.values() if s.reads_tokens)
CHAIN_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES.values() if s.chain and not s.optional)
JUDGE_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES.values() if not s.chain)
OPTIONAL_STAGES: tuple[str, ...] = tuple(s.name for s in STAGES.values() if s.optional)


def load_object(path: str):
    """Import "package.module:attr" or "package.module.attr"."""
    module, sep, attr = path.partition(":")
    if not sep:
        module, _, attr = path.rpartition(".")
    return getattr(importlib.import_module(module), attr)
