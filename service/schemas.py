"""Request and response bodies of the HTTP API, named by role. Unknown fields are rejected (a typo in
an option must not silently fall back to its default)."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, Tag

_SURROGATE = re.compile("[\ud800-\udfff]")


def _printable_id(value: str) -> str:
    # an id with a control character (say "\n") could be created but never addressed in a URL path again
    if not value.isprintable():
        raise ValueError("item ids must be printable text (no control characters, line breaks or lone surrogates)")
    return value


def _valid_unicode(value: str) -> str:
    # JSON can spell lone surrogates ("\ud800"); no encoder, database or response can carry them
    if _SURROGATE.search(value):
        raise ValueError("text must be valid Unicode (it contains a lone surrogate)")
    return value


ItemId = Annotated[str, Field(min_length=1, max_length=512), AfterValidator(_printable_id)]
Text = Annotated[str, AfterValidator(_valid_unicode)]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]

MAX_HISTORY = 1000  # ids accepted in one history (only the model's window is used)
MAX_FILTER_IDS = 10_000  # ids accepted in one allow / deny list
MAX_EMBEDDING_DIM = 16_384  # floats in one precomputed embedding (the model's encoder dim is checked later)
MAX_ITEMS_HARD = 10_000  # parse-time cap; the `max_items_per_request` setting is the real limit


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ItemFields(_Strict):
    """An item described by its text (what `item_text` reads), or by a precomputed `embedding`."""

    title: Text | None = None
    year: int | Text | None = None
    categories: list[Text] | None = None
    genres: list[Text] | None = None
    brand: Text | None = None
    description: Text | list[Text] | None = None
    embedding: list[FiniteFloat] | None = Field(
        default=None, max_length=MAX_EMBEDDING_DIM,
        description="the raw output of the model's text encoder for this item; used instead of encoding the "
        "text (required when the model was trained on precomputed embeddings)",
    )

    def record(self) -> dict[str, Any]:
        """The text fields that were given (what `item_text` reads and GET /items returns)."""
        return self.model_dump(exclude={"item_id", "embedding"}, exclude_none=True)


class HistoryText(ItemFields):
    """A history entry for an item the catalogue does not have: folded in from its text for this request
    only (exactly as POST /items would fold it in), used as context, never stored or recommended."""


# a history entry is an id or an object; choosing the branch by the input's type keeps a bad entry's error
# to the branch it meant (the tags are dropped from error locations: `service.guard`)
ID_TAG, TEXT_TAG = "item id", "item text"
UNION_TAGS = frozenset({ID_TAG, TEXT_TAG})


def _entry_kind(value: Any) -> str:
    return TEXT_TAG if isinstance(value, dict | HistoryText) else ID_TAG


HistoryEntry = Annotated[
    Annotated[ItemId, Tag(ID_TAG)] | Annotated[HistoryText, Tag(TEXT_TAG)], Discriminator(_entry_kind)
]


class RecommendRequest(_Strict):
    history: list[HistoryEntry] = Field(
        min_length=1, max_length=MAX_HISTORY,
        description="what the user interacted with, oldest first: item ids (trained or cold items), or objects "
        "with text fields ({\"title\": ...}) for items the catalogue does not have; only the latest `window` "
        "entries are used",
    )
    k: int = Field(default=10, ge=1, description="how many items to return (at most the catalogue size)")
    exclude_history: bool = Field(default=True, description="never recommend items of the history")
    ignore_unknown: bool = Field(
        default=False, description="skip unknown ids (listed in `ignored`) instead of answering 422"
    )
    allow: list[ItemId] | None = Field(
        default=None, max_length=MAX_FILTER_IDS, description="rank only these items (exact scores)"
    )
    deny: list[ItemId] | None = Field(
        default=None, max_length=MAX_FILTER_IDS, description="never return these items"
    )
    explain: bool = Field(
        default=False,
        description="split each score into `semantic` (the user vector against the item's frozen language "
        "coordinates) and `collaborative` (against its ID coordinates; for a cold item, the ID part it was "
        "folded in with); score = semantic + collaborative. AlphaFuse models only (409 otherwise)",
    )


class ScoredItem(BaseModel):
    item_id: str
    score: float = Field(description="inner product of user and item vectors (cosine if trained so)")
    semantic: float | None = Field(default=None, description="explain: the score's language part")
    collaborative: float | None = Field(default=None, description="explain: the score's ID part")


class ModelInfo(BaseModel):
    name: str
    version: str
    artifact: str = Field(
        default="", description="the exact artifact that answered: its version and a digest of its files, "
        "which changes when a new model is swapped in (POST /admin/model)",
    )


class RecommendResponse(BaseModel):
    items: list[ScoredItem]
    model: ModelInfo
    ignored: list[str] = Field(default_factory=list, description="unknown ids skipped (ignore_unknown)")
    truncated: bool = Field(default=False, description="the history was longer than the model's window")


class ItemCreate(ItemFields):
    """A new (cold) item. Its vector comes from its text via the model's encoder, or from `embedding`."""

    item_id: ItemId


class ItemsCreateRequest(_Strict):
    items: list[ItemCreate] = Field(
        min_length=1, max_length=MAX_ITEMS_HARD, description="new items (at most `max_items_per_request`)"
    )
    upsert: bool = Field(default=False, description="replace existing cold items with the same id")


class ItemResponse(BaseModel):
    item_id: str
    record: dict[str, Any]
    cold: bool = Field(description="added after training (folded in from text) rather than trained")


class ItemsCreateResponse(BaseModel):
    items: list[ItemResponse]
    replaced: list[str] = Field(default_factory=list, description="ids of cold items replaced (upsert)")
    model: ModelInfo


class SearchHit(BaseModel):
    item_id: str
    score: float = Field(description="cosine of the query's and the item's language coordinates")
    cold: bool = Field(description="added after training (folded in from text) rather than trained")
    record: dict[str, Any]


class SearchResponse(BaseModel):
    items: list[SearchHit]
    model: ModelInfo


class ItemDeletedResponse(BaseModel):
    item_id: str
    deleted: bool = Field(default=True, description="the cold item is gone from every worker's catalogue")
    model: ModelInfo


class SwapRequest(_Strict):
    artifact: str | None = Field(
        default=None, max_length=4096,
        description="artifact directory to serve (a path on the server); default: the configured one, reloaded",
    )


class SwapResponse(BaseModel):
    model: ModelInfo = Field(description="the model now serving")
    previous: ModelInfo
    items: int
    cold_items: int


class HealthResponse(BaseModel):
    status: str


class ReadyResponse(BaseModel):
    status: str = Field(description="ready | loading (503) | store unavailable (503: this process's store file is "
                        "broken) | read-only (200: the shared database is unreachable; reads serve, writes 503)")
    model: ModelInfo | None = None
    items: int = 0
    cold_items: int = 0
    index: str | None = None
    pid: int = Field(description="process id of the worker that answered (several workers share a port)")
    problem: str | None = Field(default=None, description="why the item store cannot be written, when it cannot")


class ErrorResponse(BaseModel):
    detail: str
