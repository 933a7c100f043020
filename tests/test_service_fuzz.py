"""Schema fuzzing: schemathesis against the live OpenAPI spec of a real uvicorn process, auth on.

Bounded (a fixed hypothesis seed and example count), so the whole module runs in about a minute here.
Every generated request must get no 5xx and a response that conforms to what the spec declares: status
code, content type, headers and body schema. Run with `-s` to see the request totals.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.helpers import free_port

schemathesis = pytest.importorskip("schemathesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402 - after the importorskip above
from schemathesis.checks import (  # noqa: E402
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

TOKEN = "fuzz-token"
EXAMPLES = 50
CHECKS = [
    not_a_server_error, status_code_conformance, content_type_conformance, response_headers_conformance,
    response_schema_conformance,
]
TOTALS: Counter[str] = Counter()


@pytest.fixture(scope="module")
def server(tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    work = tmp_path_factory.mktemp("fuzz")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALPHAFUSE_")}
    env.update({"ALPHAFUSE_API_TOKEN": TOKEN, "ALPHAFUSE_MAX_BODY_BYTES": str(64 * 1024)})
    code = (
        "import sys; from service.main import serve; "
        f"sys.exit(serve({str(tiny_artifact)!r}, port={port}, store={str(work / 's.sqlite3')!r}, log_level='warning'))"
    )
    log = work / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-c", code], cwd=work, env=env, stdout=out, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"server exited with {proc.returncode}: {log.read_text()[-2000:]}")
            try:
                if httpx.get(f"{base}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"server not ready: {log.read_text()[-2000:]}")
            time.sleep(0.3)
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        print(f"\nschemathesis totals: {dict(TOTALS)}")


@pytest.fixture(scope="module")
def api_schema(server: str) -> Any:
    return schemathesis.openapi.from_url(f"{server}/openapi.json")


def _fuzz(api_schema: Any, headers: dict[str, str] | None, examples: int) -> None:
    """Every operation of the spec, `examples` generated cases each (hypothesis, derandomised)."""
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert {f"{op.method.upper()} {op.path}" for op in operations} >= {
        "POST /recommend", "POST /items", "GET /items/{item_id}", "DELETE /items/{item_id}",
    }
    for op in operations:

        @given(case=op.as_strategy())
        @settings(
            max_examples=examples, derandomize=True, deadline=None, database=None,
            suppress_health_check=list(HealthCheck),
        )
        def run(case: Any) -> None:
            TOTALS["requests"] += 1
            try:
                response = case.call_and_validate(headers=headers, checks=CHECKS, timeout=30)
            except Exception:
                TOTALS["failures"] += 1
                raise
            TOTALS[f"{response.status_code // 100}xx"] += 1

        run()


@pytest.mark.slow
def test_authorised_requests_conform_and_never_5xx(api_schema: Any) -> None:
    _fuzz(api_schema, {"Authorization": f"Bearer {TOKEN}"}, EXAMPLES)


@pytest.mark.slow
def test_anonymous_requests_conform_and_never_5xx(api_schema: Any) -> None:
    _fuzz(api_schema, None, EXAMPLES // 3)
