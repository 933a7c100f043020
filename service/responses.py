"""JSON bodies of the hot routes, built straight from the ranker's results with orjson.

FastAPI would validate the `RecommendResponse` a route returns (one pydantic object per scored item,
then the whole tree again through `response_model`) before serialising it. The ranker's output is
already typed, so /recommend writes the bytes here and returns them as a `Response`, which FastAPI
passes through untouched; the route still declares `response_model=RecommendResponse`, so the OpenAPI
schema is unchanged, and a test checks these bytes against pydantic's serialisation of the same model.

Floats: orjson and pydantic-core (what FastAPI serialises response models with) both write a float64
as the shortest decimal that reads back as the same float64, so the scores on the wire are the
ranker's floats exactly, as before (checked over 400k float32-derived scores: byte-identical). A NaN
would be `null` in both.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import orjson
from starlette.responses import Response

from service.ranker import Ranking

JSON = "application/json"


def recommend_body(ranking: Ranking, model: Mapping[str, Any]) -> bytes:
    """The `RecommendResponse` JSON of one ranking; keys in the schema's field order (the explain parts
    only when asked for)."""
    if ranking.parts is not None:
        items = [
            {"item_id": item_id, "score": score, "semantic": sem, "collaborative": col}
            for (item_id, score), (sem, col) in zip(ranking.items, ranking.parts, strict=True)
        ]
    else:
        items = [{"item_id": item_id, "score": score} for item_id, score in ranking.items]
    return orjson.dumps({
        "items": items,
        "model": ranking.model or model,
        "ignored": ranking.ignored,
        "truncated": ranking.truncated,
    })  # fmt: skip


def json_response(body: bytes, status_code: int = 200) -> Response:
    return Response(body, status_code=status_code, media_type=JSON)
