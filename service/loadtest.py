"""A bounded HTTP load generator for the recommender service (loopback only).

`concurrency` worker coroutines, each with its own `httpx.AsyncClient` holding one keep-alive connection,
in a closed loop: each worker sends its next request as soon as the previous one answers.
A run stops at `duration_s` or after `max_requests` requests, whichever comes first; requests in flight
at the deadline are allowed to finish (each is bounded by `timeout_s`). `run_open_loop` instead sends
at a fixed arrival rate, whatever the server does: the latency a user sees under a given load.

Workloads:
- `path="/recommend"`: POST a history drawn at random (seeded) from `histories`; with probability
  `items_ratio` a worker instead POSTs one fresh synthetic cold item to `/items` (unique id, a title
  made of words from real titles or a fixed list), which makes the server encode text while it ranks.
- any other path (e.g. `/healthz`): a plain GET, the baseline for what the HTTP stack alone costs.

The load generator shares the machine with the server, so at high concurrency both compete for CPU;
read its numbers as what this box sustains end to end, not as the server's capacity in isolation.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import json
import logging
import random
import ssl
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import numpy as np

logger = logging.getLogger(__name__)

MAX_REQUESTS_CAP = 100_000  # hard ceiling on one run, whatever the caller asks
MAX_DURATION_S = 3_600.0  # hard ceiling on one run's duration
MAX_CONCURRENCY = 1_024
RECOMMEND_PATH = "/recommend"
ITEMS_PATH = "/items"
# Used for synthetic titles when no real titles are given.
FALLBACK_WORDS: tuple[str, ...] = (
    "wooden", "puzzle", "deluxe", "kids", "classic", "building", "set", "racing", "car", "doll", "house",
    "magnetic", "tiles", "science", "kit", "plush", "bear", "card", "game", "family", "outdoor", "water",
    "blaster", "train", "track", "art", "craft", "marker", "robot", "dinosaur", "figure", "board",
)  # fmt: skip

NewItem = Callable[[int], dict[str, Any]]  # request number -> one item record for POST /items


def is_loopback_url(url: str) -> bool:
    """True if `url`'s host is a loopback address (127.0.0.0/8, ::1) or the name `localhost`."""
    host = urlsplit(url).hostname
    if host is None:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class SyntheticItems:
    """Fresh cold items with run-unique ids and titles made of real (or fallback) title words."""

    def __init__(self, words: Sequence[str] | None = None, *, seed: int = 0, prefix: str | None = None) -> None:
        self.words = list(dict.fromkeys(w for w in (words or ()) if w)) or list(FALLBACK_WORDS)
        self.rng = random.Random(seed)
        # a random token, not the seed, so that two runs against one durable store never collide
        self.prefix = prefix if prefix is not None else f"loadtest-{uuid.uuid4().hex[:10]}"

    def __call__(self, n: int) -> dict[str, Any]:
        title = " ".join(self.rng.choice(self.words) for _ in range(self.rng.randint(3, 7))).title()
        return {"item_id": f"{self.prefix}-{n}", "title": title, "categories": ["Toys & Games", "Load Test"]}


EXAMPLE_CHARS = 200  # of the first error body kept per status or exception


def _error_text(response: httpx.Response) -> str:
    """The service's one-line `detail`, else the start of the body."""
    try:
        body = response.json()
    except ValueError:
        body = None
    detail = body.get("detail") if isinstance(body, dict) else None
    text = detail if isinstance(detail, str) else response.text
    return " ".join(text.split())[:EXAMPLE_CHARS]


