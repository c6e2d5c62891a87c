"""`musiclm showcase RUN [RUN ...]` (`make showcase`): runs of one chain at several budgets side by side, as the
README shows them: quality against CPU-hours (a PNG and a Markdown table) and a few seconds of each run's generated
audio with its spectrogram, so a researcher hears and sees the stack learn with compute before spending GPU time.

Reads what `make demo` leaves: reports/<RUN>/eval.json, runs/<RUN>/logs/timing.json, outputs/<RUN>/*.wav.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from musiclm.artifacts import atomic_write_bytes
from musiclm.audio import load_audio, save_audio
from musiclm.log import new_figure, save_wave_spectrogram_png
from musiclm.paths import outputs_dir, reports_dir, runs_dir


@dataclass(frozen=True)
class Figure:
    """One eval.json figure: `higher` says which way is better; `reference` is the key of what it reads against
    (the real clips' value, chance, or the real-vs-real floor), drawn as a dashed line."""

    key: str
    label: str
    higher: bool
    reference: str | None = None
    reference_label: str = ""


FIGURES = (
    Figure("generation.mcc_margin", "MuLan text-audio margin", True, "generation.mcc_margin_real", "real clips"),
    Figure("judge.instrument_family.generated", "judge: instrument family", True,
           "judge.instrument_family.chance", "chance"),
    Figure("judge.drums.generated", "judge: drums", True, "judge.drums.chance", "chance"),
    Figure("generation.fad_logmel", "FAD (log-mel)", False, "generation.fad_logmel_other_real", "other real clips"),
    Figure("generation.spectral_flatness", "spectral flatness", False, "generation.spectral_flatness_real",
           "real clips"),
    Figure("codec.mel_distance", "codec mel distance", False),
    Figure("lm.semantic_top1", "semantic LM top-1 (val)", True),
    Figure("lm.coarse_top1", "coarse LM top-1 (val)", True),
    Figure("lm.fine_top1", "fine LM top-1 (val)", True),
)  # fmt: skip


@dataclass(frozen=True)
class Run:
    name: str
    report: dict
    timing: dict

    def value(self, key: str) -> float | None:
        """eval.json's flat `section.name` key, None where the report lacks it."""
        v = self.report.get(key)
        return float(v) if isinstance(v, (int, float)) else None


def load_run(name: str) -> Run:
    """A run's eval report and cost; a missing one says which command makes it."""
    report, timing = reports_dir() / name / "eval.json", runs_dir() / name / "logs" / "timing.json"
    for path, make in ((report, "make eval"), (timing, "make demo")):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: run `{make} RUN={name} PROFILE=...` first")
    return Run(name, json.loads(report.read_text()), json.loads(timing.read_text()))


def curve_png(runs: list[Run], path: Path) -> Path:
    """One panel per figure: the runs' values against their CPU-hours (log axis), the reference dashed."""
    cols = 3
    rows = -(-len(FIGURES) // cols)
    fig = new_figure((4.0 * cols, 2.9 * rows))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    hours = [r.timing["cpu_hours"] for r in runs]
    for ax, f in zip(axes, FIGURES, strict=False):
        points = [(h, r.value(f.key), r.name) for h, r in zip(hours, runs, strict=True) if r.value(f.key) is not None]
        ax.plot([p[0] for p in points], [p[1] for p in points], "o-", color="tab:blue")
        for h, v, name in points:
            ax.annotate(name, (h, v), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ref = runs[-1].value(f.reference) if f.reference else None  # the best-funded run's, as in the table
        if ref is not None:
            ax.axhline(ref, color="gray", ls="--", lw=1, label=f"{f.reference_label} ({runs[-1].name})")
            ax.legend(fontsize=7, loc="best")
        ax.set_xscale("log")
        ax.set_xticks(hours, [f"{h:.2g}" for h in hours])  # the runs' own costs, not a log axis's minor ticks
        ax.minorticks_off()
        ax.margins(x=0.2, y=0.15)
        ax.set_title(f"{f.label} ({'higher' if f.higher else 'lower'} is better)", fontsize=9)
        ax.set_xlabel("CPU-hours (wall time x cores)", fontsize=8)
        ax.tick_params(labelsize=7)
    for ax in axes[len(FIGURES) :]:
        ax.set_visible(False)
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, format="png", dpi=90)
    return atomic_write_bytes(path, png.getvalue())


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3g}" if abs(v) < 10 else f"{v:.1f}"


def table_md(runs: list[Run]) -> str:
    """The figures as a Markdown table, runs as columns, with each run's cost and the CPU's speed on top."""

    def row(label: str, cells: list[str], reference: str = "") -> str:
        return f"| {label} | {' | '.join(cells)} | {reference} |"

    lines = [row("", [r.name for r in runs], "reference"), "|" + "---|" * (len(runs) + 2)]
    lines.append(row("wall time, min", [f"{r.timing['wall_s'] / 60:.1f}" for r in runs]))
    lines.append(row("CPU-hours", [f"{r.timing['cpu_hours']:.2f}" for r in runs]))
    lines.append(row("matmul fp32 / bf16 GFLOP/s", [f"{r.timing['matmul_gflops']['fp32']} / "
                                                    f"{r.timing['matmul_gflops']['bf16']}" for r in runs]))  # fmt: skip
    for f in FIGURES:
        ref = runs[-1].value(f.reference) if f.reference else None
        label = f"{f.label} {'↑' if f.higher else '↓'} (`{f.key}`)"
        ref_text = f"{_fmt(ref)} ({f.reference_label})" if ref is not None else ""
        lines.append(row(label, [_fmt(r.value(f.key)) for r in runs], ref_text))
    return "\n".join(lines) + "\n"


def export_samples(run: str, out: Path, prompts: int, seconds: float) -> list[Path]:
    """The first `seconds` of a run's first `prompts` generated clips as 16-bit FLAC, each beside its spectrogram."""
    info = sorted((outputs_dir() / run).glob("*.json"))[:prompts]
    if not info:
        raise FileNotFoundError(f"no generated clips in {outputs_dir() / run}: run `make demo RUN={run}` first")
    written = []
    for meta_path in info:
        meta = json.loads(meta_path.read_text())
        rate = meta["sample_rate"]
        wave = torch.from_numpy(load_audio(meta_path.with_name(meta["wav"]), rate, duration_seconds=seconds))
        stem = out / run / meta_path.stem
        written.append(save_audio(stem.with_suffix(".flac"), wave, rate))
        written.append(save_wave_spectrogram_png(stem.with_suffix(".png"), wave, rate, f"{run}: {meta['prompt']}"))
    return written


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(prog="musiclm showcase", description=__doc__)
    p.add_argument("runs", nargs="+", help="run names, cheapest first")
    p.add_argument("--out", default="docs", help="writes compute_curve.png, compute_curve.md and samples/<RUN>/")
    p.add_argument("--prompts", type=int, default=3, help="generated clips per run to export")
    p.add_argument("--seconds", type=float, default=5.0, help="seconds of each clip to export")
    a = p.parse_args(argv)
    try:
        runs = [load_run(name) for name in a.runs]
    except FileNotFoundError as e:
        sys.exit(str(e))
    out = Path(a.out)
    print(f"wrote {curve_png(runs, out / 'compute_curve.png')}")
    atomic_write_bytes(out / "compute_curve.md", table_md(runs).encode())
    print(f"wrote {out / 'compute_curve.md'}")
    for run in a.runs:
        files = export_samples(run, out / "samples", a.prompts, a.seconds)
        print(f"wrote {len(files)} files under {out / 'samples' / run}")
