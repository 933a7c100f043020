"""Recall@k of the service's HNSW index against exact inner-product search, on real test histories.

    python benchmarks/hnsw_recall.py --artifact runs/toys --data ../shared/data/amazon-toys \
        --split ../shared/data/amazon-toys/splits/preferdiff

Uses the service's own Ranker (same index construction, same query vectors), so what is measured is
what `ALPHAFUSE_INDEX=hnsw` serves. Writes `<out>/hnsw_recall.json` and `.md`.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np

from service.ranker import Query, Ranker, Ranking
from training.data import load_dataset
from training.splits import split_for


def top_ids(ranker: Ranker, histories: list[list[str]], k: int) -> list[list[str]]:
    """Top-k ids per history, history items included (the raw index answer, nothing filtered)."""
    out = []
    for start in range(0, len(histories), 256):
        batch = [Query(history=h, k=k, exclude_history=False) for h in histories[start : start + 256]]
        for r in ranker.recommend_many(batch):
            assert isinstance(r, Ranking), r
            out.append([item for item, _ in r.items])
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--artifact", required=True)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--protocol", default="cold-users")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--ks", default="10,20,100")
    p.add_argument("--ef-search", default="16,64,128,256")
    p.add_argument("--out", default="benchmarks/out")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    ks = [int(k) for k in args.ks.split(",")]
    split = split_for(load_dataset(Path(args.data)), args.protocol, args.seed, Path(args.split) if args.split else None)
    histories = [list(c.history) for c in split.test]
    exact = Ranker.load(Path(args.artifact), encoder_preload=False, index="flat")
    rows = []
    t0 = time.perf_counter()
    truth = {k: top_ids(exact, histories, k) for k in ks}
    exact_s = time.perf_counter() - t0
    for ef in (int(e) for e in args.ef_search.split(",")):
        started = time.perf_counter()
        approx = Ranker.load(Path(args.artifact), encoder_preload=False, index="hnsw", hnsw_ef_search=ef)
        build_s = time.perf_counter() - started
        row = {"ef_search": ef, "build_seconds": round(build_s, 1)}
        t0 = time.perf_counter()
        for k in ks:
            got = top_ids(approx, histories, k)
            row[f"recall@{k}"] = float(np.mean([len(set(a) & set(b)) / k for a, b in zip(got, truth[k], strict=True)]))
        row["query_seconds_all_ks"] = round(time.perf_counter() - t0, 2)
        rows.append(row)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {
        "artifact": args.artifact, "queries": len(histories), "exact_seconds_all_ks": round(exact_s, 2), "rows": rows,
    }
    (out / "hnsw_recall.json").write_text(json.dumps(report, indent=1))
    head = "| efSearch | " + " | ".join(f"recall@{k}" for k in ks) + " | build s | query s (all k) |"
    lines = [head, "|" + "---|" * (len(ks) + 3)]
    for r in rows:
        cells = " | ".join(f"{r[f'recall@{k}']:.4f}" for k in ks)
        lines.append(f"| {r['ef_search']} | {cells} | {r['build_seconds']} | {r['query_seconds_all_ks']} |")
    md = f"{len(histories)} test histories, HNSW M=32, efConstruction=200 vs exact inner product.\n\n"
    md += "\n".join(lines)
    (out / "hnsw_recall.md").write_text(md + "\n")
    print(md)


if __name__ == "__main__":
    main()