@dataclass
class _RouteStats:
    latencies_ms: list[float] = field(default_factory=list)  # of 2xx responses only
    requests: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    exceptions: Counter[str] = field(default_factory=Counter)
    # the first answer per failing status (or exception type): a count of 422s alone does not say why
    examples: dict[str, str] = field(default_factory=dict)

    def record(self, response: httpx.Response) -> bool:
        """Count one answer; True if it was a success."""
        code = str(response.status_code)
        self.statuses[code] += 1
        if response.is_success:
            return True
        if code not in self.examples:
            self.examples[code] = _error_text(response)
        return False

    def record_exception(self, exc: Exception) -> None:
        name = type(exc).__name__
        self.exceptions[name] += 1
        if name not in self.examples:
            self.examples[name] = " ".join(str(exc).split())[:EXAMPLE_CHARS]

    def summary(self, duration_s: float) -> dict[str, Any]:
        ok = len(self.latencies_ms)
        out: dict[str, Any] = {
            "requests": self.requests,
            "ok": ok,
            "errors": self.requests - ok,
            "throughput_rps": self.requests / duration_s if duration_s > 0 else 0.0,
            "ok_rps": ok / duration_s if duration_s > 0 else 0.0,
            "status": dict(sorted(self.statuses.items())),
            "exceptions": dict(sorted(self.exceptions.items())),
            "error_examples": dict(sorted(self.examples.items())),
        }
        out["latency_ms"] = _latency_summary(self.latencies_ms)
        return out


def _latency_summary(values: list[float]) -> dict[str, float | None]:
    if not values:
        return {"p50": None, "p95": None, "p99": None, "max": None, "mean": None}
    arr = np.asarray(values, dtype=np.float64)
    p50, p95, p99 = np.percentile(arr, [50, 95, 99]).tolist()
    return {"p50": p50, "p95": p95, "p99": p99, "max": float(arr.max()), "mean": float(arr.mean())}


