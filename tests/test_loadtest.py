"""The load generator against a tiny real uvicorn server on 127.0.0.1 that mimics the service's routes."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import JSONResponse

from service.loadtest import (
    MAX_REQUESTS_CAP,
    SyntheticItems,
    is_loopback_url,
    load_histories,
    load_workload,
    main,
    read_histories_file,
    run_loadtest,
    run_open_loop,
)


@dataclass
class FakeState:
    hits: Counter[str] = field(default_factory=Counter)  # route -> requests received
    failed: int = 0  # /recommend answered 500
    items: dict[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0


def fake_app(state: FakeState) -> FastAPI:
    """The service's contract in miniature: a history starting with "boom" fails, "slow" sleeps."""
    app = FastAPI()

    @app.post("/recommend")
    async def recommend(request: Request) -> dict[str, Any]:
        state.hits["recommend"] += 1
        body = await request.json()
        history = body["history"]
        if history and history[0] == "boom":
            state.failed += 1
            raise HTTPException(status_code=500, detail="boom")
        if history and history[0] == "slow":
            await asyncio.sleep(0.5)
        return {"items": [{"item_id": f"i{n}", "score": 1.0 / (n + 1)} for n in range(body["k"])], "model": {}}

    @app.post("/items", status_code=201)
    async def add_items(request: Request) -> Any:
        state.hits["items"] += 1
        body = await request.json()
        for item in body["items"]:
            if item["item_id"] in state.items and not body["upsert"]:
                state.duplicates += 1
                return JSONResponse({"detail": "exists"}, status_code=409)
            state.items[item["item_id"]] = item
        return {"added": len(body["items"])}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        state.hits["healthz"] += 1
        return {"status": "ok"}

    return app


@dataclass
class Running:
    url: str
    state: FakeState


@pytest.fixture
def server() -> Iterator[Running]:
    state = FakeState()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(fake_app(state), lifespan="off", ws="none", log_level="warning", access_log=False)
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=lambda: asyncio.run(srv.serve(sockets=[sock])), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    try:
        yield Running(f"http://127.0.0.1:{port}", state)
    finally:
        srv.should_exit = True
        thread.join(timeout=10)
        sock.close()


HISTORIES = [["a", "b"], ["c"], ["d", "e", "f"]]


def test_max_requests_is_exact_and_counts_match_the_server(server: Running) -> None:
    report = asyncio.run(run_loadtest(server.url, HISTORIES, duration_s=30, concurrency=8, max_requests=37))
    assert report["requests"] == 37 == server.state.hits["recommend"]
    assert report["ok"] == 37 and report["errors"] == 0
    route = report["routes"]["POST /recommend"]
    assert route["status"] == {"200": 37}
    lat = route["latency_ms"]
    assert 0 < lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
    assert report["duration_s"] < 30  # stopped by the request cap, not the clock
    json.dumps(report)  # JSON-able


def test_duration_bounds_the_run(server: Running) -> None:
    t0 = time.perf_counter()
    report = asyncio.run(run_loadtest(server.url, HISTORIES, duration_s=0.6, concurrency=4))
    wall = time.perf_counter() - t0
    assert 0.6 <= report["duration_s"] < 1.6 and wall < 2.5
    assert report["requests"] > 4 and report["requests"] == server.state.hits["recommend"]
    assert report["throughput_rps"] == pytest.approx(report["requests"] / report["duration_s"])


@pytest.mark.parametrize("arrivals", ["uniform", "poisson"])
def test_open_loop_offers_its_rate_whatever_the_server_does(server: Running, arrivals: str) -> None:
    report = asyncio.run(
        run_open_loop(server.url, HISTORIES, rate_rps=50, duration_s=1.0, connections=4, arrivals=arrivals, seed=1)
    )
    assert report["mode"] == "open" and report["offered_rps"] == 50
    assert 30 <= report["requests"] <= 75  # ~50 arrivals in 1 s (Poisson varies; uniform is exactly 50)
    if arrivals == "uniform":
        assert report["requests"] == 50
    assert report["requests"] == server.state.hits["recommend"] == report["ok"]
    assert report["routes"]["POST /recommend"]["status"] == {"200": report["requests"]}
    json.dumps(report)


def test_open_loop_latency_counts_from_the_scheduled_arrival(server: Running) -> None:
    # one connection, each request takes 0.5 s, arrivals every 0.1 s: the later ones queue behind it,
    # and their latency must show the queueing (a closed loop would report ~0.5 s for all of them)
    report = asyncio.run(
        run_open_loop(server.url, [["slow"]], rate_rps=10, duration_s=0.35, connections=1, arrivals="uniform")
    )
    assert report["requests"] == 4 and report["ok"] == 4
    assert report["latency_ms"]["max"] >= 1800  # the 4th arrived at 0.3 s and finished after ~2.0 s
    with pytest.raises(ValueError, match="only loopback"):
        asyncio.run(run_open_loop("http://10.0.0.1:8000", HISTORIES, rate_rps=1, duration_s=1))
    with pytest.raises(ValueError, match="rate_rps must be positive"):
        asyncio.run(run_open_loop(server.url, HISTORIES, rate_rps=0, duration_s=1))


