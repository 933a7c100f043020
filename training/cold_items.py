"""Cold-start items protocol: items kept out of training entirely, folded in from their text, then ranked.

README "How it works": a cold item's vector is `((e - mu) P) + [0, v0]`, with v0 = 0, the mean of the
trained IDs, or the mean ID of the item's nearest trained items (`neighbours`, the service's default since
it won on this protocol's validation cases). The protocol measures them the way the service works:

1. a seeded fraction of the catalogue becomes cold;
2. the model never sees those items: `prepare(cfg, exclude_items=cold)` removes them from the catalogue,
   the projection fit (mean, covariance), the training sequences and validation;
3. after training, each cold item is folded in through the stored projection, exactly as `POST /items`
   does, and every test case is ranked against the whole catalogue (trained + cold) with its full
   history (cold items inside histories use their folded-in vectors);
4. metrics are reported for all test cases, for those whose target is cold, and for the rest.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence, Set

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from model.base import Recommender
from model.item_embeddings import ColdId
from model.projection import Projection
from training.evaluate import index_cases, pad_histories
from training.metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from training.splits import EvalCase

log = logging.getLogger(__name__)


def pick_cold_items(item_ids: Sequence[str], fraction: float, seed: int) -> set[str]:
    """A seeded uniform sample of `fraction` of the catalogue (at least one item, never all of them)."""
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"cold fraction must be in (0, 1), got {fraction!r}")
    n = min(len(item_ids) - 1, max(1, round(fraction * len(item_ids))))
    if n < 1:
        raise ValueError("need at least 2 items to hold some out")
    rng = np.random.default_rng(seed)
    return {item_ids[i] for i in rng.choice(len(item_ids), size=n, replace=False)}


def fold_in_vectors(model: Recommender, projection: Projection, emb: np.ndarray, cold_id: ColdId) -> Tensor:
    """(C, D) input-table rows for raw encoder outputs `emb` (C, d_l), by the item embedding's own rule, as the
    service computes them (AlphaFuse: z, plus v0 on the ID coordinates). FoldInUnsupported for rlmrec-*."""
    z = torch.from_numpy(projection.apply(emb).astype(np.float32))
    with torch.no_grad():
        return model.items.fold_in(z, cold_id)


@torch.no_grad()
def evaluate_with_cold_items(
    model: Recommender,
    index: Mapping[str, int],
    cold_ids: Sequence[str],
    cold_rows: Tensor,
    cases: Sequence[EvalCase],
    *,
    cold_set: Set[str] | None = None,
    batch_size: int = 1024,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """Full-ranking metrics over trained + cold items: {"all", "cold_target", "warm_target"} -> metrics.

    `index` maps the trained items to rows 1..N; cold item j becomes row N + 1 + j with input vector
    `cold_rows[j]`, ranked by the same similarity as trained items (normalised for cosine models).
    A case is "cold_target" when its target is in `cold_set` (default: `cold_ids`); passing the held-out
    set with no cold rows scores a model that trained on those items, on the same cases.
    """
    cold_set = set(cold_ids) if cold_set is None else cold_set
    model.eval()
    n = len(index)
    ext_index = dict(index)
    ext_index.update({iid: n + 1 + j for j, iid in enumerate(cold_ids)})
    table = torch.cat([model.items().detach(), cold_rows.to(torch.float32)])  # (N + C + 1, D)
    items = model.item_vectors().detach()
    cold_vecs = F.normalize(cold_rows, dim=-1) if model.cfg.similarity == "cosine" else cold_rows
    items = torch.cat([items, cold_vecs.to(items.dtype)])  # (N + C, D)
    histories, targets = index_cases(cases, ext_index)
    ranks = []
    for start in range(0, len(cases), batch_size):
        hist = histories[start : start + batch_size]
        user = model.encode_with_table(pad_histories(hist, model.cfg.sasrec.max_len), table)
        tgt = torch.from_numpy(targets[start : start + batch_size]) - 1
        ranks.append(target_ranks(user @ items.T, tgt))
    r = torch.cat(ranks)
    is_cold = torch.tensor([c.target in cold_set for c in cases], dtype=torch.bool)
    out: dict[str, dict[str, float]] = {}
    for group, mask in (("all", torch.ones_like(is_cold)), ("cold_target", is_cold), ("warm_target", ~is_cold)):
        if bool(mask.any()):
            out[group] = {**metrics_from_ranks(r[mask], ks), "cases": float(mask.sum())}
    return out
