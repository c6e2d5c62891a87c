"""Synthetic corpus: MIDI structure matches the attributes, captions describe them, rendering is deterministic."""

from __future__ import annotations

import hashlib
import io
import json
import re
from collections import Counter

import mido
import numpy as np
import pytest

from musiclm.audio import load_audio
from musiclm.data import synth
from musiclm.data.shards import check_audio_shards, iter_tar_samples, list_shards, split_for_key
from musiclm.stages import load_object

NOTE_NAMES = {"C": 0, "D": 2, "E": 4, "F": 5, "G": 7, "A": 9, "B": 11}


def read_midi(data: bytes) -> mido.MidiFile:
    return mido.MidiFile(file=io.BytesIO(data))


def timeline(track: mido.MidiTrack) -> list[tuple[int, mido.Message]]:
    """(absolute tick, message) for every event of a track."""
    out, tick = [], 0
    for msg in track:
        tick += msg.time
        out.append((tick, msg))
    return out


def pitch_class(name: str) -> int:
    """Pitch class of a spelled tonic ("Eb", "D#m")."""
    name = name.removesuffix("m")
    return (NOTE_NAMES[name[0]] + name[1:].count("#") - name[1:].count("b")) % 12


def signed_sharps(key: str) -> int:
    """Sharps (> 0) or flats (< 0) of a key signature, from the bytes mido writes."""
    return int.from_bytes(mido.MetaMessage("key_signature", key=key).bytes()[3:4], "big", signed=True)


def draws(n: int, seconds: float = 4.0):
    for i in range(n):
        midi, attributes = synth.compose(np.random.default_rng([7, i]), seconds)
        yield midi, attributes


def test_public_names_are_reexported():
    """Callers import everything from the package; the CLI entry point resolves there too."""
    assert all(hasattr(synth, name) for name in synth.__all__)
    assert load_object("musiclm.data.synth:main") is synth.main
    assert callable(synth.compose) and callable(synth.bench)


def test_write_midi_round_trips_through_mido():
    notes = [(0, 480, 60, 100), (480, 960, 64, 90), (480, 720, 67, 80), (960, 1440, 60, 70)]  # 480: an off and two ons
    drums = [(0, 120, 36, 110), (240, 360, 42, 60)]
    tracks = [
        {"name": "melody", "channel": 0, "program": 73, "volume": 115, "notes": notes},
        {"name": "drums", "channel": 9, "program": None, "volume": 90, "notes": drums},
    ]
    smf = read_midi(synth.write_midi(tracks, 150.0, "6/8", 3, "minor"))
    assert smf.type == 1 and smf.ticks_per_beat == synth.TPQ and len(smf.tracks) == 3
    meta = {m.type: m for m in smf.tracks[0]}
    assert meta["track_name"].name == "conductor" and meta["set_tempo"].tempo == 400_000
    ts = meta["time_signature"]
    assert (ts.numerator, ts.denominator, ts.clocks_per_click, ts.notated_32nd_notes_per_beat) == (6, 8, 36, 8)
    assert meta["key_signature"].key == "D#m"  # Eb minor is spelled D# minor: six sharps, not six flats
    for t, part in zip(smf.tracks[1:], tracks, strict=True):
        events = timeline(t)
        assert events[0][1].type == "track_name" and events[0][1].name == part["name"]
        assert events[-1][1].type == "end_of_track"
        controls = {m.control: m.value for _, m in events if m.type == "control_change"}
        assert controls == {7: part["volume"], 91: 40}
        assert [m.program for _, m in events if m.type == "program_change"] == (
            [part["program"]] if part["program"] is not None else []
        )
        channel_msgs = [m for _, m in events if not m.is_meta]
        assert {m.channel for m in channel_msgs} == {part["channel"]}
        ons = [(tick, m.note, m.velocity) for tick, m in events if m.type == "note_on"]
        offs = [(tick, m.note) for tick, m in events if m.type == "note_off"]
        assert ons == [(s, p, v) for s, _, p, v in part["notes"]]  # listed in onset order: kept as listed
        assert sorted(offs) == sorted((e, p) for _, e, p, _ in part["notes"])
        kinds = [(tick, m.type) for tick, m in events if m.type in ("note_on", "note_off")]
        assert kinds == sorted(kinds, key=lambda k: (k[0], k[1] == "note_on")), "note-offs come first at equal ticks"


