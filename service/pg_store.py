"""`ItemStore` on PostgreSQL, for several replicas (hosts) sharing one catalogue of cold items.

Same contract as `service.store.SQLiteItemStore` (see that module's docstring); how this one keeps it:

- Commit order. Every write transaction first locks the one row of `alphafuse_seq` (`SELECT ... FOR
  UPDATE`) and takes its sequence numbers from it, so writers are serialised from their first read to
  their COMMIT: a transaction that got seq 10 has committed (and released the row) before another can
  get 11. A reader that saw seq N therefore never later sees a commit with a smaller seq, which a
  BIGSERIAL would not promise. The lock is held for one short transaction per POST; cold-item writes
  are rare next to reads.
- Durability. `synchronous_commit = on` for every write transaction (whatever the server default), so
  the commit is flushed to the WAL before `add` returns and the 201 goes out.
- Replicas learn of changes without polling. The write transaction runs `pg_notify` (delivered at commit,
  never for a rollback); each store holds one extra connection that LISTENs in a thread, counts the
  notifications and wakes the service (`subscribe`). `change_token()` is that count, with no round trip:
  a batch on an unchanged store costs nothing. A notification missed while the listener was disconnected
  is not lost: every (re)connection changes the token, and the next sync asks `changes_since(last_seq)`.
- PostgreSQL down. The listener notices at once (the server closes its connection), and until it has
  connected again writes raise `StoreUnavailable` naming the problem (a 503) without waiting on the pool,
  `health()` says why, and the change token stands still, so reads serve the cached catalogue without
  asking. On reconnection the pool's connections are checked (broken ones replaced) before writes are
  allowed again: recovery needs no restart.
- Schema. Created and migrated only by `alphafuse store init` (`init_schema`), never by a serving
  process; a service refuses to start (one line) on a database without the schema or at another version.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import psycopg
from psycopg_pool import ConnectionPool, PoolTimeout

from service.errors import ItemNotFound, StoreUnavailable
from service.store import AddResult, StoredItem, _now, admit, distinct_ids, redact

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1
CHANNEL = "alphafuse_cold_items"
LISTENER_NAME = "alphafuse-listener"  # application_name of the LISTEN connection: this, "-", the pid

_SCHEMA = [
    "CREATE TABLE IF NOT EXISTS alphafuse_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)",
    # one row: the last sequence number handed out; its row lock serialises writers (module docstring)
    "CREATE TABLE IF NOT EXISTS alphafuse_seq (one BOOLEAN PRIMARY KEY DEFAULT TRUE CHECK (one), "
    "last_seq BIGINT NOT NULL)",
    "INSERT INTO alphafuse_seq (one, last_seq) VALUES (TRUE, 0) ON CONFLICT DO NOTHING",
    """CREATE TABLE IF NOT EXISTS alphafuse_cold_items (
        seq BIGINT PRIMARY KEY,             -- from alphafuse_seq: increases in commit order
        artifact_version TEXT NOT NULL,
        item_id TEXT NOT NULL,
        record TEXT NOT NULL,               -- JSON object of text fields, as posted (key order kept)
        vector BYTEA NOT NULL,              -- float32 little-endian, D values (empty for a tombstone)
        created_at TEXT NOT NULL,
        deleted BOOLEAN NOT NULL DEFAULT FALSE,
        UNIQUE (artifact_version, item_id)
    )""",
    # carrying items over from other versions looks rows up by id across versions
    "CREATE INDEX IF NOT EXISTS alphafuse_cold_items_by_id ON alphafuse_cold_items (item_id, seq)",
]
_COLUMNS = "seq, item_id, record, vector, created_at, deleted"
_INIT_LOCK = 0x616C7068  # advisory lock key: two `store init` at once migrate once


def _reason(e: BaseException) -> str:
    """psycopg's messages span lines ("...failed: Connection refused\\n\\tIs the server running"): the first."""
    text = str(e).strip().splitlines()
    return " ".join(text[0].split()) if text else type(e).__name__