def test_server_errors_are_counted_by_status(server: Running) -> None:
    histories = [["boom", "x"], ["fine"], ["fine", "too"]]
    report = asyncio.run(run_loadtest(server.url, histories, duration_s=30, concurrency=4, max_requests=60, seed=3))
    assert server.state.failed > 0
    assert report["error_status"] == {"500": server.state.failed}
    assert report["errors"] == server.state.failed
    assert report["ok"] == 60 - server.state.failed
    # latency is over successful responses only
    assert len(report["routes"]["POST /recommend"]["status"]) == 2


def test_timeouts_and_refused_connections_are_counted_by_exception(server: Running) -> None:
    report = asyncio.run(
        run_loadtest(server.url, [["slow"]], duration_s=30, concurrency=2, max_requests=4, timeout_s=0.1)
    )
    assert report["error_exceptions"] == {"ReadTimeout": 4} and report["ok"] == 0
    assert report["latency_ms"]["p50"] is None

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed = s.getsockname()[1]
    refused = f"http://127.0.0.1:{closed}"
    report = asyncio.run(run_loadtest(refused, HISTORIES, duration_s=5, concurrency=2, max_requests=6))
    assert report["error_exceptions"] == {"ConnectError": 6}


def test_items_ratio_posts_unique_cold_items(server: Running) -> None:
    words = ["Lego", "Castle", "Knight", "Dragon"]
    report = asyncio.run(
        run_loadtest(server.url, HISTORIES, duration_s=30, concurrency=4, max_requests=80, items_ratio=0.5,
                     title_words=words, seed=1)
    )  # fmt: skip
    items = report["routes"]["POST /items"]
    assert items["requests"] == server.state.hits["items"] == len(server.state.items) > 10
    assert items["status"] == {"201": items["requests"]} and server.state.duplicates == 0
    assert report["routes"]["POST /recommend"]["requests"] + items["requests"] == 80
    for item in server.state.items.values():
        assert item["title"] and set(item["title"].lower().split()) <= {w.lower() for w in words}
        assert item["categories"]


def test_get_mode_for_baselines(server: Running) -> None:
    report = asyncio.run(run_loadtest(server.url, [], duration_s=30, concurrency=3, max_requests=25, path="/healthz"))
    assert report["requests"] == 25 == server.state.hits["healthz"]
    assert list(report["routes"]) == ["GET /healthz"] and server.state.hits["recommend"] == 0


@pytest.mark.parametrize(
    "url", ["http://10.0.0.1:8000", "http://192.168.1.5", "http://example.com:8000", "http://0.0.0.0:8000"]
)
def test_non_loopback_hosts_are_refused(url: str) -> None:
    assert not is_loopback_url(url)
    with pytest.raises(ValueError, match="only loopback"):
        asyncio.run(run_loadtest(url, HISTORIES, duration_s=1, concurrency=1, max_requests=1))


def test_loopback_forms_are_accepted() -> None:
    for url in ("http://127.0.0.1:1", "http://127.8.9.10", "http://localhost:80", "http://[::1]:8000"):
        assert is_loopback_url(url)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_requests": MAX_REQUESTS_CAP + 1}, "max_requests"),
        ({"max_requests": 0}, "max_requests"),
        ({"duration_s": 0}, "duration_s"),
        ({"concurrency": 0}, "concurrency"),
        ({"items_ratio": 1.5}, "items_ratio"),
    ],
)
def test_bounds_are_validated(kwargs: dict[str, Any], match: str) -> None:
    args: dict[str, Any] = {"duration_s": 1, "concurrency": 1} | kwargs
    with pytest.raises(ValueError, match=match):
        asyncio.run(run_loadtest("http://127.0.0.1:1", HISTORIES, **args))


def test_synthetic_items_are_unique_across_instances() -> None:
    a, b = SyntheticItems(seed=0), SyntheticItems(seed=0)
    assert a(1)["item_id"] != b(1)["item_id"]
    assert a(1)["title"]


