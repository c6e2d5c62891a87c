"""Generation with real tokens put in stage by stage: which stage holds quality back at this budget.

Each test prompt's own clip has a token shard with its real semantic tokens and codec codes, so generation can
start further down the chain:
- `semantic`: the real semantic tokens -> generated coarse -> generated fine (the semantic LM left out);
- `coarse`: the real coarse levels -> generated fine (only the fine LM samples);
- `tokens`: the real codes, decoded (the codec's ceiling).
MuLan conditions on the prompt's text tokens, as in full generation, and every figure is the one full generation
reports (`evaluate.evaluate_generation`), so each row reads against `generation.*` directly.
"""

from __future__ import annotations

from pathlib import Path

import torch

from musiclm.data.shards import iter_tar_samples, list_shards
from musiclm.data.tokens import decode_token_sample
from musiclm.pipeline import MusicLM

ORACLES = ("semantic", "coarse", "tokens")


def real_tokens(token_dir: Path, keys: list[str]) -> dict[str, dict]:
    """The test split's token samples of `keys` (decoded), by key; keys without one are absent."""
    wanted, out = set(keys), {}
    for shard in list_shards(token_dir / "test"):
        for sample in iter_tar_samples(shard):
            if sample["__key__"] in wanted:
                out[sample["__key__"]] = decode_token_sample(sample)
    return out


@torch.inference_mode()
def oracle_waves(lm: MusicLM, prompts: list[dict], tokens: dict[str, dict], seconds: float, batch_size: int,
                 cfg_scale: float, seed: int) -> dict[str, torch.Tensor]:  # fmt: skip
    """{oracle: waves [N, T]} for prompts that all have real tokens; batch `start` samples with seed + start, as
    full generation does, and the same length (`seconds` of semantic frames and the acoustic frames they cover)."""
    hp = lm.coarse.hparams
    n_sem = round(seconds * hp.semantic_rate)
    n_ac = round(n_sem * hp.acoustic_rate / hp.semantic_rate)
    out: dict[str, list[torch.Tensor]] = {name: [] for name in ORACLES}
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        mulan = lm.mulan.tokens_from_text([p["caption"] for p in batch]).to(lm.device)
        semantic = torch.stack([tokens[p["key"]]["semantic"][:n_sem] for p in batch]).to(lm.device)
        codes = torch.stack([tokens[p["key"]]["acoustic"][:, :n_ac] for p in batch]).to(lm.device)
        coarse = lm.coarse.generate(mulan, semantic, cfg_scale=cfg_scale, seed=seed + start)
        out["semantic"].append(lm.codec.decode(lm.fine.generate(coarse, seed=seed + start)))
        out["coarse"].append(lm.codec.decode(lm.fine.generate(codes[:, : hp.coarse_levels], seed=seed + start)))
        out["tokens"].append(lm.codec.decode(codes))
    return {name: torch.cat(waves).float().cpu() for name, waves in out.items()}
