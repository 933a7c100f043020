"""Loaders from real dataset formats to one canonical in-memory dataset.

Every loader ends in the same place: an `Interactions` table (user, item, timestamp, in file order) plus an
insertion-ordered item catalogue `items` (item id -> text record). Nothing is dropped silently: every
skipped row or item is counted in `Dataset.skipped` and logged at WARNING.
"""

from __future__ import annotations

import ast
import csv
import gzip
import json
import logging
import re
import shutil
import tempfile
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx
import numpy as np

logger = logging.getLogger(__name__)

MissingTextPolicy = Literal["error", "skip"]
DatasetFormat = Literal["auto", "canonical", "movielens", "amazon"]

INTERACTION_COLUMNS: tuple[str, ...] = ("user_id", "item_id", "timestamp")
ML100K_URL = "https://files.grouplens.org/datasets/movielens/ml-100k.zip"
# Order of the 19 genre flags in u.item, used when u.genre is absent (from the ML-100k README).
ML100K_GENRES: tuple[str, ...] = (
    "unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
    "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western",
)  # fmt: skip
_YEAR_RE = re.compile(r"\((\d{4})\)\s*$")
_MAX_NAMED = 5  # ids quoted in an error message; the count says how many more there are


@dataclass(frozen=True)
class Interactions:
    user: np.ndarray  # (n,) object, str user ids
    item: np.ndarray  # (n,) object, str item ids
    timestamp: np.ndarray  # (n,) int64

    def __post_init__(self) -> None:
        n = len(self.user)
        if len(self.item) != n or len(self.timestamp) != n:
            raise ValueError(
                f"Interactions columns differ in length: user={n}, item={len(self.item)}, "
                f"timestamp={len(self.timestamp)}"
            )
        if self.timestamp.dtype != np.int64:
            raise ValueError(f"Interactions.timestamp must be int64, got {self.timestamp.dtype}")

    def __len__(self) -> int:
        return len(self.user)

    def subset(self, mask_or_index: np.ndarray) -> Interactions:
        """Rows selected by a boolean mask or an index array, order kept."""
        return Interactions(self.user[mask_or_index], self.item[mask_or_index], self.timestamp[mask_or_index])


@dataclass(frozen=True)
class Dataset:
    name: str
    interactions: Interactions
    # item_id -> text record with at least "title"; insertion-ordered (file order)
    items: dict[str, dict[str, Any]]
    # reason -> count of rows (or items, for "item_without_text") skipped while loading
    skipped: dict[str, int] = field(default_factory=dict)


class DownloadError(RuntimeError):
    """A dataset could not be fetched over the network."""


# ---------------------------------------------------------------------------------------------- helpers


def _make_interactions(users: list[str], items: list[str], timestamps: list[int]) -> Interactions:
    return Interactions(
        np.array(users, dtype=object), np.array(items, dtype=object), np.array(timestamps, dtype=np.int64)
    )


