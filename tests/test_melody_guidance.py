"""Separate guidance scales for text and melody in the melody-conditioned semantic stage: the default path is the
one-scale path it always was, the three-row batch equals three separate forwards combined by `guide_two`, scale 0
drops the melody's contribution, and the pipeline and CLI pass the scale through (the Makefile: test_makefile.py)."""

from __future__ import annotations

import pytest
import soundfile as sf
import torch
from torch import nn

from musiclm import pipeline
from musiclm.lm import sampling
from musiclm.lm.module import CoarseStage, FineStage, SemanticStage
from musiclm.lm.patterns import as_steps
from musiclm.pipeline import MusicLM
from tests.test_lm import AR, CM, COARSE, FINE, QM, SEMANTIC, SMALL, SR, TS
from tests.test_melody_lm import CL, QL, stage
from tests.test_story import StandInCodec, StandInMuLan

B = 3


@pytest.fixture(scope="module")
def m() -> SemanticStage:
    """An untrained melody-conditioned stage with large embeddings, so the three branches' logits differ."""
    module = stage().eval()
    with torch.no_grad():
        module.model.net.token_emb.emb.weight.normal_(std=1.0)
    return module


def inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, CM, (B, QM), generator=g), torch.randint(0, CL, (B, QL, TS // 2), generator=g)


def recorded_logits(monkeypatch) -> list[torch.Tensor]:
    """The guided logits of every step, as the sampler hands them to `choose`."""
    seen: list[torch.Tensor] = []
    choose = sampling.choose

    def spy(logits, *a, **kw):
        seen.append(logits.clone())
        return choose(logits, *a, **kw)

    monkeypatch.setattr(sampling, "choose", spy)
    return seen


def branch_logits(m: SemanticStage, mulan: torch.Tensor, melody: torch.Tensor | None, codes: torch.Tensor,
                  text: bool = True) -> torch.Tensor:
    """`[B, S, C]` logits of each generated step from one separate, uncached forward of one branch."""
    cond = m.mulan_ids(mulan) if text else m.null_ids(QM).expand(B, -1)
    prefix = torch.cat([cond, m.melody_ids(melody, B)], dim=1)
    layout = m.target_layout(codes.shape[-1])
    x = torch.cat([as_steps(prefix, 1), m.target_ids(codes[..., None], layout)[:, :-1]], dim=1)
    logits, _ = m.model(x)
    return m.model.slot_logits(logits[:, prefix.shape[1] - 1 :], layout.head_index, m.codebook_size)[:, :, 0]


def test_default_path_is_the_one_scale_path(m):
    """melody_cfg_scale None: the two-row batch (both conditions, neither) it always ran, token for token."""
    mulan, melody = inputs()
    kw = dict(cfg_scale=3.0, seed=0, temperature=1.0)
    out = m.generate(mulan, TS, melody=melody, melody_cfg_scale=None, **kw)
    cond = torch.cat([m.mulan_ids(mulan), m.melody_ids(melody, B)], dim=1)
    null = torch.cat([m.null_ids(QM).expand(B, -1), m.melody_ids(None, B)], dim=1)
    gen = torch.Generator().manual_seed(0)
    layout = m.target_layout(TS)
    steps = sampling.sample_steps(m.model, as_steps(cond, 1), layout, null_prefix=as_steps(null, 1), cfg_scale=3.0,
                                  temperature=1.0, generator=gen)  # fmt: skip
    assert torch.equal(out, steps[..., 0])
    assert torch.equal(out, m.generate(mulan, TS, melody=melody, **kw))
    plain = SemanticStage(**SEMANTIC, window_seconds=TS / SR, **SMALL).eval()
    assert torch.equal(plain.generate(mulan, TS, **kw), plain.generate(mulan, TS, melody_cfg_scale=None, **kw))


@pytest.mark.parametrize("melody_scale", [2.0, 0.0])
def test_three_rows_equal_three_forwards_combined(m, monkeypatch, melody_scale):
    mulan, melody = inputs(1)
    seen = recorded_logits(monkeypatch)
    codes = m.generate(mulan, TS, melody=melody, cfg_scale=3.0, melody_cfg_scale=melody_scale, seed=0)
    both = branch_logits(m, mulan, melody, codes)
    text = branch_logits(m, mulan, None, codes)
    uncond = branch_logits(m, mulan, None, codes, text=False)
    want = uncond + 3.0 * (text - uncond) + melody_scale * (both - text)
    got = torch.stack(seen, dim=1)[:, :, 0]
    assert (both - text).abs().max() > 0.1  # the melody changes the logits: the check below can fail
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_melody_scale_zero_ignores_the_melody_and_equal_scales_are_one_scale(m, monkeypatch):
    mulan, melody = inputs(2)
    kw = dict(cfg_scale=3.0, seed=0, temperature=1.0)
    zero = m.generate(mulan, TS, melody=melody, melody_cfg_scale=0.0, **kw)
    assert torch.equal(zero, m.generate(mulan, TS, melody=melody.roll(1, 0), melody_cfg_scale=0.0, **kw))
    assert torch.equal(zero, m.generate(mulan, TS, **kw))  # text-only guidance, the melody null
    assert not torch.equal(zero, m.generate(mulan, TS, melody=melody, melody_cfg_scale=6.0, **kw))
    seen = recorded_logits(monkeypatch)
    m.generate(mulan, TS, melody=melody, cfg_scale=3.0, melody_cfg_scale=3.0, temperature=0)
    three = torch.stack(seen)
    seen.clear()
    m.generate(mulan, TS, melody=melody, cfg_scale=3.0, temperature=0)
    torch.testing.assert_close(three, torch.stack(seen), atol=1e-5, rtol=1e-5)


def test_melody_scale_errors(m):
    mulan, melody = inputs()
    with pytest.raises(ValueError, match="guides a melody"):
        m.generate(mulan, TS, cfg_scale=3.0, melody_cfg_scale=2.0)
    with pytest.raises(ValueError, match="give cfg_scale too"):
        m.generate(mulan, TS, melody=melody, melody_cfg_scale=2.0)
    plain = SemanticStage(**SEMANTIC, window_seconds=TS / SR, **SMALL).eval()
    with pytest.raises(ValueError, match="trained with melody tokens"):
        plain.generate(mulan, TS, cfg_scale=3.0, melody_cfg_scale=2.0)


class StandInMelody(nn.Module):
    """Wave -> melody tokens `[B, QL, W]` from the sign of each window's mean."""

    sample_rate = 400

    def tokenize(self, wave: torch.Tensor) -> torch.Tensor:
        w = wave[:, : wave.shape[-1] // 32 * 32].unflatten(-1, (-1, 32)).mean(-1)
        return (w > 0).long()[:, None].expand(-1, QL, -1) % CL


def chain(semantic: SemanticStage) -> MusicLM:
    torch.manual_seed(0)
    coarse = CoarseStage(**COARSE, coarse_levels=2, window_seconds=8 / AR, **SMALL)
    fine = FineStage(**FINE, coarse_levels=2, window_seconds=6 / AR, **SMALL)
    return MusicLM(StandInMuLan(), semantic, coarse, fine, StandInCodec(), melody=StandInMelody())


def spy_semantic(lm: MusicLM, monkeypatch) -> list[dict]:
    calls: list[dict] = []
    generate = lm.semantic.generate

    def spy(*a, **kw):
        calls.append(kw)
        return generate(*a, **kw)

    monkeypatch.setattr(lm.semantic, "generate", spy)
    return calls


def test_pipeline_and_cli_pass_the_melody_scale(m, monkeypatch, tmp_path):
    lm = chain(m)
    calls = spy_semantic(lm, monkeypatch)
    wave = torch.sin(torch.arange(400) / 7.0)
    out = lm.generate(["a tune"], seconds=0.32, melody=wave, melody_sample_rate=400, cfg_scale=2.0,
                      melody_cfg_scale=4.0, progress=False)  # fmt: skip
    assert calls[-1]["melody_cfg_scale"] == 4.0 and calls[-1]["cfg_scale"] == 2.0
    assert out.settings["melody_cfg_scale"] == 4.0 and out.tokens["semantic"].shape == (1, round(0.32 * SR))
    with pytest.raises(ValueError, match="guides a melody"):
        lm.generate(["a tune"], seconds=0.32, melody_cfg_scale=4.0, progress=False)
    plain = chain(SemanticStage(**SEMANTIC, window_seconds=TS / SR, **SMALL))
    with pytest.raises(ValueError, match="trained with melody tokens"):
        plain.generate(["a tune"], seconds=0.32, melody=wave, melody_cfg_scale=4.0, progress=False)

    sf.write(tmp_path / "hum.wav", wave.numpy(), 400)
    monkeypatch.setattr(MusicLM, "from_run", classmethod(lambda cls, run, device: lm))
    monkeypatch.setattr(pipeline, "write_outputs", lambda *a, **kw: [])
    pipeline.main(["--text", "a tune", "--seconds", "0.32", "--melody", str(tmp_path / "hum.wav"),
                   "--melody-cfg-scale", "5", "--device", "cpu"])  # fmt: skip
    assert calls[-1]["melody_cfg_scale"] == 5.0
    with pytest.raises(SystemExit):
        pipeline.main(["--text", "a tune", "--melody-cfg-scale", "5", "--device", "cpu"])
