"""benchmarks/paper.py and benchmarks/plots.py: the planned runs of every table, the report, the figures, and tiny
end-to-end tables that write their files and resume without retraining.

The end-to-end runs use a precomputed embedding matrix (the `npy:` encoder), so no language model is loaded.
The long-tail metrics themselves are tested in test_longtail.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
import pytest

from tests.conftest import write_tiny_dataset

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "epochs=2", "--set", "hidden_dim=16", "--set", "d_n=8", "--set", "threads=1", "--set", 'cache_dir=""']
VARIANTS = ["alphafuse", "id", "llminit", "whitened-text", "morec", "whitenrec", "unisrec", "rlmrec-con", "rlmrec-gen",
            "llmesr"]  # fmt: skip


@pytest.fixture(scope="module")
def bench() -> Iterator[tuple[ModuleType, ModuleType]]:
    """benchmarks/paper.py and benchmarks/plots.py imported as modules (they import their siblings by name)."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import paper
        import plots

        yield paper, plots
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def _plan(paper: ModuleType, table: str, **kw: Any) -> list[Any]:
    return list(paper.plan(
        paper.TABLES[table], data_root=Path("/data"), seeds=kw.pop("seeds", [0, 1, 2]), values=kw.pop("values", {}),
        out=Path("/out"), **kw,
    ))  # fmt: skip


def test_cold_users_table_runs_every_variant_on_the_paper_splits(bench: tuple[ModuleType, ModuleType]) -> None:
    paper, _ = bench
    runs = _plan(paper, "cold-users")
    assert len(runs) == 3 * 10 * 3 and all(r.same_as is None for r in runs)
    assert [r.dataset for r in runs[::30]] == ["amazon-toys", "amazon-beauty", "amazon-sports"]
    # seed by seed: one complete comparison before the next seed
    assert [(r.row.name, r.seed) for r in runs[:11]] == [*((v, 0) for v in VARIANTS), ("alphafuse", 1)]
    assert {(r.cfg.protocol, r.cfg.split) for r in runs[:30]} == {
        ("cold-users", str(Path("/data/amazon-toys/splits/preferdiff").resolve()))
    }
    assert runs[1].cfg.item_embedding == "id" and runs[1].cfg.out == "/out/artifacts/cold-users/amazon-toys/id-s0"
    # the default recipe for everyone: apart from the variant, the configs are equal
    cfgs = {json.dumps({**r.cfg.to_dict(), "item_embedding": "", "out": ""}) for r in runs[:10]}
    assert len(cfgs) == 1


def test_long_tail_table_is_leave_one_out_on_beauty_and_yelp(bench: tuple[ModuleType, ModuleType]) -> None:
    paper, _ = bench
    runs = _plan(paper, "long-tail")
    assert len(runs) == 2 * 10 * 3 and paper.TABLES["long-tail"].evaluation == "long-tail"
    assert {r.dataset for r in runs} == {"amazon-beauty", "yelp"}
    assert {(r.cfg.protocol, r.cfg.split) for r in runs} == {("loo", None)}


