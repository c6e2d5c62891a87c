"""MuLan cycle consistency (MCC, MusicLM paper): does generated audio land near its own prompt in MuLan space?

The margin against the other prompts' audio is what makes the number meaningful on a small model: a generator
that ignores its prompt still scores a positive mean cosine (the embedding space is anisotropic), but a margin of
about zero.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat


class MuLanCycleConsistency(Metric):
    """update(text_emb [B, D], audio_emb [B, D]) with row i = prompt i and the audio generated for it.

    compute() -> {"mcc": mean cosine of matched pairs, "mcc_margin": mcc - mean cosine over all mismatched pairs}.
    The margin needs every pair of the whole eval set, so embeddings are kept (gathered with "cat" across
    processes); at a few thousand prompts that is a few MB.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.add_state("text", [], dist_reduce_fx="cat")
        self.add_state("audio", [], dist_reduce_fx="cat")

    def update(self, text_emb: torch.Tensor, audio_emb: torch.Tensor) -> None:
        if text_emb.shape != audio_emb.shape:
            raise ValueError(f"text {tuple(text_emb.shape)} and audio {tuple(audio_emb.shape)} embeddings must pair up")
        self.text.append(F.normalize(text_emb.detach().float(), dim=-1))
        self.audio.append(F.normalize(audio_emb.detach().float(), dim=-1))

    def compute(self) -> dict[str, torch.Tensor]:
        sim = dim_zero_cat(self.text) @ dim_zero_cat(self.audio).T
        n = sim.shape[0]
        matched = sim.diagonal().mean()
        others = (sim.sum() - sim.diagonal().sum()) / (n * (n - 1)) if n > 1 else torch.tensor(float("nan"))
        return {"mcc": matched, "mcc_margin": matched - others}
