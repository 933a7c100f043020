"""Cold-start items benchmark (protocol in training/cold_items.py): how well do items that the model never
saw rank once folded in from their text, and which ID part v0 should they get?

Per seed, one fraction of the catalogue is held out. Runs:

- `alphafuse`: trained without the held-out items, which are then folded in with each v0 rule: 0, the mean
  ID, and the mean ID of the item's 5 nearest trained items by semantic-rich coordinates (`neighbours`);
- `llminit`: trained without them; a cold item gets its whitened-PCA coordinates z (its rows' starting
  point), the only fold-in an LLMInit table has;
- `alphafuse-all` (reference): trained WITH the held-out items, scored on the same cases: what those items
  would get had they had interactions.

Every fold-in is scored on the validation cases too (the held-out items were kept out of the validation
that early stopping read, so these are unseen): the v0 rule is chosen on them, never on test.

Writes `<out>/results.json` and `<out>/results.md` after every run.

    python benchmarks/cold_items.py --data ../shared/data/amazon-toys \
        --split ../shared/data/amazon-toys/splits/preferdiff --out benchmarks/out/cold-items
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from quality import train_overrides  # benchmarks/ is on sys.path when run as a script

from training.cold_items import ColdId, evaluate_with_cold_items, fold_in_vectors, pick_cold_items
from training.config import PRESETS, config_with_preset
from training.data import load_dataset
from training.encoders import TextEncoder, embed_items, encoder_from_spec
from training.splits import split_for
from training.train import fit, prepare

log = logging.getLogger("cold_items")
GROUPS = ("cold_target", "warm_target", "all")
V0_LABEL = {"zeros": "0", "mean": "mean ID", "neighbours": "neighbours' ID"}
METRICS = ("ndcg@20", "mrr@20", "hr@20")


def summarise(runs: list[dict[str, Any]]) -> str:
    head = "| run | seeds | " + " | ".join(f"{g} {m}" for g in GROUPS for m in METRICS) + " | cold cases |"
    lines = [head, "|" + "---|" * (len(GROUPS) * len(METRICS) + 3)]
    for label in dict.fromkeys(r["label"] for r in runs):
        rs = [r for r in runs if r["label"] == label]
        cells = []
        for g in GROUPS:
            for m in METRICS:
                vals = [r["test"][g][m] for r in rs]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
        cases = statistics.mean(r["test"]["cold_target"]["cases"] for r in rs)
        lines.append(f"| {label} | {len(rs)} | " + " | ".join(cells) + f" | {cases:.0f} |")
    lines += ["", "Validation (what the v0 rule is chosen on):", "",
              "| run | seeds | valid all ndcg@20 | valid cold_target ndcg@20 | valid warm_target ndcg@20 |",
              "|---|---|---|---|---|"]  # fmt: skip
    for label in dict.fromkeys(r["label"] for r in runs):
        rs = [r for r in runs if r["label"] == label and "valid" in r]
        if rs:
            cells = []
            for g in ("all", "cold_target", "warm_target"):
                vals = [r["valid"][g]["ndcg@20"] for r in rs]
                sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
                cells.append(f"{statistics.mean(vals):.4f} ± {sd:.4f}")
            lines.append(f"| {label} | {len(rs)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--protocol", default="cold-users", choices=["loo", "cold-users"])
    p.add_argument("--runs", default="alphafuse,llminit,alphafuse-all")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--fraction", type=float, default=0.1, help="share of the catalogue held out as cold items")
    p.add_argument("--preset", default="default", choices=list(PRESETS), help="training recipe for every run")
    p.add_argument("--config", default=None, help="YAML/TOML of TrainConfig fields applied to every run")
    p.add_argument("--set", action="append", default=[], help="TrainConfig override KEY=VALUE (JSON value)")
    p.add_argument("--out", default="benchmarks/out/cold-items")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    overrides = train_overrides(args.config, args.set)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(Path(args.data))
    all_ids = list(ds.items)
    runs: list[dict[str, Any]] = []
    encoder: TextEncoder | None = None
    for seed in [int(s) for s in args.seeds.split(",")]:
        cold = pick_cold_items(all_ids, args.fraction, seed)
        cold_ids = [i for i in all_ids if i in cold]
        # the same for every run of this seed: the test cases, and the cold items' raw text embeddings
        split = split_for(ds, args.protocol, seed, Path(args.split) if args.split else None)
        cold_emb: np.ndarray | None = None
        for run in args.runs.split(","):
            variant = "alphafuse" if run == "alphafuse-all" else run
            cfg = config_with_preset(args.preset, {
                "data": args.data, "split": args.split, "protocol": args.protocol, "item_embedding": variant,
                "seed": seed, "out": str(out / "unused"), **overrides,
            })
            if cfg.threads > 0:
                torch.set_num_threads(cfg.threads)
            t0 = time.perf_counter()
            prep = prepare(cfg, exclude_items=frozenset() if run == "alphafuse-all" else cold)
            result = fit(cfg, prep)
            if run == "alphafuse-all":
                folds: list[tuple[str, list[str], torch.Tensor]] = [
                    ("alphafuse trained with them (reference)", [], torch.zeros(0, prep.projection.output_dim))
                ] if prep.projection is not None else []
            else:
                assert prep.projection is not None and prep.encoder_identity is not None
                if cold_emb is None:
                    encoder = encoder or encoder_from_spec(cfg.encoder)
                    cold_emb = embed_items(
                        encoder, cold_ids, ds.items, Path(cfg.cache_dir) if cfg.cache_dir else None, progress=False
                    )
                rules: tuple[ColdId, ...] = ("zeros", "mean", "neighbours") if variant == "alphafuse" else ("zeros",)
                folds = [
                    (
                        f"{variant} cold, v0 = {V0_LABEL[rule]}" if variant == "alphafuse"
                        else f"{variant} cold, z only",
                        cold_ids, fold_in_vectors(result.model, prep.projection, cold_emb, rule),
                    )
                    for rule in rules
                ]
            for label, ids, rows in folds:
                metrics, valid = (
                    evaluate_with_cold_items(
                        result.model, prep.index, ids, rows, cases, cold_set=cold, batch_size=cfg.eval_batch_size,
                    )
                    for cases in (split.test, split.valid)
                )
                runs.append({
                    "label": label, "run": run, "seed": seed, "cold_items": len(cold_ids),
                    "fraction": args.fraction, "test": metrics, "valid": valid, "best_epoch": result.best_epoch,
                    "wall_seconds": round(time.perf_counter() - t0, 1), "config": cfg.to_dict(),
                })
                log.info("%s seed %d: cold-target ndcg@20 %.4f, warm-target ndcg@20 %.4f", label, seed,
                         metrics["cold_target"]["ndcg@20"], metrics["warm_target"]["ndcg@20"])
            (out / "results.json").write_text(json.dumps({
                "data": args.data, "split": args.split, "protocol": args.protocol, "fraction": args.fraction,
                "preset": args.preset, "overrides": overrides,
                "machine": {"platform": platform.platform(), "torch": torch.__version__},
                "runs": runs,
            }, indent=1))
            (out / "results.md").write_text(
                f"Data `{args.data}`, split `{args.split}`, protocol `{args.protocol}`, {len(cold_ids)} cold items "
                f"({args.fraction:.0%} of the catalogue, per seed), preset `{args.preset}` (max {cfg.epochs} epochs, "
                f"patience {cfg.patience}), overrides {overrides}. Test metrics; `cold_target` = cases whose target "
                "is a held-out item.\n\n" + summarise(runs)
            )


if __name__ == "__main__":
    main()
