"""The measuring tools of the serving benchmark: CPU time from /proc and the by-layer profile summary."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from service import procstat

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
try:
    import layers
finally:
    sys.path.remove(str(ROOT / "benchmarks"))

linux_only = pytest.mark.skipif(not Path("/proc/self/stat").is_file(), reason="needs /proc")


@linux_only
def test_cpu_of_this_process_tracks_what_the_kernel_charged_it() -> None:
    before = procstat.sample(os.getpid())
    t0 = os.times()
    deadline = time.process_time() + 0.3
    while time.process_time() < deadline:  # burn ~0.3 s of CPU
        sum(range(1000))
    after = procstat.sample(os.getpid())
    t1 = os.times()
    used = procstat.cpu_between(before, after)
    charged = (t1.user + t1.system) - (t0.user + t0.system)
    tick = 1 / procstat.CLOCK_TICKS
    assert used >= 0.25
    assert used == pytest.approx(charged, abs=3 * tick)  # same counters, read two ways
    assert before.cpu_s[os.getpid()] <= after.cpu_s[os.getpid()]


@linux_only
def test_the_tree_includes_children_and_names_a_dead_root() -> None:
    import subprocess

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        deadline = time.monotonic() + 10
        while child.pid not in procstat.process_tree(os.getpid()):
            assert time.monotonic() < deadline, "the child never showed up in the tree"
            time.sleep(0.05)
        assert child.pid in procstat.sample(os.getpid()).cpu_s
    finally:
        child.kill()
        child.wait()
    with pytest.raises(ProcessLookupError, match=str(child.pid)):
        procstat.sample(child.pid)


def test_stat_parsing_survives_a_command_name_with_spaces_and_parentheses(tmp_path: Path) -> None:
    (tmp_path / "42").mkdir()
    # fields after the name: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime stime
    (tmp_path / "42" / "stat").write_text("42 (a (weird) name) S 7 42 42 0 -1 0 0 0 0 0 250 50 0 0 20 0\n")
    st = procstat.read_stat(42, tmp_path)
    assert st.ppid == 7 and st.cpu_s == pytest.approx(300 / procstat.CLOCK_TICKS)


SITE = "/venv/lib/python3.11/site-packages"
ROOT_FRAMES = (
    f"run (/venv/lib/python3.11/asyncio/runners.py:118);"
    f"RequestResponseCycle.run_asgi ({SITE}/uvicorn/protocols/http/httptools_impl.py:422);"
    f"Router.__call__ ({SITE}/starlette/routing.py:683);"
    f"get_request_handler.<locals>.app ({SITE}/fastapi/routing.py:528)"
)
RANKER_THREAD = (
    "Thread._bootstrap (/venv/lib/python3.11/threading.py:1002);"
    "_worker (/venv/lib/python3.11/concurrent/futures/thread.py:83);"
    "AppState.rank_batch (/src/service/app.py:147);"
    "Ranker.recommend_many (/src/service/ranker.py:300)"
)
PROFILE = f"""process 1:"python -m service.main";{ROOT_FRAMES} 5
{ROOT_FRAMES};solve_dependencies ({SITE}/fastapi/dependencies/utils.py:700);\
validate_python ({SITE}/pydantic/type_adapter.py:400) 7
{ROOT_FRAMES};serialize_response ({SITE}/fastapi/routing.py:340);\
validate_python ({SITE}/pydantic/type_adapter.py:400) 3
{ROOT_FRAMES};recommend (/src/service/app.py:420);recommend_body (/src/service/responses.py:30) 2
{ROOT_FRAMES};solve_dependencies ({SITE}/fastapi/dependencies/utils.py:768);\
run_in_threadpool ({SITE}/starlette/concurrency.py:34) 4
{RANKER_THREAD};forward ({SITE}/torch/nn/modules/module.py:1700) 11
{RANKER_THREAD};Ranker._search (/src/service/ranker.py:380);replacement_search ({SITE}/faiss/class_wrappers.py:300) 6
{RANKER_THREAD} 2
Thread._bootstrap (/venv/lib/python3.11/threading.py:1002);AppState.sync (/src/service/app.py:128);\
SQLiteItemStore.changes_since (/src/service/store.py:520);loads (/venv/lib/python3.11/json/__init__.py:346);\
JSONDecoder.decode (/venv/lib/python3.11/json/decoder.py:337) 1
thread (0x7F00);<module> (/somewhere/else.py:1) 1

not a stack line
"""


def test_profile_layers_by_module_path() -> None:
    summary = layers.summarise(layers.parse_raw(PROFILE.splitlines()))
    assert summary.total == 42
    assert dict(summary.samples) == {
        layers.FRAMEWORK: 5,  # uvicorn at the root, FastAPI's routing innermost: the innermost plain frame
        layers.VALIDATION: 7,
        layers.ENCODING: 3 + 2,  # response-model validation is serialisation; our encoder module too
        layers.HANDOFF: 4,  # a sync dependency sent to a worker thread, although under solve_dependencies
        layers.TORCH: 11,
        layers.FAISS: 6,
        layers.RANKER: 2,
        layers.STORE: 1,  # json.loads of a stored record is store work, not request parsing
        layers.OTHER: 1,
    }
    assert summary.share(layers.TORCH) == pytest.approx(11 / 42)
    assert summary.top[layers.FAISS].most_common(1)[0][0] == "replacement_search (faiss/class_wrappers.py)"
    table = layers.markdown(summary, "tiny")
    assert table.splitlines()[0] == "**tiny** (42 samples)"
    assert f"| {layers.TORCH} | 11 | 26.2% |" in table


def test_the_framework_layer_is_the_innermost_plain_frame() -> None:
    frames = [f for f in map(layers.parse_frame, ROOT_FRAMES.split(";")) if f is not None]
    assert layers.layer_of(frames)[0] == layers.FRAMEWORK  # fastapi/routing.py is innermost
    assert layers.layer_of(frames[:2])[0] == layers.HTTP
    assert layers.parse_frame('process 9:"python x (y)"') is None
    assert layers.parse_frame("f (/a/b.py)") == layers.Frame("f", "/a/b.py")  # --nolineno output
