"""The SASRec recommender and `build_recommender` for every backbone (their config: model/config.py).

Every backbone implements `model.base.Recommender`: `loss(inputs, targets)`, `user_vectors(histories)`,
`item_vectors()`, `encode_with_table(histories, table)`; training, evaluation and the service use only that.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from model.base import Recommender
from model.config import RecommenderConfig
from model.dreamrec import DreamRec
from model.item_embeddings import (
    AdapterEmbedding,
    AlphaFuseEmbedding,
    IDEmbedding,
    ItemEmbedding,
    LLMESREmbedding,
    LLMInitEmbedding,
    RLMRecEmbedding,
    UniSRecEmbedding,
)
from model.sasrec import SASRec

__all__ = ["Recommender", "RecommenderConfig", "SequentialRecommender", "build_recommender"]


class SequentialRecommender(Recommender):
    """SASRec: the user vector is the causal transformer's state at the last real history item.

    An item table of `V = items.num_views` views (LLM-ESR: 2) has rows of V * hidden_dim: each view's
    history goes through the same transformer and the states are concatenated, so user and item vectors are
    V * hidden_dim wide and a score is the sum of the views' inner products.
    """

    def __init__(self, cfg: RecommenderConfig, items: ItemEmbedding) -> None:
        super().__init__()
        if items.dim != items.num_views * cfg.sasrec.hidden_dim:
            raise ValueError(
                f"item dim {items.dim} != {items.num_views} view(s) x backbone hidden_dim {cfg.sasrec.hidden_dim}"
            )
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

    def _split_views(self, seq: Tensor) -> Tensor:
        """(B, L, V D) -> (V B, L, D): the views stacked along the batch, view 0 first."""
        b, length, _ = seq.shape
        v = self.items.num_views
        return seq.reshape(b, length, v, -1).permute(2, 0, 1, 3).reshape(v * b, length, -1)

    def _hidden(self, seq: Tensor, real: Tensor) -> Tensor:
        """Backbone states (B, L, V D) of embedded histories (B, L, V D), each view encoded by the same weights."""
        v = self.items.num_views
        if v == 1:
            return self.backbone(seq, real)
        b, length, _ = seq.shape
        hidden = self.backbone(self._split_views(seq), real.repeat(v, 1))  # (V B, L, D)
        return hidden.reshape(v, b, length, -1).permute(1, 2, 0, 3).reshape(b, length, -1)

    def _states(self, histories: Tensor, table: Tensor) -> Tensor:
        histories = histories[:, -self.cfg.sasrec.max_len :]
        seq, real = F.embedding(histories, table), histories > 0
        v = self.items.num_views
        if v == 1:
            return self.backbone.last_state(seq, real)
        states = self.backbone.last_state(self._split_views(seq), real.repeat(v, 1))  # (V B, D)
        return states.reshape(v, len(histories), -1).permute(1, 0, 2).reshape(len(histories), -1)  # (B, V D)

    def _normalise(self, x: Tensor) -> Tensor:
        return F.normalize(x, dim=-1) if self.cfg.similarity == "cosine" else x

    def item_vectors(self) -> Tensor:
        """(N, D) vectors to rank by inner product; row i is item index i + 1."""
        return self._normalise(self.items()[1:])

    def encode_with_table(self, histories: Tensor, table: Tensor) -> Tensor:
        """User vectors against an arbitrary item table (N' + 1, D), e.g. one holding cold items."""
        return self._normalise(self._states(histories, table))

    def loss(self, inputs: Tensor, targets: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Next-item loss at every position with a target (> 0), plus the item embedding's auxiliary loss
        (RLMRec's alignment) times `align_weight` when it has one. inputs/targets: (B, L)."""
        table = self.items()  # (N + 1, D)
        inputs = inputs[:, -self.cfg.sasrec.max_len :]
        targets = targets[:, -self.cfg.sasrec.max_len :]
        loss = self._next_item_loss(table, inputs, targets, generator)
        aux = self.items.aux_loss(table, inputs, targets, self._hidden, generator)
        return loss if aux is None else loss + self.cfg.align_weight * aux

    def _next_item_loss(
        self, table: Tensor, inputs: Tensor, targets: Tensor, generator: torch.Generator | None
    ) -> Tensor:
        # F.embedding, not table[idx]: its CPU backward is several times faster than index_put
        hidden = self._hidden(F.embedding(inputs, table), inputs > 0)  # (B, L, D)
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


def build_item_embedding(
    cfg: RecommenderConfig, num_items: int, language: Tensor | None, collaborative: Tensor | None = None
) -> ItemEmbedding:
    """Construct the item-embedding variant. `language` is the projection's output for the variants that use
    text: Z (N, hidden) for alphafuse / llminit / whitened-text, the encoder output E (N, d_l) for morec,
    unisrec, llmesr and rlmrec-*, whitened E (N, d_l) for whitenrec. `collaborative` (N, hidden) initialises
    llmesr's collaborative view (training passes the whitened PCA of E; None when loading an artifact)."""
    kind, hidden = cfg.item_embedding, cfg.sasrec.hidden_dim
    if collaborative is not None and kind != "llmesr":
        raise ValueError(f"a collaborative-view init is for item_embedding 'llmesr', not {kind!r}")
    if kind == "id":
        return IDEmbedding(num_items, hidden, std=cfg.id_init_std("id"))
    if language is None:
        raise ValueError(f"item_embedding {cfg.item_embedding!r} needs language coordinates")
    if language.shape[0] != num_items:
        raise ValueError(f"language has {language.shape[0]} rows for {num_items} items")
    if kind in ("morec", "whitenrec"):
        return AdapterEmbedding(language, hidden)
    if kind == "unisrec":
        return UniSRecEmbedding(language, hidden, id_std=cfg.id_init_std(kind))
    if kind in ("rlmrec-con", "rlmrec-gen"):
        return RLMRecEmbedding(language, hidden, "con" if kind == "rlmrec-con" else "gen", std=cfg.id_init_std(kind))
    if kind == "llmesr":
        return LLMESREmbedding(language, hidden, collaborative, std=cfg.id_init_std(kind))
    if cfg.item_embedding == "alphafuse":
        return AlphaFuseEmbedding(
            language, cfg.d_n, freeze_language=cfg.freeze_language, id_init=cfg.id_init,
            id_std=cfg.id_init_std("alphafuse"), id_dropout=cfg.id_dropout,
            masked_text=cfg.masked_text,
        )
    if cfg.item_embedding == "llminit":
        return LLMInitEmbedding(language)
    if cfg.item_embedding == "whitened-text":
        # iDreamRec: the whitened language table, frozen, no IDs (AlphaFuse with an empty null space)
        return AlphaFuseEmbedding(language, 0, freeze_language=True)
    raise ValueError(f"unknown item_embedding {cfg.item_embedding!r}")


def build_recommender(
    cfg: RecommenderConfig, num_items: int, language: Tensor | None, collaborative: Tensor | None = None
) -> Recommender:
    items = build_item_embedding(cfg, num_items, language, collaborative)
    if cfg.backbone == "sasrec":
        return SequentialRecommender(cfg, items)
    elif cfg.backbone == "dreamrec":
        return DreamRec(cfg, items)
    else:
        raise ValueError(f"unknown backbone {cfg.backbone!r}")
