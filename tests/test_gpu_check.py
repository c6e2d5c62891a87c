"""`musiclm gpu-check` on the CPU at tiny sizes: every section runs through Lightning and reports finite figures."""

from __future__ import annotations

import json

import pytest

from musiclm import gpu_check


@pytest.mark.slow  # every stage, FSDP2 and generation through Lightning (about a minute on 2 cores)
def test_gpu_check_runs_every_section_on_cpu(tmp_path):
    out = tmp_path / "gpu-check.json"
    gpu_check.main(["--accelerator", "cpu", "--profile", "tiny", "--steps", "4", "--precision", "32-true",
                    "--out", str(out)])  # fmt: skip
    report = json.loads(out.read_text())
    assert report["machine"]["matmul_fp32_tflops"] > 0
    for stage in gpu_check.CHECKED:
        r = report[stage]
        assert "error" not in r, r
        assert r["steps"] >= 2 and r["step_s"] > 0 and r["loss_finite"], r
        assert r["mfu"] > 0 and r["model_tflops_per_step"] > 0
        unit = "tokens_per_s" if stage in gpu_check.LM else "audio_seconds_per_s"
        assert r[unit] > 0
    for stage in gpu_check.LM:
        assert "error" not in report[f"{stage}.fsdp2"] and report[f"{stage}.fsdp2"]["loss_finite"]
        assert f"{stage}.compile" not in report  # compiling is a GPU-only default
    assert report["generation"]["tokens_per_s_plain"] > 0 and report["generation"]["tokens_per_s_cfg"] > 0


def test_loss_summary_reads_a_falling_curve():
    s = gpu_check.loss_summary([5.0, 4.9, 4.7, 4.0, 3.5, 3.1])
    assert s["loss_finite"] and s["loss_falling"] and s["loss_first"] > s["loss_last"]
    assert not gpu_check.loss_summary([1.0, float("nan"), 2.0])["loss_finite"]


def test_lm_compile_switch_compiles_the_decoder_in_place():
    """`--model.compile=true` compiles the decoder when Lightning configures the model; state-dict keys (and so
    checkpoints and hand-offs) stay those of the plain module."""
    from musiclm.config import build_stage
    from musiclm.tokenize import profile_vocab

    vocab = profile_vocab("tiny")
    plain, compiled = build_stage("semantic", "tiny", vocab), build_stage("semantic", "tiny", vocab, compile=True)
    plain.configure_model()
    compiled.configure_model()
    assert plain.model._compiled_call_impl is None and compiled.model._compiled_call_impl is not None
    assert list(compiled.state_dict()) == list(plain.state_dict())
