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

    compute() -> {"mcc": mean cosine of matched pairs, "mcc_margin": mcc - mean cosine over all mismatched pairs,
    "mcc_margin_p": permutation-test p-value of the margin}. The p-value is the share of `permutations` random
    prompt-to-audio pairings (plus the observed one) whose margin is at least the observed: on a few dozen prompts a
    margin of +0.001 can be noise, and this says whether it is.
    The margin needs every pair of the whole eval set, so embeddings are kept (gathered with "cat" across
    processes); at a few thousand prompts that is a few MB.
    """

    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, permutations: int = 2000, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.permutations, self.seed = permutations, seed
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
        if n < 2:
            nan = torch.tensor(float("nan"))
            return {"mcc": sim.diagonal().mean(), "mcc_margin": nan, "mcc_margin_p": nan}

        def margin(matched: torch.Tensor) -> torch.Tensor:  # matched: mean cosine of the pairs taken as matched
            return matched - (sim.sum() - matched * n) / (n * (n - 1))

        observed = margin(sim.diagonal().mean())
        g = torch.Generator().manual_seed(self.seed)
        perms = torch.stack([torch.randperm(n, generator=g) for _ in range(self.permutations)])
        null = margin(sim[torch.arange(n), perms].mean(-1))
        p = ((null >= observed).sum() + 1) / (self.permutations + 1)
        return {"mcc": sim.diagonal().mean(), "mcc_margin": observed, "mcc_margin_p": p}
