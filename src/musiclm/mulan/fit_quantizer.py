"""Fit the MuLan-token residual VQ of a trained MuLan checkpoint on its training set's audio embeddings.

    musiclm mulan fit-quantizer --run RUN [--batches N]

The checkpoint (`runs/RUN/mulan/model.ckpt`) is rewritten in place, atomically, with the fitted quantizer in its
state; the data module it was trained with (its stored hyperparameters) supplies the train split.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch.utils.data import DataLoader

from musiclm.artifacts import atomic_torch_save, build_from_handoff, require_model
from musiclm.audio import AudioError
from musiclm.data.datamodules import AudioTextDataModule, AudioTextDecoder
from musiclm.data.streams import collate, shard_stream
from musiclm.distributed import launcher_rank
from musiclm.modes import eval_mode
from musiclm.mulan.module import MuLanModule


@torch.inference_mode()
def embed_split(
    module: MuLanModule, data_hparams: dict, split: str = "train", batches: int | None = None, batch_size: int = 16
) -> torch.Tensor:
    """Audio embeddings [N, D] of one split, centre crops, eval mode, batched; `batches` limits the count."""
    dm = AudioTextDataModule.from_hparams(data_hparams, batch_size=batch_size)
    decode = AudioTextDecoder(module.sample_rate, dm.clip_samples, False, "caption", 0, 0)
    stream = shard_stream(dm.shards(split), decode, (AudioError, KeyError, ValueError), train=False)
    workers = min(int(data_hparams.get("num_workers", 0)), len(dm.shards(split)))
    loader = DataLoader(stream, batch_size=batch_size, num_workers=workers, collate_fn=collate)
    out = []
    with eval_mode(module):
        for i, batch in enumerate(loader):
            if batches is not None and i >= batches:
                break
            out.append(module.embed_audio(batch["audio"].to(module.device)).float().cpu())
    if not out:
        raise RuntimeError(f"no audio found in the {split} split of {dm.data_dir}")
    return torch.cat(out)


def fit_checkpoint(
    run: str, batches: int | None = None, epochs: int = 20, data_dir: str | None = None, num_workers: int | None = None
) -> float:
    """Load runs/RUN/mulan/model.ckpt, fit its quantizer on the train split, write the checkpoint back atomically."""
    path = require_model(run, "mulan")
    ckpt = torch.load(path, map_location="cpu", weights_only=True)  # a hand-off: tensors, dicts and primitives only
    module = build_from_handoff(ckpt, "mulan")  # the class the hand-off names: a trained MuLan or an imported CLAP
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
        f"mulan quantizer: {module.num_levels} x {module.codebook_size} codes fitted on {len(x)} train embeddings "
        f"(embed {t1 - t0:.1f} s, fit {time.time() - t1:.1f} s): relative quantization error {err:.4f}"
    )
    ckpt["state_dict"] = {k: v.detach().cpu() for k, v in module.state_dict().items()}
    ckpt["mulan_quantizer"] = {"relative_error": err, "num_embeddings": len(x), "epochs": epochs}
    atomic_torch_save(ckpt, path)
    print(f"wrote {path}")
    return err


def main(argv: list[str] | None = None) -> float:
    p = argparse.ArgumentParser(
        prog="musiclm mulan fit-quantizer", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
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
