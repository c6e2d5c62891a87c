"""Sampling: KV cache equals full recomputation, classifier-free guidance really drops the condition, seeds,
filters and sliding windows."""

from __future__ import annotations

import pytest
import torch

from musiclm.lm.module import CoarseStage, SemanticStage
from musiclm.lm.sampling import filter_logits, slide
from tests.test_lm import AR, CM, COARSE, KS, QM, SEMANTIC, SMALL, SR, TS, fit, toy_tokens


@pytest.fixture(scope="module")
def trained_semantic() -> SemanticStage:
    """A semantic stage trained on the toy language with a high conditioning-dropout rate."""
    torch.manual_seed(0)
    module = SemanticStage(**SEMANTIC, window_seconds=TS / SR, cond_dropout=0.3, **SMALL)
    fit(module, 60)
    return module.eval()


def mulan(n: int, seed: int) -> torch.Tensor:
    return torch.stack([b["mulan"] for b in toy_tokens(n, seed)])


def test_cached_and_uncached_greedy_match_beyond_the_window(trained_semantic):
    m = mulan(3, 5)
    cached = trained_semantic.generate(m, 3 * TS, temperature=0)  # slides: several windows
    assert cached.shape == (3, 3 * TS)
    assert torch.equal(cached, trained_semantic.generate(m, 3 * TS, temperature=0, use_cache=False))


def test_cached_and_uncached_delay_pattern_match():
    torch.manual_seed(0)
    module = CoarseStage(**COARSE, coarse_levels=3, pattern="delay", window_seconds=8 / AR, **SMALL).eval()
    sem = torch.stack([b["semantic"] for b in toy_tokens(2, 4)])
    a = module.generate(mulan(2, 4), sem, temperature=0.0)
    assert a.shape == (2, 3, 2 * TS)
    assert torch.equal(a, module.generate(mulan(2, 4), sem, temperature=0.0, use_cache=False))


def test_same_seed_same_tokens(trained_semantic):
    m = mulan(2, 6)
    a = trained_semantic.generate(m, TS, temperature=1.0, top_k=8, seed=3)
    assert torch.equal(a, trained_semantic.generate(m, TS, temperature=1.0, top_k=8, seed=3))
    assert not torch.equal(a, trained_semantic.generate(m, TS, temperature=1.0, top_k=8, seed=4))


def test_cfg_scale_one_equals_conditional(trained_semantic):
    m = mulan(4, 7)
    plain = trained_semantic.generate(m, TS, temperature=1.0, seed=0)
    assert torch.equal(plain, trained_semantic.generate(m, TS, temperature=1.0, seed=0, cfg_scale=1.0))


def test_null_branch_drops_the_condition(trained_semantic):
    """The unconditional logits ignore the MuLan tokens and differ from the conditional ones."""
    model = trained_semantic
    m = mulan(2, 8)
    m[1] = (m[0] + 1) % CM  # two different conditions
    cond = model.mulan_ids(m)
    null = model.null_ids(QM).expand_as(cond)
    with torch.no_grad():
        cond_logits = model.model(cond[..., None])[0][:, -1]
        null_logits = model.model(null[..., None])[0][:, -1]
    assert torch.allclose(null_logits[0], null_logits[1])
    assert not torch.allclose(cond_logits[0], cond_logits[1], atol=1e-2)
    assert (cond_logits - null_logits).abs().max() > 0.5
    guided = model.generate(m, TS, temperature=0, cfg_scale=3.0)
    assert guided.shape == (2, TS)


def test_top_k_top_p_filters():
    logits = torch.tensor([[3.0, 2.0, 1.0, 0.0]])
    assert torch.isinf(filter_logits(logits, top_k=2)).tolist() == [[False, False, True, True]]
    # probabilities ~ .64 .24 .09 .03: top_p 0.8 keeps the first two
    assert torch.isinf(filter_logits(logits, top_p=0.8)).tolist() == [[False, False, True, True]]
    assert not torch.isinf(filter_logits(logits, top_p=1.0)).any()


def test_slide_prompts_each_window_with_its_context():
    calls = []

    def gen(start, frames, prompt):
        calls.append((start, frames, None if prompt is None else prompt.shape[-1]))
        out = torch.arange(start, start + frames).view(1, 1, -1)
        if prompt is not None:
            assert torch.equal(prompt, out[..., : prompt.shape[-1]])
        return out

    out = slide(25, 10, 4, gen)
    assert torch.equal(out[0, 0], torch.arange(25))
    assert calls == [(0, 10, None), (6, 10, 4), (12, 10, 4), (18, 7, 4)]


def test_slide_continues_an_initial_prompt():
    def gen(start, frames, prompt):
        out = torch.arange(start, start + frames).view(1, 1, -1)
        if prompt is not None:
            out[..., : prompt.shape[-1]] = prompt
        return out

    initial = torch.tensor([[[100, 101, 102]]])
    out = slide(12, 6, 4, gen, initial)
    assert out[0, 0].tolist() == [100, 101, 102, 3, 4, 5, 6, 7, 8, 9, 10, 11]


def test_semantic_prompt_is_continued(trained_semantic):
    prompt = torch.stack([b["semantic"] for b in toy_tokens(2, 9)])[:, :5]
    out = trained_semantic.generate(mulan(2, 9), 2 * TS, temperature=0, prompt=prompt)
    assert out.shape == (2, 2 * TS) and torch.equal(out[:, :5], prompt)


def test_sliding_generation_keeps_the_toy_language_beyond_the_window(trained_semantic):
    m = mulan(16, 11)
    out = trained_semantic.generate(m, 3 * TS, temperature=0)
    rule = (m[:, :1] * 2 + (m[:, 1:2] % 3 + 1) * torch.arange(3 * TS)) % KS  # toy_tokens' semantic rule
    assert (out[:, TS:] == rule[:, TS:]).float().mean() > 0.7


@pytest.mark.parametrize("pattern", ["flatten", "delay"])
def test_coarse_and_fine_prompts_are_continued(pattern):
    """Audio continuation's acoustic half: both acoustic stages return a given prompt as their first frames, and
    the cached sampler (prompt prefilled) matches the uncached one."""
    from musiclm.lm.module import FineStage
    from tests.test_lm import FINE

    torch.manual_seed(0)
    coarse = CoarseStage(**COARSE, coarse_levels=2, pattern=pattern, window_seconds=8 / AR, **SMALL).eval()
    fine = FineStage(**FINE, coarse_levels=2, pattern=pattern, window_seconds=6 / AR, **SMALL).eval()
    toy = toy_tokens(2, 12)
    sem = torch.stack([b["semantic"] for b in toy])
    codes = torch.stack([b["acoustic"] for b in toy])
    out = coarse.generate(mulan(2, 12), sem, temperature=0.0, prompt=codes[:, :2, :5])
    assert out.shape == (2, 2, 2 * TS) and torch.equal(out[..., :5], codes[:, :2, :5])
    uncached = coarse.generate(mulan(2, 12), sem, temperature=0.0, prompt=codes[:, :2, :5], use_cache=False)
    assert torch.equal(out, uncached)
    full = fine.generate(out, temperature=0.0, prompt=codes[:, 2:, :7])
    assert full.shape == (2, 4, 2 * TS) and torch.equal(full[:, 2:, :7], codes[:, 2:, :7])
    assert torch.equal(full[:, :2], out)
