"""Shard writing (atomic, resumable), ingest of a mixed folder, and the shard checker."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from functools import partial
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from musiclm.data import ingest
from musiclm.data.shards import (
    check_audio_shards,
    iter_tar_samples,
    list_shards,
    read_manifest,
    split_for_key,
    validate_meta,
    write_split_shards,
)
from tests.conftest import tone_sample


class Crash(KeyboardInterrupt):
    """Stands in for a kill: not an Exception, so the writer must not swallow it."""


def crashing_sample(index: int, crash_at: int) -> list[dict]:
    if index == crash_at:
        raise Crash()
    return tone_sample(index, "train", 0.2, 8000)


def test_interrupted_writer_leaves_no_partial_shard_and_rerun_finishes(tmp_path):
    items = list(range(10))
    with pytest.raises(Crash):
        write_split_shards(tmp_path, "train", items, partial(crashing_sample, crash_at=6), items_per_shard=4)
    split = tmp_path / "train"
    assert [p.split("/")[-1] for p in list_shards(split)] == ["shard-000000.tar"]  # shard 1 was mid-write
    assert not (split / "manifest.json").exists()
    first = (split / "shard-000000.tar").stat().st_mtime_ns
    manifest = write_split_shards(tmp_path, "train", items, partial(crashing_sample, crash_at=-1), items_per_shard=4)
    assert (split / "shard-000000.tar").stat().st_mtime_ns == first  # complete shard kept, not redone
    assert manifest["num_samples"] == 10 and manifest["num_shards"] == 3
    assert not list(split.glob("*.tmp"))
    keys = [s["__key__"] for p in list_shards(split) for s in iter_tar_samples(p)]
    assert keys == [f"train-{i:05d}" for i in range(10)]


def test_second_writer_on_the_same_split_is_refused(tmp_path):
    """Two writers on one directory would delete each other's temp files; the second one gets a clear error."""
    import fcntl

    make = partial(tone_sample, split="train", seconds=0.2, sample_rate=8000)
    (tmp_path / "train").mkdir()
    with open(tmp_path / "train" / ".lock", "w") as held:  # another writer, mid-run
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(RuntimeError, match="another process is writing"):
            write_split_shards(tmp_path, "train", [0, 1], make)
    assert write_split_shards(tmp_path, "train", [0, 1], make)["num_samples"] == 2  # released with its holder


def test_parallel_writer_matches_serial(tmp_path):
    make = partial(tone_sample, split="val", seconds=0.2, sample_rate=8000)
    a = write_split_shards(tmp_path / "a", "val", list(range(9)), make, items_per_shard=2, workers=1)
    b = write_split_shards(tmp_path / "b", "val", list(range(9)), make, items_per_shard=2, workers=2)
    assert [s["sha256"] for s in a["shards"]] == [s["sha256"] for s in b["shards"]]


def test_split_is_deterministic_and_proportional():
    keys = [f"k{i}" for i in range(4000)]
    splits = [split_for_key(k, 0.1, 0.2) for k in keys]
    assert splits == [split_for_key(k, 0.1, 0.2) for k in keys]
    assert 0.08 < splits.count("val") / 4000 < 0.12 and 0.18 < splits.count("test") / 4000 < 0.22


def _tone(sr: int, seconds: float) -> np.ndarray:
    return (0.4 * np.sin(2 * np.pi * 440 * np.arange(int(sr * seconds)) / sr)).astype(np.float32)


@pytest.fixture
def mixed_folder(tmp_path):
    src = tmp_path / "music"
    (src / "sub").mkdir(parents=True)
    sf.write(src / "long.flac", _tone(44_100, 7.5), 44_100)  # 3 clips of 3 s (last 1.5 s kept: >= min 1 s)
    sf.write(src / "sub" / "stéréo 8bit.wav", np.stack([_tone(22_050, 2.0)] * 2, 1), 22_050, subtype="PCM_U8")
    sf.write(src / "caption_by_sidecar.ogg", _tone(48_000, 2.0), 48_000, format="OGG", subtype="VORBIS")
    (src / "caption_by_sidecar.txt").write_text("a bright sine tone\n")
    (src / "broken.mp3").write_bytes(b"ID3" + b"\x00" * 300)
    sf.write(src / "silent.wav", np.zeros(48_000, np.float32), 24_000)
    sf.write(src / "tiny.wav", _tone(24_000, 0.05), 24_000)
    sf.write(src / "nocaption.wav", _tone(24_000, 2.0), 24_000)
    x = _tone(24_000, 2.0)
    x[10] = np.inf
    sf.write(src / "inf.wav", x, 24_000, subtype="FLOAT")
    table = tmp_path / "captions.csv"
    with open(table, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["file", "caption", "aspect_list"])
        w.writerow(["long.flac", "a long tone", "['tone', 'long']"])
        w.writerow(["sub/stéréo 8bit.wav", "an 8-bit stereo tone", "tone, stereo"])
        for name in ("broken.mp3", "silent.wav", "tiny.wav", "inf.wav"):
            w.writerow([name, "x", ""])
    return src, table


