"""The training configuration: one frozen dataclass; the CLI and config files are generated from it."""

from __future__ import annotations

import json
import math
import tomllib
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal

import yaml

from model.dreamrec import DreamRecConfig
from model.recommender import BACKBONES, ITEM_EMBEDDINGS, LOSSES, RecommenderConfig
from model.sasrec import SASRecConfig

PROTOCOLS: tuple[str, ...] = ("loo", "cold-users")
Protocol = Literal["loo", "cold-users"]

# The paper's DreamRec null space: S <= 0.25 with embeddings scaled by 40. S grows with scale**2, so at
# scale 1 the same rule is S <= 0.25 / 40**2; on amazon-toys MiniLM embeddings it gives d_n = 120 of 384.
DEFAULT_THRESHOLD = 0.25 / 40**2


@dataclass(frozen=True)
class TrainConfig:
    data: str = ""  # dataset directory (canonical, MovieLens or Amazon files)
    split: str | None = None  # directory with train/valid/test.csv: a predefined split
    protocol: Protocol = "cold-users"  # evaluation protocol (METHOD.md section 3)
    out: str = "runs/model"  # artifact directory to write
    seed: int = 0  # seeds the split, initialisation, shuffling, negatives and dreamrec's starting noise
    k_core: int = 0  # drop users/items with fewer interactions (0 = keep all)
    backbone: Literal["sasrec", "dreamrec"] = "sasrec"  # sasrec (discriminative) or dreamrec (diffusion)
    item_embedding: Literal["alphafuse", "id", "llminit", "whitened-text"] = "alphafuse"  # item-embedding variant
    encoder: str = "minilm"  # text encoder spec: minilm | st:DIR | openai:MODEL | npy:EMB.npy:IDS.json
    cache_dir: str = ".cache/embeddings"  # on-disk language-embedding cache ("" disables)
    hidden_dim: int = 128  # d_s + d_n (sasrec); id/llminit width (both backbones)
    d_n: int = 64  # null-space width hosting the IDs (dreamrec: used only when --threshold < 0)
    threshold: float = DEFAULT_THRESHOLD  # dreamrec+alphafuse: null space = directions with S <= this (< 0: by --d-n)
    weighting: Literal["uniform", "popularity"] = "uniform"  # mean/covariance weights
    standardise: bool = True  # whiten kept directions by S^-1/2 (False = ablation)
    clip: bool = True  # sasrec: keep only hidden_dim directions (False = ablation); dreamrec never clips
    freeze_language: bool = True  # freeze the language part (False = ablation)
    eig_floor: float = 1e-6  # eigenvalue floor before whitening
    scale: float = 1.0  # multiplies raw language embeddings before the decomposition
    id_init: Literal["zeros", "normal"] = "zeros"  # AlphaFuse ID initialisation
    id_std: float = 0.0  # init std of trainable ID rows (0 = 1/sqrt(hidden) for sasrec id, else 1.0)
    num_blocks: int = 1  # SASRec blocks
    num_heads: int = 1  # SASRec heads
    dropout: float = 0.1  # SASRec dropout
    max_len: int = 10  # history window
    loss: Literal["ce", "infonce", "bce"] = "infonce"  # full-softmax CE, sampled InfoNCE or BCE
    negatives: int = 64  # InfoNCE negatives
    temperature: float = 0.07  # InfoNCE temperature (cosine)
    similarity: Literal["dot", "cosine"] = "cosine"  # sasrec training and ranking similarity (dreamrec: always dot)
    diffusion_steps: int = 2000  # dreamrec: T, the number of diffusion steps
    beta_schedule: Literal["linear", "cosine", "exponential"] = "linear"  # dreamrec: noise schedule (1e-4 .. 0.02)
    guidance: float = 5.0  # dreamrec: classifier-free guidance weight w
    p_uncond: float = 0.1  # dreamrec: probability of training with the null condition
    sampling_steps: int = 50  # dreamrec: strided DDIM steps at inference (saved in the artifact)
    eval_sampling_steps: int = 0  # dreamrec: DDIM steps for validation during training (0 = --sampling-steps)
    lr: float = 0.0  # Adam learning rate (0 = by backbone: 1e-3 sasrec, 1e-4 dreamrec)
    weight_decay: float = 0.0  # Adam weight decay
    batch_size: int = 256  # training sequences per step
    epochs: int = 100  # maximum epochs
    patience: int = 10  # epochs without validation NDCG@20 gain before stopping
    eval_every: int = 1  # validate every N epochs
    eval_batch_size: int = 1024  # histories per evaluation batch
    mask_history: bool = False  # evaluation: history items do not compete (paper: off)
    threads: int = 0  # torch intra-op threads (0 = torch default)

    def __post_init__(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise ValueError(f"protocol must be one of {PROTOCOLS}, got {self.protocol!r}")
        if self.item_embedding not in ITEM_EMBEDDINGS:
            raise ValueError(f"item_embedding must be one of {ITEM_EMBEDDINGS}, got {self.item_embedding!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.backbone == "dreamrec":
            self.dreamrec_config()  # validates the diffusion flags
            if not 0 <= self.eval_sampling_steps <= self.diffusion_steps:
                raise ValueError(
                    f"eval_sampling_steps must be in [0, diffusion_steps={self.diffusion_steps}], "
                    f"got {self.eval_sampling_steps}"
                )
        for name in ("epochs", "patience", "batch_size", "eval_every", "eval_batch_size", "max_len"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive, got {getattr(self, name)}")
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

    def dreamrec_config(self) -> DreamRecConfig:
        return DreamRecConfig(
            num_steps=self.diffusion_steps, beta_schedule=self.beta_schedule, guidance=self.guidance,
            p_uncond=self.p_uncond, sampling_steps=self.sampling_steps, sample_seed=self.seed,
        )

    def recommender_config(self, hidden_dim: int, d_n: int | None = None) -> RecommenderConfig:
        """The model config; `hidden_dim` and `d_n` come from the projection when there is one (d_l when
        clipping is off; d_n picked by the eigenvalue threshold for dreamrec)."""
        dreamrec = self.backbone == "dreamrec"
        return RecommenderConfig(
            item_embedding=self.item_embedding,
            backbone=self.backbone,
            sasrec=SASRecConfig(
                hidden_dim=hidden_dim, num_blocks=self.num_blocks, num_heads=self.num_heads,
                dropout=self.dropout, max_len=self.max_len,
            ),
            dreamrec=self.dreamrec_config() if dreamrec else DreamRecConfig(),
            loss=self.loss,
            negatives=self.negatives,
            temperature=self.temperature,
            similarity="dot" if dreamrec else self.similarity,
            freeze_language=self.freeze_language,
            id_init=self.id_init,
            id_std=self.id_std,
            d_n=self.d_n if d_n is None else d_n,
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


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
