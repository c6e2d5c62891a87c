"""MuLan tokens: a residual VQ fitted on the training set's audio embeddings after the towers are trained.

    musiclm mulan fit-quantizer --run RUN [--batches N]

The quantizer lives inside the MuLan module's state (`model.ckpt`), so every downstream stage, at training and at
inference, maps audio and text embeddings through the same table. Fitting runs in one process; codebook syncing is
switched off explicitly (vector-quantize-pytorch would otherwise decide it when the module is built, e.g. inside
DDP training, and then try to all-reduce during a single-process fit).
"""

from __future__ import annotations

import argparse
import inspect
import time

import torch
from torch.utils.data import DataLoader
from vector_quantize_pytorch import ResidualVQ

from musiclm.artifacts import atomic_torch_save, require_model
from musiclm.distributed import launcher_rank


def build_quantizer(dim: int, num_quantizers: int, codebook_size: int, kmeans_iters: int = 20) -> ResidualVQ:
    """Residual VQ with k-means initialisation, EMA codebooks and dead-code replacement; never synced."""
    return ResidualVQ(
        dim=dim,
        num_quantizers=num_quantizers,
        codebook_size=codebook_size,
        kmeans_init=True,
        kmeans_iters=kmeans_iters,
        decay=0.9,
        threshold_ema_dead_code=1,
        sync_codebook=False,
        sync_kmeans=False,
    )


def quantize(rvq: ResidualVQ, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """x [B, D] -> (quantized [B, D], indices [B, Q])."""
    q, idx, _ = rvq(x[:, None, :].float())
    return q[:, 0], idx[:, 0]


def relative_error(rvq: ResidualVQ, x: torch.Tensor) -> float:
    """sum ||x - q(x)||^2 / sum ||x||^2 with the codebooks frozen (eval mode)."""
    was_training = rvq.training
    rvq.eval()
    with torch.inference_mode():
        q, _ = quantize(rvq, x)
    rvq.train(was_training)
    return float((x - q).pow(2).sum() / x.pow(2).sum().clamp(min=1e-12))


def fit_residual_vq(rvq: ResidualVQ, x: torch.Tensor, epochs: int = 20, batch_size: int = 4096, seed: int = 0) -> float:
    """Fit the codebooks on embeddings x [N, D]: k-means on the first (largest possible) batch initialises each
    level on its residual, then EMA passes over shuffled batches refine them and revive dead codes.
    Returns the relative quantization error."""
    g = torch.Generator().manual_seed(seed)
    rvq.train()
    with torch.no_grad():
        quantize(rvq, x[torch.randperm(len(x), generator=g)[: max(batch_size, rvq.codebook_size)]])  # k-means init
        for _ in range(epochs):
            for chunk in x[torch.randperm(len(x), generator=g)].split(batch_size):
                quantize(rvq, chunk)
    rvq.eval()
    return relative_error(rvq, x)


@torch.inference_mode()
def embed_split(module, data_hparams: dict, split: str = "train", batches: int | None = None, batch_size: int = 16) -> torch.Tensor:
    """Audio embeddings [N, D] of one split, centre crops, eval mode, batched; `batches` limits the count."""
    from musiclm.audio import AudioError
    from musiclm.data.datamodules import AudioTextDataModule, AudioTextDecoder
    from musiclm.data.streams import collate, shard_stream

    known = inspect.signature(AudioTextDataModule).parameters  # the CLI also records private keys (_instantiator)
    dm = AudioTextDataModule(**{**{k: v for k, v in data_hparams.items() if k in known}, "batch_size": batch_size})
    decode = AudioTextDecoder(module.sample_rate, dm.clip_samples, False, "caption", 0, 0)
    stream = shard_stream(dm.shards(split), decode, (AudioError, KeyError, ValueError), train=False)
    workers = min(int(data_hparams.get("num_workers", 0)), len(dm.shards(split)))
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    module.eval()
    out = []
    for i, batch in enumerate(loader):
        if batches is not None and i >= batches:
            break
        out.append(module.encode_audio(batch["audio"].to(module.device)).float().cpu())
    if not out:
        raise RuntimeError(f"no audio found in the {split} split of {dm.data_dir}")
    return torch.cat(out)


def fit_checkpoint(run: str, batches: int | None = None, epochs: int = 20, data_dir: str | None = None, num_workers: int | None = None) -> float:
    """Load runs/RUN/mulan/model.ckpt, fit its quantizer on the train split, write the checkpoint back atomically."""
    from musiclm.mulan.module import MuLanModule

    path = require_model(run, "mulan")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # a hand-off: tensors, dicts and primitives only
    module = MuLanModule.load_from_checkpoint(path, map_location="cpu", weights_only=True).eval()
    data_hparams = dict(ckpt.get("datamodule_hyper_parameters") or {})
    if data_dir is not None:
        data_hparams["data_dir"] = data_dir
    if num_workers is not None:
        data_hparams["num_workers"] = num_workers
    if "data_dir" not in data_hparams:
        raise ValueError(f"{path} records no data module settings: pass --data-dir")
    t0 = time.time()
    x = embed_split(module, data_hparams, "train", batches)
    t1 = time.time()
    err = module.fit_quantizer(x, epochs=epochs)
    print(
        f"mulan quantizer: {module.num_quantizers} x {module.codebook_size} codes fitted on {len(x)} train embeddings "
        f"(embed {t1 - t0:.1f} s, fit {time.time() - t1:.1f} s): relative quantization error {err:.4f}"
    )
    ckpt["state_dict"] = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    ckpt["mulan_quantizer"] = {"relative_error": err, "num_embeddings": len(x), "epochs": epochs}
    atomic_torch_save(ckpt, path)
    print(f"wrote {path}")
    return err


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(prog="musiclm mulan fit-quantizer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--run", default="demo")
    p.add_argument("--batches", type=int, default=None, help="embed at most this many train batches (default: all)")
    p.add_argument("--epochs", type=int, default=20, help="EMA passes over the embeddings after k-means init")
    p.add_argument("--data-dir", default=None, help="override the data_dir recorded in the checkpoint")
    p.add_argument("--num-workers", type=int, default=None)
    ns = p.parse_args(argv)
    rank = launcher_rank()
    if rank != 0:  # every rank of `srun make train-mulan` / torchrun reaches this step: rank 0 alone rewrites the file
        print(f"mulan quantizer: rank {rank} leaves the fit to rank 0")
        return float("nan")
    return fit_checkpoint(ns.run, ns.batches, ns.epochs, ns.data_dir, ns.num_workers)
