"""Pretrained EnCodec / DAC as the codec (musiclm.pretrained): the adapter gives the model's own codes and audio,
`musiclm import codec` writes a self-contained hand-off with no network, and a wrong folder fails in one line.
The role's shared checks run in tests/test_contracts.py (encodec_adapter, dac_adapter)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from musiclm import artifacts
from musiclm.pretrained.hub import load_pretrained
from musiclm.pretrained.importer import codec_adapter, codec_main
from tests.tiny_hf import save_dac, save_encodec

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("pretrained")
    return {"encodec": save_encodec(tmp / "encodec"), "dac": save_dac(tmp / "dac")}


def test_encodec_adapter_gives_the_models_codes_and_audio(folders):
    adapter = codec_adapter(folders["encodec"], bandwidth=1.5)
    model = load_pretrained(folders["encodec"])
    x = 0.1 * torch.randn(2, 24_000, generator=torch.Generator().manual_seed(0))
    codes = adapter.tokenize(x)
    want = model.encode(x[:, None], bandwidth=1.5).audio_codes[0]
    assert adapter.num_levels == 3 and torch.equal(codes, want)
    assert adapter.frame_rate == 75 and codes.shape[-1] == 75
    torch.testing.assert_close(adapter.decode(codes), model.decode(want[None], [None]).audio_values[:, 0])
    assert adapter.encode(x, num_levels=2).shape[1] == 2


def test_dac_adapter_gives_the_models_codes_and_the_length_encode_got(folders):
    adapter = codec_adapter(folders["dac"], levels=2)
    model = load_pretrained(folders["dac"])
    x = 0.1 * torch.randn(1, 24_000, generator=torch.Generator().manual_seed(1))
    codes = adapter.tokenize(x)
    assert torch.equal(codes, model.encode(x[:, None], n_quantizers=2).audio_codes[:, :2])
    y = adapter.decode(codes)
    assert y.shape == x.shape  # DAC's own decoder returns 8 samples short
    torch.testing.assert_close(y[:, :-8], model.decode(audio_codes=codes).audio_values)


def test_bandwidth_and_levels_are_checked(folders):
    with pytest.raises(ValueError, match=r"offers \[1.5, 3.0\]"):
        codec_adapter(folders["encodec"], bandwidth=6.0)
    with pytest.raises(ValueError, match="--levels"):
        codec_adapter(folders["dac"], bandwidth=1.5)
    with pytest.raises(ValueError, match="1..4"):
        codec_adapter(folders["dac"], levels=5)


def cli(*args: str, root: Path, sandbox: list[str] | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1"}
    cmd = [*(sandbox or []), sys.executable, "-m", "musiclm.cli", "--root", str(root), *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=env)


@pytest.mark.parametrize(
    "break_it, message",
    [
        (lambda d: (d / "config.json").unlink(), "no config.json"),
        (lambda d: (d / "model.safetensors").unlink(), "no *.safetensors or *.bin weights"),
        (lambda d: (d / "config.json").write_text(json.dumps({"model_type": "bert"})), "'bert' is not supported"),
    ],
    ids=["no-config", "no-weights", "wrong-type"],
)
def test_a_wrong_folder_fails_in_one_line_naming_the_types(folders, tmp_path, break_it, message):
    folder = shutil.copytree(folders["dac"], tmp_path / "model")
    break_it(folder)
    proc = cli("import", "codec", "--from", str(folder), "--run", "r", root=tmp_path)
    assert proc.returncode != 0 and not (tmp_path / "runs" / "r" / "codec" / "model.ckpt").exists()
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and "encodec, dac" in lines[0], proc.stderr


def no_network() -> list[str]:
    """A sandbox without any network (a new network namespace), when this user may make one."""
    if shutil.which("unshare") is None or subprocess.run(["unshare", "-n", "true"]).returncode != 0:
        pytest.skip("unshare -n is not available here (needs root or user namespaces)")
    return ["unshare", "-n"]


def test_import_runs_with_no_network_and_the_handoff_is_self_contained(folders, tmp_path):
    folder = shutil.copytree(folders["encodec"], tmp_path / "encodec")
    proc = cli("import", "codec", "--from", str(folder), "--run", "r", "--bandwidth", "3",
               root=tmp_path, sandbox=no_network())  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "6 levels x 64 at 75 Hz" in proc.stdout
    shutil.rmtree(folder)  # the hand-off needs the folder no more
    path = tmp_path / "runs" / "r" / "codec" / "model.ckpt"
    codec = artifacts.build_from_handoff(torch.load(path, weights_only=True))
    assert type(codec).__name__ == "HFCodec" and not codec.training
    assert not any(p.requires_grad for p in codec.parameters())
    x = 0.1 * torch.randn(1, 24_000, generator=torch.Generator().manual_seed(2))
    assert codec.tokenize(x).shape == (1, 6, 75)
    first = artifacts.file_id(path)
    codec_main(["--from", str(folders["encodec"]), "--run", str(path.parents[1]), "--bandwidth", "1.5"])
    assert artifacts.file_id(path) != first  # another import is another content id: its tokens go stale


def test_make_imports_instead_of_training_with_codec_from(tmp_path):
    (tmp_path / "encodec_24khz").mkdir()
    (tmp_path / "encodec_24khz" / "config.json").write_text("{}")
    cmd = ["make", "-n", "-f", str(ROOT / "Makefile"), "-C", str(tmp_path), "-o", str(ROOT / ".venv/.installed"),
           "-o", "data/shards/synth/train/manifest.json", "train-codec", f"CODEC_FROM={tmp_path}/encodec_24khz",
           "CODEC_IMPORT_ARGS=--bandwidth 6"]  # fmt: skip
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    want = f"import codec --from {tmp_path}/encodec_24khz --run demo --bandwidth 6"
    assert want in out.stdout, out.stdout + out.stderr
    assert "train codec" not in out.stdout


def test_dac_44khz_rates_under_a_24khz_chain(tmp_path):
    """DAC 44.1 kHz (hop 512, 86.13 Hz) read at 24 kHz: frames and decoded length follow the contract's rounding."""
    import math

    from transformers import DacConfig, DacModel

    config = DacConfig(encoder_hidden_size=4, decoder_hidden_size=16, downsampling_ratios=[2, 4, 8, 8], n_codebooks=3,
                       codebook_size=32, codebook_dim=4, sampling_rate=44_100)  # fmt: skip
    DacModel(config).save_pretrained(tmp_path / "dac44")
    codec = codec_adapter(tmp_path / "dac44", sample_rate=24_000)
    assert codec.frame_rate == pytest.approx(86.13, abs=0.01)
    x = 0.1 * torch.randn(1, 24_001, generator=torch.Generator().manual_seed(3))
    codes = codec.tokenize(x)
    assert codes.shape == (1, 3, math.ceil(24_001 * codec.frame_rate / 24_000))
    y = codec.decode(codes)
    assert y.shape[-1] == math.ceil(codes.shape[-1] * 24_000 / codec.frame_rate) >= x.shape[-1]
    assert codec.reconstruct(x).shape == x.shape