@pytest.mark.parametrize("mode", ["major", "minor"])
def test_key_signatures_spell_every_root(mode):
    for root in range(12):
        key = synth.key_name(root, mode)
        assert pitch_class(key) == root and key.endswith("m") == (mode == "minor")
        sharps = signed_sharps(key)
        major_root = root if mode == "major" else (root + 3) % 12
        assert -5 <= sharps <= 6 and (7 * sharps) % 12 == major_root  # the fewest accidentals for that tonic


def test_midi_parses_and_matches_attributes():
    for midi, at in draws(60):
        smf = read_midi(midi)
        assert smf.type == 1 and smf.ticks_per_beat == synth.TPQ
        meta = {m.type: m for m in smf.tracks[0] if m.is_meta}
        beat_quarters = 1.5 if at["meter"] == "6/8" else 1.0  # tempo_bpm counts dotted quarters in 6/8
        assert mido.tempo2bpm(meta["set_tempo"].tempo) / beat_quarters == pytest.approx(at["tempo_bpm"], rel=1e-4)
        ts = meta["time_signature"]
        assert f"{ts.numerator}/{ts.denominator}" == at["meter"]
        key = meta["key_signature"].key
        assert key.endswith("m") == (at["mode"] == "minor") and pitch_class(key) == synth.KEYS.index(at["key"])
        events = [m for t in smf.tracks[1:] for m in t if not m.is_meta]
        assert (9 in {m.channel for m in events if m.type == "note_on"}) == at["has_drums"]
        programs = {m.channel: m.program for m in events if m.type == "program_change"}
        assert programs[0] == at["instrument_program"] and synth.GM[programs[0]][0] == at["instrument"]
        assert len(at["instruments"]) == len(programs) + at["has_drums"]
        # the melody stays in the key: every pitch class belongs to the scale of the stated key and mode
        root = synth.KEYS.index(at["key"])
        scale = {(root + s) % 12 for s in synth.SCALES[at["mode"]]}
        melody = [m.note for m in smf.tracks[1] if m.type == "note_on" and m.velocity > 0]
        assert len(melody) >= 2 and {p % 12 for p in melody} <= scale
        assert sum(m.type == "note_on" for m in events) == sum(m.type == "note_off" for m in events)


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
        assert not any(
            re.search(rf"\b{w}\b", low) for b, ws in tempo_words.items() if b != at["tempo_bucket"] for w in ws
        ), caption
        assert ("no drums" in tags) != at["has_drums"]
        assert {
            at["instrument_family"],
            at["style"],
            f"{at['tempo_bucket']} tempo",
            f"{at['mode']} key",
            at["mood"],
        } <= set(tags)
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
    monkeypatch.setattr(synth.render, "SOUNDFONTS", (str(tmp_path / "none.sf2"),))
    with pytest.raises(FileNotFoundError, match="timgm6mb-soundfont"):
        synth.find_soundfont()


def test_main_writes_shards_in_every_split(tmp_path, capsys):
    out = tmp_path / "synth"
    args = [str(out), "--num-clips", "9", "--seconds", "1.5", "--seed", "5", "--val-fraction", "0.3",
            "--test-fraction", "0.3", "--clips-per-shard", "2", "--sample-rate", "16000"]  # fmt: skip
    synth.main(args)
    assert "kept 9 clips" in capsys.readouterr().out
    report = check_audio_shards(out)
    assert report["errors"] == []
    expected = Counter(split_for_key(synth.clip_key(5, i), 0.3, 0.3) for i in range(9))
    assert {s: r["num_samples"] for s, r in report["splits"].items()} == {
        s: expected[s] for s in ("train", "val", "test")
    }
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

    picked = [
        i
        for i in range(40)
        if synth.compose(np.random.default_rng([2, i, 0]), 6.0)[1]["style"] in ("rock", "techno", "march")
    ]
    for i in picked[:3]:
        clip = synth.make_clip(i, seed=2, seconds=6.0)
        bpm = clip.meta["attributes"]["tempo_bpm"]
        assert estimate_tempo(clip.audio, clip.meta["sample_rate"]) == pytest.approx(bpm, rel=0.04)


