"""Serving cost, throughput and latency: start the service on 127.0.0.1, drive it with `service.loadtest`.

Measures POST /recommend at each `--concurrency` (default 1, 8, 32) and GET /healthz at each
`--healthz-concurrency` (default: the same list) against one server (one process, or a uvicorn
supervisor with `--workers N` processes), then an open-loop /recommend row at `--open-loop-fraction` of
the best closed-loop throughput. Writes `benchmarks/out/<name>.json` and `<name>.md`.

Per row: **server CPU ms per request** (utime + stime of every server process and thread, from /proc,
sampled before and after the row, divided by the requests answered), the load generator's own CPU ms
per request, rps, p50/p95/p99 ms and errors; and at every concurrency measured for both endpoints the
ratio /recommend over /healthz of CPU per request and of rps. CPU per request is the number to compare
across runs on a shared machine: throughput and latency also measure the neighbours (the load average
is recorded at the start and end). The open-loop row's p99 is what a user sees at that load: a closed
loop slows down with the server and hides queueing.

    python benchmarks/serve.py --artifact runs/toys --duration 15
    python benchmarks/serve.py --artifact runs/toys --env ALPHAFUSE_MAX_BATCH=1 --name serve-nobatch
    python benchmarks/serve.py --artifact runs/toys --index hnsw --name serve-hnsw
    python benchmarks/serve.py --artifact runs/toys --workers 2 --name serve-2workers
    python benchmarks/serve.py --artifact runs/toys --concurrency 8 --bulk-items 256 --name serve-bulk
    python benchmarks/serve.py --artifact runs/toys --concurrency 32 --profile --name serve-profile

`--bulk-items N` adds one writer that POSTs N new text items at a time, back to back (after
`--bulk-pause` seconds), during every /recommend row: what a catalogue import does to ranking latency
(that row's CPU per request is over all its requests).

`--profile` samples the server with py-spy (`pip install py-spy`) during every measured row and writes
`<name>.profile/<row>.txt` (py-spy's raw collapsed stacks; `flamegraph.pl` or speedscope draw them)
plus a table per row of where the server's CPU samples went, by layer of the stack (HTTP parsing,
validation, batching hand-off, store sync, torch, FAISS, response encoding ...; `benchmarks/layers.py`).
Sampling costs CPU of its own (in py-spy's process, not the server's), so compare CPU numbers between
runs with the same `--profile` setting.

Histories are the test split of the dataset the artifact was trained on (`--data/--split/--protocol`,
default: as recorded in the artifact's manifest). The load generator runs on the same machine as the
server (2 cores here), so at high concurrency the two compete for CPU: rps and latency are what this box
sustains end to end. Not part of CI.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from layers import markdown as layers_markdown  # benchmarks/ is on sys.path when run as a script
from layers import summarise_file

from service import procstat
from service.loadtest import SyntheticItems, load_workload, run_loadtest, run_open_loop

log = logging.getLogger("benchmarks.serve")
ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def parse_env(pairs: list[str]) -> dict[str, str]:
    env: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--env expects KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


def workload_source(args: argparse.Namespace, manifest: dict[str, Any]) -> tuple[Path, Path | None, str, int]:
    """(data dir, split dir, protocol, seed): the flags, else what the artifact's manifest recorded."""
    ds = manifest.get("dataset", {})
    trained = manifest.get("train_config", {})
    data = args.data or ds.get("path") or trained.get("data")
    if not data:
        raise ValueError("--data is required: the artifact's manifest does not record its dataset")
    split: str | None = args.split
    if split is None and not args.data:
        recorded = str(ds.get("split", ""))
        split = recorded.removeprefix("predefined:") if recorded.startswith("predefined:") else trained.get("split")
    protocol = args.protocol or ds.get("protocol") or trained.get("protocol") or "cold-users"
    seed = args.seed if args.seed is not None else int(trained.get("seed", 0))
    return Path(data), Path(split) if split else None, protocol, seed


