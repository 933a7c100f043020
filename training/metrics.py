"""Ranking metrics for one target per case (HR, NDCG and MRR at K; README "Protocols"), as pure tensor functions."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

DEFAULT_KS: tuple[int, ...] = (5, 10, 20, 50)


def target_ranks(scores: Tensor, targets: Tensor, exclude: Tensor | None = None) -> Tensor:
    """1-based rank of each row's target among all columns; ties count against the target.

    scores: (B, N) float; targets: (B,) column indices; exclude: optional (B, N) bool of columns that do
    not compete (e.g. history items), never the target itself.
    """
    if scores.ndim != 2 or targets.shape != (scores.shape[0],):
        raise ValueError(f"scores (B, N) and targets (B,) expected, got {tuple(scores.shape)}, {tuple(targets.shape)}")
    target_scores = scores.gather(1, targets[:, None])  # (B, 1)
    beats = scores >= target_scores  # includes the target itself and every tie
    if exclude is not None:
        beats &= ~exclude
    beats.scatter_(1, targets[:, None], True)  # the target always counts once, even if "excluded"
    return beats.sum(dim=1)  # (B,) rank = 1 + number of others scoring >= target


def metrics_from_ranks(ranks: Tensor, ks: Sequence[int] = DEFAULT_KS) -> dict[str, float]:
    """Mean HR@K, NDCG@K (1/log2(r+1)) and MRR@K (1/r) over cases; 0 where r > K."""
    r = ranks.to(torch.float64)
    out: dict[str, float] = {}
    for k in ks:
        hit = r <= k
        out[f"hr@{k}"] = hit.double().mean().item()
        out[f"ndcg@{k}"] = torch.where(hit, 1.0 / torch.log2(r + 1.0), 0.0).mean().item()
        out[f"mrr@{k}"] = torch.where(hit, 1.0 / r, 0.0).mean().item()
    return out