def test_histories_come_from_the_test_split(tiny_data: Path) -> None:
    from training.data import load_dataset
    from training.splits import split_for

    split = split_for(load_dataset(tiny_data), "loo", 0)
    test_histories = {tuple(c.history) for c in split.test}
    got = load_histories(tiny_data, None, "loo", seed=0, limit=10)
    assert len(got) == 10 and all(tuple(h) in test_histories for h in got)
    assert got == load_histories(tiny_data, None, "loo", seed=0, limit=10)  # seeded
    _, words = load_workload(tiny_data, None, "loo", seed=0, limit=5)
    assert "Puzzle" in words


def test_cli_writes_the_report(server: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps([["a"], {"history": ["b", "c"]}]))
    assert read_histories_file(hist) == [["a"], ["b", "c"]]
    out = tmp_path / "out" / "r.json"
    argv = ["--url", server.url, "--duration", "5", "--concurrency", "2", "--max-requests", "9"]
    argv += ["--histories", str(hist)]
    assert main([*argv, "--out", str(out)]) == 0
    report = json.loads(out.read_text())
    assert report["requests"] == 9 and json.loads(capsys.readouterr().out)["requests"] == 9
    assert main(["--url", "http://10.1.2.3:8000", "--histories", str(hist)]) == 2
    assert main(["--url", server.url]) == 2  # /recommend needs histories


def test_cli_fails_when_every_request_fails_naming_the_commonest_error(
    server: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps([["boom"]]))
    argv = ["--url", server.url, "--duration", "5", "--concurrency", "2", "--max-requests", "9"]
    argv += ["--histories", str(hist)]
    assert main(argv) == 1
    captured = capsys.readouterr()
    assert json.loads(captured.out)["error_examples"] == {"500": "boom"}  # the report still comes out
    assert captured.err.strip().splitlines()[-1] == (
        "loadtest: FAILED: 9 of 9 requests failed (100.0%; allowed 1.0%); commonest: HTTP 500 x9: boom"
    )
    # even a threshold of 100% does not pass a run in which nothing succeeded
    assert main([*argv, "--max-failure-share", "1"]) == 1


def test_cli_failure_share_threshold(server: Running, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    hist = tmp_path / "h.json"
    hist.write_text(json.dumps([["boom"], ["fine"], ["fine", "too"]]))
    argv = ["--url", server.url, "--duration", "5", "--concurrency", "2", "--max-requests", "30"]
    argv += ["--histories", str(hist)]
    assert main(argv) == 1  # about a third fail: far above the default 1%
    report = json.loads(capsys.readouterr().out)
    assert 0 < report["errors"] < report["requests"]
    assert main([*argv, "--max-failure-share", "0.9"]) == 0
    assert main([*argv, "--max-failure-share", "2"]) == 2  # not a share


def test_failure_verdict_counts_exceptions_too() -> None:
    from service.loadtest import failure_verdict

    report = {"requests": 10, "errors": 10, "error_status": {"422": 3}, "error_exceptions": {"ConnectError": 7},
              "error_examples": {"422": "unknown ids", "ConnectError": "refused"}}  # fmt: skip
    assert failure_verdict(report, 0.01) == (
        "10 of 10 requests failed (100.0%; allowed 1.0%); commonest: ConnectError x7: refused"
    )
    assert failure_verdict({**report, "errors": 0, "error_status": {}, "error_exceptions": {}}, 0.01) is None
    assert failure_verdict({**report, "requests": 1000}, 0.01) is None  # 1% exactly passes
    assert failure_verdict({**report, "requests": 0, "errors": 0}, 0.01) is None


def test_cli_takes_the_workload_from_the_artifact_manifest(
    server: Running, tiny_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import service.loadtest as lt

    artifact = tmp_path / "model"
    artifact.mkdir()
    (artifact / "manifest.json").write_text(json.dumps({
        "format_version": 1, "train_config": {"protocol": "loo", "seed": 3, "data": "relative/elsewhere"},
        "dataset": {"path": str(tiny_data), "split": "generated(loo)"},
    }))  # fmt: skip
    calls: list[tuple[Any, ...]] = []
    real = lt.load_workload

    def spy(*args: Any) -> Any:
        calls.append(args)
        return real(*args)

    monkeypatch.setattr(lt, "load_workload", spy)
    argv = ["--url", server.url, "--duration", "5", "--concurrency", "1", "--max-requests", "5"]
    assert main([*argv, "--artifact", str(artifact)]) == 0
    assert calls[-1] == (tiny_data, None, "loo", 3, 2000)
    assert main([*argv, "--artifact", str(artifact), "--protocol", "cold-users", "--seed", "0"]) == 0
    assert calls[-1] == (tiny_data, None, "cold-users", 0, 2000)  # flags override the manifest
    gone = {"format_version": 1, "dataset": {"path": str(tmp_path / "gone")}}
    (artifact / "manifest.json").write_text(json.dumps(gone))
    assert main([*argv, "--artifact", str(artifact)]) == 2
