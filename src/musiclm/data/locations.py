"""Where a dataset's shards live: a local folder, a `pipe:` command or an fsspec URL (s3, gcs, http, ...).

A cluster streams from object storage: upload a dataset folder as `musiclm data ingest` wrote it (`<split>/
manifest.json` + `<split>/shard-*.tar`), then give its URL as `data_dir`. The split's manifest names the shards
and counts the clips (an epoch's length, MuLan's captioned clips), so a URL needs no listing:
- `/data/mine`, `data/shards/mine`, `file:///data/mine`: a local folder;
- `pipe:CMD` where CMD writes the file `{path}` (relative to the dataset) to stdout, e.g.
  `pipe:aws s3 cp s3://bucket/mine/{path} -` or `pipe:cat /data/mine/{path}`; webdataset runs it per shard;
- `s3://bucket/mine`, `gs://...`, `https://host/mine`: read through fsspec (install its s3fs/gcsfs backend).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path
from typing import Protocol
from urllib.parse import urlparse
from urllib.request import url2pathname

from musiclm.data.shards import list_shards, read_manifest
from musiclm.paths import dataset_dirs


class Location(Protocol):
    def manifest(self, split: str) -> dict | None:
        """The split's manifest.json, None if it has none."""

    def shards(self, split: str) -> list[str]:
        """The split's shard URLs, in order."""


class LocalDir:
    def __init__(self, path: Path):
        self.path = path

    def manifest(self, split: str) -> dict | None:
        return read_manifest(self.path / split) if (self.path / split / "manifest.json").is_file() else None

    def shards(self, split: str) -> list[str]:
        return list_shards(self.path / split)

    def __str__(self) -> str:
        return str(self.path)


class _ByManifest:
    """A remote dataset: the manifest gives the shard names, `url(path)` their addresses."""

    def url(self, path: str) -> str:
        raise NotImplementedError

    def read(self, path: str) -> bytes | None:
        raise NotImplementedError

    def manifest(self, split: str) -> dict | None:
        data = self.read(f"{split}/manifest.json")
        return None if data is None else json.loads(data)

    def shards(self, split: str) -> list[str]:
        manifest = self.manifest(split)
        return [] if manifest is None else [self.url(f"{split}/{s['name']}") for s in manifest["shards"]]


class PipeCommand(_ByManifest):
    def __init__(self, spec: str):
        if "{path}" not in spec:
            raise ValueError(f"{spec!r}: a pipe: data_dir needs {{path}} where the file inside the dataset goes, "
                             "e.g. 'pipe:cat /data/mine/{path}'")  # fmt: skip
        self.spec = spec

    def url(self, path: str) -> str:
        return self.spec.replace("{path}", path)

    def read(self, path: str) -> bytes | None:
        proc = subprocess.run(self.url(path)[len("pipe:") :], shell=True, capture_output=True)
        return proc.stdout if proc.returncode == 0 else None

    def __str__(self) -> str:
        return self.spec


class Remote(_ByManifest):
    """An fsspec URL; webdataset opens its shards through fsspec too (`musiclm.compat.fsspec_gopen`)."""

    def __init__(self, url: str):
        self.base = url.rstrip("/")

    def url(self, path: str) -> str:
        return f"{self.base}/{path}"

    def read(self, path: str) -> bytes | None:
        import fsspec

        try:
            with fsspec.open(self.url(path), "rb") as f:
                return f.read()
        except FileNotFoundError:
            return None

    def __str__(self) -> str:
        return self.base


def is_url(spec: str | os.PathLike) -> bool:
    return isinstance(spec, str) and (spec.startswith("pipe:") or "://" in spec)


def locations(data_dir: str | os.PathLike | list, resolve) -> list[Location]:
    """A `data_dir` setting: one folder or URL, `data/shards/synth+mine` (local folders only), or a list."""
    if isinstance(data_dir, (list, tuple)):
        return [location(d, resolve) for d in data_dir]
    return [location(data_dir, resolve)] if is_url(data_dir) else [LocalDir(resolve(d)) for d in dataset_dirs(data_dir)]


def location(spec: str | os.PathLike, resolve) -> Location:
    """The Location a `data_dir` entry names; `resolve` places a relative local path under the root."""
    if not is_url(spec):
        return LocalDir(resolve(spec))
    if spec.startswith("pipe:"):
        return PipeCommand(spec)
    if urlparse(spec).scheme == "file":
        return LocalDir(Path(url2pathname(urlparse(spec).path)))
    from musiclm.compat import fsspec_gopen

    fsspec_gopen()
    return Remote(spec)
