"""Run the service under uvicorn: `serve(artifact, port=8000, workers=2)` or `python -m service.main ARTIFACT`.

Each worker is a separate process with its own model and index; they share the cold-item store (SQLite
file), so an item added through one worker is served by all. With several workers uvicorn needs an
import string, so the settings travel as `ALPHAFUSE_*` environment variables to `app_from_env`.
"""

from __future__ import annotations

import argparse
import atexit
import ipaddress
import logging
import os
import shutil
import socket
import sys
import tempfile
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from service.settings import ENV_PREFIX, ServiceSettings

log = logging.getLogger("service")

FACTORY = "service.main:app_from_env"


def app_from_env() -> FastAPI:
    """uvicorn factory (`--factory`): the app for the settings in the `ALPHAFUSE_*` environment."""
    from service.app import create_app
    from training.logs import setup_logging

    setup_logging()
    return create_app(ServiceSettings())  # type: ignore[call-arg]


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: it may resolve to anything


def check_port(host: str, port: int) -> None:
    """Fail before loading anything when the address cannot be bound (busy port, bad host)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as e:
        raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from e
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn binds
        try:
            sock.bind(address)
        except OSError as e:
            raise ValueError(f"cannot listen on {host}:{port}: {e.strerror}") from e


def check_listen(settings: ServiceSettings, host: str, port: int) -> None:
    """The startup errors that need no artifact: open writes on a public address, an address that cannot
    be bound. `alphafuse demo` checks these before it trains, so a busy port fails in a second, not after
    the training run."""
    token = settings.write_token()
    if token is None and not is_loopback(host) and not settings.allow_open_writes:
        raise ValueError(
            f"refusing to serve on {host} with open writes: anyone who reaches it could add and delete items; "
            "set ALPHAFUSE_API_TOKEN (or ALPHAFUSE_API_TOKEN_FILE), or pass --allow-open-writes"
        )
    check_port(host, port)


def preflight(settings: ServiceSettings, host: str, port: int) -> None:
    """Every startup error a user can cause, as one ValueError, before uvicorn starts: the token, the
    address, the device, the artifact (files, checksums, config) and the store (path, startup checks)."""
    from model.artifact import load_artifact
    from service.ranker import artifact_version
    from service.store import open_store
    from training.distributed import resolve_device

    check_listen(settings, host, port)
    resolve_device(settings.device)  # `cuda` on a machine whose torch sees no GPU: say so before forking
    art = load_artifact(settings.artifact, verify_checksums=settings.verify_checksums)
    version = artifact_version(art, settings.cold_id)
    if settings.store is None and not os.access((store := settings.store_path).parent, os.W_OK):
        # e.g. an artifact on a read-only volume: say which setting moves the store, not just "cannot open"
        raise ValueError(
            f"cannot write the item store {store} beside the artifact: pass --store FILE or set "
            f"{ENV_PREFIX}STORE to keep it elsewhere"
        )
    open_store(settings.store_location, version, max_items=settings.max_cold_items, reset=settings.reset_store).close()


def uvicorn_options(host: str, port: int, workers: int, log_level: str) -> dict[str, Any]:
    """What `serve` passes to `uvicorn.run`. `loop="auto"` and `http="auto"` pick uvloop and httptools
    (both dependencies of this package, measured cheaper per request than asyncio and h11) and fall back
    to asyncio and h11 where they cannot be imported; never name asyncio or h11 here."""
    options: dict[str, Any] = {"host": host, "port": port, "log_level": log_level, "loop": "auto", "http": "auto"}
    if workers > 1:
        options["workers"] = workers
    return options


def event_loop_and_http() -> tuple[str, str]:
    """The implementations uvicorn's "auto" chooses in this environment (it tries the same imports)."""
    import importlib.util

    loop = "uvloop" if importlib.util.find_spec("uvloop") is not None else "asyncio"
    http = "httptools" if importlib.util.find_spec("httptools") is not None else "h11"
    return loop, http


