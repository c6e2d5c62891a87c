"""reports/<RUN>/index.html: self-contained, every player's file exists, and a real browser renders something."""

from __future__ import annotations

import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch

from musiclm.report import bar, write_report

CHROMIUM = "/usr/bin/chromium"
SR = 16_000


def page(tmp_path: Path) -> Path:
    metrics = {"judge.instrument_family.real": 0.9, "judge.instrument_family.generated": 0.4,
               "judge.instrument_family.chance": 0.1, "judge.instrument_family.p": 0.001,
               "judge.instrument_family.num_prompts": 3.0, "judge.instrument_family.codec": 0.7,
               "judge.instrument_family.audio_tokens": 0.5, "generation.mcc_margin": 0.19}  # fmt: skip
    t = torch.arange(SR) / SR
    waves = torch.stack([0.3 * torch.sin(2 * np.pi * f * t) for f in (220.0, 330.0, 440.0)])
    verdicts = [{"instrument_family": {"target": "piano", "verdict": v, "ok": v == "piano"}} for v in ("piano", "oboe")]
    prompts = ["a calm piano piece", "an organ <b>hymn</b>", "no verdicts here"]
    return write_report(tmp_path / "reports" / "run", "run", metrics, prompts, waves, SR, verdicts + [{}],
                        {"instrument_family": "tagger"})  # fmt: skip


def test_page_is_self_contained_and_links_what_it_wrote(tmp_path):
    path = page(tmp_path)
    text = path.read_text()
    sources = re.findall(r'<(?:audio|img)[^>]* src="([^"]+)"', text)
    assert len(sources) == 6 and all((path.parent / s).is_file() for s in sources)
    assert not re.search(r'(?:src|href)="(?:https?:|/)', text)  # relative links only, nothing fetched
    assert "&lt;b&gt;hymn" in text and "0.40" in text and "judge." not in text.split("<h2>Other")[1]


def test_bar_clamps_to_the_unit_interval():
    svg = bar(-0.2, 1.5, 0.5, {"codec": 0.25})
    assert 'width="320"' in svg and 'x="0"' in svg and "codec 0.25" in svg


@pytest.mark.skipif(not Path(CHROMIUM).is_file(), reason="Debian's chromium is not installed (scripts/system-deps.sh)")
def test_chromium_renders_the_page(tmp_path):
    from PIL import Image

    path = page(tmp_path)
    shot = tmp_path / "shot.png"
    profile = tempfile.mkdtemp(prefix="chromium-")
    try:
        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={profile}",
               f"--screenshot={shot}", "--window-size=1200,1600", path.resolve().as_uri()]  # fmt: skip
        subprocess.run(cmd, check=True, capture_output=True, timeout=120)
    finally:
        shutil.rmtree(profile, ignore_errors=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float32)
    assert pixels.shape == (1600, 1200)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.01  # text, bars and spectrograms: not a blank page
    for src in re.findall(r'<audio[^>]* src="([^"]+)"', path.read_text()):
        assert (path.parent / src).is_file()
