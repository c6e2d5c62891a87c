"""`musiclm data ingest`: a folder of the user's audio (+ captions) -> audio shards; `musiclm data check`.

Captions come from a CSV/JSONL table (a `file`/`path` column, or MusicCaps' `ytid,start_s,end_s`, plus `caption`
and optional `aspect_list`/`tags`/`genre`/`mood`) or from a sidecar `.txt`/`.json` next to each file; with
`--folder-tags` the folders a file sits in are tags too. Tags alone become the caption when there is no free text.
Files with neither are kept as uncaptioned clips (`caption` null, `captioned` false): as in MusicLM, only MuLan
needs text, every other stage trains on all the audio (`--require-captions` drops them instead). Long files are cut
into clips. The split is a hash of the file's key, so clips of one recording never straddle train and test.
"""

from __future__ import annotations

import argparse
import ast
import csv
import hashlib
import json
import re
import sys
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from musiclm.audio import AUDIO_EXTENSIONS, AudioError, TooShortError, encode_audio, is_silent, load_audio
from musiclm.data.shards import (
    SPLITS,
    Sample,
    check_audio_shards,
    clips_written_since,
    part_of,
    split_for_key,
    write_split_shards,
)


class NoCaptionError(AudioError):
    reason = "no_caption"


class SilentAudioError(AudioError):
    reason = "silent"


@dataclass(frozen=True)
class Source:
    """One input file and what we know about it."""

    path: str
    key: str
    caption: str | None = None
    tags: tuple[str, ...] = ()
    start_s: float = 0.0
    end_s: float | None = None

    def __str__(self) -> str:  # manifests list skipped inputs by path
        return self.path


def make_key(rel_path: str) -> str:
    """A stable WebDataset key: ASCII, no dots (webdataset splits extensions at the first dot), unique by hash."""
    stem = re.sub(r"[^A-Za-z0-9_-]+", "_", rel_path.rsplit(".", 1)[0]).strip("_")[:80] or "audio"
    return f"{stem}-{hashlib.sha1(rel_path.encode()).hexdigest()[:8]}"


TAG_FIELDS = ("aspect_list", "tags", "genre", "mood")  # table columns / sidecar keys read as tags, in this order


def _parse_tags(value) -> tuple[str, ...]:
    if value is None or value == "":
        return ()
    if isinstance(value, list):
        return tuple(str(v).strip() for v in value if str(v).strip())
    text = str(value).strip()
    if text.startswith("["):  # MusicCaps writes aspect_list as a Python list literal
        try:
            return tuple(str(v).strip() for v in ast.literal_eval(text))
        except (ValueError, SyntaxError):
            pass
    return tuple(t.strip() for t in re.split(r"[,;]", text) if t.strip())


def read_caption_table(path: Path) -> list[dict]:
    """Rows of a CSV or JSONL caption file, as dicts."""
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _row_tags(row: dict) -> tuple[str, ...]:
    """Every tag field of a table row or sidecar json, in TAG_FIELDS order, without repeats."""
    return tuple(dict.fromkeys(t for f in TAG_FIELDS for t in _parse_tags(row.get(f))))


def _sidecar_caption(path: Path) -> tuple[str | None, tuple[str, ...]]:
    txt, js = path.with_suffix(".txt"), path.with_suffix(".json")
    if js.is_file():
        data = json.loads(js.read_text(encoding="utf-8"))
        return data.get("caption"), _row_tags(data)
    if txt.is_file():
        return txt.read_text(encoding="utf-8").strip() or None, ()
    return None, ()


def folder_tags(rel_path: str) -> tuple[str, ...]:
    """The folders a file sits in, as tags (`rock/live/x.mp3` -> rock, live); underscores read as spaces."""
    return tuple(p.replace("_", " ").strip() for p in rel_path.split("/")[:-1] if p.strip())


def caption_from(text: str | None, tags: tuple[str, ...]) -> str | None:
    """The free-text caption, else the tags as a comma list (MuLan learns from tag lists too), else None."""
    text = (text or "").strip()
    return text or (", ".join(tags) if tags else None)


