"""Story mode and audio continuation through `MusicLM.generate`, on toy LM stages with stand-in MuLan, codec and
semantic tokenizer (the real ones are exercised by the chain test); story files and their errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from musiclm.lm.module import CoarseStage, FineStage, SemanticStage
from musiclm.pipeline import MusicLM
from musiclm.story import StoryError, check_story, read_story
from tests.test_lm import AR, CM, COARSE, FINE, KS, QM, SEMANTIC, SMALL, SR, C, Q

HOP = 8  # codec samples per acoustic frame: the stand-in codec runs at AR * HOP Hz


class StandInMuLan(nn.Module):
    """Text -> MuLan tokens by a fixed hash, so different prompts condition differently."""

    def tokens_from_text(self, texts: list[str]) -> torch.Tensor:
        return torch.tensor([[(sum(map(ord, t)) * (q + 3)) % CM for q in range(QM)] for t in texts])


class StandInCodec(nn.Module):
    """Quantizes the mean of each hop into C levels (level q shifted by q): tokens a test can predict."""

    sample_rate = int(AR * HOP)

    @property
    def device(self) -> torch.device:
        return torch.device("cpu")

    def tokenize(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave[:, : wave.shape[-1] // HOP * HOP].unflatten(-1, (-1, HOP)).mean(-1)
        level0 = ((frames.clamp(-1, 1) + 1) / 2 * (C - 1)).round().long()
        return torch.stack([(level0 + q) % C for q in range(Q)], dim=1)

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return (codes[:, 0].float() / (C - 1) * 2 - 1).repeat_interleave(HOP, dim=-1)


class StandInSemantic(nn.Module):
    sample_rate = int(SR * 16)

    def tokenize(self, wave: torch.Tensor) -> torch.Tensor:
        frames = wave[:, : wave.shape[-1] // 16 * 16].unflatten(-1, (-1, 16)).mean(-1)
        return ((frames.clamp(-1, 1) + 1) / 2 * (KS - 1)).round().long()


@pytest.fixture(scope="module")
def lm() -> MusicLM:
    torch.manual_seed(0)
    semantic = SemanticStage(**SEMANTIC, window_seconds=8 / SR, **SMALL)
    coarse = CoarseStage(**COARSE, coarse_levels=2, window_seconds=8 / AR, **SMALL)
    fine = FineStage(**FINE, coarse_levels=2, window_seconds=6 / AR, **SMALL)
    return MusicLM(StandInMuLan(), semantic, coarse, fine, StandInCodec(), semantic_tokenizer=StandInSemantic())


def test_continuation_starts_with_the_prompts_own_tokens_at_any_rate(lm):
    rate = 1000  # neither the codec's nor the semantic tokenizer's rate: resampled to each
    t = torch.arange(int(0.4 * rate)) / rate
    wave = 0.8 * torch.sin(2 * torch.pi * 2 * t)
    out = lm.generate(["a tune"], seconds=1.2, temperature=0.0, progress=False, prompt_audio=wave,
                      prompt_sample_rate=rate)  # fmt: skip
    sem = lm.semantic_tokenizer.tokenize(lm_resample(wave, rate, StandInSemantic.sample_rate))
    codes = lm.codec.tokenize(lm_resample(wave, rate, StandInCodec.sample_rate))
    n = round(0.4 * SR)
    assert out.tokens["semantic"].shape == (1, round(1.2 * SR))
    assert torch.equal(out.tokens["semantic"][:, :n], sem[:, :n])
    assert torch.equal(out.tokens["acoustic"][..., : 2 * n], codes[..., : 2 * n])
    assert out.settings["prompt_seconds"] == pytest.approx(0.4) and "prompt" in out.timings
    with pytest.raises(ValueError, match="ask for more seconds"):
        lm.generate(["a tune"], seconds=0.4, progress=False, prompt_audio=wave, prompt_sample_rate=rate)


def lm_resample(wave: torch.Tensor, sr_in: int, sr_out: int) -> torch.Tensor:
    from musiclm.audio import resample_batch

    return resample_batch(wave[None], sr_in, sr_out)


def test_story_switches_the_condition_at_its_times(lm):
    """Before the switch the output equals plain generation from the first prompt; after it, it depends on the
    second prompt, and the coarse stage switches on the same frame."""
    kw = dict(seconds=1.2, temperature=0.0, progress=False, cfg_scale=None)
    first = lm.generate(["a calm piano intro"], **kw)
    a = lm.generate(None, story=[(0, "a calm piano intro"), (0.6, "energetic rock with drums")], **kw)
    b = lm.generate(None, story=[(0, "a calm piano intro"), (0.6, "a slow string quartet")], **kw)
    cut = round(0.6 * SR)
    assert torch.equal(a.tokens["semantic"][:, :cut], first.tokens["semantic"][:, :cut])
    assert not torch.equal(a.tokens["semantic"][:, cut:], b.tokens["semantic"][:, cut:])
    assert torch.equal(a.tokens["coarse"][..., : 2 * cut], first.tokens["coarse"][..., : 2 * cut])
    assert a.tokens["mulan"].shape == (1, 2, QM)
    assert a.texts == ["0s: a calm piano intro | 0.6s: energetic rock with drums"]
    assert a.waves.shape == first.waves.shape
    with pytest.raises(ValueError, match="not both"):
        lm.generate(["a"], story=[(0, "b")], **kw)
    with pytest.raises(ValueError, match="nothing to condition on"):
        lm.generate(None, **kw)


def test_story_per_row_prompts_and_continuation_compose(lm):
    wave = torch.rand(int(0.3 * StandInCodec.sample_rate)) - 0.5
    out = lm.generate(None, seconds=1.0, temperature=0.0, progress=False, prompt_audio=wave,
                      story=[(0, ["a", "b"]), (0.5, ["c", "d"])])  # fmt: skip
    assert out.tokens["semantic"].shape == (2, round(1.0 * SR))
    assert torch.equal(out.tokens["acoustic"][0, :, :10], out.tokens["acoustic"][1, :, :10])  # the same prompt


@pytest.mark.parametrize(
    ("story", "message"),
    [
        ([(1, "x")], "must start at 0"),
        ([(0, "x"), (5, "y"), (3, "z")], "must increase"),
        ([(0, "x"), (10, "y")], "not before the end"),
        ([], "no segments"),
        ([(0, " ")], "no prompt"),
    ],
)
def test_bad_stories_say_what_to_change(story, message):
    with pytest.raises(StoryError, match=message):
        check_story(story, seconds=10)


def test_story_file(tmp_path):
    path = tmp_path / "story.tsv"
    path.write_text("# a story\n0\ta calm piano intro\n\n8\tenergetic rock with drums\n")
    assert read_story(path) == [(0.0, "a calm piano intro"), (8.0, "energetic rock with drums")]
    path.write_text("0 a calm piano intro\n")
    with pytest.raises(StoryError, match=r"story.tsv:1: expected `seconds<TAB>prompt`"):
        read_story(path)


def test_generate_cli_refuses_bad_story_files(tmp_path, capsys):
    from musiclm.pipeline import main

    path = tmp_path / "story.tsv"
    path.write_text("0\tintro\n12\tbeyond the end\n")
    with pytest.raises(SystemExit):
        main(["--story", str(path), "--seconds", "10"])
    assert "not before the end (10 s)" in capsys.readouterr().err