def init_schema(url: str) -> str:
    """Create or migrate the schema in the database at `url` (idempotent); returns what it did."""
    try:
        with psycopg.connect(url, connect_timeout=10) as conn, conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_INIT_LOCK,))
            found = _schema_version(conn)
            if found is not None and found > SCHEMA_VERSION:
                raise ValueError(
                    f"PostgreSQL item store {redact(url)} has schema version {found}, newer than this "
                    f"release's {SCHEMA_VERSION}: upgrade alphafuse"
                )
            for statement in _SCHEMA:
                conn.execute(statement)
            conn.execute(
                "INSERT INTO alphafuse_meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value",
                (str(SCHEMA_VERSION),),
            )
            conn.execute(
                "INSERT INTO alphafuse_meta (key, value) VALUES ('store_id', %s) ON CONFLICT DO NOTHING",
                (uuid.uuid4().hex,),
            )
    except psycopg.Error as e:
        raise ValueError(f"cannot initialise PostgreSQL item store {redact(url)}: {_reason(e)}") from e
    if found == SCHEMA_VERSION:
        return f"schema version {SCHEMA_VERSION} already in place"
    return f"schema version {SCHEMA_VERSION} created" if found is None else f"migrated {found} -> {SCHEMA_VERSION}"


def _schema_version(conn: psycopg.Connection[Any]) -> int | None:
    if conn.execute("SELECT to_regclass('alphafuse_meta')").fetchone() == (None,):
        return None
    row = conn.execute("SELECT value FROM alphafuse_meta WHERE key = 'schema_version'").fetchone()
    return None if row is None else int(row[0])


