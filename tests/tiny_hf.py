"""Tiny randomly initialised transformers models saved with `save_pretrained`: the pretrained folders the adapters
are tested with (no real weights exist on a test machine). Each function writes one folder and returns it."""

from __future__ import annotations

from pathlib import Path

import torch


def save_encodec(folder: Path) -> Path:
    from transformers import EncodecConfig, EncodecModel

    torch.manual_seed(0)
    config = EncodecConfig(hidden_size=16, num_filters=4, num_residual_layers=1, num_lstm_layers=1, codebook_size=64,
                           codebook_dim=16, target_bandwidths=[1.5, 3.0], upsampling_ratios=[8, 5, 4, 2])  # fmt: skip
    EncodecModel(config).save_pretrained(folder)
    return folder


def save_dac(folder: Path) -> Path:
    from transformers import DacConfig, DacModel

    torch.manual_seed(0)
    config = DacConfig(encoder_hidden_size=4, decoder_hidden_size=16, downsampling_ratios=[2, 4, 5, 8], n_codebooks=4,
                       codebook_size=64, codebook_dim=4, sampling_rate=24_000)  # fmt: skip
    DacModel(config).save_pretrained(folder)
    return folder
