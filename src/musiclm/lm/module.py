"""The three autoregressive stages of MusicLM as LightningModules trained on token batches
(`TokenDataModule`: `mulan` [B, Qm], `semantic` [B, Ts], `acoustic` [B, Q, Ta] at their own frame rates):

- `SemanticStage`  p(semantic | MuLan)
- `CoarseStage`    p(coarse codec levels | MuLan, semantic)
- `FineStage`      p(fine codec levels | coarse), over shorter windows

Each sequence is a conditioning prefix followed by the target steps of a `Pattern`; only targets carry a loss.
Padded frames (a batch's optional `semantic_mask` / `acoustic_mask`, `[B, T]`, True = real) carry none either.
MuLan tokens are replaced by a learned null condition with probability `cond_dropout` so that classifier-free
guidance has an unconditional branch to extrapolate from.

Vocabulary sizes, level counts and frame rates are the upstream models' (None here): `musiclm train` fills them
from the token manifest `make tokenize` writes. Windows are given in seconds and turned into frames at each
stream's rate, so any pair of rates works (a 75-Hz EnCodec under 25-Hz semantic tokens, DAC's 86.1 Hz).
"""

from __future__ import annotations

import math
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch import Tensor

from musiclm.distributed import configure_sharding
from musiclm.lm.backbones import build_backbone
from musiclm.lm.hparams import require, seconds_to_frames
from musiclm.lm.listen import LISTEN_CFG, keep_examples, load_listeners, log_listening
from musiclm.lm.melody_condition import MelodyConditioned
from musiclm.lm.patterns import EMPTY, FlattenPattern, Pattern, Vocab, as_steps, make_pattern
from musiclm.lm.sampling import TargetLayout, sample_steps, slide
from musiclm.log import log_skipped
from musiclm.optim import warmup_cosine

# hyperparameters renamed since older hand-offs were written
RENAMED = {"codec_codebook_size": "acoustic_codebook_size", "codec_levels": "acoustic_levels"}
OLD_RATES = {"semantic_rate": 25.0, "acoustic_rate": 50.0}  # the only rates hand-offs with `window_frames` ran at


def same_length(a: Tensor, b: Tensor) -> tuple[Tensor, Tensor]:
    """Both cut to the shorter one's frames (last axis)."""
    t = min(a.shape[-1], b.shape[-1])
    return a[..., :t], b[..., :t]


def window(batch: dict[str, Any], spans: dict[str, tuple[int, int]]) -> dict[str, Any]:
    """Slice streams (and their `<name>_mask`, when present) to `(start, length)` along time."""
    out = dict(batch)
    for name, (start, length) in spans.items():
        for key in (name, f"{name}_mask"):
            if key in batch:
                out[key] = batch[key][..., start : start + length]
    return out


