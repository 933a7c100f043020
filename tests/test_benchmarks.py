"""The benchmark scripts run end to end on tiny data (they are not run at full size in CI)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "epochs=2", "--set", "hidden_dim=16", "--set", "d_n=8", "--set", "threads=1"]


def _run(script: str, *args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.mark.slow
def test_quality_benchmark_records_slices_and_resumes(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data")
    args = ["--data", str(data), "--protocol", "loo", "--variants", "alphafuse,id", "--seeds", "0",
            "--text-fields", "title", "--out", str(tmp_path / "q"), "--set", f"cache_dir={tmp_path / 'c'}", *TINY]
    _run("quality.py", *args)
    runs = json.loads((tmp_path / "q" / "results.json").read_text())["runs"]
    assert [r["variant"] for r in runs] == ["alphafuse", "id"]
    assert set(runs[0]["slices"]) == {"all", "tail_target", "head_target", "short_history", "long_history"}
    assert runs[0]["slices"]["all"]["ndcg@20"] == pytest.approx(runs[0]["test"]["ndcg@20"])
    # only the title survives in the weak-text copy the runs trained on
    records = (tmp_path / "q" / "data" / "data-title" / "items.jsonl").read_text().splitlines()
    assert set(json.loads(records[0])) == {"item_id", "title"}
    assert "already recorded" in _run("quality.py", *args)  # a second call resumes and trains nothing


@pytest.mark.slow
def test_convergence_benchmark_reuses_quality_runs_and_plots(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data")
    common = ["--data", str(data), "--protocol", "loo", "--set", f"cache_dir={tmp_path / 'cache'}", *TINY]
    _run("quality.py", *common, "--variants", "alphafuse", "--seeds", "0", "--out", str(tmp_path / "q"))
    log = _run("convergence.py", *common, "--runs", "alphafuse,id@paper", "--paper-epochs", "2",
               "--reuse", str(tmp_path / "q" / "results.json"), "--out", str(tmp_path / "c"))
    assert "alphafuse: taken from a quality benchmark run" in log
    runs = json.loads((tmp_path / "c" / "convergence.json").read_text())["runs"]
    assert [(r["variant"], r["preset"], r.get("reused", False)) for r in runs] == [
        ("alphafuse", "default", True), ("id", "paper", False)
    ]
    assert all(e["elapsed_seconds"] > 0 for r in runs for e in r["history"])
    assert runs[1]["config"]["loss"] == "infonce" and runs[1]["config"]["epochs"] == 2
    assert (tmp_path / "c" / "convergence.png").stat().st_size > 10_000


def test_weak_text_copy_keeps_every_item(tmp_path: Path) -> None:
    """An item with no title keeps its id as its text, so the weak-text run sees the same catalogue."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        from quality import text_fields_copy
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    src = tmp_path / "src"
    src.mkdir()
    (src / "interactions.csv").write_text("user_id,item_id,timestamp\nu,a,1\nu,b,2\n")
    (src / "items.jsonl").write_text(
        json.dumps({"item_id": "a", "title": "Red ball", "description": "bouncy"}) + "\n"
        + json.dumps({"item_id": "b", "description": "no title at all"}) + "\n"
    )
    out = text_fields_copy(src, ["title"], tmp_path / "copy")
    records = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert records == [{"item_id": "a", "title": "Red ball"}, {"item_id": "b", "title": "b"}]
    assert (out / "interactions.csv").read_text() == (src / "interactions.csv").read_text()