def encode(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(distinct values in first-appearance order, int64 code per row); faster than np.unique on str."""
    index: dict[Any, int] = {}
    codes = np.fromiter((index.setdefault(v, len(index)) for v in values), dtype=np.int64, count=len(values))
    return np.array(list(index), dtype=object), codes


def _name_some(ids: list[str]) -> str:
    shown = ", ".join(repr(i) for i in ids[:_MAX_NAMED])
    return f"{shown} (+{len(ids) - _MAX_NAMED} more)" if len(ids) > _MAX_NAMED else shown


def _skip(skipped: dict[str, int], reason: str, count: int, detail: str) -> None:
    if count <= 0:
        return
    skipped[reason] = skipped.get(reason, 0) + count
    logger.warning("skipped %d %s: %s", count, reason.replace("_", " "), detail)


def _open_text(path: Path, encoding: str = "utf-8") -> Any:
    """Open plain or gzip text by content, not by suffix (downloads are often renamed)."""
    with path.open("rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return gzip.open(path, "rt", encoding=encoding, newline="")
    return path.open(encoding=encoding, newline="")


def has_text(record: dict[str, Any]) -> bool:
    """True if any field holds a non-empty string or a list with one (numbers and flags are not text)."""
    for key, value in record.items():
        if key == "item_id":
            continue
        if isinstance(value, str) and value.strip():
            return True
        if isinstance(value, list) and any(isinstance(v, str) and v.strip() for v in value):
            return True
    return False


def _is_int(text: str) -> bool:
    try:
        int(text)
    except ValueError:
        return False
    return True


def read_interactions_csv(path: Path, *, strict: bool = True, skipped: dict[str, int] | None = None) -> Interactions:
    """Read a `user_id,item_id,timestamp` CSV (any column order) in file order.

    Malformed rows raise ValueError with file:line, or are counted in `skipped` when `strict=False`.
    """
    if not path.is_file():
        raise FileNotFoundError(f"interactions file not found: {path}")
    users: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    bad: list[str] = []
    with _open_text(path) as fh:
        reader = csv.reader(fh)
        header = next(reader, None)
        if header is None:
            raise ValueError(f"{path}: empty file, expected header {','.join(INTERACTION_COLUMNS)}")
        header = [h.strip() for h in header]
        missing = [c for c in INTERACTION_COLUMNS if c not in header]
        unknown = [c for c in header if c not in INTERACTION_COLUMNS]
        if missing or unknown or len(set(header)) != len(header):
            raise ValueError(
                f"{path}: header {header} must be exactly the columns {list(INTERACTION_COLUMNS)}"
                + (f"; missing {missing}" if missing else "")
                + (f"; unknown columns {unknown}" if unknown else "")
            )
        iu, ii, it = (header.index(c) for c in INTERACTION_COLUMNS)
        width = len(header)
        for row in reader:
            if not row:  # blank line, e.g. a trailing newline
                continue
            problem = None
            if len(row) != width:
                problem = f"expected {width} fields, got {len(row)}"
            elif not row[iu].strip() or not row[ii].strip():
                problem = "empty user_id or item_id"
            elif not _is_int(row[it]):
                problem = f"timestamp {row[it]!r} is not an integer"
            if problem is not None:
                where = f"{path}:{reader.line_num}: {problem}: {row}"
                if strict:
                    raise ValueError(where + " (pass strict=False to skip malformed rows)")
                bad.append(where)
                continue
            users.append(row[iu])
            items.append(row[ii])
            stamps.append(int(row[it]))
    if bad:
        if skipped is None:
            skipped = {}
        _skip(skipped, "malformed_row", len(bad), "; ".join(bad[:_MAX_NAMED]))
    return _make_interactions(users, items, stamps)


def _drop_duplicates(inter: Interactions, skipped: dict[str, int]) -> Interactions:
    """Drop exact (user, item, timestamp) repeats, keeping the first occurrence in file order."""
    n = len(inter)
    if n < 2:
        return inter
    _, u = encode(inter.user)
    _, i = encode(inter.item)
    order = np.lexsort((inter.timestamp, i, u))  # stable: among equal keys file order is kept
    us, is_, ts = u[order], i[order], inter.timestamp[order]
    same = (us[1:] == us[:-1]) & (is_[1:] == is_[:-1]) & (ts[1:] == ts[:-1])
    if not same.any():
        return inter
    keep = np.ones(n, dtype=bool)
    keep[order[1:][same]] = False
    dup = np.flatnonzero(~keep)
    examples = [f"({inter.user[j]}, {inter.item[j]}, {inter.timestamp[j]})" for j in dup[:_MAX_NAMED]]
    _skip(skipped, "duplicate_interaction", len(dup), "exact repeats dropped, e.g. " + ", ".join(examples))
    return inter.subset(keep)


def _finish(
    name: str,
    inter: Interactions,
    items: dict[str, dict[str, Any]],
    missing_text: MissingTextPolicy,
    skipped: dict[str, int],
) -> Dataset:
    """Shared tail of every loader: duplicates, the missing-text policy, and the final Dataset."""
    if missing_text not in ("error", "skip"):
        raise ValueError(f"missing_text must be 'error' or 'skip', got {missing_text!r}")
    inter = _drop_duplicates(inter, skipped)

    textless = [iid for iid, rec in items.items() if not has_text(rec)]
    if textless:
        if missing_text == "error":
            raise ValueError(
                f"{len(textless)} items have no text (empty title and no other text field): "
                f"{_name_some(textless)}; pass missing_text='skip' to drop them and their interactions"
            )
        _skip(skipped, "item_without_text", len(textless), _name_some(textless))
        dropped = set(textless)
        items = {iid: rec for iid, rec in items.items() if iid not in dropped}
        mask = np.fromiter((it not in dropped for it in inter.item), dtype=bool, count=len(inter))
        _skip(skipped, "interaction_of_item_without_text", int((~mask).sum()), "their items were dropped")
        inter = inter.subset(mask)

    known = np.fromiter((it in items for it in inter.item), dtype=bool, count=len(inter))
    if not known.all():
        unknown = list(dict.fromkeys(inter.item[~known].tolist()))
        if missing_text == "error":
            raise ValueError(
                f"{int((~known).sum())} interactions reference {len(unknown)} items missing from the item "
                f"catalogue: {_name_some(unknown)}; pass missing_text='skip' to drop them"
            )
        _skip(skipped, "interaction_of_unknown_item", int((~known).sum()), f"items {_name_some(unknown)}")
        inter = inter.subset(known)

    ds = Dataset(name=name, interactions=inter, items=items, skipped=dict(skipped))
    logger.info(
        "loaded %s: %d users, %d items, %d interactions",
        name,
        len(set(inter.user.tolist())),
        len(items),
        len(inter),
    )
    return ds


# ---------------------------------------------------------------------------------------------- canonical


def _read_items_jsonl(path: Path) -> dict[str, dict[str, Any]]:
    if not path.is_file():
        raise FileNotFoundError(f"item file not found: {path}")
    items: dict[str, dict[str, Any]] = {}
    with _open_text(path) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{lineno}: invalid JSON ({exc.msg}): {line.strip()[:200]}") from exc
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            iid = rec.pop("item_id", None)
            # JSON ints are accepted because ids in the CSV are read as text anyway
            if isinstance(iid, bool) or not isinstance(iid, str | int) or not str(iid).strip():
                raise ValueError(f"{path}:{lineno}: missing or invalid item_id {iid!r}")
            iid = str(iid)
            if not isinstance(rec.get("title"), str):
                raise ValueError(f"{path}:{lineno}: item {iid!r} needs a string 'title', got {rec.get('title')!r}")
            if iid in items:
                raise ValueError(f"{path}:{lineno}: duplicate item_id {iid!r}")
            items[iid] = rec
    return items


def load_canonical(path: Path, *, strict: bool = True, missing_text: MissingTextPolicy = "error") -> Dataset:
    """Load `path/interactions.csv` + `path/items.jsonl` (the project's canonical format)."""
    path = Path(path)
    skipped: dict[str, int] = {}
    inter = read_interactions_csv(path / "interactions.csv", strict=strict, skipped=skipped)
    items = _read_items_jsonl(path / "items.jsonl")
    return _finish(path.resolve().name, inter, items, missing_text, skipped)


# ---------------------------------------------------------------------------------------------- MovieLens


def _find_file(path: Path, name: str) -> Path | None:
    for folder in (path, path / "raw"):
        if (folder / name).is_file():
            return folder / name
    return None


def _movie_record(title: str, genres: list[str]) -> dict[str, Any]:
    rec: dict[str, Any] = {"title": title.strip()}
    # ML-100k item 267 is literally titled "unknown": a placeholder, not a title worth embedding
    if rec["title"].lower() == "unknown":
        rec["title"] = ""
        rec["title_missing"] = True
    if m := _YEAR_RE.search(rec["title"]):
        rec["year"] = int(m.group(1))
    rec["genres"] = genres
    return rec


def _read_movie_file(
    path: Path, sep: str, width: int, strict: bool, skipped: dict[str, int]
) -> Iterator[tuple[int, list[str]]]:
    """Yield (line number, fields) of a latin-1 MovieLens item file; wrong widths raise or are skipped."""
    bad: list[str] = []
    with path.open(encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            parts = line.split(sep)
            if len(parts) != width or not parts[0].strip():
                where = f"{path}:{lineno}: expected {width} {sep!r}-separated fields, got {len(parts)}: {line!r}"
                if strict:
                    raise ValueError(where + " (pass strict=False to skip malformed rows)")
                bad.append(where)
                continue
            yield lineno, parts
    _skip(skipped, "malformed_item_row", len(bad), "; ".join(bad[:_MAX_NAMED]))


def _read_ml_ratings(
    path: Path, sep: str, strict: bool, skipped: dict[str, int]
) -> tuple[list[str], list[str], list[int]]:
    users: list[str] = []
    items: list[str] = []
    stamps: list[int] = []
    bad: list[str] = []
    with path.open(encoding="latin-1") as fh:
        for lineno, line in enumerate(fh, start=1):
            line = line.strip()
            if not line:
                continue
            parts = line.split(sep)
            ok = len(parts) == 4 and parts[0].strip() and parts[1].strip() and _is_int(parts[3])
            if not ok:
                where = f"{path}:{lineno}: expected 'user{sep}item{sep}rating{sep}timestamp': {line!r}"
                if strict:
                    raise ValueError(where + " (pass strict=False to skip malformed rows)")
                bad.append(where)
                continue
            users.append(parts[0].strip())
            items.append(parts[1].strip())
            stamps.append(int(parts[3]))
    _skip(skipped, "malformed_row", len(bad), "; ".join(bad[:_MAX_NAMED]))
    return users, items, stamps


def load_movielens(path: Path, *, strict: bool = True, missing_text: MissingTextPolicy = "error") -> Dataset:
    """Load raw ML-100k (`u.data`, `u.item`) or ML-1M (`ratings.dat`, `movies.dat`), in `path` or `raw/`."""
    path = Path(path)
    skipped: dict[str, int] = {}
    u_data, ratings = _find_file(path, "u.data"), _find_file(path, "ratings.dat")
    items: dict[str, dict[str, Any]] = {}
    if u_data is not None:
        u_item = _find_file(path, "u.item")
        if u_item is None:
            raise FileNotFoundError(f"ML-100k: found {u_data} but no u.item beside it (needed for titles)")
        u_genre = _find_file(path, "u.genre")
        genres = list(ML100K_GENRES)
        if u_genre is not None:
            # lines are "name|index"; index order defines the flag order in u.item
            pairs = [ln.rsplit("|", 1) for ln in u_genre.read_text(encoding="latin-1").splitlines() if ln.strip()]
            genres = [name for name, _ in sorted(pairs, key=lambda p: int(p[1]))]
        for lineno, parts in _read_movie_file(u_item, "|", 5 + len(genres), strict, skipped):
            flags = parts[5 : 5 + len(genres)]
            if parts[0] in items:
                raise ValueError(f"{u_item}:{lineno}: duplicate movie id {parts[0]!r}")
            items[parts[0]] = _movie_record(parts[1], [g for g, f in zip(genres, flags, strict=True) if f == "1"])
        users, its, stamps = _read_ml_ratings(u_data, "\t", strict, skipped)
        name = "ml-100k"
    elif ratings is not None:
        movies = _find_file(path, "movies.dat")
        if movies is None:
            raise FileNotFoundError(f"ML-1M: found {ratings} but no movies.dat beside it (needed for titles)")
        for lineno, parts in _read_movie_file(movies, "::", 3, strict, skipped):
            if parts[0] in items:
                raise ValueError(f"{movies}:{lineno}: duplicate movie id {parts[0]!r}")
            items[parts[0]] = _movie_record(parts[1], [g for g in parts[2].split("|") if g])
        users, its, stamps = _read_ml_ratings(ratings, "::", strict, skipped)
        name = "ml-1m"
    else:
        hint = ""
        if _find_file(path, "movies.dat") is not None:
            hint = (
                " (movies.dat is there but ratings.dat is missing: the raw ML-1M ratings are not in this"
                " copy; load the folder's canonical interactions.csv instead)"
            )
        elif _find_file(path, "u.item") is not None:
            hint = " (u.item is there but u.data is missing)"
        raise FileNotFoundError(
            f"no MovieLens ratings file in {path} or {path / 'raw'}: looked for u.data (ML-100k) and "
            f"ratings.dat (ML-1M){hint}"
        )
    return _finish(name, _make_interactions(users, its, stamps), items, missing_text, skipped)


# ---------------------------------------------------------------------------------------------- Amazon


def _parse_record(line: str) -> Any:
    """JSON, or a Python literal (the 2014 metadata dumps); `ast.literal_eval` never executes code."""
    try:
        return json.loads(line)
    except json.JSONDecodeError:
        return ast.literal_eval(line)


def _join_text(value: Any) -> str:
    if isinstance(value, str):
        return value.strip()
    if isinstance(value, list):
        return " ".join(v.strip() for v in value if isinstance(v, str) and v.strip())
    return ""


def _flatten_categories(value: Any) -> list[str]:
    # 2014: [["Toys & Games", "Puzzles"], ...]; 2018: ["Toys & Games", "Puzzles"]
    flat: list[str] = []
    stack = [value]
    while stack:
        v = stack.pop(0)
        if isinstance(v, list):
            stack[0:0] = v
        elif isinstance(v, str) and v.strip():
            flat.append(v.strip())
    return list(dict.fromkeys(flat))


def _amazon_item(rec: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"title": _join_text(rec.get("title", ""))}
    cats = _flatten_categories(rec.get("categories", rec.get("category", [])))
    if cats:
        out["categories"] = cats
    for key in ("brand", "description"):
        text = _join_text(rec.get(key, ""))
        if text:
            out[key] = text
    return out


def load_amazon(
    reviews: Path, meta: Path, *, strict: bool = True, missing_text: MissingTextPolicy = "error"
) -> Dataset:
    """Load Amazon reviews + metadata JSON lines (2014 or 2018 field names; `.gz` or plain)."""
    reviews, meta = Path(reviews), Path(meta)
    for p in (reviews, meta):
        if not p.is_file():
            raise FileNotFoundError(f"Amazon file not found: {p}")
    skipped: dict[str, int] = {}
    users: list[str] = []
    its: list[str] = []
    stamps: list[int] = []
    bad: list[str] = []
    with _open_text(reviews) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            problem = None
            try:
                rec = _parse_record(line)
            except (ValueError, SyntaxError) as exc:
                rec, problem = None, f"unparseable record ({exc.__class__.__name__})"
            if problem is None:
                if not isinstance(rec, dict):
                    problem = "not an object"
                elif not all(isinstance(rec.get(k), str) and rec[k] for k in ("reviewerID", "asin")):
                    problem = "missing reviewerID or asin"
                elif not _is_int(str(rec.get("unixReviewTime"))) or isinstance(rec.get("unixReviewTime"), bool):
                    problem = f"unixReviewTime {rec.get('unixReviewTime')!r} is not an integer"
            if problem is not None:
                where = f"{reviews}:{lineno}: {problem}: {line.strip()[:200]}"
                if strict:
                    raise ValueError(where + " (pass strict=False to skip malformed rows)")
                bad.append(where)
                continue
            users.append(rec["reviewerID"])
            its.append(rec["asin"])
            stamps.append(int(rec["unixReviewTime"]))
    _skip(skipped, "malformed_row", len(bad), "; ".join(bad[:_MAX_NAMED]))

    # Metadata dumps cover a whole category (far more items than 5-core reviews): keep reviewed items only.
    wanted = set(its)
    items: dict[str, dict[str, Any]] = {}
    duplicates: list[str] = []
    n_other = 0
    with _open_text(meta) as fh:
        for lineno, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                rec = _parse_record(line)
            except (ValueError, SyntaxError) as exc:
                raise ValueError(f"{meta}:{lineno}: neither JSON nor a Python literal: {line.strip()[:200]}") from exc
            if not isinstance(rec, dict) or not isinstance(rec.get("asin"), str) or not rec["asin"]:
                raise ValueError(f"{meta}:{lineno}: expected an object with a string 'asin': {line.strip()[:200]}")
            asin = rec["asin"]
            if asin not in wanted:
                n_other += 1
            elif asin in items:
                # the 2018 dumps repeat some products; the first record wins, and the repeat is reported
                duplicates.append(asin)
            else:
                items[asin] = _amazon_item(rec)
    _skip(skipped, "duplicate_meta_record", len(duplicates), f"first record kept for {_name_some(duplicates)}")
    if n_other:
        logger.info("ignored %d metadata records of items without reviews", n_other)
    name = re.sub(r"(\.json)?(\.gz)?$", "", reviews.name)
    return _finish(name, _make_interactions(users, its, stamps), items, missing_text, skipped)


# ---------------------------------------------------------------------------------------------- dispatch


def _amazon_candidates(path: Path) -> tuple[list[Path], list[Path]]:
    files = sorted(
        p for p in path.iterdir() if p.is_file() and (p.name.endswith(".json") or p.name.endswith(".json.gz"))
    )
    meta = [p for p in files if "meta" in p.name.lower()]
    reviews = [p for p in files if "meta" not in p.name.lower()]
    return reviews, meta


def load_dataset(path: Path, fmt: DatasetFormat = "auto", **kw: Any) -> Dataset:
    """Load a dataset folder; `fmt="auto"` picks canonical, MovieLens or Amazon by the files present."""
    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {path}")
    if fmt == "auto":
        ml_names = ("u.data", "ratings.dat", "u.item", "movies.dat")
        reviews, meta = _amazon_candidates(path)
        if (path / "interactions.csv").is_file():
            fmt = "canonical"
        elif any(_find_file(path, n) for n in ml_names):
            fmt = "movielens"  # load_movielens names what is missing when only the movie file is there
        elif len(reviews) == 1 and len(meta) == 1:
            fmt = "amazon"
        else:
            raise ValueError(
                f"cannot tell the format of {path}: looked for interactions.csv (canonical), "
                f"{' / '.join(ml_names)} in the folder or raw/ (MovieLens), and exactly one reviews "
                f"*.json[.gz] plus one *meta*.json[.gz] (Amazon; found reviews={[p.name for p in reviews]}, "
                f"meta={[p.name for p in meta]})"
            )
        logger.info("detected %s format in %s", fmt, path)
    if fmt == "canonical":
        return load_canonical(path, **kw)
    elif fmt == "movielens":
        return load_movielens(path, **kw)
    elif fmt == "amazon":
        reviews, meta = _amazon_candidates(path)
        if len(reviews) != 1 or len(meta) != 1:
            raise ValueError(
                f"{path}: need exactly one reviews and one meta *.json[.gz] file, found reviews="
                f"{[p.name for p in reviews]}, meta={[p.name for p in meta]}"
            )
        return load_amazon(reviews[0], meta[0], **kw)
    else:
        raise ValueError(f"unknown dataset format {fmt!r}; expected one of auto, canonical, movielens, amazon")


# ---------------------------------------------------------------------------------------------- transforms


def k_core(ds: Dataset, k: int) -> Dataset:
    """Repeatedly drop users and items with fewer than `k` interactions until none is left to drop."""
    if k <= 1 or len(ds.interactions) == 0:
        return ds
    inter = ds.interactions
    users, u = encode(inter.user)
    items, i = encode(inter.item)
    keep = np.ones(len(inter), dtype=bool)
    rounds = 0
    while True:
        rounds += 1
        u_count = np.bincount(u[keep], minlength=len(users))
        i_count = np.bincount(i[keep], minlength=len(items))
        new_keep = keep & (u_count[u] >= k) & (i_count[i] >= k)
        if new_keep.sum() == keep.sum():
            break
        keep = new_keep
    out = inter.subset(keep)
    n_users = int((np.bincount(u[keep], minlength=len(users)) > 0).sum())
    item_alive = np.bincount(i[keep], minlength=len(items)) > 0
    n_items = int(item_alive.sum())
    logger.info(
        "%d-core after %d rounds: removed %d users, %d items, %d interactions (left %d / %d / %d)",
        k, rounds, len(users) - n_users, len(items) - n_items, len(inter) - len(out),
        n_users, n_items, len(out),
    )  # fmt: skip
    # An item with no interactions left has fewer than k, so it leaves the catalogue too (order kept).
    survivors = set(items[item_alive].tolist())
    kept_items = {iid: rec for iid, rec in ds.items.items() if iid in survivors}
    return Dataset(name=ds.name, interactions=out, items=kept_items, skipped=dict(ds.skipped))


def user_sequences(inter: Interactions) -> dict[str, list[str]]:
    """Chronological item list per user; ties keep file order; users in order of first appearance."""
    if len(inter) == 0:
        return {}
    users, user_rank = encode(inter.user)  # codes are ranks of first appearance
    order = np.lexsort((inter.timestamp, user_rank))  # lexsort is stable, so equal timestamps keep file order
    bounds = np.concatenate([[0], np.cumsum(np.bincount(user_rank, minlength=len(users)))])
    items_sorted = inter.item[order].tolist()
    return {name: items_sorted[bounds[r] : bounds[r + 1]] for r, name in enumerate(users.tolist())}


# ---------------------------------------------------------------------------------------------- download


def download_movielens_100k(dest: Path, *, url: str = ML100K_URL, timeout: float = 30.0) -> Path:
    """Download and extract ML-100k into `dest`; returns the extracted `ml-100k` folder."""
    dest = Path(dest)
    target = dest / "ml-100k"
    if (target / "u.data").is_file() and (target / "u.item").is_file():
        logger.info("ML-100k already present at %s", target)
        return target
    offline = (
        "could not download MovieLens-100k from {url} ({why}); you seem to be offline: pass a local copy "
        "with --data PATH (e.g. an extracted ml-100k folder)"
    )
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=True)
        response.raise_for_status()
    except httpx.HTTPStatusError as exc:
        raise DownloadError(offline.format(url=url, why=f"HTTP {exc.response.status_code}")) from exc
    except httpx.HTTPError as exc:
        why = " ".join(f"{type(exc).__name__}: {exc}".split())  # keep the message on one line
        raise DownloadError(offline.format(url=url, why=why)) from exc
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        archive = Path(tmp) / "ml-100k.zip"
        archive.write_bytes(response.content)
        try:
            with zipfile.ZipFile(archive) as zf:
                root = Path(tmp).resolve() / "x"
                for member in zf.namelist():
                    # refuse entries that would land outside the extraction folder ("zip slip")
                    if not (root / member).resolve().is_relative_to(root):
                        raise DownloadError(f"refusing archive member outside the target folder: {member!r}")
                zf.extractall(root)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"downloaded file from {url} is not a zip archive: {exc}") from exc
        found = [p.parent for p in root.rglob("u.data")]
        if len(found) != 1:
            raise DownloadError(f"archive from {url} should hold one u.data, found {len(found)}")
        if target.exists():
            shutil.rmtree(target)
        shutil.move(str(found[0]), target)
    logger.info("downloaded ML-100k to %s", target)
    return target
