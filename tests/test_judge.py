"""The judges: one interface, the statistics behind judge.*, each judge on audio whose answer is known, the tagger
trained as a stage from shards, and the prompt sets eval grades."""

from __future__ import annotations

import math
from functools import partial
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from musiclm import artifacts
from musiclm.audio import encode_audio
from musiclm.data.shards import write_split_shards
from musiclm.judge import (
    ATTRIBUTES,
    DrumsJudge,
    InstrumentFamilyJudge,
    Judge,
    KeyModeJudge,
    NegationJudge,
    OrderJudge,
    TaggerModule,
    TempoJudge,
    agreement,
    default_judges,
)
from musiclm.judge.key import corpus_profiles
from musiclm.judge.labels import FAMILIES, IGNORE, present, targets
from musiclm.judge.prompts import ORDER_SEED, kind_prompts, negation_prompt, order_prompts, states
from musiclm.judge.scoring import score
from musiclm.train import train

SR = 16_000
FAMILY_TONE = {"piano": "sine", "organ": "square"}  # toy timbres standing in for two families


def toy_clip(family: str, drums: bool, seconds: float, seed: int, drums_from: float = 0.0) -> np.ndarray:
    """A tone whose timbre stands for `family`, plus noise bursts on the beat for drums (from `drums_from` s on)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    f = float(rng.choice([220.0, 330.0, 440.0]))
    x = np.sin(2 * np.pi * f * t) if FAMILY_TONE[family] == "sine" else np.sign(np.sin(2 * np.pi * f * t))
    x = 0.3 * x
    if drums:
        burst = (t % 0.5 < 0.04) & (t >= drums_from)
        x = x + 0.6 * burst * rng.standard_normal(len(t))
    return x.astype(np.float32)


def toy_attributes(family: str, drums: bool) -> dict:
    lead = {"piano": "Acoustic Grand Piano", "organ": "Drawbar Organ"}[family]
    return {"instrument_family": family, "has_drums": drums, "instruments": [lead] + ["Drum Kit"] * drums,
            "tempo_bpm": 120, "key": "C", "mode": "major"}  # fmt: skip


def toy_sample(index: int, split: str, seconds: float) -> list[dict]:
    family, drums = ("piano", "organ")[index % 2], bool((index // 2) % 2)
    x = toy_clip(family, drums, seconds, hash((split, index)) % 2**31)
    meta = {"caption": f"{family} {'with' if drums else 'without'} drums", "tags": [], "sample_rate": SR,
            "duration": seconds, "source": "test", "attributes": toy_attributes(family, drums)}  # fmt: skip
    return [{"__key__": f"{split}-{index:05d}", "flac": encode_audio(x, SR), "json": meta}]


def test_agreement_rate_floor_and_p():
    perfect = torch.eye(12, dtype=torch.bool)
    s = agreement(perfect, permutations=500)
    assert s["rate"] == 1.0 and s["chance"] == 0.0 and s["p"] == pytest.approx(1 / 501)
    constant = torch.ones(12, 12, dtype=torch.bool)  # every clip satisfies every prompt: no evidence of following
    s = agreement(constant, permutations=200)
    assert s["rate"] == s["chance"] == 1.0 and s["p"] == 1.0
    s = agreement(torch.ones(1, 1, dtype=torch.bool))
    assert s["rate"] == 1.0 and math.isnan(s["chance"])


def test_every_judge_has_the_interface():
    judges = default_judges(TaggerModule(sample_rate=SR, channels=[4, 8]))
    assert [j.attribute for j in judges] == list(ATTRIBUTES)
    assert all(isinstance(j, Judge) and j.name for j in judges)


def test_labels_mask_what_a_crop_may_not_hold():
    plain = {"attributes": toy_attributes("organ", True)}
    timed = {"attributes": toy_attributes("piano", True) | {"order": {"enters": "drums", "solo": None, "seconds": 4}}}
    y = targets([plain, timed, {"caption": "no attributes"}], list(FAMILIES))
    assert y["family"].tolist() == [FAMILIES.index("organ"), FAMILIES.index("piano"), IGNORE]
    assert y["drums"].tolist() == [1, IGNORE, IGNORE] and y["presence_mask"].tolist() == [True, False, False]
    assert y["presence"][0, FAMILIES.index("organ")] == 1 and y["presence"][0].sum() == 1
    assert present(plain["attributes"]) == {"organ", "drums"}


def click_track(bpm: float, seconds: float = 6.0) -> torch.Tensor:
    t = np.arange(int(seconds * SR)) / SR
    x = np.zeros_like(t)
    for onset in np.arange(0, seconds, 60 / bpm):
        i = int(onset * SR)
        n = min(400, len(t) - i)
        x[i : i + n] += np.sin(2 * np.pi * 1000 * t[:n]) * np.exp(-t[:n] * 60)
    return torch.tensor(x, dtype=torch.float32)[None]


@pytest.mark.parametrize("tracker", ["librosa", "autocorr"])
def test_tempo_judge_hears_a_click_track(tracker):
    judge = TempoJudge(tracker)
    [bpm] = judge.predict(click_track(100.0), SR)
    assert judge.matches(bpm, 100.0) and not judge.matches(bpm, 150.0) and not judge.matches(math.nan, 100.0)
    assert judge.target({"tempo_bpm": 100}) == 100.0 and judge.target({}) is None


def chords(roots: list[list[int]], seconds_each: float = 1.0) -> torch.Tensor:
    """Triads of harmonic tones (MIDI pitches), one after another."""
    t = np.arange(int(seconds_each * SR)) / SR
    parts = []
    for chord in roots:
        x = sum(np.sin(2 * np.pi * 440 * 2 ** ((p - 69) / 12) * k * t) / k for p in chord for k in (1, 2, 3))
        parts.append(x * np.hanning(len(t)))
    return torch.tensor(np.concatenate(parts) * 0.1, dtype=torch.float32)[None]


def test_key_profiles_are_the_corpus_own():
    """Counted from the composer's notes: the tonic sounds most, in the bass most of all; the third tells the mode,
    and minor is natural minor (a flat seventh, no leading tone)."""
    p = corpus_profiles()
    assert all(p[k].argmax() == 0 and p[k].sum() == pytest.approx(1.0) for k in p)
    assert p["bass major"][0] > p["major"][0] and p["bass minor"][0] > p["minor"][0]
    assert p["major"][4] > 10 * p["major"][3] and p["minor"][3] > 10 * p["minor"][4]
    assert p["minor"][10] > 10 * p["minor"][11]


def test_key_judge_without_basic_pitch_says_how_to_install_it(monkeypatch):
    from musiclm.judge import notes

    monkeypatch.setattr(notes.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ModuleNotFoundError, match="pip install --no-deps basic-pitch"):
        notes.model_path()


def test_key_judge_finds_tonic_and_mode():
    judge = KeyModeJudge()
    c_major = chords([[60, 64, 67], [65, 69, 72], [67, 71, 74], [60, 64, 67]])  # I IV V I
    a_minor = chords([[57, 60, 64], [62, 65, 69], [64, 68, 71], [57, 60, 64]])  # i iv V i
    assert judge.predict(torch.cat([c_major, a_minor]), SR) == ["C major", "A minor"]
    assert judge.target({"key": "F#", "mode": "minor"}) == "F# minor" and judge.target({"key": "C"}) is None


class StubTagger:
    """Hears the loudest half's family and drums wherever there is noise: the tagged judges' logic without a net."""

    families = list(FAMILIES)

    def tag(self, waves: torch.Tensor, sample_rate: int) -> dict[str, torch.Tensor]:
        n = len(self.families)
        drums = torch.tensor([float(w.abs().max() > 0.5) for w in waves])
        family = torch.zeros(len(waves), n)
        family[:, self.families.index("piano")] = 1.0
        presence = torch.zeros(len(waves), n)
        presence[:, self.families.index("piano")] = 0.9
        return {"family": family, "drums": drums, "presence": presence}


def test_tagged_judges_grade_negation_and_order_per_half():
    tagger = StubTagger()
    quiet, loud = torch.zeros(1, SR), torch.ones(1, SR)
    late_drums = torch.cat([quiet, loud], dim=-1)
    order, negation, drums = OrderJudge(tagger), NegationJudge(tagger), DrumsJudge(tagger)
    [pred] = order.predict(late_drums, SR)
    assert order.matches(pred, "drums") and not order.matches(pred, "piano")
    [early] = order.predict(torch.cat([loud, quiet], dim=-1), SR)
    assert not order.matches(early, "drums")
    [heard] = negation.predict(quiet, SR)
    assert negation.matches(heard, "drums") and not negation.matches(heard, "piano")
    assert drums.predict(torch.cat([quiet, loud]), SR) == [False, True]
    assert drums.target({"has_drums": True, "order": {"enters": "drums"}}) is None  # time-varying: not a clip label
    assert InstrumentFamilyJudge(tagger).predict(quiet, SR) == ["piano"]


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory) -> tuple[Path, Path]:
    """(toy shards, a run whose judge was trained on them by `musiclm train judge`, tiny profile)."""
    root = tmp_path_factory.mktemp("judge")
    for split, n in {"train": 48, "val": 8, "test": 12}.items():
        write_split_shards(root / "shards", split, list(range(n)), partial(toy_sample, split=split, seconds=2.0), 8)
    args = [f"--data.data_dir={root / 'shards'}", f"--data.sample_rate={SR}", "--data.clip_seconds=1.0",
            "--data.batch_size=16", "--model.lr=0.01", "--model.noise_prob=0.0", "--trainer.max_steps=60",
            "--trainer.val_check_interval=60", "--trainer.limit_val_batches=1"]  # fmt: skip
    train("judge", str(root / "run"), "tiny", "cpu", args)
    return root / "shards", root / "run"


def test_tagger_trains_as_a_stage_and_learns_toy_timbres(toy_run):
    """Its hand-off loads by class, and on toy timbres (sine = piano, square = organ, noise bursts = drums) it gets
    held-out clips right, per half too."""
    _, run = toy_run
    assert torch.load(artifacts.model_path(run, "judge"), weights_only=True)["hyper_parameters"]["families"] == list(
        FAMILIES
    )
    tagger = artifacts.load_model(run, "judge")
    assert isinstance(tagger, TaggerModule) and not tagger.training
    cases = [(f, d) for f in ("piano", "organ") for d in (False, True)]
    waves = torch.stack([torch.from_numpy(toy_clip(f, d, 2.0, 1000 + i)) for i, (f, d) in enumerate(cases)])
    assert InstrumentFamilyJudge(tagger).predict(waves, SR) == [f for f, _ in cases]
    assert DrumsJudge(tagger).predict(waves, SR) == [d for _, d in cases]
    late = torch.from_numpy(toy_clip("organ", True, 4.0, 7, drums_from=2.0))[None]
    [halves] = OrderJudge(tagger).predict(late, SR)
    assert OrderJudge(tagger).matches(halves, "drums")


class ToyChain:
    """Stands in for MusicLM in eval: it "generates" the toy timbre its prompt names (or the real clip's, when
    prompted with audio tokens), and its codec is the identity."""

    sample_rate, device = SR, torch.device("cpu")

    def __init__(self):
        self.mulan = SimpleNamespace(sample_rate=SR, tokenize=lambda w: (w.abs().amax(-1, keepdim=True) > 0.5).long())
        self.codec = SimpleNamespace(reconstruct=lambda w: w)

    def generate(self, texts, seconds, cfg_scale, seed, progress, mulan_tokens=None):
        waves = [toy_clip("organ" if "organ" in t else "piano", "with drums" in t, seconds, seed + i)
                 for i, t in enumerate(texts)]  # fmt: skip
        return SimpleNamespace(waves=torch.from_numpy(np.stack(waves)))


def test_eval_section_writes_judge_keys_and_the_report(toy_run, tmp_path):
    from musiclm.evaluate import evaluate_judges, generate_waves, test_prompts

    shards, run = toy_run
    lm = ToyChain()
    clips = test_prompts(shards, 100)
    generated = generate_waves(lm, [c["caption"] for c in clips[:6]], 2.0, 4, 3.0, 0)
    metrics = evaluate_judges(str(run), lm, clips, 6, generated, 4, 4, 3.0, 0, tmp_path / "report", order_clips=0)
    for a in ("instrument_family", "drums", "negation"):
        assert {f"judge.{a}.{k}" for k in ("real", "generated", "chance", "p", "codec", "audio_tokens")} <= set(metrics)
    assert metrics["judge.instrument_family.generated"] == 1.0 and metrics["judge.instrument_family.real"] == 1.0
    assert not any(k.startswith("judge.order") for k in metrics)  # no clip changes halfway and none rendered
    assert all(math.isfinite(v) for v in metrics.values())
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("<audio") == 6 + 4 and page.count("<td>negation</td>") == 4


def test_another_runs_judge_grades_a_run_without_one(toy_run, tmp_path):
    """`--judge-run`: a run with no judge of its own (or one trained on another corpus) is graded by the tagger it
    is given, exactly as the tagger's own run would be graded; without one the missing judge stops eval."""
    from musiclm.evaluate import evaluate_judges, generate_waves, test_prompts

    shards, run = toy_run
    lm, clips = ToyChain(), test_prompts(shards, 100)
    generated = generate_waves(lm, [c["caption"] for c in clips[:6]], 2.0, 4, 3.0, 0)
    other = tmp_path / "other"
    other.mkdir()
    args = (lm, clips, 6, generated, 4, 4, 3.0, 0)
    tagger = artifacts.load_model(run, "judge")
    borrowed = evaluate_judges(str(other), *args, tmp_path / "a", order_clips=0, tagger=tagger)
    own = evaluate_judges(str(run), *args, tmp_path / "b", order_clips=0)
    assert borrowed == own
    with pytest.raises(FileNotFoundError):
        evaluate_judges(str(other), *args, tmp_path / "c", order_clips=0)


