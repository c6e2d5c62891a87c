"""`musiclm eval --run RUN`: every stage's headline metric plus generation quality -> reports/<RUN>/eval.json.

Stage metrics come from each module's own validation loop (Trainer.validate with the data module the checkpoint
was trained with), so the numbers are the ones TensorBoard shows. Generation metrics use prompts from the test
split, whose ground-truth attributes (tempo) are known. The `judge.*` figures grade the same generations with judges
that share no weights with the chain (`musiclm.judge`) and write reports/<RUN>/index.html.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import lightning as L
import torch

from musiclm.artifacts import atomic_write_bytes, build_from_handoff, load_model, read_handoff, run_dir
from musiclm.audio import crop, load_audio, resample_batch
from musiclm.data.shards import NoCaptionsError, is_captioned, iter_tar_samples, list_shards
from musiclm.judge import default_judges
from musiclm.judge.calibrate import order_margin
from musiclm.judge.clap import ATTRIBUTE as CLAP
from musiclm.judge.clap import ClapJudge, check_clap_folder, same_weights
from musiclm.judge.prompts import kind_prompts, order_prompts
from musiclm.judge.scoring import score
from musiclm.judge.tagger import TaggerModule
from musiclm.log import save_wave_spectrogram_png
from musiclm.melody.evaluate import chroma_figures, similarity_matrix
from musiclm.metrics.fad import FrechetAudioDistance, logmel_stats_embedding
from musiclm.metrics.mcc import MuLanCycleConsistency
from musiclm.metrics.spectral import SpectralFlatness
from musiclm.metrics.tempo import TempoAdherence
from musiclm.oracles import oracle_waves, real_tokens
from musiclm.paths import data_dir, dataset_dirs, reports_dir, resolve
from musiclm.pipeline import MusicLM
from musiclm.pretrained.hub import PretrainedFolderError
from musiclm.report import write_report
from musiclm.stages import LM_STAGES, STAGES
from musiclm.story_eval import evaluate_continuation, evaluate_story

TEST_CLIPS = 10_000  # the test clips eval reads at most: every one sets the judges' ceilings
VAL_CLIPS = 256  # the val clips the order judge's margin is calibrated on (`judge.calibrate`)
# melody guidance of eval's melody.* generations, beside text guidance 3: guided by one shared scale of 3 the demo's
# melody-conditioned coarse LM stays at chance; at 6 or 9 it follows the melody (docs/measurements.md)
MELODY_CFG_SCALE = 6.0
ORDER_CLIPS = 32  # temporal-order clips eval renders when the test split has none: the order judge's ceiling


def validate_stage(run: str, stage: str, **data_overrides) -> dict[str, float]:
    """Run the stage's validation loop on its val split; returns the logged metrics. A stage that learns from text
    reads captioned clips only, whatever its hand-off recorded (imported and older ones record nothing)."""
    ckpt = read_handoff(run, stage)
    module = build_from_handoff(ckpt, stage)
    stored = ckpt.get("datamodule_hyper_parameters", {})
    if STAGES[stage].captions:
        data_overrides = {"captioned_only": True} | data_overrides
    workers = min(int((stored | data_overrides).get("num_workers", 0)), 2)
    datamodule = STAGES[stage].data_class().from_hparams(stored, **(data_overrides | {"num_workers": workers}))
    trainer = L.Trainer(
        accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False
    )
    [metrics] = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in metrics.items()}


def pick(metrics: dict[str, float], *names: str) -> float:
    for n in names:
        if n in metrics:
            return metrics[n]
    raise KeyError(f"none of {names} in {sorted(metrics)}")


def test_prompts(dataset_dir: Path, n: int, split: str = "test") -> list[dict]:
    """The first n captioned clips of `split` (deterministic; test: the prompts): caption, attributes and the real
    audio bytes. Uncaptioned clips have no prompt to give, so they are passed over and counted."""
    shards = [s for d in dataset_dirs(dataset_dir) for s in list_shards(d / split)]
    if not shards:
        raise FileNotFoundError(f"no {split} shards in {dataset_dir / split}: build them with `make data`")
    out, uncaptioned = [], 0
    for shard in shards:
        for s in iter_tar_samples(shard):
            meta = json.loads(s["json"])
            if not is_captioned(meta):
                uncaptioned += 1
                continue
            out.append({"key": s["__key__"], "caption": meta["caption"], "meta": meta, "flac": s["flac"]})
            if len(out) == n:
                break
        if len(out) == n:
            break
    print(f"eval: {len(out)} captioned {split} clips ({uncaptioned} uncaptioned passed over)")
    if not out:
        raise NoCaptionsError(
            f"{dataset_dir / 'test'} has no captioned clip: eval prompts with test captions; ingest captions "
            "(--captions, sidecars, tags or --folder-tags) or evaluate on a captioned DATASET"
        )
    return out


def generate_waves(lm: MusicLM, texts: list[str], seconds: float, batch_size: int, cfg_scale: float, seed: int,
                   mulan_tokens: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """[N, T] generated audio; the batch starting at prompt `start` is sampled with seed + start, as eval always has.
    `mulan_tokens` [N, Q] replace the texts' MuLan tokens."""
    out = []
    for start in range(0, len(texts), batch_size):
        given = None if mulan_tokens is None else mulan_tokens[start : start + batch_size]
        batch = texts[start : start + batch_size]
        result = lm.generate(batch, seconds=seconds, cfg_scale=cfg_scale, seed=seed + start, progress=False,
                             mulan_tokens=given)  # fmt: skip
        out.append(result.waves)
    return torch.cat(out)


