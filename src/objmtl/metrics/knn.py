"""k-nearest-neighbour classification of embeddings against a labelled memory bank (InstDisc / DINO)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ["knn_predict"]


def knn_predict(features: Tensor, bank: Tensor, bank_labels: Tensor, *, num_classes: int, k: int = 20,
                temperature: float = 0.07, chunk: int = 1024) -> Tensor:
    """Class scores of ``features`` from their ``k`` most cosine-similar bank entries, each voting for its
    label with weight ``exp(similarity / temperature)`` (Wu et al. 2018, as in DINO's evaluation).

    Args:
        features (Tensor[N, C]): the queries (normalised here).
        bank (Tensor[M, C]): the memory bank (normalised here).
        bank_labels (Tensor[M]): class index of each bank entry.
        num_classes: number of classes.
        k: neighbours that vote (at most M).
        temperature: sharpness of the vote weights.
        chunk: queries scored at once (bounds the (chunk, M) similarity matrix).

    Returns:
        Tensor[N, num_classes]: summed vote weights; ``argmax(1)`` is the prediction.
    """
    bank = F.normalize(bank.float(), dim=1)
    k = min(k, len(bank))
    out = []
    for q in F.normalize(features.float(), dim=1).split(chunk):
        sim, idx = (q @ bank.T).topk(k, dim=1)  # (n, k)
        votes = F.one_hot(bank_labels[idx], num_classes).float()  # (n, k, num_classes)
        out.append((votes * (sim / temperature).exp().unsqueeze(-1)).sum(1))  # (n, num_classes)
    return torch.cat(out)