def serve(
    artifact: Path | str | None, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
    log_level: str = "info", **overrides: Any,
) -> int:
    """Serve `artifact` (None: the `ALPHAFUSE_ARTIFACT` environment variable) until interrupted; returns
    the exit status.

    `overrides` are `ServiceSettings` fields (e.g. `store=`, `index="hnsw"`, `max_batch=1`). Startup
    errors a user can cause raise ValueError (one line) before uvicorn starts; a failure uvicorn sees
    during startup returns 3. SIGTERM and Ctrl-C stop gracefully: requests in flight finish, then the
    store is closed.
    """
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    if artifact is None and not os.environ.get(ENV_PREFIX + "ARTIFACT"):
        raise ValueError(f"no artifact to serve: pass --artifact DIR or set {ENV_PREFIX}ARTIFACT")
    # validate before forking anything; without `artifact` pydantic-settings reads ALPHAFUSE_ARTIFACT
    if artifact is not None:
        overrides = {**overrides, "artifact": Path(artifact)}
    settings = ServiceSettings(**overrides)
    from training.logs import setup_logging

    setup_logging()
    preflight(settings, host, port)
    os.environ.update(settings.to_env())
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # each worker writes its metrics here and /metrics merges them (set before workers import prometheus)
        metrics_dir = tempfile.mkdtemp(prefix="alphafuse-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    from service.store import describe_store

    loop, http = event_loop_and_http()
    log.info(
        "serving %s on http://%s:%d with %d worker%s, %s event loop, %s HTTP parser (docs at /docs); "
        "cold items in %s", settings.artifact, host, port, workers, "" if workers == 1 else "s", loop, http,
        describe_store(settings.store_location),
    )
    options = uvicorn_options(host, port, workers, log_level)
    try:
        if workers == 1:
            from service.app import create_app

            uvicorn.run(create_app(settings), **options)
        else:
            uvicorn.run(FACTORY, factory=True, **options)
    except SystemExit as e:  # uvicorn exits with 3 when the lifespan startup failed
        return e.code if isinstance(e.code, int) else 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m service.main",
        description="Serve a trained AlphaFuse artifact over HTTP (OpenAPI docs at /docs).",
        epilog="Every other setting is read from ALPHAFUSE_* environment variables (see service/settings.py), "
        "e.g. ALPHAFUSE_MAX_BATCH=1, ALPHAFUSE_COLD_ID=mean, ALPHAFUSE_TORCH_THREADS=1.",
    )
    p.add_argument("artifact", type=Path, nargs="?", help="artifact directory (default: ALPHAFUSE_ARTIFACT)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument(
        "--store", help="cold-item SQLite file or postgresql:// URL (default: ARTIFACT.items.sqlite3 beside it)"
    )
    p.add_argument("--index", choices=["auto", "flat", "hnsw"])
    p.add_argument("--allow-open-writes", action="store_true", help="no API token on a non-loopback address")
    p.add_argument("--reset-store", action="store_true", help="start over if the store fails its startup checks")
    p.add_argument("--log-level", default="info")
    p.add_argument("-v", "--verbose", action="store_true", help="show the traceback of a startup error")
    args = p.parse_args(argv)
    overrides: dict[str, Any] = {k: v for k, v in (("store", args.store), ("index", args.index)) if v is not None}
    if args.allow_open_writes:
        overrides["allow_open_writes"] = True
    if args.reset_store:
        overrides["reset_store"] = True
    try:
        return serve(
            args.artifact, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level,
            **overrides,
        )
    except ValueError as e:  # the user's inputs (ArtifactError and pydantic's ValidationError are ValueErrors)
        if args.verbose:
            traceback.print_exc()
        print(f"python -m service.main: error: {one_line(e)}", file=sys.stderr)
        return 2


def one_line(e: BaseException) -> str:
    """A settings ValidationError spans several lines; everything else here is one already."""
    from pydantic import ValidationError

    if isinstance(e, ValidationError):
        return "; ".join(f"{'.'.join(map(str, err['loc'])) or 'settings'}: {err['msg']}" for err in e.errors())
    return " ".join(str(e).split())


if __name__ == "__main__":
    sys.exit(main())
