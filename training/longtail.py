"""The long-tail protocol of LLM-ESR (Liu et al., "LLM-ESR: Large Language Models Enhancement for Long-tailed
Sequential Recommendation", NeurIPS 2024), which AlphaFuse's Table 3 follows.

What LLM-ESR does, read from its code (github.com/liuqidong07/LLM-ESR @ 356d34f; the file and function of each
point in brackets; the paper's own text could not be consulted here, so the code is the source):

- split: leave-one-out per user, last item = test target, second last = validation target; users with fewer
  than 3 items only train [generators/generator.py `Generator._load_dataset`]. That is `splits.split_loo`.
- candidates: the target plus `test_neg` = 100 negatives [main.py], each drawn uniformly from all items and
  redrawn while it is in the user's sequence up to and including the target or was drawn already
  [generators/data.py `SeqDataset.__getitem__`, utils/utils.py `random_neq`]: 100 distinct items the user
  never interacted with before or at the target. They come from the global numpy RNG, seeded once per run,
  so every evaluation (each validation epoch, the test) draws new ones.
- rank: the position of the target in an argsort of the 101 scores [trainers/sequence_trainer.py
  `SeqTrainer.eval`], so ties fall where the sort puts them; NDCG@10 = 1/log2(rank + 1) and HR@10 with a
  1-based rank <= 10 [utils/utils.py `metric_report`], overall and per group.
- item groups: the target is a tail item when its popularity < `ts_item` [utils/utils.py
  `metric_pop_report`]. Popularity is counted over the whole sequences, train + validation + test
  [generator `get_item_pop`], once per user: `pop[items] += 1` with numpy fancy indexing adds 1 once for an
  item repeated in a sequence.
- user groups: a short user when the history fed to the model (its non-padding positions, window
  max_len = 200) has fewer than `ts_user` items [utils/utils.py `metric_len_report`].
- thresholds: `ts_item` defaults to 20 and `ts_user` to 10 [main.py]; the published run scripts set them per
  dataset for LLM-ESR's own 3-core preprocessing: Beauty ts_item 4 / ts_user 9, Yelp 13 / 12, Fashion 4 / 3
  [experiments/beauty.bash, yelp.bash, fashion.bash].

What differs here, and why:

- Negatives are a fixed function of (seed, case order) through numpy's `Generator`: every variant of one seed
  is ranked against the same candidates (a paired comparison) and a rerun reproduces its number.
- Ties count against the target (training/metrics.py), in the sampled ranking as in the full one.
- The defaults are main.py's 20 / 10, not the scripts' per-dataset values: our Beauty and Yelp are the 5-core
  S3-Rec files, not LLM-ESR's 3-core ones, and there every item has at least 5 users, so Beauty's ts_item = 4
  would leave the tail empty. Which share of items and users LLM-ESR's thresholds select on its own data could
  not be checked here (its data is not available); on our Beauty 20 / 10 select 80.3% of the items as tail and
  81.0% of the users as short (the data's 80/20 point is exactly 20 / 10), on our Yelp 79.9% and 73.5% (its
  80/20 point is 21 / 13). `pareto_threshold` computes that point for any data, and the report prints it.
- A history's length is not capped at a window (LLM-ESR caps it at 200, above every threshold it uses).
- `metric_pop_report` leaves the first case out of its sums but not out of its counts (a leftover "skip the
  padding index"); that is not reproduced.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import Tensor

from model.base import Recommender
from training.evaluate import case_slices, index_cases, iter_case_scores
from training.metrics import DEFAULT_KS, metrics_from_ranks, target_ranks
from training.splits import EvalCase, Split

LLMESR_TAIL_BELOW = 20  # main.py --ts_item: a target with fewer users than this is a tail item
LLMESR_SHORT_BELOW = 10  # main.py --ts_user: a history with fewer items than this is a short user
LLMESR_NEGATIVES = 100  # main.py --test_neg
GROUPS: tuple[str, ...] = ("overall", "tail_item", "head_item", "short_user", "long_user")
_SLICE_OF_GROUP = ("all", "tail_target", "head_target", "short_history", "long_history")  # case_slices keys


def item_popularity(split: Split, *, include_eval: bool = True) -> dict[str, int]:
    """Per item, the number of users whose sequence holds it (each user once, as LLM-ESR counts).

    `include_eval` (LLM-ESR's rule) counts the whole sequences: the training ones plus every evaluation case's
    history and target; otherwise only the training sequences, what the model saw."""
    per_user: dict[str, set[str]] = {user: set(seq) for user, seq in split.train.items()}
    if include_eval:
        for case in (*split.valid, *split.test):
            per_user.setdefault(case.user, set()).update((*case.history, case.target))
    counts: dict[str, int] = {}
    for items in per_user.values():
        for item in items:
            counts[item] = counts.get(item, 0) + 1
    return counts


def pareto_threshold(values: Sequence[float] | np.ndarray, share: float = 0.8) -> int:
    """The smallest integer t such that at least `share` of `values` are below t: the 80/20 point by default."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        raise ValueError("no values to take a threshold from")
    if not 0.0 < share <= 1.0:
        raise ValueError(f"share must be in (0, 1], got {share}")
    need = math.ceil(share * v.size - 1e-9)  # how many values must lie below t
    return int(math.floor(np.sort(v)[need - 1])) + 1


def longtail_groups(
    cases: Sequence[EvalCase],
    popularity: Mapping[str, float],
    *,
    tail_below: int = LLMESR_TAIL_BELOW,
    short_below: int = LLMESR_SHORT_BELOW,
) -> dict[str, np.ndarray]:
    """Boolean masks over cases for `GROUPS`: tail/head by the target's popularity (< `tail_below` or not;
    an item missing from `popularity` counts 0) and short/long by history length (< `short_below` or not)."""
    # the same masks as the cold-user slices, under LLM-ESR's group names
    masks = case_slices(cases, popularity, tail_below=tail_below, short_below=short_below)
    return {group: masks[key] for group, key in zip(GROUPS, _SLICE_OF_GROUP, strict=True)}


def sample_negatives(
    histories: Sequence[Sequence[int]], targets: np.ndarray, num_items: int, k: int = LLMESR_NEGATIVES, *, seed: int
) -> np.ndarray:
    """(B, k) distinct 1-based item indices per case, uniform over the items that are neither in the case's
    history nor its target (LLM-ESR's rule); a fixed function of `seed` and the order of the cases."""
    if k <= 0:
        raise ValueError(f"k must be positive, got {k}")
    if len(histories) != len(targets):
        raise ValueError(f"{len(histories)} histories but {len(targets)} targets")
    rng = np.random.default_rng(seed)
    out = np.empty((len(targets), k), dtype=np.int64)
    for row, (history, target) in enumerate(zip(histories, targets, strict=True)):
        excluded = np.unique(np.append(np.asarray(history, dtype=np.int64), int(target)))
        free = num_items - len(excluded)
        if free < k:
            raise ValueError(
                f"case {row}: only {free} of {num_items} items are neither in its history nor its target; "
                f"{k} negatives cannot be drawn"
            )
        if num_items <= 4 * (k + len(excluded)):
            # a small catalogue: draw from the allowed items directly (rejection would mostly reject)
            allowed = np.setdiff1d(np.arange(1, num_items + 1), excluded, assume_unique=True)
            out[row] = rng.choice(allowed, size=k, replace=False)
            continue
        picked = np.empty(0, dtype=np.int64)
        while len(picked) < k:
            draw = rng.integers(1, num_items + 1, size=2 * (k - len(picked)) + 8)
            picked = np.concatenate([picked, draw[~np.isin(draw, excluded)]])
            _, first = np.unique(picked, return_index=True)
            picked = picked[np.sort(first)]  # first occurrences, in draw order: sampling without replacement
        out[row] = picked[:k]
    return out


def sampled_ranks(scores: Tensor, targets: Tensor, negatives: Tensor) -> Tensor:
    """(B,) 1-based rank of each target among itself and its negatives; ties count against the target.

    scores: (B, N); targets: (B,) and negatives: (B, k) column indices (0-based) into scores."""
    if negatives.ndim != 2 or negatives.shape[0] != targets.shape[0]:
        raise ValueError(f"negatives (B, k) expected for {targets.shape[0]} targets, got {tuple(negatives.shape)}")
    columns = torch.cat([targets[:, None], negatives], dim=1)  # (B, 1 + k), the target first
    candidates = scores.gather(1, columns)
    return target_ranks(candidates, torch.zeros_like(targets))


def metrics_by_group(
    ranks: Tensor, groups: Mapping[str, np.ndarray], ks: Sequence[int] = DEFAULT_KS
) -> dict[str, dict[str, float]]:
    """Metrics of the ranks in each group (a boolean mask over the cases); an empty group reports `cases: 0`."""
    out: dict[str, dict[str, float]] = {}
    for name, mask in groups.items():
        if mask.shape != (len(ranks),):
            raise ValueError(f"group {name!r} has shape {mask.shape}, expected ({len(ranks)},)")
        picked = ranks[torch.from_numpy(mask)]
        out[name] = {**(metrics_from_ranks(picked, ks) if len(picked) else {}), "cases": float(len(picked))}
    return out


@torch.no_grad()
def evaluate_longtail(
    model: Recommender,
    cases: Sequence[EvalCase],
    index: Mapping[str, int],
    popularity: Mapping[str, float],
    *,
    tail_below: int = LLMESR_TAIL_BELOW,
    short_below: int = LLMESR_SHORT_BELOW,
    negatives: int = LLMESR_NEGATIVES,
    seed: int = 0,
    batch_size: int = 1024,
    mask_history: bool = False,
    ks: Sequence[int] = DEFAULT_KS,
) -> dict[str, dict[str, dict[str, float]]]:
    """{"sampled": {group: metrics}, "full": {group: metrics}} over `GROUPS`, from one scoring of every case.

    "sampled" ranks each target among `negatives` items the user never had (LLM-ESR's protocol, comparable
    with the papers); "full" ranks it among all items (the honest number; history items compete unless
    `mask_history`)."""
    if not cases:
        raise ValueError("no evaluation cases")
    histories, targets = index_cases(cases, index)
    negs = torch.from_numpy(sample_negatives(histories, targets, len(index), negatives, seed=seed)) - 1
    tgt_all = torch.from_numpy(targets) - 1
    sampled, full = [], []
    for start, scores in iter_case_scores(model, histories, batch_size=batch_size):
        scores = scores.cpu()  # the sampled-negative ranking indexes CPU tensors
        stop = start + len(scores)
        tgt = tgt_all[start:stop]
        sampled.append(sampled_ranks(scores, tgt, negs[start:stop]))
        exclude = None
        if mask_history:
            exclude = torch.zeros_like(scores, dtype=torch.bool)
            for row, h in enumerate(histories[start:stop]):
                exclude[row, torch.tensor(h, dtype=torch.long) - 1] = True
        full.append(target_ranks(scores, tgt, exclude))
    groups = longtail_groups(cases, popularity, tail_below=tail_below, short_below=short_below)
    return {
        "sampled": metrics_by_group(torch.cat(sampled), groups, ks),
        "full": metrics_by_group(torch.cat(full), groups, ks),
    }
