"""The one recommender interface every backbone implements; training, evaluation and the service use only it.

The score of item i for a history is `user_vectors(h) . item_vectors()[i]`, the same inner product the
service asks FAISS for. Histories are LongTensors (B, L) of item indices in 1..N with 0 as padding (either
side). It lives in its own module so that backbones (model/recommender.py, model/dreamrec.py) can subclass it
while model/recommender.py builds them all.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from model.config import RecommenderConfig
from model.item_embeddings import ItemEmbedding


class Recommender(nn.Module):
    """Base class: an item-embedding table plus a backbone that turns histories into query vectors."""

    cfg: RecommenderConfig
    items: ItemEmbedding

    @property
    def num_items(self) -> int:
        return self.items.num_items

    def user_vectors(self, histories: Tensor, table: Tensor | None = None) -> Tensor:
        """(B, D) query vectors. `table` lets callers that already built the item table reuse it."""
        return self.encode_with_table(histories, self.items() if table is None else table)

    def encode_with_table(self, histories: Tensor, table: Tensor) -> Tensor:  # pragma: no cover - abstract
        """User vectors against an arbitrary item table (N' + 1, D), e.g. one holding cold items."""
        raise NotImplementedError

    def item_vectors(self) -> Tensor:  # pragma: no cover - abstract
        """(N, D) vectors to rank by inner product; row i is item index i + 1."""
        raise NotImplementedError

    def loss(
        self, inputs: Tensor, targets: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:  # pragma: no cover - abstract
        """Training loss at every position with a target (> 0). inputs/targets: (B, L) windows."""
        raise NotImplementedError
