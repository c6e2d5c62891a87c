"""`musiclm train judge`: the supervised tagger the instrument, drums, negation and order judges read.

Trained with cross-entropy on the synthetic train split's ground truth (never on generated audio), on random crops
with noise added at a random SNR half of the time, so codec hiss in a generated clip is not mistaken for a label.
Validation logs each head's accuracy on the val split; the judges' ceilings on the test split come from eval.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
import torch.nn.functional as F

from musiclm.audio import LogMel, resample_batch
from musiclm.judge.cnn import TaggerCNN
from musiclm.judge.labels import FAMILIES, IGNORE, targets
from musiclm.log import log_skipped
from musiclm.modes import eval_mode
from musiclm.optim import warmup_cosine


class TaggerModule(L.LightningModule):
    """Log-mel -> TaggerCNN -> lead family (softmax over `families`), drums (2-way) and families present
    (independent sigmoids). `families` is stored resolved, so a checkpoint decodes the same whatever the corpus."""

    cli_links = [("data.sample_rate", "model.sample_rate")]

    def __init__(
        self,
        sample_rate: int = 24_000,
        n_fft: int = 1024,
        hop_length: int = 480,
        n_mels: int = 64,
        channels: list[int] = [32, 64, 128, 128],  # noqa: B006 - a plain list keeps hparams YAML-friendly
        dropout: float = 0.2,
        families: list[str] | None = None,
        lr: float = 3e-3,
        weight_decay: float = 1e-4,
        warmup_steps: int = 50,
        min_lr_ratio: float = 0.05,
        noise_prob: float = 0.5,
        noise_snr_db: list[float] = [10.0, 40.0],  # noqa: B006
    ):
        super().__init__()
        self.save_hyperparameters()
        self.hparams.families = list(families or FAMILIES)
        self.families: list[str] = self.hparams.families
        self.mel = LogMel(sample_rate, n_fft, hop_length, n_mels)
        self.net = TaggerCNN(len(self.families), tuple(channels), dropout)

    @property
    def sample_rate(self) -> int:
        return int(self.hparams.sample_rate)

    def forward(self, waves: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.net(self.mel(waves))

    @torch.no_grad()
    def tag(self, waves: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
        """Probabilities for waves [B, T] at `sample_rate`: family [B, F], drums [B] (present), presence [B, F]."""
        waves = resample_batch(waves.float(), sample_rate, self.sample_rate).to(self.device)
        with eval_mode(self):
            out = self(waves)
        return {
            "family": out["family"].softmax(-1).cpu(),
            "drums": out["drums"].softmax(-1)[:, 1].cpu(),
            "presence": out["presence"].sigmoid().cpu(),
        }

    def _noisy(self, audio: torch.Tensor) -> torch.Tensor:
        """Add white noise at an SNR drawn from `noise_snr_db` to a `noise_prob` share of the batch."""
        lo, hi = self.hparams.noise_snr_db
        snr = torch.empty(len(audio), 1, device=audio.device).uniform_(lo, hi)
        rms = audio.pow(2).mean(-1, keepdim=True).sqrt()
        on = (torch.rand(len(audio), 1, device=audio.device) < self.hparams.noise_prob).float()
        return audio + on * rms * 10 ** (-snr / 20) * torch.randn_like(audio)

    def _losses(self, batch: dict[str, Any], out: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        y = {k: v.to(self.device) for k, v in targets(batch["meta"], self.families).items()}
        losses = {
            "family": F.cross_entropy(out["family"], y["family"], ignore_index=IGNORE),
            "drums": F.cross_entropy(out["drums"], y["drums"], ignore_index=IGNORE),
        }
        m = y["presence_mask"]
        losses["presence"] = F.binary_cross_entropy_with_logits(out["presence"][m], y["presence"][m])
        return {k: torch.nan_to_num(v) for k, v in losses.items()}  # a batch with every label ignored gives NaN

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        log_skipped(self, batch)
        out = self(self._noisy(batch["audio"]))
        losses = self._losses(batch, out)
        loss = sum(losses.values())
        bs = len(batch["audio"])
        self.log("train/loss", loss, prog_bar=True, batch_size=bs)
        self.log_dict({f"train/{k}_loss": v for k, v in losses.items()}, batch_size=bs)
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        out = self(batch["audio"])
        y = targets(batch["meta"], self.families)
        losses = self._losses(batch, out)
        bs = len(batch["audio"])
        self.log("val/loss", sum(losses.values()), prog_bar=True, batch_size=bs, sync_dist=True)
        for head in ("family", "drums"):
            keep = y[head] != IGNORE
            if keep.any():
                acc = (out[head].argmax(-1).cpu()[keep] == y[head][keep]).float().mean()
                self.log(f"val/{head}_acc", acc, batch_size=int(keep.sum()), sync_dist=True)
        m = y["presence_mask"]
        if m.any():
            acc = ((out["presence"][m].cpu() > 0) == y["presence"][m].bool()).float().mean()
            self.log("val/presence_acc", acc, batch_size=int(m.sum()), sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        optimizer = torch.optim.AdamW(self.parameters(), lr=hp.lr, weight_decay=hp.weight_decay)
        schedule = warmup_cosine(hp.warmup_steps, self.trainer.max_steps, hp.min_lr_ratio)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
