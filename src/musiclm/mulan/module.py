"""MuLanModule: contrastive audio-text training, retrieval/zero-shot validation, and the embedding/token API that
every downstream stage uses (`embed_audio`, `embed_text`, `tokenize`, `tokens_from_text`,
`audio_features`)."""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.distributed as dist
import torch.nn.functional as F
from lightning.pytorch.loggers import TensorBoardLogger
from torch import nn

from musiclm.distributed import configure_sharding, world_size
from musiclm.log import log_matrix, log_skipped
from musiclm.modes import eval_mode
from musiclm.mulan.loss import ContrastiveLoss
from musiclm.mulan.metrics import retrieval_metrics, zero_shot_accuracy
from musiclm.mulan.quantizer import build_quantizer, fit_residual_vq, quantize
from musiclm.mulan.towers import MINILM, PretrainedTextTower, ResNetTower, ScratchTextTower, SpectrogramTransformer
from musiclm.optim import warmup_cosine

# Zero-shot prompt templates per synthetic-corpus attribute; `{}` is the class name (underscores read as spaces).
DEFAULT_PROMPTS: dict[str, list[str]] = {
    "instrument_family": ["a piece played on {}", "{} music", "a song featuring {}"],
    "tempo_bucket": ["a piece at a {} tempo", "{} music", "a {} song"],
    "mode": ["a piece in a {} key", "music in {}", "a song in a {} key"],
    "style": ["a {} piece", "{} music", "a {} song"],
}


class QuantizerNotFittedError(RuntimeError):
    """MuLan tokens were requested from a checkpoint whose residual VQ was never fitted."""


