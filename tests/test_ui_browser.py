"""The playground (/ui) and the API docs (/docs) in a real headless Chromium against a real server.

The page must show exactly what the public API returns: the test drives it as a user would (search,
build a history with a text entry, recommend, add an item) and compares the page with the API's own
answers to the same requests. It also checks that neither page fetches anything from outside the server.

Chromium is Debian's `chromium` (`.ci/run` installs it when absent), driven by Playwright's Python
package through `executable_path`; without it the test skips locally and fails under CI.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import httpx
import pytest

from tests.test_service_e2e import _server

playwright = pytest.importorskip("playwright.sync_api")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
if CHROMIUM is None and os.environ.get("CI"):
    raise RuntimeError("chromium is not installed: .ci/run installs Debian's chromium package for this test")
pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(CHROMIUM is None, reason="no chromium on PATH (apt-get install chromium)"),
]
TIMEOUT_MS = 60_000  # the first /search loads the text encoder in the server


def _floats(texts: list[str]) -> list[float]:
    return [float(t) for t in texts]


def test_playground_shows_what_the_api_returns_and_docs_list_the_operations(
    tiny_artifact: Path, tmp_path: Path
) -> None:
    store = tmp_path / "store.sqlite3"
    with _server(tiny_artifact, store, tmp_path, workers=1) as (base, _), playwright.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
        )
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.set_default_timeout(TIMEOUT_MS)
        requested: list[str] = []
        page.on("request", lambda req: requested.append(req.url))
        errors: list[str] = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))

        page.goto(f"{base}/ui")  # redirects to /ui/
        page.wait_for_function("document.querySelector('#model-info').textContent.includes('items')")
        assert "24 items (0 cold)" in page.text_content("#model-info")

        # 1. search: the page lists the API's hits, in its order
        page.fill("#q", "lego")
        page.click("#search-btn")
        page.wait_for_selector("#search-results li")
        shown = page.eval_on_selector_all("#search-results li", "els => els.map(e => e.dataset.id)")
        api = httpx.get(f"{base}/search", params={"q": "lego", "k": 10}).json()["items"]
        assert shown == [h["item_id"] for h in api]

        # 2. a history: the first two hits and one text entry the catalogue does not have
        buttons = page.query_selector_all("#search-results .add-btn")
        buttons[0].click()
        buttons[1].click()
        page.fill("#text-title", "Wooden train set with a bridge")
        page.click("#text-btn")
        assert page.eval_on_selector_all("#history li", "els => els.length") == 3
        history = [api[0]["item_id"], api[1]["item_id"], {"title": "Wooden train set with a bridge"}]

        # 3. recommend: ids, scores and both parts are the API's, and the bars are drawn
        page.fill("#k", "5")
        page.click("#recommend-btn")
        page.wait_for_function("document.querySelectorAll('#recs tbody tr').length === 5")
        want = httpx.post(f"{base}/recommend", json={"history": history, "k": 5, "explain": True}).json()["items"]
        rows = page.eval_on_selector_all("#recs tbody tr", "els => els.map(e => e.dataset.id)")
        assert rows == [it["item_id"] for it in want]
        semantic = _floats(page.eval_on_selector_all("#recs .parts .semantic", "els => els.map(e => e.dataset.value)"))
        collaborative = _floats(
            page.eval_on_selector_all("#recs .parts .collaborative", "els => els.map(e => e.dataset.value)")
        )
        assert semantic == [it["semantic"] for it in want] and collaborative == [it["collaborative"] for it in want]
        widths = page.eval_on_selector_all("#recs .bar", "els => els.map(e => e.getBoundingClientRect().width)")
        assert len(widths) == 10 and max(widths) > 100  # the largest part spans most of its half
        titles = page.eval_on_selector_all("#recs tbody tr td:nth-child(2)", "els => els.map(e => e.textContent)")
        record = httpx.get(f"{base}/items/{want[0]['item_id']}").json()["record"]
        assert titles[0].startswith(record["title"])

        # 4. a new item by its text: stored (the API serves it), and its rank for this history is reported
        page.fill("#new-id", "cold-castle")
        page.fill("#new-title", "LEGO Harry Potter Hogwarts Castle")
        page.fill("#new-categories", "Toys & Games, lego")
        page.click("#add-item-btn")
        page.wait_for_function("document.querySelector('#add-result').textContent.startsWith('added cold-castle')")
        assert httpx.get(f"{base}/items/cold-castle").json()["cold"] is True
        ranked = httpx.post(f"{base}/recommend", json={"history": history, "k": 25}).json()["items"]
        rank = [it["item_id"] for it in ranked].index("cold-castle") + 1
        assert f"ranks #{rank} of 25" in page.text_content("#add-result")
        assert "25 items (1 cold)" in page.text_content("#model-info")
        page.screenshot(path=str(tmp_path / "playground.png"), full_page=True)
        assert (tmp_path / "playground.png").stat().st_size > 10_000

        # a bad request shows the API's one-line detail
        page.fill("#k", "1000")
        page.click("#recommend-btn")
        page.wait_for_selector("#error:not([hidden])")
        assert "k=1000 is out of range" in page.text_content("#error")

        # /docs renders offline: every operation is listed
        page.goto(f"{base}/docs")
        page.wait_for_selector(".opblock-summary-path")
        paths = set(page.eval_on_selector_all(".opblock-summary-path", "els => els.map(e => e.dataset.path)"))
        assert {"/recommend", "/items", "/search", "/items/{item_id}", "/healthz", "/readyz"} <= paths
        browser.close()
    outside = [u for u in requested if not u.startswith(base) and not u.startswith("data:")]
    assert outside == [], outside
    assert errors == []
