"""`MelodyModule`: the melody embedding's LightningModule and its token producer (the `melody` stream).

Training: a batch is two renderings of the same 4-s window for each of B different melodies (`pairs.PairBatches`);
a symmetric InfoNCE loss (`ContrastiveLoss`, MuLan's, with its clamped temperature) pulls the two together and
pushes other melodies apart. Validation: recall@1 of each held-out melody's hummed window among the original mixes
of every held-out melody at the same window (`val/recall@1`, chance 1/B).

At the end of fitting, the residual VQ is fitted on the train split's window embeddings (the data module's
`embedding_waves`), so the hand-off `model.ckpt` tokenizes straight away: `tokenize(wave) -> [B, Q, W]`, one column
per 4-s window at a 3-s hop (`frame_rate` = 1 / hop).
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import Tensor

from musiclm.melody.model import MelodyEncoder
from musiclm.melody.windows import split_windows
from musiclm.modes import eval_mode
from musiclm.mulan.loss import ContrastiveLoss
from musiclm.mulan.quantizer import build_quantizer, fit_residual_vq, quantize
from musiclm.optim import warmup_cosine


class QuantizerNotFittedError(RuntimeError):
    """Tokens were asked of a melody model whose residual VQ was never fitted."""


def recall_at_1(queries: Tensor, gallery: Tensor) -> Tensor:
    """Share of rows i whose nearest gallery row (cosine) is row i."""
    return ((queries @ gallery.T).argmax(-1) == torch.arange(len(queries), device=queries.device)).float().mean()


class MelodyModule(L.LightningModule):
    cli_links = [("data.sample_rate", "model.sample_rate"), ("data.window_seconds", "model.window_seconds"),
                 ("data.hop_seconds", "model.hop_seconds")]

    def __init__(
        self,
        sample_rate: int = 16_000,
        window_seconds: float = 4.0,
        hop_seconds: float = 3.0,
        n_fft: int = 2048,
        hop_length: int = 640,
        midi_lo: int = 36,
        n_bins: int = 72,
        dim: int = 256,
        depth: int = 4,
        heads: int = 4,
        embed_dim: int = 128,
        dropout: float = 0.1,
        init_temperature: float = 0.07,
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 500,
        min_lr_ratio: float = 0.1,
        num_quantizers: int = 12,
        codebook_size: int = 1024,
        kmeans_iters: int = 20,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.encoder = MelodyEncoder(sample_rate, n_fft, hop_length, midi_lo, n_bins, dim, depth, heads, embed_dim,
                                     dropout)  # fmt: skip
        self.loss = ContrastiveLoss("clip", init_temperature)
        self.quantizer = build_quantizer(embed_dim, num_quantizers, codebook_size, kmeans_iters)
        self.register_buffer("quantizer_fitted", torch.tensor(False))
        self._val: list[Tensor] = []

    # ---------------------------------------------------------------- the token producer (contracts.TokenProducer)
    @property
    def sample_rate(self) -> int:
        return int(self.hparams.sample_rate)

    @property
    def frame_rate(self) -> float:
        """Melody tokens per second: one column per window, a window every `hop_seconds`."""
        return 1.0 / self.hparams.hop_seconds

    @property
    def num_levels(self) -> int:
        return int(self.hparams.num_quantizers)

    @property
    def codebook_size(self) -> int:
        return int(self.hparams.codebook_size)

    def embed_windows(self, wave: Tensor) -> Tensor:
        """wave `[B, T]` at `sample_rate` -> `[B, W, embed_dim]`, one embedding per window (`windows`)."""
        hp = self.hparams
        w = split_windows(wave.float(), self.sample_rate, hp.window_seconds, hp.hop_seconds)
        return self.encoder(w.flatten(0, 1)).view(w.shape[0], w.shape[1], -1)

    def tokenize(self, wave: Tensor) -> Tensor:
        """wave `[B, T]` -> melody tokens `[B, num_levels, W]`."""
        if not bool(self.quantizer_fitted):
            raise QuantizerNotFittedError(
                "the melody quantizer of this checkpoint was never fitted: retrain it with `make train-melody`"
            )
        e = self.embed_windows(wave)
        with eval_mode(self.quantizer):
            _, idx = quantize(self.quantizer, e.flatten(0, 1))
        return idx.view(e.shape[0], e.shape[1], -1).transpose(1, 2)

    def fit_quantizer(self, embeddings: Tensor, epochs: int = 20) -> float:
        """(Re)fit the residual VQ from scratch on window embeddings `[N, embed_dim]`; the relative error."""
        hp = self.hparams
        self.quantizer = build_quantizer(hp.embed_dim, hp.num_quantizers, hp.codebook_size, hp.kmeans_iters)
        err = fit_residual_vq(self.quantizer.to(embeddings.device), embeddings)
        self.quantizer_fitted.fill_(True)
        return err

    # ---------------------------------------------------------------- training
    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        a, b = self.encoder(batch["anchor"]), self.encoder(batch["positive"])
        loss = self.loss(a, b)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(a))
        self.log("train/temperature", self.loss.temperature(), batch_size=len(a))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._val.append(recall_at_1(self.encoder(batch["anchor"]), self.encoder(batch["positive"])))

    def on_validation_epoch_end(self) -> None:
        if self._val:
            self.log("val/recall@1", torch.stack(self._val).mean(), prog_bar=True)
        self._val = []

    @torch.no_grad()
    def on_fit_end(self) -> None:
        """Fit the melody tokens' residual VQ on the train split's window embeddings (the hand-off needs it)."""
        dm = self.trainer.datamodule
        with eval_mode(self):
            emb = torch.cat([self.embed_windows(w.to(self.device)).flatten(0, 1) for w in dm.embedding_waves()])
        err = self.fit_quantizer(emb.float())
        print(f"melody quantizer: {self.num_levels} x {self.codebook_size} codes fitted on {len(emb)} window "
              f"embeddings: relative quantization error {err:.4f}")  # fmt: skip

    def configure_optimizers(self):
        hp = self.hparams
        params = [p for n, p in self.named_parameters() if not n.startswith("quantizer.")]
        optimizer = torch.optim.AdamW(params, lr=hp.lr, weight_decay=hp.weight_decay)
        schedule = warmup_cosine(hp.warmup_steps, self.trainer.max_steps, hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
