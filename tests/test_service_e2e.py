"""A real uvicorn server in a subprocess: two workers share the store; kill -9 after a 201 loses nothing.

Items are posted with an `embedding` and the encoder is not preloaded, so each server starts without
importing sentence-transformers (seconds per process on a small machine).
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.helpers import free_port, unit_embedding

READY_TIMEOUT_S = 120.0  # two workers import torch at once; generous for a loaded 2-core machine


@contextlib.contextmanager
def _server(
    artifact: Path, store: Path, workdir: Path, *, workers: int
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    port = free_port()
    code = (
        "import sys; from service.main import serve; "
        f"sys.exit(serve({str(artifact)!r}, port={port}, workers={workers}, store={str(store)!r}, "
        "encoder_preload=False, log_level='warning'))"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHAFUSE_", "PROMETHEUS_MULTIPROC"))}
    log = (workdir / f"server-{port}.log").open("wb")
    # own session: the uvicorn parent and its workers form one process group we can kill together
    proc = subprocess.Popen(
        [sys.executable, "-c", code], cwd=workdir, env=env, stdout=log, stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {Path(log.name).read_text()[-2000:]}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready after {READY_TIMEOUT_S}s: {Path(log.name).read_text()[-2000:]}")
            time.sleep(0.2)
        yield base, proc
    finally:
        _kill(proc, signal.SIGTERM)
        log.close()


def _kill(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # workers left behind by a killed parent


def _metric(text: str, line_prefix: str) -> float:
    match = re.search(re.escape(line_prefix) + r" ([0-9.e+]+)", text)
    return float(match.group(1)) if match else 0.0


@pytest.mark.slow
def test_two_workers_share_cold_items_and_kill_9_loses_nothing(tiny_artifact: Path, tmp_path: Path) -> None:
    store = tmp_path / "store.sqlite3"
    with _server(tiny_artifact, store, tmp_path, workers=2) as (base, proc):
        item = {"item_id": "cold-1", "title": "t", "embedding": unit_embedding(1)}
        r = httpx.post(f"{base}/items", json={"items": [item]})
        assert r.status_code == 201, r.text
        pids: set[int] = set()
        recommends = 0
        for _ in range(60):  # fresh connections until both workers answered
            with httpx.Client(base_url=base, timeout=10) as c:  # one connection: one worker per round
                pids.add(c.get("/readyz").json()["pid"])
                assert c.get("/items/cold-1").json()["cold"] is True
                rec = c.post("/recommend", json={"history": ["cold-1", "lego-0"], "k": 23})
                recommends += 1
                assert rec.status_code == 200, rec.text
                assert len(rec.json()["items"]) == 23  # 25 items - the 2 in the history: cold-1 was resolved
                got = c.post("/recommend", json={"history": ["lego-0"], "k": 24}).json()["items"]
                recommends += 1
                assert "cold-1" in {i["item_id"] for i in got}
            if len(pids) == 2 and recommends >= 8:
                break
        assert len(pids) == 2, f"all requests went to worker(s) {pids}"
        # /metrics merges both workers, whichever answers
        text = httpx.get(f"{base}/metrics").text
        served = 'alphafuse_http_requests_total{method="POST",route="/recommend",status="200"}'
        assert _metric(text, served) == recommends
        # a 201 means committed: kill -9 the whole server right after it
        r = httpx.post(f"{base}/items", json={"items": [{"item_id": "cold-2", "embedding": unit_embedding(2)}]})
        assert r.status_code == 201
        r = httpx.post(f"{base}/items", json={"items": [{"item_id": "cold-3", "embedding": unit_embedding(3)}]})
        assert r.status_code == 201
        assert httpx.delete(f"{base}/items/cold-3").status_code == 200  # a 200 DELETE is committed too
        _kill(proc, signal.SIGKILL)
    with _server(tiny_artifact, store, tmp_path, workers=1) as (base, _):
        assert httpx.get(f"{base}/readyz").json()["cold_items"] == 2
        assert httpx.get(f"{base}/items/cold-3").status_code == 404
        for item_id in ("cold-1", "cold-2"):
            assert httpx.get(f"{base}/items/{item_id}").json()["cold"] is True
        got = httpx.post(f"{base}/recommend", json={"history": ["cold-2"], "k": 24}).json()["items"]
        assert "cold-1" in {i["item_id"] for i in got}
