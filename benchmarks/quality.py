"""Quality benchmark: item-embedding variants on one backbone, dataset and protocol, several seeds.

Writes `<out>/results.json` (every run: config, valid/test metrics, best epoch, wall time) and
`<out>/results.md` (mean +- std over seeds) after each run, so an interrupted benchmark keeps what it did.

    python benchmarks/quality.py --data ../shared/data/amazon-toys \
        --split ../shared/data/amazon-toys/splits/preferdiff --protocol cold-users --out benchmarks/out/toys
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from training.config import TrainConfig, read_config_file
from training.train import run_training

REPORT = ("ndcg@10", "ndcg@20", "mrr@10", "mrr@20", "hr@10", "hr@20")


def summarise(runs: list[dict[str, Any]]) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    head = "| variant | seeds | " + " | ".join(f"test {m}" for m in REPORT) + " | best epoch | wall s/run |"
    lines = [head, "|" + "---|" * (len(REPORT) + 4)]
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        cells = []
        for m in REPORT:
            vals = [r["test"][m] for r in rs]
            sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
            cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
        epochs = statistics.mean(r["best_epoch"] for r in rs)
        wall = statistics.mean(r["wall_seconds"] for r in rs)
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(cells) + f" | {epochs:.1f} | {wall:.0f} |")
    return "\n".join(lines) + "\n"


def train_overrides(config: str | None, pairs: list[str]) -> dict[str, Any]:
    """TrainConfig fields from `--config FILE` then `--set KEY=VALUE` (JSON value, else the raw string)."""
    values: dict[str, Any] = read_config_file(Path(config)) if config else {}
    for kv in pairs:
        key, _, raw = kv.partition("=")
        try:
            values[key.replace("-", "_")] = json.loads(raw)
        except json.JSONDecodeError:
            values[key.replace("-", "_")] = raw
    return values


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--protocol", default="cold-users", choices=["loo", "cold-users"])
    p.add_argument("--variants", default="alphafuse,id,llminit")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--patience", type=int, default=5)
    p.add_argument("--config", default=None, help="YAML/TOML of TrainConfig fields applied to every run")
    p.add_argument("--set", action="append", default=[], help="TrainConfig override KEY=VALUE (JSON value)")
    p.add_argument("--out", default="benchmarks/out/quality")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    base_values = train_overrides(args.config, args.set)
    base = TrainConfig(
        data=args.data, split=args.split, protocol=args.protocol, epochs=args.epochs, patience=args.patience,
        **base_values,
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: list[dict[str, Any]] = []
    meta = {
        "data": args.data, "split": args.split, "protocol": args.protocol, "epochs": args.epochs,
        "patience": args.patience, "overrides": base_values, "machine": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }
    for variant in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg = replace(base, item_embedding=variant, seed=seed, out=str(out / "artifacts" / f"{variant}-s{seed}"))
            started = time.perf_counter()
            result = run_training(cfg)
            runs.append({
                "variant": variant, "seed": seed, "valid": result.metrics["valid"], "test": result.metrics["test"],
                "best_epoch": result.best_epoch, "epochs_run": len(result.history),
                "wall_seconds": time.perf_counter() - started, "config": cfg.to_dict(),
            })
            (out / "results.json").write_text(json.dumps({"meta": meta, "runs": runs}, indent=1))
            (out / "results.md").write_text(
                f"Data `{args.data}`, split `{args.split or 'generated'}`, protocol `{args.protocol}`, "
                f"max {args.epochs} epochs, patience {args.patience}, overrides {base_values or 'none'}.\n\n"
                + summarise(runs)
            )
    print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
