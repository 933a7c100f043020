"""The paper's tables on real data: `python benchmarks/paper.py --table NAME` (`--dry-run` lists the runs).

Tables (arXiv 2504.19218, Tables 1-4), every one on the SASRec backbone:

- `cold-users`: every item-embedding variant on the paper's cold-start-user splits of Toys, Beauty and Sports
  (`splits/preferdiff`), full ranking (AlphaFuse Table 2);
- `long-tail`: every variant, leave-one-out on Beauty and Yelp, scored by LLM-ESR's protocol: tail/head target
  items and short/long users, the target among 100 sampled negatives (comparable with the papers) and among
  all items (the honest number), per group and overall (AlphaFuse Table 3; training/longtail.py);
- `ablation`: AlphaFuse on the Toys split without freezing, clipping or standardisation, d_n in
  {0, 16, 32, 64, 96, 128} at the recipe's hidden size, ID init normal instead of zeros, and popularity- instead
  of uniform-weighted covariance (README "How it works", step 2);
- `cold-items`: a tenth of the Toys catalogue held out of training and folded in from text
  (training/cold_items.py), for each variant that can fold items in, beside AlphaFuse trained with them;
- `ml-1m`: every variant on MovieLens-1M, leave-one-out, full ranking, with benchmarks/configs/ml-1m.yaml.

Every method uses the default recipe (TrainConfig's defaults, plus the table's config file, plus `--config`
/ `--set` for every run alike): the same budget, loss and sizes; the report states them. Each run is one
(dataset, row, seed), 3 seeds by default; rows are the variants (`--variants` picks some by name; ablation
rows are named `full`, `no-freeze`, `d_n=16` ...). After every run `<out>/<table>.json` (every run's config,
metrics, history, trainable parameters, wall time) and `<out>/<table>.md` (mean ± std over seeds, the paper's
numbers beside ours) are rewritten; at the end the figures `<out>/<table>-*.png`. Artifacts go to
`<out>/artifacts/<table>/`. Re-running skips every run recorded with the same configuration and evaluation,
so an interrupted table resumes; several processes may share one `--out` (e.g. one per `--variants` subset).
Every run but cold-items' is scored twice: by the table's protocol, and with the history's items kept out of
the ranking (`test_masked`, what the service serves by default); `--backfill-masked` adds the second score to
runs recorded before it existed, from their artifacts, and trains nothing.

    python benchmarks/paper.py --table cold-users --set threads=1
    python benchmarks/paper.py --table long-tail --variants alphafuse,id,llmesr --seeds 0 --dry-run
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from plots import plot_convergence, plot_dn_sweep, plot_popularity_buckets, plot_spectrum
from quality import (  # benchmarks/ is on sys.path when run as a script
    VARIANT_ORDER,
    comparable,
    locked,
    mean_sd,
    train_counts,
    train_overrides,
    train_record,
    write_atomic,
)

from model.artifact import load_artifact
from model.item_embeddings import ColdId
from training.cold_items import evaluate_with_cold_items, fold_in_vectors, pick_cold_items
from training.config import TrainConfig, read_config_file
from training.data import load_dataset
from training.encoders import embed_items, encoder_from_spec
from training.evaluate import POPULARITY_EDGES, evaluate_cases, evaluate_slices, popularity_buckets, trained_split
from training.longtail import (
    LLMESR_NEGATIVES,
    LLMESR_SHORT_BELOW,
    LLMESR_TAIL_BELOW,
    evaluate_longtail,
    item_popularity,
    pareto_threshold,
)
from training.splits import split_for
from training.train import fit, prepare

log = logging.getLogger("paper")
ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA_ROOT = ROOT.parent / "shared" / "data"
PREFERDIFF = "splits/preferdiff"
Evaluation = Literal["standard", "long-tail", "cold-items"]
REPORT = ("ndcg@10", "ndcg@20", "mrr@10", "mrr@20", "hr@10", "hr@20")
GROUP_REPORT = ("overall", "tail_item", "head_item", "short_user", "long_user")
COLD_GROUPS = ("cold_target", "warm_target", "all")
COLD_METRICS = ("ndcg@20", "mrr@20", "hr@20")


@dataclass(frozen=True)
class Row:
    name: str  # the row's label in the report and its key in the results
    variant: str  # item_embedding
    values: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig fields this row sets (the ablations)
    train_on_cold: bool = False  # cold-items: train with the held-out items (the reference run)


@dataclass(frozen=True)
class DatasetSpec:
    name: str  # folder under --data-root
    split: str | None = None  # predefined split folder inside it (None: generated for the protocol)


@dataclass(frozen=True)
class Table:
    name: str
    title: str
    datasets: tuple[DatasetSpec, ...]
    protocol: Literal["loo", "cold-users"]
    rows: tuple[Row, ...]
    evaluation: Evaluation = "standard"
    config: str | None = None  # a config file (relative to the repository) under --config / --set


def variant_rows(variants: Sequence[str]) -> tuple[Row, ...]:
    return tuple(Row(v, v) for v in variants)


ABLATION_D_N: tuple[int, ...] = (0, 16, 32, 64, 96, 128)
ABLATION_ROWS: tuple[Row, ...] = (
    Row("full", "alphafuse"),
    Row("no-freeze", "alphafuse", {"freeze_language": False}),
    Row("no-clip", "alphafuse", {"clip": False}),
    Row("no-standardise", "alphafuse", {"standardise": False}),
    *(Row(f"d_n={d}", "alphafuse", {"d_n": d}) for d in ABLATION_D_N),
    Row("id-init-normal", "alphafuse", {"id_init": "normal"}),
    Row("popularity-weighting", "alphafuse", {"weighting": "popularity"}),
)
# The variants with a rule mapping a new item's text to its vector (rlmrec's text only shapes training; id has none)
COLD_ITEM_VARIANTS: tuple[str, ...] = (
    "alphafuse", "llminit", "whitened-text", "morec", "whitenrec", "unisrec", "llmesr",
)
AMAZON_SPLITS = tuple(DatasetSpec(n, PREFERDIFF) for n in ("amazon-toys", "amazon-beauty", "amazon-sports"))

TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        Table("cold-users", "Cold-start users, full ranking (AlphaFuse Table 2)", AMAZON_SPLITS, "cold-users",
              variant_rows(VARIANT_ORDER)),
        Table("long-tail", "Long-tail items and users, LLM-ESR's protocol (AlphaFuse Table 3)",
              (DatasetSpec("amazon-beauty"), DatasetSpec("yelp")), "loo", variant_rows(VARIANT_ORDER), "long-tail"),
        Table("ablation", "AlphaFuse ablations on the Toys cold-user split", AMAZON_SPLITS[:1], "cold-users",
              ABLATION_ROWS),
        Table("cold-items", "Cold-start items folded in from text (Toys cold-user split)", AMAZON_SPLITS[:1],
              "cold-users", (*variant_rows(COLD_ITEM_VARIANTS), Row("alphafuse-all", "alphafuse", train_on_cold=True)),
              "cold-items"),
        Table("ml-1m", "MovieLens-1M, leave-one-out, full ranking", (DatasetSpec("ml-1m"),), "loo",
              variant_rows(VARIANT_ORDER), config="benchmarks/configs/ml-1m.yaml"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Published:
    table: str
    dataset: str
    row: str
    metric: str  # a path into a run record: "test.ndcg@20", "longtail.sampled.overall.ndcg@10"
    value: float
    source: str


_T2 = "AlphaFuse Table 2: SASRec, OpenAI text-embedding-3"
_REF = "public AlphaFuse code run unmodified on this split, MiniLM, ~150 epochs"
_T3 = "AlphaFuse Table 3: LLM-ESR's own Beauty (3-core, not ours), 100 sampled negatives"
_ABL = "AlphaFuse ablation on Movies & TV, not Toys: compare each row's ratio to full"
_ML = "Klenitskiy & Vasilev, RecSys 2023: SASRec full CE, window 200, seen items masked"
PUBLISHED: tuple[Published, ...] = (
    Published("cold-users", "amazon-toys", "id", "test.ndcg@20", 0.0321, _T2),
    Published("cold-users", "amazon-toys", "rlmrec-gen", "test.ndcg@20", 0.0347, _T2 + ", its best baseline"),
    Published("cold-users", "amazon-toys", "alphafuse", "test.ndcg@20", 0.0376, _T2),
    Published("cold-users", "amazon-sports", "id", "test.ndcg@20", 0.0101, _T2),
    Published("cold-users", "amazon-sports", "whitenrec", "test.ndcg@20", 0.0141, _T2 + ", its best baseline"),
    Published("cold-users", "amazon-sports", "alphafuse", "test.ndcg@20", 0.0158, _T2),
    Published("cold-users", "amazon-toys", "alphafuse", "test.ndcg@10", 0.0439, _REF),
    Published("cold-users", "amazon-toys", "alphafuse", "test.ndcg@20", 0.0544, _REF),
    Published("cold-users", "amazon-toys", "alphafuse", "test.mrr@20", 0.0314, _REF),
    Published("cold-users", "amazon-toys", "id", "test.ndcg@20", 0.0483, _REF),
    Published("cold-users", "amazon-toys", "id", "test.mrr@20", 0.0340, _REF),
    Published("long-tail", "amazon-beauty", "id", "longtail.sampled.overall.ndcg@10", 0.3030, _T3),
    Published("long-tail", "amazon-beauty", "llmesr", "longtail.sampled.overall.ndcg@10", 0.3713, _T3),
    Published("long-tail", "amazon-beauty", "alphafuse", "longtail.sampled.overall.ndcg@10", 0.4046, _T3),
    Published("ablation", "amazon-toys", "full", "test.ndcg@20", 0.0574, _ABL),
    Published("ablation", "amazon-toys", "no-freeze", "test.ndcg@20", 0.0444, _ABL),
    Published("ablation", "amazon-toys", "no-clip", "test.ndcg@20", 0.0197, _ABL),
    Published("ablation", "amazon-toys", "no-standardise", "test.ndcg@20", 0.0450, _ABL),
    Published("ml-1m", "ml-1m", "id", "test.ndcg@10", 0.1821, _ML),
    Published("ml-1m", "ml-1m", "id", "test.hr@10", 0.3152, _ML),
)  # fmt: skip


@dataclass(frozen=True)
class Run:
    table: str
    dataset: str
    row: Row
    seed: int
    cfg: TrainConfig
    same_as: str | None = None  # an earlier row of the same dataset and seed with this very config: not run

    @property
    def label(self) -> str:
        return f"{self.dataset} {self.row.name} seed {self.seed}"

    def matches(self, record: Mapping[str, Any]) -> bool:
        return (record["dataset"], record["row"], record["seed"]) == (self.dataset, self.row.name, self.seed)


def select(table: Table, variants: Sequence[str] | None, datasets: Sequence[str] | None) -> tuple[
    tuple[Row, ...], tuple[DatasetSpec, ...]
]:
    """The table's rows named in `variants` (all if None) and its datasets named in `datasets` (all if None); a
    dataset name the table does not have is added with a split generated for the table's protocol."""
    rows = table.rows
    if variants is not None:
        unknown = [v for v in variants if v not in {r.name for r in table.rows}]
        if unknown:
            raise ValueError(
                f"table {table.name!r} has no rows {unknown}; its rows: {', '.join(r.name for r in table.rows)}"
            )
        rows = tuple(r for r in table.rows if r.name in variants)
    specs = table.datasets
    if datasets is not None:
        known = {d.name: d for d in table.datasets}
        specs = tuple(known.get(name, DatasetSpec(name)) for name in datasets)
    return rows, specs


