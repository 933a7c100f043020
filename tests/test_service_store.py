"""SQLiteItemStore: one transaction per add, commit-ordered sequence numbers, version scoping, durability."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import numpy as np
import pytest

from service.errors import ItemConflict, ItemNotFound, StoreFull, StoreUnavailable
from service.store import SQLiteItemStore, StoredItem


def _item(item_id: str, value: float = 1.0, dim: int = 4) -> StoredItem:
    return StoredItem(item_id, {"title": f"title of {item_id}"}, np.full(dim, value, dtype=np.float32))


def test_add_get_and_changes_since(tmp_path: Path) -> None:
    store = SQLiteItemStore(tmp_path / "s.sqlite3", "v1")
    seqs = store.add([_item("a"), _item("b", 2.0)]).seqs
    assert seqs == sorted(seqs) and len(set(seqs)) == 2
    got = store.get("b")
    assert got is not None and got.record == {"title": "title of b"} and got.seq == seqs[1]
    np.testing.assert_array_equal(got.vector, np.full(4, 2.0, dtype=np.float32))
    assert got.vector.dtype == np.float32 and got.created_at.endswith("Z")
    assert store.get("zzz") is None
    assert [r.item_id for r in store.changes_since(0)] == ["a", "b"]
    assert [r.item_id for r in store.changes_since(seqs[0])] == ["b"]
    assert store.changes_since(seqs[1]) == []
    assert store.count() == 2
    store.close()


def test_conflict_rolls_back_the_whole_add_and_upsert_gets_a_new_seq(tmp_path: Path) -> None:
    store = SQLiteItemStore(tmp_path / "s.sqlite3", "v1")
    (first,) = store.add([_item("a")]).seqs
    with pytest.raises(ItemConflict, match="cold items already exist: 'a'"):
        store.add([_item("new"), _item("a")])
    assert store.get("new") is None  # nothing of the failed transaction is visible
    result = store.add([_item("a", 5.0)], upsert=True)
    (second,) = result.seqs
    assert result.replaced == ["a"]
    assert second > first
    rows = store.changes_since(first)
    assert [(r.item_id, r.seq) for r in rows] == [("a", second)]
    assert rows[0].vector[0] == 5.0 and store.count() == 1
    with pytest.raises(ValueError, match="duplicate item ids in one add"):
        store.add([_item("x"), _item("x")])
    store.close()


def test_rows_are_scoped_to_the_artifact_version(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    old = SQLiteItemStore(path, "v1")
    old.add([_item("a"), _item("b")])
    new = SQLiteItemStore(path, "v2")
    assert new.changes_since(0) == [] and new.get("a") is None
    assert new.other_versions() == {"v1": 2}
    new.add([_item("a", 3.0)])  # the same id may exist once per version
    assert old.get("a").vector[0] == 1.0 and new.get("a").vector[0] == 3.0  # type: ignore[union-attr]
    old.close()
    new.close()


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


def test_delete_writes_a_tombstone_that_readers_see_and_a_re_add_replaces(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    writer, reader = SQLiteItemStore(path, "v1"), SQLiteItemStore(path, "v1")
    first, _ = writer.add([_item("a"), _item("b")]).seqs
    gone = writer.delete("a")
    assert gone > first and writer.get("a") is None and writer.count() == 1
    tomb = [r for r in reader.changes_since(0) if r.item_id == "a"]
    assert [(r.seq, r.deleted, r.vector.size) for r in tomb] == [(gone, True, 0)]
    with pytest.raises(ItemNotFound, match="'a'"):
        writer.delete("a")  # already deleted
    with pytest.raises(ItemNotFound, match="'never'"):
        writer.delete("never")
    (again,) = writer.add([_item("a", 7.0)]).seqs  # no upsert needed: the tombstone is not a live item
    rows = reader.changes_since(gone)
    assert [(r.item_id, r.seq, r.deleted) for r in rows] == [("a", again, False)] and rows[0].vector[0] == 7.0
    assert writer.count() == 2 and writer.other_versions() == {}
    writer.close()
    reader.close()


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


def test_carry_over_candidates_and_add_absent(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    old, older = SQLiteItemStore(path, "v1"), SQLiteItemStore(path, "v0")
    older.add([_item("a", 1.0), _item("gone")])
    old.add([_item("a", 2.0), _item("b"), _item("gone"), _item("here")])
    old.delete("gone")  # deleted last: must stay deleted
    new = SQLiteItemStore(path, "v2")
    new.add([_item("here", 9.0)])  # already in the new version: not a candidate
    cands = {r.item_id: r for r in new.carried_over_candidates()}
    assert sorted(cands) == ["a", "b", "gone"] and cands["gone"].deleted
    assert cands["a"].vector[0] == 2.0  # the newest row of the id across the other versions
    new.delete("here")
    assert new.add_absent([_item("a", 5.0), _item("here", 5.0)]) == ["a"]  # a tombstone is a row too
    assert new.get("a").vector[0] == 5.0 and new.get("here") is None  # type: ignore[union-attr]
    assert new.add_absent([_item("a", 6.0)]) == []  # a second worker doing the same adds nothing
    for s in (old, older, new):
        s.close()


# --- what the store promises when its files are damaged, replaced or removed (nothing is lost silently)


def test_replaced_is_what_the_store_replaced_not_what_a_worker_cached(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    a, b = SQLiteItemStore(path, "v1"), SQLiteItemStore(path, "v1")
    assert a.add([_item("x")]).replaced == []
    result = b.add([_item("x", 2.0), _item("y")], upsert=True)  # b never read x: the store knows
    assert result.replaced == ["x"] and len(result.seqs) == 2
    a.close()
    b.close()


def test_the_cold_item_cap_counts_live_items_of_this_version(tmp_path: Path) -> None:
    store = SQLiteItemStore(tmp_path / "s.sqlite3", "v1", max_items=2)
    store.add([_item("a"), _item("b")])
    with pytest.raises(StoreFull, match="holds 2 cold items for this model and the limit is 2"):
        store.add([_item("c")])
    assert store.add([_item("a", 3.0)], upsert=True).replaced == ["a"]  # replacing is not growing
    store.delete("b")
    store.add([_item("c")])
    assert store.count() == 2
    store.close()


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
