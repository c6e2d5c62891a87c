"""Text -> music with a run's checkpoints: MuLan text tokens -> semantic -> coarse -> fine -> codec decoder.

    lm = MusicLM.from_run("runs/demo")
    out = lm.generate(["a calm piano ballad"], seconds=10, cfg_scale=3.0, seed=0)
    out.waves  # [B, T] at out.sample_rate
    out = lm.generate(["a jazz tune"], melody=hummed_wave, melody_sample_rate=44_100)  # a run with a melody model
    out = lm.generate(["a jazz tune"], melody=hummed_wave, cfg_scale=3.0, melody_cfg_scale=5.0)  # guided separately
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from musiclm.artifacts import atomic_write_bytes, load_model, model_path, run_dir
from musiclm.audio import AudioError, load_audio, resample_batch, save_audio
from musiclm.continuation import prompt_tokens
from musiclm.lm.melody_condition import check_melody_guidance
from musiclm.log import save_wave_spectrogram_png
from musiclm.paths import outputs_dir
from musiclm.stages import LM_STAGES
from musiclm.story import Segment, StoryError, check_story, label, read_story

STAGES = ("mulan", *LM_STAGES, "codec")  # what generation loads, in the order the constructor takes them


@dataclass
class Generation:
    texts: list[str]
    waves: torch.Tensor  # [B, T]
    sample_rate: int
    tokens: dict[str, torch.Tensor]
    timings: dict[str, float] = field(default_factory=dict)
    settings: dict = field(default_factory=dict)


class MusicLM:
    """The trained chain. Each stage is the same module a notebook gets from `load_model(run, stage)`."""

    def __init__(self, mulan, semantic, coarse, fine, codec, device: str | torch.device = "cpu", melody=None,
                 semantic_tokenizer=None, run: str | Path | None = None):  # fmt: skip
        self.mulan, self.semantic, self.coarse, self.fine, self.codec = (
            m.eval().to(device) for m in (mulan, semantic, coarse, fine, codec)
        )
        self.melody = None if melody is None else melody.eval().to(device)  # melody tokens for `generate(melody=)`
        self.device = torch.device(device)
        self.run = run
        self._semantic_tokenizer = semantic_tokenizer

    @classmethod
    def from_run(cls, run: str | Path, device: str | torch.device = "cpu") -> MusicLM:
        """Load every stage's `model.ckpt` (and the melody model's where the run has one); a missing one raises
        MissingArtifactError naming its make target."""
        melody = load_model(run, "melody", map_location=device) if model_path(run, "melody").is_file() else None
        return cls(*(load_model(run, s, map_location=device) for s in STAGES), device=device, melody=melody,
                   run=run)

    @torch.inference_mode()
    def melody_tokens(self, wave: torch.Tensor | np.ndarray, sample_rate: int, batch: int) -> torch.Tensor:
        """Melody tokens `[batch, Q, W]` of a melody wave (`[T]`, `[1, T]` or `[batch, T]`, any rate)."""
        if self.melody is None:
            raise ValueError("this run has no melody model: train one with `make train-melody RUN=...` "
                             "(README, Melody conditioning)")  # fmt: skip
        if not self.melody_stages:
            raise ValueError("this run's semantic and coarse stages were trained without melody tokens: retrain "
                             "one with MELODY_COND=coarse (README, Melody conditioning)")  # fmt: skip
        wave = torch.as_tensor(wave, dtype=torch.float32)
        wave = wave[None] if wave.ndim == 1 else wave
        wave = resample_batch(wave, sample_rate, self.melody.sample_rate).to(self.device)
        return self.melody.tokenize(wave).expand(batch, -1, -1) if len(wave) == 1 else self.melody.tokenize(wave)

    @property
    def melody_stages(self) -> tuple[str, ...]:
        """The LM stages trained with melody tokens (the ones `generate(melody=)` gives them to)."""
        return tuple(name for name in ("semantic", "coarse") if getattr(self, name).melody_conditioned)

    @property
    def semantic_tokenizer(self):
        """The run's semantic tokenizer, loaded on first use: only continuing given audio needs it."""
        if self._semantic_tokenizer is None:
            if self.run is None:
                raise ValueError("continuing audio needs the semantic tokenizer: pass semantic_tokenizer= or use "
                                 "MusicLM.from_run")  # fmt: skip
            self._semantic_tokenizer = load_model(self.run, "semantic_tokens", map_location=self.device)
        return self._semantic_tokenizer.eval().to(self.device)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @torch.inference_mode()
    def generate(
        self,
        texts: list[str] | None,
        seconds: float = 10.0,
        cfg_scale: float = 3.0,
        temperature: dict[str, float] | float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        progress: bool = True,
        mulan_tokens: torch.Tensor | None = None,
        melody: torch.Tensor | np.ndarray | None = None,
        melody_sample_rate: int | None = None,
        melody_cfg_scale: float | None = None,
        prompt_audio: torch.Tensor | None = None,
        prompt_sample_rate: int | None = None,
        story: list[Segment] | None = None,
    ) -> Generation:
        """Sample music for a batch of prompts. `temperature` is one value or per stage (paper: semantic 1.0,
        coarse 0.95, fine 0.4, which are the stages' own defaults when None); `top_k` None: each stage's own
        (`model.top_k`, none unless its config sets one). `mulan_tokens` [B, Q] condition on given MuLan tokens
        instead of the texts' (a real clip's audio tokens: the chain without MuLan's text side).
        `melody` (one wave `[T]` for every prompt or `[B, T]`, at `melody_sample_rate`, the codec's by default): a
        hummed, whistled or played melody the music follows (a run with a melody model and a melody-conditioned
        semantic or coarse stage, or both). `melody_cfg_scale` guides the melody separately from the text
        (`cfg_scale`) in each such stage: uncond + cfg_scale * (text - uncond) + melody_cfg_scale * (text & melody -
        text); None (default) guides both with `cfg_scale` at once, as a single condition.

        `prompt_audio` ([T] or [B, T] at `prompt_sample_rate`, default the codec's) is continued: its semantic and
        acoustic tokens start every stage's output, and `seconds` counts them. `story` `[(seconds, prompt), ...]`
        replaces `texts`: the MuLan condition switches at each segment's start (a prompt may be a list, one per
        row of the batch); every stage continues the previous segment's tokens with the next condition."""
        if story is not None and (texts or mulan_tokens is not None):
            raise ValueError("give texts (or mulan_tokens) or a story, not both")
        if story is None and not texts and mulan_tokens is None:
            raise ValueError("nothing to condition on: give texts, mulan_tokens or a story")
        check_melody_guidance(melody_cfg_scale, cfg_scale, melody is not None, bool(self.melody_stages))
        temps = temperature if isinstance(temperature, dict) else dict.fromkeys(LM_STAGES, temperature)
        sampling = dict(top_k=top_k, top_p=top_p)
        timings: dict[str, float] = {}
        bar = tqdm(total=5 + (prompt_audio is not None), desc="generate", disable=not progress, unit="stage")

        def step(name: str, fn):
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            out = fn()
            timings[name] = round(time.perf_counter() - t0, 3)
            bar.update()
            return out

        hp = self.coarse.hparams
        n_sem = round(seconds * hp.semantic_rate)
        prompt = {"semantic": None, "acoustic": None}
        if prompt_audio is not None:
            rate = prompt_sample_rate or self.sample_rate
            prompt = step("prompt", lambda: prompt_tokens(self.semantic_tokenizer, self.codec, prompt_audio, rate,
                                                          hp.semantic_rate, hp.acoustic_rate))  # fmt: skip
            if prompt["semantic"].shape[-1] >= n_sem:
                raise ValueError(f"prompt audio covers {prompt['semantic'].shape[-1] / hp.semantic_rate:g} s of the "
                                 f"{seconds:g} s asked for: ask for more seconds")  # fmt: skip
        given = mulan_tokens
        if story is None:
            mulan = step("mulan", lambda: (self.mulan.tokens_from_text(texts) if given is None else given))
            segments = [(n_sem, mulan.to(self.device))]
        else:
            story = check_story(story, seconds)
            segments = step("mulan", lambda: self.story_segments(story, n_sem))
            mulan = torch.stack([m for _, m in segments], dim=1)  # [B, segments, Q]
            texts = [label(story, row) for row in range(segments[0][1].shape[0])]
        rows = segments[0][1].shape[0]
        if prompt["semantic"] is not None and prompt["semantic"].shape[0] != rows:
            if prompt["semantic"].shape[0] != 1:
                raise ValueError(f"prompt audio has {prompt['semantic'].shape[0]} rows for {rows} prompts: give one "
                                 "recording, or one per prompt")  # fmt: skip
            prompt = {k: v.expand(rows, *v.shape[1:]) for k, v in prompt.items()}
        acoustic = prompt["acoustic"]
        ql = hp.coarse_levels
        melody_ids = None
        if melody is not None:  # not a `step`: the progress bar counts the stages every generation runs
            t0 = time.perf_counter()
            melody_ids = self.melody_tokens(melody, melody_sample_rate or self.sample_rate, rows)
            timings["melody"] = round(time.perf_counter() - t0, 3)
        given_melody = {"melody": melody_ids, "melody_cfg_scale": melody_cfg_scale} if melody_ids is not None else {}

        def with_melody(stage: str) -> dict:
            return given_melody if stage in self.melody_stages else {}

        def semantic_stage() -> torch.Tensor:
            out = prompt["semantic"]
            for i, (end, cond) in enumerate(segments):  # each segment continues the tokens made so far
                if out is None or out.shape[-1] < end:
                    out = self.semantic.generate(cond, end, temperature=temps.get("semantic"), cfg_scale=cfg_scale,
                                                 seed=seed + i, prompt=out, **sampling,
                                                 **with_melody("semantic"))  # fmt: skip
            return out

        def coarse_stage() -> torch.Tensor:
            out = None if acoustic is None else acoustic[:, :ql]
            for i, (end, cond) in enumerate(segments):
                if out is None or out.shape[-1] < round(end * self.coarse.ratio):
                    out = self.coarse.generate(cond, semantic[:, :end], temperature=temps.get("coarse"),
                                               cfg_scale=cfg_scale, seed=seed + i, prompt=out, **sampling,
                                               **with_melody("coarse"))  # fmt: skip
            return out

        semantic = step("semantic", semantic_stage)
        coarse = step("coarse", coarse_stage)
        fine_prompt = None if acoustic is None else acoustic[:, ql:]
        codes = step("fine", lambda: self.fine.generate(coarse, temperature=temps.get("fine"), seed=seed,
                                                        prompt=fine_prompt, **sampling))  # fmt: skip
        waves = step("codec", lambda: self.codec.decode(codes))
        bar.close()
        settings = dict(
            seconds=seconds, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
        ) | ({"melody": True, "melody_cfg_scale": melody_cfg_scale} if melody_ids is not None else {})
        if prompt["semantic"] is not None:
            settings["prompt_seconds"] = round(prompt["semantic"].shape[-1] / hp.semantic_rate, 3)
        if story is not None:
            settings["story"] = [[t, p] for t, p in story]
        tokens = {"mulan": mulan, "semantic": semantic, "coarse": coarse, "acoustic": codes}
        if melody_ids is not None:
            tokens["melody"] = melody_ids
        return Generation(texts, waves.float().cpu(), self.sample_rate, tokens, timings, settings)

    def story_segments(self, story: list[Segment], n_sem: int) -> list[tuple[int, torch.Tensor]]:
        """(end in semantic frames, MuLan tokens [B, Q]) per segment; a segment that rounds to no frame is an
        error. Ends fall on semantic frames, so the coarse stage switches on the same frame."""
        rate = self.coarse.hparams.semantic_rate
        starts = [round(t * rate) for t, _ in story]
        ends = [*starts[1:], n_sem]
        rows = {len(p) for _, p in story if not isinstance(p, str)}
        if len(rows) > 1:
            raise StoryError(f"per-row story prompts must all list the same number of rows, got {sorted(rows)}")
        b = rows.pop() if rows else 1
        out = []
        for (t, p), start, end in zip(story, starts, ends, strict=True):
            if end <= start:
                raise StoryError(f"the segment at {t:g} s is shorter than one semantic frame: move it")
            out.append((end, self.mulan.tokens_from_text([p] * b if isinstance(p, str) else list(p)).to(self.device)))
        return out

    @torch.inference_mode()
    def embed_audio(self, waves: torch.Tensor) -> torch.Tensor:
        """MuLan audio embeddings [B, D] (CPU) of waves [B, T] at the codec's rate."""
        waves = resample_batch(waves, self.sample_rate, self.mulan.sample_rate)
        return self.mulan.embed_audio(waves.to(self.device)).cpu()

    @torch.inference_mode()
    def similarity(self, texts: list[str], waves: torch.Tensor) -> torch.Tensor:
        """MuLan cosine between each prompt and the audio made for it."""
        return (self.mulan.embed_text(texts).cpu() * self.embed_audio(waves)).sum(-1)


