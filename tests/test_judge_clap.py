"""The CLAP judge (musiclm.judge.clap): pairwise retrieval accuracy against the other test prompts, on a tiny random
CLAP folder (tests/tiny_hf.py) and on fake encoders whose answers are known; its wiring into eval and the report."""

from __future__ import annotations

import math
import shutil
import zlib

import pytest
import torch
import torch.nn.functional as F

from musiclm.judge.clap import ClapJudge, check_clap_folder, own_wins, same_weights, wins
from musiclm.pretrained.hub import PretrainedFolderError
from tests.test_judge import SR, ToyChain, toy_run  # noqa: F401 (toy_run: the fixture, a trained toy tagger)
from tests.test_pretrained_codec import cli
from tests.tiny_hf import save_clap, save_dac

DIM = 16


class EchoEncoder:
    """Text: a fixed random unit vector per text; audio: the wave's first DIM samples, normalised. A clip made from
    a prompt's vector (`clips`) is therefore exactly as close to that prompt as CLAP could ever make it."""

    sample_rate = SR

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        vectors = [torch.randn(DIM, generator=torch.Generator().manual_seed(zlib.crc32(t.encode()))) for t in texts]
        return F.normalize(torch.stack(vectors), dim=-1)

    def embed_audio(self, wave: torch.Tensor) -> torch.Tensor:
        return F.normalize(wave[:, :DIM], dim=-1)

    def clips(self, texts: list[str], length: int = 64) -> torch.Tensor:
        return F.pad(self.embed_text(texts), (0, length - DIM))


class ToyEncoder:
    """Hears the toy chain's two facts (square wave = organ, noise bursts = drums) and reads them from captions."""

    sample_rate = SR

    def embed_text(self, texts: list[str]) -> torch.Tensor:
        return self.one_hot([("organ" in t, "with drums" in t) for t in texts])

    def embed_audio(self, wave: torch.Tensor) -> torch.Tensor:
        square = ((wave.abs() - 0.3).abs() < 0.01).float().mean(-1) > 0.5
        return self.one_hot(list(zip(square.tolist(), (wave.abs().amax(-1) > 0.5).tolist(), strict=True)))

    @staticmethod
    def one_hot(facts: list[tuple[bool, bool]]) -> torch.Tensor:
        return F.one_hot(torch.tensor([2 * a + b for a, b in facts]), 4).float()


@pytest.fixture(scope="module")
def clap_folder(tmp_path_factory):
    return save_clap(tmp_path_factory.mktemp("clap") / "clap")


def test_wins_counts_the_other_prompts_beaten_ties_half():
    sim = torch.tensor([[0.9, 0.1, 0.1], [0.2, 0.5, 0.8]])
    assert wins(sim).tolist() == [[1.0, 0.25, 0.25], [0.0, 0.5, 1.0]]
    assert wins(sim).mean(1).tolist() == [0.5, 0.5]  # every row averages chance exactly
    assert wins(sim, own=[0, 0, 2])[:, 1].tolist() == [1.0, 0.0]  # prompt 1 has prompt 0's text
    sim = torch.randn(9, 5, generator=torch.Generator().manual_seed(0)).round(decimals=1)  # some ties
    own = [0, 1, 2, 3, 4, 0, 1, 2, 3]
    assert torch.equal(own_wins(sim, own), wins(sim, own).diagonal())


def test_audio_equal_to_its_prompt_is_retrieved_every_time_and_shuffled_sits_at_chance():
    texts = [f"prompt {i}" for i in range(40)] + ["prompt 0"]  # a repeated text is one prompt, not a rival
    judge, enc = ClapJudge(EchoEncoder(), batch_size=7), EchoEncoder()
    real = enc.clips(texts)
    metrics, verdicts = judge.score(SR, (real, texts), texts, real, {"codec": torch.zeros_like(real)})
    assert metrics["judge.clap.real"] == metrics["judge.clap.generated"] == 1.0
    assert metrics["judge.clap.score"] == pytest.approx(1.0) and metrics["judge.clap.p"] < 0.001
    assert metrics["judge.clap.chance"] == pytest.approx(0.5, abs=0.02)  # 0.5 less (1 - 0.5) / (n - 1) at rate 1
    assert metrics["judge.clap.codec"] == 0.5  # silence is equally like every prompt: all ties
    assert verdicts[3]["clap"] == {"target": "its prompt over the 39 others", "verdict": "cosine 1.00; beats 39 of 39",
                                   "ok": True}  # fmt: skip
    shuffled = real[torch.roll(torch.arange(len(texts)), 1)]
    metrics, _ = judge.score(SR, (real, texts), texts, shuffled)
    assert abs(metrics["judge.clap.generated"] - 0.5) < 0.1 and metrics["judge.clap.p"] > 0.05
    metrics, verdicts = judge.score(SR, (shuffled, texts), texts, real)  # a CLAP that cannot hear the real clips
    assert set(metrics) == {"judge.clap.real", "judge.clap.score_real"} and verdicts == [{}] * len(texts)