def plan(
    table: Table,
    *,
    data_root: Path,
    seeds: Sequence[int],
    values: Mapping[str, Any],
    out: Path,
    variants: Sequence[str] | None = None,
    datasets: Sequence[str] | None = None,
) -> list[Run]:
    """Every run of the table, seed by seed (a complete comparison at one seed comes first), in row order.

    A run's config is TrainConfig's defaults under the table's config file, under `values` (--config / --set),
    under the row's own fields; data, split, protocol, variant, seed and artifact folder are the table's."""
    rows, specs = select(table, variants, datasets)
    base = read_config_file(ROOT / table.config) if table.config else {}
    runs: list[Run] = []
    for spec in specs:
        data = (data_root / spec.name).resolve()
        for seed in seeds:
            seen: dict[str, str] = {}
            for row in rows:
                cfg = TrainConfig(**{
                    **base, **values, **row.values, "data": str(data),
                    "split": str(data / spec.split) if spec.split else None, "protocol": table.protocol,
                    "item_embedding": row.variant, "seed": seed,
                    "out": str(out / "artifacts" / table.name / spec.name / f"{row.name}-s{seed}"),
                })  # fmt: skip
                # the ablation's d_n sweep meets the recipe's own d_n: that row is the full model, trained once
                same = json.dumps(comparable(cfg.to_dict()), sort_keys=True) + str(row.train_on_cold)
                runs.append(Run(table.name, spec.name, row, seed, cfg, seen.get(same)))
                seen.setdefault(same, row.name)
    return runs


