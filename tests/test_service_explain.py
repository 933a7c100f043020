"""What AlphaFuse makes visible from outside: explained scores, text entries in a history, text search.

Each is checked against an independent computation from the trained model's own tensors (the ranker's
answer is never its own oracle), on the ranker and through HTTP."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from torch.nn import functional as F

from model.artifact import Artifact
from model.item_embeddings import AlphaFuseEmbedding
from model.recommender import RecommenderConfig, build_recommender
from model.sasrec import SASRecConfig
from service.app import create_app
from service.errors import ExplainUnavailable, FoldInUnavailable, InvalidRequest
from service.ranker import NewItem, Query, Ranker
from service.settings import ServiceSettings
from service.store import StoredItem
from training.encoders import item_text
from training.evaluate import pad_histories

LEGO = ["lego-0", "lego-1", "lego-2", "lego-3"]
HOGWARTS = {"title": "LEGO Harry Potter Hogwarts Castle", "categories": ["Toys & Games", "lego"]}


def _ranker(artifact: Artifact, encoder, **kw) -> Ranker:  # noqa: ANN001, ANN003
    return Ranker(artifact, encoder=encoder, **kw)


def _user(artifact: Artifact, rows: list[int], table: torch.Tensor) -> np.ndarray:
    with torch.no_grad():
        return artifact.model.encode_with_table(pad_histories([rows], 8), table).numpy()[0].astype(np.float64)


@pytest.mark.parametrize("cold_id", ["zeros", "mean"])
def test_explained_parts_are_the_language_and_id_dot_products_and_sum_to_the_score(
    artifact: Artifact, encoder, cold_id: str  # noqa: ANN001
) -> None:
    ranker = _ranker(artifact, encoder, cold_id=cold_id)
    x = ranker.fold_in([NewItem("cold-lego", HOGWARTS)])
    ranker.apply([StoredItem("cold-lego", HOGWARTS, x[0], seq=1)])
    plain = ranker.recommend(Query(LEGO, k=ranker.size - len(LEGO)))
    explained = ranker.recommend(Query(LEGO, k=ranker.size - len(LEGO), explain=True))
    assert [i for i, _ in explained.items] == [i for i, _ in plain.items]  # the same order as the index's
    assert explained.parts is not None and plain.parts is None
    for (_, score), (_, plain_score), (sem, col) in zip(explained.items, plain.items, explained.parts, strict=True):
        assert score == sem + col  # exactly, by construction
        assert score == pytest.approx(plain_score, abs=1e-5)

    items = cast(AlphaFuseEmbedding, artifact.model.items)
    language, ids, d_s = items.language.numpy(), items.ids.detach().numpy(), items.d_s
    user = _user(artifact, [ranker.row_of(i) for i in LEGO], ranker.table)
    parts = dict(zip([i for i, _ in explained.items], explained.parts, strict=True))
    cosine = artifact.config.similarity == "cosine"
    for iid in ["lego-4", "doll-0", "outdoor-3"]:
        j = artifact.item_ids.index(iid)
        norm = np.linalg.norm(language[j] + np.pad(ids[j], (d_s, 0))) if cosine else 1.0
        assert parts[iid][0] == pytest.approx(language[j] @ user / norm, abs=1e-5)
        assert parts[iid][1] == pytest.approx(ids[j] @ user[d_s:] / norm, abs=1e-5)
    # a cold item's collaborative part is what v0 gives: nothing with zeros, the mean ID row with mean
    v0 = ids.mean(0) if cold_id == "mean" else np.zeros(ids.shape[1])
    norm = float(np.linalg.norm(x[0])) if cosine else 1.0
    assert parts["cold-lego"][1] == pytest.approx(v0 @ user[d_s:] / norm, abs=1e-6)
    if cold_id == "zeros":
        assert parts["cold-lego"][1] == 0.0
    # trained items carry a behaviour part that the cold item lacks
    assert max(abs(c) for i, (_, c) in parts.items() if i != "cold-lego") > 1e-3


def test_explain_on_a_model_without_language_parts_is_refused(artifact: Artifact) -> None:
    cfg = RecommenderConfig(item_embedding="id", sasrec=SASRecConfig(hidden_dim=8, max_len=4))
    model = build_recommender(cfg, 3, None).eval()
    with torch.no_grad():
        table = model.item_vectors().numpy()
    art = Artifact(
        path=Path("."), manifest={"model": {"name": "alphafuse", "version": "id-only"}}, model=model, projection=None,
        item_ids=["a", "b", "c"], item_records=[{"title": t} for t in "abc"], item_table=table,
    )
    ranker = Ranker(art)
    with pytest.raises(ExplainUnavailable, match="item_embedding is 'id'"):
        ranker.recommend(Query(["a"], k=2, explain=True))
    assert ranker.search_unavailable is not None and "'id'" in ranker.search_unavailable
    with pytest.raises(FoldInUnavailable):
        ranker.query_language("anything")


def test_a_text_entry_in_a_history_is_folded_in_for_that_query_only(artifact: Artifact, encoder) -> None:  # noqa: ANN001
    ranker = _ranker(artifact, encoder)
    x = ranker.fold_in([NewItem("h", HOGWARTS)])[0]
    size, rows = ranker.size, ranker.num_rows
    got = ranker.recommend(Query(["doll-0", x], k=size - 1, exclude_history=True))
    assert ranker.size == size and ranker.num_rows == rows  # nothing was added to the catalogue
    table = torch.cat([ranker.table, torch.from_numpy(x[None])])
    user = _user(artifact, [ranker.row_of("doll-0"), rows + 1], table).astype(np.float32)
    offline = ranker.vectors @ user
    assert [i for i, _ in got.items][0] == artifact.item_ids[int(np.argmax(np.where(
        np.arange(rows) == ranker.row_of("doll-0") - 1, -np.inf, offline)))]
    for iid, score in got.items:
        assert score == pytest.approx(float(offline[ranker.row_of(iid) - 1]), abs=1e-5)
    # batched with plain queries: every query gets its own rows
    many = ranker.recommend_many([Query(LEGO, k=5), Query(["doll-0", x], k=size - 1), Query([x, x], k=3)])
    assert many[0].items == ranker.recommend(Query(LEGO, k=5)).items  # type: ignore[union-attr]
    assert [i for i, _ in many[1].items] == [i for i, _ in got.items]  # type: ignore[union-attr]
    with pytest.raises(InvalidRequest, match="shape"):
        ranker.recommend(Query([np.zeros(3, dtype=np.float32)], k=2))


def test_text_search_ranks_by_language_coordinates_and_sees_cold_items(artifact: Artifact, encoder) -> None:  # noqa: ANN001
    ranker = _ranker(artifact, encoder)
    hits = ranker.search(ranker.query_language("LEGO bricks building set"), k=6)
    assert hits[0].item_id.startswith("lego") and sum(h.item_id.startswith("lego") for h in hits) >= 3
    assert not any(h.cold for h in hits)
    # an independent oracle: cosine of the query's projected embedding and each trained item's Z
    items = cast(AlphaFuseEmbedding, artifact.model.items)
    z = ranker.query_language("LEGO bricks building set")
    lang = items.language.numpy()
    oracle = (lang @ z) / (np.linalg.norm(lang, axis=1) * np.linalg.norm(z))
    expect = [artifact.item_ids[j] for j in np.argsort(-oracle)[:6]]
    assert [h.item_id for h in hits] == expect
    assert [h.score for h in hits] == pytest.approx(sorted(oracle, reverse=True)[:6], abs=1e-5)
    # a cold item with the query's own text is the nearest; deleted, it is gone
    x = ranker.fold_in([NewItem("cold-castle", HOGWARTS)])
    ranker.apply([StoredItem("cold-castle", HOGWARTS, x[0], seq=1)])
    top = ranker.search(ranker.query_language(item_text(HOGWARTS)), k=3)  # the very text it was encoded from
    assert top[0].item_id == "cold-castle" and top[0].cold and top[0].score > 0.99
    ranker.apply([StoredItem("cold-castle", {}, np.zeros(0, dtype=np.float32), seq=2, deleted=True)])
    assert "cold-castle" not in [h.item_id for h in ranker.search(z, k=ranker.size)]
    with pytest.raises(InvalidRequest, match="k=0"):
        ranker.search(z, k=0)
    with pytest.raises(InvalidRequest, match="empty"):
        ranker.query_language("   ")


def test_explain_for_a_cosine_model_divides_both_parts_by_the_row_norm(artifact: Artifact, encoder) -> None:  # noqa: ANN001
    items = cast(AlphaFuseEmbedding, artifact.model.items)
    cfg = RecommenderConfig(
        item_embedding="alphafuse", similarity="cosine", d_n=items.d_n,
        sasrec=SASRecConfig(hidden_dim=items.dim, max_len=8),
    )
    model = build_recommender(cfg, items.num_items, items.language).eval()
    with torch.no_grad():
        model.items.ids.copy_(torch.randn_like(model.items.ids) * 0.3)  # type: ignore[union-attr, operator]
        table = model.item_vectors().numpy()
    art = Artifact(
        path=Path("."), manifest={"model": {"name": "alphafuse", "version": "cos"}}, model=model,
        projection=artifact.projection, item_ids=artifact.item_ids, item_records=artifact.item_records,
        item_table=table,
    )
    ranker = Ranker(art, encoder=encoder)
    got = ranker.recommend(Query(LEGO, k=5, explain=True))
    assert got.parts is not None
    with torch.no_grad():
        user = model.encode_with_table(pad_histories([[ranker.row_of(i) for i in LEGO]], 8), ranker.table)[0]
    for (iid, score), (sem, col) in zip(got.items, got.parts, strict=True):
        j = artifact.item_ids.index(iid)
        with torch.no_grad():
            x = model.items()[j + 1]
        assert score == pytest.approx(float(F.normalize(x, dim=0) @ user), abs=1e-5)
        ids = model.items.ids.detach()  # type: ignore[union-attr, operator]
        assert col == pytest.approx(float(ids[j] @ user[items.d_s :] / x.norm()), abs=1e-5)
        assert sem + col == score


# ------------------------------------------------------------------------------------------------------
# through HTTP


@pytest.fixture
def client(tiny_artifact: Path, tmp_path: Path) -> Iterator[TestClient]:
    settings = ServiceSettings(artifact=tiny_artifact, store=tmp_path / "store.sqlite3")  # type: ignore[call-arg]
    with TestClient(create_app(settings)) as c:
        yield c


def test_http_explain_text_history_and_search(client: TestClient) -> None:
    r = client.post("/recommend", json={"history": LEGO, "k": 5, "explain": True})
    assert r.status_code == 200, r.text
    for it in r.json()["items"]:
        assert it["score"] == it["semantic"] + it["collaborative"]
    plain = client.post("/recommend", json={"history": LEGO, "k": 5}).json()["items"]
    assert set(plain[0]) == {"item_id", "score"}  # no parts unless asked for

    r = client.post("/recommend", json={"history": ["doll-0", {"title": HOGWARTS["title"]}], "k": 5, "explain": True})
    assert r.status_code == 200, r.text
    assert client.get("/readyz").json()["cold_items"] == 0  # the text entry was not stored
    assert client.post("/recommend", json={"history": [{"title": HOGWARTS["title"]}], "k": 3}).status_code == 200

    bad = client.post("/recommend", json={"history": [{"brand": ""}], "k": 3})
    assert bad.status_code == 422 and "history[0]" in bad.json()["detail"], bad.text
    typo = client.post("/recommend", json={"history": [{"titel": "x"}], "k": 3})
    assert typo.status_code == 422 and "titel" in typo.json()["detail"], typo.text
    long = client.post("/recommend", json={"history": [{"title": "x" * 20_000}], "k": 3})
    assert long.status_code == 422 and "history[0].title" in long.json()["detail"], long.text

    r = client.get("/search", params={"q": "lego", "k": 4})
    assert r.status_code == 200, r.text
    body = r.json()
    assert len(body["items"]) == 4 and body["items"][0]["record"]["title"]
    assert sum(h["item_id"].startswith("lego") for h in body["items"]) >= 3
    added = client.post("/items", json={"items": [{"item_id": "cold-lego", **HOGWARTS}]})
    assert added.status_code == 201
    hits = client.get("/search", params={"q": item_text(HOGWARTS), "k": 2}).json()["items"]
    assert hits[0]["item_id"] == "cold-lego" and hits[0]["cold"] is True
    assert client.get("/search", params={"q": "", "k": 2}).status_code == 422
    assert client.get("/search", params={"q": "lego", "k": 0}).status_code == 422
    assert client.get("/search", params={"q": "lego", "k": 10_000}).status_code == 422
    assert client.get("/search").status_code == 422
