"""The HTTP app: `create_app(settings)` builds it; the lifespan loads the artifact, index, encoder and store.

Nothing heavy happens at import. Routes are thin: they turn the request body into a domain call, and
domain errors (`service.errors`) become HTTP statuses in one table, `ERROR_STATUS`. All ranking, index
and store work runs in one worker thread (`AppState.executor`), so the ranker's in-memory state needs no
locks. The one slow step that touches none of that state, encoding new items' text, runs in a second
thread (`AppState.encoder_executor`) so that a large POST /items does not stall /recommend.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Annotated, Any, TypeVar

import numpy as np
from fastapi import Depends, FastAPI, Request, Response
from fastapi import Query as QueryParam
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from starlette.routing import Mount

from model.artifact import ArtifactError
from service.batching import MicroBatcher
from service.errors import (
    ExplainUnavailable,
    FoldInUnavailable,
    InvalidRequest,
    ItemConflict,
    ItemNotFound,
    NotReady,
    Overloaded,
    RequestTimeout,
    ServiceError,
    StoreFull,
    StoreUnavailable,
    SwapFailed,
    Unauthorized,
)
from service.guard import RequestGuard, is_json_decode_error, json_decode_detail, validation_detail
from service.metrics import MetricsMiddleware, ServiceMetrics
from service.ranker import AddedItem, FoldedEntry, FoldedItems, NewItem, Query, Ranker, Ranking
from service.ranker import SearchHit as RankerSearchHit
from service.responses import json_response, recommend_body
from service.schemas import (
    ErrorResponse,
    HealthResponse,
    HistoryText,
    ItemDeletedResponse,
    ItemFields,
    ItemResponse,
    ItemsCreateRequest,
    ItemsCreateResponse,
    ModelInfo,
    ReadyResponse,
    RecommendRequest,
    RecommendResponse,
    SearchHit,
    SearchResponse,
    SwapRequest,
    SwapResponse,
)
from service.settings import ServiceSettings
from service.store import ItemStore, StoredItem, describe_store, open_store

log = logging.getLogger(__name__)

T = TypeVar("T")

# the one place where domain errors become HTTP statuses (most specific class wins, via the MRO)
ERROR_STATUS: dict[type[ServiceError], int] = {
    InvalidRequest: 422,  # includes UnknownItems and InvalidItem
    Unauthorized: 401,
    ItemConflict: 409,
    FoldInUnavailable: 409,
    ExplainUnavailable: 409,
    SwapFailed: 422,
    ItemNotFound: 404,
    Overloaded: 503,
    NotReady: 503,
    StoreUnavailable: 503,
    RequestTimeout: 503,
    StoreFull: 507,
}


def error_status(exc: ServiceError) -> int:
    for cls in type(exc).__mro__:
        if cls in ERROR_STATUS:
            return ERROR_STATUS[cls]
    return 500


@dataclass
class AppState:
    """What the lifespan builds; routes reach it through the `Reader` / `Writer` / `AnyState` dependencies."""

    settings: ServiceSettings
    metrics: ServiceMetrics
    ranker: Ranker | None = None
    store: ItemStore | None = None
    executor: ThreadPoolExecutor | None = None
    encoder_executor: ThreadPoolExecutor | None = None
    batcher: MicroBatcher[Query, Ranking] | None = None
    ready: bool = False
    tasks: list[asyncio.Task[None]] = field(default_factory=list)
    write_token: str | None = None
    read_token: str | None = None
    store_problem: str | None = None  # why the store cannot be written now (None: it can)
    swap_executor: ThreadPoolExecutor | None = None  # loads a model to swap in, beside the serving one
    swap_lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    wake: Callable[[], None] | None = None  # asks _sync_forever to sync now (a store heard of a commit)
    sync_problem: str | None = None  # the last sync failure logged, so an outage is logged once

    @property
    def model_info(self) -> ModelInfo:
        assert self.ranker is not None
        return ModelInfo(**self.ranker.model_dict)

    @property
    def model_dict(self) -> dict[str, str]:
        """`model_info` as the plain dict that /recommend's body embeds (the same for every request)."""
        assert self.ranker is not None
        return self.ranker.model_dict

    async def run(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` in the worker thread (serialised with ranking batches)."""
        if self.executor is None:
            raise NotReady("the service is not running")
        return await asyncio.get_running_loop().run_in_executor(self.executor, partial(fn, *args, **kwargs))

    async def run_encoder(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run `fn` in the encoder thread (text encoding for new items, concurrent with ranking)."""
        if self.encoder_executor is None:
            raise NotReady("the service is not running")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self.encoder_executor, partial(fn, *args, **kwargs))

    # --- everything below runs in the worker thread -------------------------------------------------

    def sync(self) -> None:
        """Fold in other workers' items; a failing store is logged and the cached catalogue served."""
        assert self.ranker is not None and self.store is not None
        try:
            if self.ranker.sync(self.store):
                self.metrics.set_catalogue(self.ranker.size, self.ranker.num_cold)
            self.sync_problem = None
        except StoreUnavailable as e:  # the store says so itself, once; no traceback per batch
            if str(e) != self.sync_problem:
                log.warning("item store sync failed, serving the catalogue as last seen: %s", e)
            self.sync_problem = str(e)
        except Exception:
            log.exception("item store sync failed; serving the catalogue as last seen")

    def check_store(self) -> None:
        """Notice a store whose files were removed or replaced (or a database that went away), so /readyz
        says so before a write fails; a store that `recovers` clears the problem when it is back."""
        assert self.store is not None
        problem = self.store.health()
        if problem is not None and problem != self.store_problem and not self.store.recovers:
            log.error("%s: writes are refused until it is restored and the service restarted", problem)
        if problem is not None:
            self.store_problem = problem
        elif self.store.recovers:
            self.store_problem = None

    def _store_call(self, fn: Callable[[], T]) -> T:
        try:
            result = fn()
        except StoreUnavailable as e:
            self.store_problem = str(e)
            raise
        self.store_problem = self.store.health() if self.store is not None else None
        return result

    def rank_batch(self, queries: list[Query]) -> list[Ranking | ServiceError]:
        assert self.ranker is not None
        self.sync()
        return self.ranker.recommend_many(queries)

    def commit_items(self, folded: FoldedItems, upsert: bool) -> tuple[list[AddedItem], ModelInfo]:
        ranker, store = self.ranker, self.store
        assert ranker is not None and store is not None
        try:
            return self._store_call(lambda: ranker.commit_items(store, folded, upsert=upsert)), self.model_info
        finally:
            self.metrics.set_catalogue(ranker.size, ranker.num_cold)

    def delete_item(self, item_id: str) -> ModelInfo:
        ranker, store = self.ranker, self.store
        assert ranker is not None and store is not None
        try:
            self._store_call(lambda: ranker.delete_item(store, item_id))
            return self.model_info
        finally:
            self.metrics.set_catalogue(ranker.size, ranker.num_cold)

    def get_item(self, item_id: str) -> tuple[dict[str, Any], bool]:
        assert self.ranker is not None
        self.sync()
        return self.ranker.get_item(item_id)

    def search(
        self, q: str, z: np.ndarray, version: str, k: int
    ) -> tuple[list[tuple[RankerSearchHit, dict[str, Any]]], ModelInfo]:
        ranker = self.ranker
        assert ranker is not None
        self.sync()
        if version != ranker.version:  # a model was swapped in while the query was encoded
            z = ranker.query_language(q)
        return [(h, ranker.get_item(h.item_id)[0]) for h in ranker.search(z, k)], self.model_info

    def last_seq(self) -> int:
        assert self.ranker is not None
        self.sync()
        return self.ranker.last_seq

    def switch(self, ranker: Ranker, store: ItemStore, since: int) -> ItemStore | None:
        """Serve `ranker` and `store` from the next batch on (runs in the worker thread, between batches,
        so every batch is ranked by one model); returns the store it replaced.

        Cold items written under the old model after `since` (while the new one loaded, through any worker)
        are applied to the new model's rows first: additions re-encoded from their text, deletions deleted,
        so nothing acknowledged during the swap is left behind."""
        old = self.store
        if old is not None and self.settings.carry_cold_items:
            _carry_delta(old, since, ranker, store)
        self.ranker, self.store = ranker, store
        if self.wake is not None:
            store.subscribe(self.wake)
        self.store_problem = None
        self.metrics.set_catalogue(ranker.size, ranker.num_cold)
        return old


def _init_worker_thread(torch_threads: int, faiss_threads: int) -> None:
    # OpenMP thread counts are per calling thread: set them in the thread that runs torch and faiss
    import faiss
    import torch

    torch.set_num_threads(torch_threads)
    faiss.omp_set_num_threads(faiss_threads)


def _load(state: AppState) -> None:
    """Runs in the worker thread: artifact, index, encoder, store, and the stored cold items."""
    state.ranker, state.store = _open(state.settings, state.settings.artifact, state.settings.store_location)
    if state.wake is not None:
        state.store.subscribe(state.wake)
    state.metrics.set_catalogue(state.ranker.size, state.ranker.num_cold)


def _open(s: ServiceSettings, artifact: Path, store_path: Path | str) -> tuple[Ranker, ItemStore]:
    """The ranker of `artifact` and its view of the store, with the store's cold items folded in (and
    those of other model versions carried over, when `carry_cold_items`)."""
    ranker = Ranker.load(
        artifact, verify_checksums=s.verify_checksums, encoder_preload=s.encoder_preload,
        encoder_base_url=s.encoder_base_url, index=s.index, auto_hnsw_min_items=s.auto_hnsw_min_items,
        hnsw_m=s.hnsw_m, hnsw_ef_construction=s.hnsw_ef_construction, hnsw_ef_search=s.hnsw_ef_search,
        cold_id=s.cold_id, device=s.device, index_cache=s.index_cache,
        max_k=s.max_k, max_items_per_add=s.max_items_per_request,
    )
    store = open_store(store_path, ranker.version, max_items=s.max_cold_items, reset=s.reset_store)
    try:
        _fold_stored(s, ranker, store, store_path)
    except BaseException:
        store.close()  # a failed load (or swap) must not leave a pool and a listener thread behind
        raise
    return ranker, store


def _fold_stored(s: ServiceSettings, ranker: Ranker, store: ItemStore, store_path: Path | str) -> None:
    ranker.sync(store)
    if s.carry_cold_items:
        carried, skipped = ranker.carry_over(store)
        if carried:
            log.info("carried %d cold items over from older model versions (re-encoded from their text, or converted "
                     "where only the cold-ID rule changed)",
                     len(carried))
        if skipped:
            log.warning(
                "%d cold items of older model versions are not served by %s (no text to re-encode, or no "
                "encoder here): %s%s", len(skipped), ranker.version, ", ".join(map(repr, skipped[:10])),
                " ..." if len(skipped) > 10 else "",
            )
    else:
        stale = store.other_versions()
        if stale:
            log.warning(
                "item store %s holds cold items of other model versions, not served by %s: %s",
                describe_store(store_path), ranker.version, stale,
            )


def _carry_delta(old: ItemStore, since: int, ranker: Ranker, store: ItemStore) -> None:
    """Apply the old version's changes after `since` to `store` (the new version) and serve them."""
    latest: dict[str, StoredItem] = {}
    for row in old.changes_since(since):
        latest[row.item_id] = row  # oldest first: the last row of an id is its state now
    added: list[StoredItem] = []
    for iid, row in latest.items():
        if ranker.is_trained(iid):
            continue
        if row.deleted:
            current = store.get(iid)
            if current is not None and not current.deleted:
                store.delete(iid)
            continue
        try:
            x = ranker.fold_in([NewItem(iid, dict(row.record))])[0]
        except ServiceError as e:  # e.g. posted as a bare embedding: no text to re-encode
            log.warning("cold item %r written during the model swap is not carried over: %s", iid, e)
            continue
        added.append(StoredItem(iid, dict(row.record), x))
    if added:
        store.add(added, upsert=True)
    if latest:
        log.info("model swap: %d cold-item changes made during the load applied to the new model", len(latest))
    ranker.sync(store)


async def swap_model(state: AppState, artifact: Path) -> ModelInfo:
    """Load `artifact` beside the serving model, carry the cold items over, then switch atomically.

    The load (artifact, index, encoder, re-encoding carried items) runs in its own thread while the old
    model keeps serving; the switch happens in the worker thread between two batches, so requests in flight
    finish on the old model and every response names the model that answered it. A load that fails (a
    missing or corrupt artifact) leaves the old model serving and raises with the reason. One swap at a time.
    """
    async with state.swap_lock:
        if state.swap_executor is None or state.store is None:
            raise NotReady("the service is not running")
        loop = asyncio.get_running_loop()
        path = Path(artifact)
        store_path = getattr(state.store, "path", None) or state.settings.store_location
        since = await state.run(state.last_seq)
        try:
            ranker, store = await loop.run_in_executor(
                state.swap_executor, partial(_open, state.settings, path, store_path)
            )
        except (ArtifactError, FileNotFoundError, ValueError) as e:
            log.error("model swap to %s failed, still serving %s: %s", path, state.ranker and state.ranker.version, e)
            reason = " ".join(str(e).split())
            raise SwapFailed(f"cannot load {path}: {reason}; still serving the previous model") from e
        old_version = state.ranker.version if state.ranker is not None else None
        old_store = await state.run(state.switch, ranker, store, since)
        if old_store is not None and old_store is not store:
            await state.run(old_store.close)
        log.info("swapped model %s -> %s (%d items, %d cold)", old_version, ranker.version, ranker.size,
                 ranker.num_cold)
        return state.model_info


async def _sync_forever(state: AppState, changed: asyncio.Event) -> None:
    """Sync every `sync_interval_s`, or at once when the store heard of a commit (PostgreSQL NOTIFY):
    an idle replica folds in another's items without waiting for the timer."""
    while True:
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(state.settings.sync_interval_s):
                await changed.wait()
        changed.clear()  # before the sync: a commit during it sets the event again
        await state.run(state.sync)
        await state.run(state.check_store)


def _reload_on_sighup(state: AppState) -> None:
    """SIGHUP swaps in the artifact at the configured path again (e.g. retrained into the same directory).
    Each worker process handles its own signal: with several workers, signal each (their pids: /readyz)."""
    loop = asyncio.get_running_loop()

    async def reload() -> None:
        try:
            await swap_model(state, state.settings.artifact)
        except ServiceError as e:
            log.error("SIGHUP reload: %s", e)

    def on_hup() -> None:
        state.tasks.append(loop.create_task(reload(), name="sighup-reload"))

    try:
        loop.add_signal_handler(signal.SIGHUP, on_hup)
    except (NotImplementedError, RuntimeError, ValueError):  # not the main thread (tests), or no SIGHUP
        log.debug("SIGHUP reload not available in this thread")


@contextlib.asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: AppState = app.state.service
    s = state.settings
    state.write_token = s.write_token()
    state.read_token = s.read_token.get_secret_value() if s.read_token is not None else None
    if state.write_token is None:
        log.warning(
            "no ALPHAFUSE_API_TOKEN: POST /items and DELETE /items are open to anyone who can reach this port"
        )
    state.executor = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="alphafuse-ranker", initializer=_init_worker_thread,
        initargs=(s.torch_threads, s.faiss_threads),
    )
    state.encoder_executor = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="alphafuse-encoder", initializer=_init_worker_thread,
        initargs=(s.torch_threads, s.faiss_threads),
    )
    state.swap_executor = ThreadPoolExecutor(
        max_workers=1, thread_name_prefix="alphafuse-swap", initializer=_init_worker_thread,
        initargs=(s.torch_threads, s.faiss_threads),
    )
    changed = asyncio.Event()
    loop = asyncio.get_running_loop()

    def wake() -> None:  # called from a store's listener thread
        with contextlib.suppress(RuntimeError):  # the loop closed during shutdown
            loop.call_soon_threadsafe(changed.set)

    state.wake = wake
    try:
        await state.run(_load, state)
        assert state.ranker is not None
        state.batcher = MicroBatcher(
            state.rank_batch, state.executor, max_batch=s.max_batch, max_wait_ms=s.max_wait_ms,
            max_queue=s.max_queue, on_batch=state.metrics.observe_batch,
        )
        state.batcher.start()
        state.tasks.append(asyncio.get_running_loop().create_task(_sync_forever(state, changed), name="store-sync"))
        _reload_on_sighup(state)
        state.ready = True
        kind = state.ranker.index_kind if s.index != "auto" else f"{state.ranker.index_kind} (auto)"
        log.info(
            "ready: model %s, %d items (%d cold), %s index, store %s", state.ranker.version, state.ranker.size,
            state.ranker.num_cold, kind, describe_store(s.store_location),
        )
        yield
    finally:
        state.ready = False
        for task in state.tasks:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        state.tasks.clear()
        if state.batcher is not None:
            await state.batcher.stop()
        state.executor.shutdown(wait=True)
        state.executor = None
        state.encoder_executor.shutdown(wait=True)
        state.encoder_executor = None
        state.swap_executor.shutdown(wait=True)
        state.swap_executor = None
        if state.store is not None:
            state.store.close()


# ------------------------------------------------------------------------------------------------------
# dependencies


# Dependencies are `async def` although none of them awaits: FastAPI runs a plain `def` dependency in a
# worker thread (anyio's to_thread) and back, per dependency and request, which the profile of
# /recommend showed as the largest hand-off cost before ranking even starts.


async def get_state(request: Request) -> AppState:
    return request.app.state.service


def _ready(state: AppState) -> AppState:
    if not state.ready or state.ranker is None:
        raise NotReady("the model is not loaded")
    return state


AnyState = Annotated[AppState, Depends(get_state)]

# declares the scheme in the OpenAPI spec; checking the token is ours (constant time, our error format)
bearer = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="ALPHAFUSE_API_TOKEN for writes; ALPHAFUSE_READ_TOKEN (or the write token) for reads when set",
)
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]


def _matches(cred: HTTPAuthorizationCredentials | None, *tokens: str | None) -> bool:
    if cred is None:
        return False
    given = cred.credentials.encode()
    ok = False
    for token in tokens:
        if token is not None:
            ok |= hmac.compare_digest(given, token.encode())  # no early exit: timing says nothing
    return ok


# One dependency per route that checks the token, then readiness (401 before 503), rather than a token
# dependency beside a state one: FastAPI's dependency solving costs per sub-dependency on every request
# (the /recommend profile, benchmarks/RESULTS.md), and only the bearer scheme needs to stay one for OpenAPI.


async def read_service(request: Request, cred: Credentials) -> AppState:
    state: AppState = request.app.state.service
    if state.read_token is not None and not _matches(cred, state.read_token, state.write_token):
        raise Unauthorized("this route needs Authorization: Bearer <ALPHAFUSE_READ_TOKEN>")
    return _ready(state)


async def write_service(request: Request, cred: Credentials) -> AppState:
    state: AppState = request.app.state.service
    if state.write_token is not None and not _matches(cred, state.write_token):
        raise Unauthorized("this route needs Authorization: Bearer <ALPHAFUSE_API_TOKEN>")
    return _ready(state)


Reader = Annotated[AppState, Depends(read_service)]
Writer = Annotated[AppState, Depends(write_service)]


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    described = {
        400: "the body is not valid JSON", 401: "missing or wrong bearer token", 404: "unknown item",
        409: "conflict with existing items or the model", 413: "request body over ALPHAFUSE_MAX_BODY_BYTES",
        415: "the body is not JSON (Content-Type)", 422: "invalid request (the detail names the problem)",
        503: "not ready, overloaded, too slow, or the item store cannot be written (Retry-After)",
        507: "the item store holds ALPHAFUSE_MAX_COLD_ITEMS cold items",
    }
    return {code: {"model": ErrorResponse, "description": described[code]} for code in codes}


BODY_ERRORS = (400, 413, 415, 422)


async def _service_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ServiceError)
    status = error_status(exc)
    headers: dict[str, str] | None = None
    if status == 503:
        headers = {"Retry-After": "1"}
    elif status == 401:
        headers = {"WWW-Authenticate": 'Bearer realm="alphafuse"'}
    return JSONResponse({"detail": str(exc)}, status_code=status, headers=headers)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's own handler echoes the input (and crashes on NaN or lone surrogates): one bounded line."""
    assert isinstance(exc, RequestValidationError)
    errors = list(exc.errors())
    if is_json_decode_error(errors):
        return JSONResponse({"detail": json_decode_detail(errors)}, status_code=400)
    return JSONResponse({"detail": validation_detail(errors)}, status_code=422)


async def _timed(awaitable: Any, seconds: float, what: str) -> Any:
    # asyncio.timeout, not wait_for: wait_for wraps the awaitable in a task of its own, per request
    try:
        async with asyncio.timeout(seconds):
            return await awaitable
    except TimeoutError:
        raise RequestTimeout(f"{what} took longer than {seconds:g} s (ALPHAFUSE_REQUEST_TIMEOUT_S); retry") from None


def check_item_limits(
    items: Sequence[ItemFields], max_chars: int, max_list: int, names: Sequence[str] | None = None
) -> None:
    """Per-field caps from the settings, before anything is encoded; the detail names the field
    (`items[n].title`, or `names[n].title` when given)."""
    for n, it in enumerate(items):
        where = names[n] if names is not None else f"items[{n}]"
        for name in ("title", "year", "categories", "genres", "brand", "description"):
            value = getattr(it, name)
            values = value if isinstance(value, list) else [value]
            if isinstance(value, list) and len(value) > max_list:
                raise InvalidRequest(
                    f"{where}.{name} has {len(value)} entries; at most {max_list} (ALPHAFUSE_MAX_LIST_ITEMS)"
                )
            for v in values:
                if isinstance(v, str) and len(v) > max_chars:
                    raise InvalidRequest(
                        f"{where}.{name} has a string of {len(v)} characters; at most {max_chars} "
                        "(ALPHAFUSE_MAX_TEXT_CHARS)"
                    )


# ------------------------------------------------------------------------------------------------------
# routes


async def _fold_history_texts(body: RecommendRequest, svc: AppState) -> list[str | FoldedEntry | np.ndarray]:
    """The history with each text entry replaced by its fused vector, folded in exactly as POST /items
    folds a new item in (in the encoder thread), but stored nowhere."""
    history: list[str | FoldedEntry | np.ndarray] = [h if isinstance(h, str) else "" for h in body.history]
    texts = [(i, h) for i, h in enumerate(body.history) if isinstance(h, HistoryText)]
    if not texts:
        return history
    s = svc.settings
    if len(texts) > s.max_items_per_request:
        raise InvalidRequest(
            f"the history has {len(texts)} text entries; at most {s.max_items_per_request} "
            "(ALPHAFUSE_MAX_ITEMS_PER_REQUEST)"
        )
    names = [f"history[{i}]" for i, _ in texts]
    check_item_limits([h for _, h in texts], s.max_text_chars, s.max_list_items, names)
    assert svc.ranker is not None
    items = [NewItem(name, h.record(), h.embedding) for name, (_, h) in zip(names, texts, strict=True)]
    folded = await _timed(
        svc.run_encoder(svc.ranker.fold_history, items), s.request_timeout_s, "encoding the history's text entries"
    )
    for (i, _), entry in zip(texts, folded, strict=True):
        history[i] = entry
    return history


async def recommend(body: RecommendRequest, svc: Reader) -> Response:
    """Answers a `RecommendResponse` (declared on the route), built as bytes: see `service.responses`."""
    assert svc.batcher is not None
    query = Query(
        history=await _fold_history_texts(body, svc), k=body.k, exclude_history=body.exclude_history,
        allow=body.allow, deny=body.deny, ignore_unknown=body.ignore_unknown, explain=body.explain,
    )
    ranking = await _timed(svc.batcher.submit(query), svc.settings.request_timeout_s, "ranking")
    return json_response(recommend_body(ranking, svc.model_dict))  # the ranking names its own model


async def add_items(body: ItemsCreateRequest, svc: Writer) -> ItemsCreateResponse:
    s = svc.settings
    check_item_limits(body.items, s.max_text_chars, s.max_list_items)
    items = [NewItem(it.item_id, it.record(), it.embedding) for it in body.items]
    assert svc.ranker is not None
    folded = await _timed(
        svc.run_encoder(svc.ranker.fold_in_new, items, upsert=body.upsert), s.request_timeout_s, "encoding the items"
    )
    # never time-limited: once the commit starts, the client must learn its outcome
    added, model = await svc.run(svc.commit_items, folded, body.upsert)
    return ItemsCreateResponse(
        items=[ItemResponse(item_id=a.item_id, record=a.record, cold=True) for a in added],
        replaced=[a.item_id for a in added if a.replaced], model=model,
    )


async def search(
    svc: Reader,
    q: Annotated[str, QueryParam(min_length=1, description="the text to search for (a title, a few words)")],
    k: Annotated[int, QueryParam(ge=1, description="how many items to return")] = 10,
) -> SearchResponse:
    assert svc.ranker is not None
    s = svc.settings
    if len(q) > s.max_text_chars:
        raise InvalidRequest(f"q has {len(q)} characters; at most {s.max_text_chars} (ALPHAFUSE_MAX_TEXT_CHARS)")
    if svc.ranker.search_unavailable is not None:
        raise FoldInUnavailable(svc.ranker.search_unavailable)
    ranker = svc.ranker
    z = await _timed(svc.run_encoder(ranker.query_language, q), s.request_timeout_s, "encoding the query")
    hits, model = await svc.run(svc.search, q, z, ranker.version, k)
    return SearchResponse(
        items=[SearchHit(item_id=h.item_id, score=h.score, cold=h.cold, record=record) for h, record in hits],
        model=model,
    )


async def get_item(item_id: str, svc: Reader) -> ItemResponse:
    record, cold = await svc.run(svc.get_item, item_id)
    return ItemResponse(item_id=item_id, record=record, cold=cold)


async def delete_item(item_id: str, svc: Writer) -> ItemDeletedResponse:
    model = await svc.run(svc.delete_item, item_id)
    return ItemDeletedResponse(item_id=item_id, model=model)


async def swap(body: SwapRequest, svc: Writer) -> SwapResponse:
    artifact = Path(body.artifact) if body.artifact is not None else svc.settings.artifact
    previous = svc.model_info
    model = await swap_model(svc, artifact)
    assert svc.ranker is not None
    return SwapResponse(model=model, previous=previous, items=svc.ranker.size, cold_items=svc.ranker.num_cold)


async def healthz() -> HealthResponse:
    return HealthResponse(status="ok")


async def readyz(state: AnyState, response: Response) -> ReadyResponse:
    if not state.ready or state.ranker is None:
        response.status_code = 503
        return ReadyResponse(status="loading", pid=os.getpid())
    r = state.ranker
    if state.store is not None and (state.store_problem is None or state.store.recovers):
        state.store_problem = state.store.health()
    status = "ready"
    if state.store_problem is not None and state.store is not None and state.store.recovers:
        # a shared database that went away fails every replica alike: answering 503 would take them all
        # out of the load balancer, when reads still serve; writes say 503 themselves
        status = "read-only"
    elif state.store_problem is not None:
        status = "store unavailable"  # this process's store file: other workers or replicas may be fine
        response.status_code = 503
        response.headers["Retry-After"] = "1"
    return ReadyResponse(
        status=status, model=state.model_info,
        items=r.size, cold_items=r.num_cold, index=r.index_kind, pid=os.getpid(),
        problem=state.store_problem,
    )


async def metrics(state: AnyState) -> Response:
    return Response(state.metrics.render(), media_type=state.metrics.content_type)


# Swagger UI and ReDoc are served from the files the fastapi-offline package ships (swagger-ui-dist 5,
# which renders the OpenAPI 3.1 that FastAPI writes), not from FastAPI's default CDN: offline, or behind a
# proxy that blocks it, the CDN page renders blank.
DOCS_ASSETS = "/docs/assets"
DOCS_ASSET_PACKAGE = ("fastapi_offline", "static")
OAUTH2_REDIRECT = "/docs/oauth2-redirect"


def _add_docs(app: FastAPI) -> None:
    """/docs (Swagger UI), its OAuth2 redirect page and /redoc, every asset from `DOCS_ASSETS`."""
    app.router.routes.append(Mount(DOCS_ASSETS, StaticFiles(packages=[DOCS_ASSET_PACKAGE]), name="docs-assets"))
    assert app.openapi_url is not None

    def local(request: Request, path: str) -> str:
        # behind a proxy that strips a prefix, the browser needs the prefix back (FastAPI's own docs do this)
        return request.scope.get("root_path", "").rstrip("/") + path

    async def swagger_ui(request: Request) -> HTMLResponse:
        assert app.openapi_url is not None
        return get_swagger_ui_html(
            openapi_url=local(request, app.openapi_url), title=f"{app.title} - Swagger UI",
            oauth2_redirect_url=local(request, OAUTH2_REDIRECT),
            swagger_js_url=local(request, f"{DOCS_ASSETS}/swagger-ui-bundle.js"),
            swagger_css_url=local(request, f"{DOCS_ASSETS}/swagger-ui.css"),
            swagger_favicon_url=local(request, f"{DOCS_ASSETS}/favicon.png"),
        )

    async def oauth2_redirect(request: Request) -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    async def redoc(request: Request) -> HTMLResponse:
        assert app.openapi_url is not None
        return get_redoc_html(
            openapi_url=local(request, app.openapi_url), title=f"{app.title} - ReDoc",
            redoc_js_url=local(request, f"{DOCS_ASSETS}/redoc.standalone.js"),
            redoc_favicon_url=local(request, f"{DOCS_ASSETS}/favicon.png"), with_google_fonts=False,
        )

    app.add_route("/docs", swagger_ui, include_in_schema=False)
    app.add_route(OAUTH2_REDIRECT, oauth2_redirect, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


UI_PATH = "/ui"


def _add_ui(app: FastAPI) -> None:
    """/ui: the playground, plain HTML + JS shipped in this package (`service/ui`), using only the public
    API above; /ui without the slash redirects to it."""
    app.router.routes.append(Mount(UI_PATH, StaticFiles(packages=[("service", "ui")], html=True), name="ui"))


def create_app(settings: ServiceSettings | None = None) -> FastAPI:
    """The app for `settings` (default: read from `ALPHAFUSE_*` environment variables)."""
    settings = settings if settings is not None else ServiceSettings()  # type: ignore[call-arg]
    app = FastAPI(
        title="AlphaFuse recommender",
        summary="Next-item recommendations from a trained AlphaFuse artifact, with cold items folded in from text",
        lifespan=lifespan,
        docs_url=None,  # _add_docs: the same pages, assets served locally
        redoc_url=None,
    )
    app.state.service = AppState(settings=settings, metrics=ServiceMetrics())
    app.add_exception_handler(ServiceError, _service_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    # outermost last: metrics see every answer, including the guard's 413 / 415
    app.add_middleware(RequestGuard, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(MetricsMiddleware, metrics=app.state.service.metrics, routes=app.router.routes)
    app.add_api_route(
        "/recommend", recommend, methods=["POST"], response_model=RecommendResponse,
        responses=_errors(*BODY_ERRORS, 401, 503), summary="Top-k items for a history", tags=["recommend"],
    )
    app.add_api_route(
        "/items", add_items, methods=["POST"], status_code=201, response_model=ItemsCreateResponse,
        responses=_errors(*BODY_ERRORS, 401, 409, 503, 507),
        summary="Add cold items (durable before 201)", tags=["items"],
    )
    app.add_api_route(
        "/search", search, methods=["GET"], response_model=SearchResponse,
        responses=_errors(401, 409, 422, 503),
        summary="Items whose text is nearest to a query text (language coordinates, trained and cold items)",
        tags=["items"],
    )
    app.add_api_route(
        "/items/{item_id:path}", get_item, methods=["GET"], response_model=ItemResponse,
        responses=_errors(401, 404, 422, 503), summary="A trained or cold item's record", tags=["items"],
    )
    app.add_api_route(
        "/items/{item_id:path}", delete_item, methods=["DELETE"], response_model=ItemDeletedResponse,
        responses=_errors(401, 404, 409, 422, 503),
        summary="Delete a cold item (durable before 200; trained items: 409)", tags=["items"],
    )
    app.add_api_route(
        "/admin/model", swap, methods=["POST"], response_model=SwapResponse,
        responses=_errors(*BODY_ERRORS, 401, 503),
        summary="Swap in a new model artifact without downtime (this worker process)", tags=["ops"],
    )
    app.add_api_route("/healthz", healthz, methods=["GET"], response_model=HealthResponse, tags=["ops"],
                      summary="Alive (no dependencies checked)")
    app.add_api_route(
        "/readyz", readyz, methods=["GET"], response_model=ReadyResponse, tags=["ops"],
        responses={503: {"model": ReadyResponse, "description": "model not loaded"}},
        summary="Ready to serve (model and index loaded)",
    )
    app.add_api_route("/metrics", metrics, methods=["GET"], tags=["ops"], summary="Prometheus metrics",
                      response_class=Response)
    _add_docs(app)
    _add_ui(app)
    return app
