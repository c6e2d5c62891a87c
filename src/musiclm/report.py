"""`reports/<RUN>/index.html`: the page people look at after eval. One self-contained file (inline CSS and SVG,
relative links only): the judges' table, each attribute a bar between its floor (shuffled prompts) and its ceiling
(real clips), then per prompt the audio player, the spectrogram and the judges' verdicts.
"""

from __future__ import annotations

import html
import math
from pathlib import Path

import torch

from musiclm.artifacts import atomic_write_bytes
from musiclm.audio import save_audio
from musiclm.judge import ATTRIBUTES
from musiclm.judge.clap import ATTRIBUTE as CLAP
from musiclm.log import save_wave_spectrogram_png

STYLE = """body{font:14px/1.4 sans-serif;margin:24px;color:#222;background:#fff}table{border-collapse:collapse}
td,th{padding:4px 8px;border-bottom:1px solid #ddd;text-align:left;vertical-align:top}.ok{color:#080}.no{color:#b00}
.clip{display:flex;gap:16px;margin:16px 0;padding:12px;border:1px solid #ccc;border-radius:6px}
.clip img{width:480px}.clip table{align-self:flex-start}
.legend span{display:inline-block;width:12px;height:12px;margin:0 4px 0 12px;vertical-align:middle}"""
BAR_W, BAR_H = 320, 18


def _num(x: float | None, digits: int = 2) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.{digits}f}"


def _tick(x: float, colour: str, title: str = "", dashed: bool = False) -> str:
    dash = ' stroke-dasharray="3,2"' if dashed else ""
    tip = f"<title>{title}</title>" if title else ""
    return f'<line x1="{x}" x2="{x}" y1="0" y2="{BAR_H}" stroke="{colour}" stroke-width="2"{dash}>{tip}</line>'


def bar(floor: float, ceiling: float, generated: float, marks: dict[str, float]) -> str:
    """An inline SVG over [0, 1]: the floor-to-ceiling band in grey, generation as a blue bar, other conditions
    (codec, audio tokens) as dashed ticks."""

    def x(v: float) -> float:
        return round(BAR_W * min(max(v, 0.0), 1.0), 1)

    lo, hi = sorted((floor, ceiling))
    parts = [
        f'<rect x="0" y="0" width="{BAR_W}" height="{BAR_H}" fill="#f2f2f2"/>',
        f'<rect x="{x(lo)}" y="0" width="{x(hi) - x(lo)}" height="{BAR_H}" fill="#cfcfcf"/>',
        f'<rect x="0" y="5" width="{x(generated)}" height="{BAR_H - 10}" fill="#2a6fdb"/>',
        _tick(x(floor), "#b00", f"floor {floor:.2f}"),
        _tick(x(ceiling), "#080", f"ceiling {ceiling:.2f}"),
    ]
    colours = {"codec": "#e08a00", "audio_tokens": "#8a2be2"}
    parts += [_tick(x(v), colours.get(name, "#555"), f"{name} {v:.2f}", dashed=True) for name, v in marks.items()]
    return f'<svg width="{BAR_W}" height="{BAR_H}" role="img">{"".join(parts)}</svg>'


def judge_name(a: str, m: dict[str, float], judge_names: dict[str, str]) -> str:
    """The row's first cell; the CLAP row also shows its mean cosines (the usual "CLAP score")."""
    said = (("score", "generated"), ("score_real", "real"))
    cosines = ", ".join(f"{what} {_num(m[k])}" for k, what in said if k in m)
    extra = f"<br><small>mean cosine: {cosines}</small>" if cosines else ""
    return f"<td><b>{a}</b><br><small>{html.escape(judge_names.get(a, ''))}</small>{extra}</td>"