def test_eval_renders_its_own_order_clips_when_the_test_split_has_none(toy_run, tmp_path):
    """The toy test split never changes halfway: eval renders order clips (the synthetic corpus's code, kind
    "order"), grades the order judge's ceiling on all of them (its margin calibrated on the val clips) and prompts
    with half of the kind prompts."""
    from musiclm.evaluate import evaluate_judges, generate_waves, test_prompts

    shards, run = toy_run
    lm, clips, val = ToyChain(), test_prompts(shards, 100), test_prompts(shards, 100, split="val")
    generated = generate_waves(lm, [c["caption"] for c in clips[:6]], 2.0, 4, 3.0, 0)
    metrics = evaluate_judges(str(run), lm, clips, 6, generated, 4, 4, 3.0, 0, tmp_path / "report", order_clips=3,
                              val_clips=val)  # fmt: skip
    assert 0.0 <= metrics["judge.order.real"] <= 1.0 and "judge.negation.real" in metrics
    assert 0.0 <= metrics["judge.order.margin"] < 1.0
    page = (tmp_path / "report" / "index.html").read_text()
    assert page.count("<audio") == 6 + 4 and page.count("halfway") >= 2  # 2 order prompts, 2 negation prompts


def test_order_prompts_carry_their_claim_and_are_not_training_clips():
    prompts = order_prompts(2, 4.0, SR)
    assert len(prompts) == 2 and all(p["written"] and "halfway" in p["caption"] for p in prompts)
    assert all(p["meta"]["attributes"]["order"]["enters"] for p in prompts)
    assert all(p["key"].startswith(f"synth-{ORDER_SEED}-") for p in prompts) and ORDER_SEED != 0  # `make data`: 0


