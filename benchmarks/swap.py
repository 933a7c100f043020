"""Model swap under load: POST /admin/model while a closed loop of /recommend clients keeps the server busy.

Starts `python -m service.main` on 127.0.0.1 with artifact A (one worker), drives POST /recommend at
`--concurrency` (default 16) for the whole run, plus one writer that POSTs a new text item every
`--write-every` seconds (the items written while a new model loads must be carried over too). Then:

1. after `--before` seconds, swaps to artifact B (`{"artifact": B}`);
2. `--between` seconds after that swap answered, swaps back (`{}`: the configured artifact, reloaded);
3. after another `--between` seconds, asks for a corrupt copy of A (its weights file truncated): the call
   must fail with a reason and A must keep serving;
4. `--after` seconds of load on A, then every acknowledged item is checked present on the final model.

Every response names the artifact that answered it, so each request is attributed to a model. Reported:
requests, failures (any non-200 /recommend or transport error; goal 0), p50/p99 latency before, during
(every request in flight at some moment between the swap call and its answer) and after each swap
(requests sent and answered between two swaps, which one artifact alone must answer); the
server's RSS sampled every 20 ms from /proc (peak, and the kernel's high-water mark VmHWM), RSS before
the first swap and at the end; swap call durations; items acknowledged vs present at the end.
Writes `benchmarks/out/<name>.json` and `.md`. Not part of CI (the swap tests are).

    python benchmarks/swap.py --artifact runs/toys-swap-0 --other runs/toys-swap-1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
from serve import Server, free_port, write_report  # benchmarks/ is on sys.path when run as a script

from service.loadtest import load_workload

log = logging.getLogger("benchmarks.swap")
ROOT = Path(__file__).resolve().parents[1]
TOKEN = "swap-benchmark-token"


def _status_kib(pid: int, key: str) -> int | None:
    with contextlib.suppress(OSError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return None


class RssSampler:
    """VmRSS of the server every `interval_s` in a thread: (monotonic time, KiB) pairs."""

    def __init__(self, pid: int, interval_s: float = 0.02) -> None:
        self.pid, self.interval_s = pid, interval_s
        self.samples: list[tuple[float, int]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            kib = _status_kib(self.pid, "VmRSS")
            if kib is not None:
                self.samples.append((time.monotonic(), kib))
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def at(self, t: float) -> int | None:
        before = [kib for ts, kib in self.samples if ts <= t]
        return before[-1] if before else None

    def peak(self, t0: float, t1: float) -> int | None:
        window = [kib for ts, kib in self.samples if t0 <= ts <= t1]
        return max(window) if window else None


def corrupt_copy(artifact: Path, into: Path) -> Path:
    """A copy of `artifact` whose largest file is cut in half: what a disk-full or partial copy leaves."""
    dst = into / "corrupt-artifact"
    shutil.copytree(artifact, dst)
    biggest = max((p for p in dst.rglob("*") if p.is_file() and p.name != "manifest.json"),
                  key=lambda p: p.stat().st_size)  # fmt: skip
    data = biggest.read_bytes()
    biggest.write_bytes(data[: len(data) // 2])
    return dst


def _pct(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


async def drive(args: argparse.Namespace, url: str, histories: list[list[str]], words: list[str],
                corrupt: Path, pid: int) -> dict[str, Any]:  # fmt: skip
    requests: list[tuple[float, float, int, str]] = []  # (sent, latency ms, status, artifact or error)
    acked: list[str] = []
    events: list[dict[str, Any]] = []
    stop = asyncio.Event()
    rng = np.random.default_rng(0)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    limits = httpx.Limits(max_connections=args.concurrency + 4, max_keepalive_connections=args.concurrency + 4)

    async with httpx.AsyncClient(base_url=url, timeout=args.timeout, limits=limits, trust_env=False) as client:

        async def recommender(i: int) -> None:
            j = i
            while not stop.is_set():
                body = {"history": histories[j % len(histories)], "k": args.k, "ignore_unknown": True}
                j += args.concurrency
                t = time.monotonic()
                try:
                    r = await client.post("/recommend", json=body)
                    tag = r.json()["model"]["artifact"] if r.status_code == 200 else r.text[:200]
                    requests.append((t, (time.monotonic() - t) * 1e3, r.status_code, tag))
                except httpx.HTTPError as e:
                    requests.append((t, (time.monotonic() - t) * 1e3, 0, f"{type(e).__name__}: {e}"))

        async def writer() -> None:
            n = 0
            while not stop.is_set():
                item_id = f"swap-bench-{n}"
                title = " ".join(rng.choice(words, size=4).tolist())
                with contextlib.suppress(httpx.HTTPError):
                    r = await client.post("/items", json={"items": [{"item_id": item_id, "title": title}]},
                                          headers=auth)  # fmt: skip
                    if r.status_code == 201:
                        acked.append(item_id)
                n += 1
                await asyncio.sleep(args.write_every)

        async def swap(label: str, body: dict[str, Any]) -> dict[str, Any]:
            t = time.monotonic()
            r = await client.post("/admin/model", json=body, headers=auth, timeout=600)
            done = time.monotonic()
            ev = {"label": label, "start": t, "end": done, "seconds": done - t, "status": r.status_code,
                  "answer": r.json() if r.headers.get("content-type", "").startswith("application/json")
                  else r.text[:300]}  # fmt: skip
            events.append(ev)
            log.info("%s: %d in %.2f s", label, r.status_code, done - t)
            return ev

        tasks = [asyncio.create_task(recommender(i)) for i in range(args.concurrency)]
        tasks.append(asyncio.create_task(writer()))
        t_start = time.monotonic()
        await asyncio.sleep(args.before)
        await swap("A -> B", {"artifact": str(Path(args.other).resolve())})
        await asyncio.sleep(args.between)
        await swap("B -> A (reload)", {})
        await asyncio.sleep(args.between)
        await swap("A -> corrupt copy", {"artifact": str(corrupt)})
        await asyncio.sleep(args.after)
        stop.set()
        await asyncio.gather(*tasks)
        t_end = time.monotonic()

        present = 0
        for item_id in acked:
            r = await client.get(f"/items/{item_id}")
            present += r.status_code == 200
        final = (await client.get("/readyz")).json()

    return {"requests": requests, "events": events, "acked": len(acked), "present": present,
            "t_start": t_start, "t_end": t_end, "final": final}  # fmt: skip


def _window(requests: list[tuple[float, float, int, str]], t0: float, t1: float, *, overlapping: bool = False,
            ) -> dict[str, Any]:
    """The requests of one phase: those sent and answered inside [t0, t1), or with `overlapping`, every
    request in flight at some moment of it. A swap's phase is the overlapping kind, so that a request sent
    just before a swap and answered by the new model counts as "during", not "before": the before and
    after phases then hold only requests that no swap could touch, and their artifacts must be one each."""

    def inside(r: tuple[float, float, int, str]) -> bool:
        end = r[0] + r[1] / 1e3
        return r[0] < t1 and end > t0 if overlapping else t0 <= r[0] and end < t1

    rows = [r for r in requests if inside(r)]
    ok = [lat for _, lat, status, _ in rows if status == 200]
    return {
        "requests": len(rows), "failures": sum(1 for r in rows if r[2] != 200),
        "p50_ms": _pct(ok, 50), "p99_ms": _pct(ok, 99), "max_ms": max(ok) if ok else None,
        "seconds": t1 - t0,
        "rps": sum(1 for r in requests if t0 <= r[0] < t1) / (t1 - t0) if t1 > t0 else None,  # sent in it
        "artifacts": sorted({r[3] for r in rows if r[2] == 200}),
    }  # fmt: skip


def summarise(raw: dict[str, Any], rss: RssSampler) -> dict[str, Any]:
    reqs, evs = raw["requests"], raw["events"]
    t0, t1 = raw["t_start"], raw["t_end"]
    phases: list[dict[str, Any]] = [{"phase": "before", **_window(reqs, t0, evs[0]["start"])}]
    for i, ev in enumerate(evs):
        nxt = evs[i + 1]["start"] if i + 1 < len(evs) else t1
        phases.append({"phase": f"during {ev['label']}", **_window(reqs, ev["start"], ev["end"], overlapping=True)})
        phases.append({"phase": f"after {ev['label']}", **_window(reqs, ev["end"], nxt)})
    failures = [r for r in reqs if r[2] != 200]
    return {
        "total": {**_window(reqs, t0, t1, overlapping=True), "failure_examples": [r[3] for r in failures[:5]]},
        "phases": phases,
        "swaps": [{k: ev[k] for k in ("label", "seconds", "status", "answer")} for ev in evs],
        "rss_mib": {
            "before_first_swap": (rss.at(evs[0]["start"]) or 0) / 1024,
            "peak": (rss.peak(t0, t1) or 0) / 1024,
            "peak_during_swaps": max((rss.peak(ev["start"], ev["end"]) or 0) for ev in evs) / 1024,
            "end": (rss.at(t1) or 0) / 1024,
        },
        "items": {"acked": raw["acked"], "present": raw["present"]},
        "final_model": raw["final"].get("model"),
    }


def markdown(result: dict[str, Any]) -> str:
    s = result["summary"]
    c = result["config"]
    lines = [
        f"# Model swap under load ({c['concurrency']} /recommend clients, 1 worker)", "",
        f"A = `{c['artifact']}`, B = `{c['other']}`; {result['machine']['cpus']} CPUs, load average "
        f"{result['machine']['loadavg']['start']} -> {result['machine']['loadavg']['end']} (the load generator "
        "shares the cores with the server).", "",
        f"Requests {s['total']['requests']}, failures **{s['total']['failures']}**; items written during the run: "
        f"{s['items']['acked']} acknowledged, {s['items']['present']} present on the final model.", "",
        "| phase | requests | failures | rps | p50 ms | p99 ms | max ms | artifacts answering |",
        "|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip

    def f(v: float | None) -> str:
        return "-" if v is None else f"{v:.1f}"

    for p in s["phases"]:
        models = ", ".join(a[-12:] for a in p["artifacts"])  # the digest part of each artifact version
        lines.append(f"| {p['phase']} | {p['requests']} | {p['failures']} | {f(p['rps'])} | {f(p['p50_ms'])} | "
                     f"{f(p['p99_ms'])} | {f(p['max_ms'])} | {models} |")  # fmt: skip
    lines += ["", "| swap | HTTP | seconds | answer |", "|---|---|---|---|"]
    for sw in s["swaps"]:
        ans = sw["answer"]
        text = (
            ans.get("detail")
            if isinstance(ans, dict) and "detail" in ans
            else (f"cold items {ans.get('cold_items')}" if isinstance(ans, dict) else str(ans))
        )
        lines.append(f"| {sw['label']} | {sw['status']} | {sw['seconds']:.2f} | {str(text)[:160]} |")
    r = s["rss_mib"]
    lines += ["", f"Server RSS (MiB): before the first swap {r['before_first_swap']:.0f}, peak during a swap "
              f"{r['peak_during_swaps']:.0f}, peak overall {r['peak']:.0f}, VmHWM {result['vmhwm_mib']:.0f}, "
              f"at the end {r['end']:.0f}.", ""]  # fmt: skip
    return "\n".join(lines)


def rerender(path: Path) -> str:
    """The Markdown of a result JSON written earlier (after a change to the table only)."""
    return markdown(json.loads(path.read_text()))


def run(args: argparse.Namespace) -> dict[str, Any]:
    artifact = Path(args.artifact).resolve()
    manifest = json.loads((artifact / "manifest.json").read_text())
    ds = manifest.get("dataset", {})
    trained = manifest.get("train_config", {})
    data = Path(ds.get("path") or trained["data"])
    recorded = str(ds.get("split", ""))
    split = recorded.removeprefix("predefined:") if recorded.startswith("predefined:") else trained.get("split")
    protocol = ds.get("protocol") or trained.get("protocol") or "cold-users"
    histories, words = load_workload(data, Path(split) if split else None, protocol, 0, args.limit)
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="alphafuse-swap-") as tmp:
        corrupt = corrupt_copy(artifact, Path(tmp))
        server_args = argparse.Namespace(port=free_port(), artifact=artifact, workers=1, index="auto",
                                         server_root=None, server_path=[])  # fmt: skip
        server = Server(server_args, {"ALPHAFUSE_API_TOKEN": TOKEN}, Path(tmp))
        try:
            server.wait_ready(args.ready_timeout)
            with RssSampler(server.proc.pid) as rss:
                raw = asyncio.run(drive(args, server.url, histories, words, corrupt, server.proc.pid))
            vmhwm = (_status_kib(server.proc.pid, "VmHWM") or 0) / 1024
            server_log = server.tail(20)
        except BaseException:
            log.error("server log:\n%s", server.tail())
            raise
        finally:
            server.stop()
    summary = summarise(raw, rss)
    return {
        "config": {"artifact": str(artifact), "other": str(Path(args.other).resolve()),
                   "concurrency": args.concurrency, "before_s": args.before, "between_s": args.between,
                   "after_s": args.after, "write_every_s": args.write_every, "k": args.k},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(),
                    "loadavg": {"start": load_start, "end": os.getloadavg()[0]}},
        "summary": summary, "vmhwm_mib": vmhwm, "server_log_tail": server_log,
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--artifact", required=True, help="artifact A: served at start, swapped back to, corrupted")
    p.add_argument("--other", required=True, help="artifact B: the first swap's target")
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--before", type=float, default=10.0, help="seconds of load before the first swap")
    p.add_argument("--between", type=float, default=10.0, help="seconds of load between swaps")
    p.add_argument("--after", type=float, default=10.0, help="seconds of load after the last swap")
    p.add_argument("--write-every", type=float, default=0.25, help="seconds between the writer's POST /items")
    p.add_argument("--limit", type=int, default=2000, help="test histories to draw requests from")
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request timeout in seconds")
    p.add_argument("--ready-timeout", type=float, default=300.0)
    p.add_argument("--name", default="swap", help="output file stem")
    p.add_argument("--out-dir", default=str(ROOT / "benchmarks" / "out"))
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    result = run(args)
    write_report(Path(args.out_dir), args.name, result, markdown(result))
    return 0 if result["summary"]["total"]["failures"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
