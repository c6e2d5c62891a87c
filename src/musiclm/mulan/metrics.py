"""Validation metrics on L2-normalised embeddings: cross-modal retrieval and zero-shot classification."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torchmetrics.retrieval import RetrievalMAP, RetrievalRecall


def retrieval_metrics(text: torch.Tensor, audio: torch.Tensor, ks: tuple[int, ...] = (1, 5, 10)) -> dict[str, float]:
    """Recall@k and mAP for text->audio (caption i must retrieve clip i) and audio->text, over the whole set.

    text, audio: [N, D] with row i a pair. Keys: `t2a_recall@k`, `t2a_map`, `a2t_recall@k`, `a2t_map`.
    """
    sim = text.float() @ audio.float().T  # [N queries (text), N items (audio)]
    # torchmetrics (1.9) counts a relevant item only when its score is > 0; cosines can be negative, so shift
    # every score above zero (ranks unchanged) or a correct but negative match reads as a miss.
    sim = sim - sim.min() + 1.0
    n = sim.shape[0]
    target = torch.eye(n, dtype=torch.bool)
    indexes = torch.arange(n)[:, None].expand(n, n).reshape(-1)
    out: dict[str, float] = {}
    for name, scores in (("t2a", sim), ("a2t", sim.T)):
        preds = scores.reshape(-1)
        for k in ks:
            out[f"{name}_recall@{k}"] = float(RetrievalRecall(top_k=k)(preds, target.reshape(-1), indexes=indexes))
        out[f"{name}_map"] = float(RetrievalMAP()(preds, target.reshape(-1), indexes=indexes))
    return out


def zero_shot_accuracy(
    audio: torch.Tensor, labels: list[str], templates: str | list[str], encode_text: Callable[[list[str]], torch.Tensor]
) -> tuple[float, float]:
    """Classify each clip as the class whose prompt embedding is nearest in the shared space.

    A class's prompt embedding is the normalised mean over `templates` (each formatted with the class name,
    underscores read as spaces): averaging several phrasings makes the result less hostage to one wording.
    Classes are the distinct labels present; returns (accuracy, chance = 1 / number of classes).
    """
    templates = [templates] if isinstance(templates, str) else list(templates)
    classes = sorted(set(labels))
    prompts = [t.format(c.replace("_", " ")) for c in classes for t in templates]
    with torch.no_grad():
        emb = F.normalize(encode_text(prompts).float(), dim=-1).reshape(len(classes), len(templates), -1)
    class_emb = F.normalize(emb.mean(1), dim=-1)
    pred = (audio.float() @ class_emb.T).argmax(-1)
    truth = torch.tensor([classes.index(label) for label in labels])
    return float((pred == truth).float().mean()), 1.0 / len(classes)
