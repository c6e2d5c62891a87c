"""Synthetic corpus: MIDI structure matches the attributes, captions describe them, rendering is deterministic."""

from __future__ import annotations

import json
import re
import struct
from collections import Counter

import numpy as np
import pytest

from musiclm.audio import load_audio
from musiclm.data import synth
from musiclm.data.shards import check_audio_shards, iter_tar_samples, list_shards, split_for_key


def read_midi(data: bytes) -> tuple[int, int, list[list[tuple[int, bytes]]]]:
    """Minimal SMF reader (independent of the writer): (format, ticks per quarter, tracks of (abs tick, message))."""
    assert data[:4] == b"MThd"
    _, fmt, ntracks, tpq = struct.unpack(">IHHH", data[4:14])
    pos, tracks = 14, []
    for _ in range(ntracks):
        assert data[pos : pos + 4] == b"MTrk"
        (length,) = struct.unpack(">I", data[pos + 4 : pos + 8])
        body, i, tick, status, events = data[pos + 8 : pos + 8 + length], 0, 0, 0, []
        while i < len(body):
            delta = 0
            while True:
                delta = (delta << 7) | (body[i] & 0x7F)
                i += 1
                if body[i - 1] < 0x80:
                    break
            tick += delta
            if body[i] >= 0x80:
                status, i = body[i], i + 1
            if status == 0xFF:
                kind, n = body[i], body[i + 1]  # our meta payloads are < 128 bytes
                events.append((tick, bytes([0xFF, kind]) + body[i + 2 : i + 2 + n]))
                i += 2 + n
            else:
                n = 1 if status & 0xF0 in (0xC0, 0xD0) else 2
                events.append((tick, bytes([status]) + body[i : i + n]))
                i += n
        assert events[-1][1] == b"\xff\x2f", "track must end with End of Track"
        tracks.append(events)
        pos += 8 + length
    assert pos == len(data)
    return fmt, tpq, tracks


def draws(n: int, seconds: float = 4.0):
    for i in range(n):
        midi, attributes = synth.compose(np.random.default_rng([7, i]), seconds)
        yield midi, attributes


def test_midi_parses_and_matches_attributes():
    for midi, at in draws(60):
        fmt, tpq, tracks = read_midi(midi)
        assert fmt == 1 and tpq == synth.TPQ
        meta = {ev[1]: ev[2:] for _, ev in tracks[0] if ev[0] == 0xFF}
        quarter_us = int.from_bytes(meta[0x51], "big")
        beat_quarters = 1.5 if at["meter"] == "6/8" else 1.0  # tempo_bpm counts dotted quarters in 6/8
        assert 60e6 / quarter_us / beat_quarters == pytest.approx(at["tempo_bpm"], rel=1e-4)
        num, denom_pow = meta[0x58][0], meta[0x58][1]
        assert f"{num}/{2**denom_pow}" == at["meter"]
        assert (meta[0x59][1] == 1) == (at["mode"] == "minor")
        channels = {ev[0] & 0x0F for t in tracks[1:] for _, ev in t if ev[0] & 0xF0 == 0x90}
        assert (9 in channels) == at["has_drums"]
        programs = {ev[0] & 0x0F: ev[1] for t in tracks[1:] for _, ev in t if ev[0] & 0xF0 == 0xC0}
        assert programs[0] == at["instrument_program"] and synth.GM[programs[0]][0] == at["instrument"]
        assert len(at["instruments"]) == len(programs) + at["has_drums"]
        # the melody stays in the key: every pitch class belongs to the scale of the stated key and mode
        root = synth.KEYS.index(at["key"])
        scale = {(root + s) % 12 for s in synth.SCALES[at["mode"]]}
        melody = [ev[1] for _, ev in tracks[1] if ev[0] & 0xF0 == 0x90 and ev[2] > 0]
        assert len(melody) >= 2 and {p % 12 for p in melody} <= scale
        ons = sum(1 for t in tracks[1:] for _, ev in t if ev[0] & 0xF0 == 0x90)
        offs = sum(1 for t in tracks[1:] for _, ev in t if ev[0] & 0xF0 == 0x80)
        assert ons == offs


def test_attributes_cover_the_design_and_are_consistent():
    atts = [at for _, at in draws(400, seconds=1.0)]
    assert set(Counter(a["style"] for a in atts)) == set(synth.STYLES)
    families = Counter(a["instrument_family"] for a in atts)
    assert len(families) >= 8 and min(families.values()) >= 5
    assert {a["meter"] for a in atts} == {"3/4", "4/4", "6/8"} and {a["mode"] for a in atts} == {"major", "minor"}
    assert {a["tempo_bucket"] for a in atts} == {"slow", "medium", "fast"}
    for a in atts:
        assert 60 <= a["tempo_bpm"] <= 180 and a["tempo_bucket"] == synth.tempo_bucket(a["tempo_bpm"])
        assert a["key"] in synth.KEYS and a["dynamics"] in synth.DYNAMICS
        if a["style"] == "waltz":
            assert a["meter"] == "3/4" and not a["has_drums"]
        if a["style"] == "chiptune":
            assert a["instrument"] == "Lead 1 (square)" and set(a["instruments"]) <= {"Lead 1 (square)", "Drum Kit"}
        if a["style"] in ("ambient", "folk", "lullaby", "waltz"):
            assert not a["has_drums"]
        if a["style"] in ("rock", "techno", "march", "jazz swing"):
            assert a["has_drums"]
    assert synth.tempo_bucket(89) == "slow" and synth.tempo_bucket(90) == "medium" and synth.tempo_bucket(130) == "fast"