def slug(text: str, i: int) -> str:
    keep = "".join(c if c.isalnum() else "_" for c in text.lower())[:48].strip("_")
    return f"{i:03d}_{keep}"


def write_outputs(lm: MusicLM, result: Generation, out_dir: Path, offset: int = 0) -> list[Path]:
    """Per prompt: a wav, a log-mel PNG, and a JSON with prompt, settings, seed, timings and MuLan similarity."""
    out_dir.mkdir(parents=True, exist_ok=True)
    sims = lm.similarity(result.texts, result.waves)
    paths = []
    for i, (text, wave) in enumerate(zip(result.texts, result.waves, strict=True)):
        name = slug(text, offset + i)
        wav = save_audio(out_dir / f"{name}.wav", wave, result.sample_rate)
        save_wave_spectrogram_png(out_dir / f"{name}.png", wave, result.sample_rate, text)
        info = {
            "prompt": text,
            "settings": result.settings,
            "seed": result.settings["seed"],
            "timings_s": result.timings,
            "seconds": round(wave.shape[-1] / result.sample_rate, 3),
            "sample_rate": result.sample_rate,
            "mulan_similarity": round(float(sims[i]), 4),
            "wav": wav.name,
        }
        atomic_write_bytes(out_dir / f"{name}.json", json.dumps(info, indent=1).encode())
        paths.append(wav)
    return paths


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(
        prog="musiclm generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--run", default="demo")
    p.add_argument("--text", action="append", default=[], help="a prompt (repeatable)")
    p.add_argument("--prompts", type=Path, help="a file with one prompt per line")
    p.add_argument("--story", type=Path, help="a file of `seconds<TAB>prompt` lines: the prompt switches at each time")
    p.add_argument("--prompt-audio", type=Path, help="an audio file (any format and rate) to continue")
    p.add_argument("--seconds", type=float, default=10.0, help="output length, a continued prompt included")
    p.add_argument("--out", type=Path, default=None, help="default: outputs/<RUN>")
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument(
        "--temperature", type=float, default=None, help="one temperature for every stage (default: paper's per stage)"
    )
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--melody", type=Path, default=None,
                   help="an audio file (any format soundfile reads, any rate) whose melody the music follows: a "
                   "run with a melody model and a melody-conditioned semantic or coarse stage (README, Melody "
                   "conditioning)")
    p.add_argument("--melody-cfg-scale", type=float, default=None,
                   help="guide the melody separately from the text (needs --melody): uncond + cfg * (text - uncond) "
                   "+ melody_cfg * (text & melody - text); default: --cfg-scale guides both as one condition")
    a = p.parse_args(argv)
    texts = list(a.text)
    if a.prompts:
        texts += [line.strip() for line in a.prompts.read_text().splitlines() if line.strip()]
    story = None
    if a.story:
        if texts:
            p.error("give --story or --text/--prompts, not both")
        try:
            story = check_story(read_story(a.story), a.seconds)
        except (OSError, StoryError) as e:
            p.error(str(e))
    elif not texts:
        p.error("give --text, --prompts or --story")
    if a.melody_cfg_scale is not None and a.melody is None:
        p.error("--melody-cfg-scale guides a melody: give --melody FILE too")
    lm = MusicLM.from_run(a.run, a.device)
    melody: dict = {}
    if a.melody is not None:
        rate = lm.melody.sample_rate if lm.melody is not None else lm.sample_rate
        try:
            melody = {"melody": load_audio(a.melody, rate), "melody_sample_rate": rate,
                      "melody_cfg_scale": a.melody_cfg_scale}
        except (AudioError, OSError) as e:
            p.error(f"--melody {a.melody}: {e}")
    wave = None
    if a.prompt_audio:
        try:
            wave = torch.from_numpy(load_audio(a.prompt_audio, lm.sample_rate))  # any format and rate, resampled
        except (OSError, AudioError) as e:
            p.error(f"--prompt-audio: {e}")
    out = a.out or outputs_dir() / run_dir(a.run).name
    for start in range(0, max(len(texts), 1), a.batch_size):
        batch = texts[start : start + a.batch_size]
        result = lm.generate(batch, a.seconds, a.cfg_scale, a.temperature, a.top_k, a.top_p, a.seed + start,
                             prompt_audio=wave, story=story, **melody)  # fmt: skip
        for path in write_outputs(lm, result, out, start):
            print(f"wrote {path} (+ .png, .json)")


