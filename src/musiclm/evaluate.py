"""`musiclm eval --run RUN`: every stage's headline metric plus generation quality -> reports/<RUN>/eval.json.

Stage metrics come from each module's own validation loop (Trainer.validate with the data module the checkpoint
was trained with), so the numbers are the ones TensorBoard shows. Generation metrics use prompts from the test
split, whose ground-truth attributes (tempo) are known.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import lightning as L
import torch

from musiclm.artifacts import atomic_write_bytes, build_from_handoff, read_handoff, run_dir
from musiclm.audio import crop, load_audio
from musiclm.data.shards import iter_tar_samples, list_shards
from musiclm.log import save_wave_spectrogram_png
from musiclm.metrics.fad import FrechetAudioDistance, logmel_stats_embedding
from musiclm.metrics.mcc import MuLanCycleConsistency
from musiclm.metrics.tempo import TempoAdherence
from musiclm.paths import data_dir, reports_dir
from musiclm.pipeline import MusicLM
from musiclm.stages import STAGES


def validate_stage(run: str, stage: str, **data_overrides) -> dict[str, float]:
    """Run the stage's validation loop on its val split; returns the logged metrics."""
    ckpt = read_handoff(run, stage)
    module = build_from_handoff(ckpt, stage)
    stored = ckpt.get("datamodule_hyper_parameters", {})
    workers = min(int((stored | data_overrides).get("num_workers", 0)), 2)
    datamodule = STAGES[stage].data_class().from_hparams(stored, **(data_overrides | {"num_workers": workers}))
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False)
    [metrics] = trainer.validate(module, datamodule=datamodule, verbose=False)
    return {k: float(v) for k, v in metrics.items()}


def pick(metrics: dict[str, float], *names: str) -> float:
    for n in names:
        if n in metrics:
            return metrics[n]
    raise KeyError(f"none of {names} in {sorted(metrics)}")


def test_prompts(dataset_dir: Path, n: int) -> list[dict]:
    """The first n test clips (deterministic): caption, attributes and the real audio bytes."""
    out = []
    for shard in list_shards(dataset_dir / "test"):
        for s in iter_tar_samples(shard):
            meta = json.loads(s["json"])
            out.append({"key": s["__key__"], "caption": meta["caption"], "meta": meta, "flac": s["flac"]})
            if len(out) == n:
                return out
    if not out:
        raise FileNotFoundError(f"no test shards in {dataset_dir / 'test'}: build them with `make data`")
    return out


def evaluate_generation(
    lm: MusicLM, prompts: list[dict], seconds: float, batch_size: int, cfg_scale: float, seed: int, plots: Path | None
) -> dict[str, float]:
    sr = lm.sample_rate
    mcc, fad_mulan, fad_logmel, tempo = MuLanCycleConsistency(), FrechetAudioDistance(), FrechetAudioDistance(), TempoAdherence()
    # The same margin on the real clips (the ceiling MuLan allows) and on them through the codec (what the acoustic
    # tokens can carry at best): where generation's margin sits between them says which stage loses the prompt.
    mcc_real, mcc_codec = MuLanCycleConsistency(), MuLanCycleConsistency()
    for start in range(0, len(prompts), batch_size):
        batch = prompts[start : start + batch_size]
        texts = [p["caption"] for p in batch]
        result = lm.generate(texts, seconds=seconds, cfg_scale=cfg_scale, seed=seed + start, progress=False)
        fake = result.waves
        real = torch.stack([torch.from_numpy(crop(load_audio(p["flac"], sr), fake.shape[-1], mode="start")) for p in batch])
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
        "adherence_tempo": float(t["adherence"]),
        "adherence_tempo_chance": float(t["chance"]),
        "num_prompts": len(prompts),
    }


def evaluate(run: str, dataset: str, num_prompts: int = 32, seconds: float | None = None, batch_size: int = 8,
             cfg_scale: float = 3.0, seed: int = 0, out: Path | None = None) -> dict:  # fmt: skip
    from musiclm.codec.evaluate import evaluate_codec

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
    for stage in ("semantic", "coarse", "fine"):
        report[f"lm.{stage}_val_loss"] = pick(validate_stage(run, stage), "val/loss")
    lm = MusicLM.from_run(run)
    seconds = seconds or lm.coarse.hparams.window_seconds  # one coarse window
    gen = evaluate_generation(lm, test_prompts(dataset_dir, num_prompts), seconds, batch_size, cfg_scale, seed, plots)
    report.update({f"generation.{k}": v for k, v in gen.items()})
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
    a = p.parse_args(argv)
    out = a.out or reports_dir() / run_dir(a.run).name / "eval.json"
    report = evaluate(a.run, a.dataset, a.num_prompts, a.seconds, a.batch_size, a.cfg_scale, a.seed, out)
    atomic_write_bytes(out, json.dumps(report, indent=1).encode())
    print(json.dumps(report, indent=1))
    print(f"wrote {out}")
