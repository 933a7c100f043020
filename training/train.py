"""The offline pipeline: dataset -> split -> language embeddings -> projection -> trained model -> artifact."""

from __future__ import annotations

import copy
import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable, Set
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from model.artifact import save_artifact
from model.base import Recommender
from model.config import LANGUAGE_TABLE_VARIANTS, SASREC_BASELINES
from model.dreamrec import DreamRec
from model.projection import Projection, fit_projection, identity_projection
from model.recommender import SequentialRecommender, build_recommender
from training.config import TrainConfig
from training.data import Dataset, k_core, load_dataset
from training.distributed import Context, from_environment, resolve_device, shutdown
from training.encoders import TEXT_TEMPLATE_VERSION, embed_items, encoder_from_spec
from training.evaluate import evaluate_cases
from training.progress import EpochProgress, format_seconds
from training.splits import Split, check_split_items, split_for, without_items

log = logging.getLogger(__name__)

MODEL_NAME = "alphafuse"
SELECT_METRIC = "ndcg@20"


@dataclass
class Prepared:
    """Everything the training loop needs, built once from the config."""

    dataset: Dataset
    split: Split
    item_ids: list[str]
    index: dict[str, int]  # item id -> 1-based row
    projection: Projection | None
    language: np.ndarray | None  # (N, k) the projection's output (Z, or E for the adapter baselines), float32
    encoder_identity: dict[str, Any] | None
    popularity: np.ndarray  # (N,) training interaction counts
    collaborative: np.ndarray | None = None  # (N, hidden) llmesr's collaborative-view init, float32


def prepare(cfg: TrainConfig, exclude_items: Set[str] = frozenset()) -> Prepared:
    """Load, split and embed. `exclude_items` are kept out of everything the model sees (catalogue,
    projection, training, validation): the cold-start-items protocol (training/cold_items.py)."""
    if not cfg.data:
        raise ValueError("no dataset given: pass --data DIR")
    ds = load_dataset(Path(cfg.data))
    if cfg.k_core > 1:
        ds = k_core(ds, cfg.k_core)
    split = split_for(ds, cfg.protocol, cfg.seed, Path(cfg.split) if cfg.split else None)
    check_split_items(split, set(ds.items))
    if exclude_items:
        split = without_items(split, exclude_items)
    item_ids = [i for i in ds.items if i not in exclude_items]
    index = {item: row + 1 for row, item in enumerate(item_ids)}
    popularity = np.zeros(len(item_ids), dtype=np.float64)
    for seq in split.train.values():
        for item in seq:
            popularity[index[item] - 1] += 1
    projection = language = identity = collaborative = None
    if cfg.item_embedding != "id":
        encoder = encoder_from_spec(cfg.encoder)
        identity = dict(encoder.identity)
        emb = embed_items(encoder, item_ids, ds.items, Path(cfg.cache_dir) if cfg.cache_dir else None)
        weights = popularity + 1.0 if cfg.weighting == "popularity" else None  # +1: unseen items still count
        projection = fit_item_projection(cfg, emb, weights)
        language = projection.apply(emb).astype(np.float32)
        log.info(
            "projection: d_l=%d kept=%d (d_s=%d, d_n=%d); eigenvalues %.3g .. %.3g",
            projection.input_dim, projection.output_dim, projection.d_s, projection.d_n,
            projection.eigenvalues[0], projection.eigenvalues[-1],
        )
        if cfg.item_embedding == "llmesr":
            # LLM-ESR starts its ID view from dimension-reduced LLM embeddings: LLMInit's whitened PCA. Only an
            # init, so fold-in never needs it and the artifact does not store it.
            collaborative = whitened_pca(cfg, emb, weights).apply(emb).astype(np.float32)
    return Prepared(ds, split, item_ids, index, projection, language, identity, popularity, collaborative)