def test_default_corpus_is_unchanged_by_prompt_kinds():
    """Prompt kinds are opt-in: with rate 0 nothing is drawn and pieces, attributes and captions are byte for byte
    those of the corpus before prompt kinds existed (digest of 40 draws taken from that code)."""
    from musiclm.data.synth.kinds import draw_kind

    assert all(draw_kind(0, i, 0.0) is None for i in range(100))
    digest = hashlib.sha256()
    for i in range(40):
        midi, at = synth.compose(np.random.default_rng([0, i, 0]), 8.0)
        caption, tags = synth.write_caption(at, np.random.default_rng([0, i, 0]))
        digest.update(midi)
        digest.update(json.dumps([at, caption, tags], sort_keys=True).encode())
    assert digest.hexdigest() == "43bc446df1ad3b9819b8617196e29d37b0abf9c6a8a06e7d7e79e0e4b6237983"


def note_ons(midi: bytes) -> dict[str, list[tuple[int, int, int]]]:
    """Per track name: (tick, channel, program-or-None) of each note-on."""
    out = {}
    for track in read_midi(midi).tracks[1:]:
        events = timeline(track)
        name = events[0][1].name
        program = next((m.program for _, m in events if m.type == "program_change"), None)
        out[name] = [(t, m.channel, program) for t, m in events if m.type == "note_on"]
    return out


def test_negation_and_order_are_true_in_the_midi_and_said_in_the_caption():
    from musiclm.data.synth.kinds import draw_kind

    kinds = Counter(draw_kind(0, i, 0.5) for i in range(400))
    assert 0.4 < kinds[None] / 400 < 0.6 and kinds["negation"] > 60 and kinds["order"] > 60
    negated, entered = Counter(), Counter()
    for i in range(80):
        midi, at = synth.compose(np.random.default_rng([3, i, 0]), 6.0, ("negation", "order")[i % 2])
        ons = note_ons(midi)
        caption, tags = synth.write_caption(at, np.random.default_rng(i))
        sounding = {"drums" if p is None else synth.GM[p][2] for notes in ons.values() for _, _, p in notes[:1]}
        if "negation" in at:
            absent = at["negation"]
            negated[absent == "drums"] += 1
            assert absent not in sounding and f"no {absent}" in tags and at["has_drums"] == ("drums" in sounding)
            assert any(f"{w} {absent}" in caption for w in ("with no", "without", "no"))
        if "order" in at:
            order = at["order"]
            entered[order["enters"] == "drums"] += 1
            tempo = next(m.tempo for m in read_midi(midi).tracks[0] if m.type == "set_tempo")
            mid_tick = order["seconds"] * 1e6 / tempo * synth.TPQ
            late = ["drums"] if order["enters"] == "drums" else [n for n in ons if n != "melody"]
            onsets = [t for n in late for t, _, _ in ons.get(n, [])]
            assert onsets and min(onsets) >= mid_tick - 1, (i, order)  # silent until halfway, then playing
            assert order["seconds"] == 3.0 and "halfway" in caption.lower()
            assert f"{order['enters']} enter halfway" in tags
            if order["enters"] != "drums":
                assert order["solo"] == at["instrument_family"] != order["enters"]
                assert "solo" in caption or "alone" in caption
    assert len(negated) == 2 and len(entered) == 2  # drums and instrument families, both kinds


def test_make_clip_renders_the_order_it_claims():
    """A clip whose drums enter halfway is quieter in its first half where the drums are missing."""
    from musiclm.data.synth.kinds import draw_kind

    index = next(i for i in range(200) if draw_kind(0, i, 0.5) == "order"
                 and "order" in synth.compose(np.random.default_rng([0, i, 0]), 4.0, "order")[1])  # fmt: skip
    clip = synth.make_clip(index, 0, 4.0, prompt_kinds_rate=0.5)
    assert "order" in clip.meta["attributes"] and "halfway" in clip.meta["caption"]
    plain = synth.make_clip(index, 0, 4.0)
    assert "order" not in plain.meta["attributes"] and plain.audio.tobytes() != clip.audio.tobytes()