def _metas(split_dir) -> list[dict]:
    return sorted(
        (json.loads(s["json"]) for p in list_shards(split_dir) for s in iter_tar_samples(p)),
        key=lambda m: (m["source"], m["offset_s"]),
    )


def test_ingest_mixed_folder_keeps_uncaptioned_audio(tmp_path, mixed_folder):
    src, table = mixed_folder
    out = tmp_path / "shards"
    manifests = ingest.ingest(
        src, out, table, sample_rate=16_000, clip_seconds=3.0, val_fraction=0.0, test_fraction=0.0
    )
    train = manifests["train"]
    assert train["num_samples"] == 3 + 1 + 1 + 1
    assert train["skipped_by_reason"] == {"undecodable": 1, "silent": 1, "too_short": 1, "non_finite": 1}
    assert (train["num_captioned"], train["num_uncaptioned"]) == (5, 1)
    assert train["hours_uncaptioned"] == round(2.0 / 3600, 4)
    assert train["hours_captioned"] + train["hours_uncaptioned"] == pytest.approx(train["hours"], abs=2e-4)
    assert read_manifest(out / "train")["num_samples"] == 6
    metas = _metas(out / "train")
    assert [m["caption"] for m in metas] == [
        "a bright sine tone", "a long tone", "a long tone", "a long tone", None, "an 8-bit stereo tone"
    ]  # fmt: skip
    assert [m["captioned"] for m in metas] == [True, True, True, True, False, True]
    assert metas[1]["tags"] == ["tone", "long"] and metas[3]["duration"] == 1.5
    keys = [s["__key__"] for p in list_shards(out / "train") for s in iter_tar_samples(p)]
    assert all(k.isascii() and "." not in k for k in keys)
    report = check_audio_shards(out)
    assert not report["errors"] and report["splits"]["train"]["num_samples"] == 6
    assert report["splits"]["train"]["num_captioned"] == 5


def test_ingest_require_captions_skips_uncaptioned_files(tmp_path, mixed_folder):
    src, table = mixed_folder
    train = ingest.ingest(
        src, tmp_path / "shards", table, sample_rate=16_000, clip_seconds=3.0, val_fraction=0.0, test_fraction=0.0,
        require_captions=True,
    )["train"]  # fmt: skip
    assert train["num_samples"] == 5 and train["num_uncaptioned"] == 0
    assert train["skipped_by_reason"]["no_caption"] == 1
    assert [s["item"] for s in train["skipped"] if s["reason"] == "no_caption"] == [str(src / "nocaption.wav")]


def test_tags_and_folder_names_become_the_caption_when_there_is_no_text(tmp_path):
    src = tmp_path / "music"
    (src / "jazz" / "late_night").mkdir(parents=True)
    for name in ("tagged.wav", "sidecar.wav", "jazz/late_night/folder.wav", "texted.wav"):
        sf.write(src / name, _tone(16_000, 1.5), 16_000)
    table = tmp_path / "tags.jsonl"
    table.write_text(
        json.dumps({"file": "tagged.wav", "genre": "ambient", "mood": "calm; dark"}) + "\n"
        + json.dumps({"file": "texted.wav", "caption": "a flute solo", "tags": ["flute"]}) + "\n"
    )  # fmt: skip
    (src / "sidecar.json").write_text(json.dumps({"aspect_list": ["lo-fi", "piano"]}))
    out = tmp_path / "shards"
    plain = ingest.ingest(src, out / "plain", table, 16_000, 3.0, val_fraction=0.0, test_fraction=0.0)
    captions = {Path(m["source"]).name: m["caption"] for m in _metas(out / "plain" / "train")}
    assert captions == {
        "tagged.wav": "ambient, calm, dark", "sidecar.wav": "lo-fi, piano", "folder.wav": None,
        "texted.wav": "a flute solo",
    }  # fmt: skip
    assert plain["train"]["num_uncaptioned"] == 1
    ingest.ingest(src, out / "folders", table, 16_000, 3.0, val_fraction=0.0, test_fraction=0.0, use_folder_tags=True)
    metas = {Path(m["source"]).name: m for m in _metas(out / "folders" / "train")}
    assert metas["folder.wav"]["caption"] == "jazz, late night" and metas["folder.wav"]["captioned"]
    assert metas["texted.wav"]["caption"] == "a flute solo"  # folder tags never replace free text