def prompt(caption: str, **attributes) -> dict:
    return {"caption": caption, "meta": {"caption": caption, "attributes": attributes}, "flac": b""}


def test_prompts_state_what_they_are_graded_on():
    assert states("tempo", "A waltz at 120 BPM.", 120.0) and not states("tempo", "A slow waltz.", 80.0)
    assert states("key_mode", "A ballad in Eb minor.", "Eb minor") and not states("key_mode", "a minor key", "C minor")
    assert states("drums", "There is no percussion.", False) and not states("drums", "A waltz.", False)
    assert states("instrument_family", "anything", "piano")


def test_negation_prompts_follow_the_ground_truth():
    rng = np.random.default_rng(0)
    clip = prompt("A waltz on a violin.", **toy_attributes("piano", False))
    written = negation_prompt(clip, rng)
    what = written["meta"]["attributes"]["negation"]
    assert written["written"] and what not in present(clip["meta"]["attributes"]) and what in written["caption"]
    everything = dict(toy_attributes("piano", True), instruments=["Acoustic Grand Piano", "Violin",
                      "Nylon String Guitar", "Trumpet", "Drawbar Organ", "Acoustic Bass", "Drum Kit"])  # fmt: skip
    everything["instruments"][2] = "Acoustic Guitar (nylon)"
    assert negation_prompt(prompt("full band", **everything), rng) is None
    native = prompt("Drums come in halfway through.", **toy_attributes("organ", True), order={"enters": "drums"})
    prompts = kind_prompts([native] + [prompt(f"clip {i}.", **toy_attributes("piano", False)) for i in range(5)], 3)
    assert prompts[0] is native and len(prompts) == 3 and all(p.get("written") for p in prompts[1:])


