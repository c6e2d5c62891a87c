"""Melody tokens as a conditioning stream: token shards carry them, the semantic stage reads them after the MuLan
tokens and the coarse stage after the semantic tokens, each with its own condition dropout, and a stage trained on a
toy language where the melody decides its tokens follows the melody it is given at generation."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import DataLoader

from musiclm.data.datamodules import TokenDecoder
from musiclm.data.tokens import collate_tokens, decode_token_sample, token_sample
from musiclm.lm.module import CoarseStage, SemanticStage
from tests.test_lm import AR, CM, COARSE, KS, QM, SEMANTIC, SMALL, SR, TS, C, fit

QL, CL, MR = 2, 4, 12.5  # melody levels, codes per level, columns per second (a column per 2 semantic frames)
MELODY = dict(SEMANTIC, melody_levels=QL, melody_codebook_size=CL, melody_rate=MR)


def toy(n: int, seed: int) -> list[dict]:
    """MuLan tokens are noise; the semantic tokens are a function of the melody column they fall in."""
    g = torch.Generator().manual_seed(seed)
    melody = torch.randint(0, CL, (n, QL, TS // 2), generator=g)
    t = torch.arange(TS)
    semantic = (CL * melody[:, 0, t // 2] + melody[:, 1, t // 2]) % KS  # the column's two codes, one of KS ids
    mulan = torch.randint(0, CM, (n, QM), generator=g)
    return [{"mulan": mulan[i], "semantic": semantic[i], "melody": melody[i]} for i in range(n)]


def stage(**kw) -> SemanticStage:
    torch.manual_seed(0)
    return SemanticStage(**MELODY, window_seconds=TS / SR, melody_conditioning=True, **SMALL, **kw)


def test_without_the_flag_the_vocabulary_is_unchanged():
    plain = SemanticStage(**SEMANTIC, **SMALL)
    assert SemanticStage(**MELODY, **SMALL).vocab.size == plain.vocab.size
    assert stage().vocab.size == plain.vocab.size + QL * CL + QL
    with pytest.raises(ValueError, match="trained without melody"):
        plain.eval().generate(torch.zeros(1, QM, dtype=torch.long), 4, melody=torch.zeros(1, QL, 2, dtype=torch.long))


def test_melody_dropout_is_its_own():
    batch = collate_tokens(toy(8, 0))
    m = stage(cond_dropout=0.0, melody_dropout=1.0).train()
    prefix, droppable = m.prefix(batch)
    assert prefix.shape[1] == QM + m.melody_windows * QL and droppable.sum() == QM
    dropped = m.drop_condition(prefix, droppable)
    assert torch.equal(dropped[:, :QM], prefix[:, :QM])
    assert torch.equal(dropped[:, QM:], m.melody_ids(None, 8).expand(8, -1))
    m = stage(cond_dropout=1.0, melody_dropout=0.0).train()
    dropped = m.drop_condition(prefix, droppable)
    assert torch.equal(dropped[:, QM:], prefix[:, QM:]) and not torch.equal(dropped[:, :QM], prefix[:, :QM])


def test_missing_columns_are_the_melody_null():
    m = stage().eval()
    ids = m.melody_ids(torch.zeros(1, QL, 1, dtype=torch.long), 1)
    assert torch.equal(ids[:, QL:], m.melody_ids(None, 1)[:, QL:]) and not torch.equal(ids[:, :QL], ids[:, QL : 2 * QL])


def test_token_shards_carry_melody_and_the_crop_follows_it():
    x = toy(1, 0)[0]
    sample = token_sample("k", {"mulan": x["mulan"], "semantic": x["semantic"],
                                "acoustic": torch.zeros(2, 2 * TS, dtype=torch.long), "melody": x["melody"]},
                          {"caption": "toy"})  # fmt: skip
    raw = {k: v if isinstance(v, bytes) else json.dumps(v).encode() for k, v in sample.items()}
    assert torch.equal(decode_token_sample(raw)["melody"], x["melody"])
    crop = TokenDecoder(4 / SR, SR, 2 * SR, train=False, seed=0, melody_rate=MR)(raw)
    assert torch.equal(crop["melody"], x["melody"][:, 1:])  # the 4-frame crop starts at frame 2: column 1


def fit_on(m, language, steps: int) -> dict:
    """`m` fitted on a toy language (`language(n, seed)`), in eval mode; returns a test batch of it."""
    train = DataLoader(language(256, 0), batch_size=16, shuffle=True, collate_fn=collate_tokens)
    val = DataLoader(language(32, 1), batch_size=32, collate_fn=collate_tokens)
    fit(m, steps, loaders=(train, val))
    m.eval()
    return collate_tokens(language(16, 2))


def test_semantic_stage_follows_the_melody_it_is_given():
    m = stage(cond_dropout=0.0, melody_dropout=0.1)
    test = fit_on(m, toy, 150)
    right = m.generate(test["mulan"], TS, temperature=0, melody=test["melody"])
    wrong = m.generate(test["mulan"], TS, temperature=0, melody=test["melody"].roll(1, 0))
    acc_right = (right == test["semantic"]).float().mean().item()
    acc_wrong = (wrong == test["semantic"]).float().mean().item()
    assert acc_right > 0.8 and acc_right > acc_wrong + 0.4, (acc_right, acc_wrong)


def coarse_toy(n: int, seed: int) -> list[dict]:
    """MuLan tokens are noise and the semantic tokens say nothing (all 0); both coarse levels are a function of the
    melody column they fall in."""
    g = torch.Generator().manual_seed(seed)
    melody = torch.randint(0, CL, (n, QL, TS // 2), generator=g)
    t = torch.arange(2 * TS)  # acoustic frames at twice the semantic rate: a melody column per 4 of them
    level0 = (CL * melody[:, 0, t // 4] + melody[:, 1, t // 4]) % C
    acoustic = torch.stack([level0, (level0 * 3 + 1) % C], dim=1)
    mulan, semantic = torch.randint(0, CM, (n, QM), generator=g), torch.zeros(n, TS, dtype=torch.long)
    return [{"mulan": mulan[i], "semantic": semantic[i], "acoustic": acoustic[i], "melody": melody[i]}
            for i in range(n)]  # fmt: skip


def coarse_stage(**kw) -> CoarseStage:
    torch.manual_seed(0)
    args = dict(COARSE, melody_levels=QL, melody_codebook_size=CL, melody_rate=MR, coarse_levels=2, pattern="delay",
                window_seconds=TS / SR, melody_conditioning=True, **SMALL)  # fmt: skip
    return CoarseStage(**(args | kw))


def test_coarse_melody_prefix_follows_the_semantic_tokens_and_the_crop():
    plain = CoarseStage(**COARSE, coarse_levels=2, **SMALL)
    m = coarse_stage().train()
    assert m.vocab.size == plain.vocab.size + QL * CL + QL
    batch = collate_tokens(coarse_toy(4, 0))
    prefix, droppable = m.prefix(batch)
    assert prefix.shape[1] == QM + TS + m.melody_windows * QL and droppable.sum() == QM
    assert torch.equal(prefix[:, QM + TS :], m.melody_ids(batch["melody"], 4))
    half = TS / SR / 2  # a half-length window starts on a random semantic frame
    m = coarse_stage(window_seconds=half).train()
    w = round(half * SR)
    batch["semantic"] = torch.arange(TS).expand(4, -1)  # the crop's start read off the semantic tokens it kept
    for seed in range(4):
        torch.manual_seed(seed)
        cropped = m.crop(batch)
        start = next(s for s in range(TS - w + 1) if torch.equal(cropped["semantic"], batch["semantic"][:, s : s + w]))
        assert torch.equal(cropped["acoustic"], batch["acoustic"][..., round(start * AR / SR) :][..., : 2 * w])
        assert cropped["melody_start"] == m.melody_offset(start) == round(start / SR * MR)
    with pytest.raises(ValueError, match="coarse stage was trained without melody"):
        plain.eval().generate(batch["mulan"], batch["semantic"], melody=batch["melody"])


def test_coarse_stage_follows_the_melody_it_is_given():
    m = coarse_stage(cond_dropout=0.0, melody_dropout=0.1)
    test = fit_on(m, coarse_toy, 300)
    truth = test["acoustic"]
    right = m.generate(test["mulan"], test["semantic"], temperature=0, melody=test["melody"])
    wrong = m.generate(test["mulan"], test["semantic"], temperature=0, melody=test["melody"].roll(1, 0))
    guided = m.generate(test["mulan"], test["semantic"], temperature=0, melody=test["melody"], cfg_scale=1.0,
                        melody_cfg_scale=2.0)  # fmt: skip
    acc = {name: (codes == truth).float().mean().item() for name, codes in
           (("right", right), ("wrong", wrong), ("guided", guided))}  # fmt: skip
    assert acc["right"] > 0.6 and acc["right"] > acc["wrong"] + 0.4, acc  # chance: 1/16 of the codes
    assert acc["guided"] > 0.6, acc
