"""Text -> music with a run's checkpoints: MuLan text tokens -> semantic -> coarse -> fine -> codec decoder.

    lm = MusicLM.from_run("runs/demo")
    out = lm.generate(["a calm piano ballad"], seconds=10, cfg_scale=3.0, seed=0)
    out.waves  # [B, T] at out.sample_rate
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm import tqdm

from musiclm.artifacts import atomic_write_bytes, load_model, run_dir
from musiclm.audio import resample_batch, save_audio
from musiclm.log import save_wave_spectrogram_png
from musiclm.paths import outputs_dir
from musiclm.stages import LM_STAGES

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

    def __init__(self, mulan, semantic, coarse, fine, codec, device: str | torch.device = "cpu"):
        self.mulan, self.semantic, self.coarse, self.fine, self.codec = (
            m.eval().to(device) for m in (mulan, semantic, coarse, fine, codec)
        )
        self.device = torch.device(device)

    @classmethod
    def from_run(cls, run: str | Path, device: str | torch.device = "cpu") -> MusicLM:
        """Load every stage's `model.ckpt`; a missing one raises MissingArtifactError naming its make target."""
        return cls(*(load_model(run, s, map_location=device) for s in STAGES), device=device)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @torch.inference_mode()
    def generate(
        self,
        texts: list[str],
        seconds: float = 10.0,
        cfg_scale: float = 3.0,
        temperature: dict[str, float] | float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int = 0,
        progress: bool = True,
        mulan_tokens: torch.Tensor | None = None,
    ) -> Generation:
        """Sample music for a batch of prompts. `temperature` is one value or per stage (paper: semantic 1.0,
        coarse 0.95, fine 0.4, which are the stages' own defaults when None); `top_k` None: each stage's own
        (`model.top_k`, none unless its config sets one). `mulan_tokens` [B, Q] condition on
        given MuLan tokens instead of the texts' (a real clip's audio tokens: the chain without MuLan's text side)."""
        temps = temperature if isinstance(temperature, dict) else dict.fromkeys(LM_STAGES, temperature)
        sampling = dict(top_k=top_k, top_p=top_p)
        timings: dict[str, float] = {}
        bar = tqdm(total=5, desc="generate", disable=not progress, unit="stage")

        def step(name: str, fn):
            bar.set_postfix_str(name)
            t0 = time.perf_counter()
            out = fn()
            timings[name] = round(time.perf_counter() - t0, 3)
            bar.update()
            return out

        given = mulan_tokens
        mulan = step("mulan", lambda: (self.mulan.tokens_from_text(texts) if given is None else given).to(self.device))
        n_sem = round(seconds * self.coarse.hparams.semantic_rate)
        semantic = step(
            "semantic",
            lambda: self.semantic.generate(
                mulan, n_sem, temperature=temps.get("semantic"), cfg_scale=cfg_scale, seed=seed, **sampling
            ),
        )
        coarse = step(
            "coarse",
            lambda: self.coarse.generate(
                mulan, semantic, temperature=temps.get("coarse"), cfg_scale=cfg_scale, seed=seed, **sampling
            ),
        )
        codes = step("fine", lambda: self.fine.generate(coarse, temperature=temps.get("fine"), seed=seed, **sampling))
        waves = step("codec", lambda: self.codec.decode(codes))
        bar.close()
        settings = dict(
            seconds=seconds, cfg_scale=cfg_scale, temperature=temperature, top_k=top_k, top_p=top_p, seed=seed
        )
        return Generation(
            texts, waves.float().cpu(), self.sample_rate,
            {"mulan": mulan, "semantic": semantic, "coarse": coarse, "acoustic": codes}, timings, settings,
        )  # fmt: skip

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
    p.add_argument("--seconds", type=float, default=10.0)
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
    a = p.parse_args(argv)
    texts = list(a.text)
    if a.prompts:
        texts += [line.strip() for line in a.prompts.read_text().splitlines() if line.strip()]
    if not texts:
        p.error("give --text or --prompts")
    lm = MusicLM.from_run(a.run, a.device)
    out = a.out or outputs_dir() / run_dir(a.run).name
    for start in range(0, len(texts), a.batch_size):
        batch = texts[start : start + a.batch_size]
        result = lm.generate(batch, a.seconds, a.cfg_scale, a.temperature, a.top_k, a.top_p, a.seed + start)
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
