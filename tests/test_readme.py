"""The README's examples run as written.

Every `alphafuse ...` line parses with the real command line; every `curl` names a route the app serves
with a body its request model accepts. With MovieLens-100k beside the checkout (the main job's data), the
curl examples then run in README order against a real server on a model trained like the main job's
(one epoch), and each must answer 2xx with JSON; so do `alphafuse evaluate` and a shortened load test.
"""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.routing import Match

from cli.main import build_parser

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SHARED_ML100K = ROOT.parent / "shared" / "data" / "ml-100k"
PORT = "127.0.0.1:8000"


def bash_commands() -> list[str]:
    """Every command of the README's ```bash blocks, continuation lines joined, comments dropped."""
    commands: list[str] = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), flags=re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        for line in joined.splitlines():
            line = line.strip()
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def _words(command: str) -> list[str]:
    """The command's words, without a trailing `&` (backgrounded in the README, run here in turn)."""
    words = shlex.split(command, comments=True)
    return words[:-1] if words and words[-1] == "&" else words


def alphafuse_commands() -> list[list[str]]:
    return [_words(c)[1:] for c in bash_commands() if c.startswith("alphafuse ")]


def curl_commands() -> list[str]:
    return [c for c in bash_commands() if c.startswith("curl ")]


def _curl_request(command: str) -> tuple[str, str, dict[str, object] | None]:
    words = _words(command)
    method, body, url = "GET", None, None
    i = 1
    while i < len(words):
        w = words[i]
        if w in ("-X", "--request"):
            method, i = words[i + 1], i + 2
            continue
        if w in ("-d", "--data"):
            body, method, i = json.loads(words[i + 1]), "POST" if method == "GET" else method, i + 2
            continue
        if w in ("-H", "--header"):
            i += 2
            continue
        if not w.startswith("-"):
            url = w
        i += 1
    assert url is not None and url.startswith(PORT), command
    return method, url[len(PORT):], body


def test_the_readme_has_the_examples_this_test_checks() -> None:
    assert len(alphafuse_commands()) >= 6 and len(curl_commands()) >= 6
    assert any("explain" in c for c in curl_commands()) and any("/search" in c for c in curl_commands())


@pytest.mark.parametrize("argv", alphafuse_commands(), ids=" ".join)
def test_every_alphafuse_command_parses(argv: list[str]) -> None:
    parser = build_parser()
    if "--help" in argv:
        with pytest.raises(SystemExit) as done:
            parser.parse_args(argv)
        assert done.value.code == 0
    else:
        parser.parse_args(argv)  # argparse exits 2 on an unknown or malformed flag


@pytest.mark.parametrize("command", curl_commands())
def test_every_curl_names_a_route_and_a_valid_body(command: str, tiny_artifact: Path, tmp_path: Path) -> None:
    from service.app import create_app
    from service.schemas import ItemsCreateRequest, RecommendRequest
    from service.settings import ServiceSettings

    method, target, body = _curl_request(command)
    path = target.split("?")[0]
    app = create_app(ServiceSettings(artifact=tiny_artifact, store=tmp_path / "s.sqlite3"))  # type: ignore[call-arg]
    scope = {"type": "http", "method": method, "path": path}
    assert any(r.matches(scope)[0] == Match.FULL for r in app.router.routes), f"no route serves {method} {path}"
    if body is not None:
        model = {"/recommend": RecommendRequest, "/items": ItemsCreateRequest}[path]
        model.model_validate(body)


@pytest.mark.slow
@pytest.mark.skipif(not SHARED_ML100K.is_dir(), reason=f"{SHARED_ML100K} (the main job's data) is absent")
def test_the_curl_examples_run_against_the_main_jobs_model(tmp_path: Path) -> None:
    from tests.test_service_e2e import _server

    artifact = tmp_path / "demo"
    train = [
        sys.executable, "-m", "cli", "train", "--data", str(SHARED_ML100K), "--protocol", "loo", "--max-len", "50",
        "--epochs", "1", "--out", str(artifact), "--cache-dir", str(tmp_path / "cache"),
    ]
    done = subprocess.run(train, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    evaluate = subprocess.run(
        [sys.executable, "-m", "cli", "evaluate", "--artifact", str(artifact)], cwd=ROOT, capture_output=True,
        text=True, timeout=600,
    )
    assert evaluate.returncode == 0, evaluate.stderr[-2000:]
    with _server(artifact, tmp_path / "store.sqlite3", tmp_path, workers=1) as (base, _):
        host = base.removeprefix("http://")
        for command in curl_commands():
            run = command.replace(PORT, host).replace("curl -s", "curl -sS -w '\\n%{http_code}'", 1)
            out = subprocess.run(["bash", "-c", run], capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, (command, out.stderr)
            text, _, status = out.stdout.rpartition("\n")
            assert status.startswith("2"), (command, status, text)
            json.loads(text)
        for argv in alphafuse_commands():
            if argv[0] != "loadtest":
                continue
            argv = [a.replace(f"http://{PORT}", base).replace("runs/demo", str(artifact)) for a in argv]
            argv[argv.index("--duration") + 1] = "2"
            argv[argv.index("--out") + 1] = str(tmp_path / "load.json")
            load = subprocess.run([sys.executable, "-m", "cli", *argv], cwd=ROOT, capture_output=True, text=True,
                                  timeout=300)
            assert load.returncode == 0, load.stdout[-2000:] + load.stderr[-2000:]
