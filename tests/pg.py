"""A throwaway PostgreSQL cluster for tests: initdb + pg_ctl in a temp dir, loopback, a free port.

`pg_cluster` (session-scoped) starts one and stops it at the end; `pg_url` gives each test a fresh
database with the alphafuse schema. Without the server binaries the tests skip, except under CI
(`CI` set), where a missing PostgreSQL is a failure: .ci/run installs it. As root (containers), the
server runs as the `postgres` user, since initdb and postgres refuse to run as root.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import free_port


def find_bindir() -> Path | None:
    """The directory holding initdb, pg_ctl and postgres: PATH first, then Debian's versioned directories."""
    found = shutil.which("initdb")
    if found is not None and shutil.which("pg_ctl") is not None:
        return Path(found).resolve().parent
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    return Path(candidates[-1]).parent if candidates else None


class PgCluster:
    """One cluster; `stop()` and `start()` let a test take the server away and bring it back."""

    def __init__(self, bindir: Path, root: Path, *, as_user: str | None) -> None:
        self.bindir, self.root, self.as_user = bindir, root, as_user
        self.data, self.sockets, self.log = root / "data", root / "sockets", root / "server.log"
        self.port = free_port()
        self.user = "alphafuse"

    # generous: initdb alone takes over a minute on this 2-core box when benchmarks run beside the suite
    def _run(self, tool: str, *args: str, timeout: float = 300) -> None:
        cmd = [str(self.bindir / tool), *args]
        if self.as_user is not None:
            cmd = ["runuser", "-u", self.as_user, "--", *cmd]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            log = self.log.read_text()[-2000:] if self.log.exists() else ""
            raise RuntimeError(f"{tool} {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()} {log}")

    def init(self) -> None:
        self.sockets.mkdir()
        if self.as_user is not None:
            shutil.chown(self.root, self.as_user)
            shutil.chown(self.sockets, self.as_user)
        # --no-sync and fsync=off: a throwaway cluster, and a loaded CI box; durability against a replica's
        # kill -9 does not depend on the server's fsync (the server itself is never killed uncleanly here)
        self._run("initdb", "-D", str(self.data), "-U", self.user, "--auth=trust", "-E", "UTF8", "--no-sync")

    def start(self) -> None:
        options = (
            f"-c listen_addresses=127.0.0.1 -p {self.port} -k {self.sockets} -c fsync=off "
            "-c max_connections=60 -c shared_buffers=16MB"
        )
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "-t", "240", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "-t", "240", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{database}"

    def create_database(self, *, schema: bool = True) -> str:
        """A fresh database (a test's own), with the alphafuse schema unless told otherwise; its URL."""
        import psycopg

        name = f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        url = self.url(name)
        if schema:
            from service.pg_store import init_schema

            init_schema(url)
        return url


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    bindir = find_bindir()
    if bindir is None:
        message = "PostgreSQL server binaries (initdb, pg_ctl) not found on PATH or in /usr/lib/postgresql/*/bin"
        if os.environ.get("CI"):
            pytest.fail(f"{message}; CI must run these tests (.ci/run installs Debian's postgresql)")
        pytest.skip(message)
    as_user = "postgres" if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="alphafuse-pg-"))  # not under pytest's tmp: root-only directories
    cluster = PgCluster(bindir, root, as_user=as_user)
    try:
        cluster.init()
        cluster.start()
        yield cluster
    finally:
        with contextlib.suppress(Exception):
            cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def pg_url(pg_cluster: PgCluster) -> str:
    return pg_cluster.create_database()
