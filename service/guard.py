"""Request guards that run before any route: body size, content type, and the one error format.

`RequestGuard` is pure ASGI, so an oversized body is refused from its `Content-Length` without reading a
byte of it, and a chunked body is refused as soon as it passes the limit; nothing larger than the limit
is ever buffered. `validation_detail` turns pydantic's error list into the one string every error body
carries, echoing at most a short prefix of any input value.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from service.schemas import UNION_TAGS

BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
MAX_DETAIL_CHARS = 600  # an error detail never grows with the request that caused it
MAX_ERRORS_SHOWN = 3
MAX_INPUT_SHOWN = 40


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


async def _reply(send: Send, status: int, detail: str, headers: Sequence[tuple[bytes, bytes]] = ()) -> None:
    body = json.dumps({"detail": detail}).encode()
    await send({
        "type": "http.response.start", "status": status,
        "headers": [
            (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"), *headers,
        ],
    })
    await send({"type": "http.response.body", "body": body})


class RequestGuard:
    """413 for bodies over `max_body_bytes`, 415 for a body that is not JSON, before the app runs."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        headers = {k.lower(): v for k, v in scope["headers"]}
        limit = self.max_body_bytes
        length = headers.get(b"content-length")
        if length is not None:
            try:
                declared = int(length)
            except ValueError:
                await _reply(send, 400, "Content-Length is not a number")
                return
            if declared > limit:
                await _reply(send, 413, f"request body of {declared} bytes is over the limit of {limit} bytes")
                return
        content_type = headers.get(b"content-type", b"").decode("latin-1")
        if content_type and not _is_json(content_type):
            shown = content_type[:MAX_INPUT_SHOWN]
            await _reply(send, 415, f"request bodies must be JSON (Content-Type: application/json), got {shown!r}")
            return
        # read the (possibly chunked) body up to the limit, then hand it to the app in one message
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _reply(send, 413, f"request body is over the limit of {limit} bytes")
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()  # after the body: wait for the disconnect like the server would

        await self.app(scope, replay, send)


def _shown(value: Any) -> str:
    if isinstance(value, str | bytes):
        value = value[: MAX_INPUT_SHOWN + 1]  # never build the repr of a megabyte just to cut it
    text = repr(value)  # escapes control characters and lone surrogates, so the detail is valid JSON text
    return text if len(text) <= MAX_INPUT_SHOWN else text[: MAX_INPUT_SHOWN - 3] + "..."


def _where(loc: Sequence[Any]) -> str:
    parts = [p for p in loc if p != "body" and p not in UNION_TAGS]
    out = ""
    for p in parts:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "body"


def validation_detail(errors: Sequence[dict[str, Any]]) -> str:
    """One readable line for pydantic/FastAPI validation errors, bounded in length."""
    lines = []
    for err in errors[:MAX_ERRORS_SHOWN]:
        msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
        line = f"{_where(err.get('loc', ()))}: {msg}"
        if "input" in err and err.get("type") not in ("missing", "extra_forbidden") and not isinstance(
            err["input"], dict | list
        ):
            line += f" (got {_shown(err['input'])})"
        lines.append(line)
    more = len(errors) - MAX_ERRORS_SHOWN
    detail = "; ".join(lines) + (f"; and {more} more problem{'s' if more > 1 else ''}" if more > 0 else "")
    return detail if len(detail) <= MAX_DETAIL_CHARS else detail[: MAX_DETAIL_CHARS - 3] + "..."


def is_json_decode_error(errors: Sequence[dict[str, Any]]) -> bool:
    return any(err.get("type") == "json_invalid" for err in errors)


def json_decode_detail(errors: Sequence[dict[str, Any]]) -> str:
    err = next(e for e in errors if e.get("type") == "json_invalid")
    ctx = err.get("ctx") or {}
    where = err.get("loc", ("body", "?"))
    position = where[1] if len(where) > 1 else "?"
    return f"the request body is not valid JSON: {str(ctx.get('error', 'parse error'))[:80]} at position {position}"