def evaluation_spec(table: Table, args: argparse.Namespace) -> dict[str, Any]:
    """How runs are scored beyond training's own metrics; a recorded run is reused only under the same spec."""
    spec: dict[str, Any] = {"kind": table.evaluation, "popularity_edges": list(POPULARITY_EDGES)}
    if table.evaluation == "long-tail":
        spec.update(
            tail_below=args.tail_below, short_below=args.short_below, negatives=args.negatives,
            popularity="users per item over whole sequences (LLM-ESR)",
        )  # fmt: skip
    elif table.evaluation == "cold-items":
        spec = {"kind": "cold-items", "fraction": args.cold_fraction}
    return spec


def execute(run: Run, spec: Mapping[str, Any]) -> dict[str, Any]:
    """Train one run and score it as `spec` says; its record for `<table>.json`."""
    started = time.perf_counter()
    if spec["kind"] == "cold-items":
        record = cold_items_record(run, float(spec["fraction"]))
    else:
        record, result = train_record(run.cfg)
        prep, model, cfg = result.prepared, result.model, run.cfg
        test = prep.split.test
        buckets = popularity_buckets(test, train_counts(prep), spec["popularity_edges"])
        record["buckets"] = evaluate_slices(
            model, test, prep.index, buckets, batch_size=cfg.eval_batch_size, mask_history=cfg.mask_history
        )
        if spec["kind"] == "long-tail":
            popularity = item_popularity(prep.split)
            record["longtail"] = evaluate_longtail(
                model, test, prep.index, popularity, tail_below=spec["tail_below"],
                short_below=spec["short_below"], negatives=spec["negatives"], seed=cfg.seed,
                batch_size=cfg.eval_batch_size, mask_history=cfg.mask_history,
            )  # fmt: skip
            item_pop = np.array([popularity.get(i, 0) for i in prep.item_ids])
            lengths = np.array([len(c.history) for c in test])
            record["groups"] = {
                "tail_items": float((item_pop < spec["tail_below"]).mean()),
                "short_users": float((lengths < spec["short_below"]).mean()),
                "pareto_tail_below": pareto_threshold(item_pop), "pareto_short_below": pareto_threshold(lengths),
            }
        record["trainable_parameters"] = result.trainable_parameters
        record["loss"] = model.cfg.loss
    record.update(table=run.table, dataset=run.dataset, row=run.row.name, evaluation=dict(spec))
    record["wall_seconds"] = time.perf_counter() - started
    return record