class MuLanModule(L.LightningModule):
    """Two towers projected into one L2-normalised `embed_dim` space, trained with a contrastive loss over the
    global batch. The MuLan-token residual VQ is part of the state but is fitted after training
    (`musiclm mulan fit-quantizer`, run by `make train-mulan`), never by the optimizer."""

    cli_links = [("data.sample_rate", "model.sample_rate"), ("data.clip_seconds", "model.window_seconds")]

    def __init__(
        self,
        sample_rate: int = 24_000,
        window_seconds: float = 10.0,
        window_hop_seconds: float = 1.0,
        embed_dim: int = 128,
        # audio tower
        audio_tower: str = "transformer",
        n_fft: int = 1024,
        hop_length: int = 240,
        n_mels: int = 128,
        patch_freq: int = 32,
        patch_time: int = 4,
        audio_dim: int = 512,
        audio_depth: int = 8,
        audio_heads: int = 8,
        resnet_channels: list[int] = [64, 128, 256, 512],  # noqa: B006 - a plain list keeps hparams YAML-friendly
        audio_pool: str = "mean",
        dropout: float = 0.1,
        attn_dropout: float | None = None,  # None: `dropout` (the paper config sets 0: see configs/mulan.yaml)
        # text tower
        text_tower: str = "pretrained",
        text_model: str = MINILM,
        text_train_layers: int = -1,
        text_dim: int = 512,
        text_depth: int = 6,
        text_heads: int = 8,
        text_max_length: int = 64,
        # loss and optimisation
        loss: str = "clip",
        init_temperature: float = 0.07,
        max_logit_scale: float = 100.0,
        lr: float = 1e-4,
        text_lr: float = 1e-5,
        weight_decay: float = 0.01,
        warmup_steps: int = 1000,
        min_lr_ratio: float = 0.1,
        # MuLan tokens
        num_quantizers: int = 12,
        codebook_size: int = 1024,
        kmeans_iters: int = 20,
        # validation
        zero_shot_prompts: dict[str, list[str]] | None = None,
        projector_points: int = 500,
        matrix_size: int = 32,
        # scale-out
        activation_checkpointing: bool = False,
    ):
        super().__init__()
        self.save_hyperparameters()
        if audio_tower == "transformer":
            self.audio_tower = SpectrogramTransformer(
                sample_rate,
                n_fft,
                hop_length,
                n_mels,
                patch_freq,
                patch_time,
                audio_dim,
                audio_depth,
                audio_heads,
                dropout,
                audio_pool,
                attn_dropout,
            )
        elif audio_tower == "resnet":
            self.audio_tower = ResNetTower(sample_rate, n_fft, hop_length, n_mels, tuple(resnet_channels), audio_pool)
        else:
            raise ValueError(f"audio_tower must be 'transformer' or 'resnet', not {audio_tower!r}")
        if text_tower == "pretrained":
            self.text_tower = PretrainedTextTower(text_model, text_train_layers, text_max_length)
        elif text_tower == "scratch":
            self.text_tower = ScratchTextTower(
                text_dim, text_depth, text_heads, dropout=dropout, attn_dropout=attn_dropout
            )
        else:
            raise ValueError(f"text_tower must be 'pretrained' or 'scratch', not {text_tower!r}")
        self.audio_proj = nn.Linear(self.audio_tower.out_dim, embed_dim)
        self.text_proj = nn.Linear(self.text_tower.out_dim, embed_dim)
        self.loss_fn = ContrastiveLoss(loss, init_temperature, max_logit_scale)
        self.quantizer = build_quantizer(embed_dim, num_quantizers, codebook_size, kmeans_iters)
        self.register_buffer("quantizer_fitted", torch.tensor(False))
        self._val: list[dict[str, Any]] = []

    # ---------------------------------------------------------------- public API used by downstream stages
    @property
    def sample_rate(self) -> int:
        return int(self.hparams.sample_rate)

    @property
    def embed_dim(self) -> int:
        return int(self.hparams.embed_dim)

    @property
    def num_levels(self) -> int:
        return int(self.hparams.num_quantizers)

    @property
    def codebook_size(self) -> int:
        return int(self.hparams.codebook_size)

    @property
    def window_samples(self) -> int:
        return int(round(self.hparams.window_seconds * self.sample_rate))

    @property
    def feature_frame_rate(self) -> float:
        """Frames per second of `audio_features`."""
        return self.audio_tower.frame_rate

    def windows(self, wave: torch.Tensor, hop: int) -> torch.Tensor:
        """[B, T] -> [B, n, window]: right-padded to one window when shorter; else windows every `hop` samples,
        the last one flush with the end so no audio is left out."""
        w = self.window_samples
        if wave.shape[-1] <= w:
            return F.pad(wave, (0, w - wave.shape[-1]))[:, None]
        starts = list(range(0, wave.shape[-1] - w + 1, hop))
        if starts[-1] + w < wave.shape[-1]:
            starts.append(wave.shape[-1] - w)
        return torch.stack([wave[:, s : s + w] for s in starts], dim=1)

    def embed_audio(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, T] (or [T]) at `sample_rate` -> [B, embed_dim], L2-normalised. Audio longer than the window is
        the mean over windows `window_hop_seconds` apart, renormalised (the paper's 10-s windows, 1-s hop)."""
        wave = wave[None] if wave.ndim == 1 else wave
        hop = max(1, int(round(self.hparams.window_hop_seconds * self.sample_rate)))
        win = self.windows(wave.to(self.device), hop)
        b, n, t = win.shape
        emb = F.normalize(self.audio_proj(self.audio_tower(win.reshape(b * n, t))).float(), dim=-1)
        return F.normalize(emb.reshape(b, n, -1).mean(1), dim=-1)

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        """list of B strings -> [B, embed_dim], L2-normalised."""
        return F.normalize(self.text_proj(self.text_tower(list(texts))).float(), dim=-1)

    def audio_features(self, wave: torch.Tensor, layer: int) -> torch.Tensor:
        """wave [B, T] -> [B, frames, C] from audio-tower block `layer` at `feature_frame_rate` (frames =
        floor(T / sample_rate * feature_frame_rate)). Long audio is cut into consecutive windows, as in training."""
        wave = wave[None] if wave.ndim == 1 else wave
        b, t = wave.shape
        w = self.window_samples
        n = max(1, math.ceil(t / w))
        win = F.pad(wave, (0, n * w - t)).reshape(b * n, w)
        feats = self.audio_tower.frames(win.to(self.device), layer)
        feats = feats.reshape(b, -1, feats.shape[-1])
        frames = int(t * self.feature_frame_rate / self.sample_rate)
        if feats.shape[1] < frames:  # the conv tower may lose a frame to rounding: repeat the last
            feats = torch.cat([feats, feats[:, -1:].expand(-1, frames - feats.shape[1], -1)], 1)
        return feats[:, :frames]

    def require_quantizer(self) -> None:
        if not bool(self.quantizer_fitted):
            raise QuantizerNotFittedError(
                "the MuLan token quantizer of this checkpoint was never fitted: run `make train-mulan` "
                "(or `musiclm mulan fit-quantizer --run RUN`)"
            )

    @torch.no_grad()
    def tokens_from_embeddings(self, emb: torch.Tensor) -> torch.Tensor:
        """[B, embed_dim] -> LongTensor [B, num_levels] through the one fitted residual VQ (frozen)."""
        self.require_quantizer()
        with eval_mode(self.quantizer):  # train mode would update the codebooks with EMA
            _, idx = quantize(self.quantizer, emb)
        return idx.long()

    @torch.no_grad()
    def embeddings_from_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """LongTensor [B, num_levels] -> quantized embeddings [B, embed_dim]."""
        self.require_quantizer()
        return self.quantizer.get_output_from_indices(tokens[:, None, :])[:, 0]

    @torch.no_grad()
    def tokenize(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, T] -> MuLan tokens [B, num_levels]: what the LMs train on (text tokens at inference)."""
        return self.tokens_from_embeddings(self.embed_audio(wave))

    @torch.no_grad()
    def tokens_from_text(self, texts: list[str]) -> torch.Tensor:
        return self.tokens_from_embeddings(self.embed_text(texts))

    def fit_quantizer(self, audio_embeddings: torch.Tensor, epochs: int = 20) -> float:
        """(Re)fit the residual VQ from scratch on audio embeddings [N, embed_dim]; returns the relative error."""
        hp = self.hparams
        self.quantizer = build_quantizer(self.embed_dim, hp.num_quantizers, hp.codebook_size, hp.kmeans_iters).to(
            self.device
        )
        err = fit_residual_vq(self.quantizer, audio_embeddings.to(self.device).float(), epochs=epochs)
        self.quantizer_fitted.fill_(True)
        return err

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        log_skipped(self, batch)
        audio, text = self.embed_audio(batch["audio"]), self.embed_text(batch["text"])
        loss = self.loss_fn(audio, text)  # negatives gathered from every process
        bs = len(batch["text"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log("train/temperature", self.loss_fn.temperature(), batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        audio, text = self.embed_audio(batch["audio"]), self.embed_text(batch["text"])
        loss = self.loss_fn(audio, text, gather=False)  # per-process batches may differ in size in validation
        self.log("val/loss", loss, prog_bar=True, batch_size=len(audio), sync_dist=True)
        self._val.append(
            {"audio": audio.cpu(), "text": text.cpu(), "caption": list(batch["text"]), "meta": list(batch["meta"])}
        )

    def on_validation_epoch_start(self) -> None:
        self._val = []

    def _gather_val(self) -> dict[str, Any]:
        """This epoch's validation embeddings and metadata from every process (each sample once)."""
        local = {
            "audio": torch.cat([v["audio"] for v in self._val]) if self._val else torch.zeros(0, self.embed_dim),
            "text": torch.cat([v["text"] for v in self._val]) if self._val else torch.zeros(0, self.embed_dim),
            "caption": [c for v in self._val for c in v["caption"]],
            "meta": [m for v in self._val for m in v["meta"]],
        }
        size = world_size()
        if size == 1:
            return local
        parts: list[Any] = [None] * size
        dist.all_gather_object(parts, local)
        return {
            "audio": torch.cat([p["audio"] for p in parts]),
            "text": torch.cat([p["text"] for p in parts]),
            "caption": [c for p in parts for c in p["caption"]],
            "meta": [m for p in parts for m in p["meta"]],
        }

    def on_validation_epoch_end(self) -> None:
        val = self._gather_val()
        self._val = []
        audio, text = val["audio"].float(), val["text"].float()
        if len(audio) < 2:
            return
        metrics = retrieval_metrics(text, audio)
        prompts = self.hparams.zero_shot_prompts or DEFAULT_PROMPTS
        for attr, templates in prompts.items():
            values = [(m.get("attributes") or {}).get(attr) for m in val["meta"]]
            if any(v is None for v in values) or len(set(map(str, values))) < 2:
                continue
            acc, chance = zero_shot_accuracy(
                audio, [str(v) for v in values], templates, lambda p: self.embed_text(p).cpu()
            )
            metrics[f"zero_shot/{attr}_acc"], metrics[f"zero_shot/{attr}_chance"] = acc, chance
        # every process holds the same gathered values, so no further reduction is needed
        self.log_dict({f"val/{k}": v for k, v in metrics.items()}, sync_dist=True)
        if self.trainer.is_global_zero and not self.trainer.sanity_checking:
            self._log_images(audio, text, val)

    def _log_images(self, audio: torch.Tensor, text: torch.Tensor, val: dict[str, Any]) -> None:
        m = min(self.hparams.matrix_size, len(audio))
        log_matrix(
            self.logger,
            "val/similarity_text_x_audio",
            text[:m] @ audio[:m].T,
            self.global_step,
            "audio clip",
            "caption",
        )
        if isinstance(self.logger, TensorBoardLogger):
            n = min(self.hparams.projector_points, len(audio))
            attrs = sorted({k for meta in val["meta"][:n] for k in (meta.get("attributes") or {})})
            rows = [
                [val["caption"][i][:80]] + [str((val["meta"][i].get("attributes") or {}).get(a, "")) for a in attrs]
                for i in range(n)
            ]
            self.logger.experiment.add_embedding(
                audio[:n],
                metadata=rows,
                metadata_header=["caption", *attrs],
                tag="val/audio_embedding",
                global_step=self.global_step,
            )

    # ---------------------------------------------------------------- optimisation
    def configure_model(self) -> None:
        """Under ModelParallelStrategy (FSDP2): `fully_shard` each x-transformers Attention/FeedForward block of the
        towers, then each tower, projection and the loss temperature as their own units; `activation_checkpointing`
        recomputes the blocks' activations in backward (any strategy). Runs before `configure_optimizers`."""
        configure_sharding(self, bool(self.hparams.get("activation_checkpointing", False)))

    def configure_optimizers(self):
        hp = self.hparams
        text_params = {id(p) for p in self.text_tower.parameters()} if hp.text_tower == "pretrained" else set()
        groups: dict[tuple[bool, bool], list[nn.Parameter]] = {}
        for p in self.parameters():
            if p.requires_grad:
                groups.setdefault((id(p) in text_params, p.ndim >= 2), []).append(p)
        optimizer = torch.optim.AdamW(
            [
                {
                    "params": ps,
                    "lr": hp.text_lr if is_text else hp.lr,
                    "weight_decay": hp.weight_decay if decay else 0.0,
                }
                for (is_text, decay), ps in groups.items()
            ],
            betas=(0.9, 0.98),
        )
        # linear warm-up, then cosine decay to `min_lr_ratio` at max_steps (constant when max_steps is unset)
        schedule = warmup_cosine(hp.warmup_steps, self.trainer.max_steps, hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