def test_ablation_table_sweeps_switches_and_d_n_and_trains_the_recipe_d_n_once(
    bench: tuple[ModuleType, ModuleType],
) -> None:
    paper, _ = bench
    runs = _plan(paper, "ablation", seeds=[0])
    by_name = {r.row.name: r for r in runs}
    assert list(by_name) == [
        "full", "no-freeze", "no-clip", "no-standardise", "d_n=0", "d_n=16", "d_n=32", "d_n=64", "d_n=96",
        "d_n=128", "id-init-normal", "popularity-weighting",
    ]  # fmt: skip
    assert {r.cfg.item_embedding for r in runs} == {"alphafuse"} and {r.dataset for r in runs} == {"amazon-toys"}
    full = by_name["full"].cfg
    assert (full.freeze_language, full.clip, full.standardise, full.id_init, full.weighting) == (
        True, True, True, "zeros", "uniform"
    )  # fmt: skip
    assert not by_name["no-freeze"].cfg.freeze_language and not by_name["no-clip"].cfg.clip
    assert not by_name["no-standardise"].cfg.standardise and by_name["id-init-normal"].cfg.id_init == "normal"
    assert by_name["popularity-weighting"].cfg.weighting == "popularity"
    assert [by_name[f"d_n={d}"].cfg.d_n for d in (0, 16, 32, 64, 96, 128)] == [0, 16, 32, 64, 96, 128]
    assert {by_name[f"d_n={d}"].cfg.hidden_dim for d in (0, 128)} == {full.hidden_dim} == {128}
    # the recipe's d_n (96) is the full model: not trained twice
    assert [r.row.name for r in runs if r.same_as] == ["d_n=96"] and by_name["d_n=96"].same_as == "full"
    # a --set of the swept field moves the duplicate, and the rows' own values still win
    moved = _plan(paper, "ablation", seeds=[0], values={"d_n": 64})
    assert [(r.row.name, r.cfg.d_n) for r in moved if r.same_as] == [("d_n=64", 64)]
    assert next(r for r in moved if r.row.name == "d_n=16").cfg.d_n == 16


def test_cold_items_and_ml1m_tables(bench: tuple[ModuleType, ModuleType]) -> None:
    paper, _ = bench
    cold = _plan(paper, "cold-items")
    assert len(cold) == 8 * 3 and {r.dataset for r in cold} == {"amazon-toys"}
    assert [r.row.name for r in cold[:8]] == [
        "alphafuse", "llminit", "whitened-text", "morec", "whitenrec", "unisrec", "llmesr", "alphafuse-all"
    ]  # fmt: skip
    assert [r.row.train_on_cold for r in cold[:8]] == [False] * 7 + [True] and cold[7].same_as is None
    ml = _plan(paper, "ml-1m")
    assert len(ml) == 30 and {r.dataset for r in ml} == {"ml-1m"}
    cfg = ml[0].cfg
    # benchmarks/configs/ml-1m.yaml, under --set
    assert (cfg.protocol, cfg.max_len, cfg.hidden_dim, cfg.num_blocks, cfg.mask_history) == ("loo", 200, 64, 2, True)
    assert _plan(paper, "ml-1m", values={"max_len": 50})[0].cfg.max_len == 50


def test_variants_and_datasets_select_and_unknown_rows_are_named(bench: tuple[ModuleType, ModuleType]) -> None:
    paper, _ = bench
    runs = _plan(paper, "cold-users", seeds=[4], variants=["llmesr", "id"], datasets=["amazon-beauty", "tiny"])
    assert [(r.dataset, r.row.name, r.seed) for r in runs] == [
        ("amazon-beauty", "id", 4), ("amazon-beauty", "llmesr", 4), ("tiny", "id", 4), ("tiny", "llmesr", 4)
    ]  # fmt: skip
    assert runs[0].cfg.split is not None and runs[2].cfg.split is None  # a new dataset: generated split
    with pytest.raises(ValueError, match="no rows \\['bogus'\\].*its rows: full, no-freeze"):
        _plan(paper, "ablation", variants=["bogus"])


def test_dry_run_lists_runs_and_configs_without_training(tmp_path: Path) -> None:
    out = _run("--table", "ablation", "--seeds", "0", "--dry-run", "--set", "epochs=3", "--out", str(tmp_path))
    lines = [line for line in out.splitlines() if line.startswith("run ")]
    assert len(lines) == 12 and lines[0].startswith("run 1/12: amazon-toys full seed 0 [to train]")
    assert "epochs=3" in lines[0] and "clip=False" in lines[2]
    assert "[same config as full: not run]" in lines[8]
    assert "ablation: 12 runs, 11 to train" in out
    assert not list(tmp_path.iterdir())  # nothing written


