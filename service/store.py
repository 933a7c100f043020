"""Durable storage of cold items (items added after training), the source of truth for every worker.

Each worker process holds the model, an input table and a FAISS index in memory; the store is what
those in-memory copies are a cache of. A worker folds in what it has not seen yet by asking for
`changes_since(last_seq)` before it serves a request and on a timer, so an item added through any
worker is served by every worker on its next request. It asks only when `change_token()` differs from
the last time it asked (for SQLite, `PRAGMA data_version`: no table is read), so a batch on an
unchanged store costs one pragma, not a query and its rows.

Contract of an `ItemStore` (what a Postgres implementation for several replicas must also honour):

- `add(items, upsert)` writes all items in ONE transaction that is durable when it returns (the HTTP
  201 is sent after it); an existing id raises `ItemConflict` unless `upsert`, in which case the row
  is replaced and gets a new sequence number. Returns the assigned sequence numbers.
- `delete(item_id)` replaces the item's row by a tombstone with a NEW sequence number in one durable
  transaction, so every reader learns of the deletion through `changes_since` like any other change;
  an id with no live row raises `ItemNotFound`. A later `add` of the same id replaces the tombstone.
- `add_absent(items)` inserts, in one durable transaction, only the items whose id has no row at all
  (live or tombstone) in this version, and returns their ids: several workers may carry the same
  cold items over from an older model version at once, and a deletion under this version wins.
- `carried_over_candidates()` returns, for every id with no row in this version, its newest row among
  the other versions (tombstones included: an item deleted last must stay deleted).
- sequence numbers increase strictly in COMMIT order, so a reader that has seen everything up to `s`
  never misses a row by asking for `seq > s` later. SQLite serialises writers, so AUTOINCREMENT gives
  this for free. In Postgres a plain BIGSERIAL does not (a transaction holding seq 9 can commit after
  one holding seq 10): take the number from a one-row counter table updated inside the same
  transaction (or hold `LOCK TABLE ... IN SHARE ROW EXCLUSIVE MODE` while inserting), and optionally
  NOTIFY so replicas need not poll.
- `change_token()` returns a value that changes whenever a commit, by this or any other connection or
  process, may have changed what `changes_since` returns; two equal tokens mean nothing was committed
  in between, so a reader may skip the query. Take it *before* the query it guards: a commit between
  the two is then seen by the query or by the next token. A store that cannot tell returns None, and
  every sync asks.
- rows are scoped to one `artifact_version`: a vector is only valid for the model, projection, encoder
  and cold-ID rule it was computed with; rows of other versions stay stored but are not served.
- `add` refuses (`StoreFull`) to hold more than `max_items` live items of its version, and reports which
  ids it replaced (`AddResult.replaced`): the store's answer, not a worker's cache, is what a client sees.
- a store that cannot be written (removed, replaced, corrupt, disk full) raises `StoreUnavailable`; it
  never acknowledges a write it did not make durable.

What the SQLite store promises, and how it keeps the promise: an acknowledged write is committed with
`synchronous=FULL` (the WAL is fsynced) before the call returns. After each commit the highest
acknowledged sequence number is also fsynced into `<store>.ack` beside the database, with the store's
random id. At startup the store refuses to open (one clear error) when the database is missing, empty,
not the store the `.ack` file belongs to, holds fewer writes than `.ack` records (truncated, replaced or
rolled back, a damaged WAL), or fails `PRAGMA quick_check`; `reset=True` starts over instead and keeps the
old files beside it. While serving, every write first checks that the database, -wal and -shm files are
still the ones it opened, so a store deleted or replaced under a running service refuses writes instead
of writing into an unlinked file. To back it up, copy the database with SQLite's online backup
(`sqlite3 STORE ".backup COPY"`) and the `.ack` file; restoring an older backup than `.ack` records is
refused until the operator removes `.ack` (accepting the loss) or passes `reset`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import numpy as np

from service.errors import ItemConflict, ItemNotFound, StoreFull, StoreUnavailable
from service.settings import STORE_URL_SCHEMES

log = logging.getLogger(__name__)

SCHEMA_VERSION = 2  # 2: tombstones (`deleted`); a version-1 file is migrated in place on open


@dataclass(frozen=True)
class StoredItem:
    item_id: str
    record: dict[str, Any]  # the text fields, as posted
    vector: np.ndarray  # (D,) float32: the fused input vector x = z + [0, v0] (not normalised)
    seq: int = 0  # assigned by the store; 0 before it is stored
    created_at: str = ""  # ISO 8601 UTC, assigned by the store
    deleted: bool = False  # a tombstone: the item was deleted at `seq` (record and vector are empty)
    artifact_version: str = ""  # the version the vector was computed for; set by carried_over_candidates only


@dataclass(frozen=True)
class AddResult:
    seqs: list[int]  # the sequence number of each item, in the order given
    replaced: list[str]  # ids whose live row this add replaced (upsert), as the store saw them


class ItemStore(Protocol):
    """Cold items of one artifact version; see the module docstring for the contract."""

    def add(self, items: Sequence[StoredItem], *, upsert: bool = False) -> AddResult: ...

    def delete(self, item_id: str) -> int: ...

    def add_absent(self, items: Sequence[StoredItem]) -> list[str]: ...

    def carried_over_candidates(self) -> list[StoredItem]: ...

    def get(self, item_id: str) -> StoredItem | None: ...

    def changes_since(self, seq: int) -> list[StoredItem]: ...

    def change_token(self) -> object | None: ...

    def count(self) -> int: ...

    def other_versions(self) -> dict[str, int]: ...

    def health(self) -> str | None: ...

    def subscribe(self, wake: Callable[[], None]) -> None: ...

    def close(self) -> None: ...

    # True when a problem health() reports can clear by itself (a database server that comes back);
    # False when it needs the operator and a restart (a store file removed or replaced)
    recovers: bool


_SCHEMA = """
CREATE TABLE IF NOT EXISTS cold_items (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, increases in commit order
    artifact_version TEXT NOT NULL,
    item_id TEXT NOT NULL,
    record TEXT NOT NULL,                   -- JSON object of text fields
    vector BLOB NOT NULL,                   -- float32 little-endian, D values (empty for a tombstone)
    created_at TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,     -- 1 = tombstone: deleted at this seq
    UNIQUE (artifact_version, item_id)
);
-- carrying items over from other versions looks rows up by id across versions
CREATE INDEX IF NOT EXISTS cold_items_by_id ON cold_items (item_id, seq);
CREATE TABLE IF NOT EXISTS store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""