def judge_table(metrics: dict[str, float], judge_names: dict[str, str]) -> str:
    rows = []
    for a in (*ATTRIBUTES, CLAP):
        if f"judge.{a}.real" not in metrics:
            continue
        m = {k.removeprefix(f"judge.{a}."): v for k, v in metrics.items() if k.startswith(f"judge.{a}.")}
        marks = {k: m[k] for k in ("codec", "audio_tokens") if k in m}
        if "generated" not in m:  # scoring withheld the verdict: the judge is unreliable or had too few prompts
            rows.append(
                f"<tr>{judge_name(a, m, judge_names)}<td>-</td><td>-</td>"
                f"<td>-</td><td>{_num(m['real'])}</td><td>-</td><td>-</td><td>-</td><td><small>no verdict: the judge's "
                "ceiling is below 0.8 or fewer than 2 prompts state this</small></td></tr>"
            )
            continue
        rows.append(
            f"<tr>{judge_name(a, m, judge_names)}"
            f"<td>{int(m.get('num_prompts', 0))}</td><td>{_num(m['chance'])}</td>"
            f"<td><b>{_num(m['generated'])}</b></td><td>{_num(m['real'])}</td><td>{_num(m['p'], 4)}</td>"
            + "".join(f"<td>{_num(m.get(k))}</td>" for k in ("codec", "audio_tokens"))
            + f"<td>{bar(m['chance'], m['real'], m['generated'], marks)}</td></tr>"
        )
    columns = ("attribute (judge)", "prompts", "floor: shuffled prompts", "generated", "ceiling: real clips", "p",
               "real via codec", "audio-token prompts", "")  # fmt: skip
    head = "<tr>" + "".join(f"<th>{c}</th>" for c in columns) + "</tr>"
    legend = ('<p class="legend"><span style="background:#cfcfcf"></span>floor to ceiling'
              '<span style="background:#2a6fdb"></span>generated<span style="background:#e08a00"></span>real clips '
              'through the codec<span style="background:#8a2be2"></span>chain prompted with the real clip\'s MuLan '
              "audio tokens</p>")  # fmt: skip
    return f"<table>{head}{''.join(rows)}</table>{legend}" if rows else "<p>No judge had prompts to grade.</p>"


def clip_block(i: int, prompt: str, wav: str, png: str, verdicts: dict[str, dict]) -> str:
    items = "".join(
        f'<tr><td>{a}</td><td>{html.escape(v["target"])}</td><td>{html.escape(v["verdict"])}</td>'
        f'<td class="{"ok" if v["ok"] else "no"}">{"yes" if v["ok"] else "no"}</td></tr>'
        for a, v in verdicts.items()
    )
    player = f'<audio controls preload="none" src="{wav}"></audio><br><img src="{png}" alt="log-mel spectrogram">'
    head = "<tr><th>judge</th><th>asked</th><th>heard</th><th>follows</th></tr>"
    text = f"<p><b>{i}.</b> {html.escape(prompt)}</p>"
    return f'<div class="clip"><div>{text}{player}</div><table>{head}{items}</table></div>'


def write_report(
    out_dir: Path,
    run: str,
    metrics: dict[str, float],
    prompts: list[str],
    waves: torch.Tensor,
    sample_rate: int,
    verdicts: list[dict[str, dict]],
    judge_names: dict[str, str],
) -> Path:
    """Write clips/NNN.{wav,png} for each generated clip and index.html linking them; returns the page's path."""
    clips = out_dir / "clips"
    blocks = []
    for i, (text, wave, judged) in enumerate(zip(prompts, waves, verdicts, strict=True)):
        save_audio(clips / f"{i:03d}.wav", wave, sample_rate)
        save_wave_spectrogram_png(clips / f"{i:03d}.png", wave, sample_rate, text[:90])
        blocks.append(clip_block(i, text, f"clips/{i:03d}.wav", f"clips/{i:03d}.png", judged))
    others = "".join(f"<tr><td>{html.escape(k)}</td><td>{_num(v, 4)}</td></tr>" for k, v in metrics.items()
                     if not k.startswith("judge."))  # fmt: skip
    page = (f'<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(run)}: eval</title>'
            f"<style>{STYLE}</style></head><body><h1>{html.escape(run)}: does the music follow its prompt?</h1>"
            "<p>Judges share no weights with the chain. Ceiling: the judge on the real test clips against their ground "
            "truth. Floor: the generations graded against other prompts. p: permutation test of generated against "
            "the floor.</p>"
            f"{judge_table(metrics, judge_names)}<h2>Generated clips</h2>{''.join(blocks)}"
            f"<h2>Other eval figures</h2><table>{others}</table></body></html>")  # fmt: skip
    path = out_dir / "index.html"
    atomic_write_bytes(path, page.encode())
    return path
