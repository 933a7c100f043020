"""Where each model puts the target: rank histogram, and what it puts at rank 1 when the target is not there.

The question it answers (the training-recipe issue): AlphaFuse has a clearly higher HR@20 than ID-only SASRec
but the same MRR@20. Is that because the items AlphaFuse ranks above the target are the target's near
neighbours in text (items the frozen language coordinates cannot tell apart), or because it ranks popular items
first, or neither? For each artifact, on the split it was trained on (validation cases by default; choices
are never made on test):

- the share of cases whose target is at rank 1, 2-5, 6-20, 21-100, above 100;
- for the cases whose target is in the top 20 but not first: the text cosine (the encoder the artifacts were
  built with, MiniLM by default) between the item at rank 1 and the target, its mean and the share above 0.8,
  against the same cosine for a random catalogue item as the floor; and the median training count of the
  rank-1 item against that of the target;
- how often the rank-1 item is one the user already has (in the history), how often it is the history's
  last item (the one the encoder's residual stream carries into the state), and the same metrics with the
  history's items kept out of the ranking, as the service does by default (`exclude_history`) and as
  `training.evaluate`'s `mask_history` scores;
- for the first two artifacts, how many cases only one of them gets at rank 1.

    python benchmarks/ranks.py benchmarks/results/artifacts/cold-users/amazon-toys-alphafuse-s2 \\
        benchmarks/results/artifacts/cold-users/amazon-toys-id-s2 --out benchmarks/out --name ranks-toys-s2

Writes `<out>/<name>.json` and `<out>/<name>.md`.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from model.artifact import load_artifact  # noqa: E402
from training.encoders import default_encoder, embed_items  # noqa: E402
from training.evaluate import index_cases, iter_case_scores, trained_split  # noqa: E402
from training.metrics import target_ranks  # noqa: E402
from training.provenance import trained_on  # noqa: E402

BUCKETS: tuple[tuple[str, int, float], ...] = (
    ("1", 1, 1), ("2-5", 2, 5), ("6-20", 6, 20), ("21-100", 21, 100), (">100", 101, float("inf")),
)
NEAR = 0.8  # a text cosine above this: near-duplicate descriptions (same series, other size or colour)


def rank_and_top(artifact: Path, cases: str) -> dict[str, Any]:
    """Ranks (1-based, all items, history not masked unless the artifact was trained so) and the rank-1 item
    of every case of `cases` ("valid" or "test"), with what is needed to read them."""
    art = load_artifact(artifact)
    rec = trained_on(art.manifest)
    ds, split = trained_split(artifact, art)
    chosen = split.valid if cases == "valid" else split.test
    index = {item: row + 1 for row, item in enumerate(art.item_ids)}
    histories, targets = index_cases(chosen, index)
    ranks, top, top_in_history, top_is_last, masked_ranks = [], [], [], [], []
    for start, scores in iter_case_scores(art.model, histories, batch_size=512):
        hist = histories[start : start + len(scores)]
        tgt = torch.from_numpy(targets[start : start + len(scores)] - 1)
        if rec.mask_history:  # trained to be judged so: the plain ranks are the masked ones too
            for r, h in enumerate(hist):
                scores[r, [i - 1 for i in h if i - 1 != int(tgt[r])]] = -torch.inf
        ranks.append(target_ranks(scores, tgt))
        best = scores.argmax(1)
        top.append(best)
        top_in_history.append(torch.tensor([int(b) + 1 in h for b, h in zip(best, hist, strict=True)]))
        top_is_last.append(torch.tensor([int(b) + 1 == h[-1] for b, h in zip(best, hist, strict=True)]))
        # the evaluator's `mask_history`: the history's items do not compete (a repeated target still does)
        exclude = torch.zeros_like(scores, dtype=torch.bool)
        for r, h in enumerate(hist):
            exclude[r, torch.tensor(h) - 1] = True
        masked_ranks.append(target_ranks(scores, tgt, exclude))
    counts = Counter(i for seq in split.train.values() for i in seq)
    return {
        "artifact": str(artifact), "variant": art.config.item_embedding, "seed": rec.seed, "cases": cases,
        "ranks": torch.cat(ranks).numpy(), "top": torch.cat(top).numpy(), "targets": targets - 1,
        "top_in_history": torch.cat(top_in_history).numpy(), "top_is_last": torch.cat(top_is_last).numpy(),
        "masked_ranks": torch.cat(masked_ranks).numpy(),
        "item_ids": art.item_ids, "records": ds.items, "counts": counts,
    }


def summarise(run: dict[str, Any], language: np.ndarray, rng: np.random.Generator) -> dict[str, Any]:
    ranks, top, targets, masked = run["ranks"], run["top"], run["targets"], run["masked_ranks"]
    n = len(ranks)
    buckets = {name: float(((ranks >= lo) & (ranks <= hi)).mean()) for name, lo, hi in BUCKETS}
    near_miss = (ranks > 1) & (ranks <= 20)
    cos = np.einsum("ij,ij->i", language[top[near_miss]], language[targets[near_miss]])
    floor = np.einsum(
        "ij,ij->i", language[rng.integers(0, len(language), near_miss.sum())], language[targets[near_miss]]
    )
    ids = run["item_ids"]
    count = np.array([run["counts"].get(i, 0) for i in ids], dtype=np.float64)
    return {
        "artifact": run["artifact"], "variant": run["variant"], "seed": run["seed"], "cases": n,
        "mrr@20": float(np.where(ranks <= 20, 1.0 / ranks, 0.0).mean()), "hr@20": float((ranks <= 20).mean()),
        "rank_share": buckets, "top1_in_history": float(run["top_in_history"].mean()),
        "top1_is_last": float(run["top_is_last"].mean()),
        "masked_mrr@20": float(np.where(masked <= 20, 1.0 / masked, 0.0).mean()),
        "masked_hr@20": float((masked <= 20).mean()), "masked_rank1": float((masked == 1).mean()),
        "near_miss_cases": int(near_miss.sum()),
        "near_miss_top1_target_cosine": float(cos.mean()) if len(cos) else None,
        "near_miss_top1_near_share": float((cos > NEAR).mean()) if len(cos) else None,
        "random_item_target_cosine": float(floor.mean()) if len(floor) else None,
        "near_miss_median_count_top1": float(np.median(count[top[near_miss]])) if len(cos) else None,
        "near_miss_median_count_target": float(np.median(count[targets[near_miss]])) if len(cos) else None,
        "all_median_count_top1": float(np.median(count[top])),
    }


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown(summaries: list[dict[str, Any]], pair: dict[str, int] | None, cases: str) -> str:
    lines = [
        "# Target ranks and rank-1 items (`benchmarks/ranks.py`)", "",
        f"{summaries[0]['cases']} {'validation' if cases == 'valid' else 'test'} cases. *Near miss* = target "
        "ranked 2-20. Text cosine: the encoder's unit "
        f"vectors; 'near' = cosine > {NEAR}; 'random' = a random catalogue item against the same targets.", "",
        "| artifact | variant | MRR@20 | HR@20 | rank 1 | 2-5 | 6-20 | 21-100 | >100 | rank-1 item in the history "
        "| of which the last | history masked: MRR@20 | HR@20 | rank 1 |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for s in summaries:
        b = s["rank_share"]
        lines.append(
            f"| {Path(s['artifact']).name} | {s['variant']} | {s['mrr@20']:.4f} | {s['hr@20']:.4f} | "
            + " | ".join(f"{b[k]:.3f}" for k, _, _ in BUCKETS)
            + f" | {s['top1_in_history']:.3f} | {s['top1_is_last']:.3f} | "
            f"{s['masked_mrr@20']:.4f} | {s['masked_hr@20']:.4f} | "
            f"{s['masked_rank1']:.3f} |"
        )
    lines += [
        "", "Near misses (target at rank 2-20, history not masked): what is at rank 1.", "",
        "| artifact | near misses | cos(top1, target) | share near | cos(random, target) "
        "| median count top1 / target |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {Path(s['artifact']).name} | {s['near_miss_cases']} | {_f(s['near_miss_top1_target_cosine'])} | "
            f"{_f(s['near_miss_top1_near_share'])} | {_f(s['random_item_target_cosine'])} | "
            f"{_f(s['near_miss_median_count_top1'], 0)} / {_f(s['near_miss_median_count_target'], 0)} |"
        )
    if pair is not None:
        a, b = (Path(s["artifact"]).name for s in summaries[:2])
        lines += [
            "", f"Rank 1 in both: {pair['both']}; only {a}: {pair['only_first']}; only {b}: {pair['only_second']}; "
            f"neither: {pair['neither']}.",
        ]
    return "\n".join(lines) + "\n"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("artifacts", nargs="+", type=Path, help="artifact directories trained on the same split")
    p.add_argument("--cases", choices=("valid", "test"), default="valid")
    p.add_argument("--cache-dir", type=Path, default=REPO / ".cache" / "embeddings", help="text encoder cache")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "out")
    p.add_argument("--name", default="ranks")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        runs = [rank_and_top(a, args.cases) for a in args.artifacts]
    except (ValueError, OSError) as e:
        sys.exit(f"ranks: {e}")
    ids = runs[0]["item_ids"]
    if any(r["item_ids"] != ids or len(r["targets"]) != len(runs[0]["targets"]) for r in runs[1:]):
        sys.exit("ranks: the artifacts were not trained on the same catalogue and split")
    language = embed_items(default_encoder(), ids, runs[0]["records"], args.cache_dir)
    language /= np.maximum(np.linalg.norm(language, axis=1, keepdims=True), 1e-12)
    rng = np.random.default_rng(0)
    summaries = [summarise(r, language, rng) for r in runs]
    pair = None
    if len(runs) >= 2:
        first, second = runs[0]["ranks"] == 1, runs[1]["ranks"] == 1
        pair = {
            "both": int((first & second).sum()), "only_first": int((first & ~second).sum()),
            "only_second": int((~first & second).sum()), "neither": int((~first & ~second).sum()),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    result = {"cases": args.cases, "runs": summaries, "pair": pair}
    (args.out / f"{args.name}.json").write_text(json.dumps(result, indent=2))
    (args.out / f"{args.name}.md").write_text(markdown(summaries, pair, args.cases))
    print(markdown(summaries, pair, args.cases))


if __name__ == "__main__":
    main()
