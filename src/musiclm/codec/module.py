"""CodecModule: SoundStream training (manual GAN optimisation) and the encode/decode API of the acoustic tokens."""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Literal

import lightning as L
import torch

from musiclm.codec.discriminators import Discriminators
from musiclm.codec.losses import MultiResolutionMelLoss, discriminator_hinge, feature_matching, generator_hinge
from musiclm.codec.model import SoundStream
from musiclm.compat import attached_trainer, reset_codebook_init, set_codebook_sync
from musiclm.distributed import world_size
from musiclm.log import log_skipped, log_wave_example
from musiclm.metrics.codec import input_dependence, mel_distance, si_sdr_db
from musiclm.modes import eval_mode


def codebook_stats(codes: torch.Tensor, codebook_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [B, Q, T] (-1 = dropped) -> (perplexity [Q], fraction of the codebook used [Q]) per level; levels
    dropped in this batch read 0."""
    perplexity, usage = [], []
    for level in codes.transpose(0, 1).reshape(codes.shape[1], -1):
        level = level[level >= 0]
        counts = torch.bincount(level, minlength=codebook_size).float()
        if counts.sum() == 0:
            perplexity.append(counts.new_zeros(())), usage.append(counts.new_zeros(()))
            continue
        p = counts / counts.sum()
        perplexity.append(torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum()))
        usage.append((counts > 0).float().mean())
    return torch.stack(perplexity), torch.stack(usage)


class CodecModule(L.LightningModule):
    """Residual-VQ neural audio codec. Downstream stages use `encode`, `decode` (optionally chunked) and the
    properties `sample_rate`, `frame_rate`, `hop_length`, `num_levels`, `codebook_size` (the AudioTokenizer role)."""

    cli_links = [("data.sample_rate", "model.sample_rate")]

    def __init__(
        self,
        sample_rate: int = 24_000,
        # generator ("conv": SoundStream's waveform convs;
        # "spectral": STFT encoder + iSTFT decoder, see codec/spectral.py)
        architecture: Literal["conv", "spectral"] = "conv",
        window_frames: int = 2,
        channels: int = 32,
        strides: list[int] = [3, 4, 5, 8],  # noqa: B006 - a plain list keeps hparams YAML-friendly
        latent_dim: int = 512,
        kernel: int = 7,
        num_quantizers: int = 12,
        codebook_size: int = 1024,
        quantizer_dropout: bool = True,
        kmeans_iters: int = 10,
        kmeans_init_vectors: int = 0,
        ema_decay: float = 0.99,
        dead_code_threshold: float = 0.5,
        codebook_dim: int | None = None,
        use_cosine_sim: bool = False,
        # discriminators
        stft_ffts: list[int] = [2048, 1024, 512],  # noqa: B006
        stft_channels: int = 32,
        periods: list[int] = [2, 3, 5, 7, 11],  # noqa: B006
        period_channels: int = 32,
        # losses
        mel_windows: list[int] = [32, 64, 128, 256, 512, 1024, 2048],  # noqa: B006
        mel_bands: list[int] = [5, 10, 20, 40, 80, 160, 320],  # noqa: B006
        mel_weight: float = 15.0,
        commitment_weight: float = 0.25,
        adversarial_weight: float = 1.0,
        feature_weight: float = 2.0,
        gan_start_step: int = 0,
        # optimisation
        lr: float = 1e-4,
        lr_d: float = 1e-4,
        betas: list[float] = [0.8, 0.99],  # noqa: B006
        lr_gamma: float = 0.999996,
        clip_g: float = 1000.0,
        clip_d: float = 10.0,
        # validation
        val_quantizers: list[int] = [1, 2, 4, 8, 12],  # noqa: B006
        val_examples: int = 2,
        # runtime
        cpu_threads: int | None = None,
    ):
        super().__init__()
        self.save_hyperparameters()
        self.automatic_optimization = False
        self.generator = SoundStream(
            channels, strides, latent_dim, kernel, num_quantizers, codebook_size, quantizer_dropout, kmeans_iters,
            ema_decay, dead_code_threshold, commitment_weight=1.0, codebook_dim=codebook_dim,
            use_cosine_sim=use_cosine_sim, architecture=architecture, window_frames=window_frames,
        )  # fmt: skip
        self.discriminators = Discriminators(stft_ffts, stft_channels, periods, period_channels)
        self.mel_loss = MultiResolutionMelLoss(sample_rate, mel_windows, mel_bands)
        self.register_buffer("generator_steps", torch.zeros((), dtype=torch.long))
        self.register_buffer("skipped_nonfinite", torch.zeros((), dtype=torch.long))
        # kmeans_init_vectors > 0: the first steps train encoder/decoder without the quantizer while collecting latents,
        # then every level is k-means initialised on that many vectors (not on one batch, which can hold fewer vectors
        # than the codebook has codes and gives a codebook of duplicates).
        self.register_buffer("kmeans_done", torch.tensor(kmeans_init_vectors <= 0))
        self._kmeans_buffer: list[torch.Tensor] = []

    # ---------------------------------------------------------------- public API used by downstream stages
    @property
    def sample_rate(self) -> int:
        return int(self.hparams.sample_rate)

    @property
    def hop_length(self) -> int:
        return self.generator.hop_length

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.hop_length

    @property
    def num_levels(self) -> int:
        return int(self.hparams.num_quantizers)

    @property
    def codebook_size(self) -> int:
        return int(self.hparams.codebook_size)

    def kbps(self, num_levels: int | None = None) -> float:
        return self.frame_rate * (num_levels or self.num_levels) * math.log2(self.codebook_size) / 1000

    def compile_inference(self) -> CodecModule:
        """`torch.compile` the encoder and decoder in place for `encode`/`decode` (state-dict keys unchanged), with
        kernel-1 convs as matmuls (`CausalConv1d.pointwise_matmul`). Off by default: on a CPU the first call
        compiles for 1-2 minutes, then encode+decode of the paper codec runs 1.2x faster in fp32 and 1.9x under bf16
        autocast (docs/measurements.md), which pays off when tokenizing a corpus, not for one clip."""
        from musiclm.codec.layers import CausalConv1d

        for m in self.generator.modules():
            if isinstance(m, CausalConv1d):
                m.pointwise_matmul = True
        self.generator.encoder.compile()
        self.generator.decoder.compile()
        return self

    @torch.no_grad()
    def encode(
        self, wave: torch.Tensor, num_levels: int | None = None, chunk_frames: int | None = None
    ) -> torch.Tensor:
        """wave [B, T] or [B, 1, T] at `sample_rate` -> LongTensor codes [B, Q, ceil(T / hop_length)] using the first
        `num_levels` levels (all by default). Always runs the quantizer in eval mode (no dropped levels, no
        codebook updates). With `chunk_frames`, encodes chunk by chunk with enough left context to match the
        full-signal codes while holding only one chunk's activations."""
        wave = wave.reshape(wave.shape[0], 1, wave.shape[-1]).to(self.device)
        with eval_mode(self.generator):
            if chunk_frames is None:
                codes = self.generator.encode(wave)
            else:
                codes = torch.cat(list(self.iter_encode(wave, chunk_frames)), dim=-1)
        return codes[:, : num_levels or self.num_levels].long()

    def tokenize(self, wave: torch.Tensor) -> torch.Tensor:
        """The acoustic tokens `musiclm tokenize` writes: every level, [B, Q, F]."""
        return self.encode(wave)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor, chunk_frames: int | None = None) -> torch.Tensor:
        """codes [B, Q', frames] with Q' <= num_levels (fewer levels = lower bitrate) -> wave [B, frames * hop]."""
        if codes.shape[1] > self.num_levels:
            raise ValueError(f"codes have {codes.shape[1]} levels, the codec has {self.num_levels}")
        codes = codes.to(self.device)
        with eval_mode(self.generator):
            if chunk_frames is None:
                return self.generator.decode(codes)[:, 0]
            return torch.cat(list(self.iter_decode(codes, chunk_frames)), dim=-1)

    def iter_encode(self, wave: torch.Tensor, chunk_frames: int) -> Iterator[torch.Tensor]:
        """Streaming encoder: wave [B, 1, T] -> successive code chunks [B, Q, <= chunk_frames] (eval mode)."""
        hop = self.hop_length
        wave = self.generator.pad(wave)
        frames, context = wave.shape[-1] // hop, math.ceil(self.generator.encoder.history_samples() / hop)
        for f0 in range(0, frames, chunk_frames):
            f1, c0 = min(f0 + chunk_frames, frames), max(0, f0 - context)
            yield self.generator.encode(wave[..., c0 * hop : f1 * hop])[..., f0 - c0 :]

    def iter_decode(self, codes: torch.Tensor, chunk_frames: int) -> Iterator[torch.Tensor]:
        """Streaming decoder: codes [B, Q', frames] -> successive wave chunks [B, <= chunk_frames * hop] (eval mode);
        a chunk is ready once the decoder's lookahead frames after it have arrived."""
        dec, hop, frames = self.generator.decoder, self.hop_length, codes.shape[-1]
        context, lookahead = dec.history_frames(), dec.lookahead_frames()
        for f0 in range(0, frames, chunk_frames):
            f1, c0 = min(f0 + chunk_frames, frames), max(0, f0 - context)
            c1 = min(frames, f1 + lookahead)
            yield self.generator.decode(codes[..., c0:c1], c0)[:, 0, (f0 - c0) * hop : (f1 - c0) * hop]

    def reconstruct(self, wave: torch.Tensor, num_levels: int | None = None) -> torch.Tensor:
        """wave [B, T] -> decode(encode(wave)) cut to T samples."""
        return self.decode(self.encode(wave, num_levels))[..., : wave.shape[-1]]

    # ---------------------------------------------------------------- training
    def setup(self, stage: str) -> None:
        # The process group exists by now (not when __init__ ran): decide codebook syncing here.
        set_codebook_sync(self.generator.quantizer, world_size() > 1)
        # Intra-op threads on CPU: this model's ops are small (8-32 channels), so on a shared machine every parallel
        # region waits on a descheduled thread; 1 thread (plus the loader worker) was ~10x faster than 2 at load ~5.
        trainer = attached_trainer(self)
        if self.hparams.cpu_threads and trainer is not None and trainer.strategy.root_device.type == "cpu":
            torch.set_num_threads(self.hparams.cpu_threads)

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        # checkpoints from before kmeans_init_vectors existed were initialised by their first batch
        checkpoint["state_dict"].setdefault("kmeans_done", torch.tensor(True))

    def configure_optimizers(self):
        hp = self.hparams
        opt_g = torch.optim.AdamW(self.generator.parameters(), lr=hp.lr, betas=tuple(hp.betas))
        opt_d = torch.optim.AdamW(self.discriminators.parameters(), lr=hp.lr_d, betas=tuple(hp.betas))
        sch = [torch.optim.lr_scheduler.ExponentialLR(o, hp.lr_gamma) for o in (opt_g, opt_d)]
        return [opt_g, opt_d], sch

    def _crop(self, audio: torch.Tensor) -> torch.Tensor:
        t = audio.shape[-1] - audio.shape[-1] % self.hop_length
        return audio[..., :t]

    def _update(self, opt, sched, loss: torch.Tensor, params, clip: float) -> torch.Tensor | None:
        """One optimiser step, or none when the loss or the gradient norm is not finite (counted)."""
        if not torch.isfinite(loss):
            self.skipped_nonfinite += 1
            return None
        opt.zero_grad(set_to_none=True)
        self.manual_backward(loss)
        norm = torch.nn.utils.clip_grad_norm_(list(params), clip)
        if not torch.isfinite(norm):
            opt.zero_grad(set_to_none=True)
            self.skipped_nonfinite += 1
            return None
        opt.step()
        sched.step()
        return norm

    def training_step(self, batch: dict, batch_idx: int) -> None:
        log_skipped(self, batch)
        hp = self.hparams
        opt_g, opt_d = self.optimizers()
        sch_g, sch_d = self.lr_schedulers()
        x = self._crop(batch["audio"])
        if int(self.generator_steps) == 0:
            self.normalize_latents(x[:, None])
        if bool(self.kmeans_done):
            y, codes, commit = self.generator(x[:, None])
        else:
            y, codes, commit = self._collect_for_kmeans(x[:, None])
        y = y[:, 0]
        logs: dict[str, torch.Tensor] = {}
        gan = int(self.generator_steps) >= hp.gan_start_step
        if gan:
            # Discriminator step on the generator output computed once, detached (no second generator pass).
            real = self.discriminators(x)
            fake = self.discriminators(y.detach())
            loss_d = discriminator_hinge([r for r, _ in real], [f for f, _ in fake])
            norm_d = self._update(opt_d, sch_d, loss_d, self.discriminators.parameters(), hp.clip_d)
            logs["train/loss_d"] = loss_d.detach()
            if norm_d is not None:
                logs["train/grad_norm_d"] = norm_d
        with self.toggled_optimizer(opt_g):  # no gradients into D's weights from the generator step
            mel = self.mel_loss(x, y)
            loss_g = hp.mel_weight * mel + hp.commitment_weight * commit
            if gan:
                fake = self.discriminators(y)
                adv = generator_hinge([f for f, _ in fake])
                feat = feature_matching([rf for _, rf in real], [ff for _, ff in fake])
                loss_g = loss_g + hp.adversarial_weight * adv + hp.feature_weight * feat
                logs.update({"train/adversarial": adv.detach(), "train/feature_matching": feat.detach()})
            norm_g = self._update(opt_g, sch_g, loss_g, self.generator.parameters(), hp.clip_g)
        self.generator_steps += 1
        logs.update({"train/loss_g": loss_g.detach(), "train/mel": mel.detach(), "train/commitment": commit.detach()})
        if norm_g is not None:
            logs["train/grad_norm_g"] = norm_g
        logs["train/skipped_nonfinite"] = self.skipped_nonfinite.float()
        perplexity, usage = codebook_stats(codes, self.codebook_size)
        for q in range(self.num_levels):
            logs[f"codebook/perplexity_q{q + 1}"] = perplexity[q]
            logs[f"codebook/usage_q{q + 1}"] = usage[q]
        self.log_dict(logs, prog_bar=False)
        self.log("train/mel_loss", mel.detach(), prog_bar=True)

    def normalize_latents(self, wave: torch.Tensor) -> None:
        """Data-dependent init of the encoder on the first training batch (see each encoder's `init_from_data`):
        latents at unit std, so the decoder cannot ignore them. Statistics are averaged over processes."""
        trainer = attached_trainer(self)

        def reduce(t: torch.Tensor) -> torch.Tensor:
            return trainer.strategy.reduce(t, reduce_op="mean") if trainer is not None else t

        self.generator.encoder.init_from_data(self.generator.pad(wave), reduce)

    def _collect_for_kmeans(self, wave: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Generator pass with the quantizer bypassed; latents are kept until `kmeans_init_vectors` are collected,
        then the codebooks are k-means initialised on the most recent ones."""
        g, n = self.generator, self.hparams.kmeans_init_vectors
        z = g.encoder(g.pad(wave))
        self._kmeans_buffer.append(z.detach().transpose(1, 2).reshape(-1, z.shape[1]))
        if sum(len(b) for b in self._kmeans_buffer) >= n:
            self.init_codebooks(torch.cat(self._kmeans_buffer)[-n:])
            self._kmeans_buffer.clear()
        codes = torch.full((z.shape[0], self.num_levels, z.shape[-1]), -1, dtype=torch.long, device=z.device)
        return g.decoder(z), codes, z.new_zeros(())

    @torch.no_grad()
    def init_codebooks(self, latents: torch.Tensor) -> None:
        """K-means initialise every level of the residual VQ on `latents` [N, latent_dim] (level l on the residuals
        left by levels < l), then use the quantizer from the next step on."""
        rvq = self.generator.quantizer
        reset_codebook_init(rvq)
        dropout, was_training = rvq.quantize_dropout, rvq.training
        rvq.quantize_dropout = False
        try:
            rvq.train()(latents[None])
        finally:
            rvq.quantize_dropout = dropout
            rvq.train(was_training)
        self.kmeans_done.fill_(True)

    # ---------------------------------------------------------------- validation
    def val_levels(self) -> list[int]:
        levels = sorted({q for q in self.hparams.val_quantizers if q <= self.num_levels} | {self.num_levels})
        return levels

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        x = self._crop(batch["audio"])
        codes = self.encode(x)
        for q in self.val_levels():
            y = self.decode(codes[:, :q])
            suffix = "" if q == self.num_levels else f"@q{q}"
            self.log(
                f"val/mel_distance{suffix}", mel_distance(x, y, self.sample_rate), sync_dist=True, batch_size=len(x)
            )
            self.log(f"val/si_sdr_db{suffix}", si_sdr_db(x, y), sync_dist=True, batch_size=len(x))
        if len(x) > 1:
            dep = input_dependence(x, y, self.sample_rate)
            self.log("val/input_dependence", dep, sync_dist=True, batch_size=len(x))
        if batch_idx == 0 and self.trainer.is_global_zero and self.logger is not None:
            self._log_examples(x[: self.hparams.val_examples], y[: self.hparams.val_examples])

    def _log_examples(self, x: torch.Tensor, y: torch.Tensor) -> None:
        step, sr = int(self.generator_steps), self.sample_rate
        titles = ["original", f"reconstructed ({self.kbps():.1f} kbps)"]
        for i, (a, b) in enumerate(zip(x, y, strict=True)):
            tags = [f"val_audio/{i}_original", f"val_audio/{i}_reconstructed"]
            log_wave_example(self.logger, tags, f"val_spectrogram/{i}", [a, b], titles, sr, step)