def whitened_pca(cfg: TrainConfig, emb: np.ndarray, weights: np.ndarray | None) -> Projection:
    """The top hidden_dim directions of E, whitened, at the language scale: the rows llminit starts from (with
    clipping on), used to start llmesr's collaborative view."""
    projection = fit_projection(
        emb, hidden_dim=cfg.hidden_dim, d_n=0, weights=weights, scale=cfg.scale, standardise=cfg.standardise,
        clip=True, floor=cfg.eig_floor,
    )
    return dataclasses.replace(projection, language_scale=cfg.language_scale_for(projection.output_dim))


def fit_item_projection(cfg: TrainConfig, emb: np.ndarray, weights: np.ndarray | None) -> Projection:
    """The projection each (backbone, item_embedding) pair needs (README "How it works", step 3).

    whitened-text: no null space; every d_l direction for dreamrec, the top hidden_dim for sasrec (the same
    width as the other variants). dreamrec + alphafuse: every direction (no clipping),
    null space = eigenvalues <= threshold (or the last d_n directions when threshold < 0). Otherwise the
    SASRec rule: the top hidden_dim directions, the last d_n of them host the IDs.

    The baselines read E itself (morec, unisrec, llmesr's semantic view, rlmrec's alignment target: the
    identity projection, so scale, weighting and language_scale do not apply), or E whitened in all d_l
    directions (whitenrec: no clipping, d_n = 0, at the usual language scale 1/sqrt(d_l), which gives rows
    the unit norm of the encoder's own).
    """
    d_l = int(emb.shape[1])
    if cfg.item_embedding in ("morec", "unisrec", "llmesr", "rlmrec-con", "rlmrec-gen"):
        return identity_projection(emb)
    hidden_dim: int | None = cfg.hidden_dim
    d_n: int | None = cfg.d_n
    threshold: float | None = None
    clip = cfg.clip
    if cfg.item_embedding == "whitenrec":
        hidden_dim, d_n, clip = d_l, 0, True
    elif cfg.item_embedding == "whitened-text":
        # SASRec: the top hidden_dim directions, the width every other variant has (AlphaFuse with d_n = 0);
        # DreamRec (iDreamRec): every direction, like its AlphaFuse
        hidden_dim, d_n = (d_l, 0) if cfg.backbone == "dreamrec" else (cfg.hidden_dim, 0)
        clip = cfg.backbone != "dreamrec"
    elif cfg.backbone == "dreamrec" and cfg.item_embedding == "alphafuse":
        if cfg.threshold >= 0:
            hidden_dim, d_n, threshold = None, None, cfg.threshold
        else:
            hidden_dim, clip = d_l, False
    projection = fit_projection(
        emb, hidden_dim=hidden_dim, d_n=d_n, threshold=threshold, weights=weights, scale=cfg.scale,
        standardise=cfg.standardise, clip=clip, floor=cfg.eig_floor,
    )
    # the factor depends on how many directions were kept, known only now
    projection = dataclasses.replace(projection, language_scale=cfg.language_scale_for(projection.output_dim))
    if threshold is not None:
        log.info(
            "null space: threshold %g on S (scale %g) -> d_n = %d, d_s = %d",
            threshold, cfg.scale, projection.d_n, projection.d_s,
        )
    return projection


def null_space_record(cfg: TrainConfig, projection: Projection | None) -> dict[str, Any] | None:
    """How the null space was chosen, for the manifest."""
    if projection is None:
        return None
    if cfg.backbone == "dreamrec" and cfg.item_embedding == "alphafuse" and cfg.threshold >= 0:
        rule: dict[str, Any] = {"rule": "threshold", "threshold": cfg.threshold}
    elif cfg.item_embedding == "whitened-text" or cfg.item_embedding in SASREC_BASELINES:
        rule = {"rule": "none"}
    else:
        rule = {"rule": "dimension"}
    return {
        **rule, "scale": projection.scale, "language_scale": projection.language_scale, "d_s": projection.d_s,
        "d_n": projection.d_n,
    }


