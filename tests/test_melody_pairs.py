"""Melody pairs (`musiclm data synth --melody-pairs`): the same notes in every variant, the original clip is the
default corpus's, and the variants are audibly the same melody (chroma) while sounding different (spectrum)."""

from __future__ import annotations

import json

import librosa
import numpy as np

from musiclm.data import synth
from musiclm.data.shards import check_audio_shards, iter_tar_samples, list_shards
from musiclm.data.synth.melody_pairs import HUM_PROGRAMS

SR = 16_000


def chroma(audio: np.ndarray) -> np.ndarray:
    c = librosa.feature.chroma_stft(y=audio, sr=SR, n_fft=2048, hop_length=512)
    return c / (np.linalg.norm(c, axis=0, keepdims=True) + 1e-8)


def test_variants_share_the_melody_and_the_original_is_the_default_clip():
    clips = synth.melody_pair_clips(3, 0, 4.0, SR)
    by = {c.meta["melody"]["variant"]: c for c in clips}
    assert set(by) == set(synth.MELODY_VARIANTS)
    default = synth.make_clip(3, 0, 4.0, SR)
    assert np.array_equal(by["original"].audio, default.audio) and by["original"].key == default.key
    assert {k: v for k, v in by["original"].meta.items() if k != "melody"} == default.meta
    notes = np.array(by["original"].meta["melody"]["notes"])
    for name, c in by.items():
        m = c.meta["melody"]
        assert m["id"] == default.key and c.key == default.key + ("" if name == "original" else f"-{name}")
        got = np.array(m["notes"])
        assert np.array_equal(got[:, :2], notes[:, :2]), name  # same onsets and offsets
        shift = set((got[:, 2] - notes[:, 2]).tolist())
        assert shift == ({12} if name == "octave" and got[0, 2] > notes[0, 2] else {-12} if name == "octave" else {0})
        assert c.audio.shape == (4 * SR,) and np.isfinite(c.audio).all() and np.abs(c.audio).max() > 0.5
    assert by["hummed"].meta["melody"]["program"] in HUM_PROGRAMS
    assert by["instrument"].meta["melody"]["program"] != by["original"].meta["melody"]["program"]
    assert by["solo"].meta["attributes"]["accompaniment"] == []


def test_hummed_line_follows_the_solo_line_not_another_melody():
    """Frame-wise chroma cosine of the hummed rendering against its own solo line beats that against another
    clip's solo line: the pairs carry the melody in the audio, not only in the json."""
    a = {c.meta["melody"]["variant"]: c.audio for c in synth.melody_pair_clips(1, 0, 4.0, SR)}
    b = {c.meta["melody"]["variant"]: c.audio for c in synth.melody_pair_clips(2, 0, 4.0, SR)}
    same = float((chroma(a["hummed"]) * chroma(a["solo"])).sum(0).mean())
    other = float((chroma(a["hummed"]) * chroma(b["solo"])).sum(0).mean())
    assert same > other + 0.1, (same, other)


def test_melody_pair_corpus_keeps_a_melody_in_one_split(tmp_path, capsys):
    out = tmp_path / "pairs"
    synth.main([str(out), "--num-clips", "4", "--seconds", "1.5", "--seed", "5", "--val-fraction", "0.3",
                "--test-fraction", "0.3", "--sample-rate", str(SR), "--melody-pairs"])  # fmt: skip
    assert check_audio_shards(out)["errors"] == []
    splits: dict[str, set[str]] = {}
    for split in ("train", "val", "test"):
        for shard in list_shards(out / split):
            for s in iter_tar_samples(shard):
                splits.setdefault(json.loads(s["json"])["melody"]["id"], set()).add(split)
    assert len(splits) == 4 and all(len(v) == 1 for v in splits.values())
    manifest = json.loads((out / "train" / "manifest.json").read_text())
    assert manifest["melody_pairs"] == list(synth.MELODY_VARIANTS)