class EchoJudge:
    """A judge whose verdict is the wave's first sample: generated rows follow their prompts exactly."""

    name, attribute = "echo", "tempo"

    def target(self, attributes: dict) -> float | None:
        return attributes.get("tempo_bpm")

    def predict(self, waves: torch.Tensor, sample_rate: int) -> list[float]:
        return [float(w[0]) for w in waves]

    def matches(self, pred: float, target: float) -> bool:
        return abs(pred - target) <= 0.1 * target


def test_score_writes_numbers_only_for_attributes_with_prompts():
    bpms = [60.0, 90.0, 120.0, 150.0, 180.0, 75.0]
    prompts = [prompt(f"A piece at {int(b)} BPM.", tempo_bpm=b) for b in bpms]
    prompts.append(prompt("No tempo named.", tempo_bpm=99))
    generated = torch.tensor([[b, 0.0] for b in bpms + [99.0]])
    real = (generated.clone(), [p["meta"]["attributes"] for p in prompts])
    metrics, verdicts = score([EchoJudge(), OrderJudge(StubTagger())], SR, real, prompts, generated,
                              {"codec": torch.zeros(7, 2)})  # fmt: skip
    assert metrics["judge.tempo.generated"] == 1.0 and metrics["judge.tempo.num_prompts"] == 6  # the 7th states none
    assert metrics["judge.tempo.chance"] == 0.0 and metrics["judge.tempo.p"] < 0.01
    assert metrics["judge.tempo.real"] == 1.0 and metrics["judge.tempo.codec"] == 0.0
    assert not any(k.startswith("judge.order") for k in metrics)  # no order prompts: no keys, not NaN
    assert all(math.isfinite(v) for v in metrics.values())
    assert verdicts[0]["tempo"] == {"target": "60 BPM", "verdict": "60 BPM", "ok": True} and verdicts[6] == {}


