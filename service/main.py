"""Run the service under uvicorn: `serve(artifact, port=8000, workers=2)` or `python -m service.main ARTIFACT`.

Each worker is a separate process with its own model and index; they share the cold-item store (SQLite
file), so an item added through one worker is served by all. With several workers uvicorn needs an
import string, so the settings travel as `ALPHAFUSE_*` environment variables to `app_from_env`.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fastapi import FastAPI

from service.settings import ServiceSettings

log = logging.getLogger("service")

FACTORY = "service.main:app_from_env"


def app_from_env() -> FastAPI:
    """uvicorn factory (`--factory`): the app for the settings in the `ALPHAFUSE_*` environment."""
    from service.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return create_app(ServiceSettings())  # type: ignore[call-arg]


def serve(
    artifact: Path | str, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1,
    log_level: str = "info", **overrides: Any,
) -> int:
    """Serve `artifact` until interrupted; returns the exit status (3 when startup failed).

    `overrides` are `ServiceSettings` fields (e.g. `store=`, `index="hnsw"`, `max_batch=1`).
    """
    import uvicorn

    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    settings = ServiceSettings(artifact=Path(artifact), **overrides)  # validate before forking anything
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.update(settings.to_env())
    if workers > 1 and "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        # each worker writes its metrics here and /metrics merges them (set before workers import prometheus)
        metrics_dir = tempfile.mkdtemp(prefix="alphafuse-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
        atexit.register(shutil.rmtree, metrics_dir, ignore_errors=True)
    log.info(
        "serving %s on http://%s:%d with %d worker%s (docs at /docs)", settings.artifact, host, port, workers,
        "" if workers == 1 else "s",
    )
    try:
        if workers == 1:
            from service.app import create_app

            uvicorn.run(create_app(settings), host=host, port=port, log_level=log_level)
        else:
            uvicorn.run(FACTORY, factory=True, host=host, port=port, workers=workers, log_level=log_level)
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
    p.add_argument("artifact", type=Path, help="artifact directory")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--store", type=Path, help="cold-item SQLite file (default ./alphafuse-store.sqlite3)")
    p.add_argument("--index", choices=["flat", "hnsw"])
    p.add_argument("--log-level", default="info")
    args = p.parse_args(argv)
    overrides = {k: v for k, v in (("store", args.store), ("index", args.index)) if v is not None}
    return serve(
        args.artifact, host=args.host, port=args.port, workers=args.workers, log_level=args.log_level, **overrides
    )


if __name__ == "__main__":
    sys.exit(main())
