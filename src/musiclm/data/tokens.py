"""Token-shard schema (docs/architecture.md): one `<stream>.npy` int16 array per token stream of the stage registry
(`mulan` [Q_mulan], `semantic` [T_sem], `acoustic` [Q_codec, T_ac]) and a json with caption/tags/attributes and the
ids of the checkpoints that made them."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from musiclm.artifacts import file_id, model_path
from musiclm.data.streams import collate
from musiclm.stages import OPTIONAL_STREAMS, TOKEN_STREAMS

TOKEN_STAGES = tuple(TOKEN_STREAMS)  # the stages whose hand-offs make tokens
ARRAYS = tuple(TOKEN_STREAMS.values())  # their streams, one array each
OPTIONAL_STAGES = tuple(OPTIONAL_STREAMS)  # stages whose tokens a shard holds where the run had their hand-off
OPTIONAL_ARRAYS = tuple(OPTIONAL_STREAMS.values())  # `melody` [Q_melody, T_melody]
RANKS = {"mulan": 1, "semantic": 1, "acoustic": 2, "melody": 2}  # array rank per stream (tests check it covers ARRAYS)
TIMED = ("semantic", "acoustic", "melody")  # streams with a time axis (last), padded and masked in batches


class StaleTokensError(RuntimeError):
    """Token shards made with other checkpoints than the run's current ones."""


def encode_npy(x: np.ndarray | torch.Tensor) -> bytes:
    x = x.cpu().numpy() if isinstance(x, torch.Tensor) else x
    if x.min(initial=0) < -1 or x.max(initial=0) > np.iinfo(np.int16).max:
        raise ValueError("token ids must fit int16")
    buf = io.BytesIO()
    np.save(buf, x.astype(np.int16), allow_pickle=False)
    return buf.getvalue()


def decode_npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def token_sample(key: str, tokens: dict[str, np.ndarray | torch.Tensor], meta: dict) -> dict:
    """One tar sample from `{stream: ids}` (every stream of `ARRAYS`)."""
    missing = [a for a in ARRAYS if a not in tokens]
    if missing:
        raise ValueError(f"{key}: no tokens for stream(s) {missing}")
    arrays = ARRAYS + tuple(a for a in OPTIONAL_ARRAYS if a in tokens)
    return {"__key__": key, **{f"{a}.npy": encode_npy(tokens[a]) for a in arrays}, "json": meta}


def decode_token_sample(sample: dict) -> dict:
    """Raw tar sample -> {mulan [Qm], semantic [Ts], acoustic [Qc, Ta] as int64 tensors, json}; ValueError if
    malformed."""
    missing = [f"{a}.npy" for a in ARRAYS if f"{a}.npy" not in sample]
    if missing or "json" not in sample:
        raise ValueError(f"{sample.get('__key__')}: token sample lacks {missing or ['json']}")
    arrays = ARRAYS + tuple(a for a in OPTIONAL_ARRAYS if f"{a}.npy" in sample)
    out = {a: torch.from_numpy(decode_npy(sample[f"{a}.npy"]).astype(np.int64)) for a in arrays}
    if any(t.ndim != RANKS[a] for a, t in out.items()):
        raise ValueError(f"{sample['__key__']}: token arrays have the wrong rank")
    out["json"] = json.loads(sample["json"])
    return out


def collate_tokens(samples: list[dict]) -> dict:
    """Batch token samples of different lengths: `semantic` / `acoustic` are right-padded with 0 to the longest in
    the batch and `semantic_mask` / `acoustic_mask` [B, T] (True = real frame) keep padding out of the loss."""
    batch = collate([{k: v for k, v in s.items() if k not in TIMED} for s in samples])
    for name in (t for t in TIMED if all(t in s for s in samples)):
        lengths = torch.tensor([s[name].shape[-1] for s in samples])
        longest = int(lengths.max())
        batch[name] = torch.stack([F.pad(s[name], (0, longest - s[name].shape[-1])) for s in samples])
        batch[f"{name}_mask"] = torch.arange(longest) < lengths[:, None]
    return batch


def current_ids(run: str | Path) -> dict[str, str]:
    """Content ids of the run's checkpoints that tokens depend on (missing ones are absent)."""
    stages = TOKEN_STAGES + OPTIONAL_STAGES
    return {s: file_id(model_path(run, s)) for s in stages if model_path(run, s).is_file()}


def check_token_freshness(token_dir: str | Path, run: str | Path) -> None:
    """Refuse tokens that were made with checkpoints other than the run's current ones."""
    now = current_ids(run)
    for manifest in sorted(Path(token_dir).glob("*/manifest.json")):
        made = json.loads(manifest.read_text()).get("checkpoint_ids", {})
        changed = [s for s in TOKEN_STAGES + OPTIONAL_STAGES if s in now and made.get(s) != now[s]]
        if changed:
            raise StaleTokensError(
                f"{manifest.parent} was tokenized with other {', '.join(changed)} checkpoint(s) "
                f"than {Path(str(run))}'s current ones: rebuild with `make tokenize RUN={Path(str(run)).name}`"
            )
