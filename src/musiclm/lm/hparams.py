"""What an LM stage's hyperparameters say: upstream sizes that have to be given, and windows in seconds as frames."""

from __future__ import annotations

from typing import Any


def seconds_to_frames(seconds: float, rate: float) -> int:
    return max(1, round(seconds * rate))


def require(hparams: Any, names: tuple[str, ...], stage: str) -> None:
    """Upstream sizes have no defaults: say where they come from instead of building a wrongly sized model."""
    missing = [n for n in names if hparams.get(n) is None]
    if missing:
        raise ValueError(
            f"{stage} needs {', '.join(missing)}: `musiclm train` reads them from the token manifest (run `make "
            f"tokenize` first); pass them when building the module by hand"
        )
