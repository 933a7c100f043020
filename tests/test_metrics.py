import math

import pytest
import torch

from training.metrics import metrics_from_ranks, target_ranks


def test_ranks_and_ties_do_not_favour_the_target() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.5, 0.5], [1.0, 1.0, 1.0, 1.0], [0.3, 0.2, 0.1, 0.0]])
    ranks = target_ranks(scores, torch.tensor([2, 0, 0]))
    # row 0: 0.9 beats it, the tie at 0.5 counts against -> rank 3; row 1: all tied -> last (4)
    assert ranks.tolist() == [3, 4, 1]


def test_excluded_columns_do_not_compete_but_target_always_counts() -> None:
    scores = torch.tensor([[0.9, 0.8, 0.1]])
    exclude = torch.tensor([[True, False, True]])
    assert target_ranks(scores, torch.tensor([2]), exclude).tolist() == [2]


def test_metrics_against_hand_computed_values() -> None:
    m = metrics_from_ranks(torch.tensor([1, 3, 11, 60]), ks=(5, 10, 50))
    assert m["hr@5"] == pytest.approx(2 / 4)
    assert m["ndcg@5"] == pytest.approx((1.0 + 1 / math.log2(4)) / 4)
    assert m["mrr@5"] == pytest.approx((1.0 + 1 / 3) / 4)
    assert m["hr@10"] == pytest.approx(2 / 4)
    assert m["hr@50"] == pytest.approx(3 / 4)
    assert m["ndcg@50"] == pytest.approx((1.0 + 0.5 + 1 / math.log2(12)) / 4)
    assert m["mrr@50"] == pytest.approx((1.0 + 1 / 3 + 1 / 11) / 4)


def test_target_ranks_validates_shapes() -> None:
    with pytest.raises(ValueError, match="targets"):
        target_ranks(torch.zeros(2, 3), torch.tensor([0]))