class PgItemStore:
    """`ItemStore` in a PostgreSQL database (psycopg 3, a `psycopg_pool` connection pool, LISTEN/NOTIFY).

    `url` is a libpq URL (`postgresql://user:pass@host:5432/db`); the schema must exist (`init_schema`).
    `timeout_s` bounds waiting for a pooled connection; `reconnect_s` is the listener's pause between
    attempts while the server is unreachable. Thread-safe: the pool hands each call its own connection.
    """

    recovers = True  # an unreachable server comes back by itself: health() clears without a restart

    def __init__(
        self, url: str, artifact_version: str, *, timeout_s: float = 5.0, max_items: int | None = None,
        reconnect_s: float = 0.25, pool_size: int = 2,
    ) -> None:
        self.url = url
        self.where = redact(url)
        self.artifact_version = artifact_version
        self.max_items = max_items
        self.timeout_s = timeout_s
        self.reconnect_s = reconnect_s
        self._state = threading.Lock()
        self._epoch = 0  # listener (re)connections: each one may have missed notifications
        self._notified = 0
        self._own_writes = 0  # a sync right after our own write must not wait for the notification
        self._down: str | None = None  # why the server is unreachable now (None: it is reachable)
        self._wakers: list[Callable[[], None]] = []
        self._stop = threading.Event()
        self.listener_pid: int | None = None
        try:
            listener = self._connect_listener()
        except psycopg.Error as e:
            raise ValueError(f"cannot connect to PostgreSQL item store {self.where}: {_reason(e)}") from e
        try:
            version = _schema_version(listener)
            if version is None:
                raise ValueError(
                    f"PostgreSQL item store {self.where} has no alphafuse schema: run "
                    f"`alphafuse store init --store {self.where}` first"
                )
            if version != SCHEMA_VERSION:
                raise ValueError(
                    f"PostgreSQL item store {self.where} has schema version {version}, this release needs "
                    f"{SCHEMA_VERSION}: run `alphafuse store init --store {self.where}`"
                )
            self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
                url, min_size=1, max_size=pool_size, open=False, timeout=timeout_s, name="alphafuse-store",
                kwargs={"application_name": "alphafuse", "connect_timeout": max(2, int(timeout_s))},
                check=ConnectionPool.check_connection,
            )
            try:
                self._pool.open(wait=True, timeout=timeout_s)
            except PoolTimeout as e:
                self._pool.close()
                raise ValueError(f"cannot open connections to PostgreSQL item store {self.where}: {e}") from e
        except BaseException:
            listener.close()
            raise
        self._epoch = 1
        self._thread = threading.Thread(
            target=self._listen_forever, args=(listener,), name="alphafuse-pg-listener", daemon=True
        )
        self._thread.start()

    # --- the listener: notifications in, reachability ------------------------------------------------

    def _connect_listener(self) -> psycopg.Connection[Any]:
        conn = psycopg.connect(
            self.url, autocommit=True, connect_timeout=max(2, int(self.timeout_s)),
            application_name=f"{LISTENER_NAME}-{os.getpid()}",
        )
        conn.execute(f"LISTEN {CHANNEL}")
        self.listener_pid = conn.info.backend_pid
        return conn

    def _heard(self, n: int) -> None:
        with self._state:
            self._notified += n
        self._wake()

    def _listen_forever(self, conn: psycopg.Connection[Any] | None) -> None:
        while not self._stop.is_set():
            if conn is None:
                try:
                    conn = self._connect_listener()
                except psycopg.Error as e:
                    self._set_down(e)
                    self._stop.wait(self.reconnect_s)
                    continue
                # connections the pool held across the outage are broken: replace them before writes resume
                with contextlib.suppress(Exception):
                    self._pool.check()
                with self._state:
                    self._epoch += 1
                    was, self._down = self._down, None
                if was is not None:
                    log.info("PostgreSQL item store %s is reachable again; catching up by sequence number",
                             self.where)
                self._wake()
            try:
                idle = time.monotonic()
                while not self._stop.is_set():
                    got = 0
                    # psycopg >= 3.3 queues what arrives between two calls (the heartbeat) for the next one
                    for _ in conn.notifies(timeout=0.2):
                        got += 1
                    if got:
                        self._heard(got)
                        idle = time.monotonic()
                    elif time.monotonic() - idle > 5.0:
                        conn.execute("SELECT 1")  # a silent network failure shows up here, not only at a write
                        idle = time.monotonic()
            except psycopg.Error as e:
                if not self._stop.is_set():
                    self._set_down(e)
            finally:
                with contextlib.suppress(Exception):
                    conn.close()
                conn = None
                self.listener_pid = None
            # no pause: a connection dropped by a proxy or an admin comes back at once; a server going away
            # fails this first attempt, and only then are writes refused (and the attempts paced)

    def _set_down(self, e: BaseException) -> None:
        reason = f"PostgreSQL item store {self.where} is unreachable: {_reason(e)}"
        with self._state:
            was, self._down = self._down, reason
        if was is None:
            log.error("%s; writes answer 503 and reads serve the catalogue as last seen until it is back", reason)

    def _wake(self) -> None:
        for wake in list(self._wakers):
            try:
                wake()
            except Exception:
                log.exception("waking the service after a store notification failed")

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Call `wake()` (from the listener thread) whenever other writers may have committed."""
        self._wakers.append(wake)

    # --- transactions --------------------------------------------------------------------------------

    def _unavailable(self, e: BaseException) -> StoreUnavailable:
        if isinstance(e, PoolTimeout):
            return StoreUnavailable(f"PostgreSQL item store {self.where}: no connection within {self.timeout_s:g} s")
        return StoreUnavailable(f"PostgreSQL item store {self.where} cannot be used: {_reason(e)}")

    @contextlib.contextmanager
    def _conn(self) -> Iterator[psycopg.Connection[Any]]:
        down = self._down
        if down is not None:
            raise StoreUnavailable(down)
        try:
            with self._pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError, PoolTimeout) as e:
            raise self._unavailable(e) from e

    @contextlib.contextmanager
    def _write(self) -> Iterator[tuple[psycopg.Cursor[Any], int]]:
        """One write transaction holding the sequence row lock from its first statement to COMMIT; yields
        the cursor and the last sequence number handed out. Any exception rolls everything back."""
        started = False
        try:
            with self._conn() as conn, conn.transaction(), conn.cursor() as cur:
                started = True
                cur.execute("SET LOCAL synchronous_commit = on")
                (last,) = cur.execute("SELECT last_seq FROM alphafuse_seq FOR UPDATE").fetchone() or (0,)
                yield cur, int(last)
        except psycopg.Error as e:  # what _conn did not already turn into StoreUnavailable (e.g. disk full)
            raise self._unavailable(e) from e
        finally:
            if started:
                with self._state:
                    self._own_writes += 1  # even a failed COMMIT may have landed

    def _insert(self, cur: psycopg.Cursor[Any], seq: int, item: StoredItem) -> None:
        cur.execute(
            "INSERT INTO alphafuse_cold_items (seq, artifact_version, item_id, record, vector, created_at, deleted) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (
                seq, self.artifact_version, item.item_id, json.dumps(item.record, ensure_ascii=False),
                np.ascontiguousarray(item.vector, dtype="<f4").tobytes(), _now(), item.deleted,
            ),
        )

    @staticmethod
    def _finish(cur: psycopg.Cursor[Any], last: int) -> None:
        cur.execute("UPDATE alphafuse_seq SET last_seq = %s", (last,))
        cur.execute("SELECT pg_notify(%s, %s)", (CHANNEL, str(last)))  # sent at COMMIT, never on rollback

    def _existing(self, cur: psycopg.Cursor[Any], ids: Sequence[str]) -> list[str]:
        rows = cur.execute(
            "SELECT item_id FROM alphafuse_cold_items WHERE artifact_version = %s AND NOT deleted "
            "AND item_id = ANY(%s)",
            (self.artifact_version, list(ids)),
        ).fetchall()
        found = {r[0] for r in rows}
        return [i for i in ids if i in found]

    def _live_count(self, cur: psycopg.Cursor[Any]) -> int:
        row = cur.execute(
            "SELECT COUNT(*) FROM alphafuse_cold_items WHERE artifact_version = %s AND NOT deleted",
            (self.artifact_version,),
        ).fetchone()
        return int(row[0]) if row else 0

    # --- the ItemStore contract ----------------------------------------------------------------------

    def add(self, items: Sequence[StoredItem], *, upsert: bool = False) -> AddResult:
        ids = distinct_ids(items)
        with self._write() as (cur, last):
            existing = self._existing(cur, ids)
            admit(ids, existing, upsert=upsert, max_items=self.max_items, live_count=lambda: self._live_count(cur))
            # replaced rows and tombstones of these ids both give way (one row per id)
            cur.execute(
                "DELETE FROM alphafuse_cold_items WHERE artifact_version = %s AND item_id = ANY(%s)",
                (self.artifact_version, ids),
            )
            seqs = list(range(last + 1, last + 1 + len(items)))
            for seq, it in zip(seqs, items, strict=True):
                self._insert(cur, seq, it)
            if seqs:
                self._finish(cur, seqs[-1])
        return AddResult(seqs, existing)

    def add_absent(self, items: Sequence[StoredItem]) -> list[str]:
        """Insert the items whose id has no row (live or tombstone) in this version; returns their ids."""
        if not items:
            return []
        with self._write() as (cur, last):
            rows = cur.execute(
                "SELECT item_id FROM alphafuse_cold_items WHERE artifact_version = %s AND item_id = ANY(%s)",
                (self.artifact_version, [it.item_id for it in items]),
            ).fetchall()
            present = {r[0] for r in rows}
            absent = [it for it in items if it.item_id not in present]
            for n, it in enumerate(absent, start=1):
                self._insert(cur, last + n, it)
            if absent:
                self._finish(cur, last + len(absent))
        return [it.item_id for it in absent]

    def delete(self, item_id: str) -> int:
        """Replace the live row of `item_id` by a tombstone; durable on return. Returns its sequence number."""
        with self._write() as (cur, last):
            if not self._existing(cur, [item_id]):
                raise ItemNotFound(item_id)
            cur.execute(
                "DELETE FROM alphafuse_cold_items WHERE artifact_version = %s AND item_id = %s",
                (self.artifact_version, item_id),
            )
            self._insert(cur, last + 1, StoredItem(item_id, {}, np.zeros(0, dtype=np.float32), deleted=True))
            self._finish(cur, last + 1)
        return last + 1

    def _query(self, sql: str, params: Sequence[Any]) -> list[tuple[Any, ...]]:
        with self._conn() as conn:
            try:
                return conn.execute(sql, params).fetchall()
            except psycopg.Error as e:
                raise self._unavailable(e) from e

    def carried_over_candidates(self) -> list[StoredItem]:
        """Per id absent from this version, its newest row of any other version (oldest first)."""
        rows = self._query(
            f"SELECT DISTINCT ON (c.item_id) {', '.join('c.' + c for c in _COLUMNS.split(', '))}, c.artifact_version "
            "FROM alphafuse_cold_items c WHERE c.artifact_version != %s "
            "AND NOT EXISTS (SELECT 1 FROM alphafuse_cold_items m WHERE m.item_id = c.item_id "
            "                AND m.artifact_version = %s) "
            "ORDER BY c.item_id, c.seq DESC",
            (self.artifact_version, self.artifact_version),
        )
        return sorted((_row(r) for r in rows), key=lambda r: r.seq)

    def get(self, item_id: str) -> StoredItem | None:
        rows = self._query(
            f"SELECT {_COLUMNS} FROM alphafuse_cold_items WHERE artifact_version = %s AND item_id = %s "
            "AND NOT deleted",
            (self.artifact_version, item_id),
        )
        return _row(rows[0]) if rows else None

    def changes_since(self, seq: int) -> list[StoredItem]:
        """Rows of this artifact version with sequence number > `seq`, oldest first, tombstones included."""
        rows = self._query(
            f"SELECT {_COLUMNS} FROM alphafuse_cold_items WHERE seq > %s AND artifact_version = %s ORDER BY seq",
            (seq, self.artifact_version),
        )
        return [_row(r) for r in rows]

    def change_token(self) -> tuple[int, int, int]:
        """(listener connections, notifications heard, own writes): no round trip. It changes after every
        commit of any replica once its notification arrives, and on every reconnection (when notifications
        may have been missed); while the server is unreachable it stands still, so nothing is asked."""
        with self._state:
            return self._epoch, self._notified, self._own_writes

    def count(self) -> int:
        rows = self._query(
            "SELECT COUNT(*) FROM alphafuse_cold_items WHERE artifact_version = %s AND NOT deleted",
            (self.artifact_version,),
        )
        return int(rows[0][0])

    def other_versions(self) -> dict[str, int]:
        """Row counts of artifact versions other than ours (stale after a model update)."""
        rows = self._query(
            "SELECT artifact_version, COUNT(*) FROM alphafuse_cold_items WHERE artifact_version != %s "
            "AND NOT deleted GROUP BY artifact_version",
            (self.artifact_version,),
        )
        return {v: int(n) for v, n in rows}

    def last_seq(self) -> int:
        rows = self._query("SELECT last_seq FROM alphafuse_seq", ())
        return int(rows[0][0]) if rows else 0

    def health(self) -> str | None:
        """None while the server is reachable; otherwise one line naming the problem."""
        return self._down

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self._pool.close()


def _row(row: tuple[Any, ...]) -> StoredItem:
    seq, item_id, record, vector, created_at, deleted, *version = row
    return StoredItem(
        item_id=item_id, record=json.loads(record),
        vector=np.frombuffer(bytes(vector), dtype="<f4").astype(np.float32), seq=int(seq), created_at=created_at,
        deleted=bool(deleted), artifact_version=version[0] if version else "",
    )