def _record(row: str, seed: int, ndcg10: float) -> dict[str, Any]:
    metrics = {m: 0.1 for m in ("ndcg@10", "ndcg@20", "mrr@10", "mrr@20", "hr@10", "hr@20")}
    groups = {g: {"ndcg@10": ndcg10, "hr@10": 0.5, "cases": 10.0} for g in ("overall", "tail_item", "head_item",
                                                                           "short_user", "long_user")}  # fmt: skip
    return {
        "table": "long-tail", "dataset": "amazon-beauty", "row": row, "variant": row, "seed": seed, "test": metrics,
        "best_epoch": 3, "wall_seconds": 60.0, "trainable_parameters": 1234, "loss": "ce",
        "config": {"data": "/d", "protocol": "loo", "split": None},
        "longtail": {"sampled": groups, "full": groups},
        "groups": {"tail_items": 0.8, "short_users": 0.81, "pareto_tail_below": 20, "pareto_short_below": 10},
        "evaluation": {"kind": "long-tail", "tail_below": 20, "short_below": 10, "negatives": 100},
    }  # fmt: skip


def test_report_states_the_recipe_and_puts_published_numbers_beside_ours(bench: tuple[ModuleType, ModuleType]) -> None:
    paper, _ = bench
    runs = [_record("alphafuse", 0, 0.40), _record("alphafuse", 1, 0.42), _record("id", 0, 0.30)]
    text = paper.report(paper.TABLES["long-tail"], runs, {"overrides": {}}, ["long-tail-spectrum-amazon-beauty.png"])
    assert "Every method uses the same recipe, the default one" in text and "loss ce" in text
    assert "| alphafuse | 2 | 0.1000 ± 0.0000 |" in text and "1,234" in text
    assert "| alphafuse | longtail.sampled.overall.ndcg@10 | 0.4100 ± 0.0141 | 0.4046 |" in text
    assert "| llmesr | longtail.sampled.overall.ndcg@10 | not run | 0.3713 |" in text
    assert "fewer than 20 users" in text and "The 80/20 point of this data: 20 / 10" in text
    assert "![long-tail-spectrum-amazon-beauty.png](long-tail-spectrum-amazon-beauty.png)" in text


def test_plots_draw_non_trivial_pngs(bench: tuple[ModuleType, ModuleType], tmp_path: Path) -> None:
    _, plots = bench
    s = np.sort(np.random.default_rng(0).gamma(1.0, size=384))[::-1] ** 3
    plots.plot_spectrum(s, 32, 96, "spectrum", tmp_path / "s.png")
    plots.plot_popularity_buckets(
        {"alphafuse": {"<10": 0.01, "10-29": 0.03, ">=30": 0.05}, "id": {"<10": 0.0, "10-29": 0.02}},
        {"<10": 120, "10-29": 300, ">=30": 800}, "buckets", tmp_path / "b.png",
    )  # fmt: skip
    plots.plot_dn_sweep([(0, 0.04, 0.002), (64, 0.05, 0.001), (128, 0.045, 0.003)], "d_n", tmp_path / "d.png",
                        default_d_n=64)  # fmt: skip
    history = [{"epoch": e, "valid_ndcg@20": 0.01 * e, "elapsed_seconds": 5.0 * e} for e in range(1, 6)]
    plots.plot_convergence([{"name": "alphafuse", "history": history}], "curves", tmp_path / "c.png")
    for name in ("s", "b", "d", "c"):
        assert (tmp_path / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert (tmp_path / f"{name}.png").stat().st_size > 15_000, name
    with pytest.raises(ValueError, match="must fit"):
        plots.plot_spectrum(s, 300, 96, "bad", tmp_path / "x.png")


def _run(*args: str) -> str:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "paper.py"), *args], cwd=ROOT, env=env, capture_output=True,
        text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout + done.stderr


