"""The training configuration: one frozen dataclass; the CLI and config files are generated from it."""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from model.config import (
    BACKBONES,
    ITEM_EMBEDDINGS,
    LOSSES,
    SASREC_BASELINES,
    DreamRecConfig,
    ItemEmbeddingKind,
    RecommenderConfig,
)
from model.sasrec import SASRecConfig

PROTOCOLS: tuple[str, ...] = ("loo", "cold-users")
Protocol = Literal["loo", "cold-users"]

# The paper's DreamRec null space: S <= 0.25 with embeddings scaled by 40. S grows with scale**2, so at
# scale 1 the same rule is S <= 0.25 / 40**2; on amazon-toys MiniLM embeddings it gives d_n = 120 of 384.
DEFAULT_THRESHOLD = 0.25 / 40**2


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""  # dataset directory: canonical CSV + JSONL, MovieLens or Amazon (required; or in --config)
    split: str | None = None  # folder with train.csv, valid.csv, test.csv: use that split instead of making one
    protocol: Protocol = "cold-users"  # split: loo (each user's last item), cold-users (test users unseen)
    out: str = "runs/model"  # artifact directory to write
    seed: int = 0  # seeds the split, initialisation, shuffling, negatives and dreamrec's starting noise
    k_core: int = 0  # repeatedly drop users and items with fewer than K interactions (0: keep all)
    backbone: Literal["sasrec", "dreamrec"] = "sasrec"  # sasrec (discriminative) or dreamrec (diffusion)
    item_embedding: ItemEmbeddingKind = "alphafuse"  # how item vectors are made (baselines: sasrec backbone only)
    encoder: str = "minilm"  # text encoder: minilm (bundled) | st:DIR | openai:MODEL | npy:EMB.npy:IDS.json
    cache_dir: str = ".cache/embeddings"  # folder caching text embeddings between runs ("" disables)
    hidden_dim: int = 128  # item vector width: language part d_s + ID part d_n (sasrec); id/llminit width
    d_n: int = 96  # width of the ID part (the null space), out of --hidden-dim (dreamrec: if --threshold < 0)
    threshold: float = DEFAULT_THRESHOLD  # dreamrec+alphafuse: IDs in directions of text variance <= this (<0: --d-n)
    weighting: Literal["uniform", "popularity"] = "uniform"  # item weights in the text mean and covariance
    standardise: bool = True  # whiten the kept text directions to unit variance (off: ablation)
    clip: bool = True  # sasrec: keep only the top --hidden-dim text directions (off: ablation); dreamrec: never
    freeze_language: bool = True  # keep the text part of item vectors fixed in training (off: ablation)
    eig_floor: float = 1e-6  # smallest variance a direction is whitened by (keeps tiny ones finite)
    scale: float = 1.0  # multiplies raw language embeddings before the decomposition
    language_scale: float = 0.0  # factor on the whitened text part (0: 1/sqrt(width) sasrec, 1 dreamrec)
    id_init: Literal["zeros", "normal"] = "zeros"  # alphafuse: how the ID part starts
    id_dropout: float = 0.0  # alphafuse: share of rows per step trained with a cold item's ID part (neighbours)
    id_std: float = 0.0  # std of normal ID init (0: 1/sqrt(width) sasrec id, language scale alphafuse, else 1)
    num_blocks: int = 1  # transformer blocks
    num_heads: int = 1  # attention heads
    state: Literal["residual", "increments"] = "residual"  # sasrec state: residual stream, or blocks' additions
    dropout: float | None = None  # dropout (unset: by backbone, 0.3 sasrec, 0.1 dreamrec)
    max_len: int = 10  # history window: the most recent items the model reads
    loss: Literal["auto", "ce", "sampled-softmax", "infonce", "bce"] = "auto"  # auto: ce; sampled-softmax if many items
    full_softmax_max_items: int = 100_000  # loss auto: full softmax CE up to this catalogue size
    softmax_negatives: int = 8192  # sampled-softmax: negatives per batch, drawn by popularity, logQ-corrected
    negatives: int = 64  # InfoNCE negatives
    temperature: float = 0.07  # InfoNCE temperature (cosine)
    similarity: Literal["dot", "cosine"] = "dot"  # sasrec training and ranking similarity (dreamrec: always dot)
    diffusion_steps: int = 2000  # dreamrec: T, the number of diffusion steps
    beta_schedule: Literal["linear", "cosine", "exponential"] = "linear"  # dreamrec: noise schedule (1e-4 .. 0.02)
    guidance: float = 5.0  # dreamrec: classifier-free guidance weight w
    p_uncond: float = 0.1  # dreamrec: probability of training with the null condition
    sampling_steps: int = 50  # dreamrec: strided DDIM steps at inference (saved in the artifact)
    eval_sampling_steps: int = 0  # dreamrec: DDIM steps for validation during training (0: --sampling-steps)
    lr: float = 0.0  # learning rate (0: by backbone, 1e-3 sasrec, 1e-4 dreamrec)
    lr_schedule: Literal["constant", "cosine"] = "constant"  # after warm-up: constant, or cosine decay to 0 at --epochs
    warmup_steps: int = 0  # linear learning-rate warm-up over this many optimiser steps
    weight_decay: float = 0.0  # AdamW (decoupled) weight decay
    batch_size: int = 0  # training windows per optimiser step (0: by backbone, 64 sasrec, 256 dreamrec)
    epochs: int = 50  # maximum epochs
    patience: int = 5  # stop after this many epochs without a validation NDCG@20 gain
    eval_every: int = 1  # validate every N epochs
    eval_batch_size: int = 1024  # histories per evaluation batch
    mask_history: bool = False  # evaluation: history items do not compete (paper: off)
    threads: int = 0  # torch threads (0: torch's default)
    device: Literal["auto", "cpu", "cuda"] = "auto"  # where training and evaluation run (auto: cuda when present)
    align_weight: float = 0.1  # rlmrec-con/-gen, masked_text: weight of the text-alignment loss in the loss
    masked_text: bool = False  # alphafuse: add RLMRec-Gen's masked-item text reconstruction to the loss

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.item_embedding not in ITEM_EMBEDDINGS:
            raise ValueError(f"item_embedding must be one of {ITEM_EMBEDDINGS}, got {self.item_embedding!r}")
        if self.loss not in ("auto", *LOSSES):
            raise ValueError(f"loss must be one of {('auto', *LOSSES)}, got {self.loss!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.warmup_steps < 0:
            raise ValueError(f"warmup_steps must be >= 0, got {self.warmup_steps}")
        if not (math.isfinite(self.weight_decay) and self.weight_decay >= 0):
            raise ValueError(f"weight_decay must be a number >= 0, got {self.weight_decay}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be auto, cpu or cuda, got {self.device!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone != "sasrec" and self.item_embedding in SASREC_BASELINES:
            raise ValueError(f"item_embedding {self.item_embedding!r} is a SASRec baseline: backbone must be 'sasrec'")
        if not (math.isfinite(self.align_weight) and self.align_weight >= 0):
            raise ValueError(f"align_weight must be a number >= 0, got {self.align_weight}")
        if self.masked_text and (self.item_embedding != "alphafuse" or self.backbone != "sasrec"):
            raise ValueError(
                "masked_text is for item_embedding 'alphafuse' on the sasrec backbone (rlmrec-gen has its own), "
                f"not {self.item_embedding!r} on {self.backbone!r}"
            )
        if self.backbone == "dreamrec":
            self.dreamrec_config()  # validates the diffusion flags
            if not 0 <= self.eval_sampling_steps <= self.diffusion_steps:
                raise ValueError(
                    f"eval_sampling_steps must be in [0, diffusion_steps={self.diffusion_steps}], "
                    f"got {self.eval_sampling_steps}"
                )
        for name in (
            "epochs", "patience", "eval_every", "eval_batch_size", "max_len", "full_softmax_max_items",
            "softmax_negatives", "negatives",
        ):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
        if not (math.isfinite(self.id_dropout) and 0.0 <= self.id_dropout < 1.0):
            raise ValueError(f"id_dropout must be in [0, 1), got {self.id_dropout}")
        if not (math.isfinite(self.language_scale) and self.language_scale >= 0):
            raise ValueError(f"language_scale must be a number >= 0 (0 = by backbone), got {self.language_scale}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1) (or None = by backbone), got {self.dropout}")
        if self.batch_size < 0:
            raise ValueError(f"batch_size must be positive (0 = by backbone), got {self.batch_size}")
        if not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr must be a positive number (0 = by backbone), got {self.lr}")

    def learning_rate(self) -> float:
        """The Adam learning rate: `lr`, or the backbone's default when it is 0.

        DreamRec's default is 10x lower than SASRec's because it was measured: on Toys at 1e-3 every
        DreamRec variant peaked on validation within 1-5 epochs and then declined (test N@20 0.030 for the
        text variants); at 1e-4 they keep improving for 6-14 epochs and reach 0.040-0.041 (benchmarks/RESULTS.md).
        """
        if self.lr > 0:
            return self.lr
        return 1e-4 if self.backbone == "dreamrec" else 1e-3

    def resolved_batch_size(self) -> int:
        """`batch_size`, or the backbone's default when it is 0.

        SASRec: 64 windows, measured on Toys against 256: the same validation peak in half the epochs, and
        each epoch is faster (smaller logit matrices); DreamRec keeps the 256 its results were measured with.
        """
        if self.batch_size > 0:
            return self.batch_size
        return 256 if self.backbone == "dreamrec" else 64

    def resolved_dropout(self) -> float:
        """`dropout`, or the backbone's default when it is None (SASRec 0.3, measured; DreamRec 0.1)."""
        if self.dropout is not None:
            return self.dropout
        return 0.1 if self.backbone == "dreamrec" else 0.3

    def language_scale_for(self, kept: int) -> float:
        """The factor on the whitened language coordinates Z (k = `kept` directions), stored in the artifact.

        SASRec: 1/sqrt(k), so language rows have norm ~1 like the ID rows they are added to and compared
        with (see `model.projection.Projection`). DreamRec: 1, the scale of its N(0, I) diffusion noise.
        """
        if self.language_scale > 0:
            return self.language_scale
        return 1.0 if self.backbone == "dreamrec" else 1.0 / math.sqrt(kept)

    def dreamrec_config(self) -> DreamRecConfig:
        return DreamRecConfig(
            num_steps=self.diffusion_steps, beta_schedule=self.beta_schedule, guidance=self.guidance,
            p_uncond=self.p_uncond, sampling_steps=self.sampling_steps, sample_seed=self.seed,
        )

    def resolved_loss(self, num_items: int) -> str:
        """`loss`, with auto resolved: full softmax CE while the catalogue has at most
        `full_softmax_max_items` items (its (targets x N) logits are what a step costs), sampled softmax beyond."""
        if self.loss != "auto":
            return self.loss
        return "ce" if num_items <= self.full_softmax_max_items else "sampled-softmax"

    def recommender_config(
        self, hidden_dim: int, d_n: int | None, *, num_items: int, language_scale: float = 1.0, language_dim: int = 0
    ) -> RecommenderConfig:
        """The model config; `hidden_dim` and `d_n` come from the projection when the item rows are its output
        (d_l when clipping is off; d_n picked by the eigenvalue threshold for dreamrec). `num_items` resolves
        loss auto; `language_scale` (the projection's) sets the std of AlphaFuse's optional normal ID init, so
        N(0, a^2) IDs stay at the scale of the language coordinates they are added to, as N(0, 1) did at a = 1;
        `language_dim` is the width of the language rows the model reads (0 = none)."""
        dreamrec = self.backbone == "dreamrec"
        id_std = self.id_std
        if id_std == 0.0 and self.item_embedding == "alphafuse":
            id_std = language_scale
        return RecommenderConfig(
            item_embedding=self.item_embedding,
            backbone=self.backbone,
            sasrec=SASRecConfig(
                hidden_dim=hidden_dim, num_blocks=self.num_blocks, num_heads=self.num_heads,
                dropout=self.resolved_dropout(), max_len=self.max_len, state=self.state,
            ),
            dreamrec=self.dreamrec_config() if dreamrec else DreamRecConfig(),
            loss=self.resolved_loss(num_items),  # type: ignore[arg-type]
            negatives=self.negatives,
            softmax_negatives=self.softmax_negatives,
            temperature=self.temperature,
            similarity="dot" if dreamrec else self.similarity,
            freeze_language=self.freeze_language,
            id_init=self.id_init,
            id_dropout=self.id_dropout,
            id_std=id_std,
            d_n=self.d_n if d_n is None else d_n,
            language_dim=language_dim,
            align_weight=self.align_weight,
            masked_text=self.masked_text,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# Named recipes by backbone: field values applied under whatever the caller sets explicitly. "paper" is
# AlphaFuse's published SASRec setting (Hu et al., SIGIR 2025), kept so our default can be compared with it;
# DreamRec's defaults already are the paper's diffusion settings (T = 2000, w = 5, p_uncond 0.1, hidden d_l)
# apart from the measured lr 1e-4, so its paper preset changes nothing.
PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "default": {"sasrec": {}, "dreamrec": {}},
    "paper": {
        "sasrec": {
            "loss": "infonce", "negatives": 64, "temperature": 0.07, "similarity": "cosine", "language_scale": 1.0,
            "hidden_dim": 128, "d_n": 64, "num_blocks": 1, "num_heads": 1, "dropout": 0.1, "max_len": 10,
            "lr": 1e-3, "lr_schedule": "constant", "warmup_steps": 0, "weight_decay": 0.0, "batch_size": 256,
            "id_init": "zeros", "epochs": 150, "patience": 50,
        },
        "dreamrec": {},
    },
}


def config_with_preset(preset: str, values: dict[str, Any]) -> TrainConfig:
    """A TrainConfig from a named preset (for the backbone in `values`), explicit `values` taking precedence."""
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}: choose one of {', '.join(PRESETS)}")
    backbone = values.get("backbone", "sasrec")
    if backbone not in PRESETS[preset]:
        raise ValueError(f"backbone must be one of {BACKBONES}, got {backbone!r}")
    return TrainConfig(**{**PRESETS[preset][backbone], **values})


def config_field_names() -> set[str]:
    return {f.name for f in fields(TrainConfig)}


def read_config_file(path: Path) -> dict[str, Any]:
    """Flags from a YAML, TOML or JSON file; keys are TrainConfig field names (dashes allowed)."""
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config file not found: {path}")
    text = path.read_text()
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            raw = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            raw = yaml.safe_load(text) or {}
        elif suffix == ".json":
            raw = json.loads(text)
        else:
            raise ValueError(f"config file {path} must end in .yaml, .yml, .toml or .json")
    except (tomllib.TOMLDecodeError, yaml.YAMLError, json.JSONDecodeError) as e:
        raise ValueError(f"cannot parse config file {path}: {e}") from e
    if not isinstance(raw, dict):
        raise ValueError(f"config file {path} must hold a mapping of flag names to values")
    values = {str(k).replace("-", "_"): v for k, v in raw.items()}
    unknown = set(values) - config_field_names()
    if unknown:
        raise ValueError(f"config file {path} has unknown keys: {', '.join(sorted(unknown))}")
    return values
