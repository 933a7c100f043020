"""Two `alphafuse serve` replicas (real processes, real HTTP) over one PostgreSQL database.

The poll interval is 30 s, so everything a replica learns promptly it learns from NOTIFY. The tests run
in file order on one pair of replicas: sharing, a missed notification, a PostgreSQL restart, and last a
kill -9 of one replica during a stream of writes. Measured numbers are printed (pytest -s) and written to
`replicas-report.json` in the test's temp dir.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port, unit_embedding
from tests.pg import PgCluster

READY_TIMEOUT_S = 120.0
PROMPT_S = 3.0  # "promptly": a tenth of the poll interval, with room for a loaded 2-core machine
POLL_S = 30.0

pytestmark = pytest.mark.slow
REPORT: dict[str, Any] = {}


def _until(check: Any, timeout: float, step: float = 0.02) -> float | None:
    """Seconds until `check()` is true, or None after `timeout`."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        with contextlib.suppress(httpx.TransportError):
            if check():
                return time.monotonic() - t0
        time.sleep(step)
    return None


class Replica:
    def __init__(self, artifact: Path, url: str, workdir: Path) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        env = {k: v for k, v in os.environ.items() if not k.startswith(("ALPHAFUSE_", "PROMETHEUS_MULTIPROC"))}
        env.update(ALPHAFUSE_ENCODER_PRELOAD="false", ALPHAFUSE_SYNC_INTERVAL_S=str(POLL_S))
        self.log_path = workdir / f"replica-{self.port}.log"
        self._log = self.log_path.open("wb")
        cmd = [sys.executable, "-m", "cli", "serve", "--artifact", str(artifact), "--store", url,
               "--port", str(self.port)]
        self.proc = subprocess.Popen(cmd, cwd=workdir, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.client = httpx.Client(base_url=self.base, timeout=10)

    def wait_ready(self) -> None:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            if self.proc.poll() is not None:
                pytest.fail(f"replica exited with {self.proc.returncode}: {self.log_path.read_text()[-3000:]}")
            with contextlib.suppress(httpx.TransportError):
                if self.client.get("/readyz", timeout=2).status_code == 200:
                    return
            if time.monotonic() > deadline:
                pytest.fail(f"replica not ready after {READY_TIMEOUT_S}s: {self.log_path.read_text()[-3000:]}")
            time.sleep(0.2)

    def post(self, item_id: str, seed: int) -> httpx.Response:
        item = {"item_id": item_id, "title": f"cold {item_id}", "embedding": unit_embedding(seed)}
        return self.client.post("/items", json={"items": [item]})

    def serves(self, item_id: str) -> bool:
        return self.client.get(f"/items/{item_id}").status_code == 200

    def kill(self, sig: signal.Signals = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=5)
        self.client.close()
        self._log.close()


@pytest.fixture(scope="module")
def pg_database(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database(schema=False).rsplit("/", 1)[1]


@pytest.fixture(scope="module")
def replicas(
    tiny_artifact: Path, pg_cluster: PgCluster, pg_database: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[Replica, Replica]]:
    url = pg_cluster.url(pg_database)
    from cli.main import main

    assert main(["store", "init", "--store", url]) == 0  # what an operator runs once
    workdir = tmp_path_factory.mktemp("replicas")
    a, b = Replica(tiny_artifact, url, workdir), Replica(tiny_artifact, url, workdir)  # start both at once
    try:
        a.wait_ready()
        b.wait_ready()
        yield a, b
    finally:
        a.kill()
        b.kill()
        (workdir / "replicas-report.json").write_text(json.dumps(REPORT, indent=2))
        print("\nreplicas report:", json.dumps(REPORT, indent=2))


def test_items_posted_or_deleted_through_one_are_served_by_the_other_promptly(
    replicas: tuple[Replica, Replica],
) -> None:
    a, b = replicas
    lags: list[float] = []
    posted = {"a": 0, "b": 0}
    for n in range(12):
        writer, reader, name = (a, b, "a") if n % 2 == 0 else (b, a, "b")
        item_id = f"shared-{n}"
        r = writer.post(item_id, n)
        assert r.status_code == 201, r.text
        posted[name] += 1
        lag = _until(lambda: reader.serves(item_id), PROMPT_S)  # noqa: B023 - called before the loop moves on
        assert lag is not None, f"{item_id} posted to one replica not served by the other within {PROMPT_S}s"
        lags.append(lag)
    # the other replica ranks them too: a recommend over the whole catalogue includes every one
    for replica in (a, b):
        got = replica.client.post("/recommend", json={"history": ["lego-0"], "k": 24 + 12 - 1}).json()["items"]
        assert {f"shared-{n}" for n in range(12)} <= {i["item_id"] for i in got}
    deleted_lags = []
    for n in range(4):
        writer, reader = (a, b) if n % 2 == 0 else (b, a)
        assert writer.client.delete(f"/items/shared-{n}").status_code == 200
        lag = _until(lambda: not reader.serves(f"shared-{n}"), PROMPT_S)  # noqa: B023
        assert lag is not None, f"shared-{n} deleted through one replica still served by the other"
        deleted_lags.append(lag)
    for replica in (a, b):
        got = replica.client.post("/recommend", json={"history": ["lego-0"], "k": 24 + 8 - 1}).json()["items"]
        assert not {f"shared-{n}" for n in range(4)} & {i["item_id"] for i in got}
    REPORT["shared"] = {
        "posted_through_a": posted["a"], "posted_through_b": posted["b"], "seen_by_the_other": len(lags),
        "max_lag_s": round(max(lags), 3), "deleted": len(deleted_lags), "delete_seen_by_the_other": len(deleted_lags),
        "max_delete_lag_s": round(max(deleted_lags), 3), "poll_interval_s": POLL_S,
    }


def test_a_notification_missed_while_a_listener_is_away_is_caught_up_by_seq(
    replicas: tuple[Replica, Replica], pg_cluster: PgCluster, pg_database: str
) -> None:
    import psycopg

    from service.pg_store import LISTENER_NAME

    a, b = replicas
    b_pid = b.client.get("/readyz").json()["pid"]
    with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
        # b's listener drops and cannot reconnect for a while; a keeps its connections and writes
        conn.execute(f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS false')
        try:
            killed = conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
                (f"{LISTENER_NAME}-{b_pid}",),
            ).fetchall()
            assert len(killed) == 1
            r = a.post("missed-1", 100)
            assert r.status_code == 201, r.text
            time.sleep(0.5)
            assert not b.serves("missed-1")  # b heard nothing: its cached catalogue is served
        finally:
            conn.execute(f'ALTER DATABASE "{pg_database}" ALLOW_CONNECTIONS true')
    t0 = time.monotonic()
    lag = _until(lambda: b.serves("missed-1"), PROMPT_S)
    assert lag is not None, "an item committed while the listener was away was never caught up"
    REPORT["missed_notification"] = {"caught_up_after_reconnect_allowed_s": round(time.monotonic() - t0, 3)}


def test_a_postgres_restart_answers_503_to_writes_keeps_reads_and_recovers_by_itself(
    replicas: tuple[Replica, Replica], pg_cluster: PgCluster
) -> None:
    a, b = replicas
    pg_cluster.stop("fast")
    try:
        for n, replica in enumerate((a, b)):
            r = _until(lambda: replica.post(f"down-{n}", 200 + n).status_code == 503, 5)  # noqa: B023
            assert r is not None, "a write while PostgreSQL is down did not answer 503"
            r503 = replica.post(f"down-{n}", 200 + n)
            detail = r503.json()["detail"]
            assert r503.status_code == 503 and "PostgreSQL item store" in detail and "unreachable" in detail, detail
            assert "\n" not in detail and r503.headers["Retry-After"] == "1"
            assert replica.client.delete("/items/shared-5").status_code == 503
            assert replica.serves("shared-6")  # reads serve the cached catalogue
            rec = replica.client.post("/recommend", json={"history": ["shared-6", "lego-0"], "k": 5})
            assert rec.status_code == 200, rec.text
            ready = replica.client.get("/readyz")
            # still in the load balancer: a shared outage must not take every replica's reads down too
            assert ready.status_code == 200 and ready.json()["status"] == "read-only", ready.text
            assert "unreachable" in ready.json()["problem"]
        REPORT["pg_restart"] = {"write_status_during": 503, "detail": detail, "reads_during": "200"}
    finally:
        pg_cluster.start()
    t0 = time.monotonic()
    recovered: dict[str, float] = {}
    for name, replica in (("a", a), ("b", b)):
        lag = _until(lambda: replica.post(f"after-{name}", 300).status_code == 201, 20, step=0.05)  # noqa: B023
        assert lag is not None, f"replica {name} did not recover after PostgreSQL came back"
        recovered[name] = round(time.monotonic() - t0, 3)
    for name, other in (("a", b), ("b", a)):
        assert _until(lambda: other.serves(f"after-{name}"), PROMPT_S) is not None  # noqa: B023
    for replica in (a, b):
        assert replica.client.get("/readyz").status_code == 200
    REPORT["pg_restart"]["recovery_s_after_start"] = recovered


def test_kill_9_of_one_replica_during_writes_loses_nothing_acknowledged(replicas: tuple[Replica, Replica]) -> None:
    a, b = replicas
    acked: list[str] = []
    attempted = 0
    stop = threading.Event()

    def stream() -> None:
        nonlocal attempted
        with httpx.Client(base_url=a.base, timeout=5) as c:
            n = 0
            while not stop.is_set():
                item_id = f"stream-{n}"
                attempted += 1
                try:
                    item = {"item_id": item_id, "title": "s", "embedding": unit_embedding(1000 + n)}
                    r = c.post("/items", json={"items": [item]})
                except httpx.TransportError:
                    return  # the replica is gone: this write was not acknowledged
                if r.status_code == 201:
                    acked.append(item_id)
                n += 1

    writer = threading.Thread(target=stream)
    writer.start()
    assert _until(lambda: len(acked) >= 20, 20) is not None
    a.kill(signal.SIGKILL)  # the whole process group, mid-stream
    stop.set()
    writer.join(timeout=10)
    present = [i for i in acked if b.serves(i)] if _until(lambda: b.serves(acked[-1]), PROMPT_S) else []
    missing = sorted(set(acked) - set(present))
    assert not missing, f"acknowledged but lost after kill -9: {missing}"
    stored = sum(1 for n in range(attempted) if b.serves(f"stream-{n}"))
    REPORT["kill_9"] = {"attempted": attempted, "acked": len(acked), "acked_present": len(present),
                        "present_incl_unacked": stored}
