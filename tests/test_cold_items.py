"""The cold-start-items protocol: hold-out, fold-in identical to the service's, grouped full ranking."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from model.artifact import load_artifact
from service.ranker import NewItem, Ranker
from training.cold_items import evaluate_with_cold_items, fold_in_vectors, pick_cold_items
from training.config import TrainConfig
from training.encoders import embed_items, encoder_from_identity
from training.evaluate import evaluate_cases
from training.splits import EvalCase, Split, without_items
from training.train import fit, prepare


def test_pick_cold_items_is_seeded_and_bounded() -> None:
    ids = [f"i{n}" for n in range(100)]
    a = pick_cold_items(ids, 0.1, seed=3)
    assert len(a) == 10 and a == pick_cold_items(ids, 0.1, seed=3) and a != pick_cold_items(ids, 0.1, seed=4)
    assert len(pick_cold_items(ids[:2], 0.01, seed=0)) == 1
    with pytest.raises(ValueError, match="fraction"):
        pick_cold_items(ids, 1.0, seed=0)


def test_without_items_drops_them_everywhere() -> None:
    split = Split(
        "cold-users", {"u": ["a", "x", "b"], "v": ["x"]},
        [EvalCase("w", ("a", "x"), "b"), EvalCase("y", ("a",), "x"), EvalCase("z", ("x",), "a")], [], "test",
    )
    out = without_items(split, {"x"})
    assert out.train == {"u": ["a", "b"]}
    assert out.valid == [EvalCase("w", ("a",), "b")]  # cold target dropped; history-less case dropped


def test_fold_in_equals_the_service_and_no_cold_rows_equals_the_evaluator(tiny_artifact: Path, tiny_data: Path) -> None:
    art = load_artifact(tiny_artifact)
    assert art.projection is not None and art.encoder_identity is not None
    encoder = encoder_from_identity(art.encoder_identity)
    records = {"new": {"title": "LEGO Harry Potter Hogwarts Castle", "categories": ["lego"]}}
    emb = embed_items(encoder, ["new"], records, None, progress=False)
    for rule in ("zeros", "mean"):
        service = Ranker(art, encoder=encoder, cold_id=rule).fold_in([NewItem("new", records["new"])])
        ours = fold_in_vectors(art.model, art.projection, emb, rule).numpy()  # type: ignore[arg-type]
        np.testing.assert_allclose(ours, service, atol=1e-6)

    index = {iid: r + 1 for r, iid in enumerate(art.item_ids)}
    cases = [EvalCase("u", ("lego-0", "lego-1"), "lego-2"), EvalCase("v", ("doll-0",), "doll-3"),
             EvalCase("w", ("puzzle-1", "lego-4"), "outdoor-2")]
    got = evaluate_with_cold_items(art.model, index, [], torch.zeros(0, art.model.items.dim), cases,
                                   cold_set={"doll-3"})
    assert got["all"]["ndcg@20"] == pytest.approx(evaluate_cases(art.model, cases, index)["ndcg@20"])
    assert got["cold_target"]["cases"] == 1 and got["warm_target"]["cases"] == 2


def test_held_out_items_are_unseen_then_ranked_from_text(tiny_data: Path, tmp_path: Path) -> None:
    cfg = TrainConfig(
        data=str(tiny_data), protocol="loo", epochs=2, patience=2, hidden_dim=16, d_n=8, max_len=8, batch_size=16,
        negatives=8, cache_dir=str(tmp_path / "cache"),
    )
    full = prepare(cfg)
    cold = {"lego-5", "doll-2", "puzzle-0"}
    prep = prepare(cfg, exclude_items=cold)
    assert set(prep.item_ids) == set(full.item_ids) - cold and prep.language is not None
    assert not cold & {i for seq in prep.split.train.values() for i in seq}
    assert not cold & {i for c in prep.split.valid for i in (*c.history, c.target)}
    result = fit(replace(cfg, seed=1), prep)
    cold_ids = sorted(cold)
    assert prep.projection is not None and prep.encoder_identity is not None
    emb = embed_items(encoder_from_identity(prep.encoder_identity), cold_ids, full.dataset.items, None, progress=False)
    rows = fold_in_vectors(result.model, prep.projection, emb, "zeros")
    got = evaluate_with_cold_items(result.model, prep.index, cold_ids, rows, full.split.test)
    assert got["all"]["cases"] == len(full.split.test)
    assert got["cold_target"]["cases"] + got["warm_target"]["cases"] == got["all"]["cases"]
    assert all(0.0 <= m["ndcg@20"] <= 1.0 for m in got.values())
