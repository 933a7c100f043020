"""The model artifact: a directory the service loads without ever unpickling anything.

Layout (all names fixed; checksums in the manifest):
    manifest.json            format version, configs, dataset/split, encoder identity, projection dims
    model.safetensors        recommender state (backbone, ID table, frozen language coordinates)
    projection.safetensors   mean, basis, eigenvalues, whitening factor (float64), when new items can be
                             folded in from text (every text variant but rlmrec-*, whose text trains only)
    item_table.npy           (N, D) float32 vectors ranked by inner product (what FAISS indexes)
    item_ids.json            item id of each row, in index order
    items.jsonl              the text record of each item, same order

`manifest.json` is written last, so a directory without one is an interrupted save, not an artifact.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.numpy import load_file as load_numpy
from safetensors.numpy import save_file as save_numpy
from safetensors.torch import load_file as load_torch
from safetensors.torch import save_file as save_torch

from model.checksum import file_sha256
from model.projection import Projection
from model.recommender import Recommender, RecommenderConfig, build_recommender

log = logging.getLogger(__name__)

FORMAT_VERSION = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.safetensors"
PROJECTION_FILE = "projection.safetensors"
TABLE_FILE = "item_table.npy"
IDS_FILE = "item_ids.json"
ITEMS_FILE = "items.jsonl"


class ArtifactError(ValueError):
    """An artifact directory that is missing, incomplete, corrupted or of another format."""


@dataclass
class Artifact:
    path: Path
    manifest: dict[str, Any]
    model: Recommender  # in eval mode
    projection: Projection | None
    item_ids: list[str]
    item_records: list[dict[str, Any]]
    item_table: np.ndarray  # (N, D) float32

    @property
    def config(self) -> RecommenderConfig:
        return self.model.cfg

    @property
    def encoder_identity(self) -> dict[str, Any] | None:
        enc = self.manifest.get("encoder")
        return None if enc is None else dict(enc["identity"])


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            os.fchmod(f.fileno(), 0o644)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def projection_tensors(p: Projection) -> dict[str, np.ndarray]:
    return {"mean": p.mean, "basis": p.basis, "eigenvalues": p.eigenvalues, "factor": p.factor}


def save_artifact(
    out: Path,
    *,
    model: Recommender,
    projection: Projection | None,
    item_ids: list[str],
    item_records: list[dict[str, Any]],
    manifest_extra: dict[str, Any],
) -> Path:
    """Write the artifact directory (created if needed); existing artifact files are replaced."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / MANIFEST).unlink(missing_ok=True)  # the directory is not an artifact until we finish
    if len(item_ids) != model.num_items or len(item_records) != model.num_items:
        raise ValueError(f"{len(item_ids)} ids / {len(item_records)} records for {model.num_items} items")
    model.eval()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_torch(state, str(out / MODEL_FILE))
    with torch.no_grad():
        table = model.item_vectors().cpu().numpy().astype(np.float32)
    np.save(out / TABLE_FILE, table, allow_pickle=False)
    _write_atomic(out / IDS_FILE, json.dumps(item_ids).encode())
    _write_atomic(out / ITEMS_FILE, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in item_records).encode())
    files = [MODEL_FILE, TABLE_FILE, IDS_FILE, ITEMS_FILE]
    proj_meta: dict[str, Any] | None = None
    if projection is not None:
        save_numpy(projection_tensors(projection), str(out / PROJECTION_FILE))
        files.append(PROJECTION_FILE)
        proj_meta = {
            "d_s": projection.d_s, "d_n": projection.d_n, "scale": projection.scale,
            "language_scale": projection.language_scale, "input_dim": projection.input_dim,
            "output_dim": projection.output_dim,
        }
    manifest = {
        "format_version": FORMAT_VERSION,
        **manifest_extra,
        "recommender": model.cfg.to_dict(),
        "num_items": model.num_items,
        "dim": int(table.shape[1]),
        "projection": proj_meta,
        "files": {name: {"sha256": file_sha256(out / name), "bytes": (out / name).stat().st_size} for name in files},
    }
    for name in files:
        (out / name).chmod(0o644)  # safetensors and mkstemp write 0600; the service may run as another user
    _write_atomic(out / MANIFEST, json.dumps(manifest, indent=2, sort_keys=True).encode())
    # debug: the CLI's closing summary names the artifact; at INFO the path was said twice
    log.debug("wrote artifact %s (%d items, dim %d)", out, model.num_items, table.shape[1])
    return out


