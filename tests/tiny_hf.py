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


def save_clap(folder: Path, seed: int = 0) -> Path:
    """CLAP with its feature extractor (48 kHz, 2-s window) and a word-level tokenizer of the text tower's 100 ids."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import ClapConfig, ClapFeatureExtractor, ClapModel, PreTrainedTokenizerFast

    torch.manual_seed(seed)
    text = dict(vocab_size=100, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32,
                max_position_embeddings=40, projection_dim=8)  # fmt: skip
    audio = dict(window_size=4, spec_size=64, num_mel_bins=16, patch_size=4, patch_stride=[4, 4],
                 patch_embeds_hidden_size=8, hidden_size=16, depths=[1, 1], num_attention_heads=[2, 2],
                 projection_dim=8, enable_fusion=False)  # fmt: skip
    ClapModel(ClapConfig(text_config=text, audio_config=audio, projection_dim=8)).save_pretrained(folder)
    ClapFeatureExtractor(feature_size=16, sampling_rate=48_000, hop_length=480, max_length_s=2,
                         truncation="rand_trunc", padding="repeatpad").save_pretrained(folder)  # fmt: skip
    words = ["<pad>", "<s>", "</s>", "<unk>", "a", "tone", "sine", "square", "noise", "piano", "drums", "music"]
    words += [f"w{i}" for i in range(100 - len(words))]
    tok = Tokenizer(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(folder)  # fmt: skip
    return folder


def save_hubert(folder: Path, seed: int = 0) -> Path:
    from transformers import HubertConfig, HubertModel

    torch.manual_seed(seed)
    config = HubertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                          conv_dim=[8] * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2)  # fmt: skip
    HubertModel(config).save_pretrained(folder)
    return folder


def save_w2v_bert(folder: Path) -> Path:
    """w2v-BERT 2.0's architecture with its filterbank front end (SeamlessM4TFeatureExtractor, 16 kHz, 50 Hz)."""
    from transformers import SeamlessM4TFeatureExtractor, Wav2Vec2BertConfig, Wav2Vec2BertModel

    torch.manual_seed(0)
    config = Wav2Vec2BertConfig(hidden_size=16, num_hidden_layers=2, num_attention_heads=2, intermediate_size=32,
                                feature_projection_input_dim=160, conv_depthwise_kernel_size=3,
                                left_max_position_embeddings=8, right_max_position_embeddings=2)  # fmt: skip
    Wav2Vec2BertModel(config).save_pretrained(folder)
    SeamlessM4TFeatureExtractor().save_pretrained(folder)
    return folder
