"""The corpus: clip `index` of corpus `seed` is composed, captioned and rendered the same way, then sharded."""

from __future__ import annotations

import os
import resource
import time
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from musiclm.audio import crop, encode_audio, is_silent
from musiclm.data.synth.captions import write_caption
from musiclm.data.synth.composer import Piece, compose_piece
from musiclm.data.synth.kinds import draw_kind
from musiclm.data.synth.melody_pairs import MELODY_STREAM, VARIANTS, melody_notes, render_variant
from musiclm.data.synth.render import find_fluidsynth, find_soundfont, render_midi

PEAK = 10 ** (-1 / 20)  # -1 dBFS


@dataclass
class SynthClip:
    """One corpus item: its shard key, the audio and the caption/attribute metadata stored next to it."""

    key: str
    audio: np.ndarray  # float32 mono at meta["sample_rate"]
    meta: dict


def clip_key(seed: int, index: int) -> str:
    """Shard key of a clip; its split is a hash of this key, so the format must stay stable."""
    return f"synth-{seed}-{index:06d}"


def make_clip(
    index: int,
    seed: int,
    seconds: float,
    sample_rate: int = 24_000,
    soundfont: str | None = None,
    prompt_kinds_rate: float = 0.0,
    kind: str | None = None,
) -> SynthClip:
    """Compose, caption and render clip `index` of corpus `seed`; the same (seed, index) gives the same clip.

    With `prompt_kinds_rate` > 0 that share of clips carries a negation or temporal-order prompt (`kinds`), true in
    the audio; at 0 the clips are bit-identical to a corpus built before prompt kinds existed. `kind` forces one
    ("order": eval renders its own temporal-order clips); the piece may still be unable to carry it (`kinds`).

    A silent render (it should not happen, but a soundfont may lack a preset) is redone with the next attempt's draw.
    The audio is cut (or zero-padded) to exactly `seconds` and peak-normalised to -1 dBFS.
    """
    return _compose_clip(index, seed, seconds, sample_rate, soundfont, prompt_kinds_rate, kind)[0]


def _finish(audio: np.ndarray, n: int) -> np.ndarray:
    """Cut (or zero-pad) to n samples and peak-normalise to PEAK."""
    audio = crop(audio, n, mode="start")
    peak = float(np.abs(audio).max())
    return (audio * (PEAK / peak) if peak > 0 else audio).astype(np.float32)


def _compose_clip(
    index: int, seed: int, seconds: float, sample_rate: int, soundfont: str | None, prompt_kinds_rate: float,
    kind: str | None = None,
) -> tuple[SynthClip, Piece]:
    """`make_clip` and the piece it rendered (melody pairs re-arrange its parts)."""
    n = int(round(seconds * sample_rate))
    kind = kind or draw_kind(seed, index, prompt_kinds_rate)
    for attempt in range(4):
        rng = np.random.default_rng([seed, index, attempt])
        piece = compose_piece(rng, seconds, kind)
        audio = render_midi(piece.midi(), sample_rate, soundfont)
        if not is_silent(audio[:n]):
            break
    else:
        raise RuntimeError(f"clip {index} of seed {seed} rendered silent 4 times: check the soundfont")
    attributes = piece.attributes
    caption, tags = write_caption(attributes, rng)
    meta = {
        "caption": caption,
        "tags": tags,
        "sample_rate": sample_rate,
        "duration": round(n / sample_rate, 6),
        "source": "synth",
        "attributes": attributes,
    }
    return SynthClip(clip_key(seed, index), _finish(audio, n), meta), piece