def read_manifest(path: Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_dir():
        raise ArtifactError(f"artifact directory not found: {path}")
    mf = path / MANIFEST
    if not mf.is_file():
        raise ArtifactError(f"{path} has no {MANIFEST}: not an artifact, or its save was interrupted")
    try:
        manifest = json.loads(mf.read_text())
    except json.JSONDecodeError as e:
        raise ArtifactError(f"{mf} is not valid JSON: {e}") from e
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise ArtifactError(f"{mf}: format_version {version!r} is not supported (expected {FORMAT_VERSION})")
    return manifest


def load_artifact(path: Path, *, verify_checksums: bool = True) -> Artifact:
    """Load and validate an artifact; every problem is an ArtifactError naming the file."""
    path = Path(path)
    manifest = read_manifest(path)
    files: dict[str, Any] = manifest.get("files", {})
    required = [MODEL_FILE, TABLE_FILE, IDS_FILE, ITEMS_FILE]
    if manifest.get("projection") is not None:
        required.append(PROJECTION_FILE)
    missing = [n for n in required if not (path / n).is_file()]
    if missing:
        raise ArtifactError(f"artifact {path} is missing files: {', '.join(missing)}")
    unlisted = [n for n in required if n not in files]
    if unlisted:
        raise ArtifactError(f"{path / MANIFEST} lists no checksum for: {', '.join(unlisted)}")
    if verify_checksums:
        bad = [n for n in required if file_sha256(path / n) != files[n]["sha256"]]
        if bad:
            raise ArtifactError(f"artifact {path}: checksum mismatch (corrupted or edited) in {', '.join(bad)}")

    try:
        cfg = RecommenderConfig.from_dict(manifest["recommender"])
    except (KeyError, TypeError, ValueError) as e:
        raise ArtifactError(f"{path / MANIFEST}: bad recommender config: {e}") from e
    n, dim = int(manifest["num_items"]), int(manifest["dim"])
    # language rows as wide as the item rows in artifacts from before `language_dim` (all were)
    language_dim = cfg.language_dim or dim
    state = load_torch(str(path / MODEL_FILE))
    # placeholders of the right shapes: the state dict holds the values (rlmrec's training-only text excepted)
    language = None if cfg.item_embedding == "id" else torch.zeros(n, language_dim)
    try:
        model = build_recommender(cfg, n, language)
    except ValueError as e:
        raise ArtifactError(f"{path / MANIFEST}: cannot build its model: {e}") from e
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ArtifactError(f"{path / MODEL_FILE} does not match its manifest's config: {e}") from e
    model.eval()

    table = np.load(path / TABLE_FILE, allow_pickle=False)
    if table.shape != (n, dim) or table.dtype != np.float32:
        raise ArtifactError(f"{path / TABLE_FILE}: shape {table.shape} {table.dtype}, expected ({n}, {dim}) float32")
    with torch.no_grad():
        recomputed = model.item_vectors().numpy()
    if not np.allclose(recomputed, table, atol=1e-5, rtol=1e-4):
        raise ArtifactError(f"{path / TABLE_FILE} disagrees with the item vectors of {MODEL_FILE}")

    item_ids = json.loads((path / IDS_FILE).read_text())
    if not isinstance(item_ids, list) or len(item_ids) != n or len(set(item_ids)) != n:
        raise ArtifactError(f"{path / IDS_FILE}: expected {n} unique item ids")
    records = [json.loads(line) for line in (path / ITEMS_FILE).read_text().splitlines() if line.strip()]
    if len(records) != n:
        raise ArtifactError(f"{path / ITEMS_FILE}: {len(records)} records for {n} items")

    projection = None
    meta = manifest.get("projection")
    if meta is not None:
        t = load_numpy(str(path / PROJECTION_FILE))
        try:
            projection = Projection(
                mean=t["mean"], basis=t["basis"], eigenvalues=t["eigenvalues"], factor=t["factor"],
                d_s=int(meta["d_s"]), d_n=int(meta["d_n"]), scale=float(meta["scale"]),
                # absent in artifacts written before the field existed: they were trained at 1
                language_scale=float(meta.get("language_scale", 1.0)),
            )
        except (KeyError, ValueError) as e:
            raise ArtifactError(f"{path / PROJECTION_FILE}: {e}") from e
        if projection.output_dim != language_dim:
            raise ArtifactError(f"projection output dim {projection.output_dim} != model language dim {language_dim}")
    return Artifact(
        path=path, manifest=manifest, model=model, projection=projection, item_ids=item_ids,
        item_records=records, item_table=table,
    )
