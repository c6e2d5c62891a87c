"""Run by tests/test_multinode.py under torchrun, one process per "node": trains the tiny semantic LM through
`musiclm.train.train` (the code path of `musiclm train`) and writes, for this rank, the sample keys it trained on, its
first batch, that batch's loss before any update (eval mode, so no dropout and no random crop) and, on rank 0, the
initial weights. Positional arguments only: torchrun would read a `--run` as its own `--run-path`.

    dist_multinode.py OUT_DIR RUN_DIR TRAINER TOKENS_DIR MAX_STEPS
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import lightning as L
import torch

from musiclm.train import train


def full(t: torch.Tensor) -> torch.Tensor:
    """A plain CPU tensor of a parameter, gathered from every rank when FSDP2 shards it (a collective)."""
    return (t.full_tensor() if hasattr(t, "full_tensor") else t).detach().cpu()


class Record(L.Callback):
    def __init__(self, out: Path):
        self.out, self.rank, self.keys = out, int(os.environ["RANK"]), []

    def on_train_batch_start(self, trainer, module, batch, batch_idx) -> None:
        self.keys += list(batch["key"])
        if batch_idx > 0:
            return
        module.eval()
        with torch.no_grad():
            ce, _, valid, _ = module.forward_loss(batch)
        module.train()
        loss = ce[valid.expand_as(ce)].mean().item()
        weights = {k: full(v) for k, v in module.state_dict().items()}
        tensors = {k: v.cpu() for k, v in batch.items() if isinstance(v, torch.Tensor)}
        torch.save({"batch": tensors, "loss": loss}, self.out / f"rank{self.rank}-first.pt")
        if self.rank == 0:
            torch.save(weights, self.out / "initial.pt")

    def on_train_end(self, trainer, module) -> None:
        (self.out / f"rank{self.rank}-keys.json").write_text(json.dumps(self.keys))


def main() -> None:
    out, run, trainer, tokens, steps = sys.argv[1:6]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    extra = [
        f"--data.data_dir={tokens}", f"--trainer.max_steps={steps}", "--trainer.accelerator=cpu",
        "--trainer.devices=1", f"--trainer.num_nodes={os.environ['WORLD_SIZE']}", "--model.dropout=0",
        "--model.cond_dropout=0",
    ]  # fmt: skip
    train("semantic", run, "tiny", trainer, extra, callbacks=[Record(out)])


if __name__ == "__main__":
    main()
