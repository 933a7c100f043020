"""Hostile requests against a real server: what each one gets, and what it does to the server's memory.

Starts `python -m service.main` on loopback (one worker, the given artifact, a fresh store), sends each
case once and records the status, the first bytes of the answer, the wall time and the server's
resident memory (VmRSS from /proc) before and after. Writes `<out>/abuse.json` and `<out>/abuse.md`.
Run it against two checkouts (`PYTHONPATH=...`) to compare before and after a change.

    python benchmarks/abuse.py --artifact runs/toys --out benchmarks/out/abuse
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

MB = 1 << 20


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cases(trained: str) -> list[tuple[str, Callable[[httpx.Client], httpx.Response]]]:
    def post_raw(path: str, raw: bytes, content_type: str = "application/json") -> Callable[[httpx.Client], Any]:
        return lambda c: c.post(path, content=raw, headers={"content-type": content_type})

    ok = json.dumps({"history": [trained]}).encode()
    return [
        ("10 MB title", post_raw(
            "/items", json.dumps({"items": [{"item_id": "big", "title": "x" * (10 * MB)}]}).encode()
        )),
        ("10 MB categories list", post_raw("/items", json.dumps(
            {"items": [{"item_id": "cats", "title": "t", "categories": ["c"] * (5 * MB // 2)}]}
        ).encode())),
        ("100 MB body to /recommend", post_raw(
            "/recommend", b'{"history": ["' + trained.encode() + b'"], "pad": "' + b"x" * (100 * MB) + b'"}'
        )),
        ("5 KB title (under the body limit)", post_raw(
            "/items", json.dumps({"items": [{"item_id": "long", "title": "y" * 5000}]}).encode()
        )),
        ("k = 1e309", post_raw("/recommend", ok[:-1] + b', "k": 1e309}')),
        ("k = NaN", post_raw("/recommend", ok[:-1] + b', "k": NaN}')),
        ("NaN in an embedding", post_raw("/items", b'{"items": [{"item_id": "n", "embedding": [NaN]}]}')),
        ("384 x 1e300 embedding", post_raw(
            "/items", json.dumps({"items": [{"item_id": "huge", "embedding": [1e300] * 384}]}).encode()
        )),
        ("lone surrogate in an id", post_raw("/recommend", b'{"history": ["\\ud800"]}')),
        ("lone surrogate in a title", post_raw("/items", b'{"items": [{"item_id": "s", "title": "a \\ud800 b"}]}')),
        ("id with a newline", post_raw("/items", b'{"items": [{"item_id": "a\\nb", "title": "newline"}]}')),
        ("unparsable JSON", post_raw("/recommend", b'{"history": [')),
        ("form-encoded body", post_raw("/recommend", b"history=x", "application/x-www-form-urlencoded")),
        ("734 KB bad request", post_raw("/recommend", json.dumps({"history": ["y" * 700] * 1000}).encode())),
        ("write without a token", lambda c: c.post(
            "/items", json={"items": [{"item_id": "anon", "title": "t"}]}, headers={"authorization": ""}
        )),
        ("made-up method", lambda c: c.request("BREW", "/recommend")),
        ("valid recommend (control)", post_raw("/recommend", ok)),
    ]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True)
    p.add_argument("--label", default="this checkout")
    p.add_argument("--token", default=None, help="ALPHAFUSE_API_TOKEN for the server (writes then need it)")
    p.add_argument("--out", default="benchmarks/out/abuse")
    args = p.parse_args()

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="abuse-"))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAFUSE_")}
    if args.token:
        env["ALPHAFUSE_API_TOKEN"] = args.token
    log = (work / "server.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "service.main", str(Path(args.artifact).resolve()), "--port", str(port),
         "--store", str(work / "s.sqlite3")],
        env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    rows: list[dict[str, Any]] = []
    try:
        auth = {"authorization": f"Bearer {args.token}"} if args.token else {}
        with httpx.Client(base_url=base, timeout=300, trust_env=False, headers=auth) as c:
            deadline = time.monotonic() + 300
            while True:
                try:
                    if c.get("/readyz").status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"server did not start: {(work / 'server.log').read_text()[-2000:]}")
                time.sleep(0.5)
            trained = json.loads((Path(args.artifact) / "item_ids.json").read_text())[0]
            for name, send in cases(trained):
                before = rss_mb(proc.pid)
                t0 = time.perf_counter()
                try:
                    r = send(c)
                    status, answer, size = r.status_code, r.text[:120], len(r.content)
                except httpx.HTTPError as e:
                    status, answer, size = 0, f"{type(e).__name__}: {e}"[:120], 0
                seconds = time.perf_counter() - t0
                time.sleep(0.5)
                rows.append({
                    "case": name, "status": status, "answer": answer, "answer_bytes": size,
                    "seconds": round(seconds, 2), "rss_before_mb": round(before, 1),
                    "rss_after_mb": round(rss_mb(proc.pid), 1), "server_alive": proc.poll() is None,
                })
                print(json.dumps(rows[-1]), flush=True)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    (out / "abuse.json").write_text(json.dumps({"label": args.label, "rows": rows}, indent=1))
    lines = [
        f"Hostile requests, {args.label} (one worker, {args.artifact}):", "",
        "| case | status | answer (first bytes) | answer bytes | s | RSS before MB | RSS after MB |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for r in rows:
        answer = r["answer"].replace("|", "\\|").replace("\n", " ")
        lines.append(
            f"| {r['case']} | {r['status']} | `{answer[:70]}` | {r['answer_bytes']} | {r['seconds']} | "
            f"{r['rss_before_mb']} | {r['rss_after_mb']} |"
        )
    (out / "abuse.md").write_text("\n".join(lines) + "\n")
    print((out / "abuse.md").read_text())


if __name__ == "__main__":
    main()
