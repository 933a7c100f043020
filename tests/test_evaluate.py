import numpy as np
import pytest
import torch

from model.recommender import RecommenderConfig, build_recommender
from model.sasrec import SASRecConfig
from training.evaluate import case_slices, evaluate_cases, evaluate_slices, popularity_buckets
from training.splits import EvalCase

CASES = [
    EvalCase("u1", ("a", "b"), "c"),
    EvalCase("u2", ("a", "b", "c", "d", "e"), "a"),
    EvalCase("u3", ("d",), "e"),
    EvalCase("u4", ("c", "d", "e", "a", "b", "c"), "b"),
]
INDEX = {item: row + 1 for row, item in enumerate("abcde")}


def test_case_slices_split_by_target_popularity_and_history_length() -> None:
    s = case_slices(CASES, {"a": 10, "b": 5, "c": 4}, tail_below=5, short_below=5)  # d, e: never trained
    assert s["tail_target"].tolist() == [True, False, True, False]
    assert (s["head_target"] == ~s["tail_target"]).all()
    assert s["short_history"].tolist() == [True, False, True, False]
    assert s["all"].all()


def test_slice_metrics_are_the_metrics_of_the_sliced_cases() -> None:
    torch.manual_seed(0)
    cfg = RecommenderConfig(item_embedding="id", sasrec=SASRecConfig(hidden_dim=8, dropout=0.0, max_len=6))
    model = build_recommender(cfg, 5, None).eval()
    slices = {**case_slices(CASES, {"a": 10, "b": 5}), "none": np.zeros(4, dtype=bool)}
    got = evaluate_slices(model, CASES, INDEX, slices)
    assert got["all"] == evaluate_cases(model, CASES, INDEX)
    assert got["tail_target"] == evaluate_cases(model, [CASES[0], CASES[2]], INDEX)
    assert got["none"] == {"cases": 0.0}
    with pytest.raises(ValueError, match="shape"):
        evaluate_slices(model, CASES, INDEX, {"bad": np.ones(3, dtype=bool)})


def test_popularity_buckets_partition_cases_by_target_count() -> None:
    counts = {"a": 0, "b": 9, "c": 10, "d": 100}  # e: unseen, counts 0
    cases = [EvalCase(f"u{j}", ("a",), t) for j, t in enumerate("abcde")]
    got = popularity_buckets(cases, counts, edges=(10, 30, 100))
    assert list(got) == ["<10", "10-29", "30-99", ">=100"]
    assert {k: v.tolist() for k, v in got.items()} == {
        "<10": [True, True, False, False, True], "10-29": [False, False, True, False, False],
        "30-99": [False] * 5, ">=100": [False, False, False, True, False],
    }
    assert sum(m.astype(int) for m in got.values()).tolist() == [1] * 5  # every case in exactly one bucket
    with pytest.raises(ValueError, match="ascending"):
        popularity_buckets(cases, counts, edges=(10, 10))
