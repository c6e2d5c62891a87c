"""The melody embedding: windows, its training on a tiny melody-pair corpus, the fitted quantizer in the hand-off,
and melody tokens as a token producer (shapes, ranges, determinism)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from musiclm.artifacts import load_model
from musiclm.contracts import stream_spec
from musiclm.data import synth
from musiclm.melody.module import MelodyModule, QuantizerNotFittedError, recall_at_1
from musiclm.melody.pairs import load_groups
from musiclm.melody.windows import num_windows, split_windows
from musiclm.train import train

SR = 8_000


def test_windows_cover_the_clip_at_the_hop():
    assert [num_windows(s, 4.0, 3.0) for s in (2.0, 4.0, 6.9, 7.0, 8.0, 10.0)] == [1, 1, 1, 2, 2, 3]
    wave = torch.arange(10 * 10, dtype=torch.float32)[None]  # 10 s at 10 Hz
    w = split_windows(wave, 10, 4.0, 3.0)
    assert w.shape == (1, 3, 40) and w[0, 1, 0] == 30 and w[0, 2, -1] == 99
    assert split_windows(torch.ones(2, 20), 10, 4.0, 3.0).shape == (2, 1, 40)  # short clips are padded


def test_recall_at_1():
    x = torch.eye(4)
    assert recall_at_1(x, x) == 1.0 and recall_at_1(x, x.roll(1, 0)) == 0.0


def test_tokens_need_a_fitted_quantizer():
    m = MelodyModule(sample_rate=SR, window_seconds=1.0, hop_seconds=0.75, n_fft=512, hop_length=320, dim=16,
                     depth=1, heads=2, embed_dim=8, num_quantizers=2, codebook_size=4).eval()  # fmt: skip
    with pytest.raises(QuantizerNotFittedError, match="make train-melody"):
        m.tokenize(torch.zeros(1, SR))


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    out = tmp_path_factory.mktemp("pairs") / "synth-melody"
    synth.main([str(out), "--num-clips", "6", "--seconds", "2", "--seed", "3", "--sample-rate", str(SR),
                "--val-fraction", "0.3", "--test-fraction", "0.01", "--melody-pairs"])  # fmt: skip
    return out


def test_train_melody_writes_a_tokenizing_handoff(pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = train("melody", str(tmp_path / "run"), "tiny", "cpu", [f"--data.data_dir={pairs}", "--trainer.logger=false"])
    m = load_model(tmp_path / "run", "melody")
    assert isinstance(m, MelodyModule) and path.is_file() and bool(m.quantizer_fitted)
    assert stream_spec(m) == {"levels": 2, "codebook_size": 8, "rate": pytest.approx(1 / 0.75)}
    groups = load_groups(pairs / "train", SR)
    wave = torch.stack([torch.from_numpy(g["original"] / 32767.0).float() for g in groups.values()][:2])
    ids = m.tokenize(wave)
    assert ids.shape == (2, 2, num_windows(2.0, 1.0, 0.75)) and ids.min() >= 0 and ids.max() < 8
    assert torch.equal(ids, m.tokenize(wave))
    assert m.embed_windows(wave).norm(dim=-1).allclose(torch.ones(1))


def test_chroma_similarity_tells_a_melody_from_others():
    """Six different sine melodies as their own outputs (at another rate): matched well above chance, small p;
    the outputs shuffled: no better than chance."""
    import numpy as np

    from musiclm.melody.evaluate import chroma_figures, similarity_matrix

    def line(pitches: list[int], rate: int) -> np.ndarray:
        t = np.arange(rate * 2) / rate
        p = np.array(pitches)[(t // 0.5).astype(int)]
        return np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * t).astype(np.float32)

    melodies = [[60, 62, 64, 65], [67, 65, 64, 62], [61, 66, 70, 73], [63, 63, 68, 68], [71, 69, 67, 66],
                [58, 62, 65, 70]]  # fmt: skip
    s = similarity_matrix([line(m, 8_000) for m in melodies], 8_000, [line(m, 24_000) for m in melodies], 24_000)
    fig = chroma_figures(s, permutations=500)
    assert fig["melody.chroma_similarity"] > 0.9 > fig["melody.chroma_similarity_chance"] + 0.4
    assert fig["melody.p"] < 0.01 and fig["melody.num_melodies"] == 6
    shuffled = chroma_figures(s[:, [1, 2, 3, 4, 5, 0]], permutations=500)
    assert shuffled["melody.p"] > 0.5


def test_pitch_class_tokens_spell_a_hummed_line_and_travel_as_a_handoff(tmp_path):
    """C4, E4, G4 then silence, sung at any octave in range, read as pitch classes 0, 4, 7 and no pitch."""
    from musiclm.artifacts import load_model
    from musiclm.melody.pitch import NO_PITCH, main

    sr, rate = 16_000, 12.5
    t = np.arange(sr) / sr
    notes = [np.sin(2 * np.pi * 440 * 2 ** ((m - 69) / 12) * t) for m in (60, 76, 67)]  # E in another octave
    wave = torch.from_numpy(np.concatenate([*notes, np.zeros(sr)]).astype(np.float32))[None]
    main(["--run", str(tmp_path / "run"), "--frame-rate", str(rate), "--sample-rate", str(sr)])
    m = load_model(tmp_path / "run", "melody")
    ids = m.tokenize(wave)
    assert ids.shape == (1, 1, round(4 * rate) + 1) and (m.num_levels, m.codebook_size, m.frame_rate) == (1, 13, rate)
    middle = [int(ids[0, 0, round((k + 0.5) * rate)]) for k in range(4)]  # the middle of each second
    assert middle == [0, 4, 7, NO_PITCH]
