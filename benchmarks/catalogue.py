"""Catalogue scale: exact (flat) vs approximate (HNSW, IVF) inner-product search as the catalogue grows.

    python benchmarks/catalogue.py --sizes 100000 1000000
    python benchmarks/catalogue.py --sizes 100000 --queries 320 --source artifact:runs/toys

For each catalogue size N: a synthetic catalogue of N item vectors (dimension `--dim`, 128 like the
default model), built into each index the service can serve, then `--queries` queries searched in
batches of `--batch` (32: the service's `MAX_BATCH`) on one thread (the service's `FAISS_THREADS`).
Per index: build seconds, bytes per item (the serialised index, which is what it holds in memory),
latency per batch (p50, p95), and recall@`--k` against the exact answer. Every search fetches `--fetch`
results (k plus a history's worth of items the service filters out afterwards). Writes
`<out>/catalogue.json` and `catalogue.md`.

Sources (`--source`):
- `random`: unit vectors drawn uniformly on the sphere, queries likewise. No structure at all: the
  hardest case for graph and cluster indexes, so their recall here is a lower bound.
- `artifact:DIR`: the rows of a trained artifact's `item_table.npy` tiled to N with Gaussian noise
  (`--noise` times the table's per-coordinate spread), queries are noisy rows too: the geometry of a
  real catalogue, repeated.

HNSW is `IndexHNSWFlat(M=--hnsw-m, efConstruction=--hnsw-ef-construction)`, searched at each
`--hnsw-ef-search`; IVF is `IndexIVFFlat` with `nlist = 4 sqrt(N)` trained on up to 64 vectors per list,
searched at each `--ivf-nprobe`. Builds use all cores (`--build-threads`), searches one. Not part of CI.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np

log = logging.getLogger("benchmarks.catalogue")
ROOT = Path(__file__).resolve().parents[1]


def synthetic(source: str, n: int, dim: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    """(n, dim) float32 item vectors (module docstring)."""
    if source == "random":
        x = rng.standard_normal((n, dim), dtype=np.float32)
        return x / np.linalg.norm(x, axis=1, keepdims=True)
    if source.startswith("artifact:"):
        table = np.load(Path(source.removeprefix("artifact:")) / "item_table.npy").astype(np.float32)
        if table.shape[1] != dim:
            raise ValueError(f"{source}: item_table.npy has dimension {table.shape[1]}, --dim is {dim}")
        rows = table[np.arange(n) % len(table)]
        spread = table.std(axis=0, keepdims=True)  # (1, dim)
        return (rows + noise * spread * rng.standard_normal(rows.shape, dtype=np.float32)).astype(np.float32)
    raise ValueError(f"--source must be 'random' or 'artifact:DIR', got {source!r}")


def queries_for(source: str, items: np.ndarray, q: int, noise: float, rng: np.random.Generator) -> np.ndarray:
    if source == "random":
        return synthetic("random", q, items.shape[1], noise, rng)
    picked = items[rng.integers(0, len(items), size=q)]
    spread = items.std(axis=0, keepdims=True)
    return (picked + noise * spread * rng.standard_normal(picked.shape, dtype=np.float32)).astype(np.float32)


def build(kind: str, items: np.ndarray, args: argparse.Namespace) -> faiss.Index:
    d = items.shape[1]
    if kind == "flat":
        index: faiss.Index = faiss.IndexFlatIP(d)
    elif kind == "hnsw":
        index = faiss.IndexHNSWFlat(d, args.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = args.hnsw_ef_construction
    elif kind == "ivf":
        nlist = max(1, int(4 * math.sqrt(len(items))))
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
        sample = items[np.random.default_rng(0).permutation(len(items))[: 64 * nlist]]
        index.train(sample)
    else:
        raise ValueError(f"unknown index kind {kind!r}")
    index.add(items)
    return index


def search_batches(index: faiss.Index, queries: np.ndarray, fetch: int, batch: int, params: Any) -> tuple[
    np.ndarray, list[float]
]:
    """(labels (Q, fetch), seconds per batch)."""
    labels = np.empty((len(queries), fetch), dtype=np.int64)
    times = []
    for start in range(0, len(queries), batch):
        chunk = np.ascontiguousarray(queries[start : start + batch])
        t0 = time.perf_counter()
        _, got = index.search(chunk, fetch, params=params)
        times.append(time.perf_counter() - t0)
        labels[start : start + len(chunk)] = got
    return labels, times


def recall_at(truth: np.ndarray, got: np.ndarray, k: int) -> float:
    """Mean share of the exact top-k found in the approximate top-k."""
    hits = [len(set(t[:k].tolist()) & set(g[:k].tolist())) for t, g in zip(truth, got, strict=True)]
    return float(np.mean(hits)) / k


def index_bytes(index: faiss.Index) -> int:
    return int(faiss.serialize_index(index).size)


def measure_size(n: int, args: argparse.Namespace) -> list[dict[str, Any]]:
    rng = np.random.default_rng(args.seed)
    t0 = time.perf_counter()
    items = synthetic(args.source, n, args.dim, args.noise, rng)
    queries = queries_for(args.source, items, args.queries, args.noise, rng)
    log.info("N=%d: catalogue of %d x %d drawn in %.1f s", n, n, args.dim, time.perf_counter() - t0)
    rows: list[dict[str, Any]] = []
    truth: np.ndarray | None = None
    for kind in args.kinds:
        faiss.omp_set_num_threads(args.build_threads)
        t0 = time.perf_counter()
        index = build(kind, items, args)
        build_s = time.perf_counter() - t0
        per_item = index_bytes(index) / n
        faiss.omp_set_num_threads(1)
        settings: list[tuple[str, Any]]
        if kind == "hnsw":
            # efSearch raised to the fetch size, as the service does
            hnsw_params = faiss.SearchParametersHNSW  # type: ignore[attr-defined]
            settings = [(f"efSearch={ef}", hnsw_params(efSearch=max(ef, args.fetch))) for ef in args.hnsw_ef_search]
        elif kind == "ivf":
            settings = [
                (f"nprobe={p}", faiss.SearchParametersIVF(nprobe=p))  # type: ignore[call-arg]
                for p in args.ivf_nprobe
            ]
        else:
            settings = [("exact", None)]
        for name, params in settings:
            labels, times = search_batches(index, queries, args.fetch, args.batch, params)
            if kind == "flat":
                truth = labels
            rows.append({
                "n": n, "index": kind, "setting": name, "build_s": build_s, "bytes_per_item": per_item,
                "batch_ms_p50": 1e3 * float(np.percentile(times, 50)),
                "batch_ms_p95": 1e3 * float(np.percentile(times, 95)),
                "recall": recall_at(truth, labels, args.k) if truth is not None else None,
                "batches": len(times),
            })  # fmt: skip
            r = rows[-1]
            log.info("N=%d %s %s: build %.1f s, %.0f B/item, batch p50 %.2f ms, recall@%d %s", n, kind, name,
                     build_s, per_item, r["batch_ms_p50"], args.k,
                     "-" if r["recall"] is None else f"{r['recall']:.4f}")  # fmt: skip
        del index
    return rows


def markdown(result: dict[str, Any]) -> str:
    cfg = result["config"]
    lines = [
        "# Catalogue scale: flat vs HNSW vs IVF",
        "",
        f"- source `{cfg['source']}`, dimension {cfg['dim']}, {cfg['queries']} queries in batches of {cfg['batch']} "
        f"on 1 thread, fetch {cfg['fetch']}, recall@{cfg['k']} against flat (exact)",
        f"- HNSW M={cfg['hnsw_m']}, efConstruction={cfg['hnsw_ef_construction']}; IVF nlist = 4 sqrt(N); builds on "
        f"{cfg['build_threads']} thread(s)",
        f"- machine: {result['machine']['cpus']} CPUs, load average (1 min) {result['machine']['loadavg_start']} at "
        f"the start, {result['machine']['loadavg_end']} at the end",
        "",
        f"| N | index | setting | build s | bytes/item | batch of {cfg['batch']} p50 ms | p95 ms | recall@{cfg['k']} |",
        "|---:|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in result["rows"]:
        recall = "-" if r["recall"] is None else f"{r['recall']:.4f}"
        lines.append(
            f"| {r['n']:,} | {r['index']} | {r['setting']} | {r['build_s']:.1f} | {r['bytes_per_item']:.0f} "
            f"| {r['batch_ms_p50']:.2f} | {r['batch_ms_p95']:.2f} | {recall} |"
        )
    return "\n".join(lines) + "\n"


def _loadavg() -> float | None:
    try:
        return round(os.getloadavg()[0], 2)
    except OSError:
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[100_000, 1_000_000], help="catalogue sizes N")
    p.add_argument("--kinds", nargs="+", default=["flat", "hnsw", "ivf"], choices=["flat", "hnsw", "ivf"])
    p.add_argument("--source", default="random", help="random | artifact:DIR (module docstring)")
    p.add_argument("--noise", type=float, default=0.1, help="noise scale of --source artifact:DIR")
    p.add_argument("--dim", type=int, default=128)
    p.add_argument("--queries", type=int, default=320)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--fetch", type=int, default=20, help="results per query (k + a history the service drops)")
    p.add_argument("--hnsw-m", type=int, default=32)
    p.add_argument("--hnsw-ef-construction", type=int, default=200)
    p.add_argument("--hnsw-ef-search", type=int, nargs="+", default=[64, 128])
    p.add_argument("--ivf-nprobe", type=int, nargs="+", default=[16, 64])
    p.add_argument("--build-threads", type=int, default=os.cpu_count() or 1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=str(ROOT / "benchmarks" / "out"))
    p.add_argument("--name", default="catalogue", help="output file stem")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if "flat" not in args.kinds:
        raise SystemExit("catalogue.py: error: --kinds must include flat (the exact answer recall is measured against)")
    args.kinds = ["flat"] + [k for k in args.kinds if k != "flat"]
    load_start = _loadavg()
    rows = [r for n in args.sizes for r in measure_size(n, args)]
    result = {
        "config": {k: v for k, v in vars(args).items() if k not in ("out", "name")},
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "faiss": faiss.__version__,
                    "loadavg_start": load_start, "loadavg_end": _loadavg()},
        "rows": rows,
    }  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.name}.json").write_text(json.dumps(result, indent=2) + "\n")
    md = markdown(result)
    (out / f"{args.name}.md").write_text(md)
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
