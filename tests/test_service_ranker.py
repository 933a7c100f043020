"""The ranker against offline oracles: `case_scores`, numpy brute force, exact search for HNSW recall."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import cast

import numpy as np
import pytest
import torch

from model.artifact import Artifact
from model.item_embeddings import AlphaFuseEmbedding
from model.recommender import RecommenderConfig, build_recommender
from model.sasrec import SASRecConfig
from service.errors import (
    FoldInUnavailable,
    InvalidItem,
    InvalidRequest,
    ItemConflict,
    ItemNotFound,
    ServiceError,
    UnknownItems,
)
from service.ranker import NewItem, Query, Ranker, Ranking, artifact_version
from service.store import SQLiteItemStore, StoredItem
from training.evaluate import case_scores, pad_histories

LEGO = ["lego-0", "lego-1", "lego-2", "lego-3"]


@pytest.fixture
def ranker(artifact: Artifact, encoder) -> Ranker:  # noqa: ANN001
    return Ranker(artifact, encoder=encoder)


def _ok(result: Ranking | ServiceError) -> Ranking:
    assert isinstance(result, Ranking), result
    return result


def _random_cold(ranker: Ranker, n: int, seed: int = 0, prefix: str = "rand") -> list[StoredItem]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, ranker.dim)).astype(np.float32)
    return [StoredItem(f"{prefix}-{i}", {"title": f"random {i}"}, x[i], seq=i + 1) for i in range(n)]


def test_scores_equal_offline_case_scores(ranker: Ranker, artifact: Artifact) -> None:
    ids = artifact.item_ids
    histories = [LEGO, ["doll-1", "puzzle-2", "doll-3"], ids[:12], ["outdoor-5"]]
    rows = [[ranker.row_of(i) for i in h] for h in histories]
    offline = case_scores(artifact.model, rows).numpy()  # (B, N)
    out = [_ok(r) for r in ranker.recommend_many([Query(h, k=len(ids), exclude_history=False) for h in histories])]
    for b, ranking in enumerate(out):
        got = {iid: s for iid, s in ranking.items}
        assert len(got) == len(ids)
        np.testing.assert_allclose([got[i] for i in ids], offline[b], atol=1e-5, rtol=0)
        ranked = [s for _, s in ranking.items]
        assert ranked == sorted(ranked, reverse=True)  # best first
    assert out[2].truncated and not out[0].truncated  # 12 > the window of 8: only the latest 8 were used


def test_batched_equals_one_by_one(ranker: Ranker) -> None:
    queries = [Query(LEGO, k=5), Query(["doll-0"], k=3, deny=["doll-1"]), Query(["puzzle-0"], k=4, allow=LEGO)]
    together = ranker.recommend_many(queries)
    alone = [ranker.recommend(q) for q in queries]
    for a, b in zip(map(_ok, together), alone, strict=True):
        assert [i for i, _ in a.items] == [i for i, _ in b.items]
        np.testing.assert_allclose([s for _, s in a.items], [s for _, s in b.items], atol=1e-6)


def test_flat_index_equals_numpy_brute_force(ranker: Ranker) -> None:
    ranker.apply(_random_cold(ranker, 300))  # a catalogue bigger than k, cold rows included
    rng = np.random.default_rng(1)
    users = rng.standard_normal((17, ranker.dim)).astype(np.float32)
    scores, labels = ranker._search(users, 10)
    brute = users @ ranker.vectors.T  # (B, size)
    top = np.argsort(-brute, axis=1)[:, :10]
    np.testing.assert_array_equal(labels, top)
    np.testing.assert_allclose(scores, np.take_along_axis(brute, top, axis=1), atol=1e-5)


def test_hnsw_recall_against_exact(artifact: Artifact, record_property: Callable[[str, object], None]) -> None:
    flat = Ranker(artifact)
    hnsw = Ranker(artifact, index="hnsw", hnsw_m=16, hnsw_ef_search=64)
    cold = _random_cold(flat, 2000)
    flat.apply(cold)
    hnsw.apply(cold)
    rng = np.random.default_rng(2)
    histories = [list(rng.choice(flat.item_ids(), size=5, replace=False)) for _ in range(50)]
    exact = flat.recommend_many([Query(h, k=10) for h in histories])
    approx = hnsw.recommend_many([Query(h, k=10) for h in histories])
    hits = sum(
        len({i for i, _ in _ok(a).items} & {i for i, _ in _ok(e).items}) for a, e in zip(approx, exact, strict=True)
    )
    recall = hits / (10 * len(histories))
    record_property("hnsw_recall_at_10", recall)
    print(f"HNSW recall@10 vs exact on {flat.size} items: {recall:.3f}")
    assert recall >= 0.9


def test_filters_exclude_allow_deny(ranker: Ranker, artifact: Artifact) -> None:
    n = len(artifact.item_ids)
    full = ranker.recommend(Query(LEGO, k=n, exclude_history=False))
    order = [i for i, _ in full.items]
    # exclude_history drops exactly the history items; over-fetching keeps k results
    got = ranker.recommend(Query(LEGO, k=5))
    assert [i for i, _ in got.items] == [i for i in order if i not in LEGO][:5]
    denied = order[:3]
    got = ranker.recommend(Query(LEGO, k=5, exclude_history=False, deny=denied))
    assert [i for i, _ in got.items] == [i for i in order if i not in denied][:5]
    # allow: only those items, exact scores, still minus the history
    allow = ["doll-0", "doll-1", "lego-0", "puzzle-5", "outdoor-2"]
    got = ranker.recommend(Query(LEGO, k=10, allow=allow))
    assert [i for i, _ in got.items] == [i for i in order if i in allow and i not in LEGO]
    scores = dict(full.items)
    for iid, s in got.items:
        assert s == pytest.approx(scores[iid], abs=1e-5)
    # every item filtered away: an empty answer, not an error
    assert ranker.recommend(Query(LEGO, k=3, allow=LEGO)).items == []


def test_request_errors_name_the_problem(ranker: Ranker, artifact: Artifact) -> None:
    with pytest.raises(UnknownItems, match="'nope'"):
        ranker.recommend(Query(["lego-0", "nope"]))
    with pytest.raises(UnknownItems, match="unknown item ids in allow: 'x'"):
        ranker.recommend(Query(["lego-0"], allow=["x"]))
    got = ranker.recommend(Query(["lego-0", "nope"], k=3, ignore_unknown=True, deny=["gone"]))
    assert got.ignored == ["nope", "gone"] and len(got.items) == 3
    with pytest.raises(InvalidRequest, match="none of the 2 history item ids is known"):
        ranker.recommend(Query(["a", "b"], ignore_unknown=True))
    with pytest.raises(InvalidRequest, match="k=25 is out of range"):
        ranker.recommend(Query(["lego-0"], k=len(artifact.item_ids) + 1))
    with pytest.raises(InvalidRequest, match="k=0"):
        ranker.recommend(Query(["lego-0"], k=0))
    with pytest.raises(InvalidRequest, match="history is empty"):
        ranker.recommend(Query([]))
    # one bad query in a batch does not spoil the others
    out = ranker.recommend_many([Query(["nope"]), Query(LEGO, k=2)])
    assert isinstance(out[0], UnknownItems) and len(_ok(out[1]).items) == 2
    with pytest.raises(ItemNotFound, match="'nope'"):
        ranker.get_item("nope")
    assert ranker.get_item("lego-0") == (artifact.item_records[artifact.item_ids.index("lego-0")], False)


def test_fold_in_of_a_trained_item_reproduces_its_language_coordinates(ranker: Ranker, artifact: Artifact) -> None:
    j = artifact.item_ids.index("lego-2")
    zeros = Ranker(artifact, encoder=ranker._encoder, cold_id="zeros")
    x = zeros.fold_in([NewItem("again", artifact.item_records[j])])[0]
    items = cast(AlphaFuseEmbedding, artifact.model.items)
    language = items.language.numpy()
    np.testing.assert_allclose(x, language[j], atol=2e-4)  # v0 = zeros: x is exactly z
    ids = items.ids.detach().numpy()
    d_s = artifact.projection.d_s  # type: ignore[union-attr]
    # neighbours (the default): the mean ID row of the 5 trained items nearest by cosine of the first d_s
    # coordinates; a trained item's own text finds itself first
    sem = language[:, :d_s] / np.linalg.norm(language[:, :d_s], axis=1, keepdims=True)
    nearest = np.argsort(-(sem @ sem[j]), kind="stable")[:5]
    assert nearest[0] == j
    x_nb = ranker.fold_in([NewItem("again", artifact.item_records[j])])[0]
    np.testing.assert_allclose(x_nb[:d_s], language[j, :d_s], atol=2e-4)  # IDs touch only the null space
    np.testing.assert_allclose(x_nb[d_s:], language[j, d_s:] + ids[nearest].mean(0), atol=2e-4)
    mean = Ranker(artifact, encoder=ranker._encoder, cold_id="mean")
    x_mean = mean.fold_in([NewItem("again", artifact.item_records[j])])[0]
    np.testing.assert_allclose(x_mean[:d_s], language[j, :d_s], atol=2e-4)
    np.testing.assert_allclose(x_mean[d_s:], language[j, d_s:] + ids.mean(0), atol=2e-4)
    # stored vectors of one rule are never served under another
    assert len({mean.version, zeros.version, ranker.version}) == 3


def test_cold_item_lands_near_its_theme_and_is_recommended(ranker: Ranker, tmp_path: Path) -> None:
    store = SQLiteItemStore(tmp_path / "s.sqlite3", ranker.version)
    new = [
        NewItem("cold-lego", {"title": "LEGO Harry Potter Hogwarts Castle", "categories": ["Toys & Games", "lego"]}),
        NewItem("cold-doll", {"title": "Barbie Fashion Doll with Pink Dress", "categories": ["Toys & Games", "doll"]}),
    ]
    added = ranker.add_items(store, new)
    assert [a.item_id for a in added] == ["cold-lego", "cold-doll"] and ranker.num_cold == 2
    # its vector is closest, on average, to the trained items of its own theme
    v = ranker.vectors[ranker.row_of("cold-lego") - 1]
    sims = {t: np.mean([ranker.vectors[ranker.row_of(f"{t}-{i}") - 1] @ v for i in range(6)])
            for t in ("lego", "puzzle", "doll", "outdoor")}
    assert max(sims, key=sims.get) == "lego", sims  # type: ignore[arg-type]
    got = [i for i, _ in ranker.recommend(Query(LEGO, k=ranker.size - len(LEGO))).items]
    assert got.index("cold-lego") < got.index("cold-doll")
    store.close()


def test_an_idle_sync_reads_only_the_change_token_and_a_commit_elsewhere_is_seen(
    ranker: Ranker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = SQLiteItemStore(tmp_path / "s.sqlite3", ranker.version)
    other = SQLiteItemStore(tmp_path / "s.sqlite3", ranker.version)  # another worker's connection
    ranker.sync(store)
    asked: list[int] = []
    real = store.changes_since
    monkeypatch.setattr(store, "changes_since", lambda seq: asked.append(seq) or real(seq))
    statements: list[str] = []
    store._conn.set_trace_callback(statements.append)
    assert ranker.sync(store) == 0 and ranker.sync(store) == 0
    assert asked == [] and statements == ["PRAGMA data_version"] * 2  # no query, no rows read
    item = _random_cold(ranker, 2)
    other.add([item[0]])  # committed by the other connection: the next sync asks and serves it
    assert ranker.sync(store) == 1 and len(asked) == 1 and "rand-0" in ranker.item_ids()
    store.add([item[1]])  # by this connection, which data_version does not count
    assert ranker.sync(store) == 1 and "rand-1" in ranker.item_ids()
    other.delete("rand-0")
    assert ranker.sync(store) == 1 and "rand-0" not in ranker.item_ids()
    assert ranker.sync(store) == 0 and len(asked) == 3
    # a store that cannot tell (token None) is asked every time
    monkeypatch.setattr(store, "change_token", lambda: None)
    ranker.sync(store)
    ranker.sync(store)
    assert len(asked) == 5
    store.close()
    other.close()


def test_cold_item_inside_a_history_scores_like_the_offline_model(ranker: Ranker, artifact: Artifact) -> None:
    x = ranker.fold_in([NewItem("cold-1", {"title": "LEGO Harry Potter Hogwarts Castle"})])
    ranker.apply([StoredItem("cold-1", {"title": "LEGO Harry Potter Hogwarts Castle"}, x[0], seq=1)])
    history = ["lego-0", "cold-1"]
    rows = [[ranker.row_of(i) for i in history]]
    with torch.no_grad():
        table = torch.cat([artifact.model.items(), torch.from_numpy(x)])  # (N + 2, D)
        user = artifact.model.encode_with_table(pad_histories(rows, ranker.max_len), table)
        items = table[1:]
        if artifact.config.similarity == "cosine":
            items = torch.nn.functional.normalize(items, dim=-1)
    offline = (user @ items.T).numpy()[0]
    got = dict(ranker.recommend(Query(history, k=ranker.size, exclude_history=False)).items)
    np.testing.assert_allclose([got[i] for i in ranker.item_ids()], offline, atol=1e-5)


def test_upsert_replaces_the_vector_and_rebuild_keeps_results(artifact: Artifact) -> None:
    ranker = Ranker(artifact)
    cold = _random_cold(ranker, 5)
    ranker.apply(cold)
    before = ranker.recommend(Query(LEGO, k=ranker.size - 4)).items
    replaced = StoredItem("rand-0", {"title": "moved"}, -cold[0].vector, seq=10)
    ranker.apply([replaced])
    after = ranker.recommend(Query(LEGO, k=ranker.size - 4)).items
    assert ranker.size == len(artifact.item_ids) + 5 and ranker.last_seq == 10
    assert [i for i, _ in after].count("rand-0") == 1 and len(after) == len(before)
    assert dict(after)["rand-0"] == pytest.approx(-dict(before)["rand-0"], abs=1e-5)
    assert ranker.get_item("rand-0") == ({"title": "moved"}, True)
    ranker._rebuild()
    again = ranker.recommend(Query(LEGO, k=ranker.size - 4)).items
    assert [i for i, _ in again] == [i for i, _ in after]


def test_add_items_conflicts_and_validation(ranker: Ranker, tmp_path: Path) -> None:
    store = SQLiteItemStore(tmp_path / "s.sqlite3", ranker.version)
    ranker.add_items(store, [NewItem("c", {"title": "Wooden Train Set"})])
    with pytest.raises(ItemConflict, match="trained catalogue items cannot be added or replaced: 'lego-0'"):
        ranker.add_items(store, [NewItem("lego-0", {"title": "x"})], upsert=True)
    with pytest.raises(ItemConflict, match="cold items already exist: 'c'"):
        ranker.add_items(store, [NewItem("c", {"title": "x"})])
    assert ranker.add_items(store, [NewItem("c", {"title": "Toy Train"})], upsert=True)[0].replaced
    with pytest.raises(InvalidRequest, match="duplicate item ids in the request: 'd'"):
        ranker.add_items(store, [NewItem("d", {"title": "x"}), NewItem("d", {"title": "y"})])
    with pytest.raises(InvalidItem, match="item 'e' has no text"):
        ranker.add_items(store, [NewItem("e", {})])
    with pytest.raises(InvalidItem, match="embedding has 3 values, the model's encoder has 384"):
        ranker.add_items(store, [NewItem("e", {}, [0.1, 0.2, 0.3])])
    small = Ranker(ranker.artifact, max_items_per_add=1)
    with pytest.raises(InvalidRequest, match="2 items in one request; at most 1"):
        small.add_items(store, [NewItem("f", {"title": "x"}), NewItem("g", {"title": "y"})])
    assert store.count() == 1 and ranker.get_item("c") == ({"title": "Toy Train"}, True)
    store.close()


def test_precomputed_embedding_and_no_encoder(artifact: Artifact, ranker: Ranker) -> None:
    """Without a text encoder, items need `embedding`; with one it gives the same vector as the text."""
    bare = Ranker(artifact)  # no encoder at all (as for a precomputed-matrix artifact)
    record = {"title": "LEGO Harry Potter Hogwarts Castle"}
    with pytest.raises(InvalidItem, match="give each new item an `embedding` of 384 floats"):
        bare.fold_in([NewItem("c", record)])
    from training.encoders import item_text

    e = ranker._text_encoder().encode([item_text(record)])[0]
    np.testing.assert_allclose(
        bare.fold_in([NewItem("c", record, e.tolist())]), ranker.fold_in([NewItem("c", record)]), atol=1e-5
    )


def test_id_only_model_cannot_fold_in(artifact: Artifact) -> None:
    cfg = RecommenderConfig(item_embedding="id", sasrec=SASRecConfig(hidden_dim=8, max_len=4))
    model = build_recommender(cfg, 3, None).eval()
    with torch.no_grad():
        table = model.item_vectors().numpy()
    art = Artifact(
        path=Path("."), manifest={"model": {"name": "alphafuse", "version": "id-only"}}, model=model, projection=None,
        item_ids=["a", "b", "c"], item_records=[{"title": t} for t in "abc"], item_table=table,
    )
    ranker = Ranker(art)
    assert len(ranker.recommend(Query(["a"], k=2)).items) == 2
    with pytest.raises(FoldInUnavailable, match="no language projection"):
        ranker.fold_in([NewItem("d", {"title": "new"})])
    assert artifact_version(art, "zeros").startswith("id-only+")


def test_long_deny_lists_are_scanned_exactly(ranker: Ranker, monkeypatch: pytest.MonkeyPatch) -> None:
    ranker.apply(_random_cold(ranker, 100))
    query = Query(LEGO, k=10, deny=[f"rand-{i}" for i in range(0, 100, 2)])
    via_index = ranker.recommend(query)
    monkeypatch.setattr("service.ranker.EXACT_FETCH_MIN", 0)  # 10 + 54 excluded > 124 // 4: scan instead
    assert ranker._is_exact(ranker._plan(query))
    scanned = ranker.recommend(query)
    assert [i for i, _ in scanned.items] == [i for i, _ in via_index.items]
    np.testing.assert_allclose([s for _, s in scanned.items], [s for _, s in via_index.items], atol=1e-5)
    assert not {i for i, _ in scanned.items} & (set(query.deny or ()) | set(LEGO))


def _live_brute_force(ranker: Ranker, user: np.ndarray, k: int) -> list[str]:
    ids = ranker.item_ids()
    rows = np.array([ranker.row_of(i) for i in ids])
    scores = ranker.vectors[rows - 1] @ user
    return [ids[j] for j in np.argsort(-scores, kind="stable")[:k]]


def test_deleted_cold_items_leave_every_path_and_other_rankers(artifact: Artifact, tmp_path: Path) -> None:
    store = SQLiteItemStore(tmp_path / "s.sqlite3", artifact_version(artifact, "zeros"))
    ranker, other = Ranker(artifact), Ranker(artifact)
    store.add([StoredItem(s.item_id, s.record, s.vector) for s in _random_cold(ranker, 400)])
    ranker.sync(store)
    n = len(artifact.item_ids) + 400
    assert ranker.size == n

    ranker.delete_item(store, "rand-7")
    assert ranker.size == n - 1 and ranker.num_cold == 399 and "rand-7" not in ranker.item_ids()
    everything = [i for i, _ in ranker.recommend(Query(LEGO, k=ranker.size - 4)).items]
    assert "rand-7" not in everything and len(everything) == ranker.size - 4
    allowed = ranker.recommend(Query(LEGO, k=3, allow=["rand-7", "rand-8"], ignore_unknown=True))
    assert [i for i, _ in allowed.items] == ["rand-8"] and allowed.ignored == ["rand-7"]
    with pytest.raises(UnknownItems, match="'rand-7'"):
        ranker.recommend(Query(["rand-7"]))
    with pytest.raises(ItemNotFound):
        ranker.get_item("rand-7")
    with pytest.raises(ItemNotFound):
        ranker.delete_item(store, "rand-7")
    with pytest.raises(ItemConflict, match="'lego-0' is in the trained catalogue and cannot be deleted"):
        ranker.delete_item(store, "lego-0")

    other.sync(store)  # another worker learns of the deletion from the store
    assert other.item_ids() == ranker.item_ids()

    rng = np.random.default_rng(3)
    users = rng.standard_normal((5, ranker.dim)).astype(np.float32)
    def check_against_brute_force() -> None:
        for u in users:
            scores, labels = ranker._search(u[None], 40)
            got = ranker._trim(scores[0], labels[0], ranker._plan(Query(LEGO, k=10, exclude_history=False)))
            assert [ranker._ids[r - 1] for r, _ in got] == _live_brute_force(ranker, u, 10)

    check_against_brute_force()
    for i in range(100, 400):
        ranker.delete_item(store, f"rand-{i}")
    # the 257th dead label triggered a rebuild over the live rows; the deletions since are filtered
    assert ranker.size == len(artifact.item_ids) + 99 and ranker._index.ntotal < n
    assert ranker._index.ntotal == ranker.size + len(ranker._dead) and 0 < len(ranker._dead) < 256
    check_against_brute_force()

    store.add([StoredItem("rand-7", {"title": "back"}, -np.ones(ranker.dim, dtype=np.float32))])
    ranker.sync(store)  # a deleted id can come back, on a new row
    assert ranker.get_item("rand-7") == ({"title": "back"}, True) and ranker.size == len(artifact.item_ids) + 100
    store.close()


def test_carry_over_refolds_text_items_of_another_model(artifact: Artifact, encoder, tmp_path: Path) -> None:  # noqa: ANN001
    path = tmp_path / "s.sqlite3"
    old_store = SQLiteItemStore(path, "another-model+0123456789ab")  # vectors of a model this is not
    dim = Ranker(artifact, encoder=encoder).dim
    old_store.add([
        StoredItem("castle", {"title": "LEGO Harry Potter Hogwarts Castle", "categories": ["lego"]},
                   np.ones(dim, dtype=np.float32)),
        StoredItem("bare", {}, np.ones(dim, dtype=np.float32)),
        StoredItem("dropped", {"title": "Toy Train"}, np.ones(dim, dtype=np.float32)),
        StoredItem("lego-0", {"title": "shadowed"}, np.zeros(dim, dtype=np.float32)),
    ])
    old_store.delete("dropped")

    new = Ranker(artifact, encoder=encoder)
    store = SQLiteItemStore(path, new.version)
    carried, skipped = new.carry_over(store)
    assert carried == ["castle"] and skipped == ["bare"]  # no text, another model: cannot be carried
    expected = new.fold_in([NewItem("castle", {"title": "LEGO Harry Potter Hogwarts Castle", "categories": ["lego"]})])
    np.testing.assert_allclose(new.table[new.row_of("castle")].numpy(), expected[0], atol=1e-6)
    assert new.get_item("castle")[1] is True and new.num_cold == 1
    with pytest.raises(ItemNotFound):
        new.get_item("dropped")
    assert Ranker(artifact, encoder=encoder).carry_over(store) == ([], ["bare"])  # idempotent
    old_store.close()
    store.close()


@pytest.mark.parametrize(("old_rule", "new_rule"), [("zeros", "neighbours"), ("mean", "zeros"), ("neighbours", "mean")])
def test_a_new_cold_id_rule_converts_stored_vectors_bare_embeddings_included(
    artifact: Artifact, encoder, tmp_path: Path, old_rule: str, new_rule: str  # noqa: ANN001
) -> None:
    path = tmp_path / "s.sqlite3"
    old = Ranker(artifact, encoder=encoder, cold_id=old_rule)  # type: ignore[arg-type]
    old_store = SQLiteItemStore(path, old.version)
    emb = np.random.default_rng(0).standard_normal(384).tolist()
    items = [NewItem("castle", {"title": "LEGO Harry Potter Hogwarts Castle", "categories": ["lego"]}),
             NewItem("bare", {}, emb)]
    old.add_items(old_store, items)
    new = Ranker(artifact, encoder=encoder, cold_id=new_rule)  # type: ignore[arg-type]
    assert new.version != old.version
    store = SQLiteItemStore(path, new.version)
    assert new.carry_over(store) == (["castle", "bare"], [])  # nothing to re-encode: the rule alone changed
    expected = new.fold_in(items)  # what posting them to the new rule gives
    for n, item in enumerate(items):
        np.testing.assert_allclose(new.table[new.row_of(item.item_id)].numpy(), expected[n], atol=1e-5)
    # text search takes each cold row's v0 back off: a cold item's own language coordinates find it, at cosine 1
    z = Ranker(artifact, encoder=encoder, cold_id="zeros").fold_in(items)  # v0 = 0: exactly z
    for n, item in enumerate(items):
        hit = new.search(z[n], k=1)[0]
        assert (hit.item_id, hit.cold) == (item.item_id, True) and hit.score == pytest.approx(1.0, abs=1e-5)
    old_store.close()
    store.close()


def test_device_cuda_without_a_gpu_is_refused(artifact: Artifact) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    with pytest.raises(ValueError, match="cuda was asked for"):
        Ranker(artifact, device="cuda")
    assert Ranker(artifact, device="auto").device.type == "cpu"


def test_device_copy_follows_table_writes(artifact: Artifact) -> None:
    """The accelerator path (a copy of the model and of the table, re-copied after writes), driven on the
    CPU: no GPU here, but the copy and its invalidation are the same code."""
    import copy

    plain, ranker = Ranker(artifact), Ranker(artifact)
    ranker._device_model = copy.deepcopy(ranker.model)
    vec = np.random.default_rng(3).standard_normal(ranker.dim).astype(np.float32)
    queries = [Query(LEGO, k=5), Query(["doll-0", vec], k=3)]  # the second carries a bare vector entry

    def same() -> None:
        for a, b in zip(map(_ok, plain.recommend_many(queries)), map(_ok, ranker.recommend_many(queries)), strict=True):
            assert [i for i, _ in a.items] == [i for i, _ in b.items]
            np.testing.assert_allclose([s for _, s in a.items], [s for _, s in b.items], atol=1e-6)

    same()
    copied = ranker._device_table
    assert copied is not None and copied[0] == ranker._table_writes
    cold = _random_cold(ranker, 3)
    plain.apply(cold)
    ranker.apply(cold)
    queries.append(Query(["rand-0", "rand-1"], k=4))  # a history through rows only the new copy has
    same()
    assert ranker._device_table is not None and ranker._device_table[0] == copied[0] + 1


def _ranking(ranker: Ranker) -> list[list[str]]:
    histories = [LEGO[:2], LEGO[1:], ["lego-0"]]
    return [[i for i, _ in _ok(r).items] for r in ranker.recommend_many([Query(h, k=5) for h in histories])]


def test_hnsw_index_cache_is_written_once_read_back_and_keyed_by_its_settings(
    artifact: Artifact, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    import faiss

    cache = tmp_path / "index-cache"
    first = Ranker(artifact, index="hnsw", hnsw_m=16, index_cache=cache)
    files = list(cache.glob("*.faiss"))
    assert len(files) == 1 and not list(cache.glob("*.tmp"))
    # the second start reads the graph instead of building one: no HNSW add happens at all
    monkeypatch.setattr(faiss.IndexHNSWFlat, "add", lambda *a: pytest.fail("rebuilt despite the cache"))
    with caplog.at_level("INFO", logger="service.ranker"):
        second = Ranker(artifact, index="hnsw", hnsw_m=16, index_cache=cache)
    assert "read the HNSW index" in caplog.text
    assert second._index.ntotal == first._index.ntotal and _ranking(second) == _ranking(first)
    monkeypatch.undo()
    # other HNSW settings, or a flat index, never read that file
    Ranker(artifact, index="hnsw", hnsw_m=8, index_cache=cache)
    assert len(list(cache.glob("*.faiss"))) == 2
    Ranker(artifact, index="flat", index_cache=cache)
    assert len(list(cache.glob("*.faiss"))) == 2


def test_a_damaged_or_foreign_cache_file_is_rebuilt_over_and_an_unwritable_cache_only_warns(
    artifact: Artifact, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    import faiss

    cache = tmp_path / "cache"
    exact = _ranking(Ranker(artifact))
    Ranker(artifact, index="hnsw", hnsw_m=16, index_cache=cache)
    (path,) = cache.glob("*.faiss")
    path.write_bytes(path.read_bytes()[:100])  # torn
    with caplog.at_level("INFO", logger="service.ranker"):
        again = Ranker(artifact, index="hnsw", hnsw_m=16, index_cache=cache)
    assert "is unreadable" in caplog.text and _ranking(again) == exact
    assert faiss.read_index(str(path)).ntotal == again._index.ntotal  # rewritten whole
    faiss.write_index(faiss.IndexHNSWFlat(again.dim, 16, faiss.METRIC_INNER_PRODUCT), str(path))  # empty graph
    caplog.clear()
    with caplog.at_level("INFO", logger="service.ranker"):
        assert _ranking(Ranker(artifact, index="hnsw", hnsw_m=16, index_cache=cache)) == exact
    assert "does not hold this catalogue's HNSW index" in caplog.text
    blocked = tmp_path / "a-file"
    blocked.write_text("not a directory")
    caplog.clear()
    with caplog.at_level("WARNING", logger="service.ranker"):
        assert _ranking(Ranker(artifact, index="hnsw", hnsw_m=16, index_cache=blocked)) == exact
    assert "cannot keep the HNSW index" in caplog.text