async def run_loadtest(
    url: str,
    histories: Sequence[Sequence[str]],
    *,
    duration_s: float,
    concurrency: int,
    items_ratio: float = 0.0,
    max_requests: int | None = None,
    k: int = 10,
    path: str = RECOMMEND_PATH,
    new_item: NewItem | None = None,
    title_words: Sequence[str] | None = None,
    exclude_history: bool = True,
    ignore_unknown: bool = False,
    timeout_s: float = 10.0,
    seed: int = 0,
    allow_remote: bool = False,
) -> dict[str, Any]:
    """Drive `url` for `duration_s` seconds (or `max_requests` requests) and return a JSON-able report.

    Report: totals (`requests`, `ok`, `errors`, `duration_s`, `throughput_rps`), per route ("POST
    /recommend", "POST /items", "GET /healthz" ...) the same counts, 2xx latency p50/p95/p99/max/mean in
    ms, errors by HTTP status and by exception type. `new_item(n)` overrides the synthetic item factory.
    """
    if not allow_remote and not is_loopback_url(url):
        raise ValueError(f"refusing to load-test {url!r}: only loopback hosts (127.0.0.0/8, ::1, localhost)")
    if urlsplit(url).scheme not in ("http", "https"):
        raise ValueError(f"url must be http:// or https://, got {url!r}")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S:g}], got {duration_s}")
    if not 1 <= concurrency <= MAX_CONCURRENCY:
        raise ValueError(f"concurrency must be in [1, {MAX_CONCURRENCY}], got {concurrency}")
    if not 0.0 <= items_ratio <= 1.0:
        raise ValueError(f"items_ratio must be in [0, 1], got {items_ratio}")
    limit = MAX_REQUESTS_CAP if max_requests is None else max_requests
    if not 1 <= limit <= MAX_REQUESTS_CAP:
        raise ValueError(f"max_requests must be in [1, {MAX_REQUESTS_CAP}], got {max_requests}")
    if not path.startswith("/"):
        raise ValueError(f"path must start with '/', got {path!r}")
    recommend = path == RECOMMEND_PATH
    if recommend and items_ratio < 1.0 and not histories:
        raise ValueError("the /recommend workload needs at least one history")
    if timeout_s <= 0:
        raise ValueError(f"timeout_s must be positive, got {timeout_s}")

    make_item = new_item if new_item is not None else SyntheticItems(title_words, seed=seed)
    rng = random.Random(seed)
    history_list = [list(h) for h in histories]
    stats: dict[str, _RouteStats] = {}
    issued = 0
    items_posted = 0

    def next_request() -> tuple[str, str, dict[str, Any] | None]:
        nonlocal items_posted
        if items_ratio > 0.0 and rng.random() < items_ratio:
            items_posted += 1
            return "POST", ITEMS_PATH, {"items": [make_item(items_posted)], "upsert": False}
        if recommend:
            history = history_list[rng.randrange(len(history_list))]
            body = {"history": history, "k": k, "exclude_history": exclude_history, "ignore_unknown": ignore_unknown}
            return "POST", RECOMMEND_PATH, body
        return "GET", path, None

    # One client per worker, each with a single keep-alive connection. One shared client whose pool holds
    # `concurrency` connections is the obvious design but httpcore's pool scans every connection for every
    # queued request, so at 32 connections the load generator, not the server, set the ceiling (measured
    # here on GET /healthz: ~130 rps shared vs ~350 rps per-worker, against ~1,500 for a raw-socket client).
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    tls = ssl.create_default_context()  # built once: every client would otherwise load the CA bundle
    async with contextlib.AsyncExitStack() as stack:
        clients = [
            # trust_env=False: a proxy from the environment must never carry loopback traffic elsewhere
            await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s, trust_env=False, verify=tls)
            )
            for _ in range(concurrency)
        ]
        start = time.perf_counter()
        deadline = start + duration_s

        async def worker(client: httpx.AsyncClient) -> None:
            nonlocal issued
            # the event loop is single-threaded: check-and-increment cannot race between workers
            while issued < limit and time.perf_counter() < deadline:
                issued += 1
                method, route_path, body = next_request()
                route = stats.setdefault(f"{method} {route_path}", _RouteStats())
                route.requests += 1
                t0 = time.perf_counter()
                try:
                    response = await client.request(method, route_path, json=body)
                except httpx.HTTPError as exc:
                    route.record_exception(exc)
                    continue
                elapsed_ms = (time.perf_counter() - t0) * 1e3
                if route.record(response):
                    route.latencies_ms.append(elapsed_ms)

        await asyncio.gather(*(worker(client) for client in clients))
        duration = time.perf_counter() - start

    routes = {name: s.summary(duration) for name, s in sorted(stats.items())}
    total = sum(s.requests for s in stats.values())
    ok = sum(len(s.latencies_ms) for s in stats.values())
    statuses: Counter[str] = Counter()
    exceptions: Counter[str] = Counter()
    examples: dict[str, str] = {}
    for s in stats.values():
        statuses.update({c: n for c, n in s.statuses.items() if not c.startswith("2")})
        exceptions.update(s.exceptions)
        for key, text in s.examples.items():
            examples.setdefault(key, text)
    return {
        "url": url,
        "path": path,
        "concurrency": concurrency,
        "items_ratio": items_ratio,
        "duration_limit_s": duration_s,
        "max_requests": limit,
        "k": k,
        "seed": seed,
        "requests": total,
        "ok": ok,
        "errors": total - ok,
        "duration_s": duration,
        "throughput_rps": total / duration if duration > 0 else 0.0,
        "ok_rps": ok / duration if duration > 0 else 0.0,
        "latency_ms": _latency_summary([v for s in stats.values() for v in s.latencies_ms]),
        "error_status": dict(sorted(statuses.items())),
        "error_exceptions": dict(sorted(exceptions.items())),
        "error_examples": dict(sorted(examples.items())),
        "routes": routes,
    }


