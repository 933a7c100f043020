"""What `train` and `demo` share: the closing summary of a training run and the command to type next."""

from __future__ import annotations

import shlex
import shutil
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from training.config import TrainConfig
    from training.train import TrainResult


def self_command() -> str:
    """This CLI as the user can type it again: `alphafuse` where PATH finds this very script, else the
    path it was started by (`.venv/bin/alphafuse` after scripts/demo.sh, which puts nothing on PATH),
    else `python -m cli` with this interpreter."""
    argv0 = sys.argv[0]
    if Path(argv0).name == "alphafuse":
        found = shutil.which("alphafuse")
        if found is not None and Path(found).resolve() == Path(argv0).resolve():
            return "alphafuse"
        return shlex.quote(argv0)
    return f"{shlex.quote(sys.executable)} -m cli"


def training_summary(result: TrainResult, cfg: TrainConfig, wall_seconds: float) -> list[str]:
    """The closing lines of `train` and `demo`: test metrics at 4 decimals, the model selection, the time."""
    from training.progress import format_seconds
    from training.train import SELECT_METRIC

    test, valid = result.metrics["test"], result.metrics["valid"]
    ks = sorted({int(key.split("@")[1]) for key in test if "@" in key})
    lines = [
        f"trained in {format_seconds(wall_seconds)}: best epoch {result.best_epoch} of {len(result.history)} "
        f"(validation {SELECT_METRIC} {valid[SELECT_METRIC]:.4f})",
        f"test ({int(test.get('cases', 0))} cases)" + "".join(f"{f'@{k}':>9}" for k in ks),
    ]
    for name in ("hr", "ndcg", "mrr"):
        lines.append(f"  {name:<14}" + "".join(f"{test[f'{name}@{k}']:>9.4f}" for k in ks))
    lines.append(f"artifact: {cfg.out} (all metrics in metrics.json, per epoch in history.json)")
    return lines