def real_waves(prompts: list[dict], sample_rate: int, length: int, mode: str = "start") -> torch.Tensor:
    """[N, length] of the prompts' real clips at `sample_rate`."""
    return torch.stack([torch.from_numpy(crop(load_audio(p["flac"], sample_rate), length, mode=mode)) for p in prompts])


def fad_logmel_other_real(prompts: list[dict], others: list[dict], sample_rate: int, length: int) -> float:
    """`generation.fad_logmel` of a perfect sampler of the corpus: the prompts' real clips against as many *other*
    real test clips, cropped alike. FAD from a few dozen clips in 128 dimensions is far from 0 even between two sets
    of real clips, so this floor, not 0, is what generation's figure can approach at this number of prompts."""
    fad = FrechetAudioDistance()
    fad.update(logmel_stats_embedding(real_waves(prompts, sample_rate, length), sample_rate), real=True)
    fad.update(logmel_stats_embedding(real_waves(others, sample_rate, length), sample_rate), real=False)
    return float(fad.compute())


def evaluate_generation(
    lm: MusicLM, prompts: list[dict], generated: torch.Tensor, batch_size: int, plots: Path | None
) -> dict[str, float]:
    """MuLan, FAD and tempo figures of `generated` [N, T] (row i made for prompt i)."""
    sr = lm.sample_rate
    mcc, tempo = MuLanCycleConsistency(), TempoAdherence()
    fad_mulan, fad_logmel = FrechetAudioDistance(), FrechetAudioDistance()
    flatness, flatness_real = SpectralFlatness(), SpectralFlatness()  # notes vs noise, judged by no model of ours
    # The same margin on the real clips (the ceiling MuLan allows) and on them through the codec (what the acoustic
    # tokens can carry at best): where generation's margin sits between them says which stage loses the prompt.
    mcc_real, mcc_codec = MuLanCycleConsistency(), MuLanCycleConsistency()
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        texts = [p["caption"] for p in batch]
        fake = generated[start : start + batch_size]
        real = real_waves(batch, sr, fake.shape[-1])
        fake_emb, real_emb = lm.embed_audio(fake), lm.embed_audio(real)
        with torch.inference_mode():
            text_emb = lm.mulan.embed_text(texts).cpu()
            resynth = lm.codec.reconstruct(real).cpu()
        mcc.update(text_emb, fake_emb)
        mcc_real.update(text_emb, real_emb)
        mcc_codec.update(text_emb, lm.embed_audio(resynth))
        fad_mulan.update(real_emb, real=True)
        fad_mulan.update(fake_emb, real=False)
        fad_logmel.update(logmel_stats_embedding(real, sr), real=True)
        fad_logmel.update(logmel_stats_embedding(fake, sr), real=False)
        flatness.update(fake, sr)
        flatness_real.update(real, sr)
        bpm = [p["meta"].get("attributes", {}).get("tempo_bpm", math.nan) for p in batch]
        tempo.update(fake, torch.tensor(bpm, dtype=torch.float64), sr)  # NaN targets are skipped one by one
        if plots is not None and start == 0:
            for i, w in enumerate(fake[:4]):
                save_wave_spectrogram_png(plots / f"generated_{i}.png", w, sr, texts[i][:90])
    c, t = mcc.compute(), tempo.compute()
    return {
        "mcc": float(c["mcc"]),
        "mcc_margin": float(c["mcc_margin"]),
        "mcc_margin_p": float(c["mcc_margin_p"]),
        "mcc_margin_real": float(mcc_real.compute()["mcc_margin"]),
        "mcc_margin_codec": float(mcc_codec.compute()["mcc_margin"]),
        "fad_mulan": float(fad_mulan.compute()),
        "fad_logmel": float(fad_logmel.compute()),
        "spectral_flatness": float(flatness.compute()),
        "spectral_flatness_real": float(flatness_real.compute()),
        "adherence_tempo": float(t["adherence"]),
        "adherence_tempo_chance": float(t["chance"]),
        "num_prompts": len(prompts),
    }


