"""MicroBatcher: batches form from concurrent submits, bounded in size, and errors reach the right caller."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor

import pytest

from service.batching import MicroBatcher
from service.errors import NotReady, Overloaded


class Recorder:
    """Batch function that squares numbers, fails on negatives, and notes the batches and threads."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.batches: list[list[int]] = []
        self.threads: set[str] = set()
        self.delay_s = delay_s

    def __call__(self, batch: Sequence[int]) -> list[int | BaseException]:
        self.batches.append(list(batch))
        self.threads.add(threading.current_thread().name)
        if 99 in batch:
            raise RuntimeError("the whole batch broke")
        time.sleep(self.delay_s)
        return [ValueError(f"negative: {x}") if x < 0 else x * x for x in batch]


def _run(coro):  # noqa: ANN001, ANN202
    return asyncio.run(coro)


async def _with_batcher(fn: Recorder, body, **kwargs):  # noqa: ANN001, ANN202
    with ThreadPoolExecutor(1, thread_name_prefix="ranker") as pool:
        batcher: MicroBatcher[int, int] = MicroBatcher(fn, pool, **kwargs)
        batcher.start()
        try:
            return await body(batcher)
        finally:
            await batcher.stop()


def test_concurrent_requests_share_batches_and_get_their_own_answers() -> None:
    fn = Recorder()
    sizes: list[int] = []

    async def body(b: MicroBatcher[int, int]) -> list[int]:
        return await asyncio.gather(*(b.submit(x) for x in range(20)))

    out = _run(_with_batcher(fn, body, max_batch=8, max_wait_ms=50, on_batch=lambda n, s: sizes.append(n)))
    assert out == [x * x for x in range(20)]
    assert [len(b) for b in fn.batches] == [8, 8, 4] == sizes  # bounded by max_batch, nothing lost
    assert fn.threads == {"ranker_0"}  # all work in the one worker thread


def test_without_a_timer_batches_form_while_the_previous_batch_runs() -> None:
    fn = Recorder(delay_s=0.05)

    async def body(b: MicroBatcher[int, int]) -> list[int]:
        first = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.01)  # the first batch (just [1]) is running now
        rest = await asyncio.gather(*(b.submit(x) for x in range(2, 7)))
        return [await first, *rest]

    out = _run(_with_batcher(fn, body, max_batch=32, max_wait_ms=0))
    assert out == [x * x for x in range(1, 7)]
    assert fn.batches == [[1], [2, 3, 4, 5, 6]]


def test_max_batch_one_disables_batching() -> None:
    fn = Recorder()

    async def body(b: MicroBatcher[int, int]) -> list[int]:
        return await asyncio.gather(*(b.submit(x) for x in range(5)))

    assert _run(_with_batcher(fn, body, max_batch=1, max_wait_ms=10)) == [0, 1, 4, 9, 16]
    assert fn.batches == [[0], [1], [2], [3], [4]]


def test_errors_reach_only_their_request_and_batch_failures_reach_all() -> None:
    fn = Recorder()

    async def body(b: MicroBatcher[int, int]) -> list[object]:
        mixed = await asyncio.gather(b.submit(2), b.submit(-1), b.submit(3), return_exceptions=True)
        broken = await asyncio.gather(b.submit(99), b.submit(4), return_exceptions=True)
        after = await b.submit(5)  # the consumer survives a failed batch
        return [*mixed, *broken, after]

    out = _run(_with_batcher(fn, body, max_batch=8, max_wait_ms=20))
    assert out[0] == 4 and out[2] == 9 and isinstance(out[1], ValueError) and "negative: -1" in str(out[1])
    assert all(isinstance(e, RuntimeError) and "whole batch" in str(e) for e in out[3:5])
    assert out[5] == 25


def test_backpressure_and_stopped_batcher() -> None:
    fn = Recorder(delay_s=0.2)

    async def body(b: MicroBatcher[int, int]) -> None:
        running = asyncio.ensure_future(b.submit(1))
        await asyncio.sleep(0.02)
        queued = [asyncio.ensure_future(b.submit(x)) for x in (2, 3)]
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="2 requests queued"):
            await b.submit(4)
        await running
        await asyncio.gather(*queued)

    _run(_with_batcher(fn, body, max_batch=1, max_queue=2))

    async def stopped() -> None:
        with ThreadPoolExecutor(1) as pool:
            b: MicroBatcher[int, int] = MicroBatcher(fn, pool)
            with pytest.raises(NotReady):
                await b.submit(1)

    _run(stopped())


def test_rejects_bad_settings() -> None:
    with ThreadPoolExecutor(1) as pool, pytest.raises(ValueError, match="max_batch must be >= 1"):
        MicroBatcher(Recorder(), pool, max_batch=0)
