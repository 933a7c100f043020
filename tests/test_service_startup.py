"""`alphafuse serve` startup errors (exit 2, one line, before anything loads) and graceful shutdown."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.main import main as cli_main
from tests.helpers import free_port


def _serve(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    code = cli_main(["serve", *args])
    return code, capsys.readouterr().err.strip()


def test_a_missing_artifact_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _serve(capsys, "--artifact", str(tmp_path / "nope"), "--port", str(free_port()))
    assert code == 2 and err == f"alphafuse: error: artifact directory not found: {tmp_path / 'nope'}"


def test_a_busy_port_fails_before_the_artifact_is_loaded(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.perf_counter()
        # the artifact does not even exist: the port is checked first
        code, err = _serve(capsys, "--artifact", str(tmp_path / "nope"), "--port", str(port))
    assert code == 2 and err == f"alphafuse: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert time.perf_counter() - started < 5


def test_open_writes_on_a_public_address_are_refused(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, err = _serve(capsys, "--artifact", str(tmp_path), "--host", "0.0.0.0", "--port", str(free_port()))
    assert code == 2 and "refusing to serve on 0.0.0.0 with open writes" in err and "\n" not in err


def test_store_problems_are_one_line_naming_the_path(
    capsys: pytest.CaptureFixture[str], tiny_artifact: Path, tmp_path: Path
) -> None:
    (tmp_path / "file").write_text("x")
    store = tmp_path / "file" / "s.sqlite3"
    code, err = _serve(capsys, "--artifact", str(tiny_artifact), "--store", str(store), "--port", str(free_port()))
    assert code == 2 and str(tmp_path / "file") in err and "\n" not in err
    truncated = tmp_path / "t.sqlite3"
    truncated.write_bytes(b"")
    (tmp_path / "t.sqlite3.ack").write_text('{"store_id": "abc", "seq": 3}')
    code, err = _serve(capsys, "--artifact", str(tiny_artifact), "--store", str(truncated), "--port", str(free_port()))
    assert code == 2 and "is missing or empty" in err and err.endswith("start over with --reset-store")


def test_cuda_without_a_gpu_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    # checked before the artifact: the directory does not even exist
    code, err = _serve(capsys, "--artifact", str(tmp_path / "nope"), "--device", "cuda", "--port", str(free_port()))
    assert code == 2 and err.startswith("alphafuse: error: device cuda was asked for") and "\n" not in err
    code = cli_main(["evaluate", "--artifact", str(tmp_path / "nope"), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("alphafuse: error: device cuda was asked for") and "\n" not in err


def test_verbose_shows_the_traceback(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    assert cli_main(["-v", "serve", "--artifact", str(tmp_path / "nope"), "--port", str(free_port())]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.strip().endswith(f"artifact directory not found: {tmp_path / 'nope'}")


def _wait_ready(base: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
        try:
            if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    pytest.fail(f"server not ready: {log.read_text()[-2000:]}")


@pytest.mark.slow
def test_sigterm_lets_the_request_in_flight_finish_and_closes_the_store(tiny_artifact: Path, tmp_path: Path) -> None:
    port, store = free_port(), tmp_path / "s.sqlite3"
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAFUSE_")}
    log = tmp_path / "server.log"
    cmd = [
        shutil.which("alphafuse") or str(Path(sys.executable).parent / "alphafuse"), "serve", "--artifact",
        str(tiny_artifact), "--port", str(port), "--store", str(store),
    ]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base, proc, log)
        # encoding 256 new items takes a while: the request is still in flight when SIGTERM arrives
        items = [{"item_id": f"new-{n}", "title": f"Wooden toy train set number {n} with tracks"} for n in range(256)]
        result: dict[str, Any] = {}

        def post() -> None:
            result["r"] = httpx.post(f"{base}/items", json={"items": items}, timeout=120)
            result["done"] = time.monotonic()

        poster = threading.Thread(target=post)
        poster.start()
        time.sleep(0.3)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        poster.join(timeout=120)
        # uvicorn finishes the shutdown, then re-raises the signal: exit status "terminated by SIGTERM"
        assert proc.wait(timeout=60) in (0, -signal.SIGTERM), log.read_text()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
    assert result["r"].status_code == 201, result["r"].text
    assert result["done"] > signalled  # it was in flight when the signal came, and it finished
    text = log.read_text()
    assert "Waiting for application shutdown" in text and "Application shutdown complete" in text
    assert len(result["r"].json()["items"]) == 256
    assert not Path(str(store) + "-wal").exists()  # closed cleanly: the WAL was checkpointed and removed
    from model.artifact import load_artifact
    from service.ranker import artifact_version
    from service.settings import ServiceSettings
    from service.store import SQLiteItemStore

    rule = ServiceSettings.model_fields["cold_id"].default  # what the server ran with
    again = SQLiteItemStore(store, artifact_version(load_artifact(tiny_artifact), rule))
    assert again.count() == 256
    again.close()


def test_serve_lets_uvicorn_pick_uvloop_and_httptools(
    tiny_artifact: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    uvloop = pytest.importorskip("uvloop")
    pytest.importorskip("httptools")
    import uvicorn
    from fastapi import FastAPI
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    from service.main import event_loop_and_http, serve, uvicorn_options

    calls: list[dict[str, Any]] = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: calls.append(kw))
    assert serve(tiny_artifact, port=free_port(), store=tmp_path / "s.sqlite3", log_level="warning") == 0
    (options,) = calls
    assert options == uvicorn_options("127.0.0.1", options["port"], 1, "warning")
    assert options["loop"] == "auto" and options["http"] == "auto"  # never asyncio / h11 by name
    # what uvicorn makes of those options, without starting a server
    config = uvicorn.Config(FastAPI(), **options)
    config.load()
    assert config.http_protocol_class is HttpToolsProtocol
    assert config.get_loop_factory() is uvloop.new_event_loop
    assert event_loop_and_http() == ("uvloop", "httptools")


def test_logging_setup_keeps_faiss_loader_lines_quiet() -> None:
    # a fresh interpreter: faiss logs its loader attempts only on its first import
    code = "from training.logs import setup_logging; setup_logging(); import faiss; print(faiss.__version__)"
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                         cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert "Could not load library" not in run.stderr and "faiss.loader" not in run.stderr


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ALPHAFUSE_* variables; serve() exports its settings, so set-then-delete lets monkeypatch undo that."""
    from service.settings import ServiceSettings

    for key in [*(f"ALPHAFUSE_{k.upper()}" for k in ServiceSettings.model_fields), "PROMETHEUS_MULTIPROC_DIR"]:
        monkeypatch.setenv(key, "")
        monkeypatch.delenv(key)
    return monkeypatch