# The unary + keeps SQLite off the (artifact_version, item_id) index: with it, the planner scanned every
# row of this version and sorted them for each call (measured: 0.6 ms at 10,000 cold items, growing with
# the store); on the rowid range it reads only the new rows (4 us).
CHANGES_SINCE = (
    "SELECT seq, item_id, record, vector, created_at, deleted FROM cold_items "
    "WHERE seq > ? AND +artifact_version = ? ORDER BY seq"
)

ACK_SUFFIX = ".ack"
_ACK_BYTES = 128  # the .ack record is rewritten in place at this fixed size: one sector, never torn


class SQLiteItemStore:
    """`ItemStore` in one SQLite file (WAL, synchronous=FULL): safe for several processes on one host.

    One connection per instance, guarded by a lock (the service calls it from one worker thread, but
    the lifespan opens and closes it from another). `max_items` caps the live items of this version;
    `reset` starts over when the startup checks fail (module docstring).
    """

    recovers = False

    def __init__(
        self, path: Path | str, artifact_version: str, *, timeout_s: float = 10.0, max_items: int | None = None,
        reset: bool = False,
    ) -> None:
        self.path = Path(path)
        self.artifact_version = artifact_version
        self.max_items = max_items
        self.ack_path = self.path.with_name(self.path.name + ACK_SUFFIX)
        self._lock = threading.Lock()
        self._identity: dict[str, tuple[int, int]] = {}
        # this connection's own write transactions: PRAGMA data_version only counts other connections'
        self._own_writes = 0
        try:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
            except OSError as e:
                raise ValueError(f"cannot create the item store's directory {self.path.parent}: {e.strerror}") from e
            self._conn = self._open(timeout_s)
        except StoreCheckFailed as e:
            if not reset:
                raise ValueError(f"{e}; restore it from a backup, or start over with --reset-store") from e
            kept = self._set_aside()
            log.warning("item store %s failed its startup checks (%s): starting over; old files kept as %s",
                        self.path, e, ", ".join(kept) or "nothing")
            self._conn = self._open(timeout_s)
        self._remember_identity()

    def _open(self, timeout_s: float) -> sqlite3.Connection:
        self._identity.clear()  # a failed first attempt remembered files that may since have been set aside
        ack = self._read_ack()
        if ack is not None and (not self.path.is_file() or self.path.stat().st_size == 0):
            raise StoreCheckFailed(
                f"item store {self.path} is missing or empty, but {self.ack_path} records {ack[1]} acknowledged "
                "writes"
            )
        try:
            # isolation_level=None: we issue BEGIN/COMMIT ourselves, so one POST is exactly one transaction
            conn = sqlite3.connect(self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False)
        except sqlite3.Error as e:
            raise ValueError(f"cannot open item store {self.path}: {e}") from e
        try:
            self._conn = conn
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")  # fsync the WAL at every commit
            conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
            (check,) = conn.execute("PRAGMA quick_check").fetchone()
            if check != "ok":
                raise StoreCheckFailed(f"item store {self.path} fails PRAGMA quick_check: {check}")
            conn.executescript(_SCHEMA)
            if ack is not None:
                store_id, acked = ack
                found = conn.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()
                if found is None:
                    raise StoreCheckFailed(
                        f"item store {self.path} holds no writes at all, but {acked} were acknowledged: it (or "
                        "its -wal file) was truncated, overwritten or rolled back"
                    )
                if found[0] != store_id:
                    raise StoreCheckFailed(
                        f"item store {self.path} is not the store that {self.ack_path} belongs to (store id "
                        f"{found[0]}, expected {store_id}): it was replaced"
                    )
                if self.last_seq() < acked:
                    raise StoreCheckFailed(
                        f"item store {self.path} holds writes up to sequence {self.last_seq()}, but {acked} were "
                        "acknowledged: it (or its -wal file) was truncated, overwritten or rolled back"
                    )
            self._check_schema()
        except StoreCheckFailed:
            conn.close()
            raise
        except sqlite3.DatabaseError as e:
            conn.close()
            raise StoreCheckFailed(f"item store {self.path} cannot be read: {e}") from e
        except BaseException:
            conn.close()
            raise
        return conn

    def _set_aside(self) -> list[str]:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        kept = []
        for p in (self.path, *self._sidecars(), self.ack_path):
            if p.exists():
                target = p.with_name(f"{p.name}.broken-{stamp}")
                p.rename(target)
                kept.append(target.name)
        return kept

    def _sidecars(self) -> tuple[Path, Path]:
        return self.path.with_name(self.path.name + "-wal"), self.path.with_name(self.path.name + "-shm")

    def store_id(self) -> str:
        (value,) = self._conn.execute("SELECT value FROM store_meta WHERE key = 'store_id'").fetchone()
        return str(value)

    def last_seq(self) -> int:
        """The highest sequence number ever assigned (SQLite's AUTOINCREMENT high-water mark)."""
        row = self._conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'cold_items'").fetchone()
        return 0 if row is None else int(row[0])

    # --- file identity: a write must land in the files this store opened ---------------------------

    def _remember_identity(self) -> None:
        for p in (self.path, *self._sidecars()):
            with contextlib.suppress(FileNotFoundError):
                st = p.stat()
                self._identity[p.name] = (st.st_dev, st.st_ino)

    def health(self) -> str | None:
        """None when the store's files are the ones it opened; otherwise what went wrong."""
        for p in (self.path, *self._sidecars()):
            known = self._identity.get(p.name)
            if known is None:
                continue  # -wal / -shm appear with the first write; remembered after it
            try:
                st = p.stat()
            except FileNotFoundError:
                return f"item store file {p} was removed while the service was running"
            if (st.st_dev, st.st_ino) != known:
                return f"item store file {p} was replaced while the service was running"
        return None

    # --- the acknowledged watermark -------------------------------------------------------------------

    def _read_ack(self) -> tuple[str, int] | None:
        try:
            raw = self.ack_path.read_bytes()
        except FileNotFoundError:
            return None
        try:
            data = json.loads(raw.decode().strip())
            return str(data["store_id"]), int(data["seq"])
        except (ValueError, KeyError, TypeError) as e:
            raise StoreCheckFailed(
                f"{self.ack_path} is damaged ({e}); remove it only if the store is known to be good"
            ) from e

    def _ack(self, seq: int) -> None:
        """Raise the fsynced watermark to `seq` (several workers: under a file lock, never lowered)."""
        record = json.dumps({"store_id": self.store_id(), "seq": seq}).encode().ljust(_ACK_BYTES - 1) + b"\n"
        fd = os.open(self.ack_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            current = os.pread(fd, _ACK_BYTES, 0)
            with contextlib.suppress(ValueError, KeyError, TypeError):
                if current.strip() and int(json.loads(current.decode())["seq"]) >= seq:
                    return
            os.pwrite(fd, record, 0)
            os.fsync(fd)
        finally:
            os.close(fd)  # also releases the flock

    @contextlib.contextmanager
    def _write(self, *, locked: bool = True) -> Iterator[sqlite3.Cursor]:
        """One write transaction: BEGIN IMMEDIATE takes SQLite's write lock up front, so what is read
        inside stays true until COMMIT; any exception rolls everything back. A store whose files were
        removed or replaced, or that SQLite cannot write, raises StoreUnavailable and commits nothing."""
        with self._lock if locked else contextlib.nullcontext():
            problem = self.health()
            if problem is not None:
                raise StoreUnavailable(f"{problem}; writes are refused until it is restored and the service restarted")
            cur = self._conn.cursor()
            try:
                cur.execute("BEGIN IMMEDIATE")
            except sqlite3.Error as e:
                raise StoreUnavailable(f"item store {self.path} cannot be written: {e}") from e
            try:
                yield cur
                cur.execute("COMMIT")
            except BaseException as e:
                self._own_writes += 1  # a rollback changes nothing, but a failed COMMIT may have landed
                with contextlib.suppress(sqlite3.Error):
                    cur.execute("ROLLBACK")
                if isinstance(e, sqlite3.Error):
                    raise StoreUnavailable(f"item store {self.path} cannot be written: {e}") from e
                raise
            self._own_writes += 1
            self._remember_identity()  # the first write creates -wal and -shm

    def _insert(self, cur: sqlite3.Cursor, item: StoredItem, *, or_ignore: bool = False) -> None:
        cur.execute(
            f"INSERT {'OR IGNORE ' if or_ignore else ''}INTO cold_items "
            "(artifact_version, item_id, record, vector, created_at, deleted) VALUES (?, ?, ?, ?, ?, ?)",
            (
                self.artifact_version, item.item_id, json.dumps(item.record, ensure_ascii=False),
                np.ascontiguousarray(item.vector, dtype="<f4").tobytes(), _now(), int(item.deleted),
            ),
        )

    def _check_schema(self) -> None:
        # several workers open the same file at once: the write lock makes exactly one of them migrate
        with self._write(locked=False) as cur:
            cur.execute(
                "INSERT OR IGNORE INTO store_meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            cur.execute("INSERT OR IGNORE INTO store_meta (key, value) VALUES ('store_id', ?)", (uuid.uuid4().hex,))
            (version,) = cur.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()
            if int(version) == 1:
                cur.execute("ALTER TABLE cold_items ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0")
                cur.execute("UPDATE store_meta SET value = ? WHERE key = 'schema_version'", (str(SCHEMA_VERSION),))
                log.info("migrated item store %s from schema version 1 to %d", self.path, SCHEMA_VERSION)
            elif int(version) != SCHEMA_VERSION:
                raise ValueError(
                    f"item store {self.path} has schema version {version}, expected {SCHEMA_VERSION}"
                )

    def add(self, items: Sequence[StoredItem], *, upsert: bool = False) -> AddResult:
        ids = distinct_ids(items)
        seqs = []
        with self._write() as cur:
            existing = self._existing(cur, ids)
            admit(ids, existing, upsert=upsert, max_items=self.max_items, live_count=lambda: self._live_count(cur))
            # replaced rows and tombstones of these ids both give way (one row per id)
            cur.executemany(
                "DELETE FROM cold_items WHERE artifact_version = ? AND item_id = ?",
                [(self.artifact_version, i) for i in ids],
            )
            for it in items:
                self._insert(cur, it)
                assert cur.lastrowid is not None
                seqs.append(int(cur.lastrowid))
        self._ack(max(seqs))
        return AddResult(seqs, existing)

    def add_absent(self, items: Sequence[StoredItem]) -> list[str]:
        """Insert the items whose id has no row (live or tombstone) in this version; returns their ids."""
        added: list[str] = []
        with self._write() as cur:
            for it in items:
                self._insert(cur, it, or_ignore=True)  # ignored: the (version, id) key already holds a row
                if cur.rowcount == 1:
                    added.append(it.item_id)
        if added:
            self._ack(self.last_seq())
        return added

    def carried_over_candidates(self) -> list[StoredItem]:
        """Per id absent from this version, its newest row of any other version (oldest first)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT c.seq, c.item_id, c.record, c.vector, c.created_at, c.deleted, c.artifact_version "
                "FROM cold_items c WHERE c.artifact_version != ? "
                "AND c.seq = (SELECT MAX(o.seq) FROM cold_items o WHERE o.item_id = c.item_id "
                "             AND o.artifact_version != ?) "
                "AND NOT EXISTS (SELECT 1 FROM cold_items m WHERE m.item_id = c.item_id "
                "                AND m.artifact_version = ?) "
                "ORDER BY c.seq",
                (self.artifact_version, self.artifact_version, self.artifact_version),
            ).fetchall()
        return [_row(r) for r in rows]

    def delete(self, item_id: str) -> int:
        """Replace the live row of `item_id` by a tombstone; durable on return. Returns its sequence number."""
        with self._write() as cur:
            if not self._existing(cur, [item_id]):
                raise ItemNotFound(item_id)
            cur.execute(
                "DELETE FROM cold_items WHERE artifact_version = ? AND item_id = ?", (self.artifact_version, item_id)
            )
            self._insert(cur, StoredItem(item_id, {}, np.zeros(0, dtype=np.float32), deleted=True))
            assert cur.lastrowid is not None
            seq = int(cur.lastrowid)
        self._ack(seq)
        return seq

    def _existing(self, cur: sqlite3.Cursor, ids: Sequence[str]) -> list[str]:
        """The ids among `ids` with a live (not deleted) row, in the order given."""
        found: list[str] = []
        for start in range(0, len(ids), 500):  # stay under SQLite's bound-parameter limit
            chunk = ids[start : start + 500]
            marks = ",".join("?" * len(chunk))
            rows = cur.execute(
                f"SELECT item_id FROM cold_items WHERE artifact_version = ? AND deleted = 0 AND item_id IN ({marks})",
                (self.artifact_version, *chunk),
            ).fetchall()
            found.extend(r[0] for r in rows)
        order = {i: n for n, i in enumerate(ids)}
        return sorted(found, key=order.__getitem__)

    def get(self, item_id: str) -> StoredItem | None:
        with self._lock:
            row = self._conn.execute(
                "SELECT seq, item_id, record, vector, created_at, deleted FROM cold_items "
                "WHERE artifact_version = ? AND item_id = ? AND deleted = 0",
                (self.artifact_version, item_id),
            ).fetchone()
        return None if row is None else _row(row)

    def changes_since(self, seq: int) -> list[StoredItem]:
        """Rows of this artifact version with sequence number > `seq`, oldest first, tombstones included."""
        with self._lock:
            rows = self._conn.execute(CHANGES_SINCE, (seq, self.artifact_version)).fetchall()
        return [_row(r) for r in rows]

    def change_token(self) -> tuple[int, int]:
        """(PRAGMA data_version, own write transactions): changes whenever any connection, in any process,
        committed since the last call that returned the same value (see the module docstring)."""
        with self._lock:
            (version,) = self._conn.execute("PRAGMA data_version").fetchone()
            return int(version), self._own_writes

    def count(self) -> int:
        with self._lock:
            return self._live_count(self._conn.cursor())

    def _live_count(self, cur: sqlite3.Cursor) -> int:
        (n,) = cur.execute(
            "SELECT COUNT(*) FROM cold_items WHERE artifact_version = ? AND deleted = 0", (self.artifact_version,)
        ).fetchone()
        return int(n)

    def other_versions(self) -> dict[str, int]:
        """Row counts of artifact versions other than ours (stale after a model update)."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT artifact_version, COUNT(*) FROM cold_items WHERE artifact_version != ? AND deleted = 0 "
                "GROUP BY artifact_version",
                (self.artifact_version,),
            ).fetchall()
        return {v: int(n) for v, n in rows}

    def subscribe(self, wake: Callable[[], None]) -> None:
        """Nothing to subscribe to: PRAGMA data_version is cheap enough to read before every batch, and
        the service's timer covers idle workers."""

    def close(self) -> None:
        with self._lock:
            self._conn.close()



def distinct_ids(items: Sequence[StoredItem]) -> list[str]:
    """The items' ids, refused with ValueError when one add names an id twice (every store's rule)."""
    ids = [it.item_id for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError(f"duplicate item ids in one add: {sorted({i for i in ids if ids.count(i) > 1})}")
    return ids


def admit(
    ids: Sequence[str], existing: Sequence[str], *, upsert: bool, max_items: int | None,
    live_count: Callable[[], int],
) -> None:
    """Refuse an add the way every store does: ids that exist without `upsert`, or one past `max_items`.

    Called inside the store's write transaction, so `existing` and `live_count()` cannot change before the
    insert; `live_count` is only called when there is a limit, since counting costs a query.
    """
    if existing and not upsert:
        raise ItemConflict(
            f"cold items already exist: {', '.join(repr(i) for i in existing)}; pass upsert=true to replace them",
            list(existing),
        )
    if max_items is not None:
        live = live_count()
        if live + len(ids) - len(existing) > max_items:
            raise StoreFull(
                f"the store holds {live} cold items for this model and the limit is {max_items} "
                f"(ALPHAFUSE_MAX_COLD_ITEMS): adding {len(ids) - len(existing)} more is refused; delete some first"
            )

def open_store(
    location: Path | str, artifact_version: str, *, max_items: int | None = None, reset: bool = False
) -> ItemStore:
    """The store at `location`: a `postgresql://` URL opens `PgItemStore` (schema made by `alphafuse store
    init`), anything else is a SQLite file path. `reset` applies to SQLite's startup checks only."""
    if is_store_url(location):
        from service.pg_store import PgItemStore  # psycopg is only needed by those who use it

        return PgItemStore(str(location), artifact_version, max_items=max_items)
    return SQLiteItemStore(location, artifact_version, max_items=max_items, reset=reset)


def is_store_url(location: object) -> bool:
    return isinstance(location, str) and location.startswith(STORE_URL_SCHEMES)


def describe_store(location: Path | str) -> str:
    """`location` as logs may show it: a URL's password is masked."""
    return redact(location) if isinstance(location, str) and is_store_url(location) else str(location)


def redact(url: str) -> str:
    """`url` with its password replaced by ***, for logs and error messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user_info, host = parts.netloc.rsplit("@", 1)
    return urlunsplit(parts._replace(netloc=f"{user_info.split(':', 1)[0]}:***@{host}"))


class StoreCheckFailed(Exception):
    """The store on disk is not the one that acknowledged writes, or is damaged (startup only)."""


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _row(row: tuple[Any, ...]) -> StoredItem:
    """A StoredItem from (seq, item_id, record, vector, created_at, deleted[, artifact_version])."""
    seq, item_id, record, vector, created_at, deleted, *version = row
    return StoredItem(
        item_id=item_id, record=json.loads(record), vector=np.frombuffer(vector, dtype="<f4").astype(np.float32),
        seq=int(seq), created_at=created_at, deleted=bool(deleted), artifact_version=version[0] if version else "",
    )
