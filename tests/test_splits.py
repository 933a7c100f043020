"""Splits per protocol: leave-one-out, cold-start users, predefined files, dispatch and item checks."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from training.data import Dataset, Interactions, load_dataset
from training.splits import (
    EvalCase,
    Split,
    check_split_items,
    load_predefined_split,
    split_cold_users,
    split_for,
    split_loo,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def make_ds(seqs: dict[str, list[str]]) -> Dataset:
    """A dataset whose users have exactly these chronological sequences (timestamp = position)."""
    rows = [(u, it, t) for u, seq in seqs.items() for t, it in enumerate(seq)]
    users, items, ts = zip(*rows, strict=True)
    inter = Interactions(np.array(users, dtype=object), np.array(items, dtype=object), np.array(ts, dtype=np.int64))
    catalogue = {i: {"title": i} for i in dict.fromkeys(items)}
    return Dataset("toy", inter, catalogue, {})


def many_users(n: int = 60) -> Dataset:
    return make_ds({f"u{j}": [f"i{(j + k) % 17}" for k in range(2 + j % 13)] for j in range(n)})


# ------------------------------------------------------------------------------------------ leave-one-out


def test_loo_hand_checked(caplog: pytest.LogCaptureFixture) -> None:
    ds = make_ds({"u1": ["a", "b", "c", "d"], "u2": ["x", "y"], "u3": ["a", "b", "c"]})
    with caplog.at_level(logging.INFO):
        split = split_loo(ds)
    assert split.protocol == "loo"
    assert split.train == {"u1": ["a", "b"], "u2": ["x", "y"], "u3": ["a"]}
    assert split.valid == [EvalCase("u1", ("a", "b"), "c"), EvalCase("u3", ("a",), "b")]
    assert split.test == [EvalCase("u1", ("a", "b", "c"), "d"), EvalCase("u3", ("a", "b"), "c")]
    assert "1 users with fewer than 3 items" in caplog.text


def test_loo_keeps_full_history() -> None:
    seq = [f"i{k}" for k in range(40)]
    split = split_loo(make_ds({"u": seq}))
    assert split.test[0].history == tuple(seq[:-1])  # not truncated to any window


# ------------------------------------------------------------------------------------------ cold users


def test_cold_users_hand_checked(caplog: pytest.LogCaptureFixture) -> None:
    seqs = {f"u{j}": [f"i{j}_{k}" for k in range(5)] for j in range(10)}
    seqs["lonely"] = ["z"]
    with caplog.at_level(logging.WARNING):
        split = split_cold_users(make_ds(seqs), seed=3, window=3)
    assert "dropped 1 users" in caplog.text
    assert (len(split.train), len(split.valid), len(split.test)) == (8, 1, 1)
    assert split.source == "generated(seed=3)"
    for user, seq in split.train.items():
        assert seq == seqs[user][-3:]  # last `window` interactions, whole window trains
    for case in (*split.valid, *split.test):
        assert case.history == tuple(seqs[case.user][-3:-1])
        assert case.target == seqs[case.user][-1]
    assert "lonely" not in split.train


def test_cold_users_floor_sizes_match_preferdiff() -> None:
    ds = make_ds({f"u{j}": ["a", "b"] for j in range(19)})
    split = split_cold_users(ds, seed=0)
    assert (len(split.train), len(split.valid), len(split.test)) == (15, 1, 3)


def test_cold_users_deterministic_per_seed_and_disjoint() -> None:
    ds = many_users()
    a, b, c = split_cold_users(ds, seed=0), split_cold_users(ds, seed=0), split_cold_users(ds, seed=1)
    assert a == b
    assert [x.user for x in a.test] != [x.user for x in c.test]
    for s in (a, c):
        test_users = {x.user for x in s.test}
        valid_users = {x.user for x in s.valid}
        assert not test_users & set(s.train)
        assert not valid_users & set(s.train)
        assert not test_users & valid_users
        assert len(s.train) + len(valid_users) + len(test_users) == 60


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"window": 1}, "window must be >= 2"),
        ({"fractions": (0.8, 0.1, 0.2)}, r"summing to 1, got \(0.8, 0.1, 0.2\)"),
        ({"fractions": (1.2, -0.1, -0.1)}, "non-negative"),
    ],
)
def test_cold_users_rejects_bad_arguments(kw: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        split_cold_users(many_users(), seed=0, **kw)


# ------------------------------------------------------------------------------------------ predefined


def write_split(folder: Path, train: str, valid: str, test: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    header = "user_id,item_id,timestamp\n"
    for name, body in (("train", train), ("valid", valid), ("test", test)):
        (folder / f"{name}.csv").write_text(header + body, encoding="utf-8")
    return folder


def test_predefined_split_reads_history_and_target(tmp_path: Path) -> None:
    folder = write_split(
        tmp_path,
        train="t1,a,0\nt1,b,1\nt2,c,0\n",
        valid="v1,a,3\nv1,b,4\nv1,c,5\n",
        test="x1,c,1\nx1,a,0\n",  # rows out of order are sorted by timestamp
    )
    split = load_predefined_split(folder)
    assert split.protocol == "cold-users"
    assert split.source == f"predefined:{folder.resolve()}"
    assert split.train == {"t1": ["a", "b"], "t2": ["c"]}
    assert split.valid == [EvalCase("v1", ("a", "b"), "c")]
    assert split.test == [EvalCase("x1", ("a",), "c")]


def test_predefined_single_row_user_is_named(tmp_path: Path) -> None:
    folder = write_split(tmp_path, train="t1,a,0\n", valid="v1,a,0\nv2,b,0\nv1,b,1\n", test="x1,a,0\nx1,b,1\n")
    with pytest.raises(ValueError, match=r"valid\.csv: user 'v2' has a single row"):
        load_predefined_split(folder)


def test_predefined_overlapping_users_warn(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_split(tmp_path, train="s,a,0\ns,b,1\n", valid="v,a,0\nv,b,1\n", test="s,a,0\ns,c,1\n")
    with caplog.at_level(logging.WARNING):
        split = load_predefined_split(folder)
    assert "1 users appear in both train and test" in caplog.text
    assert split.test == [EvalCase("s", ("a",), "c")]  # kept as given


def test_predefined_missing_file_and_bad_columns(tmp_path: Path) -> None:
    folder = write_split(tmp_path, train="t,a,0\n", valid="v,a,0\nv,b,1\n", test="x,a,0\nx,b,1\n")
    (folder / "valid.csv").write_text("user_id,item_id,timestamp,rating\nv,a,0,5\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"unknown columns \['rating'\]"):
        load_predefined_split(folder)
    (folder / "test.csv").unlink()
    with pytest.raises(FileNotFoundError, match=r"lacks test\.csv"):
        load_predefined_split(folder)


# ------------------------------------------------------------------------------------------ dispatch


def test_split_for_dispatches_and_rejects_unknown_protocol(tmp_path: Path) -> None:
    ds = many_users()
    assert split_for(ds, "loo", seed=0, split_dir=None) == split_loo(ds)
    assert split_for(ds, "cold-users", seed=4, split_dir=None) == split_cold_users(ds, seed=4)
    with pytest.raises(ValueError, match=r"unknown protocol 'long-tail'; expected one of loo, cold-users"):
        split_for(ds, "long-tail", seed=0, split_dir=None)


def test_split_for_checks_predefined_items_against_dataset(tmp_path: Path) -> None:
    folder = write_split(tmp_path, train="t,i1,0\n", valid="v,i1,0\nv,nope,1\n", test="x,i2,0\nx,i3,1\n")
    with pytest.raises(ValueError, match=r"mentions 1 items not in the dataset: 'nope'"):
        split_for(many_users(), "cold-users", seed=0, split_dir=folder)


def test_check_split_items_names_at_most_five() -> None:
    split = Split("loo", {"u": [f"m{k}" for k in range(7)]}, [], [EvalCase("w", ("a",), "m9")], "generated(loo)")
    with pytest.raises(ValueError, match=r"8 items not in the dataset: 'm0', .*'m4' \(\+3 more\)"):
        check_split_items(split, {"a"})
    check_split_items(split, {"a", "m9", *(f"m{k}" for k in range(7))})


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.data
def test_real_preferdiff_toys_split() -> None:
    folder = SHARED_DATA / "amazon-toys"
    if not folder.is_dir():
        pytest.skip(f"shared data folder {folder} is absent")
    ds = load_dataset(folder)
    split = split_for(ds, "cold-users", seed=0, split_dir=folder / "splits" / "preferdiff")
    assert (len(split.train), len(split.valid), len(split.test)) == (15_529, 1_941, 1_942)
    # row counts of the README: each case is history + target
    assert sum(len(s) for s in split.train.values()) == 110_638
    assert sum(len(c.history) + 1 for c in split.valid) == 13_850
    assert sum(len(c.history) + 1 for c in split.test) == 13_956
    assert max(len(c.history) for c in split.test) == 10
    assert not {c.user for c in split.test} & set(split.train)
    # our own cold-users split of the same data has PreferDiff's sizes
    ours = split_cold_users(ds, seed=0)
    assert (len(ours.train), len(ours.valid), len(ours.test)) == (15_529, 1_941, 1_942)
