"""Item-embedding variants that a backbone shares for input and scoring.

Every variant returns the full table `(N + 1, D)` from `forward()`; row 0 is the padding item and is an
exact, untrainable zero so padded positions contribute nothing anywhere.

Besides AlphaFuse and its ID / LLMInit / whitened-text comparisons, this file holds the paper's SASRec
baselines (the README's variant table): MoRec and WhitenRec (`AdapterEmbedding`), UniSRec (`UniSRecEmbedding`),
RLMRec-Con / -Gen (`RLMRecEmbedding`) and LLM-ESR (`LLMESREmbedding`). Each variant also owns its cold-start
rule (`fold_in`) and any auxiliary training objective (`aux_loss`), so the service and the trainer never
branch on variant names.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal, get_args

import torch
from torch import Tensor, nn
from torch.nn import functional as F

IdInit = Literal["zeros", "normal"]
# a cold item's ID part: zeros, the mean of the trained ID rows, or (AlphaFuse) the mean ID row of its
# COLD_NEIGHBOURS nearest trained items by their semantic-rich coordinates
ColdId = Literal["zeros", "mean", "neighbours"]
COLD_ID_RULES: tuple[ColdId, ...] = get_args(ColdId)
# k of the "neighbours" rule, chosen on Toys validation (benchmarks/RESULTS.md, "Cold-start items"): 5 beat
# 1, 2, 3 and 10 on validation NDCG@20 over all cases once a tenth of the catalogue is cold
COLD_NEIGHBOURS = 5
RLMRecMode = Literal["con", "gen"]
# (embedded histories (B, L, D), real (B, L) bool) -> backbone states (B, L, D); what `aux_loss` may encode with
Encode = Callable[[Tensor, Tensor], Tensor]

UNISREC_EXPERTS = 8  # UniSRec's n_exps
UNISREC_INIT_STD = 0.02  # UniSRec / RecBole initializer_range, for its experts and its ID embedding
# RLMRec's released settings for Amazon (encoder/config/modelconf/lightgcn_plus.yml, lightgcn_gene.yml)
RLMREC_CON_TEMPERATURE = 0.2  # kd_temperature
RLMREC_GEN_TEMPERATURE = 0.5  # re_temperature
RLMREC_MASK_RATIO = 0.15  # mask_ratio: share of the batch's history positions masked for reconstruction


class FoldInUnsupported(ValueError):
    """The variant has no rule that maps a new item's text to its vector (the message says why)."""


def _with_padding_row(table: Tensor) -> Tensor:
    return torch.cat([table.new_zeros(1, table.shape[1]), table], dim=0)  # (N + 1, D)


def _check_cold_id(cold_id: str) -> None:
    if cold_id not in COLD_ID_RULES:
        raise ValueError(f"cold_id must be one of {', '.join(COLD_ID_RULES)}, got {cold_id!r}")


