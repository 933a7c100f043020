"""Zero-downtime model swaps: POST /admin/model loads a new artifact beside the serving one, carries the
cold items over (those written during the load too), and switches between two batches."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import AppState, _open, create_app
from service.ranker import NewItem
from service.settings import ServiceSettings
from service.store import StoredItem
from tests.conftest import train_tiny_artifact

LEGO = ["lego-0", "lego-1", "lego-2", "lego-3"]
CASTLE = {"title": "LEGO Harry Potter Hogwarts Castle", "categories": ["Toys & Games", "lego"]}
TRAIN = {"title": "Wooden Train Set with Bridge", "categories": ["Toys & Games", "outdoor"]}


@pytest.fixture(scope="module")
def second_artifact(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another model of the same catalogue (seed 1): what a retrain produces."""
    return train_tiny_artifact(tiny_data, tmp_path_factory, epochs=4, patience=4, seed=1)


def _client(artifact: Path, store: Path, **kw: Any) -> TestClient:
    return TestClient(create_app(ServiceSettings(artifact=artifact, store=store, **kw)))  # type: ignore[call-arg]


@pytest.fixture
def client(tiny_artifact: Path, tmp_path: Path) -> Iterator[TestClient]:
    with _client(tiny_artifact, tmp_path / "store.sqlite3") as c:
        yield c


def test_swap_serves_the_new_model_with_the_cold_items_and_names_it(
    client: TestClient, second_artifact: Path
) -> None:
    before = client.post("/recommend", json={"history": LEGO, "k": 5}).json()["model"]
    assert client.post("/items", json={"items": [{"item_id": "cold-castle", **CASTLE}]}).status_code == 201
    r = client.post("/admin/model", json={"artifact": str(second_artifact)})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["previous"] == before and body["model"]["artifact"] != before["artifact"]
    assert body["cold_items"] == 1 and body["items"] == 25
    after = client.post("/recommend", json={"history": ["cold-castle"], "k": 5})
    assert after.status_code == 200 and after.json()["model"] == body["model"]
    assert client.get("/items/cold-castle").json()["cold"] is True
    assert client.get("/readyz").json()["model"] == body["model"]
    # and back: the old model's own rows are still in the store
    back = client.post("/admin/model", json={}).json()  # no path: the configured artifact, reloaded
    assert back["model"] == before and back["cold_items"] == 1


def test_a_failed_load_leaves_the_old_model_serving(client: TestClient, tmp_path: Path) -> None:
    model = client.get("/readyz").json()["model"]
    r = client.post("/admin/model", json={"artifact": str(tmp_path / "nothing-here")})
    assert r.status_code == 422 and "still serving the previous model" in r.json()["detail"], r.text
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "manifest.json").write_text("{not json")
    r = client.post("/admin/model", json={"artifact": str(broken)})
    assert r.status_code == 422 and "broken" in r.json()["detail"]
    ok = client.post("/recommend", json={"history": LEGO, "k": 3})
    assert ok.status_code == 200 and ok.json()["model"] == model
    assert client.post("/admin/model", json={"artifcat": "x"}).status_code == 422  # a typo is not a reload


def test_swap_needs_the_write_token(tiny_artifact: Path, tmp_path: Path) -> None:
    with _client(tiny_artifact, tmp_path / "s.sqlite3", api_token="secret") as c:
        assert c.post("/admin/model", json={}).status_code == 401
        r = c.post("/admin/model", json={}, headers={"authorization": "Bearer secret"})
        assert r.status_code == 200, r.text


def test_requests_during_a_swap_all_succeed_and_each_names_one_model(
    client: TestClient, second_artifact: Path
) -> None:
    a = client.get("/readyz").json()["model"]["artifact"]
    seen: list[str] = []
    failures: list[str] = []
    done = threading.Event()

    def traffic() -> None:
        while not done.is_set():
            r = client.post("/recommend", json={"history": LEGO, "k": 5})
            if r.status_code != 200:
                failures.append(r.text)
            else:
                seen.append(r.json()["model"]["artifact"])

    threads = [threading.Thread(target=traffic) for _ in range(4)]
    for t in threads:
        t.start()
    r = client.post("/admin/model", json={"artifact": str(second_artifact)})
    b = r.json()["model"]["artifact"]
    for _ in range(20):
        client.post("/recommend", json={"history": LEGO, "k": 5})
    done.set()
    for t in threads:
        t.join()
    assert r.status_code == 200 and failures == []
    assert set(seen) <= {a, b} and b in seen
    assert seen.index(b) > 0 and a not in seen[seen.index(b) + 8 :]  # after the switch only b answers


def test_items_written_while_the_new_model_loads_are_carried_over(
    tiny_artifact: Path, second_artifact: Path, tmp_path: Path
) -> None:
    """The switch applies the old version's changes since the load began: an add, an upsert, a delete."""
    settings = ServiceSettings(artifact=tiny_artifact, store=tmp_path / "s.sqlite3")  # type: ignore[call-arg]
    from service.metrics import ServiceMetrics

    state = AppState(settings=settings, metrics=ServiceMetrics())
    state.ranker, state.store = _open(settings, tiny_artifact, settings.store_path)
    old, store = state.ranker, state.store
    old.add_items(store, [NewItem("early", CASTLE), NewItem("doomed", TRAIN)])
    since = state.last_seq()
    new, new_store = _open(settings, second_artifact, settings.store_path)  # carries early and doomed
    assert new.num_cold == 2
    # written through the old model while the new one was loading
    old.add_items(store, [NewItem("late", TRAIN)])
    old.add_items(store, [NewItem("early", TRAIN)], upsert=True)
    old.delete_item(store, "doomed")
    bare = np.random.default_rng(0).standard_normal(384).tolist()
    old.add_items(store, [NewItem("bare", {}, bare)])  # no text: cannot be re-encoded, logged
    replaced = state.switch(new, new_store, since)
    assert replaced is store and state.ranker is new
    assert sorted(new.item_ids()[new.num_trained :]) == ["early", "late"]
    assert new.get_item("early")[0]["title"] == TRAIN["title"]
    x = new.fold_in([NewItem("early", TRAIN)])[0]
    np.testing.assert_allclose(new.table[new.row_of("early")].numpy(), x, atol=1e-6)
    stored = new_store.get("early")
    assert isinstance(stored, StoredItem) and stored.record["title"] == TRAIN["title"]
    store.close()
    new_store.close()