def melody_pair_clips(
    index: int, seed: int, seconds: float, sample_rate: int = 24_000, soundfont: str | None = None
) -> list[SynthClip]:
    """Clip `index` (the default corpus's, its json plus `melody`) and the same melody in every other `VARIANTS`
    rendering, keyed `<key>-<variant>`; a variant that renders silent is left out."""
    n = int(round(seconds * sample_rate))
    clip, piece = _compose_clip(index, seed, seconds, sample_rate, soundfont, 0.0)
    notes = melody_notes(piece.tracks, piece.quarter_bpm, seconds)
    program = piece.attributes["instrument_program"]
    clip.meta["melody"] = {"id": clip.key, "variant": "original", "program": program, "notes": notes}
    out = [clip]
    rng = np.random.default_rng([seed, index, 0, MELODY_STREAM])
    for variant in VARIANTS[1:]:
        audio, meta = render_variant(piece, variant, rng, seconds, sample_rate, soundfont)
        if is_silent(audio[:n]):
            continue
        meta["melody"] = {"id": clip.key} | meta["melody"]
        meta |= {"sample_rate": sample_rate, "duration": round(n / sample_rate, 6)}
        out.append(SynthClip(f"{clip.key}-{variant}", _finish(audio, n), meta))
    return out


def clip_samples(
    index: int,
    seed: int,
    seconds: float,
    sample_rate: int,
    soundfont: str | None = None,
    prompt_kinds_rate: float = 0.0,
    melody_pairs: bool = False,
) -> list[dict]:
    """Shard writer callback: one audio-shard sample per clip index (with `melody_pairs`, one per variant)."""
    if melody_pairs:
        clips = melody_pair_clips(index, seed, seconds, sample_rate, soundfont)
    else:
        clips = [make_clip(index, seed, seconds, sample_rate, soundfont, prompt_kinds_rate)]
    return [{"__key__": c.key, "flac": encode_audio(c.audio, sample_rate), "json": c.meta} for c in clips]


def build(
    out_dir: str | os.PathLike,
    num_clips: int,
    seconds: float = 10.0,
    seed: int = 0,
    workers: int = 1,
    sample_rate: int = 24_000,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
    clips_per_shard: int = 64,
    prompt_kinds_rate: float = 0.0,
    melody_pairs: bool = False,
) -> dict[str, dict]:
    """Render the corpus into out_dir/{train,val,test}/shard-*.tar (resumable); returns the manifests. The manifests
    record `prompt_kinds_rate` and `melody_pairs` only when set, so a default corpus keeps its manifests too. A
    clip's melody variants share its split (held-out melodies stay held out)."""
    if melody_pairs and prompt_kinds_rate > 0:
        raise ValueError("--melody-pairs renders the default pieces: leave --prompt-kinds-rate at 0")
    from musiclm.data.shards import SPLITS, split_for_key, write_split_shards

    soundfont = find_soundfont()
    find_fluidsynth()
    make = partial(clip_samples, seed=seed, seconds=seconds, sample_rate=sample_rate, soundfont=soundfont,
                   prompt_kinds_rate=prompt_kinds_rate, melody_pairs=melody_pairs)  # fmt: skip
    extra = {
        "source": "synth",
        "seed": seed,
        "seconds": seconds,
        "sample_rate": sample_rate,
        "soundfont": Path(soundfont).name,
    } | ({"prompt_kinds_rate": prompt_kinds_rate} if prompt_kinds_rate > 0 else {}) | (
        {"melody_pairs": list(VARIANTS)} if melody_pairs else {}
    )
    manifests = {}
    for split in SPLITS:
        items = [i for i in range(num_clips) if split_for_key(clip_key(seed, i), val_fraction, test_fraction) == split]
        manifests[split] = write_split_shards(out_dir, split, items, make, clips_per_shard, workers, extra)
    return manifests


def _cpu_seconds() -> float:
    """CPU time of this process and its finished children (the fluidsynth runs)."""
    usage = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    return sum(u.ru_utime + u.ru_stime for u in usage)


def bench(num_clips: int = 8, seconds: float = 10.0) -> dict:
    """Single-process synthesis speed (compose + render + decode + normalise): x real time and clips/s by the wall
    clock, and x real time per CPU second (this process + fluidsynth), which a busy shared machine does not skew."""
    make_clip(10_000, 1, 1.0)  # warm the page cache with the soundfont
    t0, c0 = time.perf_counter(), _cpu_seconds()
    for i in range(num_clips):
        make_clip(i, 1, seconds)
    dt, dc = time.perf_counter() - t0, _cpu_seconds() - c0
    audio = num_clips * seconds
    return {"render_x_realtime": audio / dt, "clips_per_s": num_clips / dt, "render_x_realtime_per_cpu": audio / dc}
