"""The recommender config, the SASRec recommender, and `build_recommender` for every backbone.

Every backbone implements `model.base.Recommender`: `loss(inputs, targets)`, `user_vectors(histories)`,
`item_vectors()`, `encode_with_table(histories, table)`; training, evaluation and the service use only that.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Literal, get_args

import torch
from torch import Tensor
from torch.nn import functional as F

from model.base import Recommender
from model.dreamrec import DreamRec, DreamRecConfig
from model.item_embeddings import AlphaFuseEmbedding, IDEmbedding, IdInit, ItemEmbedding, LLMInitEmbedding
from model.sasrec import SASRec, SASRecConfig

__all__ = ["Recommender", "RecommenderConfig", "SequentialRecommender", "build_recommender"]

ItemEmbeddingKind = Literal["alphafuse", "id", "llminit", "whitened-text"]
Backbone = Literal["sasrec", "dreamrec"]
LossKind = Literal["ce", "sampled-softmax", "infonce", "bce"]
Similarity = Literal["dot", "cosine"]
ITEM_EMBEDDINGS: tuple[str, ...] = get_args(ItemEmbeddingKind)
BACKBONES: tuple[str, ...] = get_args(Backbone)
LOSSES: tuple[str, ...] = get_args(LossKind)


@dataclass(frozen=True)
class RecommenderConfig:
    item_embedding: ItemEmbeddingKind = "alphafuse"  # how item vectors are made (see item_embeddings.py)
    backbone: Backbone = "sasrec"  # sasrec (discriminative) or dreamrec (diffusion)
    sasrec: SASRecConfig = field(default_factory=SASRecConfig)  # also DreamRec's history encoder
    dreamrec: DreamRecConfig = field(default_factory=DreamRecConfig)  # used by backbone "dreamrec" only
    loss: LossKind = "ce"  # SASRec: full softmax CE, sampled softmax (logQ), sampled InfoNCE, or BCE
    negatives: int = 64  # InfoNCE negatives per positive
    softmax_negatives: int = 8192  # sampled softmax: negatives shared by a batch, drawn by popularity
    temperature: float = 0.07  # divides cosine logits; unused for dot similarity
    similarity: Similarity = "dot"  # training and ranking use the same one
    freeze_language: bool = True  # AlphaFuse: language coordinates frozen (False = ablation)
    id_init: IdInit = "zeros"  # AlphaFuse null-space ID initialisation
    # Init std of trainable ID rows; 0 = by backbone (see `id_init_std`).
    id_std: float = 0.0
    d_n: int = 64  # AlphaFuse null-space width hosting IDs

    def __post_init__(self) -> None:
        if self.item_embedding not in ITEM_EMBEDDINGS:
            raise ValueError(f"item_embedding must be one of {ITEM_EMBEDDINGS}, got {self.item_embedding!r}")
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {BACKBONES}, got {self.backbone!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if self.similarity not in ("dot", "cosine"):
            raise ValueError(f"similarity must be 'dot' or 'cosine', got {self.similarity!r}")
        if self.negatives <= 0 or self.softmax_negatives <= 0 or self.temperature <= 0:
            raise ValueError("negatives, softmax_negatives and temperature must be positive")
        if not (math.isfinite(self.id_std) and self.id_std >= 0.0):
            raise ValueError(f"id_std must be a finite number >= 0 (0 = by backbone), got {self.id_std!r}")
        if self.backbone == "dreamrec" and self.similarity != "dot":
            raise ValueError(f"dreamrec ranks by inner product: similarity must be 'dot', got {self.similarity!r}")

    def id_init_std(self, item_embedding: str) -> float:
        """The std that trainable ID rows start from.

        SASRec only compares directions through a softmax, so the usual 1/sqrt(D) row norm of ~1 suits it.
        DreamRec regresses x_0 = the target's row under N(0, I) noise, so the rows must live at the noise's
        scale, as in DreamRec's own code: from 1/sqrt(D) the targets sat near zero signal-to-noise and the
        MSE toward a trainable table shrank them to a point (Toys N@20 0.0004, chance level). Unit variance
        only slows that shrinkage; nothing in the plain objective stops it (benchmarks/RESULTS.md).
        AlphaFuse's optional normal init is the method's N(0, 1) at language scale 1; training passes the
        projection's language scale as `id_std` (TrainConfig.recommender_config), keeping IDs at Z's scale.
        """
        if self.id_std > 0.0:
            return self.id_std
        if item_embedding == "id" and self.backbone == "sasrec":
            return 1.0 / math.sqrt(self.sasrec.hidden_dim)
        return 1.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> RecommenderConfig:
        known = {f.name for f in fields(cls)}
        unknown = set(raw) - known
        if unknown:
            raise ValueError(f"unknown recommender config keys: {sorted(unknown)}")
        values = dict(raw)
        if isinstance(values.get("sasrec"), dict):
            values["sasrec"] = SASRecConfig(**values["sasrec"])
        if isinstance(values.get("dreamrec"), dict):
            values["dreamrec"] = DreamRecConfig(**values["dreamrec"])
        return cls(**values)


class SequentialRecommender(Recommender):
    """SASRec: the user vector is the causal transformer's state at the last real history item."""

    def __init__(self, cfg: RecommenderConfig, items: ItemEmbedding) -> None:
        super().__init__()
        if items.dim != cfg.sasrec.hidden_dim:
            raise ValueError(f"item dim {items.dim} != backbone hidden_dim {cfg.sasrec.hidden_dim}")
        self.cfg = cfg
        self.items = items
        self.backbone = SASRec(cfg.sasrec)
        # sampled softmax draws negatives from this (N,) distribution; training-only, never saved
        self.register_buffer("sampling_probs", torch.full((items.num_items,), 1.0 / items.num_items), persistent=False)

    def set_item_popularity(self, counts: Tensor) -> None:
        """Sampled softmax draws negatives in proportion to `counts + 1` (training interactions per item)."""
        if counts.shape != (self.num_items,):
            raise ValueError(f"popularity must have shape ({self.num_items},), got {tuple(counts.shape)}")
        w = counts.to(torch.float64) + 1.0
        self.sampling_probs = (w / w.sum()).to(torch.float32)

    def _states(self, histories: Tensor, table: Tensor) -> Tensor:
        histories = histories[:, -self.cfg.sasrec.max_len :]
        return self.backbone.last_state(F.embedding(histories, table), histories > 0)

    def _normalise(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.cfg.similarity == "cosine" else x

    def item_vectors(self) -> Tensor:
        """(N, D) vectors to rank by inner product; row i is item index i + 1."""
        return self._normalise(self.items()[1:])

    def encode_with_table(self, histories: Tensor, table: Tensor) -> Tensor:
        """User vectors against an arbitrary item table (N' + 1, D), e.g. one holding cold items."""
        return self._normalise(self._states(histories, table))

    def loss(self, inputs: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Next-item loss at every position with a target (> 0). inputs/targets: (B, L)."""
        table = self.items()  # (N + 1, D)
        inputs = inputs[:, -self.cfg.sasrec.max_len :]
        targets = targets[:, -self.cfg.sasrec.max_len :]
        # F.embedding, not table[idx]: its CPU backward is several times faster than index_put
        hidden = self.backbone(F.embedding(inputs, table), inputs > 0)  # (B, L, D)
        keep = targets > 0
        h = hidden[keep]  # (M, D)
        t = targets[keep]  # (M,)
        if self.cfg.similarity == "cosine":
            h, tab, scale = F.normalize(h, dim=-1), F.normalize(table, dim=-1), 1.0 / self.cfg.temperature
        else:
            tab, scale = table, 1.0
        if self.cfg.loss == "ce":
            logits = h @ tab[1:].T * scale  # (M, N)
            return F.cross_entropy(logits, t - 1)
        n = self.num_items
        if self.cfg.loss == "sampled-softmax":
            return _sampled_softmax(h, t, tab, scale, self.sampling_probs, self.cfg.softmax_negatives, generator)
        if self.cfg.loss == "infonce":
            neg = _sample_negatives(t, n, self.cfg.negatives, generator)  # (M, K)
            pos_logit = (h * F.embedding(t, tab)).sum(-1, keepdim=True)  # (M, 1)
            neg_logit = torch.einsum("md,mkd->mk", h, F.embedding(neg, tab))  # (M, K)
            logits = torch.cat([pos_logit, neg_logit], dim=1) * scale
            return F.cross_entropy(logits, torch.zeros_like(t))
        if self.cfg.loss == "bce":
            neg = _sample_negatives(t, n, 1, generator)[:, 0]
            pos_logit = (h * F.embedding(t, tab)).sum(-1) * scale
            neg_logit = (h * F.embedding(neg, tab)).sum(-1) * scale
            return F.softplus(-pos_logit).mean() + F.softplus(neg_logit).mean()
        raise ValueError(f"unknown loss {self.cfg.loss!r}")


def _sampled_softmax(
    h: Tensor, t: Tensor, tab: Tensor, scale: float, probs: Tensor, k: int, generator: torch.Generator | None
) -> Tensor:
    """Softmax over the target and `k` negatives shared by the batch, drawn with replacement from `probs`.

    Each negative's logit is corrected by `-log(k * q)` (the logQ correction; Bengio & Senecal 2008,
    Blanc & Rendle 2018), so its exp-sum estimates the partition function over the other items; the
    target's own logit is not a sample and stays as it is, and negatives that hit a row's target are
    masked out. The loss then tends to full softmax CE as k grows (tested).
    h: (M, D), t: (M,) 1-based targets, tab: (N + 1, D) with row 0 padding.
    """
    neg = torch.multinomial(probs, k, replacement=True, generator=generator) + 1  # (K,)
    pos_logit = (h * F.embedding(t, tab)).sum(-1, keepdim=True) * scale  # (M, 1)
    neg_logit = h @ F.embedding(neg, tab).T * scale - torch.log(probs[neg - 1] * k)  # (M, K)
    neg_logit = neg_logit.masked_fill(neg[None, :] == t[:, None], float("-inf"))
    logits = torch.cat([pos_logit, neg_logit], dim=1)
    return F.cross_entropy(logits, torch.zeros_like(t))


def _sample_negatives(targets: Tensor, num_items: int, k: int, generator: torch.Generator | None) -> Tensor:
    """Uniform negatives over {1..N} minus each row's target: draw from N - 1 values and skip the target."""
    if num_items < 2:
        raise ValueError("need at least 2 items to sample negatives")
    r = torch.randint(1, num_items, (targets.shape[0], k), generator=generator, device=targets.device)
    return r + (r >= targets[:, None]).long()


def build_item_embedding(cfg: RecommenderConfig, num_items: int, language: Tensor | None) -> ItemEmbedding:
    """Construct the item-embedding variant; `language` is Z (N, D) for the variants that use text."""
    if cfg.item_embedding == "id":
        return IDEmbedding(num_items, cfg.sasrec.hidden_dim, std=cfg.id_init_std("id"))
    if language is None:
        raise ValueError(f"item_embedding {cfg.item_embedding!r} needs language coordinates")
    if language.shape[0] != num_items:
        raise ValueError(f"language has {language.shape[0]} rows for {num_items} items")
    if cfg.item_embedding == "alphafuse":
        return AlphaFuseEmbedding(
            language, cfg.d_n, freeze_language=cfg.freeze_language, id_init=cfg.id_init,
            id_std=cfg.id_init_std("alphafuse"),
        )
    if cfg.item_embedding == "llminit":
        return LLMInitEmbedding(language)
    if cfg.item_embedding == "whitened-text":
        # iDreamRec: the whitened language table, frozen, no IDs (AlphaFuse with an empty null space)
        return AlphaFuseEmbedding(language, 0, freeze_language=True)
    raise ValueError(f"unknown item_embedding {cfg.item_embedding!r}")


def build_recommender(cfg: RecommenderConfig, num_items: int, language: Tensor | None) -> Recommender:
    items = build_item_embedding(cfg, num_items, language)
    if cfg.backbone == "sasrec":
        return SequentialRecommender(cfg, items)
    elif cfg.backbone == "dreamrec":
        return DreamRec(cfg, items)
    else:
        raise ValueError(f"unknown backbone {cfg.backbone!r}")
