"""Train / validation / test splits for the evaluation protocols of the README's "Protocols" paragraph.

A split is the only thing evaluation sees: training sequences per user, plus evaluation cases that each
predict one target item from a chronological history. Histories are never truncated here; the model
truncates to its own window.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Set
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from training.data import Dataset, read_interactions_csv, user_sequences

logger = logging.getLogger(__name__)

PROTOCOLS: tuple[str, ...] = ("loo", "cold-users")
_MAX_NAMED = 5


@dataclass(frozen=True)
class EvalCase:
    user: str
    history: tuple[str, ...]  # chronological item ids, oldest first
    target: str


@dataclass(frozen=True)
class Split:
    protocol: str  # "loo" | "cold-users"
    train: dict[str, list[str]]  # user -> chronological training sequence
    valid: list[EvalCase]
    test: list[EvalCase]
    source: str  # e.g. "generated(seed=0)" or "predefined:/abs/path"


def _name_some(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_NAMED])
    return f"{shown} (+{len(ids) - _MAX_NAMED} more)" if len(ids) > _MAX_NAMED else shown


def _log_split(split: Split) -> None:
    logger.info(
        "%s split (%s): %d train users, %d valid cases, %d test cases",
        split.protocol, split.source, len(split.train), len(split.valid), len(split.test),
    )  # fmt: skip


def split_loo(ds: Dataset) -> Split:
    """Leave-one-out: last item = test target, second last = validation target, the rest trains."""
    train: dict[str, list[str]] = {}
    valid: list[EvalCase] = []
    test: list[EvalCase] = []
    short = 0
    for user, seq in user_sequences(ds.interactions).items():
        if len(seq) < 3:
            # too short to hold out two items; still useful as training signal
            train[user] = seq
            short += 1
            continue
        train[user] = seq[:-2]
        valid.append(EvalCase(user, tuple(seq[:-2]), seq[-2]))
        test.append(EvalCase(user, tuple(seq[:-1]), seq[-1]))
    if short:
        logger.info("loo: %d users with fewer than 3 items are used for training only", short)
    split = Split("loo", train, valid, test, "generated(loo)")
    _log_split(split)
    return split


def split_cold_users(
    ds: Dataset, seed: int, window: int = 11, fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
) -> Split:
    """Cold-start users: keep each user's last `window` items; split the shuffled users by `fractions`."""
    if window < 2:
        raise ValueError(f"window must be >= 2 (one history item + the target), got {window}")
    if len(fractions) != 3 or any(f < 0 for f in fractions) or not math.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    kept: list[tuple[str, list[str]]] = []
    dropped = 0
    for user, seq in user_sequences(ds.interactions).items():
        tail = seq[-window:]
        if len(tail) < 2:
            dropped += 1
            continue
        kept.append((user, tail))
    if dropped:
        logger.warning("cold-users: dropped %d users with fewer than 2 interactions", dropped)
    n = len(kept)
    perm = np.random.default_rng(seed).permutation(n)
    # floor for train and valid, remainder to test: 19,412 users -> 15,529 / 1,941 / 1,942 as in PreferDiff
    n_train = math.floor(n * fractions[0] + 1e-9)
    n_valid = math.floor(n * fractions[1] + 1e-9)
    parts = np.split(perm, [n_train, n_train + n_valid])

    def cases(idx: np.ndarray) -> list[EvalCase]:
        return [EvalCase(kept[j][0], tuple(kept[j][1][:-1]), kept[j][1][-1]) for j in idx.tolist()]

    train = {kept[j][0]: kept[j][1] for j in parts[0].tolist()}
    split = Split("cold-users", train, cases(parts[1]), cases(parts[2]), f"generated(seed={seed})")
    _log_split(split)
    return split


def _read_cases(path: Path) -> list[EvalCase]:
    cases: list[EvalCase] = []
    for user, seq in user_sequences(read_interactions_csv(path)).items():
        if len(seq) < 2:
            raise ValueError(f"{path}: user {user!r} has a single row; an evaluation case needs history + target")
        cases.append(EvalCase(user, tuple(seq[:-1]), seq[-1]))
    return cases


def load_predefined_split(path: Path, protocol: str = "cold-users") -> Split:
    """Read `train.csv`, `valid.csv`, `test.csv`; in valid/test a user's last row is the target."""
    path = Path(path)
    missing = [n for n in ("train.csv", "valid.csv", "test.csv") if not (path / n).is_file()]
    if missing:
        raise FileNotFoundError(f"predefined split {path} lacks {', '.join(missing)}")
    train = user_sequences(read_interactions_csv(path / "train.csv"))
    valid = _read_cases(path / "valid.csv")
    test = _read_cases(path / "test.csv")

    # A user id in two parts would let evaluation see a trained-on user (cold-users) or double-count a user.
    # The published PreferDiff splits have none (their "ambiguous users" are distinct ids whose last-11
    # windows are identical, which does not change any case), so this only warns: each case is self-contained.
    parts = {"train": set(train), "valid": {c.user for c in valid}, "test": {c.user for c in test}}
    for a, b in (("train", "valid"), ("train", "test"), ("valid", "test")):
        both = sorted(parts[a] & parts[b])
        if both:
            logger.warning(
                "predefined split %s: %d users appear in both %s and %s (kept as given), e.g. %s",
                path, len(both), a, b, _name_some(both),
            )  # fmt: skip
    split = Split(protocol, train, valid, test, f"predefined:{path.resolve()}")
    _log_split(split)
    return split


def split_items(split: Split) -> list[str]:
    """Every distinct item id the split mentions, in order of first mention."""
    seen: dict[str, None] = {}
    for seq in split.train.values():
        seen.update(dict.fromkeys(seq))
    for case in (*split.valid, *split.test):
        seen.update(dict.fromkeys(case.history))
        seen[case.target] = None
    return list(seen)


def check_split_items(split: Split, known_items: set[str]) -> None:
    """Raise ValueError if the split mentions items outside `known_items` (e.g. another dataset's split)."""
    unknown = [i for i in split_items(split) if i not in known_items]
    if unknown:
        raise ValueError(
            f"split {split.source} mentions {len(unknown)} items not in the dataset: {_name_some(unknown)}"
        )


def without_items(split: Split, items: Set[str]) -> Split:
    """The split as if `items` did not exist: dropped from training sequences and histories; evaluation
    cases whose target is one of them are dropped, and so are cases left with an empty history."""

    def keep(cases: list[EvalCase]) -> list[EvalCase]:
        out = []
        for c in cases:
            history = tuple(i for i in c.history if i not in items)
            if c.target not in items and history:
                out.append(EvalCase(c.user, history, c.target))
        return out

    train = {u: [i for i in seq if i not in items] for u, seq in split.train.items()}
    return Split(
        split.protocol, {u: seq for u, seq in train.items() if seq}, keep(split.valid), keep(split.test),
        f"{split.source} without {len(items)} items",
    )


def split_for(ds: Dataset, protocol: str, seed: int, split_dir: Path | None = None) -> Split:
    """The split for `protocol`: read from `split_dir` if given (checked against `ds`), else generated."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {', '.join(PROTOCOLS)}")
    if split_dir is not None:
        split = load_predefined_split(split_dir, protocol)
        check_split_items(split, set(ds.items))
        return split
    if protocol == "loo":
        return split_loo(ds)
    elif protocol == "cold-users":
        return split_cold_users(ds, seed)
    else:
        raise AssertionError(f"protocol {protocol!r} is listed in PROTOCOLS but not dispatched")
