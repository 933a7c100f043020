"""Loaders to the canonical dataset: formats, malformed input, missing-text policy, k-core, sequences."""

from __future__ import annotations

import gzip
import io
import json
import logging
import zipfile
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest

from training.data import (
    Dataset,
    DownloadError,
    Interactions,
    download_movielens_100k,
    k_core,
    load_amazon,
    load_canonical,
    load_dataset,
    load_movielens,
    user_sequences,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def shared(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_dir():
        pytest.skip(f"shared data folder {path} is absent")
    return path


def write_canonical(folder: Path, csv_text: str, items: list[dict[str, Any]] | str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "interactions.csv").write_text(csv_text, encoding="utf-8")
    text = items if isinstance(items, str) else "".join(json.dumps(r) + "\n" for r in items)
    (folder / "items.jsonl").write_text(text, encoding="utf-8")
    return folder


ITEMS: list[dict[str, Any]] = [
    {"item_id": "a", "title": "Apple"},
    {"item_id": "b", "title": "", "categories": ["Fruit"]},  # empty title but other text: has text
    {"item_id": "c", "title": "Cherry", "year": 1999},
]


def make_ds(rows: list[tuple[str, str, int]], items: list[str] | None = None) -> Dataset:
    users, its, ts = zip(*rows, strict=True)
    inter = Interactions(np.array(users, dtype=object), np.array(its, dtype=object), np.array(ts, dtype=np.int64))
    catalogue = {i: {"title": i.upper()} for i in (items or list(dict.fromkeys(its)))}
    return Dataset("toy", inter, catalogue, {})


# ------------------------------------------------------------------------------------------ canonical


def test_canonical_loads_in_file_order_with_item_records(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path / "toy", "user_id,item_id,timestamp\nu1,a,5\nu1,b,3\nu2,c,1\n", ITEMS)
    ds = load_canonical(folder)
    assert ds.name == "toy"
    assert ds.interactions.user.tolist() == ["u1", "u1", "u2"]
    assert ds.interactions.item.tolist() == ["a", "b", "c"]
    assert ds.interactions.timestamp.dtype == np.int64
    assert ds.interactions.timestamp.tolist() == [5, 3, 1]
    assert list(ds.items) == ["a", "b", "c"]
    assert ds.items["c"] == {"title": "Cherry", "year": 1999}
    assert ds.skipped == {}


def test_canonical_accepts_any_column_order(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path, "timestamp,item_id,user_id\n7,a,u1\n", ITEMS)
    ds = load_canonical(folder)
    assert (ds.interactions.user[0], ds.interactions.item[0], ds.interactions.timestamp[0]) == ("u1", "a", 7)


def test_canonical_unknown_column_is_named(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp,rating\nu1,a,1,5\n", ITEMS)
    with pytest.raises(ValueError, match=r"unknown columns \['rating'\]"):
        load_canonical(folder)


def test_canonical_missing_column_is_named(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id\nu1,a\n", ITEMS)
    with pytest.raises(ValueError, match=r"missing \['timestamp'\]"):
        load_canonical(folder)


@pytest.mark.parametrize(
    ("bad_row", "why"),
    [
        ("u1,a", "expected 3 fields, got 2"),
        ("u1,a,soon", "timestamp 'soon' is not an integer"),
        (",a,3", "empty user_id"),
    ],
)
def test_canonical_malformed_row_strict_names_file_line_and_row(tmp_path: Path, bad_row: str, why: str) -> None:
    folder = write_canonical(tmp_path, f"user_id,item_id,timestamp\nu1,b,1\n{bad_row}\n", ITEMS)
    with pytest.raises(ValueError, match=rf"interactions\.csv:3: {why}.*strict=False"):
        load_canonical(folder)


def test_canonical_malformed_rows_skipped_when_not_strict(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\nu1,b\nu2,c,x\nu2,c,2\n", ITEMS)
    with caplog.at_level(logging.WARNING):
        ds = load_canonical(folder, strict=False)
    assert ds.skipped == {"malformed_row": 2}
    assert ds.interactions.item.tolist() == ["a", "c"]
    assert "skipped 2 malformed row" in caplog.text


def test_items_bad_json_names_line(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\n", '{"item_id": "a", "title": "A"}\n{oops\n')
    with pytest.raises(ValueError, match=r"items\.jsonl:2: invalid JSON"):
        load_canonical(folder)


def test_items_duplicate_id_is_named(tmp_path: Path) -> None:
    items = [{"item_id": "a", "title": "A"}, {"item_id": "a", "title": "A again"}]
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\n", items)
    with pytest.raises(ValueError, match=r"items\.jsonl:2: duplicate item_id 'a'"):
        load_canonical(folder)


def test_items_need_a_title(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\n", [{"item_id": "a", "name": "A"}])
    with pytest.raises(ValueError, match=r"items\.jsonl:1: item 'a' needs a string 'title'"):
        load_canonical(folder)


def test_interaction_with_unknown_item_error_policy(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\nu1,zz,2\nu2,zz,3\n", ITEMS)
    with pytest.raises(ValueError, match=r"2 interactions reference 1 items missing .*'zz'"):
        load_canonical(folder)


def test_interaction_with_unknown_item_skip_policy(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\nu1,zz,2\nu2,zz,3\n", ITEMS)
    with caplog.at_level(logging.WARNING):
        ds = load_canonical(folder, missing_text="skip")
    assert ds.interactions.item.tolist() == ["a"]
    assert ds.skipped == {"interaction_of_unknown_item": 2}
    assert "'zz'" in caplog.text


def test_error_names_at_most_five_missing_ids(tmp_path: Path) -> None:
    rows = "".join(f"u1,m{i},{i}\n" for i in range(8))
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\n" + rows, ITEMS)
    with pytest.raises(ValueError, match=r"8 items missing .*'m4' \(\+3 more\)") as err:
        load_canonical(folder)
    assert "'m5'" not in str(err.value)


TEXTLESS: list[dict[str, Any]] = [
    *ITEMS,
    {"item_id": "d", "title": "", "title_missing": True, "year": 2001, "genres": []},
]


def test_item_without_text_error_policy(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\nu1,d,2\n", TEXTLESS)
    with pytest.raises(ValueError, match=r"1 items have no text .*'d'"):
        load_canonical(folder)


def test_item_without_text_skip_policy(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\nu1,d,2\nu2,d,3\n", TEXTLESS)
    ds = load_canonical(folder, missing_text="skip")
    assert "d" not in ds.items and "b" in ds.items  # b has an empty title but categories
    assert ds.interactions.item.tolist() == ["a"]
    assert ds.skipped == {"item_without_text": 1, "interaction_of_item_without_text": 2}


def test_exact_duplicates_are_counted_logged_and_dropped(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    text = "user_id,item_id,timestamp\nu1,a,1\nu1,a,1\nu1,a,2\nu2,a,1\nu1,a,1\n"
    folder = write_canonical(tmp_path, text, ITEMS)
    with caplog.at_level(logging.WARNING):
        ds = load_canonical(folder)
    assert ds.skipped == {"duplicate_interaction": 2}
    assert list(zip(ds.interactions.user, ds.interactions.timestamp, strict=True)) == [
        ("u1", 1),
        ("u1", 2),
        ("u2", 1),
    ]
    assert "duplicate interaction" in caplog.text


def test_invalid_policy_is_rejected(tmp_path: Path) -> None:
    folder = write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\n", ITEMS)
    with pytest.raises(ValueError, match="missing_text must be 'error' or 'skip', got 'ignore'"):
        load_canonical(folder, missing_text="ignore")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------ MovieLens


def write_ml100k(folder: Path, with_genre_file: bool) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "u.data").write_text("1\t10\t4\t100\n2\t20\t3\t50\n1\t20\t5\t90\n", encoding="utf-8")
    flags_10 = ["0"] * 19
    flags_10[1] = flags_10[5] = "1"  # Action, Comedy
    flags_20 = ["0"] * 19
    flags_20[0] = "1"
    lines = [
        "10|Misérables, Les (1995)|01-Jan-1995||http://x|" + "|".join(flags_10),
        "20|unknown||||" + "|".join(flags_20),
    ]
    (folder / "u.item").write_bytes(("\n".join(lines) + "\n").encode("latin-1"))
    if with_genre_file:
        names = ["unk", "Act", "Adv", "Ani", "Chi", "Com"] + [f"G{i}" for i in range(6, 19)]
        text = "".join(f"{n}|{i}\n" for i, n in enumerate(names)) + "\n"
        (folder / "u.genre").write_text(text, encoding="latin-1")
    return folder


@pytest.mark.parametrize("with_genre_file", [False, True])
def test_movielens_100k_from_raw_subfolder(tmp_path: Path, with_genre_file: bool) -> None:
    write_ml100k(tmp_path / "ml" / "raw", with_genre_file)
    ds = load_movielens(tmp_path / "ml")
    assert ds.name == "ml-100k"
    assert ds.interactions.user.tolist() == ["1", "2", "1"]
    assert ds.interactions.timestamp.tolist() == [100, 50, 90]
    genres = ["Act", "Com"] if with_genre_file else ["Action", "Comedy"]
    assert ds.items["10"] == {"title": "Misérables, Les (1995)", "year": 1995, "genres": genres}
    # the literal title "unknown" is a placeholder; the genre flag still gives the item some text
    assert ds.items["20"]["title"] == "" and ds.items["20"]["title_missing"] is True


def test_movielens_1m(tmp_path: Path) -> None:
    (tmp_path / "ratings.dat").write_text("1::1193::5::978300760\n1::661::3::978302109\n", encoding="latin-1")
    movies = "1193::One Flew Over the Cuckoo's Nest (1975)::Drama\n661::James and the Giant Peach (1996)::"
    movies += "Animation|Children's|Musical\n"
    (tmp_path / "movies.dat").write_bytes(movies.encode("latin-1"))
    ds = load_dataset(tmp_path)
    assert ds.name == "ml-1m"
    assert ds.items["661"] == {
        "title": "James and the Giant Peach (1996)",
        "year": 1996,
        "genres": ["Animation", "Children's", "Musical"],
    }
    assert user_sequences(ds.interactions) == {"1": ["1193", "661"]}


def test_movielens_1m_without_ratings_names_the_missing_file(tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "movies.dat").write_text("1::Toy Story (1995)::Animation\n", encoding="latin-1")
    with pytest.raises(FileNotFoundError, match=r"ratings\.dat is missing"):
        load_dataset(tmp_path)


def test_movielens_malformed_rating_line(tmp_path: Path) -> None:
    write_ml100k(tmp_path, with_genre_file=False)
    with (tmp_path / "u.data").open("a") as fh:
        fh.write("3\t10\tnot-a-line\n")
    with pytest.raises(ValueError, match=r"u\.data:4: expected"):
        load_movielens(tmp_path)
    assert load_movielens(tmp_path, strict=False).skipped == {"malformed_row": 1}


# ------------------------------------------------------------------------------------------ Amazon


def write_lines(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    path.write_bytes(gzip.compress(data) if path.name.endswith(".gz") else data)
    return path


REVIEWS = [
    json.dumps({"reviewerID": "U1", "asin": "A1", "unixReviewTime": 300, "overall": 5.0}),
    json.dumps({"reviewerID": "U1", "asin": "A2", "unixReviewTime": 100}),
    json.dumps({"reviewerID": "U2", "asin": "A1", "unixReviewTime": 200}),
]


def test_amazon_2018_json_gz(tmp_path: Path) -> None:
    reviews = write_lines(tmp_path / "Toys_5.json.gz", REVIEWS)
    meta = write_lines(
        tmp_path / "meta_Toys.json.gz",
        [
            json.dumps({"asin": "A1", "title": "Robot", "category": ["Toys", "Robots"], "brand": "Acme"}),
            json.dumps({"asin": "A2", "title": "Ball", "description": ["Round.", "Red."]}),
            json.dumps({"asin": "ZZ", "title": "never reviewed"}),
        ],
    )
    ds = load_amazon(reviews, meta)
    assert ds.name == "Toys_5"
    assert ds.items == {
        "A1": {"title": "Robot", "categories": ["Toys", "Robots"], "brand": "Acme"},
        "A2": {"title": "Ball", "description": "Round. Red."},
    }
    assert user_sequences(ds.interactions) == {"U1": ["A2", "A1"], "U2": ["A1"]}


def test_amazon_2014_literal_dict_meta(tmp_path: Path) -> None:
    reviews = write_lines(tmp_path / "reviews_Toys_5.json", REVIEWS)
    meta = write_lines(
        tmp_path / "meta_Toys.json",
        [
            # 2014 metadata is Python-literal (single quotes), categories a list of paths
            "{'asin': 'A1', 'title': 'Robot', 'categories': [['Toys', 'Robots'], ['Toys', 'Gifts']]}",
            "{'asin': 'A2', 'categories': [['Toys']], 'description': 'A ball'}",
        ],
    )
    ds = load_dataset(tmp_path, fmt="amazon")
    assert ds.items["A1"] == {"title": "Robot", "categories": ["Toys", "Robots", "Gifts"]}
    assert ds.items["A2"] == {"title": "", "categories": ["Toys"], "description": "A ball"}
    assert load_amazon(reviews, meta).items == ds.items


def test_amazon_meta_is_never_evaluated(tmp_path: Path) -> None:
    reviews = write_lines(tmp_path / "r.json", REVIEWS)
    meta = write_lines(tmp_path / "meta.json", ["__import__('os').getcwd()"])
    with pytest.raises(ValueError, match=r"meta\.json:1: neither JSON nor a Python literal"):
        load_amazon(reviews, meta)


def test_amazon_item_without_metadata_follows_policy(tmp_path: Path) -> None:
    reviews = write_lines(tmp_path / "r.json", REVIEWS)
    meta = write_lines(tmp_path / "meta.json", [json.dumps({"asin": "A1", "title": "Robot"})])
    with pytest.raises(ValueError, match=r"1 interactions reference 1 items missing .*'A2'"):
        load_amazon(reviews, meta)
    ds = load_amazon(reviews, meta, missing_text="skip")
    assert ds.interactions.item.tolist() == ["A1", "A1"]
    assert ds.skipped == {"interaction_of_unknown_item": 1}


def test_amazon_malformed_review(tmp_path: Path) -> None:
    reviews = write_lines(tmp_path / "r.json", [*REVIEWS, json.dumps({"reviewerID": "U3", "asin": "A1"})])
    meta = write_lines(tmp_path / "meta.json", [json.dumps({"asin": a, "title": a}) for a in ("A1", "A2")])
    with pytest.raises(ValueError, match=r"r\.json:4: unixReviewTime None is not an integer"):
        load_amazon(reviews, meta)
    assert load_amazon(reviews, meta, strict=False).skipped == {"malformed_row": 1}


# ------------------------------------------------------------------------------------------ dispatch


def test_load_dataset_auto_detects_canonical(tmp_path: Path) -> None:
    write_canonical(tmp_path, "user_id,item_id,timestamp\nu1,a,1\n", ITEMS)
    assert len(load_dataset(tmp_path).interactions) == 1


def test_load_dataset_auto_detects_amazon(tmp_path: Path) -> None:
    write_lines(tmp_path / "reviews.json.gz", REVIEWS)
    write_lines(tmp_path / "meta.json.gz", [json.dumps({"asin": a, "title": a}) for a in ("A1", "A2")])
    assert len(load_dataset(tmp_path).interactions) == 3


def test_load_dataset_auto_lists_what_it_looked_for(tmp_path: Path) -> None:
    write_lines(tmp_path / "a.json", REVIEWS)
    write_lines(tmp_path / "b.json", REVIEWS)
    with pytest.raises(ValueError, match=r"looked for interactions\.csv .*u\.data.*reviews=\['a\.json', 'b\.json'\]"):
        load_dataset(tmp_path)


# ------------------------------------------------------------------------------------------ transforms


def test_k_core_hand_checked() -> None:
    # users u1:3 u2:2 u3:2 u4:1 u5:2; items a:4 b:2 c:2 d:1 e:1
    rows = [
        ("u1", "a", 1), ("u1", "b", 2), ("u1", "c", 3),
        ("u2", "a", 1), ("u2", "b", 2),
        ("u3", "a", 1), ("u3", "c", 2),
        ("u4", "d", 1),
        ("u5", "e", 1), ("u5", "a", 2),
    ]  # fmt: skip
    ds = make_ds(rows)
    out = k_core(ds, 2)
    # round 1: drop u4-d (u4 has 1, d has 1) and u5-e (e has 1); round 2: u5 has 1 left -> drop u5-a; stable.
    assert sorted(zip(out.interactions.user, out.interactions.item, strict=True)) == [
        ("u1", "a"), ("u1", "b"), ("u1", "c"), ("u2", "a"), ("u2", "b"), ("u3", "a"), ("u3", "c"),
    ]  # fmt: skip
    assert list(out.items) == ["a", "b", "c"]
    # 3-core: round 1 keeps only u1-a (u1 is the only user with 3, a the only item); round 2 u1 has 1
    assert len(k_core(ds, 3).interactions) == 0


def test_k_core_one_is_identity() -> None:
    ds = make_ds([("u1", "a", 1)])
    assert k_core(ds, 1) is ds


def test_user_sequences_chronological_stable_first_appearance() -> None:
    inter = make_ds([("u2", "x", 5), ("u1", "a", 9), ("u2", "y", 1), ("u1", "b", 9), ("u1", "c", 2)]).interactions
    seqs = user_sequences(inter)
    assert list(seqs) == ["u2", "u1"]
    assert seqs == {"u2": ["y", "x"], "u1": ["c", "a", "b"]}  # a before b: same timestamp, file order


def test_interactions_reject_ragged_columns() -> None:
    with pytest.raises(ValueError, match="differ in length"):
        Interactions(np.array(["u"], dtype=object), np.array([], dtype=object), np.array([1], dtype=np.int64))


# ------------------------------------------------------------------------------------------ download


def test_download_offline_gives_one_line_hint(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match=r"seem to be offline.*--data PATH") as err:
        download_movielens_100k(tmp_path, url="http://127.0.0.1:9/ml-100k.zip", timeout=5)
    assert "\n" not in str(err.value)


def test_download_extracts_archive(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", "1\t1\t5\t1\n")
        zf.writestr("ml-100k/u.item", "1|Toy Story (1995)|||" + "|0" * 19 + "\n")

    def fake_get(url: str, **kw: object) -> httpx.Response:
        return httpx.Response(200, content=buf.getvalue(), request=httpx.Request("GET", url))

    monkeypatch.setattr(httpx, "get", fake_get)
    folder = download_movielens_100k(tmp_path)
    assert folder == tmp_path / "ml-100k"
    assert load_movielens(folder).items["1"]["title"] == "Toy Story (1995)"


# ------------------------------------------------------------------------------------------ real data


@pytest.mark.data
def test_real_ml100k_raw() -> None:
    ds = load_dataset(shared("ml-100k") / "raw")
    assert len(ds.interactions) == 100_000
    assert len(set(ds.interactions.user.tolist())) == 943
    assert len(ds.items) == 1682
    assert ds.items["1"] == {"title": "Toy Story (1995)", "year": 1995, "genres": ["Animation", "Children's", "Comedy"]}


@pytest.mark.data
def test_real_amazon_toys_canonical() -> None:
    ds = load_dataset(shared("amazon-toys"))
    assert len(ds.interactions) == 167_597
    assert len(set(ds.interactions.user.tolist())) == 19_412
    assert len(ds.items) == 11_924
    assert ds.skipped == {}


@pytest.mark.data
def test_real_ml1m_raw_has_no_ratings() -> None:
    with pytest.raises(FileNotFoundError, match=r"ratings\.dat"):
        load_movielens(shared("ml-1m"))
