"""Quality benchmark: item-embedding variants on one backbone, dataset and protocol, several seeds.

Every variant is trained with the same recipe (the default, or `--preset paper`) and budget. Writes
`<out>/results.json` (every run: config, valid/test metrics, test metrics per slice, best epoch, wall
time) and `<out>/results.md` (mean +- std over seeds) after each run. Re-running with the same `--out`
skips the (variant, seed) runs already recorded with the same configuration, so an interrupted benchmark
resumes where it stopped.

    python benchmarks/quality.py --data ../shared/data/amazon-toys \
        --split ../shared/data/amazon-toys/splits/preferdiff --protocol cold-users --out benchmarks/out/toys

`--text-fields title` trains on a copy of the dataset whose item records keep only those fields (weak
text: titles alone, MovieLens titles without genres), written under `<out>/data/`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import logging
import os
import platform
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from training.config import PRESETS, TrainConfig, config_with_preset, read_config_file
from training.data import has_text
from training.evaluate import SHORT_BELOW, TAIL_BELOW, case_slices, evaluate_cases, evaluate_slices
from training.train import Prepared, TrainResult, run_training

REPORT = ("ndcg@10", "ndcg@20", "mrr@10", "mrr@20", "hr@10", "hr@20")
SLICE_REPORT = ("tail_target", "short_history")
log = logging.getLogger("quality")


def mean_sd(vals: list[float]) -> str:
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return f"{statistics.mean(vals):.4f} ± {sd:.4f}"


def summarise(runs: list[dict[str, Any]]) -> str:
    variants = list(dict.fromkeys(r["variant"] for r in runs))
    head = "| variant | seeds | " + " | ".join(f"test {m}" for m in REPORT) + " | best epoch | wall s/run |"
    lines = [head, "|" + "---|" * (len(REPORT) + 4)]
    for v in variants:
        rs = [r for r in runs if r["variant"] == v]
        cells = [mean_sd([r["test"][m] for r in rs]) for m in REPORT]
        epochs = statistics.mean(r["best_epoch"] for r in rs)
        wall = statistics.mean(r["wall_seconds"] for r in rs)
        lines.append(f"| {v} | {len(rs)} | " + " | ".join(cells) + f" | {epochs:.1f} | {wall:.0f} |")
    if all("slices" in r for r in runs):
        first = runs[0]["slices"]
        lines += [
            "",
            f"Test slices: tail target = fewer than {TAIL_BELOW} training interactions, short history = fewer "
            f"than {SHORT_BELOW} items ({first['tail_target']['cases']:.0f} and "
            f"{first['short_history']['cases']:.0f} of {first['all']['cases']:.0f} cases).",
            "",
            "| variant | " + " | ".join(f"{s} {m}" for s in SLICE_REPORT for m in ("ndcg@20", "mrr@20")) + " |",
            "|" + "---|" * (2 * len(SLICE_REPORT) + 1),
        ]
        for v in variants:
            rs = [r for r in runs if r["variant"] == v]
            cells = [
                mean_sd([r["slices"][s][m] for r in rs]) if all(r["slices"][s]["cases"] for r in rs) else "n/a"
                for s in SLICE_REPORT
                for m in ("ndcg@20", "mrr@20")
            ]
            lines.append(f"| {v} | " + " | ".join(cells) + " |")
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


def text_fields_copy(data: Path, keep: list[str], out: Path) -> Path:
    """A dataset directory whose `items.jsonl` keeps only `item_id` and the `keep` fields of each record;
    `interactions.csv` is linked, not copied. Canonical-format datasets only.

    An item left with no text (no title, say) takes its id as its title rather than being dropped: dropping
    it would change the catalogue and the split, and the comparison with the full-text run would no longer
    be on the same data. An id is the weakest text there is, which is the case being measured."""
    src_items, src_inter = data / "items.jsonl", data / "interactions.csv"
    if not (src_items.is_file() and src_inter.is_file()):
        raise SystemExit(f"--text-fields needs a canonical dataset (items.jsonl + interactions.csv) in {data}")
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    for line in src_items.read_text().splitlines():
        if line.strip():
            rec = json.loads(line)
            kept = {k: v for k, v in rec.items() if k == "item_id" or k in keep}
            if not has_text(kept):
                kept["title"] = str(rec["item_id"])
            lines.append(json.dumps(kept) + "\n")
    # several benchmark processes may build the same copy at once: replace atomically, tolerate the link
    tmp = out / f".items.jsonl.{os.getpid()}"
    tmp.write_text("".join(lines))
    os.replace(tmp, out / "items.jsonl")
    with contextlib.suppress(FileExistsError):
        (out / "interactions.csv").symlink_to(src_inter.resolve())
    return out


VARIANT_ORDER = (
    "alphafuse", "id", "llminit", "whitened-text",
    "morec", "whitenrec", "unisrec", "rlmrec-con", "rlmrec-gen", "llmesr",
)


@contextmanager
def locked(out: Path) -> Iterator[None]:
    """An exclusive lock on `<out>/.lock`, so several benchmark processes can share one results file."""
    with (out / ".lock").open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def read_runs(results: Path) -> list[dict[str, Any]]:
    return list(json.loads(results.read_text())["runs"]) if results.is_file() else []


def write_atomic(path: Path, text: str) -> None:
    """Readers (a resuming benchmark, `convergence.py --reuse`) never see half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def resolved(cfg: TrainConfig) -> dict[str, Any]:
    """Values the config leaves to the backbone (0 / None in the fields), as this code resolves them."""
    return {"batch_size": cfg.resolved_batch_size(), "dropout": cfg.resolved_dropout(), "lr": cfg.learning_rate()}


