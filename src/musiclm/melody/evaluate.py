"""Melody figures: `melody.embedding_recall@1` (the melody model retrieves a held-out melody across renderings) and
`melody.chroma_similarity` (the chain follows a hummed melody), each beside its chance level.

- Embedding recall: for every window position and every ordered pair of different renderings (instrument,
  arrangement, octave, solo, hummed, original), the share of held-out melodies whose query embedding's nearest
  gallery embedding, among all melodies' at that window, is its own. Chance is 1 / melodies.
- Chroma similarity (audiocraft's metric): frame-wise cosine between librosa chromagrams of the input melody and of
  the output, averaged over the frames where the input sounds; `_chance` pairs each input with the outputs made for
  the other melodies; `melody.p` is a permutation test (the share of random input-output pairings whose mean
  similarity reaches the true pairing's). The chroma comes from librosa, none from our models.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import librosa
import numpy as np
import torch

from musiclm.audio import save_audio
from musiclm.data.shards import iter_tar_samples, list_shards
from musiclm.melody.module import MelodyModule, recall_at_1
from musiclm.melody.pairs import Groups, as_float, load_groups
from musiclm.modes import eval_mode

CHROMA_FPS = 25  # chroma frames per second, the same for input and output whatever their rates
PITCH_NAMES = ["C", "C#", "D", "D#", "E", "F", "F#", "G", "G#", "A", "A#", "B"]  # librosa's chroma rows


@torch.no_grad()
def embedding_recall(module: MelodyModule, groups: Groups) -> dict[str, float]:
    """`melody.embedding_recall@1` over every ordered rendering pair, `...@1.hummed` (hummed query against the
    original mixes), the chance level and the number of melodies (those with every rendering that nine in ten
    melodies have: a rendering that came out silent leaves its melody out)."""
    counts: dict[str, int] = {}
    for g in groups.values():
        for v in g:
            counts[v] = counts.get(v, 0) + 1
    variants = sorted(v for v, c in counts.items() if c >= 0.9 * len(groups))
    ids = sorted(k for k, g in groups.items() if all(v in g for v in variants))
    n = min(len(w) for g in groups.values() for w in g.values())
    with eval_mode(module):
        emb = {v: module.embed_windows(as_float(np.stack([groups[k][v][:n] for k in ids])).to(module.device))
               for v in variants}  # fmt: skip
    windows = next(iter(emb.values())).shape[1]
    recalls = {(q, g): np.mean([float(recall_at_1(emb[q][:, w], emb[g][:, w])) for w in range(windows)])
               for q, g in itertools.permutations(variants, 2)}  # fmt: skip
    out = {"melody.embedding_recall@1": float(np.mean(list(recalls.values()))),
           "melody.embedding_recall@1_chance": 1.0 / len(ids),
           "melody.embedding_num_melodies": float(len(ids))}  # fmt: skip
    if ("hummed", "original") in recalls:
        out["melody.embedding_recall@1.hummed"] = float(recalls[("hummed", "original")])
    return out


def chroma(wave: np.ndarray, sample_rate: int) -> np.ndarray:
    """`[12, frames]` librosa STFT chroma at CHROMA_FPS, each frame unit-norm (silent frames stay 0)."""
    hop = int(round(sample_rate / CHROMA_FPS))
    c = librosa.feature.chroma_stft(y=np.asarray(wave, dtype=np.float32), sr=sample_rate, hop_length=hop,
                                    n_fft=max(2048, 4 * hop), norm=None)  # fmt: skip
    norm = np.linalg.norm(c, axis=0, keepdims=True)
    return np.where(norm > 1e-3 * norm.max(initial=0) + 1e-12, c / np.maximum(norm, 1e-12), 0.0)


def similarity_matrix(inputs: list[np.ndarray], in_rate: int, outputs: list[np.ndarray], out_rate: int) -> np.ndarray:
    """`S[i, j]`: mean frame-wise chroma cosine of input i and output j over the frames where input i sounds."""
    ci, co = [chroma(x, in_rate) for x in inputs], [chroma(y, out_rate) for y in outputs]
    s = np.zeros((len(ci), len(co)))
    for i, a in enumerate(ci):
        for j, b in enumerate(co):
            f = min(a.shape[1], b.shape[1])
            sounding = np.linalg.norm(a[:, :f], axis=0) > 0
            s[i, j] = float((a[:, :f] * b[:, :f]).sum(0)[sounding].mean()) if sounding.any() else 0.0
    return s


def chroma_figures(s: np.ndarray, permutations: int = 2000, seed: int = 0) -> dict[str, float]:
    """The matched mean (diagonal), the chance level (off-diagonal mean) and the permutation p-value."""
    n = len(s)
    matched = float(np.trace(s) / n)
    rng = np.random.default_rng(seed)
    null = np.array([s[np.arange(n), rng.permutation(n)].mean() for _ in range(permutations)])
    return {"melody.chroma_similarity": matched,
            "melody.chroma_similarity_chance": float(s[~np.eye(n, dtype=bool)].mean()),
            "melody.p": float((1 + (null >= matched).sum()) / (1 + permutations)),
            "melody.num_melodies": float(n)}  # fmt: skip


def original_captions(split_dir: str | Path) -> dict[str, str]:
    """Melody id -> the caption of its original rendering (the text a melody-conditioned generation is given)."""
    out = {}
    for shard in list_shards(split_dir):
        for s in iter_tar_samples(shard):
            meta = json.loads(s["json"])
            if meta.get("melody", {}).get("variant") == "original":
                out[meta["melody"]["id"]] = meta["caption"]
    return out


def melody_report(lm, melody_dir: Path, seconds: float, batch_size: int, cfg_scale: float, seed: int,
                  melody_cfg_scale: float | None = None, max_melodies: int = 32, plots: Path | None = None,
                  num_examples: int = 4) -> dict[str, float]:  # fmt: skip
    """Eval's `melody.*` keys for a `MusicLM` with a melody model, on the test split of a melody-pair corpus:
    the embedding recall, and where the semantic or coarse stage is melody-conditioned, the chroma similarity of
    generations from the first `max_melodies` hummed test melodies (each with its original's caption) against
    chance, the melody guided by `melody_cfg_scale` (None: by `cfg_scale`, with the text). With `plots`, the first
    `num_examples` hummed inputs and their outputs go to `plots/melody/` to be heard and seen (`save_examples`)."""
    if lm.melody is None or not list_shards(melody_dir / "test"):
        return {}
    groups = load_groups(melody_dir / "test", lm.melody.sample_rate)
    # a learned embedding's recall; pitch-class tokens (melody.pitch) have no embedding to retrieve with
    report = embedding_recall(lm.melody, groups) if isinstance(lm.melody, MelodyModule) else {}
    if not lm.melody_stages:
        return report
    captions = original_captions(melody_dir / "test")
    ids = [k for k in sorted(groups) if "hummed" in groups[k] and k in captions][:max_melodies]
    rate, n = lm.melody.sample_rate, int(seconds * lm.melody.sample_rate)
    hummed = [groups[k]["hummed"][:n].astype(np.float32) / 32767 for k in ids]
    outputs = []
    for i in range(0, len(ids), batch_size):
        melody = torch.from_numpy(np.stack(hummed[i : i + batch_size]))
        result = lm.generate([captions[k] for k in ids[i : i + batch_size]], seconds=seconds, cfg_scale=cfg_scale,
                             seed=seed + i, progress=False, melody=melody, melody_sample_rate=rate,
                             melody_cfg_scale=melody_cfg_scale)  # fmt: skip
        outputs += list(result.waves.numpy())
    guidance = {} if melody_cfg_scale is None else {"melody.melody_cfg_scale": float(melody_cfg_scale)}
    s = similarity_matrix(hummed, rate, outputs, lm.sample_rate)
    if plots is not None:
        captions_of = [captions[k] for k in ids]
        save_examples(plots / "melody", hummed[:num_examples], rate, outputs[:num_examples], lm.sample_rate,
                      captions_of[:num_examples], np.diag(s)[:num_examples])  # fmt: skip
    return report | chroma_figures(s) | guidance


def chroma_figure(panels: list[tuple[np.ndarray, int, str]]):
    """Chromagrams (`chroma`) of (wave, rate, title) panels one above the other on one time axis: what chroma
    similarity compares, drawn for eval's examples and notebook 04."""
    from musiclm.log import new_figure

    fig = new_figure((8, 1.8 * len(panels)))
    axes = fig.subplots(len(panels), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (wave, rate, title) in zip(axes, panels, strict=True):
        c = chroma(wave, rate)
        ax.imshow(c, origin="lower", aspect="auto", cmap="magma", extent=(0, c.shape[1] / CHROMA_FPS, -0.5, 11.5))
        ax.set_yticks(range(12), PITCH_NAMES, fontsize=6)
        ax.set_title(title, fontsize=9)
    axes[-1].set_xlabel("seconds")
    fig.tight_layout()
    return fig


def save_examples(out_dir: Path, inputs: list[np.ndarray], in_rate: int, outputs: list[np.ndarray], out_rate: int,
                  captions: list[str], similarity: np.ndarray) -> None:  # fmt: skip
    """`NNN_input.wav` (the hummed melody), `NNN_output.wav` (what the chain made of it and the caption) and
    `NNN.png`: both chromagrams (`chroma_figure`)."""
    for i, (x, y) in enumerate(zip(inputs, outputs, strict=True)):
        save_audio(out_dir / f"{i:03d}_input.wav", x, in_rate)
        save_audio(out_dir / f"{i:03d}_output.wav", y, out_rate)
        title = f"output for: {captions[i][:70]}  (chroma similarity {similarity[i]:.2f})"
        chroma_figure([(x, in_rate, "hummed input"), (y, out_rate, title)]).savefig(out_dir / f"{i:03d}.png", dpi=100)
