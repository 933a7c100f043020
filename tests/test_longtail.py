"""LLM-ESR's long-tail protocol (training/longtail.py) on hand-made cases with hand-computed ranks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import Tensor, nn

from model.recommender import RecommenderConfig, build_recommender
from model.sasrec import SASRecConfig
from training.evaluate import evaluate_cases
from training.longtail import (
    evaluate_longtail,
    item_popularity,
    longtail_groups,
    pareto_threshold,
    sample_negatives,
    sampled_ranks,
)
from training.splits import EvalCase, Split

ITEMS = "abcdef"
INDEX = {item: row + 1 for row, item in enumerate(ITEMS)}
# SCORES[h][j]: the score of item j for a history whose last item is h (rows and columns in ITEMS order)
SCORES = torch.tensor([
    [0.9, 0.5, 0.5, 0.1, 0.7, 0.2],  # after a
    [0.1, 0.2, 0.3, 0.4, 0.5, 0.6],  # after b
    [0.3, 0.3, 0.3, 0.3, 0.3, 0.3],  # after c: every item ties
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0],
])  # fmt: skip


class LastItemScorer(nn.Module):
    """A recommender stand-in whose score of item j for a history is SCORES[last history item][j]."""

    def __init__(self) -> None:
        super().__init__()
        self.cfg = RecommenderConfig(sasrec=SASRecConfig(max_len=4))

    def items(self) -> Tensor:
        return torch.zeros(len(ITEMS) + 1, 1)

    def user_vectors(self, histories: Tensor, table: Tensor | None = None) -> Tensor:
        return nn.functional.one_hot(histories[:, -1] - 1, len(ITEMS)).float()  # left-padded: last = real

    def item_vectors(self) -> Tensor:
        return SCORES.T  # user one-hot @ SCORES.T.T picks the row of the last item


def test_sampled_rank_counts_ties_against_the_target() -> None:
    scores = SCORES[:1]  # after a; target b scores 0.5
    target = torch.tensor([1])
    assert sampled_ranks(scores, target, torch.tensor([[2, 5]])).tolist() == [2]  # c ties at 0.5, f 0.2
    assert sampled_ranks(scores, target, torch.tensor([[3, 5]])).tolist() == [1]  # d 0.1, f 0.2
    assert sampled_ranks(scores, target, torch.tensor([[0, 4]])).tolist() == [3]  # a 0.9, e 0.7 beat it
    with pytest.raises(ValueError, match="negatives"):
        sampled_ranks(scores, target, torch.tensor([2, 5]))


def test_negatives_avoid_history_and_target_are_distinct_and_seeded() -> None:
    histories = [[1, 2, 3], [4]] * 50
    targets = np.array([5, 1] * 50)
    for num_items in (12, 1000):  # the direct draw and the rejection draw
        negs = sample_negatives(histories, targets, num_items, 7, seed=3)
        assert negs.shape == (100, 7) and negs.min() >= 1 and negs.max() <= num_items
        for row, (h, t) in enumerate(zip(histories, targets, strict=True)):
            assert len(set(negs[row])) == 7 and not set(negs[row]) & {*h, int(t)}
        np.testing.assert_array_equal(negs, sample_negatives(histories, targets, num_items, 7, seed=3))
        assert not np.array_equal(negs, sample_negatives(histories, targets, num_items, 7, seed=4))
    # every allowed item is drawn about equally often (uniform): 8 allowed items for case 0 on 12 items
    many = sample_negatives([[1, 2, 3]] * 4000, np.array([5] * 4000), 12, 2, seed=0)
    counts = np.bincount(many.ravel(), minlength=13)[[4, 6, 7, 8, 9, 10, 11, 12]]
    assert counts.min() > 0.8 * counts.mean() and counts.sum() == 8000
    with pytest.raises(ValueError, match="case 0: only 2 of 6 items"):
        sample_negatives([[1, 2, 3]], np.array([4]), 6, 3, seed=0)


def test_popularity_counts_each_user_once_and_includes_evaluation_by_default() -> None:
    # u1's full sequence is a b c d, u2's a a e (a repeated), u3 trains only
    split = Split(
        "loo", {"u1": ["a", "b"], "u2": ["a"], "u3": ["b", "f"]},
        [EvalCase("u1", ("a", "b"), "c"), EvalCase("u2", ("a",), "a")],
        [EvalCase("u1", ("a", "b", "c"), "d"), EvalCase("u2", ("a", "a"), "e")], "hand-made",
    )  # fmt: skip
    assert item_popularity(split) == {"a": 2, "b": 2, "c": 1, "d": 1, "e": 1, "f": 1}
    assert item_popularity(split, include_eval=False) == {"a": 2, "b": 2, "f": 1}


def test_groups_split_by_threshold_with_the_threshold_itself_in_head_and_long() -> None:
    cases = [EvalCase("u1", ("a",), "b"), EvalCase("u2", ("a", "b", "c"), "d"), EvalCase("u3", ("a", "b"), "z")]
    g = longtail_groups(cases, {"b": 3, "d": 2}, tail_below=3, short_below=3)
    assert g["tail_item"].tolist() == [False, True, True]  # b has 3 (not below 3); z unseen counts 0
    assert (g["head_item"] == ~g["tail_item"]).all()
    assert g["short_user"].tolist() == [True, False, True]
    assert g["overall"].all()


def test_pareto_threshold_is_the_smallest_integer_with_the_share_below() -> None:
    values = [1, 1, 2, 2, 3, 3, 4, 5, 9, 20]
    t = pareto_threshold(values)  # 8 of 10 values must be below t: 1,1,2,2,3,3,4,5 -> t = 6
    assert t == 6 and np.mean(np.array(values) < t) >= 0.8 > np.mean(np.array(values) < t - 1)
    assert pareto_threshold([5] * 10) == 6
    with pytest.raises(ValueError, match="share"):
        pareto_threshold(values, 0.0)


def ndcg(rank: int) -> float:
    return 1.0 / math.log2(rank + 1)


def test_evaluate_longtail_on_hand_computed_ranks() -> None:
    cases = [
        EvalCase("u1", ("a",), "b"),  # after a: b 0.5; beaten or tied by a 0.9, e 0.7, c 0.5 -> full rank 4
        EvalCase("u2", ("c", "a", "b"), "d"),  # after b: d 0.4; e 0.5, f 0.6 beat it -> full rank 3
        EvalCase("u3", ("b", "c"), "f"),  # after c: everything ties at 0.3 -> full rank 6
    ]
    popularity = {"b": 5, "d": 1, "f": 9}
    got = evaluate_longtail(
        LastItemScorer(), cases, INDEX, popularity, tail_below=5, short_below=3, negatives=2, seed=0, ks=(2, 5)
    )
    assert got["full"]["overall"]["hr@5"] == pytest.approx(2 / 3)
    assert got["full"]["overall"]["ndcg@5"] == pytest.approx((ndcg(4) + ndcg(3)) / 3)
    assert got["full"]["tail_item"]["cases"] == 1.0  # d (popularity 1); b has 5, not below 5
    assert got["full"]["tail_item"]["mrr@5"] == pytest.approx(1 / 3)
    assert got["full"]["short_user"]["cases"] == 2.0  # histories of 1 and 2 items
    assert got["full"]["long_user"]["ndcg@5"] == pytest.approx(ndcg(3))
    # two negatives leave a rank of at most 3; u2 has exactly two items left (e, f), both beat d
    assert got["sampled"]["long_user"]["mrr@5"] == pytest.approx(1 / 3)
    assert got["sampled"]["short_user"]["hr@2"] <= 0.5  # u3: both negatives tie with f -> rank 3
    assert all(got["sampled"][g]["hr@5"] == 1.0 for g in ("overall", "tail_item", "head_item"))


@pytest.mark.parametrize(("case", "k", "rank"), [
    (EvalCase("u1", ("a",), "b"), 4, 3),  # c ties, e beats it
    (EvalCase("u3", ("b", "c"), "f"), 3, 4),  # a, d, e tie
])  # fmt: skip
def test_all_free_items_as_negatives_is_full_ranking_with_history_masked(case: EvalCase, k: int, rank: int) -> None:
    sampled = evaluate_longtail(LastItemScorer(), [case], INDEX, {}, negatives=k, seed=0, ks=(5,))
    masked = evaluate_longtail(LastItemScorer(), [case], INDEX, {}, negatives=k, seed=1, mask_history=True, ks=(5,))
    assert sampled["sampled"]["overall"]["mrr@5"] == pytest.approx(1 / rank)
    assert masked["full"]["overall"] == sampled["sampled"]["overall"]


def test_too_few_free_items_for_the_negatives_names_the_case() -> None:
    cases = [EvalCase("u1", ("a",), "b"), EvalCase("u2", ("c", "a", "b"), "d")]
    with pytest.raises(ValueError, match="case 1: only 2 of 6 items"):
        evaluate_longtail(LastItemScorer(), cases, INDEX, {}, negatives=3)


def test_full_ranking_matches_evaluate_cases_and_bounds_the_sampled_rank() -> None:
    torch.manual_seed(0)
    cfg = RecommenderConfig(item_embedding="id", sasrec=SASRecConfig(hidden_dim=8, dropout=0.0, max_len=6))
    model = build_recommender(cfg, 40, None).eval()
    rng = np.random.default_rng(0)
    index = {f"i{j}": j + 1 for j in range(40)}
    cases = [
        EvalCase(f"u{u}", tuple(f"i{j}" for j in rng.choice(40, size=1 + u % 5, replace=False)), f"i{u % 40}")
        for u in range(30)
    ]
    cases = [c for c in cases if c.target not in c.history]
    got = evaluate_longtail(model, cases, index, {}, negatives=10, seed=0)
    assert got["full"]["overall"] == evaluate_cases(model, cases, index)
    batched = evaluate_longtail(model, cases, index, {}, negatives=10, seed=0, batch_size=7)
    for protocol in ("sampled", "full"):
        for group in got[protocol]:
            assert batched[protocol][group] == pytest.approx(got[protocol][group])
    # 10 sampled competitors never beat the target more often than all 39 others do
    assert got["sampled"]["overall"]["mrr@50"] >= got["full"]["overall"]["mrr@50"]
    assert got["full"]["tail_item"]["cases"] == len(cases)  # nothing has popularity: all tail