def test_a_judge_below_the_ceiling_bar_gives_no_verdict():
    """Validity before verdicts: real clips the judge gets mostly wrong leave only its ceiling in the report."""
    bpms = [60.0, 90.0, 120.0, 150.0, 180.0]
    prompts = [prompt(f"A piece at {int(b)} BPM.", tempo_bpm=b) for b in bpms]
    generated = torch.tensor([[b, 0.0] for b in bpms])
    wrong = torch.tensor([[2 * b, 0.0] for b in bpms])  # the judge hears every real clip at double tempo
    real = (wrong, [p["meta"]["attributes"] for p in prompts])
    metrics, verdicts = score([EchoJudge()], SR, real, prompts, generated)
    assert metrics == {"judge.tempo.real": 0.0} and verdicts == [{}] * 5


def test_a_judge_given_clips_too_short_for_it_says_how_long_they_must_be(caplog):
    bpms = [60.0, 90.0]
    prompts = [prompt(f"A piece at {int(b)} BPM.", tempo_bpm=b) for b in bpms]
    wrong = torch.tensor([[2 * b, 0.0] for b in bpms])
    judge = EchoJudge()
    judge.min_seconds = 8.0
    score([judge], SR, (wrong, [p["meta"]["attributes"] for p in prompts]), prompts, wrong)
    assert "needs 8-s clips" in caplog.text and "--seconds 8" in caplog.text
