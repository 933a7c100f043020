"""Full-ranking evaluation of any recommender exposing `user_vectors` / `item_vectors`."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from model.artifact import Artifact, load_artifact
from model.base import Recommender
from training.data import Dataset, k_core, load_dataset
from training.distributed import resolve_device
from training.metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from training.provenance import resolve_data, trained_on
from training.splits import EvalCase, Split, split_for


def pad_histories(histories: Sequence[Sequence[int]], max_len: int) -> Tensor:
    """Left-pad index histories (1-based, 0 = padding) to (B, L), keeping each one's last max_len items."""
    length = max(1, min(max_len, max((len(h) for h in histories), default=1)))
    out = np.zeros((len(histories), length), dtype=np.int64)
    for row, h in enumerate(histories):
        tail = list(h)[-length:]
        if tail:
            out[row, length - len(tail) :] = tail
    return torch.from_numpy(out)


def index_cases(cases: Sequence[EvalCase], index: Mapping[str, int]) -> tuple[list[list[int]], np.ndarray]:
    """Map item ids to 1-based indices; unknown ids are an error naming them."""
    unknown = sorted({i for c in cases for i in (*c.history, c.target) if i not in index})
    if unknown:
        raise ValueError(f"{len(unknown)} evaluation item ids are not in the catalogue, e.g. {unknown[:5]}")
    histories = [[index[i] for i in c.history] for c in cases]
    targets = np.array([index[c.target] for c in cases], dtype=np.int64)
    return histories, targets


@torch.no_grad()
def case_scores(model: Recommender, histories: Sequence[Sequence[int]]) -> Tensor:
    """(B, N) scores of every item for each history; column j is item index j + 1."""
    model.eval()
    table = model.items()
    items = model.item_vectors()
    user = model.user_vectors(pad_histories(histories, model.cfg.sasrec.max_len).to(items.device), table=table)
    return (user @ items.T).cpu()


@torch.no_grad()
def iter_case_scores(
    model: Recommender, histories: Sequence[Sequence[int]], *, batch_size: int = 1024
) -> Iterator[tuple[int, Tensor]]:
    """(start, (B, N) scores) per batch of `histories`; column j is item index j + 1. The item table and
    vectors are built once for all batches; scores stay on the model's device."""
    model.eval()
    items = model.item_vectors()  # (N, D)
    table = model.items()
    for start in range(0, len(histories), batch_size):
        hist = histories[start : start + batch_size]
        user = model.user_vectors(pad_histories(hist, model.cfg.sasrec.max_len).to(items.device), table=table)
        yield start, user @ items.T  # (B, N)


@torch.no_grad()
def case_ranks(
    model: Recommender,
    cases: Sequence[EvalCase],
    index: Mapping[str, int],
    *,
    batch_size: int = 1024,
    mask_history: bool = False,
) -> Tensor:
    """(B,) 1-based rank of each case's target among all N items (no sampled negatives)."""
    if not cases:
        raise ValueError("no evaluation cases")
    histories, targets = index_cases(cases, index)
    ranks = []
    for start, scores in iter_case_scores(model, histories, batch_size=batch_size):
        hist = histories[start : start + len(scores)]
        tgt = (torch.from_numpy(targets[start : start + len(scores)]) - 1).to(scores.device)
        exclude = None
        if mask_history:
            exclude = torch.zeros_like(scores, dtype=torch.bool)
            rows = torch.tensor([r for r, h in enumerate(hist) for _ in h], dtype=torch.long, device=scores.device)
            cols = torch.tensor([i - 1 for h in hist for i in h], dtype=torch.long, device=scores.device)
            exclude[rows, cols] = True
        ranks.append(target_ranks(scores, tgt, exclude).cpu())
    return torch.cat(ranks)


def evaluate_cases(
    model: Recommender,
    cases: Sequence[EvalCase],
    index: Mapping[str, int],
    *,
    batch_size: int = 1024,
    mask_history: bool = False,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, float]:
    """HR/NDCG/MRR@K over cases, ranking each target among all N items (no sampled negatives)."""
    ranks = case_ranks(model, cases, index, batch_size=batch_size, mask_history=mask_history)
    out = metrics_from_ranks(ranks, ks)
    out["cases"] = float(len(cases))
    return out


def trained_split(
    artifact: Path,
    art: Artifact,
    *,
    data: str | None = None,
    protocol: str | None = None,
    split: str | None = None,
    seed: int | None = None,
) -> tuple[Dataset, Split]:
    """The dataset and split the loaded artifact `art` (read from `artifact`) was trained on, rebuilt from its
    manifest; each argument given overrides what the manifest records."""
    recorded = trained_on(art.manifest)
    protocol = protocol or recorded.protocol
    if protocol is None:
        raise ValueError(f"{artifact}/manifest.json does not record its protocol: pass --protocol")
    seed = seed if seed is not None else recorded.seed
    split_dir = split if split is not None else recorded.split
    ds = load_dataset(resolve_data(data, recorded, artifact))
    if recorded.k_core > 1:
        ds = k_core(ds, recorded.k_core)
    return ds, split_for(ds, protocol, seed, Path(split_dir) if split_dir else None)


