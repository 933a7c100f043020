"""Every route and error case through FastAPI's TestClient (the lifespan runs: real artifact, real store)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings
from training.evaluate import case_scores

LEGO = ["lego-0", "lego-1", "lego-2", "lego-3"]
HOGWARTS = {
    "item_id": "cold-lego", "title": "LEGO Harry Potter Hogwarts Castle", "categories": ["Toys & Games", "lego"],
}


def _settings(artifact: Path, store: Path, **kw: Any) -> ServiceSettings:
    return ServiceSettings(artifact=artifact, store=store, **kw)


@pytest.fixture
def client(tiny_artifact: Path, tmp_path: Path) -> Iterator[TestClient]:
    with TestClient(create_app(_settings(tiny_artifact, tmp_path / "store.sqlite3"))) as c:
        yield c


def test_recommend_returns_offline_scores(client: TestClient, tiny_artifact: Path) -> None:
    from model.artifact import load_artifact

    art = load_artifact(tiny_artifact)
    r = client.post("/recommend", json={"history": LEGO, "k": 5})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"]["name"] == "alphafuse" and body["model"]["version"] == art.manifest["model"]["version"]
    assert body["ignored"] == [] and body["truncated"] is False
    items = body["items"]
    assert len(items) == 5 and not {i["item_id"] for i in items} & set(LEGO)
    offline = case_scores(art.model, [[art.item_ids.index(i) + 1 for i in LEGO]]).numpy()[0]
    for it in items:
        assert it["score"] == pytest.approx(float(offline[art.item_ids.index(it["item_id"])]), abs=1e-5)
    scores = [it["score"] for it in items]
    assert scores == sorted(scores, reverse=True)


def test_recommend_bytes_are_what_pydantic_would_write_with_the_rankers_exact_floats(client: TestClient) -> None:
    from pydantic import TypeAdapter

    from service.ranker import Query
    from service.schemas import RecommendResponse, ScoredItem

    long = [*LEGO, "ghost", "puzzle-0", "puzzle-1", "doll-0", "doll-1", "outdoor-0"]
    r = client.post("/recommend", json={"history": long, "k": 7, "ignore_unknown": True, "deny": ["lego-5"]})
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    state = client.app.state.service
    ranking = state.ranker.recommend(Query(long, k=7, ignore_unknown=True, deny=["lego-5"]))
    assert ranking.ignored == ["ghost"] and ranking.truncated
    model = RecommendResponse(
        items=[ScoredItem(item_id=i, score=s) for i, s in ranking.items], model=state.model_info,
        ignored=ranking.ignored, truncated=ranking.truncated,
    )
    # byte for byte what FastAPI's response_model path (pydantic-core) wrote for the same answer, less the
    # explain parts that were not asked for
    assert r.content == TypeAdapter(RecommendResponse).dump_json(model, exclude_none=True)
    assert [it["score"] for it in r.json()["items"]] == [s for _, s in ranking.items]  # exact, not approx
    RecommendResponse.model_validate_json(r.content)
    ok = client.get("/openapi.json").json()["paths"]["/recommend"]["post"]["responses"]["200"]
    assert ok["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/RecommendResponse"}


def test_recommend_body_writes_every_float_as_pydantic_does() -> None:
    from pydantic import TypeAdapter

    from service.ranker import Ranking
    from service.responses import recommend_body
    from service.schemas import RecommendResponse

    rng = np.random.default_rng(0)
    scores = [float(v) for v in rng.standard_normal(2000).astype(np.float32)]
    scores += [float(np.float32(v)) for v in (1e-7, 3.4e38, 1e16, 1e-45, 0.1, 123456.7)]
    scores += [0.0, -0.0, float("nan"), float("inf"), -float("inf")]  # non-finite: `null` in both
    ranking = Ranking([(f"i{n}", s) for n, s in enumerate(scores)], ["x"], True)
    model = {"name": "alphafuse", "version": "v", "artifact": "v+0123456789ab"}
    expected = TypeAdapter(RecommendResponse).dump_json(RecommendResponse.model_validate(
        {"items": [{"item_id": i, "score": s} for i, s in ranking.items], "model": model, "ignored": ["x"],
         "truncated": True}
    ), exclude_none=True)  # fmt: skip
    assert recommend_body(ranking, model) == expected
    parts = [(s / 3, s - s / 3) for s in scores]
    explained = Ranking(ranking.items, ["x"], True, parts)
    expected = TypeAdapter(RecommendResponse).dump_json(RecommendResponse.model_validate(
        {"items": [{"item_id": i, "score": s, "semantic": a, "collaborative": b}
                   for (i, s), (a, b) in zip(ranking.items, parts, strict=True)],
         "model": model, "ignored": ["x"], "truncated": True}
    ))  # fmt: skip
    assert recommend_body(explained, model) == expected


def test_recommend_options_and_truncation(client: TestClient) -> None:
    long = [f"{t}-{i}" for t in ("puzzle", "doll") for i in range(6)]
    r = client.post("/recommend", json={"history": long, "k": 3, "exclude_history": False})
    assert r.status_code == 200 and r.json()["truncated"] is True
    r = client.post("/recommend", json={"history": ["lego-0", "ghost"], "k": 2, "ignore_unknown": True})
    assert r.status_code == 200 and r.json()["ignored"] == ["ghost"]
    r = client.post("/recommend", json={"history": LEGO, "k": 10, "allow": ["doll-0", "lego-5", "lego-0"]})
    assert {i["item_id"] for i in r.json()["items"]} == {"doll-0", "lego-5"}
    r = client.post("/recommend", json={"history": LEGO, "k": 20, "deny": ["doll-0"]})
    # 24 items - 4 in the history - 1 denied: fewer than k are left, and that is not an error
    assert len(r.json()["items"]) == 19 and "doll-0" not in {i["item_id"] for i in r.json()["items"]}


@pytest.mark.parametrize(
    ("body", "status", "detail"),
    [
        ({"history": ["lego-0", "ghost"]}, 422, "unknown item ids in history: 'ghost'"),
        ({"history": ["ghost"], "ignore_unknown": True}, 422, "none of the 1 history item ids is known"),
        ({"history": ["lego-0"], "k": 25}, 422, "k=25 is out of range: must be between 1 and 24"),
        ({"history": ["lego-0"], "allow": ["ghost"]}, 422, "unknown item ids in allow: 'ghost'"),
        ({"history": []}, 422, "at least 1 item"),
        ({"history": ["lego-0"], "k": 0}, 422, "greater than or equal to 1"),
        ({"history": "lego-0"}, 422, "valid list"),
        ({"history": ["lego-0"], "k": "ten"}, 422, "valid integer"),
        ({"history": ["lego-0"], "exclude_histroy": False}, 422, "Extra inputs are not permitted"),
    ],
)
def test_recommend_errors(client: TestClient, body: dict[str, Any], status: int, detail: str) -> None:
    r = client.post("/recommend", json=body)
    assert r.status_code == status, r.text
    assert detail in str(r.json()["detail"])


def test_cold_item_by_text_is_recommended_and_usable_in_a_history(client: TestClient) -> None:
    doll = {"item_id": "cold-doll", "title": "Barbie Fashion Doll with Pink Dress", "categories": ["doll"]}
    r = client.post("/items", json={"items": [HOGWARTS, doll]})
    assert r.status_code == 201, r.text
    body = r.json()
    assert [i["item_id"] for i in body["items"]] == ["cold-lego", "cold-doll"] and body["replaced"] == []
    assert body["items"][0]["record"] == {"title": HOGWARTS["title"], "categories": HOGWARTS["categories"]}
    r = client.post("/recommend", json={"history": LEGO, "k": 22})
    ranked = [i["item_id"] for i in r.json()["items"]]
    assert ranked.index("cold-lego") < ranked.index("cold-doll")  # the lego history prefers the lego item
    r = client.post("/recommend", json={"history": ["cold-lego", "lego-1"], "k": 5})
    assert r.status_code == 200 and "cold-lego" not in {i["item_id"] for i in r.json()["items"]}
    r = client.get("/items/cold-lego")
    assert r.json() == {"item_id": "cold-lego", "record": body["items"][0]["record"], "cold": True}
    ready = client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["items"] == 26 and ready["cold_items"] == 2


def test_add_items_conflicts_upsert_and_validation(client: TestClient) -> None:
    assert client.post("/items", json={"items": [HOGWARTS]}).status_code == 201
    r = client.post("/items", json={"items": [HOGWARTS]})
    assert r.status_code == 409 and "'cold-lego'" in r.json()["detail"] and "upsert" in r.json()["detail"]
    r = client.post("/items", json={"items": [{**HOGWARTS, "title": "LEGO Hogwarts"}], "upsert": True})
    assert r.status_code == 201 and r.json()["replaced"] == ["cold-lego"]
    assert client.get("/items/cold-lego").json()["record"]["title"] == "LEGO Hogwarts"
    r = client.post("/items", json={"items": [{"item_id": "lego-0", "title": "x"}], "upsert": True})
    assert r.status_code == 409 and "trained catalogue items cannot be added or replaced: 'lego-0'" in r.text
    cases = [
        ({"items": [{"item_id": "a", "title": "x"}, {"item_id": "a", "title": "y"}]}, "duplicate item ids"),
        ({"items": [{"item_id": "a"}]}, "item 'a' has no text"),
        ({"items": [{"item_id": "a", "embedding": [0.5, 1.0]}]}, "embedding has 2 values"),
        ({"items": []}, "at least 1 item"),
        ({"items": [{"item_id": "a", "titel": "x"}]}, "Extra inputs are not permitted"),
        ({"items": [{"item_id": "", "title": "x"}]}, "at least 1 character"),
    ]
    for body, detail in cases:
        r = client.post("/items", json=body)
        assert r.status_code == 422 and detail in str(r.json()["detail"]), (body, r.text)


def test_item_by_precomputed_embedding_and_batch_limit(tiny_artifact: Path, tmp_path: Path) -> None:
    settings = _settings(tiny_artifact, tmp_path / "s.sqlite3", max_items_per_request=2, encoder_preload=False)
    with TestClient(create_app(settings)) as c:
        emb = np.random.default_rng(0).standard_normal(384)
        emb = (emb / np.linalg.norm(emb)).tolist()
        r = c.post("/items", json={"items": [{"item_id": "vec", "embedding": emb}]})
        assert r.status_code == 201 and r.json()["items"][0]["record"] == {}
        r = c.post("/items", json={"items": [{"item_id": f"i{n}", "title": "x"} for n in range(3)]})
        assert r.status_code == 422 and "3 items in one request; at most 2" in r.text
        assert c.post("/recommend", json={"history": ["vec"], "k": 3}).status_code == 200


def test_get_item(client: TestClient) -> None:
    r = client.get("/items/lego-0")
    assert r.status_code == 200
    record = {"title": "LEGO Star Wars X-Wing Fighter", "categories": ["Toys & Games", "lego"]}
    assert r.json() == {"item_id": "lego-0", "record": record, "cold": False}
    r = client.get("/items/nope")
    assert r.status_code == 404 and r.json() == {"detail": "item 'nope' is neither in the catalogue nor a cold item"}


def test_delete_cold_item_everywhere_and_durably(tiny_artifact: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    with TestClient(create_app(_settings(tiny_artifact, store))) as a, \
            TestClient(create_app(_settings(tiny_artifact, store, sync_interval_s=3600))) as b:
        assert a.post("/items", json={"items": [HOGWARTS]}).status_code == 201
        assert b.get("/items/cold-lego").status_code == 200
        r = b.delete("/items/cold-lego")  # deleted through the other worker
        assert r.status_code == 200, r.text
        assert r.json()["item_id"] == "cold-lego" and r.json()["deleted"] is True
        assert a.get("/items/cold-lego").status_code == 404
        ranked = [i["item_id"] for i in a.post("/recommend", json={"history": LEGO, "k": 20}).json()["items"]]
        assert "cold-lego" not in ranked and len(ranked) == 20
        r = a.post("/recommend", json={"history": ["cold-lego"]})
        assert r.status_code == 422 and "'cold-lego'" in r.json()["detail"]
        assert a.get("/readyz").json()["cold_items"] == 0
        r = a.delete("/items/cold-lego")
        assert r.status_code == 404 and "'cold-lego'" in r.json()["detail"]
        r = a.delete("/items/lego-0")
        assert r.status_code == 409 and "trained catalogue and cannot be deleted" in r.json()["detail"]
    with TestClient(create_app(_settings(tiny_artifact, store))) as c:  # the deletion survived a restart
        assert c.get("/items/cold-lego").status_code == 404
        assert c.post("/items", json={"items": [HOGWARTS]}).status_code == 201  # and the id can come back


def test_cold_items_survive_a_new_app_on_the_same_store(tiny_artifact: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    with TestClient(create_app(_settings(tiny_artifact, store))) as c:
        assert c.post("/items", json={"items": [HOGWARTS]}).status_code == 201
    with TestClient(create_app(_settings(tiny_artifact, store))) as c:
        assert c.get("/items/cold-lego").json()["cold"] is True
        assert c.get("/readyz").json()["cold_items"] == 1
        assert c.post("/recommend", json={"history": ["cold-lego"], "k": 3}).status_code == 200
    # another cold-ID rule is another artifact version: its stored vector is not valid there ...
    with TestClient(create_app(_settings(tiny_artifact, store, cold_id="mean", carry_cold_items=False))) as c:
        assert c.get("/items/cold-lego").status_code == 404
    # ... but its text is: by default a new version re-encodes it at startup and serves it
    with TestClient(create_app(_settings(tiny_artifact, store, cold_id="mean"))) as c:
        assert c.get("/items/cold-lego").json()["cold"] is True
        assert c.get("/readyz").json()["cold_items"] == 1


def test_two_apps_on_one_store_see_each_others_items(tiny_artifact: Path, tmp_path: Path) -> None:
    """What two workers do: an item added through one is served by the other on its next request."""
    store = tmp_path / "store.sqlite3"
    with TestClient(create_app(_settings(tiny_artifact, store))) as a, \
            TestClient(create_app(_settings(tiny_artifact, store, sync_interval_s=3600))) as b:
        assert a.post("/items", json={"items": [HOGWARTS]}).status_code == 201
        assert b.get("/items/cold-lego").status_code == 200
        r = b.post("/recommend", json={"history": ["cold-lego", "lego-0"], "k": 24})
        assert r.status_code == 200
        r = b.post("/items", json={"items": [HOGWARTS]})
        assert r.status_code == 409  # b knows it exists


def test_ops_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["index"] == "flat" and ready.json()["items"] == 24
    client.post("/recommend", json={"history": LEGO})
    client.post("/recommend", json={"history": ["ghost"]})
    client.get("/items/ghost")
    text = client.get("/metrics").text
    assert 'alphafuse_http_requests_total{method="POST",route="/recommend",status="200"} 1.0' in text
    assert 'alphafuse_http_requests_total{method="POST",route="/recommend",status="422"} 1.0' in text
    assert 'route="/items/{item_id:path}",status="404"' in text  # the template, never the raw path
    assert "alphafuse_http_request_duration_seconds_bucket" in text
    assert "alphafuse_catalogue_items 24.0" in text and "alphafuse_cold_items 0.0" in text
    assert "alphafuse_batch_size_count 2.0" in text
    assert client.get("/docs").status_code == 200
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/items", "/items/{item_id}", "/healthz", "/readyz", "/metrics"} <= set(paths)


def test_readyz_is_503_outside_the_lifespan(tiny_artifact: Path, tmp_path: Path) -> None:
    client = TestClient(create_app(_settings(tiny_artifact, tmp_path / "s.sqlite3")))  # no `with`: no lifespan
    r = client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "loading"
    assert client.get("/healthz").status_code == 200
    r = client.post("/recommend", json={"history": LEGO})
    assert r.status_code == 503 and r.headers["retry-after"] == "1"


def test_startup_fails_on_a_bad_artifact(tmp_path: Path) -> None:
    from model.artifact import ArtifactError

    app = create_app(_settings(tmp_path / "missing", tmp_path / "s.sqlite3"))
    with pytest.raises(ArtifactError, match="artifact directory not found"), TestClient(app):
        pass


def test_hnsw_and_unbatched_settings_serve_the_same_top_items(tiny_artifact: Path, tmp_path: Path) -> None:
    results = []
    for kw in ({}, {"index": "hnsw"}, {"max_batch": 1}):
        with TestClient(create_app(_settings(tiny_artifact, tmp_path / "s.sqlite3", **kw))) as c:
            results.append([i["item_id"] for i in c.post("/recommend", json={"history": LEGO, "k": 5}).json()["items"]])
    assert results[0] == results[1] == results[2]


def test_index_auto_is_the_default_and_picks_by_catalogue_size(tiny_artifact: Path, tmp_path: Path) -> None:
    from service.ranker import choose_index
    from service.settings import AUTO_HNSW_MIN_ITEMS

    assert _settings(tiny_artifact, tmp_path / "s.sqlite3").index == "auto"
    assert choose_index("auto", AUTO_HNSW_MIN_ITEMS - 1) == "flat"  # exact below the threshold
    assert choose_index("auto", AUTO_HNSW_MIN_ITEMS) == "hnsw"
    assert choose_index("flat", 10**9) == "flat" and choose_index("hnsw", 1) == "hnsw"  # explicit wins
    with pytest.raises(ValueError, match="'auto', 'flat' or 'hnsw'"):
        choose_index("ivf", 10)  # type: ignore[arg-type]
    for threshold, kind in ((25, "flat"), (24, "hnsw")):  # the tiny catalogue has 24 trained items
        settings = _settings(tiny_artifact, tmp_path / f"s{threshold}.sqlite3", auto_hnsw_min_items=threshold)
        with TestClient(create_app(settings)) as c:
            assert c.get("/readyz").json()["index"] == kind  # what serves, not the setting's word "auto"


def test_settings_from_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("ALPHAFUSE_ARTIFACT", str(tmp_path))
    monkeypatch.setenv("ALPHAFUSE_INDEX", "hnsw")
    monkeypatch.setenv("ALPHAFUSE_MAX_WAIT_MS", "2.5")
    monkeypatch.setenv("ALPHAFUSE_OPENAI_API_KEY", "unrelated")  # the encoder's variable, not a setting
    s = ServiceSettings()  # type: ignore[call-arg]
    assert (s.artifact, s.index, s.max_wait_ms, s.cold_id) == (tmp_path, "hnsw", 2.5, "neighbours")
    assert ServiceSettings.model_validate({k.removeprefix("ALPHAFUSE_").lower(): v for k, v in s.to_env().items()}) == s
    monkeypatch.setenv("ALPHAFUSE_INDEX", "ivf")
    with pytest.raises(ValueError, match="flat"):
        ServiceSettings()  # type: ignore[call-arg]


def test_serve_reports_startup_errors_before_uvicorn_starts(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from model.artifact import ArtifactError
    from service.main import serve

    monkeypatch.chdir(tmp_path)
    for key in [*(f"ALPHAFUSE_{k.upper()}" for k in ServiceSettings.model_fields), "PROMETHEUS_MULTIPROC_DIR"]:
        # serve() exports its settings for worker processes: set-then-delete so monkeypatch undoes that too
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    with pytest.raises(ArtifactError, match="artifact directory not found"):
        serve(tmp_path / "missing", port=0, store=tmp_path / "s.sqlite3", log_level="critical")


def test_encoding_new_items_does_not_hold_up_ranking(tiny_artifact: Path, tmp_path: Path) -> None:
    import threading

    from service.ranker import Ranker

    with TestClient(create_app(_settings(tiny_artifact, tmp_path / "s.sqlite3"))) as c:
        ranker = c.app.state.service.ranker  # type: ignore[attr-defined]
        assert isinstance(ranker, Ranker)
        encoding, release = threading.Event(), threading.Event()
        real_fold_in = ranker.fold_in

        def slow_fold_in(items):  # noqa: ANN001, ANN202 - stands in for a long text encoding
            encoding.set()
            assert release.wait(30)
            return real_fold_in(items)

        ranker.fold_in = slow_fold_in  # type: ignore[method-assign]
        posted: dict[str, int] = {}
        poster = threading.Thread(
            target=lambda: posted.update(status=c.post("/items", json={"items": [HOGWARTS]}).status_code)
        )
        poster.start()
        assert encoding.wait(30)
        r = c.post("/recommend", json={"history": LEGO, "k": 3})  # answered while the encoder is busy
        assert r.status_code == 200 and poster.is_alive()
        release.set()
        poster.join(30)
        assert posted == {"status": 201} and c.get("/items/cold-lego").status_code == 200


def test_the_default_store_sits_beside_the_artifact(
    tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import logging
    import shutil

    from service.settings import default_store

    monkeypatch.delenv("ALPHAFUSE_STORE", raising=False)
    artifact = tmp_path / "runs" / "demo"
    shutil.copytree(tiny_artifact, artifact)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the store no longer depends on where the server starts
    settings = ServiceSettings(artifact=Path("../runs/demo"))
    assert settings.store is None and settings.store_path == tmp_path / "runs" / "demo.items.sqlite3"
    assert default_store(artifact) == tmp_path / "runs" / "demo.items.sqlite3"
    with caplog.at_level(logging.INFO, logger="service.app"), TestClient(create_app(settings)) as c:
        assert c.post("/items", json={"items": [HOGWARTS]}).status_code == 201
    assert (tmp_path / "runs" / "demo.items.sqlite3").is_file() and not list(elsewhere.iterdir())
    ready = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("ready:"))
    assert ready.endswith(f"store {tmp_path / 'runs' / 'demo.items.sqlite3'}")  # the absolute path, logged
    monkeypatch.setenv("ALPHAFUSE_STORE", str(tmp_path / "mine.sqlite3"))  # the setting still wins
    assert ServiceSettings(artifact=artifact).store_path == tmp_path / "mine.sqlite3"  # type: ignore[call-arg]


def test_docs_are_served_from_local_assets(tmp_path: Path) -> None:
    import re

    client = TestClient(create_app(_settings(tmp_path / "model", tmp_path / "s.sqlite3")))  # docs need no model
    for page, assets in (("/docs", {"swagger-ui-bundle.js", "swagger-ui.css"}), ("/redoc", {"redoc.standalone.js"})):
        r = client.get(page)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
        # offline a CDN URL renders a blank page: every URL the page loads must be this server's
        urls = re.findall(r"""(?:src|href)=["']([^"']+)["']|url:\s*'([^']+)'""", r.text)
        urls = [a or b for a, b in urls]
        assert urls and all(u.startswith("/") for u in urls), urls
        assert "http://" not in r.text and "https://" not in r.text
        assert {u.rsplit("/", 1)[-1] for u in urls} >= assets
        for url in urls:
            got = client.get(url)
            assert got.status_code == 200 and got.content, url
    assert client.get("/docs/assets/swagger-ui-bundle.js").headers["content-type"].startswith(
        ("application/javascript", "text/javascript")
    )
    assert client.get("/docs/oauth2-redirect").status_code == 200
    assert client.get("/docs/assets/nope.js").status_code == 404
    client.get("/no-such-route")
    text = client.get("/metrics").text
    for route in ("/docs", "/redoc", "/openapi.json", "/docs/oauth2-redirect"):
        assert f'route="{route}",status="200"' in text, route
    assert 'route="/docs/assets/{path:path}",status="200"' in text  # one label for every asset
    assert 'route="/docs/assets/{path:path}",status="404"' in text
    unmatched = [line for line in text.splitlines() if 'route="<unmatched>"' in line and "_total" in line]
    assert unmatched == ['alphafuse_http_requests_total{method="GET",route="<unmatched>",status="404"} 1.0']