async def run_open_loop(
    url: str,
    histories: Sequence[Sequence[str]],
    *,
    rate_rps: float,
    duration_s: float,
    connections: int = 64,
    arrivals: str = "poisson",
    k: int = 10,
    path: str = RECOMMEND_PATH,
    exclude_history: bool = True,
    timeout_s: float = 10.0,
    seed: int = 0,
    allow_remote: bool = False,
) -> dict[str, Any]:
    """Send requests at a fixed mean rate, whatever the server does (an open loop), for `duration_s`.

    A closed loop slows down with the server, so its latency never shows queueing; real users keep
    arriving. Arrivals are Poisson (`arrivals="poisson"`, seeded) or evenly spaced ("uniform"). Each
    request takes one of `connections` keep-alive connections, waiting for a free one if all are busy,
    and its latency counts from its *scheduled* arrival, so time spent waiting for a connection, or
    behind a generator that fell behind, is latency too (no coordinated omission). The report has the
    keys of `run_loadtest`'s plus `offered_rps`, `arrivals` and `max_send_lag_ms` (how late the
    generator itself sent: large values mean the numbers say more about the client than the server).
    """
    if not allow_remote and not is_loopback_url(url):
        raise ValueError(f"refusing to load-test {url!r}: only loopback hosts (127.0.0.0/8, ::1, localhost)")
    if not 0 < duration_s <= MAX_DURATION_S:
        raise ValueError(f"duration_s must be in (0, {MAX_DURATION_S:g}], got {duration_s}")
    if not rate_rps > 0:
        raise ValueError(f"rate_rps must be positive, got {rate_rps}")
    if not 1 <= connections <= MAX_CONCURRENCY:
        raise ValueError(f"connections must be in [1, {MAX_CONCURRENCY}], got {connections}")
    if arrivals not in ("poisson", "uniform"):
        raise ValueError(f"arrivals must be 'poisson' or 'uniform', got {arrivals!r}")
    recommend = path == RECOMMEND_PATH
    if recommend and not histories:
        raise ValueError("the /recommend workload needs at least one history")
    rng = random.Random(seed)
    offsets: list[float] = []  # arrival times in s from the start, all before duration_s
    t = 0.0
    while len(offsets) < MAX_REQUESTS_CAP:
        offsets.append(t)
        t = t + rng.expovariate(rate_rps) if arrivals == "poisson" else len(offsets) / rate_rps
        if t >= duration_s:
            break
    history_list = [list(h) for h in histories]
    route = f"{'POST' if recommend else 'GET'} {path}"
    stats = _RouteStats()
    lag_ms = 0.0
    limits = httpx.Limits(max_connections=1, max_keepalive_connections=1)
    async with contextlib.AsyncExitStack() as stack:
        idle: asyncio.Queue[httpx.AsyncClient] = asyncio.Queue()
        for _ in range(connections):
            idle.put_nowait(await stack.enter_async_context(
                httpx.AsyncClient(base_url=url, limits=limits, timeout=timeout_s, trust_env=False)
            ))  # fmt: skip

        async def one(scheduled: float, body: dict[str, Any] | None) -> None:
            client = await idle.get()
            try:
                response = await client.request("POST" if recommend else "GET", path, json=body)
            except httpx.HTTPError as exc:
                stats.record_exception(exc)
                return
            finally:
                idle.put_nowait(client)
            if stats.record(response):
                stats.latencies_ms.append((time.perf_counter() - scheduled) * 1e3)

        start = time.perf_counter()
        tasks = []
        for offset in offsets:
            scheduled = start + offset
            delay = scheduled - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            else:
                lag_ms = max(lag_ms, -delay * 1e3)
            body = None
            if recommend:
                history = history_list[rng.randrange(len(history_list))]
                body = {"history": history, "k": k, "exclude_history": exclude_history}
            stats.requests += 1
            tasks.append(asyncio.create_task(one(scheduled, body)))
        await asyncio.gather(*tasks)
        duration = time.perf_counter() - start
    summary = stats.summary(duration)
    return {
        "url": url, "path": path, "mode": "open", "arrivals": arrivals, "offered_rps": rate_rps,
        "connections": connections, "concurrency": connections, "duration_limit_s": duration_s, "k": k,
        "seed": seed, "requests": stats.requests, "ok": summary["ok"], "errors": summary["errors"],
        "duration_s": duration, "throughput_rps": summary["throughput_rps"], "ok_rps": summary["ok_rps"],
        "latency_ms": summary["latency_ms"], "error_status": {c: n for c, n in summary["status"].items()
                                                              if not c.startswith("2")},
        "error_exceptions": summary["exceptions"], "error_examples": summary["error_examples"],
        "max_send_lag_ms": lag_ms, "routes": {route: summary},
    }  # fmt: skip


