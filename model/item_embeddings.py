"""Item-embedding variants that a backbone shares for input and scoring.

Every variant returns the full table `(N + 1, D)` from `forward()`; row 0 is the padding item and is an
exact, untrainable zero so padded positions contribute nothing anywhere.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import Tensor, nn

IdInit = Literal["zeros", "normal"]


def _with_padding_row(table: Tensor) -> Tensor:
    return torch.cat([table.new_zeros(1, table.shape[1]), table], dim=0)  # (N + 1, D)


class ItemEmbedding(nn.Module):
    """Base class: `forward() -> (N + 1, D)` item table, row 0 = padding."""

    num_items: int
    dim: int

    def forward(self) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class AlphaFuseEmbedding(ItemEmbedding):
    """`x_i = Z_i + [0_{d_s}, V_i]` (METHOD.md 1.7): frozen language coordinates, IDs in the null space.

    `language` is `Z = (E - mu) P` (N, d_s + d_n). With `freeze_language=False` (the "without freezing"
    ablation) Z becomes a parameter initialised from the same values.
    """

    def __init__(
        self, language: Tensor, d_n: int, *, freeze_language: bool = True, id_init: IdInit = "zeros",
        id_std: float = 1.0,
    ) -> None:
        super().__init__()
        n, k = language.shape
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

    def forward(self) -> Tensor:
        table = self.language + nn.functional.pad(self.ids, (self.d_s, 0))  # (N, D)
        return _with_padding_row(table)


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

    def __init__(self, language: Tensor) -> None:
        super().__init__()
        self.num_items, self.dim = language.shape
        self.weight = nn.Parameter(language.detach().to(torch.float32).clone())

    def forward(self) -> Tensor:
        return _with_padding_row(self.weight)
