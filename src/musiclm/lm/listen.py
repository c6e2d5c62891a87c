"""Listening while training: at each validation an LM stage generates a few short samples from its first val
batch's conditioning and decodes them with the run's codec, beside the same clips' real codes decoded. TensorBoard
shows both as audio and as one spectrogram image (`listen/<i>_generated`, `listen/<i>_real`, `listen_spectrogram/<i>`),
so "is it learning music or noise" is answered while the run trains, not after eval.

What a stage's samples go through is the stage's `listen_through` (the codec; the semantic stage also the run's
acoustic LMs, which the demo trains first), loaded once per fit from the run that made the token shards
(`data.run`, else the token manifest's `run`). Without those hand-offs listening is off, with one line that says
why. Cost: `listen_examples` clips of `listen_seconds`, on rank zero, a few seconds per validation at the demo size.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.utilities.rank_zero import rank_zero_info

from musiclm.artifacts import MissingArtifactError, load_model
from musiclm.log import log_wave_example

STREAMS = ("mulan", "semantic", "acoustic")  # what a stage's `listen_codes` reads from a batch
LISTEN_CFG = 3.0  # classifier-free guidance of the samples: `musiclm generate`'s default, so they sound like the chain


def token_run(datamodule: Any) -> str | None:
    """The run whose models made the token shards: the data module's `run`, else the one `make tokenize` recorded
    in the train manifest; None for data without one (hand-made loaders, toy shards)."""
    hparams = getattr(datamodule, "hparams", None) or {}
    if hparams.get("run"):
        return str(hparams["run"])
    data_dir = getattr(datamodule, "data_dir", None)
    manifest = Path(data_dir) / "train" / "manifest.json" if data_dir is not None else None
    if manifest is None or not manifest.is_file():
        return None
    return json.loads(manifest.read_text()).get("run")


def load_listeners(stage: L.LightningModule) -> dict[str, Any] | None:
    """The run's hand-offs a `TokenStage`'s `listen_through` names, on the stage's device; None (after a one-line
    notice) when the run or one of them is missing."""
    name = type(stage).__name__
    run = token_run(stage.trainer.datamodule)
    if run is None:
        rank_zero_info(f"{name}: listening samples off: the token shards record no run whose codec could decode them")
        return None
    try:
        return {s: load_model(run, s, map_location=stage.device) for s in stage.listen_through}
    except MissingArtifactError as e:
        rank_zero_info(f"{name}: listening samples off: {e}")
        return None


def keep_examples(batch: dict[str, Any], n: int) -> dict[str, torch.Tensor]:
    """The first `n` clips' token streams (a copy: the batch is freed after the step)."""
    return {k: batch[k][:n].clone() for k in STREAMS if k in batch}


@torch.inference_mode()
def log_listening(stage: L.LightningModule, batch: dict[str, torch.Tensor], models: dict[str, Any]) -> None:
    """Generate, decode and log the kept clips; `stage.listen_codes` says what is generated and what is real."""
    codec = models["codec"]
    generated, real = stage.listen_codes(batch, stage.hparams.listen_seconds, models)
    waves = codec.decode(torch.cat([generated, real]).to(codec.device)).float().cpu()
    n = generated.shape[0]
    titles = [f"generated ({stage.target}, step {stage.global_step})", "real codes, decoded"]
    for i in range(n):
        tags = [f"listen/{i}_generated", f"listen/{i}_real"]
        log_wave_example(
            stage.logger, tags, f"listen_spectrogram/{i}", [waves[i], waves[n + i]], titles, codec.sample_rate,
            stage.global_step,
        )