def find_sources(src_dir: Path, captions: Path | None, use_folder_tags: bool = False) -> list[Source]:
    """Every audio file under src_dir with its caption (table first, then sidecar; tags when there is no text)."""
    files = sorted(p for p in src_dir.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    table: dict[str, dict] = {}
    if captions is not None:
        for row in read_caption_table(captions):
            name = row.get("file") or row.get("path") or row.get("filename") or row.get("ytid")
            if name:
                table[str(name)] = row
    sources = []
    for p in files:
        rel = p.relative_to(src_dir).as_posix()
        row = table.get(rel) or table.get(p.name) or table.get(p.stem)
        if row is not None:
            caption, tags = row.get("caption"), _row_tags(row)
        else:
            caption, tags = _sidecar_caption(p)
        if use_folder_tags:
            tags = tuple(dict.fromkeys(tags + folder_tags(rel)))
        start = float(row.get("start_s") or 0.0) if row else 0.0
        end = float(row["end_s"]) if row and row.get("end_s") not in (None, "") else None
        sources.append(Source(str(p), make_key(rel), caption_from(caption, tags), tags, start, end))
    return sources


def clip_samples(
    src: Source, sample_rate: int, clip_seconds: float, min_seconds: float, require_captions: bool
) -> list[Sample]:
    """Decode one file and cut it into clips of `clip_seconds` (a last clip shorter than `min_seconds` is dropped)."""
    if not src.caption and require_captions:
        raise NoCaptionError(f"{src.path}: no caption or tags in the table or a sidecar .txt/.json")
    duration = None if src.end_s is None else src.end_s - src.start_s
    wave = load_audio(
        src.path, sample_rate, min_seconds=min_seconds, offset_seconds=src.start_s, duration_seconds=duration
    )
    n = int(clip_seconds * sample_rate)
    samples = []
    for i, start in enumerate(range(0, len(wave), n)):
        clip = wave[start : start + n]
        if len(clip) < min_seconds * sample_rate or is_silent(clip):
            continue
        meta = {
            "caption": src.caption,
            "captioned": src.caption is not None,
            "tags": list(src.tags),
            "sample_rate": sample_rate,
            "duration": round(len(clip) / sample_rate, 4),
            "source": src.path,
            "offset_s": round(src.start_s + start / sample_rate, 4),
        }
        samples.append({"__key__": f"{src.key}_{i:04d}", "flac": encode_audio(clip, sample_rate), "json": meta})
    if not samples:
        if is_silent(wave):
            raise SilentAudioError(f"{src.path}: silent")
        raise TooShortError(f"{src.path}: no clip of at least {min_seconds} s")
    return samples


def ingest(
    src_dir: Path,
    out_dir: Path,
    captions: Path | None = None,
    sample_rate: int = 24_000,
    clip_seconds: float = 10.0,
    min_seconds: float = 1.0,
    val_fraction: float = 0.05,
    test_fraction: float = 0.05,
    workers: int = 1,
    files_per_shard: int = 32,
    require_captions: bool = False,
    use_folder_tags: bool = False,
    part: tuple[int, int] | None = None,
) -> dict[str, dict]:
    """Ingest `src_dir` into `out_dir/<split>/`; with `part=(i, n)` only the files of part i of n (by a hash of each
    file's key), so n jobs ingest one collection into one folder."""
    sources = find_sources(src_dir, captions, use_folder_tags)
    if part is not None:
        sources = [s for s in sources if part_of(s.key, part[1]) == part[0]]
    make = partial(
        clip_samples,
        sample_rate=sample_rate,
        clip_seconds=clip_seconds,
        min_seconds=min_seconds,
        require_captions=require_captions,
    )
    manifests = {}
    for split in SPLITS:
        items = [s for s in sources if split_for_key(s.key, val_fraction, test_fraction) == split]
        manifests[split] = write_split_shards(
            out_dir,
            split,
            items,
            make,
            files_per_shard,
            workers,
            {"source_dir": str(src_dir), "sample_rate": sample_rate},
            part=part,
        )
    return manifests


def summary(manifests: dict[str, dict]) -> tuple[int, str]:
    kept = sum(m["num_samples"] for m in manifests.values())
    hours = sum(m["hours"] for m in manifests.values())
    reasons: dict[str, int] = {}
    for m in manifests.values():
        for r, c in m["skipped_by_reason"].items():
            reasons[r] = reasons.get(r, 0) + c
    captioned = sum(m["num_captioned"] for m in manifests.values())
    hours_captioned = sum(m["hours_captioned"] for m in manifests.values())
    lines = [
        f"kept {kept} clips ({hours:.3f} h): " + ", ".join(f"{s} {m['num_samples']}" for s, m in manifests.items()),
        f"captioned {captioned} clips ({hours_captioned:.3f} h), uncaptioned {kept - captioned} clips "
        f"({hours - hours_captioned:.3f} h): " + ", ".join(
            f"{s} {m['num_captioned']}/{m['num_uncaptioned']}" for s, m in manifests.items()
        ),
    ]
    lines.append("skipped: " + (", ".join(f"{r} {c}" for r, c in sorted(reasons.items())) or "none"))
    parts = [m["parts"] for m in manifests.values() if "parts" in m]
    if parts:
        lines.append("parts done: " + ", ".join(f"{s} {len(m['parts']['done'])}/{m['parts']['num_parts']}"
                                                for s, m in manifests.items()))  # fmt: skip
    for m in manifests.values():
        for s in m["skipped"][:20]:
            lines.append(f"  skipped {s['item']}: {s['reason']} ({s['message'][:120]})")
    return kept, "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm data ingest", description=__doc__)
    p.add_argument("src_dir", type=Path)
    p.add_argument("out_dir", type=Path)
    p.add_argument("--captions", type=Path, default=None, help="CSV or JSONL caption table")
    p.add_argument("--sample-rate", type=int, default=24_000)
    p.add_argument("--clip-seconds", type=float, default=10.0)
    p.add_argument("--min-seconds", type=float, default=1.0, help="shorter files/clips are skipped")
    p.add_argument("--val-fraction", type=float, default=0.05)
    p.add_argument("--test-fraction", type=float, default=0.05)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--files-per-shard", type=int, default=32)
    p.add_argument(
        "--require-captions", action="store_true",
        help="skip files with neither caption nor tags (default: keep them as uncaptioned clips)",
    )  # fmt: skip
    p.add_argument("--folder-tags", action="store_true", help="the folders a file sits in are its tags")
    p.add_argument("--num-parts", type=int, default=1, help="split the input into this many parts (one per job)")
    p.add_argument("--part", type=int, default=None, help="ingest only this part, 0..num-parts-1 (SLURM array id)")
    a = p.parse_args(argv)
    if not a.src_dir.is_dir():
        p.error(f"{a.src_dir} is not a directory")
    if a.part is not None and not 0 <= a.part < a.num_parts:
        p.error(f"--part {a.part} is not in 0..{a.num_parts - 1} (--num-parts {a.num_parts})")
    if a.num_parts > 1 and a.part is None:
        p.error("--num-parts needs --part (run one job per part, e.g. slurm/ingest.sbatch)")
    t0, started = time.perf_counter(), time.time()
    manifests = ingest(
        a.src_dir, a.out_dir, a.captions, a.sample_rate, a.clip_seconds, a.min_seconds,
        a.val_fraction, a.test_fraction, a.workers, a.files_per_shard, a.require_captions, a.folder_tags,
        None if a.part is None else (a.part, a.num_parts),
    )  # fmt: skip
    dt = time.perf_counter() - t0
    kept, text = summary(manifests)
    print(text)
    made = sum(clips_written_since(a.out_dir / split, m, started) for split, m in manifests.items())
    print(f"{made} clips written in {dt:.1f} s: {made / dt:.2f} clips/s, {made / dt / a.workers:.2f} per core "
          f"({a.workers} workers)")  # fmt: skip
    if kept == 0:
        print(f"error: no usable audio found under {a.src_dir}", file=sys.stderr)
        sys.exit(1)


def check_main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm data check", description="Read every shard: schema, decoding, counts.")
    p.add_argument("dir", type=Path)
    p.add_argument("--no-decode", action="store_true", help="check schema and counts only")
    a = p.parse_args(argv)
    report = check_audio_shards(a.dir, decode=not a.no_decode)
    for split, r in report["splits"].items():
        clips = f"{r['num_samples']} clips ({r['num_captioned']} captioned)"
        print(f"{split}: {clips}, {r['seconds']:.1f} s ({r['hours']} h)")
    for e in report["errors"][:50]:
        print(f"ERROR {e}")
    if report["errors"]:
        print(f"{len(report['errors'])} error(s)", file=sys.stderr)
        sys.exit(1)
    print("ok")
