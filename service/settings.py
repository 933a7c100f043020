"""Service settings: one `pydantic-settings` class, read from `ALPHAFUSE_*` environment variables.

`create_app(settings)` takes an instance, so tests and `serve()` pass their own; only `app_from_env`
(the uvicorn factory used with several workers) reads the environment. Every field below is set by the
environment variable `ALPHAFUSE_<FIELD NAME IN CAPITALS>`, e.g. `ALPHAFUSE_ARTIFACT=/models/toys`,
`ALPHAFUSE_INDEX=hnsw`, `ALPHAFUSE_MAX_WAIT_MS=0`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

ENV_PREFIX = "ALPHAFUSE_"
STORE_URL_SCHEMES = ("postgresql://", "postgres://")

# ALPHAFUSE_INDEX=auto serves catalogues of at least this many trained items from HNSW, smaller ones
# exactly (flat): measured at 10^5 and 10^6 (benchmarks/catalogue.py, benchmarks/RESULTS.md), a flat search
# costs one core about 2 ms per query at 10^5 and grows linearly, while HNSW (efSearch 128) stays near
# 6 ms per 32-query batch at both sizes with recall@10 0.94-0.96 on real item geometry. Below this, exact
# answers are still cheap enough to keep.
AUTO_HNSW_MIN_ITEMS = 100_000


def default_store(artifact: Path) -> Path:
    """`runs/demo` -> `/abs/runs/demo.items.sqlite3`: beside the artifact directory, not inside it (an
    artifact may be read-only and its files are checksummed), and not in the working directory (where it
    would follow whichever model is started from there, load-test items included)."""
    artifact = Path(os.path.abspath(artifact))  # abspath, unlike Path.absolute, also folds "a/../b"
    if not artifact.name:
        raise ValueError(f"cannot name a store after the artifact directory {artifact}: set ALPHAFUSE_STORE")
    return artifact.parent / f"{artifact.name}.items.sqlite3"


class ServiceSettings(BaseSettings):
    """Everything the online service can be told. Defaults suit one worker on a small CPU box.

    Threads: torch and faiss each get `torch_threads` / `faiss_threads` per worker process. On a 2-core
    machine 1 + 1 per worker is fastest for batches of user histories (measured: more threads add
    synchronisation cost to ~1 ms batches); with N workers, N x threads should not exceed the cores.
    """

    model_config = SettingsConfigDict(env_prefix=ENV_PREFIX, extra="forbid", frozen=True)

    artifact: Path = Field(description="artifact directory written by `alphafuse train` (read-only is fine)")
    store: Path | str | None = Field(
        default=None,
        description="where cold items are kept: a SQLite file (created if absent), shared by all workers on one "
        "host, or a `postgresql://user:pass@host:5432/db` URL shared by replicas on many hosts (schema made by "
        "`alphafuse store init`). Default: `<artifact dir>.items.sqlite3` beside the artifact directory",
    )
    index: Literal["auto", "flat", "hnsw"] = Field(
        default="auto",
        description="flat: exact inner product; hnsw: faiss IndexHNSWFlat (approximate); auto: hnsw for "
        "catalogues of at least AUTO_HNSW_MIN_ITEMS trained items, flat below",
    )
    auto_hnsw_min_items: int = Field(
        default=AUTO_HNSW_MIN_ITEMS, ge=1,
        description="with index=auto, the trained catalogue size from which HNSW is used",
    )
    hnsw_m: int = Field(default=32, ge=4, le=256, description="HNSW graph degree M")
    hnsw_ef_construction: int = Field(default=200, ge=8, description="HNSW efConstruction")
    hnsw_ef_search: int = Field(default=128, ge=1, description="HNSW efSearch (raised to k if smaller)")
    index_cache: Path | None = Field(
        default=None,
        description="directory where a built HNSW index is kept and read back at the next start or swap of "
        "the same model and HNSW settings (unset: built at every start; a flat index is never cached)",
    )
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
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="cpu",
        description="where the sequence encoder runs (auto: cuda when torch sees a GPU); the item table, "
        "FAISS and fold-in stay on the CPU. A 1-block SASRec over 10 items is cheaper on the CPU than the "
        "copies to a GPU and back; a DreamRec backbone (a denoising loop per request) is not",
    )
    torch_threads: int = Field(default=1, ge=1, description="torch intra-op threads per worker")
    faiss_threads: int = Field(default=1, ge=1, description="faiss OpenMP threads per worker")
    cold_id: Literal["zeros", "mean", "neighbours"] = Field(
        default="neighbours",
        description="ID part v0 of a cold AlphaFuse item: the mean ID row of its 5 nearest trained items by "
        "semantic-rich coordinates (neighbours), zeros, or the mean of all trained IDs",
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
    max_body_bytes: int = Field(
        default=1 << 20, ge=1024, description="largest request body; larger ones get 413 before they are read"
    )
    max_text_chars: int = Field(default=4096, ge=1, description="longest string in a new item's text fields")
    max_list_items: int = Field(default=64, ge=1, description="most strings in one list field of a new item")
    max_cold_items: int = Field(
        default=100_000, ge=1, description="most cold items the store may hold for this model (507 beyond)"
    )
    request_timeout_s: float = Field(
        default=30.0, gt=0.0, description="ranking or encoding that takes longer answers 503 (nothing is committed)"
    )
    api_token: SecretStr | None = Field(
        default=None, description="bearer token that POST /items and DELETE /items need (unset: writes are open)"
    )
    api_token_file: Path | None = Field(
        default=None, description="file holding the write token (first line), instead of API_TOKEN"
    )
    read_token: SecretStr | None = Field(
        default=None, description="bearer token that reads need too (unset: reads are open); the write token also reads"
    )
    allow_open_writes: bool = Field(
        default=False,
        description="serve on a non-loopback address without an API token (writes open to the network)",
    )
    reset_store: bool = Field(
        default=False,
        description="start over with an empty store when the existing one fails its startup checks (the old "
        "files are kept beside it, renamed)",
    )

    @field_validator("store", mode="before")
    @classmethod
    def _store_url_or_path(cls, value: Any) -> Any:
        # a URL must stay a string: as a Path, "postgresql://h/db" would lose a slash
        if isinstance(value, str) and not value.startswith(STORE_URL_SCHEMES):
            return Path(value)
        return value

    @property
    def store_location(self) -> Path | str:
        """The store's URL, or `store_path` for a SQLite file."""
        return self.store if isinstance(self.store, str) else self.store_path

    @property
    def store_path(self) -> Path:
        """The absolute path of `store`, or `default_store(artifact)`: the store belongs to the model it serves."""
        if isinstance(self.store, str):
            raise ValueError("ALPHAFUSE_STORE is a PostgreSQL URL, not a file path")
        return Path(os.path.abspath(self.store)) if self.store is not None else default_store(self.artifact)

    def write_token(self) -> str | None:
        """The write token from API_TOKEN or API_TOKEN_FILE; a file that cannot be read is an error."""
        if self.api_token is not None and self.api_token_file is not None:
            raise ValueError("set ALPHAFUSE_API_TOKEN or ALPHAFUSE_API_TOKEN_FILE, not both")
        if self.api_token_file is not None:
            try:
                lines = self.api_token_file.read_text().splitlines()
            except OSError as e:
                raise ValueError(f"cannot read the API token file {self.api_token_file}: {e.strerror}") from e
            token = lines[0].strip() if lines else ""
            if not token:
                raise ValueError(f"the API token file {self.api_token_file} is empty")
            return token
        if self.api_token is not None:
            token = self.api_token.get_secret_value()
            if not token.strip():
                raise ValueError("ALPHAFUSE_API_TOKEN is empty")
            return token
        return None

    def to_env(self) -> dict[str, str]:
        """The environment variables that rebuild these settings (explicitly set fields only)."""
        out: dict[str, str] = {}
        for name in self.model_fields_set:
            value: Any = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, SecretStr):
                value = value.get_secret_value()
            out[ENV_PREFIX + name.upper()] = str(value).lower() if isinstance(value, bool) else str(value)
        return out