def failure_verdict(report: dict[str, Any], max_failure_share: float) -> str | None:
    """None if the run passes; else one line: how many requests failed and the commonest error, with
    the first answer it got. A run fails when every request failed, or more than `max_failure_share` did."""
    total, errors = int(report["requests"]), int(report["errors"])
    if total == 0 or errors == 0 or (errors < total and errors / total <= max_failure_share):
        return None
    causes = Counter({f"HTTP {code}": n for code, n in report["error_status"].items()})
    causes.update(report["error_exceptions"])
    cause, count = causes.most_common(1)[0]
    example = report.get("error_examples", {}).get(cause.removeprefix("HTTP "), "")
    return (
        f"{errors} of {total} requests failed ({errors / total:.1%}; allowed {max_failure_share:.1%}); "
        f"commonest: {cause} x{count}" + (f": {example}" if example else "")
    )


# ---------------------------------------------------------------------------------------------- workload


def load_workload(
    data_dir: Path, split_dir: Path | None, protocol: str, seed: int, limit: int
) -> tuple[list[list[str]], list[str]]:
    """(up to `limit` test-split histories drawn with `seed`, the distinct words of the catalogue titles)."""
    from training.data import load_dataset
    from training.splits import split_for

    if limit <= 0:
        raise ValueError(f"limit must be positive, got {limit}")
    ds = load_dataset(Path(data_dir))
    split = split_for(ds, protocol, seed, Path(split_dir) if split_dir is not None else None)
    histories = [list(case.history) for case in split.test if case.history]
    if not histories:
        raise ValueError(f"the {protocol} test split of {data_dir} has no non-empty history")
    if len(histories) > limit:
        picked = np.random.default_rng(seed).choice(len(histories), size=limit, replace=False)
        histories = [histories[i] for i in sorted(picked.tolist())]
    words: dict[str, None] = {}
    for rec in ds.items.values():
        title = rec.get("title")
        if isinstance(title, str):
            words.update(dict.fromkeys(w for w in title.split() if w.isalpha() and len(w) > 2))
    return histories, list(words)


def load_histories(data_dir: Path, split_dir: Path | None, protocol: str, seed: int, limit: int) -> list[list[str]]:
    """Up to `limit` histories of the dataset's TEST split (the split training used), drawn with `seed`."""
    return load_workload(data_dir, split_dir, protocol, seed, limit)[0]


def read_histories_file(path: Path) -> list[list[str]]:
    """A JSON list whose entries are lists of item ids or objects with a "history" list."""
    raw = json.loads(Path(path).read_text())
    if not isinstance(raw, list):
        raise ValueError(f"{path}: expected a JSON list of histories, got {type(raw).__name__}")
    out: list[list[str]] = []
    for n, entry in enumerate(raw):
        hist = entry.get("history") if isinstance(entry, dict) else entry
        if not isinstance(hist, list) or not hist or not all(isinstance(i, str | int) for i in hist):
            raise ValueError(f"{path}: entry {n} is not a non-empty list of item ids: {entry!r}"[:300])
        out.append([str(i) for i in hist])
    if not out:
        raise ValueError(f"{path}: no histories")
    return out


# ---------------------------------------------------------------------------------------------- CLI