def training_windows(sequences: list[list[int]], max_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut index sequences into left-padded (inputs, targets) windows of max_len next-item pairs.

    Long sequences become several windows stepping back from the end by max_len, so every interaction
    is a target exactly once (SASRec as published keeps only the last window and wastes the rest).
    """
    rows_in: list[np.ndarray] = []
    rows_tg: list[np.ndarray] = []
    for seq in sequences:
        s = np.asarray(seq, dtype=np.int64)
        end = len(s)
        while end >= 2:
            start = max(0, end - max_len - 1)
            chunk = s[start:end]
            inp = np.zeros(max_len, dtype=np.int64)
            tgt = np.zeros(max_len, dtype=np.int64)
            inp[max_len - len(chunk) + 1 :] = chunk[:-1]
            tgt[max_len - len(chunk) + 1 :] = chunk[1:]
            rows_in.append(inp)
            rows_tg.append(tgt)
            end = start + 1  # the next window's last item is this window's first input
            if start == 0:
                break
    if not rows_in:
        raise ValueError("no training sequence has two or more items")
    return torch.from_numpy(np.stack(rows_in)), torch.from_numpy(np.stack(rows_tg))


def lr_lambda(schedule: str, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning-rate multiplier per optimiser step: linear warm-up, then constant or cosine decay to 0."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        if schedule == "constant":
            return 1.0
        if schedule == "cosine":
            span = max(1, total_steps - warmup_steps)
            return 0.5 * (1.0 + math.cos(math.pi * min(1.0, (step - warmup_steps) / span)))
        raise ValueError(f"unknown lr_schedule {schedule!r}")

    return factor


@dataclass
class TrainResult:
    model: Recommender
    prepared: Prepared
    metrics: dict[str, dict[str, float]]
    history: list[dict[str, float]]
    best_epoch: int
    seconds: float
    trainable_parameters: int = 0
    rank: int = 0  # under torchrun: only rank 0 has metrics and writes the artifact


class _LossOf(torch.nn.Module):
    """DDP synchronises gradients of what its forward computes; our models train through `loss`."""

    def __init__(self, model: Recommender) -> None:
        super().__init__()
        self.model = model

    def forward(self, inputs: torch.Tensor, targets: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return self.model.loss(inputs, targets, generator=generator)


def fit(cfg: TrainConfig, prep: Prepared, ctx: Context | None = None) -> TrainResult:
    """Train with early stopping on validation NDCG@20; returns the best model (by validation).

    `ctx`: the device and, under torchrun, this process's rank (default: one process on `cfg.device`)."""
    ctx = ctx or Context(0, 1, resolve_device(cfg.device))
    torch.manual_seed(cfg.seed)
    gen = torch.Generator().manual_seed(cfg.seed)
    n = len(prep.item_ids)
    if prep.projection is not None and cfg.item_embedding in LANGUAGE_TABLE_VARIANTS:
        hidden, d_n = prep.projection.output_dim, prep.projection.d_n
    else:
        hidden, d_n = cfg.hidden_dim, cfg.d_n
    language = torch.from_numpy(prep.language) if prep.language is not None else None
    collaborative = torch.from_numpy(prep.collaborative) if prep.collaborative is not None else None
    model = build_recommender(cfg.recommender_config(
        hidden, d_n, num_items=n, language_scale=prep.projection.language_scale if prep.projection else 1.0,
        language_dim=0 if prep.language is None else int(prep.language.shape[1]),
    ), n, language, collaborative)
    if isinstance(model, SequentialRecommender):
        model.set_item_popularity(torch.from_numpy(prep.popularity))
    model.to(ctx.device)
    # one process keeps one generator for shuffling and negatives (runs reproduce the earlier ones); with
    # ranks or a GPU the shuffle must stay identical on every rank and on the CPU, negatives and dropout not
    shuffle_gen, loss_gen = gen, gen
    if ctx.distributed or ctx.device.type != "cpu":
        loss_gen = torch.Generator(device=ctx.device).manual_seed(cfg.seed + 1 + ctx.rank)
        torch.manual_seed(cfg.seed + 1 + ctx.rank)  # after the init, which every rank draws the same
    step_module: torch.nn.Module = _LossOf(model)
    if ctx.distributed:
        from torch.nn.parallel import DistributedDataParallel

        # some variants leave parameters out of some losses (e.g. rlmrec's text heads)
        step_module = DistributedDataParallel(
            step_module, device_ids=[ctx.device.index] if ctx.device.type == "cuda" else None,
            find_unused_parameters=True,
        )
    trainable = [p for p in model.parameters() if p.requires_grad]
    num_trainable = sum(p.numel() for p in trainable)
    log.info("model: %d trainable parameters, loss %s", num_trainable, model.cfg.loss)
    opt = torch.optim.AdamW(trainable, lr=cfg.learning_rate(), weight_decay=cfg.weight_decay)

    sequences = [[prep.index[i] for i in seq] for seq in prep.split.train.values()]
    inputs, targets = training_windows(sequences, cfg.max_len)
    batch_size = cfg.resolved_batch_size()
    steps_per_epoch = math.ceil(len(inputs) / batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lr_lambda(cfg.lr_schedule, cfg.warmup_steps, cfg.epochs * steps_per_epoch)
    )
    log.info(
        "training on %d windows, %d targets, %d steps per epoch", len(inputs), int((targets > 0).sum()),
        steps_per_epoch,
    )

    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[dict[str, float]] = []
    started = time.perf_counter()
    for epoch in range(1, cfg.epochs + 1):
        model.train()
        order = torch.randperm(len(inputs), generator=shuffle_gen)
        total, steps, t0 = 0.0, 0, time.perf_counter()
        progress = EpochProgress(epoch, cfg.epochs, steps_per_epoch)
        try:
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                if ctx.distributed:
                    if len(idx) < ctx.world:
                        continue  # a rank without rows would leave the others waiting in the all-reduce
                    idx = idx[ctx.rank :: ctx.world]
                batch_in = inputs[idx].to(ctx.device, non_blocking=True)
                batch_tg = targets[idx].to(ctx.device, non_blocking=True)
                loss = step_module(batch_in, batch_tg, loss_gen)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                value = loss.item()
                total += value
                steps += 1
                progress.step(value)
        finally:
            progress.close()
        record = {
            "epoch": float(epoch), "loss": total / steps, "train_seconds": time.perf_counter() - t0,
            "lr": float(sched.get_last_lr()[0]),
        }
        if (epoch % cfg.eval_every == 0 or epoch == cfg.epochs) and ctx.is_main:
            t1 = time.perf_counter()
            if isinstance(model, DreamRec) and cfg.eval_sampling_steps:
                model.sampling_steps = cfg.eval_sampling_steps  # cheaper validation; restored below
            valid = evaluate_cases(
                model, prep.split.valid, prep.index, batch_size=cfg.eval_batch_size,
                mask_history=cfg.mask_history,
            )
            if isinstance(model, DreamRec):
                model.sampling_steps = model.cfg.dreamrec.sampling_steps
            record["valid_" + SELECT_METRIC] = valid[SELECT_METRIC]
            if valid[SELECT_METRIC] > best_score:
                best_score, best_epoch = valid[SELECT_METRIC], epoch
                best_state = copy.deepcopy(model.state_dict())
            log.info(
                "epoch %d/%d: loss %.4f, valid %s %.4f (best %.4f at epoch %d), %s training + %s validation",
                epoch, cfg.epochs, record["loss"], SELECT_METRIC, valid[SELECT_METRIC], best_score, best_epoch,
                format_seconds(record["train_seconds"]), format_seconds(time.perf_counter() - t1),
            )
        elif ctx.is_main:
            log.info(
                "epoch %d/%d: loss %.4f, %s training (validation every %d epochs)", epoch, cfg.epochs,
                record["loss"], format_seconds(record["train_seconds"]), cfg.eval_every,
            )
        record["elapsed_seconds"] = time.perf_counter() - started  # training + validation so far
        history.append(record)
        if ctx.agree(epoch - best_epoch >= cfg.patience):
            log.info(
                "early stop at epoch %d: no validation gain in %d epochs (best: epoch %d)",
                epoch, epoch - best_epoch, best_epoch,
            )
            break
    ctx.check_replicas_equal(model)
    seconds = time.perf_counter() - started
    if not ctx.is_main:
        return TrainResult(model, prep, {}, history, best_epoch, seconds, num_trainable, rank=ctx.rank)
    model.load_state_dict(best_state)
    model.eval()
    log.info("evaluating the best model (epoch %d) on the validation and test cases", best_epoch)
    metrics = {
        split: evaluate_cases(
            model, cases, prep.index, batch_size=cfg.eval_batch_size, mask_history=cfg.mask_history
        )
        for split, cases in (("valid", prep.split.valid), ("test", prep.split.test))
    }
    return TrainResult(model, prep, metrics, history, best_epoch, seconds, num_trainable)


def run_training(cfg: TrainConfig) -> TrainResult:
    """The `alphafuse train` job: prepare, fit, write the artifact and metrics.json into cfg.out."""
    if cfg.threads > 0:
        torch.set_num_threads(cfg.threads)
    ctx = from_environment(cfg.device)
    try:
        if not ctx.is_main:
            ctx.barrier()  # rank 0 encodes the item texts first; the others then read its cache
        prep = prepare(cfg)
        if ctx.is_main:
            ctx.barrier()
        result = fit(cfg, prep, ctx)
    finally:
        if ctx.distributed and not ctx.is_main:
            shutdown()
    if not ctx.is_main:
        return result
    try:
        return _write(cfg, prep, result)
    finally:
        shutdown()


def _write(cfg: TrainConfig, prep: Prepared, result: TrainResult) -> TrainResult:
    result.model.to("cpu")  # an artifact loads anywhere, also where torch has no CUDA
    out = Path(cfg.out)
    # the artifact keeps a projection only where it is what folds new items in (rlmrec's text trained only)
    projection = prep.projection if result.model.items.fold_in_unavailable is None else None
    backbone = "" if cfg.backbone == "sasrec" else f"{cfg.backbone}-"
    version = f"{prep.dataset.name}-{backbone}{cfg.item_embedding}-{cfg.protocol}-s{cfg.seed}"
    manifest_extra = {
        "model": {"name": MODEL_NAME, "version": version},
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "train_config": cfg.to_dict(),
        "dataset": {
            "name": prep.dataset.name, "path": str(Path(cfg.data).resolve()), "protocol": cfg.protocol,
            "split": prep.split.source, "items": len(prep.item_ids), "train_users": len(prep.split.train),
            "valid_cases": len(prep.split.valid), "test_cases": len(prep.split.test),
        },
        "encoder": None if prep.encoder_identity is None else {
            "identity": prep.encoder_identity, "dim": int(prep.encoder_identity.get("dim", 0)),
            "text_template_version": TEXT_TEMPLATE_VERSION,
        },
        "null_space": null_space_record(cfg, projection),
        "training": {
            "best_epoch": result.best_epoch, "seconds": round(result.seconds, 2), "lr": cfg.learning_rate(),
            "batch_size": cfg.resolved_batch_size(), "dropout": cfg.resolved_dropout(), "loss": result.model.cfg.loss,
            "trainable_parameters": result.trainable_parameters,
        },
        "metrics": result.metrics,
    }
    records = [prep.dataset.items[i] for i in prep.item_ids]
    save_artifact(
        out, model=result.model, projection=projection, item_ids=prep.item_ids, item_records=records,
        manifest_extra=manifest_extra,
    )
    (out / "metrics.json").write_text(json.dumps(result.metrics, indent=2, sort_keys=True))
    (out / "history.json").write_text(json.dumps(result.history, indent=1))
    return result
