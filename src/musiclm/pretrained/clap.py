"""A pretrained CLAP (transformers `ClapModel`) in MuLan's role (`contracts.ConditionEncoder`), frozen.

CLAP embeds audio and text into one space, which is all MuLan's role asks; the rest is MuLan's own machinery,
inherited: the residual VQ that turns embeddings into condition tokens (fitted after import by
`musiclm mulan fit-quantizer`, exactly as for a trained MuLan), `tokenize`/`tokens_from_text` through that one
table, and the validation loop whose retrieval and zero-shot figures eval reports. Only the towers differ, so
`MuLanModule.__init__` (which builds MuLan's towers) is not run: this class builds CLAP instead.

Audio arrives at the chain's rate (`sample_rate`) and is resampled to CLAP's 48 kHz here; clips longer than CLAP's
window (`max_length_s` of its feature extractor, 10 s for the released models) are the mean of windows
`window_hop_seconds` apart, as MuLan does. Shorter clips go to the feature extractor whole (it repeat-pads, as CLAP
was trained), so nothing random happens: a clip is never longer than the window it is cut to.

The model config, the feature extractor's settings and the tokenizer's files are hyperparameters and the weights are
the state_dict: the hand-off is self-contained.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from musiclm.audio import resample_batch
from musiclm.mulan.loss import ContrastiveLoss
from musiclm.mulan.module import MuLanModule
from musiclm.mulan.quantizer import build_quantizer
from musiclm.pretrained.hub import CLAP_TYPES, build_from_config


def tokenizer_from_files(files: dict[str, str]):
    """A tokenizer rebuilt from its saved files' text (what `save_pretrained` wrote), read from a temp folder."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory() as tmp:
        for name, text in files.items():
            (Path(tmp) / name).write_text(text)
        return AutoTokenizer.from_pretrained(tmp, local_files_only=True)


def tokenizer_files(tokenizer) -> dict[str, str]:
    """The tokenizer's `save_pretrained` files as text, so it travels inside a `weights_only` hand-off."""
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer.save_pretrained(tmp)
        return {p.name: p.read_text() for p in sorted(Path(tmp).iterdir()) if p.is_file()}


class ClapEncoder(MuLanModule):
    """CLAP as a `ConditionEncoder`: MuLan's quantizer, tokens and validation over CLAP's two towers."""

    cli_links: list = []

    def __init__(
        self,
        hf_config: dict,
        feature_config: dict,
        tokenizer_files: dict[str, str],
        sample_rate: int = 24_000,
        window_hop_seconds: float = 1.0,
        text_max_length: int = 77,
        num_quantizers: int = 12,
        codebook_size: int = 1024,
        kmeans_iters: int = 20,
        zero_shot_prompts: dict[str, list[str]] | None = None,
        projector_points: int = 500,
        matrix_size: int = 32,
        source: str | None = None,
    ):
        args = {k: v for k, v in locals().items() if k != "self"}  # before any other local exists
        L.LightningModule.__init__(self)  # MuLan's towers are replaced by CLAP's; see the module docstring
        if hf_config.get("model_type") not in CLAP_TYPES:
            raise ValueError(f"model_type {hf_config.get('model_type')!r}: the MuLan adapter takes {CLAP_TYPES}")
        self.save_hyperparameters(args)  # given explicitly: Lightning finds no arguments in an __init__ without super()
        from transformers import ClapFeatureExtractor

        self.model = build_from_config(hf_config)
        self.features = ClapFeatureExtractor.from_dict(feature_config)
        self.tokenizer = tokenizer_from_files(tokenizer_files)
        self.loss_fn = ContrastiveLoss("clip")  # the validation loss at MuLan's initial temperature, for reference
        self.quantizer = build_quantizer(self.embed_dim, num_quantizers, codebook_size, kmeans_iters)
        self.register_buffer("quantizer_fitted", torch.tensor(False))
        self._val: list[dict[str, Any]] = []

    @property
    def model_rate(self) -> int:
        return int(self.features.sampling_rate)

    @property
    def embed_dim(self) -> int:
        return int(self.hparams.hf_config["projection_dim"])

    @property
    def window_samples(self) -> int:
        """CLAP's window at the chain's rate."""
        return int(round(self.features.max_length_s * self.sample_rate))

    @torch.no_grad()
    def embed_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, T] at `sample_rate` -> [B, embed_dim], L2-normalised (mean over windows when longer)."""
        wave = wave[None] if wave.ndim == 1 else wave
        hop = max(1, int(round(self.hparams.window_hop_seconds * self.sample_rate)))
        win = wave[:, None] if wave.shape[-1] <= self.window_samples else self.windows(wave, hop)
        b, n, t = win.shape
        x = resample_batch(win.reshape(b * n, t).float().cpu(), self.sample_rate, self.model_rate).numpy()
        inputs = self.features(list(x), sampling_rate=self.model_rate, return_tensors="pt")
        emb = self.model.get_audio_features(**inputs.to(self.device)).pooler_output
        return F.normalize(F.normalize(emb.float(), dim=-1).reshape(b, n, -1).mean(1), dim=-1)

    @torch.no_grad()
    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """list of B strings -> [B, embed_dim], L2-normalised."""
        limit = min(self.hparams.text_max_length, self.hparams.hf_config["text_config"]["max_position_embeddings"] - 2)
        enc = self.tokenizer(list(texts), padding=True, truncation=True, max_length=limit, return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        emb = self.model.get_text_features(input_ids=ids, attention_mask=mask).pooler_output
        return F.normalize(emb.float(), dim=-1)

    def audio_features(self, wave: torch.Tensor, layer: int) -> torch.Tensor:
        raise NotImplementedError(
            "CLAP in MuLan's role gives no frame features for semantic tokens: set SEMANTIC_FROM=DIR "
            "(a HuBERT / w2v-BERT folder) or --model.extractor=logmel"
        )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        raise RuntimeError("CLAP is imported frozen (`musiclm import mulan`); only its token quantizer is fitted")