class TokenStage(L.LightningModule):
    """Shared training, metrics and window sampling. Subclasses say what the prefix and the target are."""

    target: str  # name of the target stream in the vocabulary
    level_base: int = 0  # absolute codec level of target level 0 (for metric names)
    window_rate: str  # the hparam holding the frame rate `window_seconds` is counted in
    listen_through: tuple[str, ...] = ("codec",)  # the run's hand-offs a listening sample is decoded through

    @classmethod
    def upgrade_hparams(cls, hparams: dict[str, Any]) -> dict[str, Any]:
        """Hand-offs written before windows were in seconds held `window_frames` and, then necessarily, 25-Hz
        semantic and 50-Hz acoustic tokens."""
        hp = {RENAMED.get(k, k): v for k, v in hparams.items()}
        if "window_frames" in hp:
            rate = hp.setdefault(cls.window_rate, OLD_RATES[cls.window_rate])
            hp["window_seconds"] = hp.pop("window_frames") / rate
        return hp

    @property
    def window_frames(self) -> int:
        """Target frames per training window."""
        return seconds_to_frames(self.hparams.window_seconds, self.hparams[self.window_rate])

    def _setup(self, streams: dict[str, tuple[int, int]], pattern: Pattern, codebook_size: int) -> None:
        hp = self.hparams
        self.vocab = Vocab(streams)
        self.pattern = pattern
        self.codebook_size = codebook_size
        head_sizes = [len(pattern.slot_levels(k)) * codebook_size for k in range(pattern.tokens_per_step)]
        self.model = build_backbone(
            hp.backbone, self.vocab.size, head_sizes, hp.dim, hp.depth, hp.heads, hp.ff_mult, hp.dropout,
            hp.get("attn_dropout"),
        )
        self._val: dict[str, Tensor] = {}
        self._listen_batch: dict[str, Tensor] | None = None
        self._listeners: dict[str, Any] | None = None  # loaded at the first validation ({}: listening is off)
        self._layouts: dict[tuple[int, torch.device], TargetLayout] = {}

    # -- what subclasses define ---------------------------------------------------------------------------------

    def prefix(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(`[B, P]` input ids, `[P]` bool: positions that hold the droppable MuLan condition)."""
        raise NotImplementedError

    def target_codes(self, batch: dict[str, Any]) -> Tensor:
        """`[B, L, T]` stream-local target codes."""
        raise NotImplementedError

    def crop(self, batch: dict[str, Any]) -> dict[str, Any]:
        """The stage's training window out of a longer aligned crop (random in training, the start otherwise)."""
        return batch

    def target_mask(self, batch: dict[str, Any]) -> Tensor | None:
        """`[B, T]` True where a target frame is real rather than padding; None when nothing is padded."""
        return None

    def listen_codes(self, batch: dict[str, Tensor], seconds: float, models: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """(generated, real) codec codes `[B, L, T]` of the same shape for about the first `seconds` of `batch`'s
        clips; `models` holds the run's `listen_through` hand-offs (`lm/listen.py`)."""
        raise NotImplementedError

    # -- layout helpers ---------------------------------------------------------------------------------------

    def null_ids(self, n: int) -> Tensor:
        return self.vocab.encode("null", torch.zeros(n, dtype=torch.long), torch.arange(n)).to(self.device)

    def target_layout(self, frames: int) -> TargetLayout:
        """The sampler's/loss's view of `frames` target frames, cached per length (it is built in Python)."""
        key = (frames, self.device)
        if key not in self._layouts:
            with torch.inference_mode(False):  # reused by validation and training: no inference tensors
                level, _ = self.pattern.layout(frames)
                self._layouts[key] = TargetLayout(
                    head_index=self.pattern.head_index(frames).to(self.device),
                    offsets=self.vocab.offsets[self.target][level].to(self.device),
                    valid=self.pattern.valid(frames).to(self.device),
                    codebook_size=self.codebook_size,
                )
        return self._layouts[key]

    def target_ids(self, steps: Tensor, layout: TargetLayout) -> Tensor:
        ids = steps + layout.offsets.to(steps.device)
        return torch.where(layout.valid.to(steps.device), ids, torch.full_like(ids, EMPTY))

    # -- training ---------------------------------------------------------------------------------------------

    def drop_condition(self, prefix: Tensor, droppable: Tensor) -> Tensor:
        """Replace the MuLan part of each sample's prefix by the null condition with probability `cond_dropout`."""
        if not self.training or not droppable.any() or self.hparams.cond_dropout <= 0:
            return prefix
        p = self.hparams.cond_dropout
        null = prefix.clone()
        null[:, droppable] = self.null_ids(int(droppable.sum()))
        drop = torch.rand(prefix.shape[0], 1, device=prefix.device) < p
        return torch.where(drop, null, prefix)

    def forward_loss(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """(per-slot CE `[B, S, K]`, correct `[B, S, K]`, mask of slots with a loss `[S, K]` or `[B, S, K]`,
        level `[S, K]`)."""
        batch = self.crop(batch)
        prefix, droppable = self.prefix(batch)
        prefix = self.drop_condition(prefix, droppable)
        codes = self.target_codes(batch)
        frames = codes.shape[-1]
        layout = self.target_layout(frames)
        steps = self.pattern.build(codes)
        k = self.pattern.tokens_per_step
        x = torch.cat([as_steps(prefix, k), self.target_ids(steps, layout)[:, :-1]], dim=1)
        logits, _ = self.model(x)
        logits = self.model.slot_logits(logits[:, prefix.shape[1] - 1 :], layout.head_index, self.codebook_size)
        ce = F.cross_entropy(logits.flatten(0, -2).float(), steps.flatten(), reduction="none").view_as(steps)
        correct = logits.argmax(-1) == steps
        level, time = self.pattern.layout(frames)
        mask = layout.valid
        frame_mask = self.target_mask(batch)
        if frame_mask is not None:
            mask = mask & frame_mask.bool()[:, time.clamp(min=0).to(ce.device)]
        return ce, correct, mask, level.to(ce.device)

    def on_fit_start(self) -> None:
        """Refuse tokens from upstream models whose vocabularies differ from this stage's (a silent mismatch
        would train on out-of-range or ignored ids)."""
        sizes = getattr(self.trainer.datamodule, "vocab", None) or {}
        hp = self.hparams
        wrong = {k: v for k, v in sizes.items() if k in hp and hp[k] != v}
        if "acoustic_levels" in sizes and "coarse_levels" in hp and not hp.coarse_levels < sizes["acoustic_levels"]:
            wrong["coarse_levels"] = f"< {sizes['acoustic_levels']}"
        if wrong:
            fix = " ".join(f"--model.{k}={v}" for k, v in wrong.items())
            raise ValueError(
                f"the token shards were made by models with other vocabularies: set {fix} (ARGS=... or the profile)"
            )

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> Tensor:
        log_skipped(self, batch)
        ce, correct, valid, _ = self.forward_loss(batch)
        mask = valid.expand_as(ce)
        loss = ce[mask].mean()
        self.log("train/loss", loss, prog_bar=True, batch_size=ce.shape[0])
        self.log("train/acc", correct[mask].float().mean(), batch_size=ce.shape[0])
        return loss

    def on_validation_epoch_start(self) -> None:
        self._val = {}

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        ce, correct, valid, level = self.forward_loss(batch)
        for lv in level.unique().tolist():
            m = (valid & (level == lv)).expand_as(ce)
            stats = torch.stack([ce[m].sum(), correct[m].float().sum(), m.sum().float()]).detach()
            self._val[f"level_{lv + self.level_base}"] = self._val.get(f"level_{lv + self.level_base}", 0) + stats
        if batch_idx == 0 and self.listening():
            self._listen_batch = keep_examples(batch, self.hparams.listen_examples)

    def listening(self) -> bool:
        """Whether this validation renders samples: asked for, logged somewhere, on rank zero, not the sanity check."""
        t = self.trainer
        wanted = self.hparams.listen_examples > 0 and self.logger is not None
        return wanted and t.is_global_zero and not t.sanity_checking

    def on_validation_epoch_end(self) -> None:
        if not self._val:
            return
        total = 0
        for name in sorted(self._val):
            stats = self.trainer.strategy.reduce(self._val[name], reduce_op="sum")
            total = total + stats
            self.log(f"val/loss/{name}", stats[0] / stats[2])
            self.log(f"val/ppl/{name}", (stats[0] / stats[2]).exp())
            self.log(f"val/acc/{name}", stats[1] / stats[2])
        loss = total[0] / total[2]
        self.log("val/loss", loss, prog_bar=True)
        self.log("val/ppl", loss.exp())
        self.log("val/acc", total[1] / total[2])
        if self._listen_batch is not None:
            if self._listeners is None:
                self._listeners = load_listeners(self) or {}
            if self._listeners:
                log_listening(self, self._listen_batch, self._listeners)
            self._listen_batch = None

    def configure_model(self) -> None:
        """Under ModelParallelStrategy (FSDP2): `fully_shard` each x-transformers Attention/FeedForward block, then
        the decoder; `activation_checkpointing` recomputes the blocks' activations in backward (any strategy);
        `compile` then compiles the decoder in place (1.4-1.5x faster steps at paper size on an H200 after 1.5-3 min
        of compilation: docs/scaling.md). Lightning calls this before `configure_optimizers`, which therefore sees
        the sharded parameters."""
        configure_sharding(self, bool(self.hparams.get("activation_checkpointing", False)), self.model.block_types())
        if self.hparams.get("compile", False):
            self.model.compile()

    def make_optimizer(self) -> torch.optim.Optimizer:
        """AdamW with weight decay on matrices only (not norms, biases), over the (possibly sharded) parameters."""
        hp = self.hparams
        decay = [p for p in self.parameters() if p.ndim >= 2]
        no_decay = [p for p in self.parameters() if p.ndim < 2]
        groups = [{"params": decay, "weight_decay": hp.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=hp.lr, betas=(0.9, 0.95))

    def configure_optimizers(self):
        # linear warm-up, then cosine to 10% over max_steps (constant without a known max_steps)
        schedule = warmup_cosine(self.hparams.warmup_steps, self.trainer.max_steps, 0.1)
        opt = self.make_optimizer()
        return {
            "optimizer": opt,
            "lr_scheduler": {"scheduler": torch.optim.lr_scheduler.LambdaLR(opt, schedule), "interval": "step"},
        }

    # -- sampling ---------------------------------------------------------------------------------------------

    def sample_window(
        self,
        prefix: Tensor,
        null_prefix: Tensor | None,
        frames: int,
        prompt: Tensor | None,
        first_prefix: Tensor | None = None,
        **kw: Any,
    ) -> Tensor:
        """Codes `[B, L, frames]` after `prefix` (`[B, P]` ids); the first frames equal `prompt` `[B, L, Tp]`.
        `first_prefix`: the text-only branch of two-scale guidance (`sample_steps`)."""
        k = self.pattern.tokens_per_step
        layout = self.target_layout(frames)
        known, forced = 0, None
        if prompt is not None:
            full = prompt.new_zeros(prompt.shape[0], prompt.shape[1], frames)
            full[..., : prompt.shape[-1]] = prompt
            steps = self.pattern.build(full)
            _, time = self.pattern.layout(frames)
            known = self.pattern.known_steps(prompt.shape[-1])
            forced = torch.where(((time >= 0) & (time < prompt.shape[-1])).to(steps.device), steps, -1)[:, known:]
            prompt_ids = self.target_ids(steps[:, :known], layout[:known])
        prefixes = []
        for p in (prefix, null_prefix, first_prefix):
            if p is None:
                prefixes.append(None)
                continue
            p = as_steps(p, k)
            prefixes.append(torch.cat([p, prompt_ids], dim=1) if known else p)
        new = sample_steps(self.model, prefixes[0], layout[known:], null_prefix=prefixes[1], first_prefix=prefixes[2],
                           forced=forced, **kw)  # fmt: skip
        steps = torch.cat([steps[:, :known], new], dim=1) if known else new
        return self.pattern.revert(steps, frames)

    def sampling_kwargs(self, temperature, top_k, top_p, cfg_scale, seed, use_cache) -> dict[str, Any]:
        generator = None
        if seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(seed)
        return dict(
            temperature=self.hparams.temperature if temperature is None else temperature,
            top_k=self.hparams.get("top_k") if top_k is None else top_k,  # the stage's own unless one is given
            top_p=top_p,
            cfg_scale=cfg_scale,
            generator=generator,
            use_cache=use_cache,
        )


class SemanticStage(MelodyConditioned, TokenStage):
    """p(semantic tokens | MuLan tokens) or, with `melody_conditioning`, p(semantic | MuLan, melody tokens): the
    melody columns follow the MuLan tokens (`melody_condition.MelodyConditioned`)."""

    target = "semantic"
    window_rate = "semantic_rate"
    listen_through = ("coarse", "fine", "codec")  # semantic tokens have no decoder: the run's acoustic LMs make codes

    def __init__(
        self,
        mulan_levels: int | None = None,
        mulan_codebook_size: int | None = None,
        semantic_codebook_size: int | None = None,
        semantic_rate: float | None = None,
        window_seconds: float = 30.0,
        backbone: str = "x-transformers",
        dim: int = 1024,
        depth: int = 24,
        heads: int = 16,
        ff_mult: int = 4,
        dropout: float = 0.1,
        attn_dropout: float | None = None,  # None: `dropout`; CPU profiles set 0 (see TokenLM)
        cond_dropout: float = 0.1,
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 1000,
        temperature: float = 1.0,
        top_k: int | None = None,
        activation_checkpointing: bool = False,
        compile: bool = False,
        melody_conditioning: bool = False,
        melody_levels: int | None = None,
        melody_codebook_size: int | None = None,
        melody_rate: float | None = None,
        melody_dropout: float = 0.1,
        listen_examples: int = 2,
        listen_seconds: float = 2.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        require(
            self.hparams,
            ("mulan_levels", "mulan_codebook_size", "semantic_codebook_size", "semantic_rate"),
            "SemanticStage",
        )
        streams = {
            "mulan": (mulan_levels, mulan_codebook_size),
            "null": (mulan_levels, 1),
            "semantic": (1, semantic_codebook_size),
        }
        self._setup(streams | self.melody_streams(), FlattenPattern(1), semantic_codebook_size)

    def mulan_ids(self, mulan: Tensor) -> Tensor:
        return self.vocab.encode("mulan", mulan.long(), torch.arange(mulan.shape[-1], device=mulan.device))

    def prefix(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ids = self.mulan_ids(batch["mulan"])
        return self.with_melody(batch, ids, torch.ones(ids.shape[1], dtype=torch.bool, device=ids.device))

    def target_codes(self, batch: dict[str, Any]) -> Tensor:
        return batch["semantic"].long()[:, None]

    def target_mask(self, batch: dict[str, Any]) -> Tensor | None:
        return batch.get("semantic_mask")

    def crop(self, batch: dict[str, Any]) -> dict[str, Any]:
        frames, w = batch["semantic"].shape[-1], self.window_frames
        if frames <= w:
            return batch
        start = int(torch.randint(0, frames - w + 1, ())) if self.training else 0
        out = window(batch, {"semantic": (start, w)})
        if self.melody_conditioned:
            out["melody_start"] = self.melody_offset(start)
        return out

    @torch.no_grad()
    def generate(
        self,
        mulan_tokens: Tensor,
        num_tokens: int,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        prompt: Tensor | None = None,
        context: int | None = None,
        use_cache: bool = True,
        melody: Tensor | None = None,
        melody_cfg_scale: float | None = None,
    ) -> Tensor:
        """MuLan tokens `[B, Qm]` -> semantic tokens `[B, num_tokens]`; longer than a window by sliding
        windows prompted with the last `context` tokens (default half a window). `prompt` `[B, Tp]` continues
        given semantic tokens (returned as the first Tp). `melody` `[B, Q, T]` melody tokens (a melody-conditioned
        stage; without them it samples from the text alone, the melody null): each window reads the melody columns
        from the one nearest its start.

        Guidance: with `cfg_scale` alone, the unconditional branch drops both conditions (one scale for text and
        melody together). `melody_cfg_scale` guides the melody separately (`sampling.guide_two`): logits =
        uncond + cfg_scale * (text - uncond) + melody_cfg_scale * (text & melody - text), three rows per sample in
        one cached forward; equal scales are the one-scale form, 0 ignores the melody."""
        self.check_melody(melody, melody_cfg_scale, cfg_scale)
        kw = self.sampling_kwargs(temperature, top_k, top_p, cfg_scale, seed, use_cache)
        mulan_tokens = mulan_tokens.to(self.device)
        cond = self.mulan_ids(mulan_tokens)
        null = self.null_ids(cond.shape[1]).expand_as(cond) if cfg_scale is not None else None
        window = self.window_frames
        context = window // 2 if context is None else context

        def gen(start: int, frames: int, prev: Tensor | None) -> Tensor:
            prefix, null_prefix, extra = self.melody_prefixes(cond, null, melody, start, melody_cfg_scale)
            return self.sample_window(prefix, null_prefix, frames, prev, **extra, **kw)

        initial = None if prompt is None else prompt.to(self.device).long()[:, None]
        return slide(num_tokens, window, min(context, window - 1), gen, initial)[:, 0]

    def listen_codes(self, batch: dict[str, Tensor], seconds: float, models: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The clips' MuLan tokens -> generated semantic tokens -> the run's coarse and fine LMs; real: the clips'
        own codes."""
        n_sem = min(seconds_to_frames(seconds, self.hparams.semantic_rate), batch["semantic"].shape[-1])
        semantic = self.generate(batch["mulan"], n_sem, cfg_scale=LISTEN_CFG, seed=0)
        coarse = models["coarse"].generate(batch["mulan"], semantic, cfg_scale=LISTEN_CFG, seed=0)
        return same_length(models["fine"].generate(coarse, seed=0), batch["acoustic"].long())


class CoarseStage(MelodyConditioned, TokenStage):
    """p(coarse codec levels | MuLan tokens, semantic tokens) or, with `melody_conditioning`, p(coarse | MuLan,
    semantic, melody tokens): the melody columns follow the semantic tokens (`melody_condition.MelodyConditioned`).
    Codec codes keep a clip's notes where the demo's semantic tokens do not, so this is where a melody can steer."""

    target = "coarse"
    window_rate = "acoustic_rate"

    def __init__(
        self,
        mulan_levels: int | None = None,
        mulan_codebook_size: int | None = None,
        semantic_codebook_size: int | None = None,
        acoustic_codebook_size: int | None = None,
        semantic_rate: float | None = None,
        acoustic_rate: float | None = None,
        coarse_levels: int = 4,
        pattern: str = "flatten",
        window_seconds: float = 10.0,
        backbone: str = "x-transformers",
        dim: int = 1024,
        depth: int = 24,
        heads: int = 16,
        ff_mult: int = 4,
        dropout: float = 0.1,
        attn_dropout: float | None = None,  # None: `dropout`; CPU profiles set 0 (see TokenLM)
        cond_dropout: float = 0.1,
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 1000,
        temperature: float = 0.95,
        top_k: int | None = None,
        activation_checkpointing: bool = False,
        compile: bool = False,
        melody_conditioning: bool = False,
        melody_levels: int | None = None,
        melody_codebook_size: int | None = None,
        melody_rate: float | None = None,
        melody_dropout: float = 0.1,
        listen_examples: int = 2,
        listen_seconds: float = 2.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        require(self.hparams, ("mulan_levels", "mulan_codebook_size", "semantic_codebook_size",
                               "acoustic_codebook_size", "semantic_rate", "acoustic_rate"), "CoarseStage")  # fmt: skip
        self.ratio = acoustic_rate / semantic_rate  # acoustic frames per semantic frame, not necessarily whole
        streams = {
            "mulan": (mulan_levels, mulan_codebook_size),
            "null": (mulan_levels, 1),
            "semantic": (1, semantic_codebook_size),
            "coarse": (coarse_levels, acoustic_codebook_size),
        }
        self._setup(streams | self.melody_streams(), make_pattern(pattern, coarse_levels), acoustic_codebook_size)

    mulan_ids = SemanticStage.mulan_ids

    def semantic_span(self, start: int, frames: int, total: int) -> tuple[int, int]:
        """The semantic frames `[s0, s1)` that cover acoustic frames `[start, start + frames)`."""
        s0 = min(total, math.floor(start / self.ratio + 1e-6))
        return s0, max(s0, min(total, math.ceil((start + frames) / self.ratio - 1e-6)))

    def cond_ids(self, mulan: Tensor, semantic: Tensor) -> tuple[Tensor, Tensor]:
        m = self.mulan_ids(mulan)
        s = self.vocab.encode("semantic", semantic.long(), 0)
        droppable = torch.arange(m.shape[1] + s.shape[1], device=m.device) < m.shape[1]
        return torch.cat([m, s], dim=1), droppable

    def prefix(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        return self.with_melody(batch, *self.cond_ids(batch["mulan"], batch["semantic"]))

    def target_codes(self, batch: dict[str, Any]) -> Tensor:
        return batch["acoustic"].long()[:, : self.hparams.coarse_levels]

    def crop(self, batch: dict[str, Any]) -> dict[str, Any]:
        """A window that starts on a semantic frame: `window_seconds` of both streams (all of a shorter clip)."""
        ac, sem = batch["acoustic"], batch["semantic"]
        sem_frames = min(sem.shape[-1], math.floor(ac.shape[-1] / self.ratio + 1e-6))
        w_sem = min(seconds_to_frames(self.hparams.window_seconds, self.hparams.semantic_rate), sem_frames)
        w_ac = min(self.window_frames, round(w_sem * self.ratio))
        start = 0
        if self.training and sem_frames > w_sem:
            start = int(torch.randint(0, sem_frames - w_sem + 1, ()))
        out = window(batch, {"acoustic": (round(start * self.ratio), w_ac), "semantic": (start, w_sem)})
        if self.melody_conditioned:
            out["melody_start"] = self.melody_offset(start)
        return out

    def target_mask(self, batch: dict[str, Any]) -> Tensor | None:
        return batch.get("acoustic_mask")

    @torch.no_grad()
    def generate(
        self,
        mulan_tokens: Tensor,
        semantic: Tensor,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        cfg_scale: float | None = None,
        seed: int | None = None,
        context: int | None = None,
        use_cache: bool = True,
        prompt: Tensor | None = None,
        melody: Tensor | None = None,
        melody_cfg_scale: float | None = None,
    ) -> Tensor:
        """MuLan `[B, Qm]` + semantic `[B, Ts]` -> coarse codes `[B, coarse_levels, round(Ts * ratio)]`, in
        windows of `window_seconds` prompted with the last `context` coarse frames (default half a window) and
        conditioned on the semantic tokens that cover the same window. `prompt` `[B, coarse_levels, Tp]` continues
        given coarse codes (returned as the first Tp frames). `melody` `[B, Q, T]` and `melody_cfg_scale`: as in
        `SemanticStage.generate` (each window reads the melody columns from its first semantic frame on)."""
        self.check_melody(melody, melody_cfg_scale, cfg_scale)
        kw = self.sampling_kwargs(temperature, top_k, top_p, cfg_scale, seed, use_cache)
        mulan_tokens, semantic = mulan_tokens.to(self.device), semantic.to(self.device)
        window = self.window_frames
        context = window // 2 if context is None else context
        if float(self.ratio).is_integer():  # keep window starts on semantic frames when the rates allow it
            context -= context % int(self.ratio)

        def gen(start: int, frames: int, prev: Tensor | None) -> Tensor:
            s0, s1 = self.semantic_span(start, frames, semantic.shape[-1])
            cond, droppable = self.cond_ids(mulan_tokens, semantic[:, s0:s1])
            null = None
            if cfg_scale is not None:
                null = cond.clone()
                null[:, droppable] = self.null_ids(int(droppable.sum()))
            prefix, null_prefix, extra = self.melody_prefixes(cond, null, melody, s0, melody_cfg_scale)
            return self.sample_window(prefix, null_prefix, frames, prev, **extra, **kw)

        initial = None if prompt is None else prompt.to(self.device).long()
        return slide(round(semantic.shape[-1] * self.ratio), window, context, gen, initial)

    def listen_codes(self, batch: dict[str, Tensor], seconds: float, models: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The clips' MuLan and semantic tokens -> generated coarse levels; real: the clips' coarse levels. Both
        decode at the coarse levels' bitrate: what this stage alone makes, heard before the fine LM exists."""
        n_sem = min(seconds_to_frames(seconds, self.hparams.semantic_rate), batch["semantic"].shape[-1])
        coarse = self.generate(batch["mulan"], batch["semantic"][:, :n_sem], cfg_scale=LISTEN_CFG, seed=0)
        return same_length(coarse, self.target_codes(batch))


class FineStage(TokenStage):
    """p(fine codec levels | coarse codec levels), over short windows (AudioLM: 3 s)."""

    target = "fine"
    window_rate = "acoustic_rate"

    def __init__(
        self,
        acoustic_codebook_size: int | None = None,
        acoustic_levels: int | None = None,
        acoustic_rate: float | None = None,
        coarse_levels: int = 4,
        pattern: str = "flatten",
        window_seconds: float = 3.0,
        backbone: str = "x-transformers",
        dim: int = 1024,
        depth: int = 24,
        heads: int = 16,
        ff_mult: int = 4,
        dropout: float = 0.1,
        attn_dropout: float | None = None,  # None: `dropout`; CPU profiles set 0 (see TokenLM)
        lr: float = 3e-4,
        weight_decay: float = 0.01,
        warmup_steps: int = 1000,
        temperature: float = 0.4,
        top_k: int | None = None,
        activation_checkpointing: bool = False,
        compile: bool = False,
        listen_examples: int = 2,
        listen_seconds: float = 2.0,
    ):
        super().__init__()
        self.save_hyperparameters()
        require(self.hparams, ("acoustic_codebook_size", "acoustic_levels", "acoustic_rate"), "FineStage")
        if not 0 < coarse_levels < acoustic_levels:
            raise ValueError(f"need 0 < coarse_levels ({coarse_levels}) < acoustic_levels ({acoustic_levels})")
        self.level_base = coarse_levels
        streams = {
            "coarse": (coarse_levels, acoustic_codebook_size),
            "fine": (acoustic_levels - coarse_levels, acoustic_codebook_size),
        }
        self._setup(streams, make_pattern(pattern, acoustic_levels - coarse_levels), acoustic_codebook_size)

    def coarse_ids(self, coarse: Tensor) -> Tensor:
        """Coarse codes `[B, Qc, T]` -> time-major prefix ids `[B, T * Qc]` (AudioLM's flattening)."""
        return self.vocab.encode_levels("coarse", coarse.long()).transpose(1, 2).flatten(1)

    def prefix(self, batch: dict[str, Any]) -> tuple[Tensor, Tensor]:
        ids = self.coarse_ids(batch["acoustic"][:, : self.hparams.coarse_levels])
        return ids, torch.zeros(ids.shape[1], dtype=torch.bool, device=ids.device)

    def target_codes(self, batch: dict[str, Any]) -> Tensor:
        return batch["acoustic"].long()[:, self.hparams.coarse_levels :]

    def target_mask(self, batch: dict[str, Any]) -> Tensor | None:
        return batch.get("acoustic_mask")

    def crop(self, batch: dict[str, Any]) -> dict[str, Any]:
        frames, w = batch["acoustic"].shape[-1], self.window_frames
        if frames <= w:
            return batch
        start = int(torch.randint(0, frames - w + 1, ())) if self.training else 0
        return window(batch, {"acoustic": (start, w)})

    @torch.no_grad()
    def generate(
        self,
        coarse: Tensor,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        context: int | None = None,
        use_cache: bool = True,
        prompt: Tensor | None = None,
    ) -> Tensor:
        """Coarse codes `[B, Qc, T]` -> all codes `[B, Q, T]` (coarse levels unchanged), in windows of
        `window_seconds` conditioned on that window's coarse codes and prompted with the last `context` fine
        frames (default a third of a window). `prompt` `[B, Q - Qc, Tp]` continues given fine codes."""
        kw = self.sampling_kwargs(temperature, top_k, top_p, None, seed, use_cache)
        coarse = coarse.to(self.device).long()
        window = self.window_frames
        context = window // 3 if context is None else context

        def gen(start: int, frames: int, prev: Tensor | None) -> Tensor:
            return self.sample_window(self.coarse_ids(coarse[..., start : start + frames]), None, frames, prev, **kw)

        fine = slide(coarse.shape[-1], window, context, gen, None if prompt is None else prompt.to(self.device).long())
        return torch.cat([coarse, fine], dim=1)

    def listen_codes(self, batch: dict[str, Tensor], seconds: float, models: dict[str, Any]) -> tuple[Tensor, Tensor]:
        """The clips' real coarse levels -> generated fine levels; real: all the clips' codes."""
        frames = min(seconds_to_frames(seconds, self.hparams.acoustic_rate), batch["acoustic"].shape[-1])
        real = batch["acoustic"][..., :frames].long()
        return self.generate(real[:, : self.hparams.coarse_levels], seed=0), real
