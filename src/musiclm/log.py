"""TensorBoard logging helpers shared by every stage: spectrogram images, audio, matrices, counters."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

if TYPE_CHECKING:
    import lightning as L


def _experiment(logger):
    """The SummaryWriter behind a Lightning logger, or None when not logging to TensorBoard."""
    exp = getattr(logger, "experiment", None)
    return exp if exp is not None and hasattr(exp, "add_image") else None


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A figure on its own Agg canvas, outside pyplot: logging never switches the backend of a notebook that
    imports this module (its plots would stop showing) and leaves no open pyplot figures."""
    fig = Figure(figsize=figsize)
    FigureCanvasAgg(fig)
    return fig


def figure_to_array(fig: Figure) -> np.ndarray:
    """Render a figure to an HWC uint8 array."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def spectrogram_figure(
    mels: list[torch.Tensor] | torch.Tensor, titles: list[str] | None = None, frame_rate: float | None = None
):
    """Stacked log-mel panels ([n_mels, frames] each) with a shared colour scale."""
    mels = [m.detach().float().cpu() for m in (mels if isinstance(mels, (list, tuple)) else [mels])]
    vmin = min(float(m.min()) for m in mels)
    vmax = max(float(m.max()) for m in mels)
    fig = new_figure((8, 2.2 * len(mels)))
    axes = fig.subplots(len(mels), 1, squeeze=False)
    for i, m in enumerate(mels):
        ax = axes[i, 0]
        extent = None if frame_rate is None else (0, m.shape[-1] / frame_rate, 0, m.shape[0])
        ax.imshow(m.numpy(), origin="lower", aspect="auto", vmin=vmin, vmax=vmax, extent=extent, cmap="magma")
        ax.set_ylabel("mel bin")
        if titles:
            ax.set_title(titles[i], fontsize=9)
    axes[-1, 0].set_xlabel("seconds" if frame_rate else "frame")
    fig.tight_layout()
    return fig


def save_spectrogram_png(path: str | Path, mel: torch.Tensor, title: str = "", frame_rate: float | None = None) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig = spectrogram_figure(mel, [title] if title else None, frame_rate)
    fig.savefig(path, dpi=100)
    return path


WAVE_MEL_RATE = 100.0  # frames/s of every audio picture the project draws


def wave_mel(wave: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """A waveform's 80-band log-mel at 100 frames/s: one picture for PNGs and TensorBoard alike, so a generated
    sample's spectrogram in training reads against the eval plots and `outputs/` PNGs."""
    from musiclm.audio import log_mel

    hop = int(sample_rate // WAVE_MEL_RATE)
    return log_mel(wave.detach().float().cpu(), sample_rate, n_fft=1024, hop_length=hop, n_mels=80)


def save_wave_spectrogram_png(path: str | Path, wave: torch.Tensor, sample_rate: int, title: str = "") -> Path:
    """A waveform's log-mel (`wave_mel`) as a PNG (generated audio beside its wav, eval plots)."""
    return save_spectrogram_png(path, wave_mel(wave, sample_rate), title, frame_rate=WAVE_MEL_RATE)


def log_spectrograms(
    logger, tag: str, mels, step: int, titles: list[str] | None = None, frame_rate: float | None = None
) -> None:
    exp = _experiment(logger)
    if exp is not None:
        exp.add_image(tag, figure_to_array(spectrogram_figure(mels, titles, frame_rate)), step, dataformats="HWC")


def log_audio(logger, tag: str, wave: torch.Tensor, sample_rate: int, step: int) -> None:
    exp = _experiment(logger)
    if exp is not None:
        exp.add_audio(tag, wave.detach().float().cpu().clamp(-1, 1).reshape(1, -1), step, sample_rate=sample_rate)


def log_wave_example(
    logger, audio_tags: list[str], image_tag: str, waves: list[torch.Tensor], titles: list[str], sample_rate: int,
    step: int,
) -> None:
    """Waves that belong together (a clip and its reconstruction, a real clip and a generated one): each as
    TensorBoard audio under its tag, all as one image of stacked `wave_mel` panels on a shared colour scale."""
    if _experiment(logger) is None:
        return
    for tag, wave in zip(audio_tags, waves, strict=True):
        log_audio(logger, tag, wave, sample_rate, step)
    mels = [wave_mel(w, sample_rate) for w in waves]
    log_spectrograms(logger, image_tag, mels, step, titles, frame_rate=WAVE_MEL_RATE)


def log_matrix(logger, tag: str, matrix: torch.Tensor, step: int, xlabel: str = "", ylabel: str = "") -> None:
    """A heat map (e.g. the text-audio similarity matrix)."""
    exp = _experiment(logger)
    if exp is None:
        return
    fig = new_figure((5, 4.5))
    ax = fig.subplots()
    im = ax.imshow(matrix.detach().float().cpu().numpy(), cmap="viridis")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    fig.colorbar(im, ax=ax)
    fig.tight_layout()
    exp.add_image(tag, figure_to_array(fig), step, dataformats="HWC")


def log_skipped(module: L.LightningModule, batch: dict[str, Any]) -> None:
    """Log how many corrupt samples the loader dropped, and how many it left out on purpose (MuLan's uncaptioned
    clips), summed over the epoch."""
    for counter in ("skipped", "filtered"):
        if counter in batch:
            module.log(
                f"data/{counter}", batch[counter].float(), on_step=False, on_epoch=True, reduce_fx="sum", batch_size=1
            )
