"""The `ItemStore` contract (service/store.py's docstring), run against SQLite and a real PostgreSQL.

Each test gets one store location (a SQLite file, or a fresh PostgreSQL database with the schema) and
`make(version)` opens another connection to it, as another worker or replica would.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from service.errors import ItemConflict, ItemNotFound, StoreFull, StoreUnavailable
from service.store import ItemStore, StoredItem, open_store

Make = Callable[..., ItemStore]


def _item(item_id: str, value: float = 1.0, dim: int = 4) -> StoredItem:
    return StoredItem(item_id, {"title": f"title of {item_id}"}, np.full(dim, value, dtype=np.float32))


@pytest.fixture(params=["sqlite", "postgresql"])
def make(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Make]:
    location: Path | str = (
        tmp_path / "s.sqlite3" if request.param == "sqlite" else request.getfixturevalue("pg_url")
    )
    opened: list[ItemStore] = []

    def open_one(version: str = "v1", **kwargs: Any) -> ItemStore:
        store = open_store(location, version, **kwargs)
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        store.close()


def _moves(store: ItemStore, token: object, timeout: float = 5.0) -> bool:
    """The token changed, at once for SQLite, once the notification arrived for PostgreSQL."""
    deadline = time.monotonic() + timeout
    while store.change_token() == token:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_add_get_and_changes_since(make: Make) -> None:
    store = make()
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


def test_conflict_rolls_back_the_whole_add_and_upsert_gets_a_new_seq(make: Make) -> None:
    store = make()
    (first,) = store.add([_item("a")]).seqs
    with pytest.raises(ItemConflict, match="cold items already exist: 'a'"):
        store.add([_item("new"), _item("a")])
    assert store.get("new") is None  # nothing of the failed transaction is visible
    result = store.add([_item("a", 5.0)], upsert=True)
    (second,) = result.seqs
    assert result.replaced == ["a"] and second > first
    rows = store.changes_since(first)
    assert [(r.item_id, r.seq) for r in rows] == [("a", second)]
    assert rows[0].vector[0] == 5.0 and store.count() == 1
    with pytest.raises(ValueError, match="duplicate item ids in one add"):
        store.add([_item("x"), _item("x")])


def test_rows_are_scoped_to_the_artifact_version(make: Make) -> None:
    old = make("v1")
    old.add([_item("a"), _item("b")])
    new = make("v2")
    assert new.changes_since(0) == [] and new.get("a") is None
    assert new.other_versions() == {"v1": 2}
    new.add([_item("a", 3.0)])  # the same id may exist once per version
    assert old.get("a").vector[0] == 1.0 and new.get("a").vector[0] == 3.0  # type: ignore[union-attr]


def test_committed_before_add_returns_and_visible_to_another_connection(make: Make) -> None:
    writer, reader = make(), make()
    (seq,) = writer.add([_item("a")]).seqs
    assert [r.seq for r in reader.changes_since(0)] == [seq]
    writer.close()
    assert make().get("a") is not None  # a new connection after the writer went away


def test_the_change_token_moves_with_every_commit_of_any_connection_and_only_then(make: Make) -> None:
    mine, other = make(), make()
    token = mine.change_token()
    time.sleep(0.3)  # PostgreSQL: give a stray notification the time to arrive; none may
    assert mine.change_token() == token  # nothing committed: a reader may skip its query
    other.add([_item("a")])
    assert _moves(mine, token)
    token = mine.change_token()
    mine.add([_item("b")])
    assert mine.change_token() != token  # its own write: at once, no waiting for a notification
    token = mine.change_token()
    other.delete("a")
    assert _moves(mine, token)


def test_delete_writes_a_tombstone_that_readers_see_and_a_re_add_replaces(make: Make) -> None:
    writer, reader = make(), make()
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


def test_carry_over_candidates_and_add_absent(make: Make) -> None:
    old, older = make("v1"), make("v0")
    older.add([_item("a", 1.0), _item("gone")])
    old.add([_item("a", 2.0), _item("b"), _item("gone"), _item("here")])
    old.delete("gone")  # deleted last: must stay deleted
    new = make("v2")
    new.add([_item("here", 9.0)])  # already in the new version: not a candidate
    cands = {r.item_id: r for r in new.carried_over_candidates()}
    assert sorted(cands) == ["a", "b", "gone"] and cands["gone"].deleted
    assert cands["a"].vector[0] == 2.0  # the newest row of the id across the other versions
    assert {i: r.artifact_version for i, r in cands.items()} == {"a": "v1", "b": "v1", "gone": "v1"}  # whose vector
    new.delete("here")
    assert new.add_absent([_item("a", 5.0), _item("here", 5.0)]) == ["a"]  # a tombstone is a row too
    assert new.get("a").vector[0] == 5.0 and new.get("here") is None  # type: ignore[union-attr]
    assert new.add_absent([_item("a", 6.0)]) == []  # a second worker doing the same adds nothing


def test_replaced_is_what_the_store_replaced_not_what_a_worker_cached(make: Make) -> None:
    a, b = make(), make()
    assert a.add([_item("x")]).replaced == []
    result = b.add([_item("x", 2.0), _item("y")], upsert=True)  # b never read x: the store knows
    assert result.replaced == ["x"] and len(result.seqs) == 2


def test_the_cold_item_cap_counts_live_items_of_this_version(make: Make) -> None:
    store = make(max_items=2)
    store.add([_item("a"), _item("b")])
    with pytest.raises(StoreFull, match="holds 2 cold items for this model and the limit is 2"):
        store.add([_item("c")])
    assert store.add([_item("a", 3.0)], upsert=True).replaced == ["a"]  # replacing is not growing
    store.delete("b")
    store.add([_item("c")])
    assert store.count() == 2


def test_sequence_numbers_follow_commit_order_under_concurrent_writers(make: Make) -> None:
    """A reader that has seen seq N never later sees a commit with a smaller seq: writers on their own
    connections race while the reader asks `changes_since(last seen)` in a loop."""
    writers = [make() for _ in range(3)]
    reader = make()
    acked: list[int] = []
    errors: list[BaseException] = []
    done = threading.Event()

    def write(n: int, store: ItemStore) -> None:
        try:
            for i in range(15):
                result = store.add([_item(f"w{n}-{i}"), _item(f"w{n}-{i}b")])
                acked.extend(result.seqs)
                if i % 5 == 4:
                    acked.append(store.delete(f"w{n}-{i}b"))
        except BaseException as e:  # surfaced below: a thread's failure must fail the test
            errors.append(e)

    threads = [threading.Thread(target=write, args=(n, s)) for n, s in enumerate(writers)]
    seen: list[int] = []
    last = 0
    for t in threads:
        t.start()
    try:
        while not done.is_set():
            if not any(t.is_alive() for t in threads):
                done.set()  # one more read after the last commit
            for row in reader.changes_since(last):
                assert row.seq > last, f"seq {row.seq} appeared after {last} had been seen"
                last = row.seq
                seen.append(row.seq)
    finally:
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(set(acked)) == len(acked) == 3 * (15 * 2 + 3)
    # the incremental reader skipped nothing that is still stored (a row a tombstone replaced before the
    # reader came by is gone, and its tombstone was seen instead)
    final = {r.seq for r in reader.changes_since(0)}
    assert final <= set(seen) <= set(acked)


# --- PostgreSQL only: the schema, an unreachable server, a missed notification --------------------------


def test_a_database_without_the_schema_is_refused_in_one_line(pg_cluster: Any) -> None:
    from service.pg_store import PgItemStore

    url = pg_cluster.create_database(schema=False)
    with pytest.raises(ValueError, match=r"has no alphafuse schema: run `alphafuse store init --store postgresql://"):
        PgItemStore(url, "v1")


def test_store_init_is_idempotent_and_a_wrong_version_is_refused(
    pg_cluster: Any, capsys: pytest.CaptureFixture[str]
) -> None:
    import psycopg

    from cli.main import main
    from service.pg_store import PgItemStore

    url = pg_cluster.create_database(schema=False)
    assert main(["store", "init", "--store", url]) == 0
    assert main(["store", "init", "--store", url]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("schema version 1 created") and out[1].endswith("already in place"), out
    PgItemStore(url, "v1").close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE alphafuse_meta SET value = '99' WHERE key = 'schema_version'")
    with pytest.raises(ValueError, match="has schema version 99, this release needs 1"):
        PgItemStore(url, "v1")
    assert main(["store", "init", "--store", url]) == 2  # never downgrades
    assert "newer than this release" in capsys.readouterr().err


def test_an_unreachable_server_is_refused_at_startup_in_one_line() -> None:
    from service.pg_store import PgItemStore

    with pytest.raises(ValueError, match=r"cannot connect to PostgreSQL item store postgresql://u:\*\*\*@127\.0\.0\.1:1/"):
        PgItemStore("postgresql://u:secret@127.0.0.1:1/db", "v1", timeout_s=2)


def _connections(url: str, database: str, allowed: bool) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS {str(allowed).lower()}')


def test_a_notification_missed_while_the_listener_was_away_is_caught_up_by_seq(pg_cluster: Any) -> None:
    import psycopg

    from service.pg_store import PgItemStore

    url = pg_cluster.create_database()
    database = url.rsplit("/", 1)[1]
    reader, writer = PgItemStore(url, "v1"), PgItemStore(url, "v1")
    try:
        token = reader.change_token()
        writer.add([_item("before")])
        assert _moves(reader, token)
        seen = reader.changes_since(0)[-1].seq
        # the reader's listener drops and cannot come back for a while; the writer's connections stay
        _connections(pg_cluster.url(), database, False)
        with psycopg.connect(pg_cluster.url(), autocommit=True) as conn:
            conn.execute("SELECT pg_terminate_backend(%s)", (reader.listener_pid,))
        assert _until_true(lambda: reader.health() is not None)
        token = reader.change_token()
        (missed,) = writer.add([_item("missed")]).seqs  # its notification goes to nobody of the reader's
        time.sleep(0.3)
        assert reader.change_token() == token  # the reader has heard nothing...
        _connections(pg_cluster.url(), database, True)
        assert _moves(reader, token)  # ...until it reconnects, which by itself says "ask"
        assert [r.seq for r in reader.changes_since(seen)] == [missed]
        assert reader.health() is None
    finally:
        _connections(pg_cluster.url(), database, True)
        reader.close()
        writer.close()


def _until_true(check: Callable[[], bool], timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_writes_while_the_server_is_down_raise_store_unavailable_and_recover(pg_cluster: Any) -> None:
    from service.pg_store import PgItemStore

    url = pg_cluster.create_database()
    store = PgItemStore(url, "v1")
    try:
        store.add([_item("a")])
        pg_cluster.stop("fast")
        try:
            deadline = time.monotonic() + 5
            while store.health() is None and time.monotonic() < deadline:
                time.sleep(0.01)
            problem = store.health()
            assert problem is not None and "is unreachable" in problem and "\n" not in problem
            t0 = time.monotonic()
            with pytest.raises(StoreUnavailable, match="is unreachable"):
                store.add([_item("b")])
            assert time.monotonic() - t0 < 0.5  # refused at once, no waiting on the pool
            token = store.change_token()
            assert store.change_token() == token  # readers are told nothing changed: they serve the cache
        finally:
            pg_cluster.start()
        deadline = time.monotonic() + 10
        while store.health() is not None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert store.health() is None
        store.add([_item("b")])
        assert [r.item_id for r in store.changes_since(0)] == ["a", "b"]
    finally:
        store.close()
