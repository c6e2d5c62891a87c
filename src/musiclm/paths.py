"""Where data, runs, reports and outputs live: under one root, so a whole chain can be pointed at scratch space.

The root is `$MUSICLM_ROOT` (set by `musiclm --root DIR`) or the current directory, the layout the Makefile uses.
Everything is read at call time, so setting the variable after import still takes effect.
"""

from __future__ import annotations

import os
from pathlib import Path


def root() -> Path:
    """`$MUSICLM_ROOT`, else the current working directory."""
    return Path(os.environ.get("MUSICLM_ROOT") or ".")


def data_dir() -> Path:
    """Audio shards (`shards/<DATASET>`) and token shards (`tokens/<RUN>`)."""
    return root() / "data"


def runs_dir() -> Path:
    """Run directories; `$MUSICLM_RUNS`, the older per-runs override, still wins when set."""
    runs = os.environ.get("MUSICLM_RUNS")
    return Path(runs) if runs else root() / "runs"


def reports_dir() -> Path:
    """Evaluation and benchmark reports, `<RUN>/eval.json` and the like."""
    return root() / "reports"


def outputs_dir() -> Path:
    """Generated audio, `<RUN>/NNN_<prompt>.wav`."""
    return root() / "outputs"


def resolve(path: str | os.PathLike) -> Path:
    """A relative path (a config's `data_dir: data/shards/synth`) under the root; an absolute one as it is."""
    p = Path(path)
    return p if p.is_absolute() else root() / p


def dataset_dirs(spec: str | os.PathLike | list) -> list[Path]:
    """Several datasets read as one: `data/shards/synth+mine` (the `+` joins names in the last path component, as
    `make DATASET=synth+mine` writes it) or a list of folders. Paths come back as given (resolve them for use)."""
    if isinstance(spec, (list, tuple)):
        return [Path(s) for s in spec]
    p = Path(spec)
    return [p.with_name(name) for name in p.name.split("+")] if "+" in p.name else [p]