def test_captions_describe_their_attributes():
    captions = []
    for i, (_, at) in enumerate(draws(150, seconds=1.0)):
        caption, tags = synth.write_caption(at, np.random.default_rng(i))
        captions.append(caption)
        low = caption.lower()
        assert at["instrument_name"].lower() in low
        assert any(w in low for w in synth.STYLE_WORDS[at["style"]])
        other_styles = [s for s in synth.STYLES if s != at["style"] and s not in at["style"]]
        assert not any(re.search(rf"\b{s}\b", low) for s in other_styles), caption
        assert not any(m in low for m in ("major", "minor") if m != at["mode"]), caption
        for bpm in re.findall(r"(\d+) (?:bpm|beats per minute)", low):
            assert int(bpm) == at["tempo_bpm"]
        tempo_words = {b: ws for b, ws in synth.TEMPO_WORDS.items()}
        assert not any(re.search(rf"\b{w}\b", low) for b, ws in tempo_words.items() if b != at["tempo_bucket"] for w in ws), caption
        assert ("no drums" in tags) != at["has_drums"]
        assert {at["instrument_family"], at["style"], f"{at['tempo_bucket']} tempo", f"{at['mode']} key", at["mood"]} <= set(tags)
        assert caption[0].isupper() and caption.endswith(".") and "  " not in caption and ",," not in caption
    assert len(set(captions)) == len(captions)
    openings = Counter(" ".join(c.split()[:2]) for c in captions)
    assert len(openings) >= 10  # varied phrasing, not one template


def test_render_is_deterministic_finite_and_normalised():
    a, b = synth.make_clip(3, seed=11, seconds=2.0), synth.make_clip(3, seed=11, seconds=2.0)
    c = synth.make_clip(3, seed=12, seconds=2.0)
    assert a.key == "synth-11-000003" and a.meta == b.meta
    assert a.audio.dtype == np.float32 and a.audio.shape == (48_000,)
    assert a.audio.tobytes() == b.audio.tobytes()
    assert a.audio.tobytes() != c.audio.tobytes()
    for clip in (a, c):
        assert np.isfinite(clip.audio).all()
        assert np.abs(clip.audio).max() == pytest.approx(synth.PEAK, rel=1e-3)
        assert np.sqrt(np.mean(clip.audio**2)) > 0.01
        assert set(clip.meta) == {"caption", "tags", "sample_rate", "duration", "source", "attributes"}
        assert clip.meta["source"] == "synth" and clip.meta["duration"] == 2.0 and clip.meta["sample_rate"] == 24_000
        json.dumps(clip.meta)  # plain types only


def test_render_midi_at_other_rates():
    midi, _ = synth.compose(np.random.default_rng(0), 1.0)
    x = synth.render_midi(midi, 16_000)
    assert x.dtype == np.float32 and len(x) >= 16_000 and np.isfinite(x).all() and np.abs(x).max() > 0


def test_find_soundfont_errors_name_the_fix(monkeypatch, tmp_path):
    monkeypatch.setenv("MUSICLM_SOUNDFONT", str(tmp_path / "missing.sf2"))
    with pytest.raises(FileNotFoundError, match="MUSICLM_SOUNDFONT"):
        synth.find_soundfont()
    monkeypatch.delenv("MUSICLM_SOUNDFONT")
    monkeypatch.setattr(synth, "SOUNDFONTS", (str(tmp_path / "none.sf2"),))
    with pytest.raises(FileNotFoundError, match="timgm6mb-soundfont"):
        synth.find_soundfont()


def test_main_writes_shards_in_every_split(tmp_path, capsys):
    out = tmp_path / "synth"
    args = [str(out), "--num-clips", "9", "--seconds", "1.5", "--seed", "5", "--val-fraction", "0.3", "--test-fraction", "0.3",
            "--clips-per-shard", "2", "--sample-rate", "16000"]  # fmt: skip
    synth.main(args)
    assert "kept 9 clips" in capsys.readouterr().out
    report = check_audio_shards(out)
    assert report["errors"] == []
    expected = Counter(split_for_key(synth.clip_key(5, i), 0.3, 0.3) for i in range(9))
    assert {s: r["num_samples"] for s, r in report["splits"].items()} == {s: expected[s] for s in ("train", "val", "test")}
    assert all(expected[s] > 0 for s in ("train", "val", "test"))
    for split in ("train", "val", "test"):
        for shard in list_shards(out / split):
            for s in iter_tar_samples(shard):
                meta = json.loads(s["json"])
                assert split_for_key(s["__key__"], 0.3, 0.3) == split
                assert meta["attributes"]["instrument_family"] and len(load_audio(s["flac"], 16_000)) == 24_000
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert manifest["source"] == "synth" and manifest["seed"] == 5


def test_tempo_is_audible_on_drum_styles():
    """The stated tempo is what a beat tracker hears (the adherence metric relies on it)."""
    from musiclm.metrics.tempo import estimate_tempo

    picked = [i for i in range(40) if synth.compose(np.random.default_rng([2, i, 0]), 6.0)[1]["style"] in ("rock", "techno", "march")]
    for i in picked[:3]:
        clip = synth.make_clip(i, seed=2, seconds=6.0)
        bpm = clip.meta["attributes"]["tempo_bpm"]
        assert estimate_tempo(clip.audio, clip.meta["sample_rate"]) == pytest.approx(bpm, rel=0.04)