def evaluate_artifact(
    artifact: Path,
    *,
    data: str | None = None,
    protocol: str | None = None,
    split: str | None = None,
    seed: int | None = None,
    mask_history: bool | None = None,
    device: str = "auto",
) -> dict[str, dict[str, float]]:
    """Validation and test metrics of the artifact directory `artifact` (`alphafuse evaluate`).

    Every input defaults to what the artifact was trained with, so a bare call rebuilds the same split;
    each argument given overrides it. `device`: where the model scores (auto: cuda when present)."""
    where = resolve_device(device)  # before any loading: `cuda` without a GPU fails at once
    art = load_artifact(artifact)
    _, chosen = trained_split(artifact, art, data=data, protocol=protocol, split=split, seed=seed)
    mask_history = mask_history if mask_history is not None else trained_on(art.manifest).mask_history
    index = {item: row + 1 for row, item in enumerate(art.item_ids)}
    model = art.model.to(where)
    return {
        name: evaluate_cases(model, cases, index, mask_history=mask_history)
        for name, cases in (("valid", chosen.valid), ("test", chosen.test))
    }


TAIL_BELOW = 5  # a target item with fewer training interactions than this is a tail item
SHORT_BELOW = 5  # a history with fewer items than this is short


def case_slices(
    cases: Sequence[EvalCase],
    train_counts: Mapping[str, float],
    *,
    tail_below: int = TAIL_BELOW,
    short_below: int = SHORT_BELOW,
) -> dict[str, np.ndarray]:
    """Boolean masks over cases: all, tail/head target (training interactions of the target item below
    `tail_below` or not) and short/long history (fewer than `short_below` history items or not)."""
    tail = np.array([train_counts.get(c.target, 0.0) < tail_below for c in cases], dtype=bool)
    short = np.array([len(c.history) < short_below for c in cases], dtype=bool)
    return {
        "all": np.ones(len(cases), dtype=bool), "tail_target": tail, "head_target": ~tail,
        "short_history": short, "long_history": ~short,
    }


# LLM-ESR's five item groups by popularity (utils.metric_pop_5group, thresholds [10, 30, 60, 100]),
# github.com/liuqidong07/LLM-ESR @ 356d34f
POPULARITY_EDGES: tuple[int, ...] = (10, 30, 60, 100)


def popularity_buckets(
    cases: Sequence[EvalCase], counts: Mapping[str, float], edges: Sequence[int] = POPULARITY_EDGES
) -> dict[str, np.ndarray]:
    """Boolean masks over cases by the target item's count (e.g. training interactions): one bucket per
    interval between ascending `edges`, labelled "<10", "10-29", ..., ">=100"; an unseen target counts 0."""
    if not edges or any(b <= a for a, b in zip(edges, edges[1:], strict=False)) or edges[0] <= 0:
        raise ValueError(f"edges must be positive and strictly ascending, got {tuple(edges)}")
    pop = np.array([counts.get(c.target, 0.0) for c in cases], dtype=np.float64)
    bounds = [0, *edges, math.inf]
    out: dict[str, np.ndarray] = {}
    for lo, hi in zip(bounds, bounds[1:], strict=False):
        label = f"<{hi}" if lo == 0 else (f">={lo}" if hi == math.inf else f"{lo}-{hi - 1}")
        out[label] = (pop >= lo) & (pop < hi)
    return out


def evaluate_slices(
    model: Recommender,
    cases: Sequence[EvalCase],
    index: Mapping[str, int],
    slices: Mapping[str, np.ndarray],
    *,
    batch_size: int = 1024,
    mask_history: bool = False,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, dict[str, float]]:
    """Metrics per slice (each a boolean mask over `cases`), from one ranking of every case.

    An empty slice reports only `cases: 0`."""
    ranks = case_ranks(model, cases, index, batch_size=batch_size, mask_history=mask_history)
    out: dict[str, dict[str, float]] = {}
    for name, mask in slices.items():
        if mask.shape != (len(cases),):
            raise ValueError(f"slice {name!r} has shape {mask.shape}, expected ({len(cases)},)")
        picked = ranks[torch.from_numpy(mask)]
        out[name] = {**(metrics_from_ranks(picked, ks) if len(picked) else {}), "cases": float(len(picked))}
    return out