@pytest.fixture(scope="module")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A data root holding the tiny themed dataset as `tiny`, and an `npy:` encoder spec for its items."""
    root = tmp_path_factory.mktemp("paper")
    data = write_tiny_dataset(root / "data" / "tiny")
    ids = [json.loads(line)["item_id"] for line in (data / "items.jsonl").read_text().splitlines()]
    rng = np.random.default_rng(0)
    centres = rng.normal(size=(4, 32))
    themes = {t: i for i, t in enumerate(dict.fromkeys(i.split("-")[0] for i in ids))}
    emb = np.stack([centres[themes[i.split("-")[0]]] + 0.3 * rng.normal(size=32) for i in ids]).astype(np.float32)
    np.save(root / "emb.npy", emb)
    (root / "ids.json").write_text(json.dumps(ids))
    return root, f'encoder="npy:{root / "emb.npy"}:{root / "ids.json"}"'


@pytest.mark.slow
def test_long_tail_table_end_to_end_writes_report_figures_and_resumes(
    tiny_root: tuple[Path, str], tmp_path: Path
) -> None:
    root, encoder = tiny_root
    out = tmp_path / "results"
    args = ["--table", "long-tail", "--data-root", str(root / "data"), "--datasets", "tiny", "--variants",
            "alphafuse,id", "--seeds", "0", "--negatives", "10", "--tail-below", "14", "--short-below", "8",
            "--set", encoder, *TINY, "--out", str(out)]  # fmt: skip
    log = _run(*args)
    assert "run 1/2: tiny alphafuse seed 0 (2 to train, ETA after the first run)" in log
    assert "run 2/2: tiny id seed 0 (1 to train, ETA " in log
    doc = json.loads((out / "long-tail.json").read_text())
    runs = doc["runs"]
    assert [(r["row"], r["seed"]) for r in runs] == [("alphafuse", 0), ("id", 0)]
    for r in runs:
        assert r["trainable_parameters"] > 0 and r["wall_seconds"] > 0 and r["evaluation"]["negatives"] == 10
        lt = r["longtail"]
        assert lt["full"]["overall"]["ndcg@20"] == pytest.approx(r["test"]["ndcg@20"])
        assert 0 < lt["full"]["tail_item"]["cases"] < lt["full"]["overall"]["cases"]
        assert lt["full"]["short_user"]["cases"] + lt["full"]["long_user"]["cases"] == lt["full"]["overall"]["cases"]
        assert lt["sampled"]["overall"]["mrr@10"] >= lt["full"]["overall"]["mrr@10"]  # 10 rivals, not 23
        assert sum(b["cases"] for b in r["buckets"].values()) == lt["full"]["overall"]["cases"]
    assert len(doc["spectra"]["tiny"]["eigenvalues"]) == 32  # every direction of the 32-d embeddings
    report = (out / "long-tail.md").read_text()
    assert "| alphafuse | 1 |" in report and "Test, target among 10 sampled negatives" in report
    for name in ("spectrum", "popularity", "convergence"):
        png = out / f"long-tail-{name}-tiny.png"
        assert png.stat().st_size > 15_000 and f"]({png.name})" in report
    again = _run(*args)
    assert "run 1/2: tiny alphafuse seed 0 already recorded" in again and "run 2/2: tiny id seed 0 already" in again
    assert "2 runs recorded, 0 trained now" in again
    assert json.loads((out / "long-tail.json").read_text())["runs"] == runs
    # every run is also scored with the history's items masked (the service's default), beside the table's protocol
    assert all(0 < r["test_masked"]["ndcg@20"] <= 1 and "ndcg@20" in r["valid_masked"] for r in runs)
    assert "the history's items kept out of the ranking" in report
    # a run recorded before that existed is scored from its artifact, and nothing is trained
    doc = json.loads((out / "long-tail.json").read_text())
    before = doc["runs"][0].pop("test_masked")
    del doc["runs"][0]["valid_masked"]
    (out / "long-tail.json").write_text(json.dumps(doc))
    backfilled = _run(*args, "--backfill-masked")
    assert "tiny alphafuse seed 0: test ndcg@20" in backfilled and "to train" not in backfilled
    after = json.loads((out / "long-tail.json").read_text())["runs"][0]["test_masked"]
    assert after["ndcg@20"] == pytest.approx(before["ndcg@20"]) and after["mrr@20"] == pytest.approx(before["mrr@20"])
    # another evaluation setting is another experiment: the runs are redone, not reused
    changed = _run(*args[:-2], "--negatives", "5", "--out", str(out), "--variants", "id")
    assert "run 1/1: tiny id seed 0 (1 to train" in changed


@pytest.mark.slow
def test_ablation_and_cold_items_tables_end_to_end(tiny_root: tuple[Path, str], tmp_path: Path) -> None:
    root, encoder = tiny_root
    out = tmp_path / "results"
    common = ["--data-root", str(root / "data"), "--datasets", "tiny", "--seeds", "0,1", "--set", encoder, *TINY,
              "--out", str(out)]  # fmt: skip
    log = _run("--table", "ablation", "--variants", "full,no-clip,d_n=0,d_n=16", *common, "--set", "d_n=16")
    assert "tiny d_n=16 seed 1 has the config of full: not run again" in log
    runs = json.loads((out / "ablation.json").read_text())["runs"]
    assert [(r["row"], r["seed"], r["config"]["d_n"]) for r in runs] == [
        ("full", 0, 16), ("full", 1, 16), ("no-clip", 0, 16), ("no-clip", 1, 16), ("d_n=0", 0, 0), ("d_n=0", 1, 0)
    ]  # fmt: skip
    assert (out / "ablation-dn-tiny.png").stat().st_size > 15_000
    _run("--table", "cold-items", "--variants", "alphafuse,morec,alphafuse-all", "--cold-fraction", "0.25", *common)
    cold = json.loads((out / "cold-items.json").read_text())["runs"]
    assert {(r["row"], tuple(r["cold"])) for r in cold} == {
        ("alphafuse", ("v0 = 0", "v0 = mean ID", "v0 = neighbours' ID")), ("morec", ("from text",)),
        ("alphafuse-all", ("trained with them",)),
    }  # fmt: skip
    assert all(r["cold_items"] == 6 and r["cold"][k]["all"]["cases"] > 0 for r in cold for k in r["cold"])
    assert "| alphafuse | v0 = mean ID | 2 |" in (out / "cold-items.md").read_text()


@pytest.mark.slow
def test_a_run_another_process_recorded_meanwhile_is_not_trained_again(
    bench: tuple[ModuleType, ModuleType], tiny_root: tuple[Path, str], tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    import shutil

    paper, _ = bench
    root, encoder = tiny_root
    args = ["--table", "long-tail", "--data-root", str(root / "data"), "--datasets", "tiny", "--variants",
            "alphafuse,id", "--seeds", "0", "--negatives", "10", "--set", encoder, *TINY]  # fmt: skip
    elsewhere = tmp_path / "elsewhere"
    _run(*args, "--out", str(elsewhere))  # what a second process sharing --out would have written
    out = tmp_path / "shared"
    out.mkdir()
    trained: list[str] = []

    def execute(run: Any, spec: Any) -> dict[str, Any]:
        # this process trains the first run; meanwhile the "other" one finishes both
        trained.append(run.label)
        shutil.copy(elsewhere / "long-tail.json", out / "long-tail.json")
        doc = json.loads((out / "long-tail.json").read_text())
        return next(r for r in doc["runs"] if run.matches(r))

    monkeypatch.setattr(paper, "execute", execute)
    monkeypatch.setattr(sys, "argv", ["paper.py", *args, "--out", str(out)])
    with caplog.at_level("INFO", logger="paper"):
        paper.main()
    assert trained == ["tiny alphafuse seed 0"]
    assert "run 2/2: tiny id seed 0 recorded meanwhile" in caplog.text
    assert [r["row"] for r in json.loads((out / "long-tail.json").read_text())["runs"]] == ["alphafuse", "id"]