def rendered_order_prompts(clips: list[dict], count: int, sample_rate: int) -> list[dict]:
    """`count` temporal-order clips rendered for eval (`judge.prompts.order_prompts`) as long as the test clips,
    or none when the test split has its own (a corpus built with --prompt-kinds-rate) or FluidSynth is missing."""
    if count <= 0 or any("order" in (c["meta"].get("attributes") or {}) for c in clips):
        return []
    seconds = float(clips[0]["meta"].get("duration") or 0) or 8.0
    try:
        return order_prompts(count, seconds, sample_rate)
    except FileNotFoundError as e:
        print(f"judge.order: no order clips rendered ({e}): no judge.order.* keys")
        return []


def calibrated_order_margin(tagger, val_clips: list[dict], sample_rate: int, length: int) -> float | None:
    """The order judge's margin from the val clips cut like the test clips (None: too few with ground truth)."""
    if not val_clips:
        return None
    attributes = [c["meta"].get("attributes") or {} for c in val_clips]
    margin = order_margin(tagger, real_waves(val_clips, sample_rate, length, mode="center"), attributes, sample_rate)
    if margin is not None:
        print(f"judge.order: margin {margin:.2f} calibrated on {len(val_clips)} val clips")
    return margin


def evaluate_judges(
    run: str, lm: MusicLM, clips: list[dict], num_prompts: int, generated: torch.Tensor, num_kind_prompts: int,
    batch_size: int, cfg_scale: float, seed: int, out_dir: Path, order_clips: int = ORDER_CLIPS,
    clap: ClapJudge | None = None, val_clips: list[dict] | None = None, tagger: TaggerModule | None = None,
) -> dict[str, float]:  # fmt: skip
    """The `judge.*` figures and reports/<RUN>/index.html. The first `num_prompts` test clips are the prompts
    `generated` was made for; negation / temporal-order prompts come from the other test clips (`kind_prompts`) and
    are generated here. When no test clip changes halfway, eval renders `order_clips` temporal-order clips of its
    own: all of them set the order judge's ceiling, and the first half of `num_kind_prompts` are order prompts
    (the rest negation, so eval generates no more than before). Judges grade real clips (ceiling: every test clip),
    generations, shuffled prompts (floor), the real clips through the codec and the chain prompted with the real
    clips' MuLan audio tokens. Real clips are cut around their middle, so a change halfway through a clip is halfway
    through the cut too. `clap` (the user's CLAP) grades the test prompts (not the kind prompts), its ceiling on
    every test clip against its caption. `val_clips` (with ground truth) calibrate the order judge's margin
    (`judge.calibrate.order_margin`); without them it keeps its default. `tagger`: the judges' model (default this
    run's judge), so runs trained on different corpora can be scored by one judge."""
    tagger = tagger if tagger is not None else load_model(run, "judge")
    sr, length = lm.sample_rate, generated.shape[-1]
    judges = default_judges(tagger, calibrated_order_margin(tagger, val_clips or [], sr, length))
    seconds = length / sr
    rendered = rendered_order_prompts(clips, order_clips, sr)
    asked = rendered[: num_kind_prompts // 2]
    extra = asked + kind_prompts(clips[num_prompts:], num_kind_prompts - len(asked), seed)
    prompts = clips[:num_prompts] + extra
    texts = [p["caption"] for p in prompts]
    if extra:  # a small test split may leave no clip for negation / temporal-order prompts
        more = generate_waves(lm, texts[num_prompts:], seconds, batch_size, cfg_scale, seed + num_prompts)
        generated = torch.cat([generated, more])
    real = real_waves(prompts, sr, length, mode="center")
    with torch.inference_mode():
        tokens = lm.mulan.tokenize(resample_batch(real, sr, lm.mulan.sample_rate).to(lm.device)).cpu()
        conditions = {"codec": torch.cat([lm.codec.reconstruct(real[i : i + batch_size]).cpu()
                                          for i in range(0, len(real), batch_size)])}  # fmt: skip
    conditions["audio_tokens"] = generate_waves(lm, texts, seconds, batch_size, cfg_scale, seed, mulan_tokens=tokens)
    # A written negation is a claim about a test clip, a rendered order clip one about itself: ceiling items, graded
    # on that claim alone (the test clips already set the other judges' ceilings).
    written = [p for p in extra if p.get("written") and p not in asked] + rendered
    ceiling_clips = real_waves(clips + written, sr, length, mode="center")
    ceiling_attrs = [c["meta"].get("attributes") or {} for c in clips] + [
        {k: p["meta"]["attributes"][k] for k in ("negation", "order") if k in p["meta"]["attributes"]} for p in written
    ]
    metrics, verdicts = score(judges, sr, (ceiling_clips, ceiling_attrs), prompts, generated, conditions)
    if "judge.order.real" in metrics:  # the rule's margin (calibrated on val), next to the ceiling it gives
        metrics["judge.order.margin"] = float(next(j for j in judges if j.attribute == "order").margin)
    names = {j.attribute: j.name for j in judges}
    if clap is not None:
        n = len(prompts) - len(extra)
        more, said = clap.score(sr, (ceiling_clips[: len(clips)], [c["caption"] for c in clips]), texts[:n],
                                generated[:n], {k: v[:n] for k, v in conditions.items()})  # fmt: skip
        metrics |= more
        for verdict, clap_verdict in zip(verdicts, said, strict=False):
            verdict.update(clap_verdict)
        names[CLAP] = clap.name
    page = write_report(out_dir, run_dir(run).name, metrics, texts, generated, sr, verdicts, names)
    print(f"wrote {page}")
    return metrics


def evaluate_oracles(run: str, lm: MusicLM, prompts: list[dict], seconds: float, batch_size: int, cfg_scale: float,
                     seed: int) -> dict[str, float]:  # fmt: skip
    """`oracle.<stage>.*`: the generation figures with real tokens put in from that stage on (`musiclm.oracles`),
    over the prompts whose clips the run tokenized; where they recover from `generation.*` is the limiting stage."""
    stored = read_handoff(run, "semantic").get("datamodule_hyper_parameters", {})
    tokens = real_tokens(resolve(stored.get("data_dir", "")), [p["key"] for p in prompts])
    use = [p for p in prompts if p["key"] in tokens]
    if len(use) < 2:
        print(f"oracles: {len(use)} of {len(prompts)} prompts have token shards: no oracle.* keys")
        return {}
    report, sr = {}, lm.sample_rate
    oracles = oracle_waves(lm, use, tokens, seconds, batch_size, cfg_scale, seed)
    # the clips the real tokens came from, from their start like the tokens (every oracle's output is as long)
    real = list(real_waves(use, sr, next(iter(oracles.values())).shape[-1]).numpy())
    for name, waves in oracles.items():
        figures = evaluate_generation(lm, use, waves, batch_size, None)
        for k in ("mcc_margin", "fad_mulan", "fad_logmel", "spectral_flatness", "adherence_tempo"):
            report[f"oracle.{name}.{k}"] = figures[k]
        # Does the stage keep the clip's notes? Its output's chroma against its own clip's, beside other clips':
        # which tokens can carry a melody (melody conditioning's question)
        chroma = chroma_figures(similarity_matrix(real, sr, list(waves.numpy()), sr))
        report[f"oracle.{name}.chroma_similarity"] = chroma["melody.chroma_similarity"]
        report[f"oracle.{name}.chroma_similarity_chance"] = chroma["melody.chroma_similarity_chance"]
    return report


def evaluate(run: str, dataset: str, num_prompts: int = 32, seconds: float | None = None, batch_size: int = 8,
             cfg_scale: float = 3.0, seed: int = 0, out: Path | None = None,
             num_kind_prompts: int = 16, order_clips: int = ORDER_CLIPS,
             melody_dataset: str = "synth-melody", num_stories: int = 8, story_segments: int = 2,
             num_continuations: int = 8, clap_from: str | Path | None = None,
             melody_cfg_scale: float = MELODY_CFG_SCALE, judge_run: str | None = None) -> dict:  # fmt: skip
    """The eval.json figures. `clap_from`: a CLAP folder for the `judge.clap.*` figures (checked first, so a wrong
    folder fails before anything runs). `judge_run`: whose judge grades `judge.*` and `story.judge.*` (default
    `run`'s; `musiclm eval --run demo --dataset synth-long --judge-run long` puts the demo beside the long run)."""
    from musiclm.codec.evaluate import evaluate_codec

    clap_folder = check_clap_folder(clap_from) if clap_from else None
    if clap_folder is None:
        print(f"judge.{CLAP}: no CLAP folder given (make eval CLAP_FROM=DIR, musiclm eval --clap-from DIR): "
              f"no judge.{CLAP}.* keys")  # fmt: skip

    dataset_dir = data_dir() / "shards" / dataset
    plots = (out or reports_dir() / run_dir(run).name / "eval.json").parent
    plots.mkdir(parents=True, exist_ok=True)
    report: dict[str, float] = {}
    mulan = validate_stage(run, "mulan", data_dir=str(dataset_dir))
    report["mulan.t2a_recall@10"] = pick(mulan, "val/t2a_recall@10")
    report["mulan.zero_shot_instrument_acc"] = pick(mulan, "val/zero_shot/instrument_family_acc")
    report["mulan.zero_shot_instrument_chance"] = pick(mulan, "val/zero_shot/instrument_family_chance")
    codec = evaluate_codec(run, split="val", data_dir=str(dataset_dir))
    for k in ("mel_distance", "si_sdr_db", "kbps", "opus_mel_distance", "opus_si_sdr_db", "untrained_mel_distance"):
        report[f"codec.{k}"] = float(codec[k])
    sem = validate_stage(run, "semantic_tokens", data_dir=str(dataset_dir))
    report["semantic_tokens.perplexity"] = pick(sem, "val/perplexity", "val/ppl")
    for stage in LM_STAGES:
        metrics = validate_stage(run, stage)
        report[f"lm.{stage}_val_loss"] = pick(metrics, "val/loss")
        report[f"lm.{stage}_top1"] = pick(metrics, "val/acc")  # next-token accuracy: near 1/codebook = untrained
    lm = MusicLM.from_run(run)
    seconds = seconds or lm.coarse.hparams.window_seconds  # one coarse window
    clips = test_prompts(dataset_dir, TEST_CLIPS)
    report["generation.captioned_test_clips"] = len(clips)
    prompts = clips[:num_prompts]
    generated = generate_waves(lm, [p["caption"] for p in prompts], seconds, batch_size, cfg_scale, seed)
    gen = evaluate_generation(lm, prompts, generated, batch_size, plots)
    report.update({f"generation.{k}": v for k, v in gen.items()})
    others = clips[num_prompts : 2 * num_prompts]
    if len(others) >= 2:
        report["generation.fad_logmel_other_real"] = fad_logmel_other_real(prompts, others, lm.sample_rate,
                                                                           generated.shape[-1])  # fmt: skip
    report.update(evaluate_oracles(run, lm, prompts, seconds, batch_size, cfg_scale, seed))
    clap = None if clap_folder is None else ClapJudge.from_folder(clap_folder, lm.sample_rate, batch_size)
    if clap is not None and same_weights(clap.encoder, lm.mulan):
        print(f"judge.{CLAP}: {clap_folder} is the run's own MuLan (the same CLAP weights) and a judge shares no "
              f"weights with the chain: no judge.{CLAP}.* keys (generation.mcc* is that figure); give another CLAP")
        clap = None
    val = test_prompts(dataset_dir, VAL_CLIPS, split="val")
    tagger = load_model(judge_run or run, "judge")  # one judge for judge.* and story.judge.*
    report.update(evaluate_judges(run, lm, clips, num_prompts, generated, num_kind_prompts, batch_size, cfg_scale, seed,
                                  plots, order_clips, clap, val, tagger))  # fmt: skip
    judges = default_judges(tagger)
    report.update(evaluate_story(lm, clips, judges, seconds, num_stories, story_segments, batch_size, cfg_scale, seed))
    report.update(evaluate_continuation(lm, clips[:num_continuations], seconds, seconds / 2, batch_size, cfg_scale,
                                        seed))  # fmt: skip
    from musiclm.melody.evaluate import melody_report  # melody.*: only where the run has a melody model

    report.update(melody_report(lm, data_dir() / "shards" / melody_dataset, seconds, batch_size, cfg_scale, seed,
                                melody_cfg_scale, plots=plots))  # fmt: skip
    return report


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm eval", description=__doc__)
    p.add_argument("--run", default="demo")
    p.add_argument("--dataset", default="synth")
    p.add_argument("--num-prompts", type=int, default=32)
    p.add_argument("--seconds", type=float, default=None, help="generated length (default: one coarse-stage window)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--cfg-scale", type=float, default=3.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--num-kind-prompts", type=int, default=16, help="negation / temporal-order prompts for the judges")
    p.add_argument("--order-clips", type=int, default=ORDER_CLIPS,
                   help="order clips to render when the test split has none (0: no judge.order keys)")  # fmt: skip
    p.add_argument("--melody-dataset", default="synth-melody", help="melody-pair shards for the melody.* figures")
    p.add_argument("--melody-cfg-scale", type=float, default=MELODY_CFG_SCALE,
                   help="melody guidance of the melody.* generations (equal to --cfg-scale: one scale guides both)")
    p.add_argument("--num-stories", type=int, default=8, help="story-mode stories (story.*)")
    p.add_argument("--story-segments", type=int, default=2, help="segments per story, over the generated length")
    p.add_argument("--num-continuations", type=int, default=8, help="test clips whose first half is continued")
    p.add_argument("--clap-from", type=Path, default=None,
                   help="a local CLAP folder (save_pretrained) for the judge.clap.* figures")  # fmt: skip
    p.add_argument("--judge-run", default=None,
                   help="grade with this run's judge (default: --run's), to compare runs under one judge")  # fmt: skip
    a = p.parse_args(argv)
    try:
        clap_from = check_clap_folder(a.clap_from) if a.clap_from else None
    except PretrainedFolderError as e:
        raise SystemExit(f"musiclm eval: {e}") from None
    out = a.out or reports_dir() / run_dir(a.run).name / "eval.json"
    report = evaluate(a.run, a.dataset, a.num_prompts, a.seconds, a.batch_size, a.cfg_scale, a.seed, out,
                      a.num_kind_prompts, a.order_clips, a.melody_dataset, a.num_stories, a.story_segments,
                      a.num_continuations, clap_from, a.melody_cfg_scale, a.judge_run)  # fmt: skip
    atomic_write_bytes(out, json.dumps(report, indent=1).encode())
    print(json.dumps(report, indent=1))
    print(f"wrote {out}")