def test_tiny_clap_folder_writes_every_key_in_range(clap_folder):
    judge = ClapJudge.from_folder(clap_folder, SR, batch_size=4)
    g = torch.Generator().manual_seed(0)
    texts = ["a sine tone", "a square tone", "noise", "piano music", "drums", "a tone"]
    real, generated = torch.randn(6, SR, generator=g) * 0.1, torch.randn(6, 3 * SR, generator=g) * 0.1
    metrics, verdicts = judge.score(SR, (real, texts), texts, generated, {"codec": real}, min_ceiling=0.0)
    rates = {f"judge.clap.{k}" for k in ("real", "generated", "chance", "p", "codec")}
    assert rates | {"judge.clap.score", "judge.clap.score_real", "judge.clap.num_prompts"} == set(metrics)
    assert all(0.0 <= metrics[k] <= 1.0 for k in rates)
    assert all(-1.0 <= metrics[k] <= 1.0 for k in ("judge.clap.score", "judge.clap.score_real"))
    assert len(verdicts) == 6 and all("clap" in v for v in verdicts) and judge.name == "CLAP (clap)"


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "preprocessor_config.json").unlink(), "no preprocessor_config.json (the feature extractor)"),
        (lambda d: (d / "tokenizer_config.json").unlink(), "no tokenizer_config.json (the tokenizer)"),
    ],
    ids=["no-config", "no-feature-extractor", "no-tokenizer"],
)
def test_a_broken_clap_folder_is_named_with_what_to_pass(clap_folder, tmp_path, break_it, message):
    folder = shutil.copytree(clap_folder, tmp_path / "clap")
    break_it(folder)
    with pytest.raises(PretrainedFolderError, match="CLAP_FROM") as e:
        check_clap_folder(folder)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_eval_refuses_a_codec_folder_in_one_line_before_anything_runs(tmp_path):
    proc = cli("eval", "--run", "nothing-here", "--clap-from", str(save_dac(tmp_path / "dac")), root=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr
    assert "'dac' is not supported for the CLAP judge" in lines[0] and "CLAP_FROM=DIR" in lines[0]


def test_eval_section_adds_the_clap_judge_to_eval_and_the_report(toy_run, tmp_path):  # noqa: F811
    from musiclm.evaluate import evaluate_judges, generate_waves, test_prompts

    shards, run = toy_run
    lm, clips = ToyChain(), test_prompts(shards, 100)
    generated = generate_waves(lm, [c["caption"] for c in clips[:6]], 2.0, 4, 3.0, 0)
    metrics = evaluate_judges(str(run), lm, clips, 6, generated, 4, 4, 3.0, 0, tmp_path / "report", order_clips=0,
                              clap=ClapJudge(ToyEncoder()))  # fmt: skip
    assert metrics["judge.clap.real"] == metrics["judge.clap.generated"] == 1.0  # 4 distinct toy captions
    assert metrics["judge.clap.num_prompts"] == 6 and metrics["judge.clap.audio_tokens"] == 1.0
    assert all(math.isfinite(v) for v in metrics.values())
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("<td>clap</td>") == 6 and "mean cosine: generated 1.00, real 1.00" in page  # not kind prompts


def test_the_runs_own_clap_is_recognised(clap_folder):
    """MULAN_FROM and CLAP_FROM the same model: eval must see the judge would share the chain's weights."""
    a, b = (ClapJudge.from_folder(clap_folder, SR).encoder for _ in range(2))
    assert same_weights(a, b)
    with torch.no_grad():
        next(b.model.parameters()).add_(1e-3)
    assert not same_weights(a, b) and not same_weights(a, EchoEncoder())
