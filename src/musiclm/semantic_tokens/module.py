"""`SemanticTokenizer`: k-means over frozen self-supervised features, fitted by streaming audio through Lightning.

The centroids are a parameter moved by SGD with lr 1 and the mini-batch k-means gradient (counts*c - sums)/seen,
which is exactly Sculley's update, so fitting gets Lightning's step counting, checkpoints, resume and logging.
The feature extractor's weights are not copied into this checkpoint: `source` points at them and `source_id`
(their content hash) makes a changed upstream model an error instead of silently different tokens.
"""

from __future__ import annotations

import lightning as L
import torch

from musiclm.artifacts import build_from_handoff, file_id
from musiclm.distributed import world_size
from musiclm.paths import resolve
from musiclm.semantic_tokens.extractors import FeatureExtractor, HFFeatures, LogMelFeatures, MuLanFeatures, to_rate
from musiclm.semantic_tokens.kmeans import assign, kmeans_pp, lloyd, minibatch_stats, perplexity


class StaleSourceError(RuntimeError):
    """The extractor's weights changed after the tokenizer was fitted."""


def compute_source_id(extractor: str, source: str | None) -> str:
    if extractor == "logmel" or source is None:
        return "logmel"
    path = resolve(source)  # a hand-off's relative source is under the root, wherever the process runs
    if path.is_dir():  # a transformers folder: hash its weights
        weights = sorted(path.glob("*.safetensors")) or sorted(path.glob("*.bin"))
        return "-".join(file_id(w) for w in weights)
    return file_id(path)


def build_extractor(
    extractor: str, source: str | None, layer: int, sample_rate: int, trust_remote_code: bool = False
) -> FeatureExtractor:
    if extractor == "mulan":
        if source is None or not resolve(source).is_file():
            raise FileNotFoundError(f"MuLan checkpoint {source} not found: build it with `make train-mulan`")
        mulan = build_from_handoff(torch.load(resolve(source), map_location="cpu", weights_only=True), "mulan")
        return MuLanFeatures(mulan, layer)
    if extractor == "hf":
        if source is None:
            raise ValueError("extractor 'hf' needs source=<local transformers model folder>")
        return HFFeatures(source, layer, sample_rate, trust_remote_code)
    if extractor == "logmel":
        return LogMelFeatures(sample_rate)
    raise ValueError(f"extractor must be mulan, hf or logmel, not {extractor!r}")


