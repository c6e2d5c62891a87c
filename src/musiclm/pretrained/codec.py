"""A pretrained EnCodec or DAC (transformers) in the codec's role (`contracts.AudioTokenizer`), frozen.

The adapter reads and writes audio at the chain's rate (`sample_rate`, the dataset's) and resamples to the model's
own rate inside (`audio.resample_batch`), so tokenize, generate and eval need not know which codec they drive.
Frames follow the model: `frame_rate = model rate / hop` (EnCodec 24 kHz: 75 Hz; DAC 16/24/44.1 kHz: 50/75/86.1 Hz).
A clip of T samples gives F = ceil(T * frame_rate / sample_rate) frames (the model reads the clip zero-padded to
F hops), and `decode` returns ceil(F * sample_rate / frame_rate) samples, so `decode(encode(x))[..., :T]` is x's
reconstruction; DAC's decoder returns 8 samples short and is padded back.

The model's config is a hyperparameter and its weights are the state_dict, so the hand-off is self-contained:
`artifacts.build_from_handoff` builds the model from the config and loads the weights, with no folder needed.
"""

from __future__ import annotations

import math

import lightning as L
import torch
import torch.nn.functional as F

from musiclm.audio import resample_batch
from musiclm.pretrained.hub import CODEC_TYPES, build_from_config


def hop_length(config: dict) -> int:
    ratios = config["upsampling_ratios"] if config["model_type"] == "encodec" else config["downsampling_ratios"]
    return math.prod(ratios)


def levels_for_bandwidth(model, kbps: float) -> int:
    """EnCodec's level count at a bitrate (1.5/3/6/12/24 kbps = 2/4/8/16/32 levels for encodec_24khz)."""
    if kbps not in model.config.target_bandwidths:
        raise ValueError(f"bandwidth {kbps} kbps: this EnCodec offers {model.config.target_bandwidths}")
    return int(model.quantizer.get_num_quantizers_for_bandwidth(kbps))


def max_levels(model) -> int:
    """Levels of the model's highest bitrate (EnCodec: its largest target bandwidth; DAC: n_codebooks)."""
    if model.config.model_type == "dac":
        return int(model.config.n_codebooks)
    return levels_for_bandwidth(model, max(model.config.target_bandwidths))


def check_supported(config: dict) -> None:
    """One line for a model of a supported type that this adapter still cannot drive."""
    if config["model_type"] == "encodec" and (config.get("audio_channels", 1) != 1 or config.get("chunk_length_s")):
        raise ValueError(
            "only mono, unchunked EnCodec (e.g. facebook/encodec_24khz) is supported; "
            "this one is stereo or chunked (encodec_48khz)"
        )


class HFCodec(L.LightningModule):
    """EnCodec / DAC from transformers as an `AudioTokenizer`. `num_quantizers` levels (None: the model's most);
    `sample_rate` the rate the chain reads and writes."""

    def __init__(self, hf_config: dict, num_quantizers: int | None = None, sample_rate: int = 24_000,
                 source: str | None = None):  # fmt: skip
        super().__init__()
        if hf_config.get("model_type") not in CODEC_TYPES:
            raise ValueError(f"model_type {hf_config.get('model_type')!r}: the codec adapter takes {CODEC_TYPES}")
        check_supported(hf_config)
        model = build_from_config(hf_config)
        top = max_levels(model)
        num_quantizers = num_quantizers or top
        if not 0 < num_quantizers <= top:
            raise ValueError(f"num_quantizers must be in 1..{top} for this model, not {num_quantizers}")
        self.save_hyperparameters()
        self.model = model

    # ---------------------------------------------------------------- the AudioTokenizer role (musiclm.contracts)
    @property
    def sample_rate(self) -> int:
        return int(self.hparams.sample_rate)

    @property
    def model_rate(self) -> int:
        return int(self.hparams.hf_config["sampling_rate"])

    @property
    def hop_length(self) -> int:
        return hop_length(self.hparams.hf_config)

    @property
    def frame_rate(self) -> float:
        return self.model_rate / self.hop_length

    @property
    def num_levels(self) -> int:
        return int(self.hparams.num_quantizers)

    @property
    def codebook_size(self) -> int:
        return int(self.hparams.hf_config["codebook_size"])

    def kbps(self, num_levels: int | None = None) -> float:
        return (num_levels or self.num_levels) * math.log2(self.codebook_size) * self.frame_rate / 1000

    def _bandwidth(self) -> float:
        """EnCodec's smallest target bandwidth (kbps) with at least `num_levels` levels (encode keeps the first:
        residual levels are the same at any bitrate)."""
        bws = sorted(self.model.config.target_bandwidths)
        return next(b for b in bws if levels_for_bandwidth(self.model, b) >= self.num_levels)

    @torch.no_grad()
    def encode(self, wave: torch.Tensor, num_levels: int | None = None) -> torch.Tensor:
        """wave [B, T] at `sample_rate` -> codes [B, num_levels, ceil(T * frame_rate / sample_rate)]."""
        wave = wave[None] if wave.ndim == 1 else wave
        frames = math.ceil(wave.shape[-1] * self.frame_rate / self.sample_rate)
        x = resample_batch(wave.float(), self.sample_rate, self.model_rate).to(self.device)
        x = F.pad(x, (0, frames * self.hop_length - x.shape[-1]))[:, None]  # exact frames; padding may be negative
        if self.hparams.hf_config["model_type"] == "encodec":
            codes = self.model.encode(x, bandwidth=self._bandwidth()).audio_codes[0]
        else:
            codes = self.model.encode(x, n_quantizers=self.num_levels).audio_codes
        return codes[:, : num_levels or self.num_levels].long()

    def tokenize(self, wave: torch.Tensor) -> torch.Tensor:
        return self.encode(wave)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, Q' <= num_levels, F] -> wave [B, ceil(F * sample_rate / frame_rate)] at `sample_rate`."""
        codes = codes.long().to(self.device)
        samples = codes.shape[-1] * self.hop_length
        if self.hparams.hf_config["model_type"] == "encodec":
            y = self.model.decode(codes[None], [None]).audio_values[:, 0]
        else:
            y = self.model.decode(audio_codes=codes).audio_values
        y = F.pad(y, (0, samples - y.shape[-1]))  # DAC returns 8 samples short
        y = resample_batch(y.float(), self.model_rate, self.sample_rate).to(self.device)
        out = math.ceil(codes.shape[-1] * self.sample_rate / self.frame_rate)
        return F.pad(y, (0, out - y.shape[-1]))

    def reconstruct(self, wave: torch.Tensor, num_levels: int | None = None) -> torch.Tensor:
        """wave [B, T] -> decode(encode(wave)) cut to T samples."""
        return self.decode(self.encode(wave, num_levels))[..., : wave.shape[-1]]
