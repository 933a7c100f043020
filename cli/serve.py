"""`alphafuse serve` (service.main.serve) and `alphafuse loadtest` (service.loadtest)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def serve_artifact(artifact: Path | None, host: str, port: int, workers: int, **overrides: Any) -> int:
    from service.main import serve

    return serve(artifact, host=host, port=port, workers=workers, **overrides)


def cmd_serve(args: argparse.Namespace) -> int:
    flags = (("store", args.store), ("index", args.index), ("index_cache", args.index_cache), ("device", args.device))
    overrides: dict[str, Any] = {k: v for k, v in flags if v is not None}
    if args.allow_open_writes:
        overrides["allow_open_writes"] = True
    if args.reset_store:
        overrides["reset_store"] = True
    artifact = Path(args.artifact) if args.artifact is not None else None
    return serve_artifact(artifact, args.host, args.port, args.workers, **overrides)


def cmd_loadtest(args: argparse.Namespace) -> int:
    from service.loadtest import cmd_loadtest as run

    return run(args)


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    srv = sub.add_parser("serve", help="serve an artifact over HTTP (FastAPI + uvicorn)")
    srv.add_argument(
        "--artifact", default=None, help="artifact directory written by train (default: ALPHAFUSE_ARTIFACT)"
    )
    srv.add_argument("--host", default="127.0.0.1")
    srv.add_argument("--port", type=int, default=8000)
    srv.add_argument("--workers", type=int, default=1, help="worker processes sharing the cold-item store")
    srv.add_argument(
        "--store", default=None,
        help="cold-item SQLite file, or a postgresql:// URL shared by replicas (ALPHAFUSE_STORE; default: "
        "ARTIFACT.items.sqlite3 beside the artifact directory)",
    )
    srv.add_argument(
        "--index", choices=["auto", "flat", "hnsw"], default=None,
        help="FAISS index (default auto: flat, exact, below ALPHAFUSE_AUTO_HNSW_MIN_ITEMS trained items, hnsw above)",
    )
    srv.add_argument(
        "--index-cache", default=None,
        help="directory keeping a built HNSW index for the next start (ALPHAFUSE_INDEX_CACHE; default: none)",
    )
    srv.add_argument(
        "--device", choices=["auto", "cpu", "cuda"], default=None,
        help="where the sequence encoder runs (ALPHAFUSE_DEVICE; default cpu; auto: cuda when present)",
    )
    srv.add_argument(
        "--allow-open-writes", action="store_true",
        help="serve on a non-loopback address without ALPHAFUSE_API_TOKEN (anyone may add and delete items)",
    )
    srv.add_argument(
        "--reset-store", action="store_true",
        help="start over with an empty store if it fails its startup checks (old files are kept, renamed)",
    )
    srv.set_defaults(func=cmd_serve)

    from service.loadtest import add_loadtest_args

    lt = sub.add_parser("loadtest", help="bounded async load test of a running service (loopback only)")
    add_loadtest_args(lt)
    lt.set_defaults(func=cmd_loadtest)
