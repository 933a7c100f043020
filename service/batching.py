"""Micro-batching of concurrent requests into one call of a batch function.

Concurrent `/recommend` calls `submit` a query and await its future. One consumer task takes the first
queued query, then up to `max_batch - 1` more: whatever is already queued, plus what arrives within
`max_wait_ms` of the first. The batch runs in the single worker thread (torch and faiss never run
twice at once, and the event loop stays free), and each future gets its own result or its own error.

With `max_wait_ms = 0` there is no timer: batches are whatever queued up while the previous batch ran,
which costs no latency at low load and still batches under load. `max_batch = 1` disables batching
(the before/after comparison).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from concurrent.futures import Executor
from typing import Generic, TypeVar

from service.errors import NotReady, Overloaded

log = logging.getLogger(__name__)

Q = TypeVar("Q")
R = TypeVar("R")


class MicroBatcher(Generic[Q, R]):
    """`fn(batch) -> results` where each result is the answer or a BaseException for that query."""

    def __init__(
        self,
        fn: Callable[[list[Q]], Sequence[R | BaseException]],
        executor: Executor,
        *,
        max_batch: int = 32,
        max_wait_ms: float = 0.0,
        max_queue: int = 1024,
        on_batch: Callable[[int, float], None] | None = None,
    ) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        self._fn = fn
        self._executor = executor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000.0
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: asyncio.Queue[tuple[Q, asyncio.Future[R]]] = asyncio.Queue()
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="micro-batcher")

    async def stop(self) -> None:
        """Stop taking batches; queued requests fail with NotReady (the batch in flight completes)."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        while not self._queue.empty():
            _, fut = self._queue.get_nowait()
            if not fut.done():
                fut.set_exception(NotReady("the service is shutting down"))

    async def submit(self, query: Q) -> R:
        if self._task is None:
            raise NotReady("the service is not running")
        if self._queue.qsize() >= self.max_queue:
            raise Overloaded(f"{self._queue.qsize()} requests queued (max_queue {self.max_queue}); retry later")
        fut: asyncio.Future[R] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait((query, fut))
        self._arrived.set()
        return await fut

    async def _collect(self) -> list[tuple[Q, asyncio.Future[R]]]:
        batch = [await self._queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            while len(batch) < self.max_batch and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            remaining = deadline - loop.time()
            if len(batch) >= self.max_batch or remaining <= 0:
                break
            self._arrived.clear()
            # waiting on an Event (not on queue.get) so a timeout can never lose a dequeued item
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._arrived.wait(), remaining)
        return batch

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect()
            live = [(q, f) for q, f in batch if not f.done()]  # skip requests whose client went away
            if not live:
                continue
            started = loop.time()
            try:
                results = await loop.run_in_executor(self._executor, self._fn, [q for q, _ in live])
                if len(results) != len(live):
                    raise RuntimeError(f"batch function returned {len(results)} results for {len(live)} queries")
            except asyncio.CancelledError:
                for _, f in live:
                    if not f.done():
                        f.set_exception(NotReady("the service is shutting down"))
                raise
            except Exception as e:  # the whole batch failed: every request in it gets the error
                log.exception("batch of %d failed", len(live))
                for _, f in live:
                    if not f.done():
                        f.set_exception(e)
                continue
            for (_, f), r in zip(live, results, strict=True):
                if f.done():
                    continue
                if isinstance(r, BaseException):
                    f.set_exception(r)
                else:
                    f.set_result(r)
            if self._on_batch is not None:
                self._on_batch(len(live), loop.time() - started)
