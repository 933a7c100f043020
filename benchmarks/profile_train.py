"""Where a training step and a validation pass spend their time: torch.profiler over a few steps.

Prepares the dataset like `alphafuse train` (text embeddings from the cache), builds the model of the
given config, runs `--steps` optimiser steps and one validation pass under the profiler, and writes the
operator table (self CPU time) to `<out>/profile.md` and a JSON summary to `<out>/profile.json`.

    python benchmarks/profile_train.py --data ../shared/data/amazon-toys \
        --split ../shared/data/amazon-toys/splits/preferdiff --out benchmarks/out/profile
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from pathlib import Path

import torch
from quality import train_overrides  # benchmarks/ is on sys.path when run as a script
from torch.profiler import ProfilerActivity, profile, record_function

from model.recommender import SequentialRecommender, build_recommender
from training.config import PRESETS, config_with_preset
from training.evaluate import evaluate_cases
from training.train import prepare, training_windows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True)
    p.add_argument("--split", default=None)
    p.add_argument("--protocol", default="cold-users", choices=["loo", "cold-users"])
    p.add_argument("--variant", default="alphafuse")
    p.add_argument("--preset", default="default", choices=list(PRESETS))
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--set", action="append", default=[], help="TrainConfig override KEY=VALUE (JSON value)")
    p.add_argument("--out", default="benchmarks/out/profile")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    cfg = config_with_preset(args.preset, {
        "data": args.data, "split": args.split, "protocol": args.protocol, "item_embedding": args.variant,
        **train_overrides(None, args.set),
    })
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    prep = prepare(cfg)
    n = len(prep.item_ids)
    hidden, d_n = (prep.projection.output_dim, prep.projection.d_n) if prep.projection else (cfg.hidden_dim, cfg.d_n)
    language = torch.from_numpy(prep.language) if prep.language is not None else None
    model = build_recommender(cfg.recommender_config(
        hidden, d_n, num_items=n, language_scale=prep.projection.language_scale if prep.projection else 1.0
    ), n, language)
    if isinstance(model, SequentialRecommender):
        model.set_item_popularity(torch.from_numpy(prep.popularity))
    opt = torch.optim.AdamW([q for q in model.parameters() if q.requires_grad], lr=cfg.learning_rate())
    inputs, targets = training_windows([[prep.index[i] for i in s] for s in prep.split.train.values()], cfg.max_len)
    gen = torch.Generator().manual_seed(0)
    order = torch.randperm(len(inputs), generator=gen)

    def step(i: int) -> None:
        idx = order[(i * cfg.resolved_batch_size()) % len(order) :][: cfg.resolved_batch_size()]
        with record_function("loss forward"):
            loss = model.loss(inputs[idx], targets[idx], generator=gen)
        opt.zero_grad(set_to_none=True)
        with record_function("loss backward"):
            loss.backward()
        with record_function("optimiser step"):
            opt.step()

    model.train()
    for i in range(3):  # warm-up: allocator, MKL
        step(i)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        t0 = time.perf_counter()
        for i in range(args.steps):
            step(i)
        step_seconds = (time.perf_counter() - t0) / args.steps
        t0 = time.perf_counter()
        with record_function("validation"):
            evaluate_cases(model, prep.split.valid, prep.index, batch_size=cfg.eval_batch_size)
        valid_seconds = time.perf_counter() - t0
    steps_per_epoch = math.ceil(len(inputs) / cfg.resolved_batch_size())
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25)
    summary = {
        "data": args.data, "variant": args.variant, "preset": args.preset, "batch_size": cfg.resolved_batch_size(),
        "loss": model.cfg.loss, "threads": torch.get_num_threads(), "steps_profiled": args.steps,
        "seconds_per_step": step_seconds, "steps_per_epoch": steps_per_epoch,
        "epoch_seconds_estimate": step_seconds * steps_per_epoch, "validation_seconds": valid_seconds,
        "targets_per_epoch": int((targets > 0).sum()), "items": n,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "profile.json").write_text(json.dumps(summary, indent=1))
    (out / "profile.md").write_text(
        "```\n" + json.dumps(summary, indent=1) + "\n```\n\nSelf CPU time by operator (profiled steps + one "
        "validation pass; times include the profiler's overhead):\n\n```\n" + table + "\n```\n"
    )
    print((out / "profile.md").read_text())


if __name__ == "__main__":
    main()
