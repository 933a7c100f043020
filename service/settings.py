"""Service settings: one `pydantic-settings` class, read from `ALPHAFUSE_*` environment variables.

`create_app(settings)` takes an instance, so tests and `serve()` pass their own; only `app_from_env`
(the uvicorn factory used with several workers) reads the environment. Every field below is set by the
environment variable `ALPHAFUSE_<FIELD NAME IN CAPITALS>`, e.g. `ALPHAFUSE_ARTIFACT=/models/toys`,
`ALPHAFUSE_INDEX=hnsw`, `ALPHAFUSE_MAX_WAIT_MS=0`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ALPHAFUSE_"


class ServiceSettings(BaseSettings):
    """Everything the online service can be told. Defaults suit one worker on a small CPU box.

    Threads: torch and faiss each get `torch_threads` / `faiss_threads` per worker process. On a 2-core
    machine 1 + 1 per worker is fastest for batches of user histories (measured: more threads add
    synchronisation cost to ~1 ms batches); with N workers, N x threads should not exceed the cores.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    artifact: Path = Field(description="artifact directory written by `alphafuse train` (read-only is fine)")
    store: Path = Field(
        default=Path("alphafuse-store.sqlite3"),
        description="SQLite file holding cold items (created if absent); shared by all workers on one host",
    )
    index: Literal["flat", "hnsw"] = Field(
        default="flat", description="flat: exact inner product; hnsw: faiss IndexHNSWFlat (approximate)"
    )
    hnsw_m: int = Field(default=32, ge=4, le=256, description="HNSW graph degree M")
    hnsw_ef_construction: int = Field(default=200, ge=8, description="HNSW efConstruction")
    hnsw_ef_search: int = Field(default=128, ge=1, description="HNSW efSearch (raised to k if smaller)")
    max_batch: int = Field(
        default=32, ge=1, description="most /recommend requests ranked together (1 disables batching)"
    )
    max_wait_ms: float = Field(
        default=0.0,
        ge=0.0,
        le=1000.0,
        description="how long the first request of a batch waits for more (0: batch only what queued up "
        "while the previous batch ran)",
    )
    max_queue: int = Field(default=1024, ge=1, description="queued /recommend requests before 503 (backpressure)")
    torch_threads: int = Field(default=1, ge=1, description="torch intra-op threads per worker")
    faiss_threads: int = Field(default=1, ge=1, description="faiss OpenMP threads per worker")
    cold_id: Literal["zeros", "mean"] = Field(
        default="zeros", description="ID part v0 of a cold item: zeros, or the mean of the trained IDs"
    )
    max_k: int = Field(default=1000, ge=1, description="largest k a /recommend request may ask for")
    max_items_per_request: int = Field(default=256, ge=1, description="most items one POST /items may add")
    sync_interval_s: float = Field(
        default=1.0, gt=0.0, description="idle workers poll the store for other workers' items this often"
    )
    encoder_preload: bool = Field(
        default=True, description="load the text encoder at startup (else on the first text POST /items)"
    )
    encoder_base_url: str | None = Field(
        default=None, description="override the stored URL of an OpenAI-compatible encoder"
    )
    carry_cold_items: bool = Field(
        default=True,
        description="at startup, re-encode cold items stored for older model versions and serve them with "
        "this one (items posted as a bare embedding cannot be carried)",
    )
    verify_checksums: bool = Field(default=True, description="check the artifact's file checksums on load")

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild these settings (explicitly set fields only)."""
        out: dict[str, str] = {}
        for name in self.model_fields_set:
            value: Any = getattr(self, name)
            if value is None:
                continue
            out[ENV_PREFIX + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return out