def test_catalogue_benchmark_on_a_tiny_catalogue(tmp_path: Path) -> None:
    art = tmp_path / "art"
    art.mkdir()
    rng = np.random.default_rng(0)
    np.save(art / "item_table.npy", rng.standard_normal((50, 16)).astype(np.float32))
    for source in ("random", f"artifact:{art}"):
        _run("catalogue.py", "--sizes", "300", "600", "--dim", "16", "--queries", "40", "--batch", "16",
             "--hnsw-ef-construction", "40", "--ivf-nprobe", "4", "--source", source, "--out", str(tmp_path))
        result = json.loads((tmp_path / "catalogue.json").read_text())
        rows = result["rows"]
        assert [(r["n"], r["index"]) for r in rows] == [
            (n, kind) for n in (300, 600) for kind in ("flat", "hnsw", "hnsw", "ivf")
        ]
        for r in rows:
            assert r["batches"] == 3 and r["batch_ms_p50"] > 0 and r["build_s"] >= 0
            assert 0 <= r["recall"] <= 1
        flat = [r for r in rows if r["index"] == "flat"]
        assert all(r["recall"] == 1.0 and r["bytes_per_item"] >= 16 * 4 for r in flat)  # exact, float32 rows
        hnsw = [r for r in rows if r["index"] == "hnsw"]
        assert all(r["bytes_per_item"] > flat[0]["bytes_per_item"] for r in hnsw)  # the graph costs memory
        assert "| 300 | flat | exact |" in (tmp_path / "catalogue.md").read_text()


@pytest.mark.slow
def test_swap_benchmark_swaps_twice_refuses_a_corrupt_artifact_and_loses_nothing(
    tiny_data: Path, tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from tests.conftest import train_tiny_artifact

    other = train_tiny_artifact(tiny_data, tmp_path_factory, seed=1)
    timing = ["--before", "1", "--between", "1", "--after", "1", "--write-every", "0.1"]
    _run("swap.py", "--artifact", str(tiny_artifact), "--other", str(other), "--concurrency", "4", *timing,
         "--out-dir", str(tmp_path))  # fmt: skip
    result = json.loads((tmp_path / "swap.json").read_text())["summary"]
    assert [s["status"] for s in result["swaps"]] == [200, 200, 422]
    assert "checksum" in result["swaps"][2]["answer"]["detail"]
    assert result["total"]["failures"] == 0 and result["total"]["requests"] > 0
    assert result["items"]["acked"] == result["items"]["present"] > 0
    phases = {p["phase"]: p for p in result["phases"]}
    for name in ("before", "after A -> B", "after B -> A (reload)", "after A -> corrupt copy"):
        assert len(phases[name]["artifacts"]) == 1, phases[name]  # no swap touched these requests
    assert phases["before"]["artifacts"] != phases["after A -> B"]["artifacts"]
    assert phases["after B -> A (reload)"]["artifacts"] == phases["before"]["artifacts"]
    assert (tmp_path / "swap.md").read_text().startswith("# Model swap under load")


@pytest.mark.slow
def test_ranks_benchmark_agrees_with_the_evaluator(
    tiny_data: Path, tiny_artifact: Path, tmp_path_factory: pytest.TempPathFactory, tmp_path: Path
) -> None:
    from tests.conftest import train_tiny_artifact
    from training.evaluate import evaluate_artifact

    id_artifact = train_tiny_artifact(tiny_data, tmp_path_factory, item_embedding="id", epochs=3)
    _run("ranks.py", str(tiny_artifact), str(id_artifact), "--cache-dir", str(tmp_path / "cache"),
         "--out", str(tmp_path), "--name", "r")
    out = json.loads((tmp_path / "r.json").read_text())
    assert [r["variant"] for r in out["runs"]] == ["alphafuse", "id"]
    for run, art in zip(out["runs"], (tiny_artifact, id_artifact), strict=True):
        assert sum(run["rank_share"].values()) == pytest.approx(1.0)
        assert 0.0 <= run["top1_is_last"] <= run["top1_in_history"] <= 1.0
        valid = evaluate_artifact(art)["valid"]
        assert run["mrr@20"] == pytest.approx(valid["mrr@20"], abs=1e-6)
        assert run["hr@20"] == pytest.approx(valid["hr@20"], abs=1e-6)
    assert sum(out["pair"].values()) == out["runs"][0]["cases"]
    assert "| alphafuse |" in (tmp_path / "r.md").read_text()