V0_LABELS = {"zeros": "v0 = 0", "mean": "v0 = mean ID", "neighbours": "v0 = neighbours' ID"}


def cold_items_record(run: Run, fraction: float) -> dict[str, Any]:
    """The cold-items protocol (training/cold_items.py): hold a seeded `fraction` of the catalogue out, train
    without it (or with it: the reference row), fold the held-out items in by the variant's own rule, rank
    every test case against the whole catalogue."""
    cfg = run.cfg
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    ds = load_dataset(Path(cfg.data))
    cold = pick_cold_items(list(ds.items), fraction, cfg.seed)
    cold_ids = [i for i in ds.items if i in cold]
    split = split_for(ds, cfg.protocol, cfg.seed, Path(cfg.split) if cfg.split else None)
    prep = prepare(cfg, exclude_items=frozenset() if run.row.train_on_cold else cold)
    result = fit(cfg, prep)
    folds: dict[str, tuple[list[str], torch.Tensor]] = {}
    if run.row.train_on_cold:
        folds["trained with them"] = ([], torch.zeros(0, result.model.items().shape[1]))
    else:
        if prep.projection is None:
            raise ValueError(f"{cfg.item_embedding} has no language projection: it cannot fold items in")
        emb = embed_items(
            encoder_from_spec(cfg.encoder), cold_ids, ds.items, Path(cfg.cache_dir) if cfg.cache_dir else None,
            progress=False,
        )
        alphafuse = cfg.item_embedding == "alphafuse"  # only it has an ID part to choose for a new item
        rules: tuple[ColdId, ...] = ("zeros", "mean", "neighbours") if alphafuse else ("zeros",)
        for rule in rules:
            label = V0_LABELS[rule] if alphafuse else "from text"
            folds[label] = (cold_ids, fold_in_vectors(result.model, prep.projection, emb, rule))
    cold_metrics = {
        label: evaluate_with_cold_items(
            result.model, prep.index, ids, rows, split.test, cold_set=cold, batch_size=cfg.eval_batch_size
        )
        for label, (ids, rows) in folds.items()
    }
    return {
        "variant": cfg.item_embedding, "seed": cfg.seed, "valid": result.metrics["valid"],
        "test": result.metrics["test"], "cold": cold_metrics, "cold_items": len(cold_ids),
        "best_epoch": result.best_epoch, "epochs_run": len(result.history), "fit_seconds": result.seconds,
        "history": result.history, "config": cfg.to_dict(), "trainable_parameters": result.trainable_parameters,
        "loss": result.model.cfg.loss,
    }  # fmt: skip


def language_spectrum(cfg: TrainConfig) -> np.ndarray:
    """All d_l eigenvalues (descending) of the language covariance that `cfg`'s AlphaFuse projection is cut
    from: `prepare` with clipping off keeps every direction, from the cached embeddings."""
    prep = prepare(replace(cfg, item_embedding="alphafuse", clip=False))
    assert prep.projection is not None  # alphafuse always has one
    return np.asarray(prep.projection.eigenvalues)


def metric_at(record: Mapping[str, Any], path: str) -> float | None:
    node: Any = record
    for key in path.split("."):
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node)


def _cell(records: Sequence[Mapping[str, Any]], path: str) -> str:
    vals = [metric_at(r, path) for r in records]
    got = [v for v in vals if v is not None]
    return mean_sd(got) if got and len(got) == len(vals) else "n/a"


def _by_row(runs: Sequence[Mapping[str, Any]], rows: Sequence[str]) -> list[tuple[str, list[Mapping[str, Any]]]]:
    names = [*rows, *sorted({r["row"] for r in runs} - set(rows))]
    return [(n, [r for r in runs if r["row"] == n]) for n in names if any(r["row"] == n for r in runs)]


