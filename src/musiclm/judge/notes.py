"""Note transcription for the key judge: basic-pitch's ICASSP-2022 model (Spotify, Apache-2.0), run with onnxruntime.

The model ships inside the basic-pitch wheel (`saved_models/icassp_2022/nmp.onnx`, 230 KB), so nothing is downloaded.
basic-pitch is installed with `--no-deps` (its TensorFlow requirement would downgrade tensorboard and protobuf), so
this module never imports it: it finds the file and reproduces basic-pitch's windowing (2-s windows at 22,050 Hz,
30 frames of overlap, half trimmed from each side), batched over every window of every clip in one run.
"""

from __future__ import annotations

import importlib.util
from functools import cache
from pathlib import Path

import numpy as np
import torch

from musiclm.audio import resample_batch

SAMPLE_RATE = 22_050
HOP = 256  # samples per output frame (86 frames/s)
WINDOW = 2 * SAMPLE_RATE - HOP  # samples per model input
OVERLAP = 30  # frames shared by neighbouring windows
LOWEST_MIDI = 21  # note bin 0 is A0; 88 bins
INSTALL = "pip install --no-deps basic-pitch==0.4.0 && pip install onnxruntime"


def model_path() -> Path:
    """The ONNX file inside the installed basic-pitch package (found without importing it)."""
    spec = importlib.util.find_spec("basic_pitch")
    path = None if spec is None else Path(next(iter(spec.submodule_search_locations))) / "saved_models/icassp_2022"
    if path is None or not (path / "nmp.onnx").is_file():
        raise ModuleNotFoundError(f"the key judge needs basic-pitch's ONNX model: `{INSTALL}`")
    return path / "nmp.onnx"


@cache
def session():
    try:
        import onnxruntime as ort
    except ImportError as e:
        raise ModuleNotFoundError(f"the key judge needs onnxruntime: `{INSTALL}`") from e
    options = ort.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # the project's thread budget, not every core
    return ort.InferenceSession(str(model_path()), options, providers=["CPUExecutionProvider"])


def note_posteriors(waves: torch.Tensor, sample_rate: int) -> list[np.ndarray]:
    """Per clip of `waves` [N, T]: basic-pitch's note posteriors [frames, 88] (MIDI 21..108), 86 frames/s."""
    x = resample_batch(waves.detach().float().cpu(), sample_rate, SAMPLE_RATE).numpy()
    pad = OVERLAP * HOP // 2
    x = np.pad(x, ((0, 0), (pad, 0)))
    step = WINDOW - OVERLAP * HOP
    starts = range(0, x.shape[1] - pad, step)
    windows = np.stack([np.pad(c[s : s + WINDOW], (0, WINDOW - len(c[s : s + WINDOW]))) for c in x for s in starts])
    run = session().run  # output and input names as basic-pitch's own ONNX inference uses them
    batches = (windows[i : i + 64, :, None] for i in range(0, len(windows), 64))
    note = np.concatenate([run(["StatefulPartitionedCall:1"], {"serving_default_input_2:0": b})[0] for b in batches])
    trim = OVERLAP // 2
    frames = int((x.shape[1] - pad) * (SAMPLE_RATE // HOP) / SAMPLE_RATE)
    note = note[:, trim:-trim].reshape(len(x), -1, note.shape[-1])
    return [n[:frames] for n in note]
