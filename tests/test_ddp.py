"""Two CPU processes under torchrun (DDP over gloo) train what one process trains at the same global batch."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from model.artifact import load_artifact
from tests.conftest import write_tiny_dataset
from tests.helpers import free_port
from training.distributed import resolve_device

ROOT = Path(__file__).resolve().parents[1]


def _train(launcher: list[str], data: Path, out: Path, cache: Path) -> subprocess.CompletedProcess[str]:
    args = [
        "train", "--data", str(data), "--protocol", "loo", "--out", str(out), "--cache-dir", str(cache),
        "--epochs", "8", "--patience", "8", "--hidden-dim", "16", "--d-n", "8", "--max-len", "8",
        "--batch-size", "32", "--threads", "1", "--device", "cpu",
    ]  # fmt: skip
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    done = subprocess.run([*launcher, "-m", "cli", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=600)  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    return done


@pytest.mark.slow
def test_two_gloo_processes_match_one_process_at_the_same_global_batch(tmp_path: Path) -> None:
    data = write_tiny_dataset(tmp_path / "data", users=240)
    cache = tmp_path / "cache"
    single = _train([sys.executable], data, tmp_path / "one", cache)
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc_per_node", "2",
                "--master_addr", "127.0.0.1", "--master_port", str(free_port())]  # fmt: skip
    ddp = _train(torchrun, data, tmp_path / "two", cache)

    assert "distributed training" not in single.stderr
    assert "distributed training: 2 processes, backend gloo" in ddp.stderr
    # rank 0 alone reports and writes; rank 1 checked its parameters equal rank 0's (or training failed)
    assert ddp.stdout.count("serve it:") == 1
    one = json.loads((tmp_path / "one" / "metrics.json").read_text())
    two = json.loads((tmp_path / "two" / "metrics.json").read_text())
    for split in ("valid", "test"):
        # same data, global batch and steps; shards, dropout masks and negatives differ: seed noise apart
        assert two[split]["ndcg@20"] == pytest.approx(one[split]["ndcg@20"], abs=0.05), (split, one, two)
        assert two[split]["ndcg@20"] > 0.3  # far above chance (24 items: about 0.2)
    # the artifact rank 0 wrote loads on the CPU
    art = load_artifact(tmp_path / "two")
    assert next(art.model.parameters()).device.type == "cpu"


def test_device_resolution() -> None:
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="no GPU"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="device must be one of"):
        resolve_device("tpu")