class SemanticTokenizer(L.LightningModule):
    cli_links = [("data.sample_rate", "model.sample_rate")]

    def __init__(
        self,
        sample_rate: int = 24_000,
        extractor: str = "mulan",
        source: str | None = None,
        layer: int = 7,
        token_rate: float = 25.0,
        num_clusters: int = 1024,
        init_frames: int = 50_000,
        frames_per_step: int = 8192,
        lloyd_iters: int = 10,
        source_id: str | None = None,
        seed: int = 0,
        trust_remote_code: bool = False,
    ):
        super().__init__()
        self.automatic_optimization = False
        ext = build_extractor(extractor, source, layer, sample_rate, trust_remote_code)
        current = compute_source_id(extractor, source)
        if source_id is not None and source_id != current:
            raise StaleSourceError(
                f"{source} changed after this semantic tokenizer was fitted: "
                "re-run `make fit-semantic` (and `make tokenize`)"
            )
        self.save_hyperparameters()
        self.hparams.source_id = current
        self._extractor = [ext]  # a list keeps its weights out of this module's state_dict
        self.centroids = torch.nn.Parameter(torch.zeros(num_clusters, ext.dim))
        self.register_buffer("seen", torch.zeros(num_clusters))
        self.register_buffer("initialized", torch.tensor(False))
        self._init_buf: list[torch.Tensor] = []
        self._val_counts: torch.Tensor | None = None
        self._val_inertia: list[torch.Tensor] = []

    @property
    def extractor(self) -> FeatureExtractor:
        return self._extractor[0].to(self.device)

    # ---------------------------------------------------------------- the SemanticTokenizer role (musiclm.contracts)
    @property
    def sample_rate(self) -> int:
        return int(self.hparams.sample_rate)

    @property
    def frame_rate(self) -> float:
        return float(self.hparams.token_rate)

    @property
    def num_levels(self) -> int:
        return 1

    @property
    def codebook_size(self) -> int:
        return int(self.hparams.num_clusters)

    @torch.no_grad()
    def features(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, T] -> frames [B, round(seconds * frame_rate), D]."""
        wave = wave[None] if wave.ndim == 1 else wave
        feats = self.extractor(wave.to(self.device)).float()
        return to_rate(feats, wave.shape[-1], self.hparams.sample_rate, self.frame_rate)

    @torch.no_grad()
    def tokenize(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, T] at `sample_rate` -> token ids [B, T_sem] at `frame_rate`."""
        if not bool(self.initialized):
            raise RuntimeError("semantic tokenizer was never fitted: run `make fit-semantic`")
        f = self.features(wave)
        ids, _ = assign(f.reshape(-1, f.shape[-1]), self.centroids.detach())
        return ids.reshape(f.shape[0], f.shape[1])

    # ---------------------------------------------------------------- fitting
    def _frames(self, batch: dict) -> torch.Tensor:
        x = self.features(batch["audio"])
        x = x.reshape(-1, x.shape[-1])
        if len(x) > self.hparams.frames_per_step:
            x = x[torch.randperm(len(x), device=x.device)[: self.hparams.frames_per_step]]
        return x

    def _sum(self, t: torch.Tensor) -> torch.Tensor:
        return self.trainer.strategy.reduce(t, reduce_op="sum") if world_size() > 1 else t

    def training_step(self, batch: dict, batch_idx: int) -> None:
        opt = self.optimizers()
        x = self._frames(batch)
        c = self.centroids
        if not bool(self.initialized):
            self._init_buf.append(x.cpu())
            pool = torch.cat(self._init_buf)
            enough = len(pool) >= max(self.hparams.init_frames, self.codebook_size)
            if world_size() > 1:
                pool = self.all_gather(pool.to(self.device)).reshape(-1, pool.shape[-1]).cpu()
            if enough:
                g = torch.Generator().manual_seed(self.hparams.seed)  # same seeds on every rank -> same centres
                init = lloyd(pool, kmeans_pp(pool, self.codebook_size, g), self.hparams.lloyd_iters)
                c.data.copy_(init.to(c.device))
                self.initialized.fill_(True)
                self._init_buf = []
            c.grad = torch.zeros_like(c)
        else:
            sums, counts, inertia = minibatch_stats(x, c.detach())
            sums, counts = self._sum(sums), self._sum(counts)
            self.seen += counts
            c.grad = torch.where(
                counts[:, None] > 0, (counts[:, None] * c.detach() - sums) / self.seen.clamp_min(1)[:, None], 0.0
            )
            self.log("train/inertia", inertia, prog_bar=True, batch_size=len(x))
            self.log("train/clusters_hit", (counts > 0).float().mean(), batch_size=len(x))
        opt.step()
        opt.zero_grad(set_to_none=True)

    def configure_optimizers(self):
        return torch.optim.SGD([self.centroids], lr=1.0)

    # ---------------------------------------------------------------- validation
    def on_validation_epoch_start(self) -> None:
        self._val_counts = torch.zeros(self.codebook_size, device=self.device)
        self._val_inertia = []

    def validation_step(self, batch: dict, batch_idx: int) -> None:
        if not bool(self.initialized):
            return
        f = self.features(batch["audio"])
        ids, dist = assign(f.reshape(-1, f.shape[-1]), self.centroids.detach())
        self._val_counts += torch.bincount(ids, minlength=self.codebook_size).float()
        self._val_inertia.append(dist.mean())

    def on_validation_epoch_end(self) -> None:
        if not bool(self.initialized) or not self._val_inertia:
            return
        counts = self._sum(self._val_counts)
        self.log_dict(
            {
                "val/perplexity": perplexity(counts),
                "val/usage": float((counts > 0).float().mean()),
                "val/inertia": torch.stack(self._val_inertia).mean(),
            },
            sync_dist=True,
        )
