"""What an attacker or a careless client can send, and what the service answers (issue: hardening).

Each case was first reproduced against the old service (observed: 500s, a 10 MB title accepted, a list
as `detail`, echoed inputs, open writes); these tests pin the fixed behaviour through the real app.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from service.settings import ServiceSettings

TOKEN = "s3cret-token-for-tests"


def _client(artifact: Path, tmp_path: Path, **kw: Any) -> TestClient:
    settings = ServiceSettings(artifact=artifact, store=tmp_path / "store.sqlite3", **kw)
    return TestClient(create_app(settings))


@pytest.fixture
def client(tiny_artifact: Path, tmp_path: Path) -> Iterator[TestClient]:
    with _client(tiny_artifact, tmp_path, max_body_bytes=64 * 1024, max_cold_items=3) as c:
        yield c


def _detail(r: Any, status: int) -> str:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"detail"} and isinstance(body["detail"], str), body
    return str(body["detail"])


def _raw_post(client: TestClient, path: str, raw: str, content_type: str = "application/json") -> Any:
    return client.post(path, content=raw.encode("utf-8", "surrogatepass"), headers={"content-type": content_type})


# --- bounded inputs --------------------------------------------------------------------------------------


def test_a_body_over_the_limit_is_413_from_its_content_length(client: TestClient) -> None:
    big = json.dumps({"history": ["lego-0"] * 20_000})
    detail = _detail(_raw_post(client, "/recommend", big), 413)
    assert "over the limit of 65536 bytes" in detail


def test_a_chunked_body_over_the_limit_is_413(client: TestClient) -> None:
    def chunks() -> Iterator[bytes]:  # no Content-Length: the guard counts as it reads
        yield b'{"history": ['
        for _ in range(10_000):
            yield b'"lego-0",'
        yield b'"lego-1"]}'

    r = client.post("/recommend", content=chunks(), headers={"content-type": "application/json"})
    assert "over the limit" in _detail(r, 413)


def test_text_fields_are_capped_and_the_detail_names_the_field(tiny_artifact: Path, tmp_path: Path) -> None:
    with _client(tiny_artifact, tmp_path, max_text_chars=100, max_list_items=4) as c:
        r = c.post("/items", json={"items": [{"item_id": "x", "title": "t" * 101}]})
        assert _detail(r, 422) == (
            "items[0].title has a string of 101 characters; at most 100 (ALPHAFUSE_MAX_TEXT_CHARS)"
        )
        r = c.post("/items", json={"items": [{"item_id": "x", "title": "ok", "categories": list("abcde")}]})
        assert "items[0].categories has 5 entries; at most 4" in _detail(r, 422)
        r = c.post("/items", json={"items": [{"item_id": "x", "title": "ok", "description": ["d" * 101]}]})
        assert "items[0].description has a string of 101 characters" in _detail(r, 422)
        assert c.get("/items/x").status_code == 404  # nothing was stored


def test_the_cold_item_cap_is_507(client: TestClient) -> None:
    items = [{"item_id": f"c{n}", "embedding": _unit(n)} for n in range(3)]
    assert client.post("/items", json={"items": items}).status_code == 201
    r = client.post("/items", json={"items": [{"item_id": "c3", "embedding": _unit(3)}]})
    assert "holds 3 cold items for this model and the limit is 3" in _detail(r, 507)


def test_a_slow_request_is_503_and_commits_nothing(tiny_artifact: Path, tmp_path: Path) -> None:
    with _client(tiny_artifact, tmp_path, request_timeout_s=1e-6) as c:
        r = c.post("/items", json={"items": [{"item_id": "slow", "title": "LEGO Castle"}]})
        assert "encoding the items took longer than 1e-06 s" in _detail(r, 503)
        assert r.headers["retry-after"] == "1"
        assert c.get("/items/slow").status_code == 404


def _unit(seed: int) -> list[float]:
    e = np.random.default_rng(seed).standard_normal(384)
    return (e / np.linalg.norm(e)).tolist()


# --- 4xx, never 500; one string, never an echo --------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ('{"history": ["lego-0"], "k": 1e309}', "k: Input should be a finite number (got inf)"),
        ('{"history": ["lego-0"], "k": NaN}', "k: Input should be a finite number (got nan)"),
        ('{"history": ["lego\\ud800"]}', "history[0]:"),
        ('{"history": ["lego-0\\n"]}', "history[0]: item ids must be printable text"),
    ],
)
def test_non_finite_numbers_surrogates_and_control_characters_are_422(
    client: TestClient, raw: str, expected: str
) -> None:
    assert expected in _detail(_raw_post(client, "/recommend", raw), 422)


@pytest.mark.parametrize(
    ("item", "expected"),
    [
        ({"item_id": "x", "title": "\ud800 castle"}, "items[0].title: text must be valid Unicode"),
        ({"item_id": "bad\nid", "title": "t"}, "items[0].item_id: item ids must be printable text"),
        ({"item_id": "x", "embedding": [float("nan")] * 384}, "items[0].embedding[0]: Input should be a finite number"),
        ({"item_id": "x", "embedding": [1e300] * 384}, "does not project to a finite vector"),
    ],
)
def test_bad_new_items_are_422_and_nothing_is_stored(client: TestClient, item: dict[str, Any], expected: str) -> None:
    raw = json.dumps({"items": [item]}, allow_nan=True)
    assert expected in _detail(_raw_post(client, "/items", raw), 422)
    assert client.get("/readyz").json()["cold_items"] == 0


def test_unparsable_json_is_400_and_a_wrong_content_type_415(client: TestClient) -> None:
    assert _detail(_raw_post(client, "/recommend", '{"history": ['), 400).startswith(
        "the request body is not valid JSON"
    )
    detail = _detail(_raw_post(client, "/recommend", "history=lego-0", "application/x-www-form-urlencoded"), 415)
    assert detail == (
        "request bodies must be JSON (Content-Type: application/json), got 'application/x-www-form-urlencoded'"
    )
    assert client.post("/recommend", json={"history": ["lego-0"]}).status_code == 200  # JSON is fine


def test_a_large_bad_request_is_answered_briefly(client: TestClient) -> None:
    raw = json.dumps({"history": ["x" * 600] * 50, "k": "many" * 1000})  # ~40 KB of wrong input
    r = _raw_post(client, "/recommend", raw)
    detail = _detail(r, 422)
    assert len(r.content) < 1000 and "and 48 more problems" in detail and "many" * 20 not in detail


def test_validation_details_are_one_string_with_the_field(client: TestClient) -> None:
    detail = _detail(client.post("/recommend", json={"history": ["lego-0"], "k": "ten"}), 422)
    assert detail == "k: Input should be a valid integer, unable to parse string as an integer (got 'ten')"
    assert _detail(client.post("/recommend", json={"histroy": ["lego-0"]}), 422) == (
        "history: Field required; histroy: Extra inputs are not permitted"
    )


def test_error_responses_are_declared_in_the_openapi_spec(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    post_items = spec["paths"]["/items"]["post"]["responses"]
    assert {"400", "401", "409", "413", "415", "422", "503", "507"} <= set(post_items)
    assert post_items["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http", "scheme": "bearer",
        "description": "ALPHAFUSE_API_TOKEN for writes; ALPHAFUSE_READ_TOKEN (or the write token) for reads when set",
    }


# --- write auth --------------------------------------------------------------------------------------


def test_writes_need_the_token_and_reads_stay_open(tiny_artifact: Path, tmp_path: Path) -> None:
    item = {"items": [{"item_id": "c1", "embedding": _unit(1)}]}
    with _client(tiny_artifact, tmp_path, api_token=TOKEN) as c:
        for headers in ({}, {"authorization": "Bearer wrong"}, {"authorization": f"Basic {TOKEN}"}):
            r = c.post("/items", json=item, headers=headers)
            assert "needs Authorization: Bearer <ALPHAFUSE_API_TOKEN>" in _detail(r, 401)
            assert r.headers["www-authenticate"] == 'Bearer realm="alphafuse"'
        auth = {"authorization": f"Bearer {TOKEN}"}
        assert c.post("/items", json=item, headers=auth).status_code == 201
        assert c.delete("/items/c1").status_code == 401
        assert c.get("/items/c1").status_code == 200  # reads are open without a read token
        assert c.post("/recommend", json={"history": ["lego-0"]}).status_code == 200
        assert c.delete("/items/c1", headers=auth).status_code == 200


def test_a_read_token_closes_reads_and_the_write_token_also_reads(tiny_artifact: Path, tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    with _client(tiny_artifact, tmp_path, api_token_file=token_file, read_token="reader") as c:
        body = {"history": ["lego-0"]}
        assert "ALPHAFUSE_READ_TOKEN" in _detail(c.post("/recommend", json=body), 401)
        assert c.post("/recommend", json=body, headers={"authorization": "Bearer reader"}).status_code == 200
        assert c.post("/recommend", json=body, headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
        item = {"items": [{"item_id": "c1", "embedding": _unit(1)}]}
        assert c.post("/items", json=item, headers={"authorization": "Bearer reader"}).status_code == 401
        assert c.get("/healthz").status_code == 200 and c.get("/readyz").status_code == 200  # probes stay open


def test_without_a_token_the_service_warns_that_writes_are_open(
    tiny_artifact: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with _client(tiny_artifact, tmp_path):
        pass
    assert any("POST /items and DELETE /items are open to anyone" in r.getMessage() for r in caplog.records)


# --- the store and /readyz -----------------------------------------------------------------------------


def test_a_store_deleted_while_serving_refuses_writes_and_readyz_says_so(client: TestClient, tmp_path: Path) -> None:
    assert client.post("/items", json={"items": [{"item_id": "c0", "embedding": _unit(0)}]}).status_code == 201
    (tmp_path / "store.sqlite3").unlink()
    r = client.post("/items", json={"items": [{"item_id": "c1", "embedding": _unit(1)}]})
    assert "was removed while the service was running" in _detail(r, 503) and r.headers["retry-after"] == "1"
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.json()["status"] == "store unavailable"
    assert "was removed" in ready.json()["problem"]
    assert client.delete("/items/c0").status_code == 503
    assert client.post("/recommend", json={"history": ["c0"]}).status_code == 200  # reads keep serving


# --- metrics -----------------------------------------------------------------------------------------------


def test_made_up_methods_do_not_add_metric_series(client: TestClient) -> None:
    for n in range(20):
        client.request(f"BREW{n}", "/recommend")
    text = client.get("/metrics").text
    assert "BREW" not in text and 'method="other"' in text
