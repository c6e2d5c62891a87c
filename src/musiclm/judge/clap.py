"""The CLAP judge: in the user's CLAP (a local folder, `make eval CLAP_FROM=DIR`), does a clip sound more like its own
prompt than like the other test prompts?

A CLAP similarity is a number, not a verdict, and its scale differs between models, so the judge turns it into the
other judges' kind of figure: for clip i and prompt k, `wins[i, k]` is the share of the other prompts j whose
similarity to clip i is below clip i's to prompt k (ties count half; prompts with the same text are one prompt).
Its diagonal is the pairwise retrieval accuracy of each clip against its own prompt; chance is 0.5 by construction
(a clip's row averages exactly 0.5), and `base.agreement` reads the matrix as it reads a match matrix: rate, floor
with prompts shuffled (just under 0.5 when the rate is above it) and permutation p. `judge.clap.score` is the mean
cosine of each clip with its own prompt, the usual "CLAP score", reported beside it.

The judge shares no weights with the chain: it reads the folder itself, through the pretrained-MuLan adapter
(`pretrained.importer.mulan_adapter`, `ClapEncoder`), which resamples to CLAP's own rate with `audio.resample_batch`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import torch

from musiclm.audio import resample_batch
from musiclm.judge.base import agreement
from musiclm.judge.scoring import MIN_CEILING
from musiclm.pretrained.hub import CLAP_TYPES, PretrainedFolderError, read_config

log = logging.getLogger(__name__)
ATTRIBUTE = "clap"  # its eval keys: judge.clap.*
ROLE = "the CLAP judge (make eval CLAP_FROM=DIR, musiclm eval --clap-from DIR)"
# beyond config.json and weights, a CLAP folder needs its feature extractor and tokenizer (what save_pretrained of
# ClapModel plus ClapProcessor writes, as the released laion/clap-* folders hold)
NEEDED = {"preprocessor_config.json": "the feature extractor", "tokenizer_config.json": "the tokenizer"}


class TextAudioEncoder(Protocol):
    """What the judge needs of a CLAP: both towers into one space, L2-normalised. `sample_rate` is the rate
    `embed_audio` takes (it resamples to the model's own)."""

    sample_rate: int

    def embed_audio(self, wave: torch.Tensor) -> torch.Tensor: ...

    def embed_text(self, texts: list[str]) -> torch.Tensor: ...


def check_clap_folder(folder: str | Path) -> Path:
    """The folder, after checking it holds a CLAP with its feature extractor and tokenizer; else a one-line
    `PretrainedFolderError` naming what is missing and what to pass. Cheap (no transformers), so eval calls it first."""
    path = Path(folder).expanduser().resolve()
    read_config(path, CLAP_TYPES, ROLE)
    for name, what in NEEDED.items():
        if not (path / name).is_file():
            raise PretrainedFolderError(f"{path}: no {name} ({what}); {ROLE} needs a CLAP's whole save_pretrained "
                                        "folder: config, weights, feature extractor and tokenizer")  # fmt: skip
    return path


def same_weights(a: object, b: object) -> bool:
    """Whether two adapters hold one model's weights: a run whose MuLan is the judge's own CLAP (`MULAN_FROM` and
    `CLAP_FROM` the same model) would be judged by the chain's own encoder."""
    ma, mb = getattr(a, "model", None), getattr(b, "model", None)
    if not isinstance(ma, torch.nn.Module) or not isinstance(mb, torch.nn.Module):
        return False
    sa, sb = ma.state_dict(), mb.state_dict()
    return sa.keys() == sb.keys() and all(sa[k].shape == sb[k].shape and torch.equal(sa[k], sb[k]) for k in sa)


def wins(sim: torch.Tensor, own: list[int] | None = None) -> torch.Tensor:
    """sim [clips, prompts] -> [clips, prompts]: the share of the other prompts each (clip, prompt) pair beats, ties
    half. `own[k]` maps prompt k to its distinct text's column when sim's columns are the distinct texts."""
    n = sim.shape[1]
    if n < 2:
        raise ValueError("pairwise accuracy needs at least two distinct prompts")
    ranked = sim.sort(dim=1).values
    below = torch.searchsorted(ranked, sim.contiguous(), side="left").double()
    level = torch.searchsorted(ranked, sim.contiguous(), side="right").double() - below - 1  # ties besides itself
    out = (below + 0.5 * level) / (n - 1)
    return out if own is None else out[:, own]


def own_wins(sim: torch.Tensor, own: list[int]) -> torch.Tensor:
    """[clips]: `wins(sim, own)`'s diagonal, each clip against its own prompt only, in O(clips x prompts): every real
    test clip sets the ceiling, and the full matrix would be clips x prompts x 8 bytes more."""
    mine = sim[torch.arange(len(own)), own][:, None]
    below, level = (sim < mine).sum(1).double(), (sim == mine).sum(1).double() - 1
    return (below + 0.5 * level) / (sim.shape[1] - 1)


class ClapJudge:
    """Grades clips against their prompts with a CLAP (`TextAudioEncoder`), in batches of `batch_size` clips."""

    attribute = ATTRIBUTE

    def __init__(self, encoder: TextAudioEncoder, name: str = "CLAP", batch_size: int = 8, text_batch_size: int = 64):
        self.encoder, self.name, self.batch_size, self.text_batch_size = encoder, name, batch_size, text_batch_size

    @classmethod
    def from_folder(cls, folder: str | Path, sample_rate: int, batch_size: int = 8) -> ClapJudge:
        """The folder's CLAP taking audio at `sample_rate` (the chain's). The adapter's token quantizer is never
        used by the judge, so it is built at its smallest."""
        from musiclm.pretrained.importer import mulan_adapter

        path = check_clap_folder(folder)
        encoder = mulan_adapter(path, sample_rate, levels=1, codebook_size=2).eval()
        return cls(encoder, f"CLAP ({path.name})", batch_size)

    def similarity(self, waves: torch.Tensor, sample_rate: int, texts: list[str]) -> torch.Tensor:
        """[clips, texts] cosine of each clip (waves [N, T] at `sample_rate`) with each text."""
        rate = self.encoder.sample_rate
        with torch.inference_mode():
            text = torch.cat([self.encoder.embed_text(list(texts[i : i + self.text_batch_size])).float().cpu()
                              for i in range(0, len(texts), self.text_batch_size)])  # fmt: skip
            audio = [self.encoder.embed_audio(resample_batch(waves[i : i + self.batch_size].float(), sample_rate, rate))
                     for i in range(0, len(waves), self.batch_size)]  # fmt: skip
            return torch.cat(audio).float().cpu() @ text.T

    def graded(self, waves: torch.Tensor, sample_rate: int, texts: list[str]) -> tuple[torch.Tensor, list[int]]:
        """(cosine [N, distinct texts], `own[i]`: the column of clip i's prompt)."""
        column = {t: i for i, t in enumerate(sorted(set(texts)))}
        return self.similarity(waves, sample_rate, list(column)), [column[t] for t in texts]

    def score(
        self,
        sample_rate: int,
        real: tuple[torch.Tensor, list[str]],
        texts: list[str],
        generated: torch.Tensor,
        conditions: dict[str, torch.Tensor] | None = None,
        min_ceiling: float = MIN_CEILING,
    ) -> tuple[dict[str, float], list[dict[str, dict]]]:
        """(`judge.clap.*` metrics, per prompt {"clap": verdict} for the report), as `scoring.score` gives them.
        `real` is (waves, captions) of the real test clips: the ceiling (`real`) and `score_real`. Row i of
        `generated` and of each condition was made for `texts[i]`. Below `min_ceiling` only the ceiling is written."""
        if len(set(real[1])) < 2:
            log.warning("judge.%s: no keys written: fewer than 2 distinct real test captions", ATTRIBUTE)
            return {}, [{} for _ in texts]
        sim, own = self.graded(real[0], sample_rate, real[1])
        metrics = {f"judge.{ATTRIBUTE}.real": float(own_wins(sim, own).mean()),
                   f"judge.{ATTRIBUTE}.score_real": float(sim[torch.arange(len(own)), own].mean())}  # fmt: skip
        verdicts: list[dict[str, dict]] = [{} for _ in texts]
        if metrics[f"judge.{ATTRIBUTE}.real"] < min_ceiling:
            log.warning("judge.%s: ceiling %.2f < %.2f on real clips: no verdict on generations", ATTRIBUTE,
                        metrics[f"judge.{ATTRIBUTE}.real"], min_ceiling)  # fmt: skip
            return metrics, verdicts
        if len(set(texts)) < 2:
            log.warning("judge.%s: no verdict: %d distinct prompts (2 needed)", ATTRIBUTE, len(set(texts)))
            return metrics, verdicts
        sim, own = self.graded(generated, sample_rate, texts)
        won, cosine = wins(sim, own), sim[torch.arange(len(own)), own]
        stats = agreement(won)
        metrics |= {f"judge.{ATTRIBUTE}.generated": stats["rate"], f"judge.{ATTRIBUTE}.chance": stats["chance"],
                    f"judge.{ATTRIBUTE}.p": stats["p"], f"judge.{ATTRIBUTE}.num_prompts": float(len(texts)),
                    f"judge.{ATTRIBUTE}.score": float(cosine.mean())}  # fmt: skip
        for name, waves in (conditions or {}).items():
            metrics[f"judge.{ATTRIBUTE}.{name}"] = float(own_wins(*self.graded(waves, sample_rate, texts)).mean())
        others = len(set(texts)) - 1
        target = f"its prompt over the {others} others"
        for i, (w, c) in enumerate(zip(won.diagonal().tolist(), cosine.tolist(), strict=True)):
            verdict = f"cosine {c:.2f}; beats {w * others:g} of {others}"
            verdicts[i][ATTRIBUTE] = {"target": target, "verdict": verdict, "ok": w > 0.5}
        return metrics, verdicts
