"""Contrastive losses over a global batch: CLIP's symmetric InfoNCE and SigLIP's pairwise sigmoid.

Negatives come from every process. Whether to gather is decided on each call (is a process group up right now?),
never when the module is built, so a module constructed before DDP starts still sees the global batch.
Each process scores its own rows against all columns; gradients flow back through the gather (summed over
processes), so after DDP's gradient averaging the update equals that of one process holding the whole batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.nn.functional import all_gather

from musiclm.distributed import plain, world, world_size


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate x [n, ...] from all processes along dim 0 (equal n everywhere), differentiably."""
    if world_size() == 1:
        return x
    return torch.cat(all_gather(x), dim=0)


class ContrastiveLoss(nn.Module):
    """`kind="clip"`: mean of audio->text and text->audio cross-entropy with a learnable temperature.
    `kind="siglip"`: independent sigmoid per pair with a learnable temperature and bias (Zhai et al., 2023).

    The logit scale is learned in log space and clamped (at most `max_scale`): unbounded, it runs away with the
    small batches of CPU training and the loss goes NaN. Logits are computed in fp32 under mixed precision.
    """

    def __init__(
        self, kind: str = "clip", init_temperature: float = 0.07, max_scale: float = 100.0, init_bias: float = -10.0
    ):
        super().__init__()
        if kind not in ("clip", "siglip"):
            raise ValueError(f"kind must be 'clip' or 'siglip', not {kind!r}")
        self.kind, self.max_log_scale = kind, math.log(max_scale)
        # shape [1], not a scalar: FSDP2 (fully_shard) shards parameters along dim 0 and refuses 0-d ones
        self.log_scale = nn.Parameter(torch.tensor([math.log(1.0 / init_temperature)]))
        self.bias = nn.Parameter(torch.tensor([init_bias])) if kind == "siglip" else None

    @property
    def scale(self) -> torch.Tensor:
        """The clamped logit scale, shape [1] (call inside `forward`, or on an unsharded module)."""
        return self.log_scale.clamp(max=self.max_log_scale).exp()

    def temperature(self) -> torch.Tensor:
        """1 / scale as a 0-d tensor for logging, also when the parameter is an FSDP2 shard (a collective then)."""
        return (-plain(self.log_scale.detach()).clamp(max=self.max_log_scale)).exp().reshape(())

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in ("log_scale", "bias"):  # checkpoints from before the [1] shape hold 0-d tensors
            key = prefix + name
            if key in state_dict and state_dict[key].ndim == 0:
                state_dict[key] = state_dict[key].reshape(1)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def forward(self, audio: torch.Tensor, text: torch.Tensor, gather: bool = True) -> torch.Tensor:
        """audio, text: [n, D] L2-normalised local embeddings, row i of each a positive pair."""
        with torch.autocast(audio.device.type, enabled=False):
            return self._loss(audio.float(), text.float(), gather)

    def _loss(self, audio: torch.Tensor, text: torch.Tensor, gather: bool) -> torch.Tensor:
        rank, size = world() if gather else (0, 1)
        all_audio = gather_with_grad(audio) if size > 1 else audio
        all_text = gather_with_grad(text) if size > 1 else text
        n = audio.shape[0]
        targets = torch.arange(n, device=audio.device) + rank * n
        a2t = self.scale * audio @ all_text.T  # [n, N]: my audio against every text
        if self.kind == "clip":
            t2a = self.scale * text @ all_audio.T  # [n, N]: my text against every audio
            # the mean of the processes' local means is the global mean, as on one process
            return 0.5 * (F.cross_entropy(a2t, targets) + F.cross_entropy(t2a, targets))
        signs = -torch.ones_like(a2t)
        signs[torch.arange(n), targets] = 1.0
        # every pair is a row of exactly one process; SigLIP sums pair losses and divides by the number of rows
        return -F.logsigmoid(signs * (a2t + self.bias)).sum() / n
