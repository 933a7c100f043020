"""Screenshot of the playground (/ui) on a trained artifact, for the README, plus the explain answer it shows.

    python scripts/screenshot_playground.py --artifact runs/toys --query "lego star wars" \
        --text "LEGO Star Wars Millennium Falcon building kit" --out docs/playground.png

Starts the service on a free loopback port with a fresh store in a temporary folder, then, in headless
Chromium: searches `--query`, puts the first `--take` hits and the `--text` entry in the history, asks for
the top `--k` with explained scores, adds `--new-title` as a cold item, and takes the screenshot. Writes
the `/recommend` answer (explain, the same history) next to the PNG as JSON, cold item included.
"""

from __future__ import annotations

import argparse
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--artifact", required=True)
    ap.add_argument("--query", default="lego star wars")
    ap.add_argument("--take", type=int, default=3)
    ap.add_argument("--text", default="LEGO Star Wars Millennium Falcon building kit")
    ap.add_argument("--new-id", default="new-lego-falcon")
    ap.add_argument("--new-title", default="LEGO Star Wars Ultimate Millennium Falcon")
    ap.add_argument("--new-categories", default="Toys & Games, Building Toys, Building Sets")
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--out", default="docs/playground.png")
    args = ap.parse_args()
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium")
    if chromium is None:
        print("screenshot_playground: error: chromium is not on PATH (apt-get install chromium)", file=sys.stderr)
        return 2
    work = Path(tempfile.mkdtemp(prefix="alphafuse-shot-"))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "cli", "serve", "--artifact", args.artifact, "--port", str(port),
         "--store", str(work / "store.sqlite3")],
        stdout=(work / "server.log").open("wb"), stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                print((work / "server.log").read_text()[-3000:], file=sys.stderr)
                return 1
            time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(
                executable_path=chromium, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
            )
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(120_000)
            page.goto(f"{base}/ui/")
            page.wait_for_function("document.querySelector('#model-info').textContent.includes('items')")
            page.fill("#q", args.query)
            page.click("#search-btn")
            page.wait_for_selector("#search-results li")
            buttons = page.query_selector_all("#search-results .add-btn")
            for b in buttons[: args.take]:
                b.click()
            history: list[object] = page.eval_on_selector_all(
                "#search-results li", "els => els.map(e => e.dataset.id)"
            )[: args.take]
            if args.text:
                page.fill("#text-title", args.text)
                page.click("#text-btn")
                history.append({"title": args.text})
            page.fill("#k", str(args.k))
            page.click("#recommend-btn")
            page.wait_for_selector("#recs tbody tr")
            page.fill("#new-id", args.new_id)
            page.fill("#new-title", args.new_title)
            page.fill("#new-categories", args.new_categories)
            page.click("#add-item-btn")
            page.wait_for_function(
                f"document.querySelector('#add-result').textContent.startsWith('added {args.new_id}')"
            )
            out = Path(args.out)
            out.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(out), full_page=True)
            browser.close()
        size = httpx.get(f"{base}/readyz").json()["items"]
        answer = httpx.post(
            f"{base}/recommend", json={"history": history, "k": min(size, 1000), "explain": True}
        ).json()
        ranked = [it["item_id"] for it in answer["items"]]
        summary = {
            "artifact": args.artifact, "history": history, "top": answer["items"][: args.k],
            "new_item": {"item_id": args.new_id, "title": args.new_title,
                         "rank": ranked.index(args.new_id) + 1 if args.new_id in ranked else None,
                         "explained": next((it for it in answer["items"] if it["item_id"] == args.new_id), None)},
        }
        out.with_suffix(".json").write_text(json.dumps(summary, indent=2) + "\n")
        print(f"wrote {out} and {out.with_suffix('.json')}")
        return 0
    finally:
        server.terminate()
        server.wait(timeout=30)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