def recipe_line(record: Mapping[str, Any]) -> str:
    cfg = TrainConfig(**record["config"])
    return (
        f"loss {record.get('loss', cfg.loss)}, at most {cfg.epochs} epochs with early stopping on validation "
        f"NDCG@20 (patience {cfg.patience}), hidden {cfg.hidden_dim} (AlphaFuse d_n {cfg.d_n}), window "
        f"{cfg.max_len}, batch {cfg.resolved_batch_size()}, lr {cfg.learning_rate():g}, dropout "
        f"{cfg.resolved_dropout():g}, history items {'masked' if cfg.mask_history else 'not masked'} at evaluation"
    )


MASKED_REPORT = ("ndcg@10", "ndcg@20", "mrr@20", "hr@20")


def backfill_masked(out: Path, table: Table, meta: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Score every recorded run that lacks `test_masked` and still has its artifact with the history's items
    masked, from the artifact and the split it records; a run whose artifact no longer reproduces its recorded
    test NDCG@20 is left alone. Returns every recorded run."""
    runs = _read(out / f"{table.name}.json")["runs"]
    for r in runs:
        art = Path(r["config"].get("out") or "")
        if "test_masked" in r or r["config"].get("mask_history") or r["evaluation"]["kind"] == "cold-items":
            continue
        if not (art / "manifest.json").is_file():
            log.info("%s %s seed %s: no artifact at %s, not scored", r["dataset"], r["row"], r["seed"], art)
            continue
        loaded = load_artifact(art)
        _, split = trained_split(art, loaded)
        index = {item: row + 1 for row, item in enumerate(loaded.item_ids)}
        plain = evaluate_cases(loaded.model, split.test, index)
        if abs(plain["ndcg@20"] - r["test"]["ndcg@20"]) > 1e-6:
            log.warning("%s %s seed %s: the artifact gives test ndcg@20 %.4f, the record %.4f: not scored",
                        r["dataset"], r["row"], r["seed"], plain["ndcg@20"], r["test"]["ndcg@20"])
            continue
        scored = {
            f"{name}_masked": evaluate_cases(loaded.model, cases, index, mask_history=True)
            for name, cases in (("valid", split.valid), ("test", split.test))
        }
        store(out, table, meta, {**r, **scored})
        log.info("%s %s seed %s: test ndcg@20 %.4f, with the history masked %.4f", r["dataset"], r["row"],
                 r["seed"], r["test"]["ndcg@20"], scored["test_masked"]["ndcg@20"])
    return store(out, table, meta)


def dataset_section(table: Table, name: str, runs: Sequence[Mapping[str, Any]]) -> list[str]:
    first = runs[0]
    cfg = first["config"]
    lines = [f"## {name}", "", f"Split `{cfg['split'] or 'generated'}`, protocol `{cfg['protocol']}`.", ""]
    row_order = [r.name for r in table.rows]
    if table.evaluation == "cold-items":
        head = [f"{g} {m}" for g in COLD_GROUPS for m in COLD_METRICS]
        lines += [
            f"{first['cold_items']} items held out per seed; `cold_target` = test cases whose target is one of them.",
            "",
            "| row | fold-in | seeds | " + " | ".join(head) + " | cold cases | trainable params | wall s/run |",
            "|" + "---|" * (len(head) + 6),
        ]
        for row, rs in _by_row(runs, row_order):
            for label in dict.fromkeys(k for r in rs for k in r["cold"]):
                cells = [_cell(rs, f"cold.{label}.{g}.{m}") for g in COLD_GROUPS for m in COLD_METRICS]
                counts = [metric_at(r, f"cold.{label}.cold_target.cases") or 0.0 for r in rs]
                cases = f"{statistics.mean(counts):.0f}"
                lines.append(
                    f"| {row} | {label} | {len(rs)} | " + " | ".join(cells) + f" | {cases} | "
                    f"{statistics.mean(r['trainable_parameters'] for r in rs):,.0f} | "
                    f"{statistics.mean(r['wall_seconds'] for r in rs):.0f} |"
                )
    else:
        lines += [
            "| row | seeds | " + " | ".join(f"test {m}" for m in REPORT)
            + " | trainable params | best epoch | wall s/run |",
            "|" + "---|" * (len(REPORT) + 5),
        ]
        for row, rs in _by_row(runs, row_order):
            lines.append(
                f"| {row} | {len(rs)} | " + " | ".join(_cell(rs, f"test.{m}") for m in REPORT) + " | "
                f"{statistics.mean(r['trainable_parameters'] for r in rs):,.0f} | "
                f"{statistics.mean(r['best_epoch'] for r in rs):.1f} | "
                f"{statistics.mean(r['wall_seconds'] for r in rs):.0f} |"
            )
    masked = [r for r in runs if "test_masked" in r]
    if masked and table.evaluation != "cold-items":
        lines += [
            "", "Test, the same models with the history's items kept out of the ranking (what the service serves by "
            "default, `exclude_history`; runs recorded before this was measured are left out):", "",
            "| row | seeds | " + " | ".join(f"test {m}" for m in MASKED_REPORT) + " |",
            "|" + "---|" * (len(MASKED_REPORT) + 2),
        ]
        for row, rs in _by_row(masked, row_order):
            cells = [_cell(rs, f"test_masked.{m}") for m in MASKED_REPORT]
            lines.append(f"| {row} | {len(rs)} | " + " | ".join(cells) + " |")
    if table.evaluation == "long-tail":
        ev, groups = first["evaluation"], first["groups"]
        cases = first["longtail"]["full"]
        lines += [
            "",
            f"Groups (LLM-ESR, training/longtail.py): a tail item has fewer than {ev['tail_below']} users over the "
            f"whole sequences ({groups['tail_items']:.1%} of the items, {cases['tail_item']['cases']:.0f} of "
            f"{cases['overall']['cases']:.0f} test cases); a short user has fewer than {ev['short_below']} history "
            f"items ({groups['short_users']:.1%} of the users). The 80/20 point of this data: "
            f"{groups['pareto_tail_below']} / {groups['pareto_short_below']}.",
        ]
        for protocol, what in (
            ("sampled", f"target among {ev['negatives']} sampled negatives the user never had (LLM-ESR)"),
            ("full", "target among all items"),
        ):
            head = [f"{g} {m}" for g in GROUP_REPORT for m in ("ndcg@10", "hr@10")]
            lines += ["", f"Test, {what}:", "", "| row | " + " | ".join(head) + " |", "|" + "---|" * (len(head) + 1)]
            for row, rs in _by_row(runs, row_order):
                cells = [_cell(rs, f"longtail.{protocol}.{g}.{m}") for g in GROUP_REPORT for m in ("ndcg@10", "hr@10")]
                lines.append(f"| {row} | " + " | ".join(cells) + " |")
    published = [p for p in PUBLISHED if p.table == table.name and p.dataset == name]
    if published:
        lines += ["", "Published numbers beside ours:", "", "| row | metric | ours | published | source |",
                  "|---|---|---|---|---|"]
        for p in published:
            rs = [r for r in runs if r["row"] == p.row]
            ours = _cell(rs, p.metric) if rs else "not run"
            lines.append(f"| {p.row} | {p.metric} | {ours} | {p.value:.4f} | {p.source} |")
    return lines


def report(table: Table, runs: Sequence[Mapping[str, Any]], meta: Mapping[str, Any], figures: Sequence[str]) -> str:
    """The Markdown report of every recorded run of `table`."""
    if not runs:
        return f"# {table.title}\n\nNo run recorded yet.\n"
    hours = sum(r["wall_seconds"] for r in runs) / 3600
    seeds = sorted({r["seed"] for r in runs})
    lines = [
        f"# {table.title}",
        "",
        f"Table `{table.name}`, SASRec backbone, {len(runs)} runs (seeds {', '.join(map(str, seeds))}), "
        f"{hours:.1f} h of wall time in all. Every method uses the same recipe, the default one (TrainConfig's "
        f"defaults{f', `{table.config}`' if table.config else ''}, overrides {meta['overrides'] or 'none'}): "
        f"{recipe_line(runs[0])}. Test metrics; mean ± std over seeds.",
        "",
    ]
    datasets = list(dict.fromkeys(r["dataset"] for r in runs))
    for name in datasets:
        lines += dataset_section(table, name, [r for r in runs if r["dataset"] == name])
        lines.append("")
    if figures:
        lines += ["## Figures", ""] + [f"![{f}]({f})" for f in figures] + [""]
    return "\n".join(lines)


def _read(results: Path) -> dict[str, Any]:
    return json.loads(results.read_text()) if results.is_file() else {"runs": [], "spectra": {}}


def store(out: Path, table: Table, meta: Mapping[str, Any], record: Mapping[str, Any] | None = None,
          spectra: Mapping[str, Any] | None = None) -> list[dict[str, Any]]:
    """Add `record` (replacing the run it repeats) and `spectra` to `<out>/<table>.json`, under the lock another
    process sharing `out` also takes; returns every recorded run."""
    results = out / f"{table.name}.json"
    with locked(out):
        doc = _read(results)
        runs = list(doc["runs"])
        if record is not None:
            key = (record["dataset"], record["row"], record["seed"])
            runs = [r for r in runs if (r["dataset"], r["row"], r["seed"]) != key] + [dict(record)]
        order = {r.name: i for i, r in enumerate(table.rows)}
        runs.sort(key=lambda r: (r["dataset"], order.get(r["row"], len(order)), r["row"], r["seed"]))
        write_atomic(results, json.dumps(
            {"meta": dict(meta), "runs": runs, "spectra": {**doc.get("spectra", {}), **(spectra or {})}}, indent=1
        ))  # fmt: skip
    return runs


def figures(table: Table, runs: list[dict[str, Any]], plan_runs: Sequence[Run], out: Path,
            meta: Mapping[str, Any]) -> list[str]:
    """Draw the table's figures beside its report; the spectra (which need the embeddings) are computed once
    and kept in the JSON. Returns the file names."""
    names: list[str] = []
    spectra = dict(_read(out / f"{table.name}.json").get("spectra", {}))
    for dataset in dict.fromkeys(r["dataset"] for r in runs):
        rs = [r for r in runs if r["dataset"] == dataset]
        # the language spectrum, cut where the recipe's AlphaFuse cuts it
        alpha = next((p for p in plan_runs if p.dataset == dataset and p.row.variant == "alphafuse"
                      and not p.row.values), None)  # fmt: skip
        if alpha is not None:
            cfg = alpha.cfg
            key = json.dumps({k: v for k, v in comparable(cfg.to_dict()).items() if k != "seed"}, sort_keys=True)
            if spectra.get(dataset, {}).get("key") != key:
                spectra[dataset] = {"key": key, "eigenvalues": language_spectrum(cfg).tolist()}
                store(out, table, meta, spectra={dataset: spectra[dataset]})
            name = f"{table.name}-spectrum-{dataset}.png"
            plot_spectrum(np.array(spectra[dataset]["eigenvalues"]), cfg.hidden_dim - cfg.d_n, cfg.d_n,
                          f"{dataset}: language eigenvalues ({cfg.encoder})", out / name)  # fmt: skip
            names.append(name)
        rows = _by_row(rs, [r.name for r in table.rows])
        if all("buckets" in r for r in rs):
            buckets = list(rs[0]["buckets"])
            ndcg = {
                row: {b: statistics.mean(r["buckets"][b].get("ndcg@20", np.nan) for r in group) for b in buckets}
                for row, group in rows
            }
            name = f"{table.name}-popularity-{dataset}.png"
            plot_popularity_buckets(ndcg, {b: rs[0]["buckets"][b]["cases"] for b in buckets},
                                    f"{dataset}: test NDCG@20 by target popularity", out / name)  # fmt: skip
            names.append(name)
        first_seed = min(r["seed"] for r in rs)
        curves = [
            {"name": row, "history": r["history"]} for row, group in rows for r in group if r["seed"] == first_seed
        ]
        name = f"{table.name}-convergence-{dataset}.png"
        plot_convergence(curves, f"{dataset}, seed {first_seed}", out / name)
        names.append(name)
        sweep = [(row, group) for row, group in rows if row == "full" or row.startswith("d_n=")]
        if table.name == "ablation" and sweep:
            points = [
                (int(group[0]["config"]["d_n"]), statistics.mean(r["test"]["ndcg@20"] for r in group),
                 statistics.stdev(r["test"]["ndcg@20"] for r in group) if len(group) > 1 else 0.0)
                for _, group in sweep
            ]  # fmt: skip
            full = next((g for row, g in sweep if row == "full"), None)
            name = f"{table.name}-dn-{dataset}.png"
            plot_dn_sweep(points, f"{dataset}: AlphaFuse test NDCG@20 against d_n (hidden "
                          f"{sweep[0][1][0]['config']['hidden_dim']})", out / name,
                          default_d_n=int(full[0]["config"]["d_n"]) if full else None)  # fmt: skip
            names.append(name)
    return names


def describe(run: Run) -> str:
    """The run's config where it differs from TrainConfig's defaults (paths and seed aside)."""
    defaults = TrainConfig().to_dict()
    skip = {"data", "out", "seed", "cache_dir"}
    diff = {k: v for k, v in run.cfg.to_dict().items() if k not in skip and v != defaults[k]}
    return " ".join(f"{k}={v}" for k, v in diff.items())


def recorded(run: Run, spec: Mapping[str, Any], records: Sequence[Mapping[str, Any]]) -> bool:
    done = [r for r in records if run.matches(r)]
    return bool(done) and done[0].get("evaluation") == dict(spec) and (
        comparable(done[0]["config"]) == comparable(run.cfg.to_dict())
    )


def _duration(seconds: float) -> str:
    h, rest = divmod(int(seconds), 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def _names(value: str | None) -> list[str] | None:
    return None if value is None else [s.strip() for s in value.split(",") if s.strip()]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, choices=list(TABLES))
    p.add_argument("--data-root", default=str(DEFAULT_DATA_ROOT), help="folder holding the dataset folders")
    p.add_argument("--datasets", default=None,
                   help="comma list: only these of the table's datasets; another name runs on that folder with a "
                        "split generated for the table's protocol (small or other data)")  # fmt: skip
    p.add_argument("--variants", default=None, help="comma list of the table's row names (default: all)")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--config", default=None, help="YAML/TOML of TrainConfig fields applied to every run")
    p.add_argument("--set", action="append", default=[], help="TrainConfig override KEY=VALUE (JSON value)")
    p.add_argument("--tail-below", type=int, default=LLMESR_TAIL_BELOW, help="long-tail: tail item threshold")
    p.add_argument("--short-below", type=int, default=LLMESR_SHORT_BELOW, help="long-tail: short user threshold")
    p.add_argument("--negatives", type=int, default=LLMESR_NEGATIVES, help="long-tail: sampled negatives per case")
    p.add_argument("--cold-fraction", type=float, default=0.1, help="cold-items: share of the catalogue held out")
    p.add_argument("--out", default="benchmarks/results")
    p.add_argument("--dry-run", action="store_true", help="list the runs and their configs; train nothing")
    p.add_argument("--backfill-masked", action="store_true",
                   help="train nothing: score recorded runs' artifacts with the history's items masked")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    table = TABLES[args.table]
    out = Path(args.out)
    seeds = [int(s) for s in args.seeds.split(",")]
    overrides = train_overrides(args.config, args.set)
    try:
        runs = plan(table, data_root=Path(args.data_root), seeds=seeds, values=overrides, out=out,
                    variants=_names(args.variants), datasets=_names(args.datasets))  # fmt: skip
    except (ValueError, TypeError) as e:
        raise SystemExit(f"cannot plan table {table.name!r}: {e}") from e
    spec = evaluation_spec(table, args)
    records = _read(out / f"{table.name}.json")["runs"]
    todo = [r for r in runs if r.same_as is None and not recorded(r, spec, records)]
    if args.dry_run:
        for i, run in enumerate(runs, 1):
            state = (f"same config as {run.same_as}: not run" if run.same_as
                     else "to train" if run in todo else "recorded")  # fmt: skip
            print(f"run {i}/{len(runs)}: {run.label} [{state}] {describe(run)}")
        print(f"{table.name}: {len(runs)} runs, {len(todo)} to train, evaluation {json.dumps(spec)}")
        return
    missing = sorted({str(Path(r.cfg.data)) for r in runs if not Path(r.cfg.data).is_dir()}
                     | {str(r.cfg.split) for r in runs if r.cfg.split and not Path(r.cfg.split).is_dir()})  # fmt: skip
    if missing:
        raise SystemExit(f"not found: {', '.join(missing)} (point --data-root at the datasets)")
    out.mkdir(parents=True, exist_ok=True)
    meta = {
        "table": table.name, "title": table.title, "data_root": str(Path(args.data_root).resolve()), "seeds": seeds,
        "overrides": overrides, "evaluation": spec, "machine": platform.platform(),
        "torch_threads": torch.get_num_threads(),
    }  # fmt: skip
    if args.backfill_masked:
        meta = _read(out / f"{table.name}.json").get("meta") or meta  # the table's own, not this call's
        done = backfill_masked(out, table, meta)
        shown = sorted(f.name for f in out.glob(f"{table.name}-*.png"))
        write_atomic(out / f"{table.name}.md", report(table, done, meta, shown))
        print((out / f"{table.name}.md").read_text())
        return
    trained: list[float] = []
    left = len(todo)
    for i, run in enumerate(runs, 1):
        if run.same_as is not None:
            log.info("run %d/%d: %s has the config of %s: not run again", i, len(runs), run.label, run.same_as)
            continue
        if run not in todo:
            log.info("run %d/%d: %s already recorded in %s: skipped", i, len(runs), run.label, out)
            continue
        if recorded(run, spec, _read(out / f"{table.name}.json")["runs"]):
            # another process sharing --out finished it since this one planned
            log.info("run %d/%d: %s recorded meanwhile in %s: skipped", i, len(runs), run.label, out)
            left -= 1
            continue
        eta = f"ETA {_duration(statistics.mean(trained) * left)}" if trained else "ETA after the first run"
        log.info("run %d/%d: %s (%d to train, %s) %s", i, len(runs), run.label, left, eta, describe(run))
        record = execute(run, spec)
        trained.append(record["wall_seconds"])
        left -= 1
        done = store(out, table, meta, record)
        write_atomic(out / f"{table.name}.md", report(table, done, meta, []))
        log.info("run %d/%d: %s done in %s, test ndcg@20 %.4f", i, len(runs), run.label,
                 _duration(record["wall_seconds"]), record["test"]["ndcg@20"])  # fmt: skip
    done = store(out, table, meta)
    # every row of the table, not only this process's --variants: the spectrum is cut where the full model cuts it
    every_row = plan(table, data_root=Path(args.data_root), seeds=seeds, values=overrides, out=out,
                     datasets=_names(args.datasets))  # fmt: skip
    names = figures(table, done, every_row, out, meta) if done else []
    write_atomic(out / f"{table.name}.md", report(table, done, meta, names))
    log.info("table %s: %d runs recorded, %d trained now in %s", table.name, len(done), len(trained),
             _duration(sum(trained)))  # fmt: skip
    print((out / f"{table.name}.md").read_text())


if __name__ == "__main__":
    main()