def comparable(config: dict[str, Any], *, keep_threads: bool = False) -> dict[str, Any]:
    """The parts of a run's config that decide whether a recorded run can be reused. A run's seconds depend
    on its thread count, so reusing it for a wall-clock comparison also needs `keep_threads`.

    A recorded config is completed with the defaults of fields added since it was written (each added with
    a default that keeps the old behaviour, e.g. `align_weight`, used by rlmrec only), so adding a field does
    not make every recorded run look different."""
    full = TrainConfig(**config)
    drop = ("out", "cache_dir") if keep_threads else ("out", "threads", "cache_dir")
    cfg = {k: v for k, v in full.to_dict().items() if k not in drop}
    return {**cfg, "resolved": resolved(full)}


def train_counts(prepared: Prepared) -> dict[str, float]:
    """Training interactions per item id, as `prepare` counted them."""
    return {item: float(prepared.popularity[row - 1]) for item, row in prepared.index.items()}


def masked_metrics(result: TrainResult, cfg: TrainConfig) -> dict[str, dict[str, float]]:
    """`valid_masked` / `test_masked`: the same model scored with the history's items kept out of the ranking,
    as the service serves by default (`exclude_history`); nothing when the run was evaluated so already.
    Selection (early stopping) stays on the run's own protocol."""
    if cfg.mask_history:
        return {}
    p = result.prepared
    return {
        f"{name}_masked": evaluate_cases(
            result.model, cases, p.index, batch_size=cfg.eval_batch_size, mask_history=True
        )
        for name, cases in (("valid", p.split.valid), ("test", p.split.test))
    }


def train_record(cfg: TrainConfig) -> tuple[dict[str, Any], TrainResult]:
    """Train one run (writing its artifact to `cfg.out`) and return its `results.json` record, with the
    TrainResult for callers that evaluate the trained model further (benchmarks/paper.py)."""
    started = time.perf_counter()
    result = run_training(cfg)
    test = result.prepared.split.test
    slices = evaluate_slices(
        result.model,
        test,
        result.prepared.index,
        case_slices(test, train_counts(result.prepared)),
        batch_size=cfg.eval_batch_size,
        mask_history=cfg.mask_history,
    )
    record = {
        "variant": cfg.item_embedding,
        "seed": cfg.seed,
        "valid": result.metrics["valid"],
        "test": result.metrics["test"],
        **masked_metrics(result, cfg),
        "slices": slices,
        "best_epoch": result.best_epoch,
        "epochs_run": len(result.history),
        "fit_seconds": result.seconds,
        "wall_seconds": time.perf_counter() - started,
        "history": result.history,
        "config": cfg.to_dict(),
    }
    return record, result


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--protocol", default="cold-users", choices=["loo", "cold-users"])
    p.add_argument("--variants", default="alphafuse,id,llminit,whitened-text")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--preset", default="default", choices=list(PRESETS))
    p.add_argument("--text-fields", default=None, help="comma list of item fields to keep, e.g. title")
    p.add_argument("--config", default=None, help="YAML/TOML of TrainConfig fields applied to every run")
    p.add_argument("--set", action="append", default=[], help="TrainConfig override KEY=VALUE (JSON value)")
    p.add_argument("--out", default="benchmarks/out/quality")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = Path(args.data)
    if args.text_fields:
        keep = [f.strip() for f in args.text_fields.split(",") if f.strip()]
        data = text_fields_copy(data, keep, out / "data" / f"{data.name}-{'-'.join(keep)}")
    base_values = train_overrides(args.config, args.set)
    base = config_with_preset(
        args.preset, {"data": str(data), "split": args.split, "protocol": args.protocol, **base_values}
    )
    meta = {
        "data": args.data,
        "text_fields": args.text_fields,
        "split": args.split,
        "protocol": args.protocol,
        "preset": args.preset,
        "overrides": base_values,
        "machine": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }
    results = out / "results.json"
    if results.is_file():
        recorded = json.loads(results.read_text())["meta"]
        same = ("data", "text_fields", "split", "protocol", "preset")
        if any(recorded.get(k) != meta[k] for k in same):
            raise SystemExit(
                f"{results} holds runs of another benchmark ({', '.join(f'{k}={recorded.get(k)!r}' for k in same)}): "
                "use another --out"
            )
    for variant in args.variants.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            cfg: TrainConfig = replace(
                base, item_embedding=variant, seed=seed, out=str(out / "artifacts" / f"{variant}-s{seed}")
            )
            with locked(out):
                done = [r for r in read_runs(results) if r["variant"] == variant and r["seed"] == seed]
            if done and comparable(done[0]["config"]) == comparable(cfg.to_dict()):
                log.info("%s seed %d already recorded in %s: skipped", variant, seed, results)
                continue
            record, _ = train_record(cfg)
            with locked(out):  # another process may be running other variants into the same --out
                runs = [r for r in read_runs(results) if not (r["variant"] == variant and r["seed"] == seed)]
                runs.append(record)
                order = {v: i for i, v in enumerate(VARIANT_ORDER)}
                runs.sort(key=lambda r: (order.get(r["variant"], len(order)), r["variant"], r["seed"]))
                write_atomic(results, json.dumps({"meta": meta, "runs": runs}, indent=1))
                header = (
                    f"Data `{args.data}`{f' (item text: {args.text_fields} only)' if args.text_fields else ''}, "
                    f"split `{args.split or 'generated'}`, protocol `{args.protocol}`, preset `{args.preset}` "
                    f"(max {cfg.epochs} epochs, patience {cfg.patience}), overrides {base_values or 'none'}."
                )
                write_atomic(out / "results.md", header + "\n\n" + summarise(runs))
    if (out / "results.md").is_file():
        print((out / "results.md").read_text())


if __name__ == "__main__":
    main()
