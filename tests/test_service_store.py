"""What only SQLiteItemStore does: WAL files, data_version across processes, migration, damaged files.

The behaviour every store shares (add, conflicts, versions, tombstones, carry-over, the cap) is
tests/test_store_contract.py, which runs it against SQLite too.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from service.errors import StoreUnavailable
from service.store import SQLiteItemStore, StoredItem


def _item(item_id: str, value: float = 1.0, dim: int = 4) -> StoredItem:
    return StoredItem(item_id, {"title": f"title of {item_id}"}, np.full(dim, value, dtype=np.float32))








def test_durable_and_visible_to_another_connection(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    writer = SQLiteItemStore(path, "v1")
    reader = SQLiteItemStore(path, "v1")  # another worker process would hold its own connection
    (seq,) = writer.add([_item("a")]).seqs
    assert [r.seq for r in reader.changes_since(0)] == [seq]  # committed before add returned
    writer.close()
    reader.close()
    raw = sqlite3.connect(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    raw.close()
    reopened = SQLiteItemStore(path, "v1")
    assert reopened.get("a") is not None
    reopened.close()


def test_the_change_token_moves_with_every_commit_of_any_connection_and_only_then(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "s.sqlite3"
    mine, other = SQLiteItemStore(path, "v1"), SQLiteItemStore(path, "v1")
    token = mine.change_token()
    assert mine.change_token() == token  # nothing committed: a reader may skip its query
    other.add([_item("a")])  # another connection (PRAGMA data_version sees it)
    assert mine.change_token() != token
    token = mine.change_token()
    mine.add([_item("b")])  # this connection (data_version does not count it; the store does)
    assert mine.change_token() != token
    token = mine.change_token()
    other.delete("a")
    assert mine.change_token() != token
    token = mine.change_token()
    code = (
        f"import sqlite3; c = sqlite3.connect({str(path)!r}); "
        "c.execute(\"INSERT INTO store_meta VALUES ('k', 'v')\"); c.commit()"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)  # another process
    assert mine.change_token() != token
    mine.close()
    other.close()


def test_changes_since_reads_the_new_rows_by_sequence_not_the_whole_version(tmp_path: Path) -> None:
    from service.store import CHANGES_SINCE

    store = SQLiteItemStore(tmp_path / "s.sqlite3", "v1")
    store.add([_item(f"i{n}") for n in range(50)])
    plan = " ".join(str(row[-1]) for row in store._conn.execute("EXPLAIN QUERY PLAN " + CHANGES_SINCE, (0, "v1")))
    assert "INTEGER PRIMARY KEY" in plan and "TEMP B-TREE" not in plan, plan  # a rowid range, no sort
    assert [r.item_id for r in store.changes_since(48)] == ["i48", "i49"]
    store.close()


def test_refuses_a_file_that_is_not_a_store(tmp_path: Path) -> None:
    bad = tmp_path / "bad.sqlite3"
    bad.write_bytes(b"this is not a database" * 100)
    with pytest.raises(ValueError, match="bad.sqlite3 cannot be read: file is not a database"):
        SQLiteItemStore(bad, "v1")




def test_a_version_1_store_is_migrated_in_place(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    raw = sqlite3.connect(path)
    raw.executescript(
        """
        CREATE TABLE cold_items (
            seq INTEGER PRIMARY KEY AUTOINCREMENT, artifact_version TEXT NOT NULL, item_id TEXT NOT NULL,
            record TEXT NOT NULL, vector BLOB NOT NULL, created_at TEXT NOT NULL,
            UNIQUE (artifact_version, item_id)
        );
        CREATE TABLE store_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        INSERT INTO store_meta VALUES ('schema_version', '1');
        """
    )
    vec = np.full(4, 2.0, dtype="<f4").tobytes()
    raw.execute("INSERT INTO cold_items VALUES (5, 'v1', 'old', '{\"title\": \"t\"}', ?, '2026-01-01T00:00:00Z')",
                (vec,))
    raw.commit()
    raw.close()
    store = SQLiteItemStore(path, "v1")
    (row,) = store.changes_since(0)
    assert (row.item_id, row.seq, row.deleted, row.vector[0]) == ("old", 5, False, 2.0)
    assert store.delete("old") > 5 and store.get("old") is None
    store.close()
    raw = sqlite3.connect(path)
    assert raw.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()[0] == "2"
    raw.close()




# --- what the store promises when its files are damaged, replaced or removed (nothing is lost silently)






@pytest.mark.parametrize("victim", ["", "-wal", "-shm"])
def test_a_store_removed_while_serving_refuses_writes(tmp_path: Path, victim: str) -> None:
    path = tmp_path / "s.sqlite3"
    store = SQLiteItemStore(path, "v1")
    store.add([_item("a")])
    Path(str(path) + victim).unlink()
    assert store.health() == f"item store file {path}{victim} was removed while the service was running"
    with pytest.raises(StoreUnavailable, match="was removed while the service was running"):
        store.add([_item("b")])
    with pytest.raises(StoreUnavailable):
        store.delete("a")
    store.close()


def test_a_store_replaced_while_serving_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SQLiteItemStore(path, "v1")
    store.add([_item("a")])
    other = tmp_path / "other.sqlite3"
    other.write_bytes(path.read_bytes())
    other.replace(path)
    with pytest.raises(StoreUnavailable, match="was replaced while the service was running"):
        store.add([_item("b")])
    store.close()


def _crash_copy(path: Path, dest: Path) -> Path:
    """The files a crash would leave (database, -wal, .ack; no -shm), copied while the store is open."""
    dest.mkdir()
    for suffix in ("", "-wal", ".ack"):
        src = Path(str(path) + suffix)
        if src.exists():
            (dest / (path.name + suffix)).write_bytes(src.read_bytes())
    return dest / path.name


def test_restart_after_a_crash_recovers_everything_acknowledged(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SQLiteItemStore(path, "v1")
    store.add([_item("a"), _item("b")])
    crashed = _crash_copy(path, tmp_path / "crash")
    assert Path(str(crashed) + "-wal").stat().st_size > 0  # the writes live in the WAL, not yet checkpointed
    again = SQLiteItemStore(crashed, "v1")
    assert sorted(r.item_id for r in again.changes_since(0)) == ["a", "b"]
    again.close()
    store.close()


@pytest.mark.parametrize("damage", ["deleted", "truncated", "wal-overwritten", "replaced-by-another-store"])
def test_a_damaged_store_is_refused_at_startup_and_reset_keeps_the_old_files(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "s.sqlite3"
    store = SQLiteItemStore(path, "v1")
    store.add([_item("a"), _item("b")])
    crashed = _crash_copy(path, tmp_path / "crash")
    store.close()
    wal = Path(str(crashed) + "-wal")
    if damage == "deleted":
        crashed.unlink()
        wal.unlink()
        expected = "is missing or empty, but .* records 2 acknowledged writes"
    elif damage == "truncated":
        crashed.write_bytes(b"")
        wal.unlink()
        expected = "is missing or empty"
    elif damage == "wal-overwritten":
        wal.write_bytes(np.random.default_rng(0).bytes(wal.stat().st_size))
        expected = "holds no writes at all, but 2 were acknowledged"
    else:
        crashed.unlink()
        wal.unlink()
        SQLiteItemStore(tmp_path / "fresh.sqlite3", "v1").close()
        (tmp_path / "fresh.sqlite3").replace(crashed)
        expected = "is not the store that .* belongs to"
    with pytest.raises(ValueError, match=expected + ".*--reset-store"):
        SQLiteItemStore(crashed, "v1")
    fresh = SQLiteItemStore(crashed, "v1", reset=True)
    assert fresh.count() == 0 and fresh.add([_item("c")]).seqs
    kept = sorted(p.name for p in crashed.parent.iterdir() if ".broken-" in p.name)
    assert any(name.startswith("s.sqlite3.ack.broken-") for name in kept)
    fresh.close()
    assert SQLiteItemStore(crashed, "v1").get("c") is not None  # the new store is a normal store again


def test_a_corrupt_page_is_refused_at_startup(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    store = SQLiteItemStore(path, "v1")
    store.add([_item(f"i{n}", dim=256) for n in range(200)])  # several pages
    store.close()  # checkpoints the WAL into the database file
    data = bytearray(path.read_bytes())
    page = 4096
    data[3 * page : 4 * page] = np.random.default_rng(0).bytes(page)
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="(quick_check|cannot be read).*--reset-store"):
        SQLiteItemStore(path, "v1")


def test_an_unopenable_path_names_the_path(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises((ValueError, OSError), match="file"):
        SQLiteItemStore(tmp_path / "file" / "s.sqlite3", "v1")
