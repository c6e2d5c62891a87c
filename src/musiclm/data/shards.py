"""WebDataset shards: the audio-shard schema, atomic resumable writing, and validation.

Writing is planned up front: items (source files, synthetic clip indices, ...) are grouped into shards in a fixed
order, so a re-run knows which shards are already complete and only redoes the rest. A shard is written under a
temporary name, its sidecar stats (`.shard-NNNNNN.json`) are written, and only then is it renamed: an interrupted
run leaves no partial shard.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import multiprocessing as mp
import os
import re
import tarfile
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import webdataset as wds
from tqdm import tqdm

from musiclm.artifacts import atomic_write_bytes
from musiclm.audio import AudioError, load_audio

SPLITS = ("train", "val", "test")
# `caption` is null on uncaptioned clips (music with neither text nor tags): every stage but MuLan trains on them
REQUIRED_META = {"caption": (str, type(None)), "tags": list, "sample_rate": int, "duration": float, "source": str}

Sample = dict[str, Any]  # {"__key__": str, "flac": bytes, "json": dict}


def split_for_key(key: str, val_fraction: float, test_fraction: float) -> str:
    """Deterministic split from a hash of the key: the same input always lands in the same split."""
    u = int.from_bytes(hashlib.sha1(key.encode()).digest()[:8], "big") / 2**64
    return "val" if u < val_fraction else "test" if u < val_fraction + test_fraction else "train"


class NoCaptionsError(ValueError):
    """Clips were needed with captions (MuLan's training, eval's prompts) and the split has none."""


def is_captioned(meta: dict) -> bool:
    """Whether a sample has text MuLan can train on: its `captioned` flag, or (shards written before the flag
    existed) a non-empty caption."""
    return bool(meta.get("captioned", bool(meta.get("caption"))))


def list_shards(split_dir: str | os.PathLike) -> list[str]:
    return sorted(str(p) for p in Path(split_dir).glob("shard-*.tar"))


def _sidecar(shard: Path) -> Path:
    return shard.with_name(f".{shard.stem}.json")


def _plan_id(items: Sequence[Any]) -> str:
    return hashlib.sha1(json.dumps([str(i) for i in items]).encode()).hexdigest()[:16]


def _shard_complete(shard: Path, plan: str) -> bool:
    side = _sidecar(shard)
    if not (shard.is_file() and side.is_file()):
        return False
    try:
        return json.loads(side.read_text()).get("plan") == plan
    except (OSError, json.JSONDecodeError):
        return False


def _sample_bytes(sample: Sample) -> dict[str, Any]:
    out = {"__key__": sample["__key__"]}
    for k, v in sample.items():
        if k != "__key__":
            out[k] = json.dumps(v, ensure_ascii=False).encode() if k.endswith("json") else v
    return out


def _write_shard(job: tuple[Path, list[Any], Callable[[Any], Iterable[Sample]]]) -> dict:
    """Write one shard from its items; bad items are recorded, never fatal."""
    shard, items, make_samples = job
    tmp = shard.with_name(f".{shard.name}.tmp")
    stats: dict[str, Any] = {
        "plan": _plan_id(items), "num_samples": 0, "seconds": 0.0, "captioned": 0, "seconds_captioned": 0.0,
        "skipped": [],
    }  # fmt: skip
    keys: set[str] = set()
    with open(tmp, "wb") as f:
        with wds.TarWriter(f, mtime=0) as sink:  # fixed mtime: same input, same bytes, same checksum
            for item in items:
                try:
                    samples = list(make_samples(item))
                except AudioError as e:
                    stats["skipped"].append({"item": str(item), "reason": e.reason, "message": str(e)})
                    continue
                except Exception as e:  # an odd input must not kill a long ingest
                    stats["skipped"].append(
                        {"item": str(item), "reason": "error", "message": f"{type(e).__name__}: {e}"}
                    )
                    continue
                for s in samples:
                    if s["__key__"] in keys:
                        raise ValueError(f"duplicate key {s['__key__']} in {shard.name}")
                    keys.add(s["__key__"])
                    sink.write(_sample_bytes(s))
                    seconds = float(s["json"].get("duration", 0.0))
                    stats["num_samples"] += 1
                    stats["seconds"] += seconds
                    if is_captioned(s["json"]):
                        stats["captioned"] += 1
                        stats["seconds_captioned"] += seconds
    stats["sha256"] = hashlib.sha256(tmp.read_bytes()).hexdigest()
    atomic_write_bytes(_sidecar(shard), json.dumps(stats).encode())
    os.replace(tmp, shard)
    return stats


def part_of(key: str, num_parts: int) -> int:
    """Which of `num_parts` ingest parts an input belongs to: a hash of its key (other bits than the split's), so a
    part never depends on which other files exist."""
    return int.from_bytes(hashlib.sha1(key.encode()).digest()[8:16], "big") % num_parts


def write_split_shards(
    out_dir: str | os.PathLike,
    split: str,
    items: Sequence[Any],
    make_samples: Callable[[Any], Iterable[Sample]],
    items_per_shard: int = 64,
    workers: int = 1,
    extra_manifest: dict | None = None,
    part: tuple[int, int] | None = None,
) -> dict:
    """Write `out_dir/split/shard-*.tar` from `items`, resuming past complete shards; returns the manifest.

    `make_samples(item)` returns the samples of one item, or raises AudioError to have it skipped with its reason.
    It must be picklable (a top-level function or functools.partial) when workers > 1. With `part=(i, n)` the items
    are part i of n jobs writing the same split (machines of a SLURM array): its shards are named
    `shard-<i>of<n>-NNNNNN.tar`, each part locks and cleans only its own, and the manifest covers every finished part.
    """
    split_dir = Path(out_dir) / split
    split_dir.mkdir(parents=True, exist_ok=True)
    prefix = "" if part is None else f"{part[0]:05d}of{part[1]:05d}-"
    if part is not None:
        _check_parts(split_dir, part[1])
    with _exclusive(split_dir / f".lock{'-' + prefix if prefix else ''}"):
        shards = _write_split(split_dir, prefix, items, make_samples, items_per_shard, workers)
    if part is None:
        return write_manifest(split_dir, shards, extra_manifest)
    record = {"part": part[0], "num_parts": part[1], "shards": [s.name for s in shards]}
    atomic_write_bytes(split_dir / f".part-{prefix}json", json.dumps(record).encode())
    with _exclusive(split_dir / ".manifest.lock", wait=True):  # finishing parts take turns to aggregate
        records = [json.loads(r.read_text()) for r in sorted(split_dir.glob(".part-*json"))]
        names = sorted(n for r in records for n in r["shards"])
        parts = {"num_parts": part[1], "done": sorted(r["part"] for r in records)}
        return write_manifest(split_dir, [split_dir / n for n in names], {**(extra_manifest or {}), "parts": parts})


def _check_parts(split_dir: Path, num_parts: int) -> None:
    for r in split_dir.glob(".part-*json"):
        other = json.loads(r.read_text())["num_parts"]
        if other != num_parts:
            raise ValueError(
                f"{split_dir} holds parts of a {other}-part run: finish it with --num-parts {other}, "
                "or write a new folder"
            )


@contextlib.contextmanager
def _exclusive(lock: Path, wait: bool = False):
    """One writer per split (or part): a second `make data` on the same directory would delete the first one's temp
    files. `wait` queues instead of refusing."""
    with open(lock, "w") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"another process is writing {lock.parent}; wait for it (a re-run resumes)") from None
        yield


def _write_split(split_dir: Path, prefix: str, items, make_samples, items_per_shard: int, workers: int) -> list[Path]:
    """Write the shards of one plan (named `shard-<prefix>NNNNNN.tar`); returns them."""
    groups = [list(items[i : i + items_per_shard]) for i in range(0, len(items), items_per_shard)]
    shards = [split_dir / f"shard-{prefix}{i:06d}.tar" for i in range(len(groups))]
    own = re.compile(rf"^\.?shard-{re.escape(prefix)}(\d{{6}})\.(tar|json|tar\.tmp)$")
    for stale in split_dir.glob("*"):  # this plan's leftovers: interrupted writes, or a larger earlier plan
        m = own.match(stale.name)
        if m and (stale.name.endswith(".tmp") or int(m.group(1)) >= len(groups)):
            stale.unlink()
    todo = [(s, g, make_samples) for s, g in zip(shards, groups, strict=True) if not _shard_complete(s, _plan_id(g))]
    if todo:
        bar = tqdm(total=len(todo), desc=f"{split_dir.name} shards", unit="shard", disable=None)
        if workers > 1 and len(todo) > 1:
            with mp.get_context("spawn").Pool(min(workers, len(todo))) as pool:
                for _ in pool.imap_unordered(_write_shard, todo):
                    bar.update()
        else:
            for job in todo:
                _write_shard(job)
                bar.update()
        bar.close()
    return shards


def write_manifest(split_dir: Path, shards: list[Path], extra: dict | None = None) -> dict:
    """Aggregate the shards' sidecars into `manifest.json` (counts, hours, captioned and uncaptioned clips, skipped
    with reasons, checksums). Sidecars written before the captioned counts existed count every clip as captioned."""
    entries, skipped = [], []
    for s in shards:
        side = json.loads(_sidecar(s).read_text())
        entries.append({
            "name": s.name, "num_samples": side["num_samples"], "seconds": side["seconds"], "sha256": side["sha256"],
            "captioned": side.get("captioned", side["num_samples"]),
            "seconds_captioned": side.get("seconds_captioned", side["seconds"]),
        })  # fmt: skip
        skipped += side["skipped"]
    total = sum(e["seconds"] for e in entries)
    captioned = sum(e["seconds_captioned"] for e in entries)
    num_captioned = sum(e["captioned"] for e in entries)
    manifest = {
        "split": split_dir.name,
        "num_shards": len(entries),
        "num_samples": sum(e["num_samples"] for e in entries),
        "seconds": round(total, 3),
        "hours": round(total / 3600, 4),
        "num_captioned": num_captioned,
        "num_uncaptioned": sum(e["num_samples"] for e in entries) - num_captioned,
        "hours_captioned": round(captioned / 3600, 4),
        "hours_uncaptioned": round((total - captioned) / 3600, 4),
        "skipped": skipped,
        "skipped_by_reason": dict(Counter(s["reason"] for s in skipped)),
        "shards": entries,
        **(extra or {}),
    }
    atomic_write_bytes(split_dir / "manifest.json", json.dumps(manifest, indent=1).encode())
    return manifest


def clips_written_since(split_dir: Path, manifest: dict, since: float) -> int:
    """Clips in the manifest's shards finished after `since` (epoch seconds): what a run wrote, not what it resumed
    past."""
    return sum(e["num_samples"] for e in manifest["shards"] if _sidecar(split_dir / e["name"]).stat().st_mtime >= since)


def read_manifest(split_dir: str | os.PathLike) -> dict:
    path = Path(split_dir) / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: build the shards first (`make data`)")
    return json.loads(path.read_text())


def iter_tar_samples(shard: str | os.PathLike) -> Iterable[dict[str, bytes]]:
    """Group a tar's members into samples by key (plain tarfile: used by validation, not the training loop)."""
    current: dict[str, Any] = {}
    with tarfile.open(shard) as tar:
        for member in tar:
            if not member.isfile():
                continue
            key, _, ext = member.name.partition(".")
            if current and current["__key__"] != key:
                yield current
                current = {}
            current.setdefault("__key__", key)
            current[ext] = tar.extractfile(member).read()
    if current:
        yield current