def test_validate_meta_accepts_null_captions_and_refuses_a_false_flag():
    meta = {"caption": None, "captioned": False, "tags": [], "sample_rate": 16_000, "duration": 1.0, "source": "x"}
    validate_meta(meta)
    with pytest.raises(ValueError, match="captioned"):
        validate_meta(meta | {"captioned": True})
    with pytest.raises(ValueError, match="expected str or NoneType"):
        validate_meta(meta | {"caption": 3})


def test_ingest_cli_exit_codes_and_musiccaps_rows(tmp_path):
    src = tmp_path / "caps"
    src.mkdir()
    sf.write(src / "abc123.wav", _tone(24_000, 6.0), 24_000)
    table = tmp_path / "musiccaps.csv"
    table.write_text("ytid,start_s,end_s,aspect_list,caption\nabc123,1,4,\"['calm']\",A calm tone.\n")
    out = tmp_path / "out"
    run = [sys.executable, "-m", "musiclm.cli", "data", "ingest"]
    ok = subprocess.run(
        run + [str(src), str(out), "--captions", str(table), "--clip-seconds", "10"], capture_output=True, text=True
    )
    assert ok.returncode == 0, ok.stderr
    assert "kept 1 clips" in ok.stdout and "captioned 1 clips" in ok.stdout
    meta = json.loads(next(iter_tar_samples(list_shards(out / "train")[0]))["json"])
    assert meta["duration"] == 3.0 and meta["tags"] == ["calm"]
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "junk.wav").write_bytes(b"RIFF")
    bad = subprocess.run(run + [str(empty), str(tmp_path / "o2")], capture_output=True, text=True)
    assert bad.returncode == 1 and "no usable audio" in bad.stderr
    check = subprocess.run(
        [sys.executable, "-m", "musiclm.cli", "data", "check", str(out)], capture_output=True, text=True
    )
    assert check.returncode == 0 and "train: 1 clips (1 captioned)" in check.stdout


def _keys(split_dir) -> list[str]:
    return sorted(s["__key__"] for p in list_shards(split_dir) for s in iter_tar_samples(p))


def test_ingest_in_parts_covers_the_collection_once_and_a_rerun_redoes_nothing(tmp_path):
    src = tmp_path / "music"
    src.mkdir()
    for i in range(14):
        sf.write(src / f"t{i:02d}.wav", _tone(16_000, 1.2), 16_000)
    whole = ingest.ingest(src, tmp_path / "whole", None, 16_000, 3.0, val_fraction=0.2, test_fraction=0.0,
                          files_per_shard=2)  # fmt: skip
    out = tmp_path / "parts"
    ingest.ingest(src, out, None, 16_000, 3.0, val_fraction=0.2, test_fraction=0.0, files_per_shard=2, part=(2, 3))
    assert any("parts [0, 1] of 3 have not finished" in e for e in check_audio_shards(out)["errors"])
    for part in range(3):
        manifests = ingest.ingest(src, out, None, 16_000, 3.0, val_fraction=0.2, test_fraction=0.0,
                                  files_per_shard=2, part=(part, 3))  # fmt: skip
    for split in ("train", "val"):
        assert manifests[split]["parts"] == {"num_parts": 3, "done": [0, 1, 2]}
        assert manifests[split]["num_samples"] == whole[split]["num_samples"]
        assert _keys(out / split) == _keys(tmp_path / "whole" / split)
    assert {p.split("/")[-1][:18] for p in list_shards(out / "train")} == {f"shard-0000{i}of00003" for i in range(3)}
    before = {p: Path(p).stat().st_mtime_ns for p in list_shards(out / "train")}
    again = ingest.ingest(src, out, None, 16_000, 3.0, val_fraction=0.2, test_fraction=0.0, files_per_shard=2,
                          part=(1, 3))  # fmt: skip
    assert {p: Path(p).stat().st_mtime_ns for p in list_shards(out / "train")} == before
    assert again["train"]["num_samples"] == whole["train"]["num_samples"]
    with pytest.raises(ValueError, match="3-part run"):
        ingest.ingest(src, out, None, 16_000, 3.0, val_fraction=0.2, test_fraction=0.0, part=(0, 4))
    assert not check_audio_shards(out)["errors"]


def test_ingest_cli_part_arguments_and_rate(tmp_path):
    src = tmp_path / "music"
    src.mkdir()
    sf.write(src / "a.wav", _tone(16_000, 1.5), 16_000)
    run = [sys.executable, "-m", "musiclm.cli", "data", "ingest", str(src), str(tmp_path / "out")]
    bad = subprocess.run(run + ["--num-parts", "2", "--part", "2"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--part 2 is not in 0..1" in bad.stderr
    ok = subprocess.run(run + ["--num-parts", "1", "--part", "0"], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "parts done: train 1/1" in ok.stdout and "clips/s" in ok.stdout and "per core (1 workers)" in ok.stdout