class Server:
    """`python -m service.main` in its own process group on 127.0.0.1; stopped by its pid on exit."""

    def __init__(self, args: argparse.Namespace, env: dict[str, str], workdir: Path) -> None:
        self.port = args.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "server.log"
        cmd = [
            sys.executable, "-m", "service.main", str(args.artifact), "--host", "127.0.0.1",
            "--port", str(self.port), "--workers", str(args.workers), "--store", str(workdir / "store.sqlite3"),
            "--index", args.index, "--log-level", "warning",
        ]  # fmt: skip
        self.cmd = cmd
        self._log = self.log_path.open("w")
        # --server-root serves another checkout's code (a before/after comparison) with this load generator
        root = Path(args.server_root).resolve() if args.server_root else ROOT
        server_env = {**os.environ, **env}
        if args.server_root:
            server_env["PYTHONPATH"] = os.pathsep.join([str(root), *args.server_path])
        self.proc = subprocess.Popen(
            cmd, cwd=root, env=server_env, stdout=self._log, stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip

    def wait_ready(self, timeout_s: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        with httpx.Client(base_url=self.url, timeout=5, trust_env=False) as client:
            while True:
                if self.proc.poll() is not None:
                    raise RuntimeError(f"server exited with {self.proc.returncode}:\n{self.tail()}")
                try:
                    r = client.get("/readyz")
                    if r.status_code == 200:
                        return dict(r.json())
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"server not ready after {timeout_s:.0f}s:\n{self.tail()}")
                time.sleep(0.5)

    def tail(self, lines: int = 30) -> str:
        self._log.flush()
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def cpu(self) -> procstat.CpuSample:
        """CPU seconds of the server: the process we started and every worker it forked."""
        return procstat.sample(self.proc.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # the group: uvicorn's workers with their parent
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self._log.close()


class Profiler:
    """py-spy attached to the server for one row at a time (`start`, then `stop` writes the file)."""

    def __init__(self, pid: int, out_dir: Path, rate: int) -> None:
        exe = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        if not Path(exe).is_file():
            raise ValueError("--profile needs py-spy: pip install py-spy")
        self.exe, self.pid, self.out_dir, self.rate = exe, pid, out_dir, rate
        self.proc: subprocess.Popen[bytes] | None = None
        self.path: Path | None = None
        out_dir.mkdir(parents=True, exist_ok=True)

    def start(self, label: str) -> None:
        self.path = self.out_dir / f"{label}.txt"
        cmd = [
            self.exe, "record", "--pid", str(self.pid), "--subprocesses", "--format", "raw", "--full-filenames",
            "--nonblocking", "--rate", str(self.rate), "--output", str(self.path),
        ]  # fmt: skip
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.5)  # attaching takes a moment; samples before the row starts would be idle anyway
        if self.proc.poll() is not None:
            err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
            raise RuntimeError(f"py-spy could not attach to {self.pid}: {err.strip()[:500]}")

    def stop(self) -> dict[str, Any]:
        """Stop sampling (py-spy writes its file on SIGINT) and summarise the row by layer."""
        assert self.proc is not None and self.path is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        path, self.proc = self.path, None
        if not path.is_file():
            return {"file": str(path), "error": "py-spy wrote no profile"}
        summary = summarise_file(path)
        return {"file": str(path), **summary.as_dict(), "markdown": layers_markdown(summary, path.stem)}


def _label(endpoint: str, concurrency: int, mode: str) -> str:
    name = endpoint.split()[-1].strip("/").replace("/", "-") or "root"
    return f"{name}-{mode}-c{concurrency}"


async def measured(
    server: Server, profiler: Profiler | None, label: str, run: Any
) -> dict[str, Any]:
    """Run one load row (`run` is the coroutine), with CPU samples of server and client around it."""
    if profiler is not None:
        profiler.start(label)
    client0 = resource.getrusage(resource.RUSAGE_SELF)
    before = server.cpu()
    report: dict[str, Any] = await run
    after = server.cpu()
    client1 = resource.getrusage(resource.RUSAGE_SELF)
    if profiler is not None:
        report["profile"] = profiler.stop()
    cpu_s = procstat.cpu_between(before, after)
    client_s = (client1.ru_utime + client1.ru_stime) - (client0.ru_utime + client0.ru_stime)
    answered = max(1, report["requests"])
    report["cpu"] = {
        "server_s": cpu_s, "wall_s": after.at - before.at, "processes": len(after.cpu_s),
        "server_ms_per_request": 1e3 * cpu_s / answered, "client_ms_per_request": 1e3 * client_s / answered,
        "server_cores": cpu_s / max(1e-9, after.at - before.at),
    }  # fmt: skip
    return report


def rows_of(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One table row per route of a run (a mixed run has POST /recommend and POST /items rows)."""
    out = []
    cpu = report.get("cpu", {})
    mode = report.get("mode", "closed")
    for endpoint, route in report["routes"].items():
        lat = route["latency_ms"]
        out.append({
            "endpoint": endpoint, "mode": mode, "concurrency": report["concurrency"],
            "offered_rps": report.get("offered_rps"), "requests": route["requests"], "rps": route["ok_rps"],
            "p50_ms": lat["p50"], "p95_ms": lat["p95"], "p99_ms": lat["p99"], "max_ms": lat["max"],
            "errors": route["errors"], "duration_s": report["duration_s"],
            "server_cpu_ms_per_request": cpu.get("server_ms_per_request"),
            "client_cpu_ms_per_request": cpu.get("client_ms_per_request"),
            "server_cores": cpu.get("server_cores"),
        })  # fmt: skip
    return out


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """At each concurrency with a closed-loop row of both: /recommend over /healthz, CPU and rps."""
    closed = [r for r in rows if r["mode"] == "closed"]
    health = {r["concurrency"]: r for r in closed if r["endpoint"] == "GET /healthz"}
    out = []
    for r in closed:
        h = health.get(r["concurrency"])
        if r["endpoint"] != "POST /recommend" or h is None:
            continue
        cpu_r, cpu_h = r["server_cpu_ms_per_request"], h["server_cpu_ms_per_request"]
        out.append({
            "concurrency": r["concurrency"],
            "rps_ratio": r["rps"] / h["rps"] if h["rps"] else None,
            "cpu_ratio": cpu_r / cpu_h if cpu_r is not None and cpu_h else None,
        })  # fmt: skip
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.1f}"


def _cpu(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    ready = result["server"]["readyz"]
    load = result["machine"].get("loadavg", {})
    lines = [
        f"# Serving benchmark: {result['name']}",
        "",
        f"- artifact: `{cfg['artifact']}` ({ready.get('items')} items, index {ready.get('index')}, "
        f"model {ready.get('model', {}).get('name')})",
        f"- server: code from `{cfg.get('server_root')}`"
        + "".join(f" + `{extra}`" for extra in cfg.get("server_path") or [])
        + f", {cfg['workers']} worker(s), env overrides {cfg['env'] or 'none'}"
        + (", **profiled with py-spy**" if cfg.get("profile") else ""),
        f"- load: {cfg['duration_s']:g} s per row after {cfg['warmup_s']:g} s warm-up, {cfg['histories']} test "
        f"histories of {cfg['data']} ({cfg['protocol']}), k={cfg['k']}, items_ratio={cfg['items_ratio']:g}",
        f"- machine: {result['machine']['cpus']} CPUs, {result['machine']['platform']}; load generator and "
        f"server share it; load average (1 min) {_x(load.get('start'))} at the start, {_x(load.get('end'))} "
        "at the end",
        "",
        "| endpoint | loop | concurrency | rps | p50 ms | p95 ms | p99 ms | errors | server CPU ms/req "
        "| client CPU ms/req | server cores busy |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        loop = "closed" if r["mode"] == "closed" else f"open @ {r['offered_rps']:.0f} rps"
        lines.append(
            f"| {r['endpoint']} | {loop} | {r['concurrency']} | {r['rps']:.1f} | {_ms(r['p50_ms'])} "
            f"| {_ms(r['p95_ms'])} | {_ms(r['p99_ms'])} | {r['errors']} | {_cpu(r['server_cpu_ms_per_request'])} "
            f"| {_cpu(r['client_cpu_ms_per_request'])} | {_x(r['server_cores'])} |"
        )
    if result.get("ratios"):
        lines += ["", "| concurrency | /recommend ÷ /healthz: server CPU per request | rps |", "|---:|---:|---:|"]
        for q in result["ratios"]:
            lines.append(f"| {q['concurrency']} | {_x(q['cpu_ratio'])} | {_x(q['rps_ratio'])} |")
    profiles = [rep["profile"] for rep in result["reports"] if "profile" in rep]
    if profiles:
        lines += ["", "## Where the server's CPU samples went (py-spy, by layer)", ""]
        for prof in profiles:
            lines += [prof.get("markdown", f"{prof['file']}: {prof.get('error')}"), ""]
    return "\n".join(lines).rstrip("\n") + "\n"


async def bulk_writer(
    url: str, n: int, pause_s: float, words: list[str], stop: asyncio.Event, timeout_s: float
) -> dict[str, Any]:
    """POST n synthetic text items per request until `stop`; latency of each POST in ms."""
    make = SyntheticItems(words)
    lat: list[float] = []
    errors = 0
    sent = 0
    async with httpx.AsyncClient(base_url=url, timeout=timeout_s, trust_env=False) as client:
        while not stop.is_set():
            body = {"items": [make(sent + j) for j in range(n)]}
            sent += n
            t0 = time.perf_counter()
            try:
                r = await client.post("/items", json=body)
                if r.status_code == 201:
                    lat.append((time.perf_counter() - t0) * 1000)
                else:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(stop.wait(), pause_s)
    lat.sort()

    def pct(q: float) -> float | None:
        return lat[min(len(lat) - 1, int(q * len(lat)))] if lat else None

    return {"posts": len(lat), "items_per_post": n, "errors": errors,
            "latency_ms": {"p50": pct(0.5), "p95": pct(0.95), "p99": pct(0.99), "max": lat[-1] if lat else None}}


async def measure(
    args: argparse.Namespace, server: Server, histories: list[list[str]], words: list[str],
    profiler: Profiler | None,
) -> list[dict[str, Any]]:
    url = server.url
    common: dict[str, Any] = {"k": args.k, "timeout_s": args.timeout, "seed": args.seed or 0, "title_words": words}
    if args.warmup > 0:
        await run_loadtest(url, histories, duration_s=args.warmup, concurrency=max(args.concurrency), **common)
    reports = []
    for c in args.concurrency:
        stop = asyncio.Event()
        writer = None
        if args.bulk_items > 0:
            writer = asyncio.create_task(
                bulk_writer(url, args.bulk_items, args.bulk_pause, words, stop, args.timeout)
            )
        load = run_loadtest(
            url, histories, duration_s=args.duration, concurrency=c, items_ratio=args.items_ratio, **common
        )
        report = await measured(server, profiler, _label("POST /recommend", c, "closed"), load)
        if writer is not None:
            stop.set()
            bulk = await writer
            lat = bulk["latency_ms"]
            report["routes"][f"POST /items ({args.bulk_items} per request)"] = {
                "requests": bulk["posts"] + bulk["errors"], "ok_rps": bulk["posts"] / args.duration,
                "latency_ms": lat, "errors": bulk["errors"],
            }
        log.info("POST /recommend c=%d: %.1f rps, p50 %s ms, server CPU %.2f ms/request, %d errors", c,
                 report["ok_rps"], _ms(report["latency_ms"]["p50"]), report["cpu"]["server_ms_per_request"],
                 report["errors"])  # fmt: skip
        reports.append(report)
    healthz = args.concurrency if args.healthz_concurrency is None else args.healthz_concurrency
    for c in [c for c in healthz if c > 0]:
        load = run_loadtest(url, [], duration_s=args.duration, concurrency=c, path="/healthz", **common)
        report = await measured(server, profiler, _label("GET /healthz", c, "closed"), load)
        log.info("GET /healthz c=%d: %.1f rps, server CPU %.2f ms/request", c, report["ok_rps"],
                 report["cpu"]["server_ms_per_request"])  # fmt: skip
        reports.append(report)
    closed = [r["ok_rps"] for r in reports[: len(args.concurrency)] if r["errors"] == 0]
    if args.open_loop_fraction > 0 and closed:
        rate = args.open_loop_fraction * max(closed)
        load = run_open_loop(
            url, histories, rate_rps=rate, duration_s=args.duration, connections=args.open_loop_connections,
            k=args.k, timeout_s=args.timeout, seed=args.seed or 0,
        )  # fmt: skip
        report = await measured(server, profiler, _label("POST /recommend", args.open_loop_connections, "open"), load)
        log.info("POST /recommend open loop at %.1f rps (%.0f%% of %.1f): p99 %s ms, max send lag %.1f ms", rate,
                 100 * args.open_loop_fraction, max(closed), _ms(report["latency_ms"]["p99"]),
                 report["max_send_lag_ms"])  # fmt: skip
        reports.append(report)
    return reports


def _loadavg() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:
        return None


def run(args: argparse.Namespace) -> dict[str, Any]:
    artifact = Path(args.artifact).resolve()
    manifest_path = artifact / "manifest.json"
    if not manifest_path.is_file():
        raise ValueError(f"{artifact} is not an artifact directory (no manifest.json)")
    manifest = json.loads(manifest_path.read_text())
    args.artifact = artifact
    env = parse_env(args.env)
    data, split, protocol, seed = workload_source(args, manifest)
    histories, words = load_workload(data, split, protocol, seed, args.limit)
    log.info("%d test histories from %s (%s)", len(histories), data, protocol)

    load_start = _loadavg()
    with tempfile.TemporaryDirectory(prefix="alphafuse-bench-") as tmp:
        server = Server(args, env, Path(tmp))
        try:
            t0 = time.monotonic()
            readyz = server.wait_ready(args.ready_timeout)
            startup_s = time.monotonic() - t0
            log.info("server ready in %.1f s at %s", startup_s, server.url)
            profiler = None
            if args.profile:
                profiler = Profiler(server.proc.pid, Path(args.out_dir) / f"{args.name}.profile", args.profile_rate)
            reports = asyncio.run(measure(args, server, histories, words, profiler))
        except BaseException:
            log.error("server log:\n%s", server.tail())
            raise
        finally:
            server.stop()

    rows = [r for rep in reports for r in rows_of(rep)]
    result: dict[str, Any] = {
        "name": args.name,
        "config": {
            "artifact": str(artifact), "workers": args.workers, "index": args.index, "env": env,
            "duration_s": args.duration, "warmup_s": args.warmup, "concurrency": args.concurrency,
            "healthz_concurrency": args.healthz_concurrency, "items_ratio": args.items_ratio, "k": args.k,
            "data": str(data), "split": str(split) if split else None, "protocol": protocol, "seed": seed,
            "histories": len(histories), "open_loop_fraction": args.open_loop_fraction,
            "open_loop_connections": args.open_loop_connections, "profile": args.profile,
            "server_root": str(Path(args.server_root).resolve()) if args.server_root else str(ROOT),
            "server_path": args.server_path,
        },
        "machine": {
            "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "loadavg": {"start": load_start, "end": _loadavg()},
        },
        "server": {"readyz": readyz, "startup_s": startup_s, "command": server.cmd},
        "rows": rows,
        "ratios": ratios(rows),
        "reports": reports,
    }  # fmt: skip
    return result


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True, help="artifact directory to serve")
    p.add_argument("--data", default=None, help="dataset directory (default: from the artifact's manifest)")
    p.add_argument("--split", default=None, help="predefined split directory (default: as trained)")
    p.add_argument("--protocol", default=None, choices=["loo", "cold-users"], help="(default: as trained)")
    p.add_argument("--seed", type=int, default=None, help="split seed (default: as trained)")
    p.add_argument("--limit", type=int, default=2000, help="test histories to draw requests from")
    p.add_argument("--duration", type=float, default=15.0, help="seconds per measured row")
    p.add_argument("--warmup", type=float, default=3.0, help="seconds of unmeasured load first")
    p.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32], help="/recommend concurrencies")
    p.add_argument("--healthz-concurrency", type=int, nargs="+", default=None,
                   help="/healthz baseline concurrencies (default: as --concurrency; 0: skip)")
    p.add_argument("--open-loop-fraction", type=float, default=0.5,
                   help="open-loop /recommend row at this share of the best closed-loop rps (0: skip)")
    p.add_argument("--open-loop-connections", type=int, default=64, help="connections of the open-loop client")
    p.add_argument("--profile", action="store_true", help="sample the server with py-spy during each row")
    p.add_argument("--profile-rate", type=int, default=200, help="py-spy samples per second")
    p.add_argument("--items-ratio", type=float, default=0.0, help="share of POST /items in /recommend rows")
    p.add_argument("--bulk-items", type=int, default=0, help="items per POST of a concurrent bulk writer (0: off)")
    p.add_argument("--bulk-pause", type=float, default=1.0, help="seconds between the bulk writer's POSTs")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    p.add_argument("--workers", type=int, default=1, help="uvicorn worker processes")
    p.add_argument("--index", choices=["auto", "flat", "hnsw"], default="auto", help="FAISS index of the server")
    p.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                   help="environment for the server, e.g. ALPHAFUSE_MAX_BATCH=1 (repeatable)")  # fmt: skip
    p.add_argument("--server-root", default=None,
                   help="run the server from this checkout instead (e.g. a worktree of main, to compare)")
    p.add_argument("--server-path", action="append", default=[],
                   help="with --server-root: more PYTHONPATH entries for the server, after the checkout")
    p.add_argument("--port", type=int, default=0, help="server port (default: a free one)")
    p.add_argument("--ready-timeout", type=float, default=300.0, help="seconds to wait for /readyz")
    p.add_argument("--name", default="serve", help="output file stem")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "out"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a log line per request would be the bottleneck

    result = run(args)
    write_report(Path(args.out_dir), args.name, result, markdown(result))
    return 0


def write_report(out: Path, name: str, result: dict[str, Any], md: str) -> None:
    """`<out>/<name>.json` and `.md`, and the table on stdout: what every serving benchmark leaves behind."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    (out / f"{name}.md").write_text(md)
    print(md)
    log.info("wrote %s and %s", out / f"{name}.json", out / f"{name}.md")


if __name__ == "__main__":
    sys.exit(main())
