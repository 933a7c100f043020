"""`alphafuse store init --store URL|FILE`: create or migrate the cold-item store's schema (idempotent)."""

from __future__ import annotations

import argparse
import os


def cmd_init(args: argparse.Namespace) -> int:
    from service.settings import ENV_PREFIX
    from service.store import SQLiteItemStore, describe_store, is_store_url

    location = args.store or os.environ.get(ENV_PREFIX + "STORE")
    if not location:
        raise ValueError(f"no store to initialise: pass --store URL or set {ENV_PREFIX}STORE")
    if is_store_url(location):
        from service.pg_store import init_schema

        print(f"{describe_store(location)}: {init_schema(location)}")
    else:
        # a SQLite file makes and migrates its own schema on open; this just does it ahead of time
        SQLiteItemStore(location, "").close()
        print(f"{location}: schema ready")
    return 0


def add_parser(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    store = sub.add_parser("store", help="manage the cold-item store (schema)")
    actions = store.add_subparsers(dest="store_command", required=True, metavar="ACTION")
    init = actions.add_parser(
        "init", help="create or migrate the store's schema; safe to run again (a PostgreSQL store needs it once)"
    )
    init.add_argument(
        "--store", default=None, help="postgresql://user:pass@host:port/db, or a SQLite file (default: ALPHAFUSE_STORE)"
    )
    init.set_defaults(func=cmd_init)