def bench(profile: str = "demo", seconds: float = 4.0, batch: int = 4) -> dict:
    """`make bench` section `generate`: seconds of wall time per stage to make `seconds` of audio for `batch`
    prompts with the profile's LM stages and codec, freshly initialised (speed does not depend on training), from
    random MuLan tokens (the text tower costs milliseconds). `rtf` is generated audio seconds per wall second."""
    from musiclm.config import build_stage
    from musiclm.tokenize import profile_vocab

    vocab = profile_vocab(profile)
    semantic, coarse, fine, codec = (build_stage(s, profile, vocab).eval() for s in (*LM_STAGES, "codec"))
    mulan = torch.randint(0, semantic.hparams.mulan_codebook_size, (batch, semantic.hparams.mulan_levels))
    timings: dict[str, float] = {}
    with torch.inference_mode():
        t0 = time.perf_counter()
        sem = semantic.generate(mulan, round(seconds * coarse.hparams.semantic_rate), cfg_scale=3.0, seed=0)
        timings["semantic"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        crs = coarse.generate(mulan, sem, cfg_scale=3.0, seed=0)
        timings["coarse"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        codes = fine.generate(crs, seed=0)
        timings["fine"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        codec.decode(codes)
        timings["codec"] = time.perf_counter() - t0
    total = sum(timings.values())
    return {
        "profile": profile,
        "batch": batch,
        "audio_seconds": seconds,
        "stage_seconds": {k: round(v, 3) for k, v in timings.items()},
        "rtf": round(batch * seconds / total, 3),
    }
