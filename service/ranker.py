"""The ranker: a loaded artifact + a FAISS index over its item vectors + the cold items folded in. No HTTP.

Scores are exactly the offline ones (`training.evaluate.case_scores`): the user vector comes from the
same `encode_with_table` over the same left-padded, window-truncated history, and the index holds the
same `item_vectors()` rows (L2-normalised when the model was trained with cosine similarity).

Cold items (README "How it works"): text -> `item_text` -> the artifact's encoder -> `projection.apply`
-> language coordinates z (k,) -> the item embedding's own rule, `model.items.fold_in(z, cold_id)`: for
AlphaFuse the fused `x = z + [0_{d_s}, v0]`, v0 = the mean ID of the item's nearest trained items by
semantic-rich coordinates (`neighbour_ids`; the default), zeros or the mean trained ID; for the adapter baselines
the adapter of z (plus a zero or mean ID part where they have one); RLMRec models cannot fold in. The
raw x is appended to the input table (so a cold item can appear inside a history) and its normalised
form to the index. The in-memory state is a cache of an `ItemStore`: `sync(store)` folds in every row
with a sequence number above the last one seen, which is how all workers converge.

`device` (cpu, cuda, auto) is where the sequence encoder runs. The item table, FAISS (faiss-cpu) and fold-in
stay on the CPU; a GPU ranker keeps its own copy of the model and of the input table there, re-copied on
the first batch after rows change, and brings only the (B, D) user vectors back.

Not thread-safe: the service calls every method from one worker thread (see `service.batching`).
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import faiss
import numpy as np
import torch
from torch.nn import functional as F

from model.artifact import MODEL_FILE, PROJECTION_FILE, Artifact, load_artifact
from model.item_embeddings import COLD_ID_RULES, ColdId
from service.errors import (
    ExplainUnavailable,
    FoldInUnavailable,
    InvalidItem,
    InvalidRequest,
    ItemConflict,
    ItemNotFound,
    ServiceError,
    UnknownItems,
)
from service.settings import AUTO_HNSW_MIN_ITEMS
from service.store import ItemStore, StoredItem
from training.distributed import resolve_device
from training.encoders import TEXT_TEMPLATE_VERSION, TextEncoder, encoder_from_identity, item_text
from training.evaluate import pad_histories

log = logging.getLogger(__name__)

IndexKind = Literal["flat", "hnsw"]
IndexChoice = Literal["auto", "flat", "hnsw"]
EXACT_FETCH_MIN = 1024  # a query needing more index results than this (and > 1/4 of the items) is scanned


@dataclass(frozen=True)
class FoldedEntry:
    """A history entry given by its text: its fused vector under the model `version` that folded it in.
    A ranker of another version (a model swapped in meanwhile) folds `item` in again."""

    item: NewItem
    vector: np.ndarray  # (D,) float32
    version: str


@dataclass(frozen=True)
class Query:
    """One recommendation request, oldest first. A history entry is an item id (trained or cold), or an
    item described by its text and folded in for this query only (`FoldedEntry`; a bare (D,) vector is
    taken as it is): it is context, never stored, never recommended."""

    history: Sequence[str | FoldedEntry | np.ndarray]
    k: int = 10
    exclude_history: bool = True  # history items are not recommended back
    allow: Sequence[str] | None = None  # rank only these items (exact scores)
    deny: Sequence[str] | None = None  # never return these items
    ignore_unknown: bool = False  # skip unknown ids (reported in `Ranking.ignored`) instead of failing
    explain: bool = False  # split each score into its semantic and collaborative parts (`Ranking.parts`)


@dataclass(frozen=True)
class Ranking:
    items: list[tuple[str, float]]  # (item id, score), best first
    ignored: list[str] = field(default_factory=list)  # unknown ids skipped (ignore_unknown)
    truncated: bool = False  # the history was longer than the model's window: only the latest were used
    # explain: (semantic, collaborative) per item, semantic + collaborative == score exactly
    parts: list[tuple[float, float]] | None = None
    model: dict[str, str] = field(default_factory=dict)  # the model that ranked (`Ranker.model_dict`)


@dataclass(frozen=True)
class SearchHit:
    item_id: str
    score: float  # cosine of the query's and the item's language coordinates
    cold: bool


@dataclass(frozen=True)
class NewItem:
    item_id: str
    record: dict[str, Any]  # text fields (title, categories, brand, description ...)
    embedding: Sequence[float] | None = None  # raw encoder output (d_l,) used instead of encoding the text


@dataclass(frozen=True)
class FoldedItems:
    """New items with their fused input vectors, validated but not yet stored or served."""

    items: tuple[NewItem, ...]
    vectors: np.ndarray  # (n, D) float32
    version: str = ""  # the ranker version that computed `vectors` (commit refolds under another one)


@dataclass(frozen=True)
class AddedItem:
    item_id: str
    record: dict[str, Any]
    replaced: bool  # an existing cold item was replaced (upsert)
    seq: int


def choose_index(choice: IndexChoice, num_items: int, hnsw_min_items: int = AUTO_HNSW_MIN_ITEMS) -> IndexKind:
    """The index a catalogue of `num_items` is served from. `auto`: flat (exact, nothing to build at
    startup) below `hnsw_min_items`, where its O(N D) per query is still cheap; HNSW from there on, where
    its near-constant latency is worth approximate answers and a build at every start (the threshold and
    its measurements: `service.settings.AUTO_HNSW_MIN_ITEMS`)."""
    if choice == "auto":
        return "hnsw" if num_items >= hnsw_min_items else "flat"
    if choice == "flat" or choice == "hnsw":
        return choice
    raise ValueError(f"index must be 'auto', 'flat' or 'hnsw', got {choice!r}")


def artifact_version(artifact: Artifact, cold_id: ColdId) -> str:
    """`<model version>+<digest>`: the digest covers everything a cold item's vector depends on (model and
    projection files, language scale, encoder identity, text template, cold-ID rule), so stored vectors are never served
    by a model they were not computed for."""
    files = artifact.manifest.get("files", {})
    encoder = artifact.manifest.get("encoder") or {}
    payload = {
        "model": files.get(MODEL_FILE, {}).get("sha256"),
        "projection": files.get(PROJECTION_FILE, {}).get("sha256"),
        "encoder": encoder.get("identity"),
        "text_template_version": encoder.get("text_template_version"),
        "cold_id": cold_id,
    }
    scale = (artifact.manifest.get("projection") or {}).get("language_scale")
    if scale is not None:  # only in newer manifests; leaving it out keeps older artifacts' versions unchanged
        payload["language_scale"] = scale
    digest = hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]
    version = (artifact.manifest.get("model") or {}).get("version", "unversioned")
    return f"{version}+{digest}"


class Ranker:
    def __init__(
        self,
        artifact: Artifact,
        *,
        index: IndexChoice = "flat",
        auto_hnsw_min_items: int = AUTO_HNSW_MIN_ITEMS,
        hnsw_m: int = 32,
        hnsw_ef_construction: int = 200,
        hnsw_ef_search: int = 128,
        cold_id: ColdId = "neighbours",
        max_k: int = 1000,
        max_items_per_add: int = 256,
        encoder: TextEncoder | None = None,
        encoder_factory: Callable[[], TextEncoder] | None = None,
        device: str = "cpu",
        index_cache: Path | None = None,
    ) -> None:
        """`encoder` (or a lazy `encoder_factory`) encodes new items' text; without either, items need an
        `embedding`. Use `Ranker.load` to build one from an artifact directory with its own encoder.
        `index="auto"` picks by the trained catalogue's size (`choose_index`), once: cold items added
        later never switch it. `index_cache`: a directory where a built HNSW index over the trained items
        is kept and read back at the next start (see `_initial_index`)."""
        if cold_id not in COLD_ID_RULES:
            raise ValueError(f"cold_id must be one of {', '.join(COLD_ID_RULES)}, got {cold_id!r}")
        index_kind = choose_index(index, len(artifact.item_ids), auto_hnsw_min_items)
        self.device = resolve_device(device)  # before any work: `cuda` without a GPU fails at once
        self.artifact = artifact
        self.model = artifact.model.eval()
        self.cfg = artifact.config
        self.projection = artifact.projection
        self.cold_id: ColdId = cold_id
        self.max_k = max_k
        self.max_items_per_add = max_items_per_add
        self.version = artifact_version(artifact, cold_id)
        model_info = artifact.manifest.get("model") or {}
        self.model_name = str(model_info.get("name", "alphafuse"))
        self.model_version = str(model_info.get("version", "unversioned"))
        # what every response names: `artifact` tells two artifacts of the same version string apart
        self.model_dict = {"name": self.model_name, "version": self.model_version, "artifact": self.version}
        self._encoder = encoder
        self._encoder_factory = encoder_factory
        self._index_kind: IndexKind = index_kind
        self._hnsw = (hnsw_m, hnsw_ef_construction, hnsw_ef_search)

        with torch.no_grad():
            table = self.model.items().detach().to(torch.float32)  # (N + 1, D), row 0 = padding
            vectors = self.model.item_vectors().detach().to(torch.float32).numpy()  # (N, D)
        self.dim = int(table.shape[1])
        self.num_trained = int(table.shape[0] - 1)
        self._ids: list[str] = list(artifact.item_ids)  # row r (1-based) -> ids[r - 1]
        self._row: dict[str, int] = {iid: r + 1 for r, iid in enumerate(self._ids)}
        self._cold_records: dict[str, dict[str, Any]] = {}
        # growable buffers: appending a cold item is amortised O(D), not a copy of the table
        self._table_buf = table  # (capacity + 1, D) input table
        self._vec_buf = np.ascontiguousarray(vectors, dtype=np.float32)  # (capacity, D) indexed vectors
        self._label_row = np.arange(1, self.num_trained + 1, dtype=np.int64)  # FAISS label -> row, 0 = dead
        self._row_label = np.arange(self.num_trained + 1, dtype=np.int64) - 1  # row -> live label
        self._dead: list[int] = []  # FAISS labels no longer served (replaced or deleted cold items)
        # rows of deleted cold items: the input table keeps them (rows are positions, never reused) but
        # nothing maps an id to them and neither the index nor the exact path ranks them
        self._retired: set[int] = set()
        self._selector: Any = None  # keeps the faiss selector objects alive between searches
        self.last_seq = 0
        self._synced: tuple[ItemStore, object | None] | None = None  # (store, its change token) at the last sync
        self._fold_in_unavailable = self._fold_in_reason()
        self._split = self.model.items.split(cold_id)
        # v0 of each cold row (row r at r - num_trained - 1; NaN: not computed yet). Score explanations and text
        # search take it back off the row; computed on their first need (`_cold_ids`), not on the write path,
        # since the neighbours rule costs a search over the trained catalogue that fold-in already paid
        self._cold_v0 = np.zeros((0, 0 if self._split is None else self._split.ids.shape[1]), dtype=np.float32)
        self._language_norms: np.ndarray | None = None  # (N,) trained rows' |Z_i|, on the first search
        self._index = self._initial_index(self._vec_buf[: self.num_rows], index_cache)
        # a copy: fold-in and score explanations keep using the CPU model on CPU tensors
        self._device_model = None if self.device.type == "cpu" else copy.deepcopy(self.model).to(self.device)
        self._table_writes = 0  # bumped on every write to the input table; the device copy follows it
        self._device_table: tuple[int, torch.Tensor] | None = None

    # ------------------------------------------------------------------------------------------------
    # construction

    @classmethod
    def load(
        cls,
        path: Path,
        *,
        verify_checksums: bool = True,
        encoder_preload: bool = True,
        encoder_base_url: str | None = None,
        **kwargs: Any,
    ) -> Ranker:
        """Load an artifact and the encoder named in its manifest (now, or on the first text item)."""
        artifact = load_artifact(path, verify_checksums=verify_checksums)
        enc = artifact.manifest.get("encoder") or {}
        identity = artifact.encoder_identity
        factory: Callable[[], TextEncoder] | None = None
        if artifact.projection is not None and identity is not None:
            template = enc.get("text_template_version")
            if identity.get("kind") == "precomputed":
                log.info("artifact encoder is a precomputed matrix: new items need an `embedding`")
            elif template != TEXT_TEMPLATE_VERSION:
                log.warning(
                    "artifact text template v%s != this code's v%s: new items need an `embedding`",
                    template, TEXT_TEMPLATE_VERSION,
                )
            else:
                def factory() -> TextEncoder:
                    return encoder_from_identity(identity, base_url=encoder_base_url)
        ranker = cls(artifact, encoder_factory=factory, **kwargs)
        if encoder_preload and factory is not None:
            ranker._text_encoder()
        return ranker

    def _fold_in_reason(self) -> str | None:
        """Why POST /items must be refused for this model (logged once, here), or None when it can fold in."""
        items, name = self.model.items, self.cfg.item_embedding
        if items.fold_in_unavailable is not None:
            reason = f"this model (item_embedding {name!r}) {items.fold_in_unavailable}"
        elif self.projection is None:
            reason = (
                f"this model (item_embedding {name!r}) has no language projection: new items cannot be folded in; "
                "retrain with item_embedding 'alphafuse'"
            )
        else:
            if items.fold_in_note is not None:
                log.warning("item_embedding %r %s", name, items.fold_in_note)
            return None
        log.warning("cold items are unavailable: %s", reason)
        return reason

    def _build_index(self, vectors: np.ndarray) -> faiss.Index:
        if self._index_kind == "flat":
            index: faiss.Index = faiss.IndexFlatIP(self.dim)
        else:
            m, ef_construction, _ = self._hnsw
            index = faiss.IndexHNSWFlat(self.dim, m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = ef_construction
        if len(vectors):
            index.add(np.ascontiguousarray(vectors, dtype=np.float32))
        return index

    def _initial_index(self, vectors: np.ndarray, cache: Path | None) -> faiss.Index:
        """The index over the trained items, read from `cache` when an earlier start left one there.

        Only HNSW is cached: building it is what makes a large catalogue slow to start (147 s for 10^6 items
        with two threads, benchmarks/RESULTS.md), while a flat index is a copy of the vectors. The file name holds
        a digest of the vectors themselves and every build parameter, so a different model, projection or
        setting can never read a stale graph; a file that does not read back as the index expected is
        rebuilt over. Not being able to write the cache costs the next start time, nothing else."""
        if self._index_kind != "hnsw" or cache is None or not len(vectors):
            return self._build_index(vectors)
        m, ef_construction, _ = self._hnsw
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        digest = hashlib.sha256(vectors.data).hexdigest()[:32]
        name = f"hnsw-m{m}-efc{ef_construction}-faiss{faiss.__version__}-{len(vectors)}x{self.dim}-{digest}.faiss"
        path = Path(cache) / name
        if path.exists():
            started = time.perf_counter()
            try:
                cached = faiss.read_index(str(path))
            except RuntimeError as e:
                log.warning("index cache %s is unreadable (%s): rebuilding it", path, str(e).splitlines()[0])
            else:
                # read_index already returns the concrete class (a downcast copy of the proxy would not own it)
                if (
                    isinstance(cached, faiss.IndexHNSWFlat) and cached.ntotal == len(vectors)
                    and cached.d == self.dim and cached.metric_type == faiss.METRIC_INNER_PRODUCT
                ):
                    log.info("read the HNSW index over %d items from %s in %.1f s", cached.ntotal, path,
                             time.perf_counter() - started)
                    return cached
                log.warning("index cache %s does not hold this catalogue's HNSW index: rebuilding it", path)
        started = time.perf_counter()
        index = self._build_index(vectors)
        log.info("built the HNSW index over %d items in %.1f s", len(vectors), time.perf_counter() - started)
        tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            faiss.write_index(index, str(tmp))
            os.replace(tmp, path)  # whole or absent: a worker starting meanwhile never reads half a file
            log.info("kept the HNSW index in %s for the next start", path)
        except (OSError, RuntimeError) as e:
            log.warning("cannot keep the HNSW index in %s (%s): the next start builds it again", cache,
                        str(e).splitlines()[0])
            with contextlib.suppress(OSError):  # when the directory is what failed, there is no file to remove
                tmp.unlink(missing_ok=True)
        return index

    # ------------------------------------------------------------------------------------------------
    # catalogue

    @property
    def size(self) -> int:
        """Items that can be recommended: trained + live cold items."""
        return len(self._ids) - len(self._retired)

    @property
    def num_rows(self) -> int:
        """Rows in the input table after padding: `size` plus the rows of deleted cold items."""
        return len(self._ids)

    @property
    def index_kind(self) -> IndexKind:
        """The index actually serving (what `index="auto"` resolved to)."""
        return self._index_kind

    @property
    def num_cold(self) -> int:
        return len(self._cold_records)

    @property
    def max_len(self) -> int:
        return self.cfg.sasrec.max_len

    @property
    def table(self) -> torch.Tensor:
        """(num_rows + 1, D) input table: row 0 padding, trained rows, then cold rows (raw fused x)."""
        return self._table_buf[: self.num_rows + 1]

    @property
    def vectors(self) -> np.ndarray:
        """(num_rows, D) the vectors ranked by inner product; row i is item row i + 1 (deleted rows too)."""
        return self._vec_buf[: self.num_rows]

    def item_ids(self) -> list[str]:
        """Ids that can be recommended, in row order."""
        if not self._retired:
            return list(self._ids)
        return [iid for r, iid in enumerate(self._ids, start=1) if r not in self._retired]

    def get_item(self, item_id: str) -> tuple[dict[str, Any], bool]:
        """(record, is_cold) of a trained or cold item; ItemNotFound otherwise."""
        row = self._row.get(item_id)
        if row is None:
            raise ItemNotFound(item_id)
        if row <= self.num_trained:
            return dict(self.artifact.item_records[row - 1]), False
        return dict(self._cold_records[item_id]), True

    # ------------------------------------------------------------------------------------------------
    # ranking

    def recommend(self, query: Query) -> Ranking:
        out = self.recommend_many([query])[0]
        if isinstance(out, ServiceError):
            raise out
        return out

    def recommend_many(self, queries: Sequence[Query]) -> list[Ranking | ServiceError]:
        """Rank a batch: one model call and at most one FAISS search. A query that cannot be served gets
        its error in its own slot; the others are unaffected."""
        results: list[Ranking | ServiceError | None] = [None] * len(queries)
        plans: list[tuple[int, _Plan]] = []
        for i, q in enumerate(queries):
            try:
                plans.append((i, self._plan(q)))
            except ServiceError as e:
                results[i] = e
        if plans:
            histories, extras = self._histories_and_extras([p for _, p in plans])
            with torch.inference_mode():
                users = self._encode(pad_histories(histories, self.max_len), extras)
            users_np = np.ascontiguousarray(users.numpy(), dtype=np.float32)  # (B, D)
            searched = [(b, i, p) for b, (i, p) in enumerate(plans) if not self._is_exact(p)]
            if searched:
                fetch = max(p.k + len(p.exclude) for _, _, p in searched)
                scores, labels = self._search(users_np[[b for b, _, _ in searched]], fetch)
                for row, (b, i, p) in enumerate(searched):
                    results[i] = self._ranking(p, self._trim(scores[row], labels[row], p), users_np[b])
            for b, (i, p) in enumerate(plans):
                if self._is_exact(p):
                    results[i] = self._ranking(p, self._exact(users_np[b], p), users_np[b])
        assert all(r is not None for r in results)
        return results  # type: ignore[return-value]

    def _histories_and_extras(self, plans: Sequence[_Plan]) -> tuple[list[list[int]], torch.Tensor | None]:
        """Row histories of a batch and the rows of its text entries (vectors), which get rows after the
        table's last one, in this batch's copy of the table only; nothing else ever sees those rows."""
        extras = [v for p in plans for v in p.extras]
        if not extras:
            return [p.history for p in plans], None
        first = self.num_rows + 1
        histories, offset = [], first
        for p in plans:
            histories.append([r if r > 0 else offset - 1 - r for r in p.history])
            offset += len(p.extras)
        return histories, torch.from_numpy(np.stack(extras).astype(np.float32, copy=False))

    def _encode(self, padded: torch.Tensor, extras: torch.Tensor | None) -> torch.Tensor:
        """(B, D) user vectors on the CPU, encoded on `self.device` against the table plus `extras`."""
        if self._device_model is None:
            table = self.table if extras is None else torch.cat([self.table, extras])
            return self.model.encode_with_table(padded, table)
        if self._device_table is None or self._device_table[0] != self._table_writes:
            self._device_table = (self._table_writes, self.table.to(self.device))
        table = self._device_table[1]
        if extras is not None:
            table = torch.cat([table, extras.to(self.device)])
        return self._device_model.encode_with_table(padded.to(self.device), table).cpu()

    def _plan(self, q: Query) -> _Plan:
        if not q.history:
            raise InvalidRequest("history is empty: give at least one item id")
        if q.explain and self._split is None:
            raise ExplainUnavailable(
                f"explain needs item vectors that split into language and ID parts (item_embedding "
                f"'alphafuse' or 'whitened-text'); this model's item_embedding is {self.cfg.item_embedding!r}"
            )
        if not 1 <= q.k <= min(self.max_k, self.size):
            raise InvalidRequest(
                f"k={q.k} is out of range: must be between 1 and {min(self.max_k, self.size)} "
                f"(catalogue size {self.size}, max_k {self.max_k})"
            )
        ignored: list[str] = []
        history: list[int] = []  # 1-based rows; -1 - j for the j-th text entry (`_histories_and_extras`)
        extras: list[np.ndarray] = []
        unknown_history: list[str] = []
        for entry in q.history:
            if isinstance(entry, FoldedEntry):
                entry = entry.vector if entry.version == self.version else self.fold_in([entry.item])[0]
            if not isinstance(entry, str):
                if entry.shape != (self.dim,):
                    raise InvalidRequest(
                        f"a folded-in history vector has shape {entry.shape}; the model's is ({self.dim},)"
                    )
                history.append(-1 - len(extras))
                extras.append(entry)
                continue
            row = self._row.get(entry)
            if row is None:
                unknown_history.append(entry)
            else:
                history.append(row)
        allow = self._resolve(q.allow, "allow", q.ignore_unknown, ignored)
        deny = self._resolve(q.deny, "deny", q.ignore_unknown, ignored)
        if unknown_history:
            if not q.ignore_unknown:
                raise UnknownItems(list(dict.fromkeys(unknown_history)))
            ignored[:0] = list(dict.fromkeys(unknown_history))
        if not history:
            raise InvalidRequest(
                f"none of the {len(q.history)} history item ids is known ({len(unknown_history)} ignored): "
                "nothing to recommend from"
            )
        exclude = set(deny or ())
        if q.exclude_history:
            exclude.update(r for r in history if r > 0)
        return _Plan(
            history=history, k=q.k, exclude=exclude, allow=allow,
            ignored=list(dict.fromkeys(ignored)), truncated=len(history) > self.max_len, extras=extras,
            explain=q.explain,
        )

    def _resolve(self, ids: Sequence[str] | None, where: str, ignore: bool, ignored: list[str]) -> list[int] | None:
        if ids is None:
            return None
        rows, unknown = [], []
        for iid in ids:
            row = self._row.get(iid)
            if row is None:
                unknown.append(iid)
            else:
                rows.append(row)
        if unknown:
            if not ignore:
                raise UnknownItems(list(dict.fromkeys(unknown)), where)
            ignored.extend(unknown)
        return list(dict.fromkeys(rows))

    def _ranking(self, p: _Plan, rows: list[tuple[int, float]], user: np.ndarray) -> Ranking:
        if not p.explain:
            return Ranking([(self._ids[r - 1], s) for r, s in rows], p.ignored, p.truncated, model=self.model_dict)
        parts = self._parts(user, [r for r, _ in rows])
        # the explained score is the sum of its parts, both in float64 from the served float32 vectors; it
        # equals the index's float32 score to float32 rounding, and the order is the index's
        items = [(self._ids[r - 1], sem + col) for (r, _), (sem, col) in zip(rows, parts, strict=True)]
        return Ranking(items, p.ignored, p.truncated, parts, self.model_dict)

    def _cold_ids(self, rows: np.ndarray) -> np.ndarray:
        """(n, d_n) v0 of cold table rows, by this ranker's rule from the rows themselves, kept once computed."""
        split = self._split
        assert split is not None
        at = rows - self.num_trained - 1
        missing = np.unique(rows[np.isnan(self._cold_v0[at]).any(axis=1)])
        if len(missing):
            table = self.table[torch.from_numpy(missing)]
            self._cold_v0[missing - self.num_trained - 1] = split.cold_ids_of(table).numpy()
        return self._cold_v0[at]

    def _parts(self, user: np.ndarray, rows: Sequence[int]) -> list[tuple[float, float]]:
        """(semantic, collaborative) score parts of table rows: the user vector against the row's frozen
        language coordinates Z_i and against its ID coordinates [0, V_i] (v0 for a cold item), each divided
        by |x_i| when the model ranks by cosine, as the served vector is."""
        split = self._split
        assert split is not None
        if not rows:
            return []
        r = np.asarray(rows, dtype=np.int64)
        x = self.table[torch.from_numpy(r)].numpy().astype(np.float64)  # (n, D) raw fused rows
        ids = np.empty((len(r), x.shape[1] - split.d_s), dtype=np.float64)
        trained = r <= self.num_trained
        ids[trained] = split.ids[torch.from_numpy(r[trained] - 1)].numpy()
        ids[~trained] = self._cold_ids(r[~trained])
        language = x.copy()  # a cold row is z + [0, v0]: its language coordinates are x - [0, v0]
        language[:, split.d_s :] -= ids
        language[trained] = split.language[torch.from_numpy(r[trained] - 1)].numpy()
        u = user.astype(np.float64)
        semantic, collaborative = language @ u, ids @ u[split.d_s :]
        if self.cfg.similarity == "cosine":
            norm = np.maximum(np.linalg.norm(x, axis=1), 1e-12)  # F.normalize's eps
            semantic, collaborative = semantic / norm, collaborative / norm
        return [(float(a), float(b)) for a, b in zip(semantic, collaborative, strict=True)]

    # ------------------------------------------------------------------------------------------------
    # text search

    @property
    def search_unavailable(self) -> str | None:
        """Why text search cannot run on this model, or None when it can."""
        if self._split is None:
            return (
                "text search ranks items by their frozen language coordinates, which this model's item_embedding "
                f"({self.cfg.item_embedding!r}) does not keep; serve an 'alphafuse' or 'whitened-text' model"
            )
        if self._fold_in_unavailable is not None:
            return self._fold_in_unavailable
        return None

    def fold_history(self, items: Sequence[NewItem]) -> list[FoldedEntry]:
        """History entries given by text, folded in under this ranker's version (`FoldedEntry`)."""
        return [FoldedEntry(it, x, self.version) for it, x in zip(items, self.fold_in(items), strict=True)]

    def query_language(self, text: str) -> np.ndarray:
        """(D,) language coordinates of a query text, exactly as a new item with that text gets them.
        Runs the encoder: the service calls it from its encoder thread."""
        if self.search_unavailable is not None:
            raise FoldInUnavailable(self.search_unavailable)
        assert self.projection is not None
        if not text.strip():
            raise InvalidRequest("the query text is empty")
        try:
            encoder = self._text_encoder()
        except InvalidItem as e:
            raise FoldInUnavailable(f"text search needs the model's text encoder, which cannot run here: {e}") from e
        emb = encoder.encode([text]).astype(np.float64)  # (1, d_l)
        with np.errstate(over="ignore", invalid="ignore"):
            z = self.projection.apply(emb).astype(np.float32)[0]
        return z

    def search(self, z: np.ndarray, k: int = 10) -> list[SearchHit]:
        """The `k` items, trained and cold, whose language coordinates are nearest to `z` by cosine (an
        exact scan: one (N, D) product per query)."""
        split = self._split
        if split is None:
            raise FoldInUnavailable(self.search_unavailable or "text search is unavailable")
        if not 1 <= k <= min(self.max_k, self.size):
            raise InvalidRequest(f"k={k} is out of range: must be between 1 and {min(self.max_k, self.size)}")
        q = z.astype(np.float32) / max(float(np.linalg.norm(z)), 1e-12)
        language = split.language.numpy()  # (N_trained, D), the model's own buffer
        if self._language_norms is None:
            self._language_norms = np.maximum(np.linalg.norm(language, axis=1), 1e-12)
        scores = (language @ q) / self._language_norms
        if self.num_rows > self.num_trained:
            v0 = self._cold_ids(np.arange(self.num_trained + 1, self.num_rows + 1))
            cold = self.table[self.num_trained + 1 :].numpy() - np.pad(v0, ((0, 0), (split.d_s, 0)))
            cold_scores = (cold @ q) / np.maximum(np.linalg.norm(cold, axis=1), 1e-12)
            scores = np.concatenate([scores, cold_scores])
            if self._retired:
                scores[np.fromiter(self._retired, dtype=np.int64) - 1] = -np.inf
        top = np.argpartition(-scores, k - 1)[:k] if len(scores) > k else np.arange(len(scores))
        order = top[np.argsort(-scores[top], kind="stable")]
        return [SearchHit(self._ids[j], float(scores[j]), j >= self.num_trained) for j in order.tolist()]

    def _search(self, users: np.ndarray, fetch: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-`fetch` (scores, labels) per row; dead labels (replaced cold items) are filtered by FAISS."""
        fetch = max(1, min(fetch, self._index.ntotal))
        params: Any = None
        if self._index_kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self._hnsw[2], fetch))  # type: ignore[attr-defined]
            if self._selector is not None:
                params.sel = self._selector[0]
        elif self._selector is not None:
            params = faiss.SearchParameters(sel=self._selector[0])  # type: ignore[call-arg]
        return self._index.search(users, fetch, params=params)

    def _trim(self, scores: np.ndarray, labels: np.ndarray, p: _Plan) -> list[tuple[int, float]]:
        out: list[tuple[int, float]] = []
        for score, label in zip(scores.tolist(), labels.tolist(), strict=True):
            if label < 0:
                continue
            row = int(self._label_row[label])
            if row == 0 or row in p.exclude:
                continue
            out.append((row, float(score)))
            if len(out) == p.k:
                break
        return out

    def _is_exact(self, p: _Plan) -> bool:
        """Allow-lists are scored directly; so are queries that would make the index fetch a large share of
        the catalogue (long deny lists), where a full scan is cheaper and exact."""
        return p.allow is not None or p.k + len(p.exclude) > max(EXACT_FETCH_MIN, self.size // 4)

    def _exact(self, user: np.ndarray, p: _Plan) -> list[tuple[int, float]]:
        if p.allow is not None:
            rows = np.array([r for r in p.allow if r not in p.exclude], dtype=np.int64)
        else:
            keep = np.ones(self.num_rows + 1, dtype=bool)
            keep[0] = False
            keep[list(p.exclude | self._retired)] = False
            rows = np.flatnonzero(keep)
        if len(rows) == 0:
            return []
        scores = self._vec_buf[rows - 1] @ user  # (A,)
        top = np.argpartition(-scores, p.k - 1)[: p.k] if len(rows) > p.k else np.arange(len(rows))
        order = top[np.argsort(-scores[top], kind="stable")]
        return [(int(rows[j]), float(scores[j])) for j in order]

    # ------------------------------------------------------------------------------------------------
    # cold items

    def fold_in(self, items: Sequence[NewItem]) -> np.ndarray:
        """(n, D) float32 input vectors for new items (AlphaFuse: `x = z + [0_{d_s}, v0]`); nothing is changed."""
        if self._fold_in_unavailable is not None or self.projection is None:
            raise FoldInUnavailable(self._fold_in_unavailable or "this model has no language projection")
        d_l = self.projection.input_dim
        emb = np.zeros((len(items), d_l), dtype=np.float64)
        texts: list[tuple[int, str]] = []
        for i, it in enumerate(items):
            if it.embedding is not None:
                e = np.asarray(it.embedding, dtype=np.float64)
                if e.shape != (d_l,):
                    raise InvalidItem(
                        f"item {it.item_id!r}: embedding has {e.size} values, the model's encoder has {d_l}"
                    )
                if not np.isfinite(e).all():
                    raise InvalidItem(f"item {it.item_id!r}: embedding contains NaN or inf")
                emb[i] = e
                continue
            try:
                text = item_text(it.record)
            except ValueError as e:
                raise InvalidItem(f"item {it.item_id!r}: {e}") from e
            if not text:
                raise InvalidItem(
                    f"item {it.item_id!r} has no text (title, categories, genres, brand, description, year) "
                    "and no embedding"
                )
            texts.append((i, text))
        if texts:
            encoded = self._text_encoder().encode([t for _, t in texts])  # (T, d_l) float32
            emb[[i for i, _ in texts]] = encoded
        with np.errstate(over="ignore", invalid="ignore"):
            z = self.projection.apply(emb).astype(np.float32)  # (n, k): float32 like the model's language buffer
        with torch.no_grad():  # the variant's rule, the same code its forward() runs on trained items
            x = self.model.items.fold_in(torch.from_numpy(z), self.cold_id).to(torch.float32).numpy()
        finite = np.isfinite(z).all(axis=1) & np.isfinite(x).all(axis=1)
        bad = [items[int(i)].item_id for i in np.flatnonzero(~finite)]
        if bad:  # a finite but huge embedding overflows the projection; it would poison every ranking it joins
            raise InvalidItem(
                f"items {', '.join(repr(i) for i in bad[:10])}: the embedding does not project to a finite vector "
                "(values far outside what the encoder produces)"
            )
        return x

    def _text_encoder(self) -> TextEncoder:
        if self._encoder is None:
            if self._encoder_factory is None:
                enc = self.artifact.manifest.get("encoder") or {}
                raise InvalidItem(
                    f"this model's encoder ({(enc.get('identity') or {}).get('kind')!r}, text template "
                    f"v{enc.get('text_template_version')}) cannot encode text here: give each new item an "
                    f"`embedding` of {self.projection.input_dim if self.projection else '?'} floats"
                )
            self._encoder = self._encoder_factory()
            log.info("loaded text encoder %s", self._encoder.identity.get("name", self._encoder.identity))
        return self._encoder

    def add_items(self, store: ItemStore, items: Sequence[NewItem], *, upsert: bool = False) -> list[AddedItem]:
        """Validate, fold in, commit to the store (durable on return), then serve them."""
        return self.commit_items(store, self.fold_in_new(items, upsert=upsert), upsert=upsert)

    def fold_in_new(self, items: Sequence[NewItem], *, upsert: bool = False) -> FoldedItems:
        """Validate new items and compute their vectors without touching the served catalogue.

        Encoding text is the slow part of POST /items (about 1 s for 256 items on one core), so the
        service runs this in its own thread while ranking goes on; `commit_items` then runs in the
        ranking thread. Reads only immutable state, plus an early existence check that `commit_items`
        repeats authoritatively.
        """
        if not items:
            raise InvalidRequest("no items given")
        if len(items) > self.max_items_per_add:
            raise InvalidRequest(f"{len(items)} items in one request; at most {self.max_items_per_add}")
        ids = [it.item_id for it in items]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise InvalidRequest(f"duplicate item ids in the request: {', '.join(repr(i) for i in dup)}")
        trained = [i for i in ids if self.is_trained(i)]
        if trained:
            raise ItemConflict(
                f"trained catalogue items cannot be added or replaced: {', '.join(repr(i) for i in trained)}",
                trained,
            )
        self._existing_cold(ids, upsert)  # fail fast, before encoding
        return FoldedItems(tuple(items), self.fold_in(items), self.version)

    def commit_items(self, store: ItemStore, folded: FoldedItems, *, upsert: bool = False) -> list[AddedItem]:
        """Commit folded items to the store (durable on return), then serve them. Items folded in by a
        ranker of another version (a model swapped in while they were encoded) are folded in again here."""
        if folded.version != self.version:
            folded = FoldedItems(folded.items, self.fold_in(folded.items), self.version)
        self.sync(store)  # see other workers' items before deciding what exists
        self._existing_cold([it.item_id for it in folded.items], upsert)
        rows = [StoredItem(it.item_id, dict(it.record), folded.vectors[n]) for n, it in enumerate(folded.items)]
        result = store.add(rows, upsert=upsert)  # committed here; raises ItemConflict on a race
        self.sync(store)
        replaced = set(result.replaced)  # what the store replaced, not what this worker had cached
        return [
            AddedItem(it.item_id, dict(it.record), it.item_id in replaced, s)
            for it, s in zip(folded.items, result.seqs, strict=True)
        ]

    def _existing_cold(self, ids: Sequence[str], upsert: bool) -> list[str]:
        existing = [i for i in ids if i in self._cold_records]
        if existing and not upsert:
            raise ItemConflict(
                f"cold items already exist: {', '.join(repr(i) for i in existing)}; pass upsert=true to "
                "replace them",
                existing,
            )
        return existing

    def is_trained(self, item_id: str) -> bool:
        """The id is in the trained catalogue (not a cold item)."""
        row = self._row.get(item_id)
        return row is not None and row <= self.num_trained

    def delete_item(self, store: ItemStore, item_id: str) -> int:
        """Delete a cold item: a tombstone in the store (durable on return), then stop serving it.

        Trained items cannot be deleted: their rows are part of the model. Returns the tombstone's seq.
        """
        self.sync(store)
        if self.is_trained(item_id):
            raise ItemConflict(
                f"item {item_id!r} is in the trained catalogue and cannot be deleted; use `deny` in "
                "/recommend to keep it out of results",
                [item_id],
            )
        seq = store.delete(item_id)  # ItemNotFound when no live cold item has this id
        self.sync(store)
        return seq

    def carry_over(self, store: ItemStore) -> tuple[list[str], list[str]]:
        """Fold the cold items that the store holds for other model versions into this one, from their text.

        A stored vector is only valid for the model it was computed with; the text record is not, so a
        new model re-encodes it. When only the cold-ID rule changed (the same artifact served with another
        `cold_id`), nothing is re-encoded: the vector is converted exactly (`_convert`), items posted as a
        bare `embedding` included. Otherwise items posted as a bare `embedding` (no text to re-encode) are
        not carried, nor are items now in the trained catalogue or whose newest row is a deletion. Returns
        (carried ids, ids that could not be carried). Safe with several workers starting at once: the
        store inserts only ids that have no row in this version yet.
        """
        candidates = [r for r in store.carried_over_candidates() if not r.deleted]
        candidates = [r for r in candidates if not self.is_trained(r.item_id)]
        if not candidates:
            return [], []
        rules = self._other_rules()
        same_model = [r for r in candidates if r.artifact_version in rules]
        candidates = [r for r in candidates if r.artifact_version not in rules]
        converted: list[str] = []
        for start in range(0, len(same_model), max(1, self.max_items_per_add)):
            chunk = same_model[start : start + max(1, self.max_items_per_add)]
            vectors = self._convert([r.vector for r in chunk], [rules[r.artifact_version] for r in chunk])
            converted.extend(store.add_absent(
                [StoredItem(r.item_id, dict(r.record), vectors[n]) for n, r in enumerate(chunk)]
            ))
        if not candidates:
            self.sync(store)
            return converted, []
        carried, skipped = self._carry_by_text(store, candidates)
        return converted + carried, skipped

    def _other_rules(self) -> dict[str, ColdId]:
        """{version of this very artifact under another cold-ID rule: that rule}, for the rules whose v0 can be
        taken back off a stored vector (a model with a fused split); {} otherwise."""
        if self._split is None:
            return {}
        return {artifact_version(self.artifact, r): r for r in COLD_ID_RULES if r != self.cold_id}

    def _convert(self, vectors: Sequence[np.ndarray], rules: Sequence[ColdId]) -> np.ndarray:
        """Stored vectors of this artifact folded in under `rules` -> the same items under this ranker's rule.

        Every rule's v0 depends on the first d_s coordinates only, which it leaves as z gave them, so
        z = x - [0, v0_old(x)] exactly and the new vector is this rule's fold-in of that z."""
        x = torch.from_numpy(np.stack(vectors).astype(np.float32))
        z = x.clone()
        for rule in set(rules):
            mask = torch.tensor([r == rule for r in rules])
            split = self.model.items.split(rule)
            assert split is not None
            z[mask, split.d_s :] -= split.cold_ids_of(x[mask])
        with torch.no_grad():
            return self.model.items.fold_in(z, self.cold_id).to(torch.float32).numpy()

    def _carry_by_text(self, store: ItemStore, candidates: list[StoredItem]) -> tuple[list[str], list[str]]:
        if self.projection is None:
            return [], [r.item_id for r in candidates]
        textual: list[StoredItem] = []
        skipped: list[str] = []
        for r in candidates:
            try:
                has_text = bool(item_text(r.record))
            except ValueError:
                has_text = False
            if has_text:
                textual.append(r)
            else:
                skipped.append(r.item_id)
        carried: list[str] = []
        step = max(1, self.max_items_per_add)
        for start in range(0, len(textual), step):
            chunk = textual[start : start + step]
            try:
                vectors = self.fold_in([NewItem(r.item_id, dict(r.record)) for r in chunk])
            except (InvalidItem, FoldInUnavailable) as e:  # e.g. this model's encoder cannot run here
                log.warning("cannot carry cold items over to %s: %s", self.version, e)
                return carried, skipped + [r.item_id for r in textual[start:]]
            rows = [StoredItem(r.item_id, dict(r.record), vectors[n]) for n, r in enumerate(chunk)]
            carried.extend(store.add_absent(rows))
        self.sync(store)
        return carried, skipped

    def sync(self, store: ItemStore) -> int:
        """Fold in the store's rows newer than the last seen; returns how many were applied.

        Runs before every batch, so on an unchanged store it only reads the store's change token (the
        `ItemStore` contract): the token is taken before the query and remembered only once the rows
        are applied, so a commit at any moment is seen by this sync or the next.
        """
        token = store.change_token()
        synced = self._synced
        if token is not None and synced is not None and synced[0] is store and synced[1] == token:
            return 0
        rows = store.changes_since(self.last_seq)
        if rows:
            self.apply(rows)
        self._synced = (store, token)
        return len(rows)

    def apply(self, rows: Sequence[StoredItem]) -> None:
        """Serve stored cold items in sequence order: new ones appended, existing ones replaced, deleted
        ones (tombstones) retired."""
        latest: dict[str, StoredItem] = {}
        deleted: dict[str, StoredItem] = {}
        for r in sorted(rows, key=lambda r: r.seq):
            self.last_seq = max(self.last_seq, r.seq)
            if self.is_trained(r.item_id):
                log.warning("stored cold item %r shadows a trained item; ignored", r.item_id)
            elif r.deleted:
                latest.pop(r.item_id, None)
                deleted[r.item_id] = r
            elif r.vector.shape != (self.dim,):
                log.warning("stored cold item %r has %s values, model dim %d; ignored", r.item_id, r.vector.shape,
                            self.dim)
            else:
                latest.pop(r.item_id, None)
                deleted.pop(r.item_id, None)
                latest[r.item_id] = r
        retired = self._retire([iid for iid in deleted if iid in self._cold_records])
        if not latest:
            if retired:
                self._maybe_rebuild()
                log.info("deleted %d cold items (catalogue %d, cold %d, seq %d)", retired, self.size,
                         self.num_cold, self.last_seq)
            return
        x = torch.from_numpy(np.stack([r.vector for r in latest.values()]).astype(np.float32))  # (n, D)
        # exactly as SequentialRecommender.item_vectors: normalised only for cosine similarity
        v = (F.normalize(x, dim=-1) if self.cfg.similarity == "cosine" else x).numpy()
        rows_out = []
        for r in latest.values():
            row = self._row.get(r.item_id)
            if row is None:
                row = len(self._ids) + 1
                self._ids.append(r.item_id)
                self._row[r.item_id] = row
            else:
                self._dead.append(int(self._row_label[row]))
                self._label_row[self._row_label[row]] = 0
            self._cold_records[r.item_id] = dict(r.record)
            rows_out.append(row)
        self._grow(self.num_rows)
        rows_arr = np.array(rows_out, dtype=np.int64)
        self._table_buf[torch.from_numpy(rows_arr)] = x
        self._table_writes += 1
        self._vec_buf[rows_arr - 1] = v
        if self._split is not None:
            need = int(rows_arr.max()) - self.num_trained
            if need > len(self._cold_v0):  # doubling: appending stays amortised O(d_n)
                grown = np.full((max(need, 2 * len(self._cold_v0)), self._cold_v0.shape[1]), np.nan, np.float32)
                grown[: len(self._cold_v0)] = self._cold_v0
                self._cold_v0 = grown
            self._cold_v0[rows_arr - self.num_trained - 1] = np.nan  # a replaced row's v0 is recomputed
        first = self._index.ntotal
        self._index.add(np.ascontiguousarray(v))
        labels = np.arange(first, first + len(rows_arr), dtype=np.int64)
        self._label_row = np.concatenate([self._label_row, rows_arr])
        self._row_label[rows_arr] = labels
        self._maybe_rebuild()
        log.info("folded in %d and deleted %d cold items (catalogue %d, cold %d, seq %d)", len(latest), retired,
                 self.size, self.num_cold, self.last_seq)

    def _retire(self, item_ids: Sequence[str]) -> int:
        """Stop serving these cold items: their ids are forgotten and their FAISS labels go dead."""
        for iid in item_ids:
            row = self._row.pop(iid)
            del self._cold_records[iid]
            self._retired.add(row)
            label = int(self._row_label[row])
            if label >= 0:
                self._dead.append(label)
                self._label_row[label] = 0
                self._row_label[row] = -1
        return len(item_ids)

    def _maybe_rebuild(self) -> None:
        """Dead labels are filtered at search time; past a quarter of the index, rebuild it without them."""
        if len(self._dead) > max(256, self._index.ntotal // 4):
            self._rebuild()
        else:
            self._refresh_selector()

    def _grow(self, size: int) -> None:
        cap = self._vec_buf.shape[0]  # invariant: len(_row_label) == cap + 1
        if size <= cap:
            return
        new_cap = max(size, int(cap * 1.5) + 16)
        table = torch.zeros(new_cap + 1, self.dim, dtype=torch.float32)
        table[: cap + 1] = self._table_buf
        vec = np.zeros((new_cap, self.dim), dtype=np.float32)
        vec[:cap] = self._vec_buf
        self._table_buf, self._vec_buf = table, vec
        self._row_label = np.concatenate(
            [self._row_label, np.full(new_cap + 1 - len(self._row_label), -1, dtype=np.int64)]
        )

    def _rebuild(self) -> None:
        """Rebuild the index over the live rows only (labels 0..size-1 in row order)."""
        live = np.arange(1, self.num_rows + 1, dtype=np.int64)
        if self._retired:
            live = live[~np.isin(live, np.fromiter(self._retired, dtype=np.int64))]
        self._index = self._build_index(self._vec_buf[live - 1])
        self._label_row = live
        self._row_label[:] = -1
        self._row_label[live] = np.arange(len(live), dtype=np.int64)
        self._dead = []
        self._refresh_selector()
        log.info("rebuilt the %s index over %d items", self._index_kind, self.size)

    def _refresh_selector(self) -> None:
        if not self._dead:
            self._selector = None
            return
        inner = faiss.IDSelectorBatch(np.array(self._dead, dtype=np.int64))
        self._selector = (faiss.IDSelectorNot(inner), inner)

    def row_of(self, item_id: str) -> int:
        """1-based input-table row of an item (for tests and offline comparisons)."""
        return self._row[item_id]


@dataclass
class _Plan:
    history: list[int]  # 1-based rows, oldest first
    k: int
    exclude: set[int]
    allow: list[int] | None
    ignored: list[str]
    truncated: bool
    extras: list[np.ndarray] = field(default_factory=list)  # vectors of text entries (history rows < 0)
    explain: bool = False
