"""What an artifact's manifest records about the data it was trained and evaluated on.

`alphafuse evaluate` and `alphafuse loadtest --artifact` default to these, so that the same split is
rebuilt without the user retyping the training flags. Reads manifest.json only (no weights, no torch).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class TrainedOn:
    data: str | None  # dataset directory (absolute where the manifest has it)
    protocol: str | None  # "loo" or "cold-users"
    split: str | None  # predefined split directory, None for a generated split
    seed: int  # split seed
    k_core: int  # the k-core filter applied before splitting (0 or 1: none)
    mask_history: bool  # whether history items were kept out of the ranking in evaluation


def trained_on(manifest: dict[str, Any]) -> TrainedOn:
    """The training inputs `manifest` records; fields an older manifest lacks are None or their default."""
    cfg: dict[str, Any] = manifest.get("train_config") or {}
    dataset: dict[str, Any] = manifest.get("dataset") or {}
    data = dataset.get("path") or cfg.get("data") or None
    protocol = cfg.get("protocol") or dataset.get("protocol") or None
    # the split as training resolved it ("predefined:/abs/dir") survives a change of working directory
    source = str(dataset.get("split") or "")
    split = source.removeprefix("predefined:") if source.startswith("predefined:") else cfg.get("split")
    return TrainedOn(
        data=str(data) if data else None,
        protocol=str(protocol) if protocol else None,
        split=str(split) if split else None,
        seed=int(cfg.get("seed", 0)),
        k_core=int(cfg.get("k_core", 0)),
        mask_history=bool(cfg.get("mask_history", False)),
    )


def resolve_data(given: str | None, recorded: TrainedOn, artifact: Path) -> Path:
    """`given`, else the dataset the artifact was trained on; a recorded path that is gone is an error
    saying so, not a bare "not found"."""
    if given:
        return Path(given)
    if recorded.data is None:
        raise ValueError(f"{artifact}/manifest.json does not record its dataset: pass --data DIR")
    path = Path(recorded.data)
    if not path.is_dir():
        raise ValueError(f"{artifact} was trained on {path}, which is not there now: pass --data DIR")
    return path