def add_loadtest_args(parser: argparse.ArgumentParser) -> None:
    from training.splits import PROTOCOLS

    parser.add_argument("--url", required=True, help="service base URL; loopback hosts only")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds to run (default: 10)")
    parser.add_argument("--concurrency", type=int, default=8, help="concurrent connections (default: 8)")
    parser.add_argument("--items-ratio", type=float, default=0.0, help="share of requests that POST a new item")
    parser.add_argument(
        "--max-requests", type=int, default=MAX_REQUESTS_CAP, help=f"stop after N requests (<= {MAX_REQUESTS_CAP})"
    )
    parser.add_argument("--path", default=RECOMMEND_PATH, help="/recommend (POST histories) or a GET path")
    parser.add_argument("--k", type=int, default=10, help="items per recommendation")
    parser.add_argument(
        "--artifact", default=None,
        help="artifact directory of the served model: --data, --split, --protocol and --seed default to what "
        "it was trained with",
    )
    parser.add_argument("--data", default=None, help="dataset directory: histories come from its test split")
    parser.add_argument("--split", default=None, help="predefined split directory (as used in training)")
    parser.add_argument(
        "--protocol", default=None, choices=PROTOCOLS, help="split protocol (default: the artifact's, else cold-users)"
    )
    parser.add_argument(
        "--seed", type=int, default=None, help="split seed and request-mix seed (default: the artifact's, else 0)"
    )
    parser.add_argument("--limit", type=int, default=2000, help="test histories to draw from")
    parser.add_argument("--histories", default=None, help="JSON file of histories instead of --data")
    parser.add_argument("--ignore-unknown", action="store_true", help="the server skips unknown history items")
    parser.add_argument("--timeout", type=float, default=10.0, help="per-request timeout in seconds")
    parser.add_argument("--out", default=None, help="also write the JSON report here")
    parser.add_argument(
        "--max-failure-share", type=float, default=0.01,
        help="exit 1 if more than this share of requests fail (default: 0.01); a run where every request "
        "fails always exits 1",
    )


def cmd_loadtest(args: argparse.Namespace) -> int:
    """`alphafuse loadtest`: run, print the JSON report, write it to --out; exit 1 (with one line on
    stderr) when too many requests failed, so that a run against the wrong ids does not pass as a result."""
    if not is_loopback_url(args.url):  # before loading any data
        raise ValueError(f"refusing to load-test {args.url!r}: only loopback hosts (127.0.0.0/8, ::1, localhost)")
    if not 0.0 <= args.max_failure_share <= 1.0:
        raise ValueError(f"--max-failure-share must be in [0, 1], got {args.max_failure_share}")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would be the bottleneck
    data, split, protocol, seed = args.data, args.split, args.protocol, args.seed
    if args.artifact:
        from model.artifact import read_manifest
        from training.provenance import resolve_data, trained_on

        artifact = Path(args.artifact)
        recorded = trained_on(read_manifest(artifact))
        if not args.histories:
            data = str(resolve_data(data, recorded, artifact))
        split = split if split is not None else recorded.split
        protocol = protocol or recorded.protocol
        seed = seed if seed is not None else recorded.seed
    protocol = protocol or "cold-users"
    seed = seed if seed is not None else 0
    histories: list[list[str]] = []
    words: list[str] | None = None
    if args.histories:
        histories = read_histories_file(Path(args.histories))
    elif data:
        histories, words = load_workload(Path(data), Path(split) if split else None, protocol, seed, args.limit)
    elif args.path == RECOMMEND_PATH and args.items_ratio < 1.0:
        raise ValueError(
            "the /recommend workload needs --artifact DIR or --data DIR (test-split histories), or --histories FILE"
        )
    report = asyncio.run(
        run_loadtest(
            args.url, histories, duration_s=args.duration, concurrency=args.concurrency,
            items_ratio=args.items_ratio, max_requests=args.max_requests, k=args.k, path=args.path,
            title_words=words, ignore_unknown=args.ignore_unknown, timeout_s=args.timeout, seed=seed,
        )
    )  # fmt: skip
    text = json.dumps(report, indent=2, sort_keys=True)
    print(text)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    verdict = failure_verdict(report, args.max_failure_share)
    if verdict is not None:
        print(f"loadtest: FAILED: {verdict}", file=sys.stderr)
        return 1
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m service.loadtest", description=__doc__.split("\n")[0])
    add_loadtest_args(parser)
    args = parser.parse_args(argv)
    from training.logs import setup_logging

    setup_logging()
    try:
        return cmd_loadtest(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"loadtest: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