def _nearest(query_unit: Tensor, trained_unit: Tensor, k: int, *, skip_self: bool = False) -> Tensor:
    """(C, k) indices of the trained rows nearest each unit query row by cosine, searched in blocks;
    `skip_self`: query i is trained row i and may not be its own neighbour."""
    step = max(1, 2**24 // len(trained_unit))  # a (step, N) similarity block stays near 64 MiB at any catalogue size
    blocks = []
    for i in range(0, len(query_unit), step):
        sims = query_unit[i : i + step] @ trained_unit.T
        if skip_self:
            sims[torch.arange(len(sims)), torch.arange(i, i + len(sims))] = -float("inf")
        blocks.append(sims.topk(k, dim=1).indices)
    return torch.cat(blocks) if blocks else query_unit.new_zeros(0, k, dtype=torch.long)


def neighbour_ids(
    semantic: Tensor, trained_semantic: Tensor, ids: Tensor, k: int = COLD_NEIGHBOURS, *, normalised: bool = False,
) -> Tensor:
    """(C, d_n) ID parts for new items: per item, the mean ID row of the `k` trained items whose semantic-rich
    coordinates (the first d_s of Z, frozen) are nearest by cosine to the new item's (C, d_s).

    Only the d_s coordinates are searched, and they are a new item's fused vector unchanged, so v0 can be
    recomputed from the served vector alone (another replica, a score explanation) without its text.
    `normalised`: `trained_semantic` rows already have unit norm (a cached copy; see `FusedSplit`)."""
    if semantic.shape[1] == 0 or ids.shape[1] == 0 or len(ids) == 0:
        return ids.new_zeros(len(semantic), ids.shape[1])
    trained = trained_semantic if normalised else F.normalize(trained_semantic.to(torch.float32), dim=-1)
    query = F.normalize(semantic.to(torch.float32), dim=-1)
    return ids.to(torch.float32)[_nearest(query, trained, min(k, len(ids)))].mean(1)


def _frozen(language: Tensor) -> Tensor:
    return language.detach().to(torch.float32).clone()


@dataclass(frozen=True)
class FusedSplit:
    """The two parts of a table whose rows are `x_i = Z_i + [0_{d_s}, V_i]`: frozen language coordinates
    `Z` (N, D) and ID rows `V` (N, d_n) in the last d_n coordinates, plus the ID part `v0` (d_n,) that
    `fold_in` gives a new item. Views of the module's own tensors: nothing is copied."""

    language: Tensor  # (N, D)
    ids: Tensor  # (N, d_n)
    d_s: int
    cold_id: ColdId
    semantic_unit: Tensor  # (N, d_s) language[:, :d_s] at unit norm (the owner's cached copy)

    def cold_ids_of(self, rows: Tensor) -> Tensor:
        """(C, d_n) v0 of cold items from their fused vectors (C, D): the rule needs only the first d_s
        coordinates, which fold-in leaves as z gave them."""
        n, d_n = len(rows), self.ids.shape[1]
        if self.cold_id == "neighbours":
            return neighbour_ids(rows[:, : self.d_s], self.semantic_unit, self.ids, normalised=True)
        if self.cold_id == "mean" and d_n > 0 and len(self.ids):
            return self.ids.to(torch.float32).mean(0).expand(n, d_n)
        return rows.new_zeros(n, d_n)


class ItemEmbedding(nn.Module):
    """Base class: `forward() -> (N + 1, D)` item table, row 0 = padding.

    `num_views` > 1 means each row is that many equal blocks that the backbone encodes separately with the
    same weights and concatenates (LLM-ESR's semantic and collaborative views), so `D = num_views * hidden`.
    """

    num_items: int
    dim: int
    num_views: int = 1
    # Why new items cannot be folded in, as a predicate on "this model (item_embedding ...)"; None: they can.
    fold_in_unavailable: str | None = (
        "has no language projection: new items cannot be folded in; retrain with item_embedding 'alphafuse'"
    )
    # What a folded-in item lacks compared with a trained one, for the service's startup log; None: nothing.
    fold_in_note: str | None = None

    def forward(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def fold_in(self, language: Tensor, cold_id: ColdId = "zeros") -> Tensor:
        """(n, D) input-table rows for new items from their language rows (n, k) = `projection.apply(e)` as
        float32, computed as `forward()` computes a trained item's row from its own language row."""
        raise FoldInUnsupported(f"this model {self.fold_in_unavailable}")

    def aux_loss(
        self, table: Tensor, inputs: Tensor, targets: Tensor, encode: Encode, generator: torch.Generator | None
    ) -> Tensor | None:
        """An auxiliary training loss the recommender adds (weighted) to its own; None: there is none.

        `table` is this step's `forward()`, `inputs`/`targets` the (B, L) windows, `encode` the backbone."""
        return None

    def split(self, cold_id: ColdId = "zeros") -> FusedSplit | None:
        """How every row splits into a frozen language part and a learned ID part, or None when it does
        not (the ID-only, adapter and mixture variants): what score explanations and text search read."""
        return None


class AlphaFuseEmbedding(ItemEmbedding):
    """`x_i = Z_i + [0_{d_s}, V_i]` (README "How it works", step 4): frozen language coordinates, IDs in
    the null space.

    `language` is `Z = (E - mu) P` (N, d_s + d_n). With `freeze_language=False` (the "without freezing"
    ablation) Z becomes a parameter initialised from the same values.
    """

    def __init__(
        self, language: Tensor, d_n: int, *, freeze_language: bool = True, id_init: IdInit = "zeros",
        id_std: float = 1.0, id_dropout: float = 0.0, masked_text: bool = False,
    ) -> None:
        super().__init__()
        n, k = language.shape
        if not 0.0 <= id_dropout < 1.0:
            raise ValueError(f"id_dropout must be in [0, 1), got {id_dropout}")
        self.id_dropout = id_dropout
        if not 0 <= d_n <= k:
            raise ValueError(f"d_n must be in [0, {k}], got {d_n}")
        self.num_items, self.dim, self.d_n = n, k, d_n
        self.d_s = k - d_n
        lang = language.detach().to(torch.float32).clone()
        if freeze_language:
            self.register_buffer("language", lang)
        else:
            self.language = nn.Parameter(lang)
        ids = torch.zeros(n, d_n)
        if id_init == "normal":
            nn.init.normal_(ids, std=id_std)
        elif id_init != "zeros":
            raise ValueError(f"id_init must be 'zeros' or 'normal', got {id_init!r}")
        self.ids = nn.Parameter(ids)  # (N, d_n)
        self.masked_text = masked_text
        if masked_text:
            # RLMRec-Gen's reconstruction as a regulariser: from a masked position's state, pick out the
            # item's semantic-rich coordinates; training-only, so serving and fold-in never read these
            mid = (k + self.d_s) // 2
            self.text_head = nn.Sequential(nn.Linear(k, mid), nn.LeakyReLU(), nn.Linear(mid, self.d_s))
            for m in self.text_head:
                if isinstance(m, nn.Linear):
                    nn.init.xavier_uniform_(m.weight)
            self.mask_token = nn.Parameter(torch.zeros(k))

    fold_in_unavailable = None

    def aux_loss(
        self, table: Tensor, inputs: Tensor, targets: Tensor, encode: Encode, generator: torch.Generator | None
    ) -> Tensor | None:
        if not self.masked_text or self.d_s == 0:
            return None
        text = self.language[:, : self.d_s].detach()
        return _masked_reconstruction(self.text_head, self.mask_token, text, table, inputs, encode, generator)

    def forward(self) -> Tensor:
        ids: Tensor = self.ids
        if self.training and self.id_dropout > 0 and self.d_n > 0 and self.num_items > COLD_NEIGHBOURS:
            # DropoutNet-style: a share of rows get the ID part a folded-in item gets (`neighbours`), so
            # the model also learns to rank items whose ID coordinates are only that guess
            drop = torch.nonzero(torch.rand(self.num_items, device=ids.device) < self.id_dropout).squeeze(1)
            ids = ids.clone()
            ids[drop] = self.ids[self._training_neighbours()[drop]].mean(1)
        table = self.language + nn.functional.pad(ids, (self.d_s, 0))  # (N, D)
        return _with_padding_row(table)

    def _training_neighbours(self) -> Tensor:
        """(N, COLD_NEIGHBOURS) indices of each item's nearest other items by cosine over the semantic-rich
        coordinates: `neighbour_ids` with the item itself left out, as a new item is not among the trained
        ones. Kept per version of the language rows (as `_semantic_unit`) and not saved: artifacts do not change."""
        unit = self._semantic_unit()
        cached = getattr(self, "_neighbour_cache", None)
        if cached is None or cached[0] is not unit:
            cached = self._neighbour_cache = (unit, _nearest(unit, unit, COLD_NEIGHBOURS, skip_self=True))
        return cached[1]

    def fold_in(self, language: Tensor, cold_id: ColdId = "zeros") -> Tensor:
        """`x = z + [0_{d_s}, v0]` (README "How it works"): v0 = zeros, the mean trained ID row, or the mean
        ID row of the new item's nearest trained items (`neighbour_ids`)."""
        _check_cold_id(cold_id)
        if cold_id == "zeros" or self.d_n == 0:
            return language
        # the same float32 sum as forward(): language + pad(ids)
        return language + F.pad(self.split(cold_id).cold_ids_of(language), (self.d_s, 0))

    def split(self, cold_id: ColdId = "zeros") -> FusedSplit:
        _check_cold_id(cold_id)
        return FusedSplit(self.language.detach(), self.ids.detach(), self.d_s, cold_id, self._semantic_unit())

    def _semantic_unit(self) -> Tensor:
        """language[:, :d_s] at unit norm, computed once per version of the language rows: a service folds
        items in one request at a time, and normalising a 10^6-row catalogue per request would dominate."""
        lang = self.language.detach()
        key = (lang.data_ptr(), lang._version)
        cached = getattr(self, "_unit_cache", None)
        if cached is None or cached[0] != key:
            cached = (key, F.normalize(lang[:, : self.d_s].to(torch.float32), dim=-1))
            self._unit_cache = cached
        return cached[1]


class IDEmbedding(ItemEmbedding):
    """Plain trainable ID table (SASRec and DreamRec as published)."""

    def __init__(self, num_items: int, dim: int, std: float | None = None) -> None:
        """`std` of the N(0, std^2) init; None = 1/sqrt(dim), rows of norm about 1."""
        super().__init__()
        self.num_items, self.dim = num_items, dim
        self.weight = nn.Parameter(torch.empty(num_items, dim))
        nn.init.normal_(self.weight, std=1.0 / math.sqrt(dim) if std is None else std)

    def forward(self) -> Tensor:
        return _with_padding_row(self.weight)


class LLMInitEmbedding(ItemEmbedding):
    """ID table initialised from the whitened PCA of the language embeddings, then fully trainable."""

    fold_in_unavailable = None
    fold_in_note = "is not alphafuse: cold items get their language coordinates only"

    def __init__(self, language: Tensor) -> None:
        super().__init__()
        self.num_items, self.dim = language.shape
        self.weight = nn.Parameter(language.detach().to(torch.float32).clone())

    def forward(self) -> Tensor:
        return _with_padding_row(self.weight)

    def fold_in(self, language: Tensor, cold_id: ColdId = "zeros") -> Tensor:
        """The whitened-PCA coordinates a trained row started from; nothing stands for what training added."""
        _check_cold_id(cold_id)
        return language


class AdapterEmbedding(ItemEmbedding):
    """MoRec / WhitenRec: `x_i = GELU(W l_i + b)`, a trainable adapter over frozen language rows `l_i`.

    MoRec reads the encoder output E itself, WhitenRec E whitened in all d_l directions (no clipping); the
    difference lives in the stored projection that makes `language` (N, d_l), not here. The language rows
    are a buffer, never trained: MoRec's best runs fine-tune the text encoder end to end, which this
    project's frozen-encoder setting (every baseline here reads the same frozen embeddings) leaves out.
    """

    fold_in_unavailable = None
    language: Tensor

    def __init__(self, language: Tensor, dim: int) -> None:
        super().__init__()
        self.num_items, d_l = language.shape
        self.dim = dim
        self.register_buffer("language", _frozen(language))  # (N, d_l)
        self.adapter = nn.Linear(d_l, dim)

    def encode_text(self, language: Tensor) -> Tensor:
        """(n, d_l) language rows -> (n, D) item vectors."""
        return F.gelu(self.adapter(language))

    def forward(self) -> Tensor:
        return _with_padding_row(self.encode_text(self.language))

    def fold_in(self, language: Tensor, cold_id: ColdId = "zeros") -> Tensor:
        """The adapter of the new text: a cold item gets exactly what a trained one gets (no ID part)."""
        _check_cold_id(cold_id)
        return self.encode_text(language)


class UniSRecEmbedding(ItemEmbedding):
    """UniSRec (Hou et al., KDD 2022) fine-tuned in its inductive + transductive form:
    `x_i = sum_k g_k(e_i) (e_i - b_k) W_k + v_i`, over frozen language embeddings e_i (the encoder output).

    K = 8 parametric-whitening experts (`b_k` (d_l,), `W_k` (d_l, D)), mixed by the softmax gate
    `g(e) = softmax(e W_g)` (W_g (d_l, K), no bias, zero-initialised as in UniSRec's code: the experts start
    equally weighted), plus a trainable ID embedding `v_i`. Experts and IDs start from N(0, 0.02^2), UniSRec's
    own initialisation. What is left out: the pre-training stage on other domains (every weight here is
    trained on the target data only, from scratch), the noisy gating and the dropout on e that UniSRec applies
    in training, and its cosine / temperature loss (every variant here trains with the same recipe).
    A cold item has no ID row: `fold_in` gives it `v = 0`, or the mean trained ID row with cold_id "mean".
    """

    fold_in_unavailable = None
    fold_in_note = (
        "folds cold items in through its MoE adaptor; their ID embedding (UniSRec's transductive part) is "
        "zeros, or the mean trained ID row with cold_id 'mean'"
    )

    language: Tensor

    def __init__(
        self, language: Tensor, dim: int, *, num_experts: int = UNISREC_EXPERTS, id_std: float = UNISREC_INIT_STD
    ) -> None:
        super().__init__()
        self.num_items, d_l = language.shape
        self.dim, self.num_experts = dim, num_experts
        self.register_buffer("language", _frozen(language))  # (N, d_l)
        self.expert_bias = nn.Parameter(torch.zeros(num_experts, d_l))  # b_k
        self.expert_weight = nn.Parameter(torch.empty(num_experts, d_l, dim))  # W_k
        nn.init.normal_(self.expert_weight, std=UNISREC_INIT_STD)
        self.gate = nn.Parameter(torch.zeros(d_l, num_experts))  # W_g
        self.ids = nn.Parameter(torch.empty(self.num_items, dim))  # v
        nn.init.normal_(self.ids, std=id_std)

    def encode_text(self, language: Tensor) -> Tensor:
        """(n, d_l) language rows -> (n, D) the MoE adaptor's vectors, without the ID part."""
        gates = torch.softmax(language @ self.gate, dim=-1)  # (n, K)
        # (e - b_k) W_k = e W_k - b_k W_k: never materialises the (n, K, d_l) differences
        experts = torch.einsum("nd,kdh->nkh", language, self.expert_weight)  # (n, K, D)
        experts = experts - torch.einsum("kd,kdh->kh", self.expert_bias, self.expert_weight)
        return (gates.unsqueeze(-1) * experts).sum(dim=1)  # (n, D)

    def forward(self) -> Tensor:
        return _with_padding_row(self.encode_text(self.language) + self.ids)

    def fold_in(self, language: Tensor, cold_id: ColdId = "zeros") -> Tensor:
        _check_cold_id(cold_id)
        x = self.encode_text(language)
        return x + self.ids.detach().mean(0) if cold_id == "mean" else x


class LLMESREmbedding(ItemEmbedding):
    """LLM-ESR's dual view (Liu et al., NeurIPS 2024): row i is `[sem_i, col_i]` (D = 2 * hidden).

    Semantic view: `sem_i = W e_i + b` over the frozen language embedding e_i (the encoder output). Collaborative
    view: a trainable ID table `col`, initialised from the whitened PCA of E to `hidden` dimensions (LLM-ESR's
    dimension-reduced LLM embeddings) when training passes `collaborative`; otherwise N(0, std^2), which is what
    an artifact's state dict then overwrites. The recommender encodes each view's history with the same
    SASRec (`num_views = 2`; LLM-ESR shares its encoder too) and concatenates, so a score is
    `h_sem . sem_i + h_col . col_i`. Left out: the cross-attention between the views and the retrieval-augmented
    self-distillation from similar users (both in LLM-ESR's released runs), and its two-layer linear adapter
    (the composition of two linear maps is one linear map; one layer is used). A cold item gets its semantic view
    from the adapter and a zero collaborative view (the mean trained row with cold_id "mean").
    """

    num_views = 2
    fold_in_unavailable = None
    fold_in_note = (
        "folds cold items in through its semantic view; their collaborative view is zeros, or the mean "
        "trained row with cold_id 'mean'"
    )

    language: Tensor

    def __init__(self, language: Tensor, dim: int, collaborative: Tensor | None = None, *, std: float = 1.0) -> None:
        super().__init__()
        self.num_items, d_l = language.shape
        self.view_dim = dim
        self.dim = 2 * dim
        self.register_buffer("language", _frozen(language))  # (N, d_l)
        self.adapter = nn.Linear(d_l, dim)
        if collaborative is None:
            ids = torch.empty(self.num_items, dim)
            nn.init.normal_(ids, std=std)
        else:
            if collaborative.shape != (self.num_items, dim):
                raise ValueError(
                    f"collaborative init has shape {tuple(collaborative.shape)}, expected ({self.num_items}, {dim})"
                )
            ids = _frozen(collaborative)
        self.ids = nn.Parameter(ids)  # (N, hidden) the collaborative view

    def forward(self) -> Tensor:
        return _with_padding_row(torch.cat([self.adapter(self.language), self.ids], dim=1))  # (N + 1, 2 hidden)

    def fold_in(self, language: Tensor, cold_id: ColdId = "zeros") -> Tensor:
        _check_cold_id(cold_id)
        sem = self.adapter(language)  # (n, hidden)
        col = self.ids.detach().mean(0).expand_as(sem) if cold_id == "mean" else sem.new_zeros(sem.shape)
        return torch.cat([sem, col], dim=1)


def _info_nce(anchors: Tensor, positives: Tensor, temperature: float, same: Tensor | None = None) -> Tensor:
    """RLMRec's contrastive term: cosine logits of each anchor against every positive, / temperature, with its
    own positive (the diagonal) as the target. `same` (M, M) marks off-diagonal pairs that are the same item,
    which must not count as negatives."""
    logits = F.normalize(anchors, dim=-1) @ F.normalize(positives, dim=-1).T / temperature  # (M, M)
    if same is not None:
        logits = logits.masked_fill(same, float("-inf"))
    return F.cross_entropy(logits, torch.arange(len(logits), device=logits.device))


def _masked_reconstruction(
    head: nn.Module, mask_token: Tensor, text: Tensor, table: Tensor, inputs: Tensor, encode: Encode,
    generator: torch.Generator | None,
) -> Tensor | None:
    """RLMRec-Gen's reconstruction term: RLMREC_MASK_RATIO of the real history positions are replaced by
    `mask_token`, the histories are re-encoded, and `head` of each masked position's state must pick out
    that item's `text` row (N, d) among the other masked items' (InfoNCE, RLMREC_GEN_TEMPERATURE)."""
    real = inputs > 0
    positions = real.flatten().nonzero().squeeze(1)  # (R,) flat indices of real history positions
    if len(positions) == 0:
        return None
    k = max(1, int(len(positions) * RLMREC_MASK_RATIO))  # at least one, as RLMRec's NodeMask
    draw = generator.device if generator is not None else positions.device
    chosen = positions[torch.randperm(len(positions), generator=generator, device=draw)[:k].to(positions.device)]
    masked = torch.zeros(real.numel(), dtype=torch.bool, device=real.device)
    masked[chosen] = True
    masked = masked.view_as(real)  # (B, L)
    seq = F.embedding(inputs, table)  # (B, L, D)
    seq = torch.where(masked.unsqueeze(-1), mask_token.expand_as(seq), seq)
    hidden = encode(seq, real)  # (B, L, D)
    items = inputs[masked]  # (k,)
    same = (items[:, None] == items[None, :]) & ~torch.eye(k, dtype=torch.bool, device=items.device)
    return _info_nce(head(hidden[masked]), text[items - 1], RLMREC_GEN_TEMPERATURE, same)


class RLMRecEmbedding(IDEmbedding):
    """RLMRec (Ren et al., WWW 2024) on SASRec: a plain ID table, plus an alignment of it with the frozen
    language embeddings E (the encoder output) as an auxiliary loss; the item vectors are the ID rows only.

    - "con" (RLMRec-Con): InfoNCE between each batch item's ID row and `sigma_down(e_i)`, an MLP taking its
      language embedding to the ID width (d_l -> (d_l + D) / 2 -> LeakyReLU -> D, as RLMRec's code), the
      other items of the batch as negatives, temperature 0.2.
    - "gen" (RLMRec-Gen): 15% of the batch's history positions are replaced by a learned mask token, the
      histories are re-encoded by the backbone, and `sigma_up(h_j)` (D -> (d_l + D) / 2 -> d_l) of each masked
      position's state must pick out that item's language embedding among the other masked ones (RLMRec's
      reconstruction InfoNCE, temperature 0.5).

    Adapted to a sequential model: RLMRec aligns the representations a graph encoder gives users and items;
    here there is no user text, so only items are aligned (Con) and a masked item is reconstructed from its
    history, which is what the causal encoder sees of its context (Gen). RLMRec-Gen also feeds the masked graph
    to its recommendation loss; here the recommendation loss is the plain one and the masked pass is separate.
    Temperatures and mask ratio are RLMRec's released values for Amazon. The text never reaches a served item
    vector, so nothing maps a new item's text to one: `fold_in` is unavailable.
    """

    fold_in_unavailable = (
        "cannot fold in new items: its item vectors are ID rows only; the text shaped them during training "
        "through the alignment loss, but nothing maps a new item's text to an ID row. Serve a text-based "
        "variant (alphafuse, llminit, whitened-text, morec, whitenrec, unisrec, llmesr) to add cold items"
    )

    language: Tensor

    def __init__(self, language: Tensor, dim: int, mode: RLMRecMode, std: float | None = None) -> None:
        num_items, d_l = language.shape
        super().__init__(num_items, dim, std=std)
        if mode not in ("con", "gen"):
            raise ValueError(f"RLMRec mode must be 'con' or 'gen', got {mode!r}")
        self.mode: RLMRecMode = mode
        # training-only: not saved, so an artifact holds just what serving needs
        self.register_buffer("language", _frozen(language), persistent=False)  # (N, d_l)
        mid = (d_l + dim) // 2
        if mode == "con":
            self.mlp = nn.Sequential(nn.Linear(d_l, mid), nn.LeakyReLU(), nn.Linear(mid, dim))  # sigma_down
        else:
            self.mlp = nn.Sequential(nn.Linear(dim, mid), nn.LeakyReLU(), nn.Linear(mid, d_l))  # sigma_up
            self.mask_token = nn.Parameter(torch.zeros(dim))  # RLMRec's NodeMask starts it at zero
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)  # as RLMRec's _init_weight

    def aux_loss(
        self, table: Tensor, inputs: Tensor, targets: Tensor, encode: Encode, generator: torch.Generator | None
    ) -> Tensor | None:
        if self.mode == "con":
            items = torch.unique(torch.cat([inputs[inputs > 0], targets[targets > 0]]))  # (U,) 1-based
            return _info_nce(F.embedding(items, table), self.mlp(self.language[items - 1]), RLMREC_CON_TEMPERATURE)
        return _masked_reconstruction(self.mlp, self.mask_token, self.language, table, inputs, encode, generator)
