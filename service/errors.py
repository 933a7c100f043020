"""Domain errors of the online service. They know nothing of HTTP: `app.py` maps each class to a status
code in one table, and the message (which names the offending value) becomes the response's `detail`."""

from __future__ import annotations

from collections.abc import Sequence


class ServiceError(Exception):
    """Base class; `str(error)` is the message shown to the client."""


class InvalidRequest(ServiceError):
    """The request is well-formed but cannot be served as asked (empty history, k out of range ...)."""


class UnknownItems(InvalidRequest):
    """Item ids that are neither in the trained catalogue nor cold items."""

    def __init__(self, ids: Sequence[str], where: str = "history") -> None:
        self.ids = list(ids)
        shown = ", ".join(repr(i) for i in self.ids[:20])
        more = f" (and {len(self.ids) - 20} more)" if len(self.ids) > 20 else ""
        super().__init__(
            f"unknown item ids in {where}: {shown}{more}; pass ignore_unknown=true to skip them"
        )


class InvalidItem(InvalidRequest):
    """A new item that cannot be folded in (no text, wrong embedding size ...)."""


class ItemConflict(ServiceError):
    """Adding items whose ids already exist (without upsert, or trained catalogue items)."""

    def __init__(self, message: str, ids: Sequence[str]) -> None:
        self.ids = list(ids)
        super().__init__(message)


class FoldInUnavailable(ServiceError):
    """The served model cannot fold in new items at all (an ID-only artifact has no language projection)."""


class ExplainUnavailable(ServiceError):
    """The served model's item vectors do not split into language and ID parts (not AlphaFuse)."""


class SwapFailed(InvalidRequest):
    """A new model could not be loaded; the previous one keeps serving (the message says why)."""


class ItemNotFound(ServiceError):
    def __init__(self, item_id: str) -> None:
        self.item_id = item_id
        super().__init__(f"item {item_id!r} is neither in the catalogue nor a cold item")


class Overloaded(ServiceError):
    """The request queue is full; the client should retry later."""


class NotReady(ServiceError):
    """The model is not loaded (starting up or shutting down)."""


class StoreUnavailable(ServiceError):
    """The item store cannot be written right now (removed, replaced, corrupt, disk full); nothing was committed."""


class StoreFull(ServiceError):
    """The store holds as many cold items as it is allowed to (`max_cold_items`)."""


class RequestTimeout(ServiceError):
    """Ranking or encoding took longer than `request_timeout_s`; nothing was committed."""


class Unauthorized(ServiceError):
    """A missing or wrong bearer token."""
