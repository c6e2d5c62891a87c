"""`musiclm import codec|mulan --from DIR --run RUN`: a pretrained model from a local folder as the stage's hand-off.

Reads `DIR/config.json`, builds the adapter of its `model_type`, copies the weights in and writes
`runs/RUN/<stage>/model.ckpt` atomically. The weights travel inside, so the run stays self-contained and the file's
content id feeds the staleness checks (`data/tokens.py`) like a trained stage's. Nothing is downloaded.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from musiclm.pretrained.hub import ROLE_TYPES, load_pretrained, read_config


def adopt(adapter, model) -> None:
    """Copy the pretrained weights into the adapter's freshly built model of the same config."""
    adapter.model.load_state_dict(model.state_dict())


def hf_config(model) -> dict:
    """The model's config as plain JSON values (what a `weights_only` hand-off may hold)."""
    return json.loads(model.config.to_json_string(use_diff=False))


def codec_adapter(folder: Path, levels: int | None = None, bandwidth: float | None = None,
                  sample_rate: int = 24_000):  # fmt: skip
    """The folder's EnCodec or DAC as an `HFCodec` with its weights; `bandwidth` (EnCodec kbps) or `levels`."""
    from musiclm.pretrained.codec import HFCodec, levels_for_bandwidth

    read_config(folder, *ROLE_TYPES["codec"])
    model = load_pretrained(folder)
    if bandwidth is not None:
        if model.config.model_type != "encodec":
            raise ValueError("--bandwidth is EnCodec's; give DAC its level count with --levels")
        levels = levels_for_bandwidth(model, bandwidth)
    adapter = HFCodec(hf_config(model), levels, sample_rate, str(folder))
    adopt(adapter, model)
    return adapter


def mulan_adapter(folder: Path, sample_rate: int = 24_000, levels: int = 12, codebook_size: int = 1024):
    """The folder's CLAP (model, feature extractor and tokenizer) as a `ClapEncoder` with its weights; its token
    quantizer (`levels` x `codebook_size`) is fitted afterwards by `musiclm mulan fit-quantizer`."""
    from transformers import AutoFeatureExtractor, AutoTokenizer

    from musiclm.pretrained.clap import ClapEncoder, tokenizer_files

    read_config(folder, *ROLE_TYPES["mulan"])
    model = load_pretrained(folder)
    features = AutoFeatureExtractor.from_pretrained(str(folder), local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    adapter = ClapEncoder(hf_config(model), features.to_dict(), tokenizer_files(tokenizer), sample_rate,
                          num_quantizers=levels, codebook_size=codebook_size, source=str(folder))  # fmt: skip
    adopt(adapter, model)
    return adapter


def write(run: str, stage: str, adapter, folder: Path, data: dict | None = None) -> Path:
    from musiclm.artifacts import atomic_torch_save, handoff, model_path

    ckpt = handoff(adapter, data, global_step=0, epoch=0, imported_from=str(folder))
    return atomic_torch_save(ckpt, model_path(run, stage))


def main(argv: list[str] | None = None, stage: str = "codec") -> None:
    p = argparse.ArgumentParser(prog=f"musiclm import {stage}", description=__doc__)
    p.add_argument("--from", dest="folder", type=Path, required=True, help="save_pretrained folder or cache snapshot")
    p.add_argument("--run", default="demo")
    p.add_argument("--sample-rate", type=int, default=24_000, help="the chain's audio rate (data.sample_rate)")
    if stage == "codec":
        p.add_argument("--bandwidth", type=float, default=None, help="EnCodec kbps (1.5/3/6/12/24 = 2/4/8/16/32)")
        p.add_argument("--levels", type=int, default=None, help="residual levels to keep (default: all)")
    else:
        p.add_argument("--data-dir", default=None, help="audio shards `musiclm mulan fit-quantizer` embeds")
        p.add_argument("--levels", type=int, default=12, help="MuLan tokens per clip (residual VQ levels)")
        p.add_argument("--codebook-size", type=int, default=1024)
    ns = p.parse_args(argv)
    folder = ns.folder.expanduser().resolve()
    try:
        read_config(folder, *ROLE_TYPES[stage])  # a wrong folder fails before torch and transformers load
        if stage == "codec":
            adapter = codec_adapter(folder, ns.levels, ns.bandwidth, ns.sample_rate)
        else:
            adapter = mulan_adapter(folder, ns.sample_rate, ns.levels, ns.codebook_size)
    except ValueError as e:
        raise SystemExit(f"musiclm import {stage}: {e}") from None
    if stage == "codec":
        path = write(ns.run, stage, adapter, folder)
        print(f"wrote {path}: {type(adapter.model).__name__}, {adapter.num_levels} levels x {adapter.codebook_size} "
              f"at {adapter.frame_rate:g} Hz ({adapter.kbps():g} kbps)")  # fmt: skip
    else:  # the data module fit-quantizer and eval's validation read, as a trained MuLan records it
        window = adapter.window_samples / adapter.sample_rate
        data = {"sample_rate": ns.sample_rate, "clip_seconds": window}
        if ns.data_dir:
            data["data_dir"] = ns.data_dir
        path = write(ns.run, stage, adapter, folder, data)
        print(f"wrote {path}: CLAP, {adapter.embed_dim}-d embeddings of {window:g}-s windows; "
              f"fit its tokens with `musiclm mulan fit-quantizer --run {ns.run}`")  # fmt: skip


def codec_main(argv: list[str] | None = None) -> None:
    main(argv, "codec")


def mulan_main(argv: list[str] | None = None) -> None:
    main(argv, "mulan")