def test_serve_falls_back_to_the_artifact_setting(
    capsys: pytest.CaptureFixture[str], tiny_artifact: Path, tmp_path: Path, clean_env: pytest.MonkeyPatch
) -> None:
    import uvicorn

    code, err = _serve(capsys, "--port", str(free_port()))
    assert code == 2 and err == "alphafuse: error: no artifact to serve: pass --artifact DIR or set ALPHAFUSE_ARTIFACT"
    calls: list[Any] = []
    clean_env.setattr(uvicorn, "run", lambda app, **kw: calls.append(app))
    clean_env.setenv("ALPHAFUSE_ARTIFACT", str(tiny_artifact))
    clean_env.setenv("ALPHAFUSE_STORE", str(tmp_path / "s.sqlite3"))
    assert cli_main(["serve", "--port", str(free_port())]) == 0
    (app,) = calls
    assert app.state.service.settings.artifact == tiny_artifact
    assert (tmp_path / "s.sqlite3").is_file()  # preflight opened the store the setting names


def test_demo_checks_the_port_before_training(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        started = time.perf_counter()
        # the data folder does not exist either: the port is the first thing checked
        code = cli_main(["demo", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "m"), "--port", str(port)])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err == f"alphafuse: error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert time.perf_counter() - started < 5 and not (tmp_path / "m").exists()


def test_an_unwritable_default_store_names_the_setting_that_moves_it(
    capsys: pytest.CaptureFixture[str], tiny_artifact: Path, clean_env: pytest.MonkeyPatch
) -> None:
    import service.main

    # root may write anywhere, so the read-only directory is simulated
    clean_env.setattr(service.main.os, "access", lambda path, mode: Path(path) != tiny_artifact.parent)
    code, err = _serve(capsys, "--artifact", str(tiny_artifact), "--port", str(free_port()))
    assert code == 2 and err == (
        f"alphafuse: error: cannot write the item store {tiny_artifact.parent / 'model.items.sqlite3'} beside "
        "the artifact: pass --store FILE or set ALPHAFUSE_STORE to keep it elsewhere"
    )


def test_serve_flags_reach_the_settings(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import cli.serve

    seen: dict[str, Any] = {}

    def fake(artifact: Path | None, host: str, port: int, workers: int, **overrides: Any) -> int:
        seen.update(overrides, artifact=artifact)
        return 0

    monkeypatch.setattr(cli.serve, "serve_artifact", fake)
    args = ["serve", "--artifact", str(tmp_path), "--index", "hnsw", "--index-cache", str(tmp_path / "c")]
    assert cli_main(args) == 0
    assert seen == {"artifact": tmp_path, "index": "hnsw", "index_cache": str(tmp_path / "c")}