def validate_meta(meta: dict) -> None:
    """Raise ValueError when a sample's json does not follow the audio-shard schema of docs/architecture.md."""
    for field, typ in REQUIRED_META.items():
        if field not in meta:
            raise ValueError(f"json lacks '{field}'")
        if not isinstance(meta[field], typ) and not (typ is float and isinstance(meta[field], int)):
            expected = " or ".join(t.__name__ for t in typ) if isinstance(typ, tuple) else typ.__name__
            raise ValueError(f"json '{field}' is {type(meta[field]).__name__}, expected {expected}")
    if "captioned" in meta and meta["captioned"] != bool(meta["caption"]):
        raise ValueError(f"json 'captioned' is {meta['captioned']} but the caption is {meta['caption']!r}")


def check_audio_shards(root: str | os.PathLike, decode: bool = True) -> dict:
    """Read every shard under root/{train,val,test}: schema, decodability, counts and durations vs the manifest."""
    root = Path(root)
    report: dict[str, Any] = {"root": str(root), "splits": {}, "errors": []}
    for split in SPLITS:
        split_dir = root / split
        if not split_dir.is_dir():
            continue
        n, captioned, seconds = 0, 0, 0.0
        for shard in list_shards(split_dir):
            for s in iter_tar_samples(shard):
                where = f"{Path(shard).name}:{s['__key__']}"
                try:
                    if "flac" not in s or "json" not in s:
                        raise ValueError(f"missing fields, has {sorted(k for k in s if k != '__key__')}")
                    meta = json.loads(s["json"])
                    validate_meta(meta)
                    if decode:
                        x = load_audio(s["flac"], meta["sample_rate"])
                        seconds += len(x) / meta["sample_rate"]
                    else:
                        seconds += meta["duration"]
                    n += 1
                    captioned += is_captioned(meta)
                except (AudioError, ValueError) as e:
                    report["errors"].append(f"{split}/{where}: {e}")
        manifest = read_manifest(split_dir) if (split_dir / "manifest.json").exists() else None
        if manifest is not None and manifest["num_samples"] != n:
            report["errors"].append(f"{split}: manifest says {manifest['num_samples']} samples, shards hold {n}")
        parts = (manifest or {}).get("parts")
        if parts and len(parts["done"]) < parts["num_parts"]:
            missing = sorted(set(range(parts["num_parts"])) - set(parts["done"]))
            report["errors"].append(f"{split}: ingest parts {missing} of {parts['num_parts']} have not finished")
        report["splits"][split] = {
            "num_samples": n, "num_captioned": captioned,
            "hours": round(seconds / 3600, 4), "seconds": round(seconds, 2),
        }  # fmt: skip
    if not report["splits"]:
        report["errors"].append(f"no split folders under {root}")
    return report
