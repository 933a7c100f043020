"""Convergence benchmark: validation NDCG@20 against wall-clock seconds (and epochs) for each variant.

Each run is `variant` or `variant@preset` (e.g. `alphafuse@paper`), trained on one dataset with one seed;
the curve is the per-epoch history that training records (`elapsed_seconds` counts training and
validation since the first step, not the text encoder, which is cached after the first run). Writes
`<out>/convergence.json`, `<out>/convergence.md` and `<out>/convergence.png`; re-running with the same
`--out` reuses recorded runs with the same configuration.

    python benchmarks/convergence.py --data ../shared/data/amazon-toys \
        --split ../shared/data/amazon-toys/splits/preferdiff --out benchmarks/out/convergence-toys
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from quality import comparable, train_overrides, write_atomic  # benchmarks/ is on sys.path when run as a script

from training.config import config_with_preset
from training.train import run_training

log = logging.getLogger("convergence")


def plot(runs: list[dict[str, Any]], title: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, (by_time, by_epoch) = plt.subplots(1, 2, figsize=(12, 4.5))
    for r in runs:
        h = [e for e in r["history"] if "valid_ndcg@20" in e]
        if not h:
            continue
        secs = [e["elapsed_seconds"] for e in h]
        vals = [e["valid_ndcg@20"] for e in h]
        style = "--" if r["preset"] != "default" else "-"
        (line,) = by_time.plot(secs, vals, style, marker=".", label=r["name"])
        by_epoch.plot([e["epoch"] for e in h], vals, style, marker=".", color=line.get_color(), label=r["name"])
        best = max(range(len(vals)), key=vals.__getitem__)
        by_time.plot([secs[best]], [vals[best]], "o", color=line.get_color(), markersize=8, fillstyle="none")
    by_time.set_xlabel("wall-clock seconds (training + validation)")
    by_epoch.set_xlabel("epoch")
    for ax in (by_time, by_epoch):
        ax.set_ylabel("validation NDCG@20")
        ax.grid(alpha=0.3)
    by_epoch.legend(fontsize=8)
    fig.suptitle(title + " (circle: the epoch early stopping keeps)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report(runs: list[dict[str, Any]], header: str) -> str:
    lines = [
        header, "",
        "| run | epochs | best epoch | best valid N@20 | s to best | s to 95% of best | total s | test N@20 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in runs:
        h = [e for e in r["history"] if "valid_ndcg@20" in e]
        if not h:
            continue
        best = max(h, key=lambda e: e["valid_ndcg@20"])
        near = next(e for e in h if e["valid_ndcg@20"] >= 0.95 * best["valid_ndcg@20"])
        lines.append(
            f"| {r['name']} | {len(r['history'])} | {best['epoch']:.0f} | {best['valid_ndcg@20']:.4f} | "
            f"{best['elapsed_seconds']:.0f} | {near['elapsed_seconds']:.0f} | {h[-1]['elapsed_seconds']:.0f} | "
            f"{r['test']['ndcg@20']:.4f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--protocol", default="cold-users", choices=["loo", "cold-users"])
    p.add_argument("--runs", default="alphafuse,id,llminit,whitened-text,alphafuse@paper,id@paper")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--paper-epochs", type=int, default=30, help="epoch cap for @paper runs (the preset has 150)")
    p.add_argument("--config", default=None, help="YAML/TOML of TrainConfig fields applied to every run")
    p.add_argument("--set", action="append", default=[], help="TrainConfig override KEY=VALUE (JSON value)")
    p.add_argument(
        "--reuse", action="append", default=[],
        help="a quality benchmark's results.json: its runs with the same config and seed are taken, not retrained",
    )
    p.add_argument("--out", default="benchmarks/out/convergence")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    overrides = train_overrides(args.config, args.set)
    results = out / "convergence.json"
    runs: list[dict[str, Any]] = json.loads(results.read_text())["runs"] if results.is_file() else []
    reusable = [r for path in args.reuse for r in json.loads(Path(path).read_text())["runs"]]
    meta = {
        "data": args.data, "split": args.split, "protocol": args.protocol, "seed": args.seed,
        "overrides": overrides, "paper_epochs": args.paper_epochs, "machine": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }
    for name in args.runs.split(","):
        variant, _, preset = name.partition("@")
        preset = preset or "default"
        values = {"data": args.data, "split": args.split, "protocol": args.protocol, "seed": args.seed, **overrides}
        if preset == "paper":
            values.setdefault("epochs", args.paper_epochs)
        artifact = out / "artifacts" / name.replace("@", "-")
        cfg = replace(config_with_preset(preset, values), item_embedding=variant, out=str(artifact))
        done = [r for r in runs if r["name"] == name]
        if done and comparable(done[0]["config"]) == comparable(cfg.to_dict()):
            log.info("%s already recorded in %s: skipped", name, results)
            continue
        runs = [r for r in runs if r["name"] != name]
        same = [
            r for r in reusable
            if comparable(r["config"], keep_threads=True) == comparable(cfg.to_dict(), keep_threads=True)
        ]
        if same:
            log.info("%s: taken from a quality benchmark run with the same config", name)
            r = same[0]
            runs.append({
                "name": name, "variant": variant, "preset": preset, "history": r["history"],
                "best_epoch": r["best_epoch"], "valid": r["valid"], "test": r["test"],
                "wall_seconds": r["wall_seconds"], "config": r["config"], "reused": True,
            })
            write_atomic(results, json.dumps({"meta": meta, "runs": runs}, indent=1))
            continue
        started = time.perf_counter()
        result = run_training(cfg)
        runs.append({
            "name": name, "variant": variant, "preset": preset, "history": result.history,
            "best_epoch": result.best_epoch, "valid": result.metrics["valid"], "test": result.metrics["test"],
            "wall_seconds": time.perf_counter() - started, "config": cfg.to_dict(),
        })
        write_atomic(results, json.dumps({"meta": meta, "runs": runs}, indent=1))
    title = f"{Path(args.data).name}, seed {args.seed}"
    plot(runs, title, out / "convergence.png")
    header = (
        f"Convergence on `{args.data}` (split `{args.split or 'generated'}`, protocol `{args.protocol}`), seed "
        f"{args.seed}, overrides {overrides or 'none'}; @paper runs capped at {args.paper_epochs} epochs."
    )
    (out / "convergence.md").write_text(report(runs, header))
    print((out / "convergence.md").read_text())


if __name__ == "__main__":
    main()
