"""Shared fixtures: a tiny real-text dataset and a tiny trained artifact (real encoder, real training)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

# Four themes so that histories have a semantic direction the encoder can see.
THEMES = {
    "lego": ["LEGO Star Wars X-Wing Fighter", "LEGO City Police Station", "LEGO Technic Race Car",
             "LEGO Friends Heartlake Cafe", "LEGO Ninjago Temple", "LEGO Creator Treehouse"],
    "puzzle": ["1000 Piece Jigsaw Puzzle Mountain Lake", "Wooden Brain Teaser Puzzle Set",
               "Rubik's Cube 3x3 Speed Cube", "500 Piece Jigsaw Puzzle City Night",
               "Tangram Puzzle for Kids", "3D Crystal Puzzle Castle"],
    "doll": ["Barbie Dreamhouse Doll", "Baby Doll with Bottle and Blanket", "Fashion Doll Wardrobe Set",
             "American Girl Style Doll 18 inch", "Doll Stroller for Toddlers", "Princess Doll Castle Playset"],
    "outdoor": ["Kids Soccer Ball Size 4", "Water Blaster Squirt Gun", "Backyard Swing Set",
                "Sidewalk Chalk 24 Colors", "Kite for Kids Easy Flyer", "Bubble Machine Outdoor"],
}


def write_tiny_dataset(root: Path, *, users: int = 60, seed: int = 0) -> Path:
    """A canonical dataset folder: 24 titled items in 4 themes; users mostly stay inside one theme."""
    rng = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)
    items = []
    for theme, titles in THEMES.items():
        for j, title in enumerate(titles):
            items.append({"item_id": f"{theme}-{j}", "title": title, "categories": ["Toys & Games", theme]})
    with (root / "items.jsonl").open("w") as f:
        for rec in items:
            f.write(json.dumps(rec) + "\n")
    themes = list(THEMES)
    with (root / "interactions.csv").open("w") as f:
        f.write("user_id,item_id,timestamp\n")
        for u in range(users):
            theme = themes[u % len(themes)]
            length = rng.randint(4, 9)
            for t in range(length):
                chosen = theme if rng.random() < 0.85 else rng.choice(themes)
                f.write(f"u{u},{chosen}-{rng.randrange(6)},{t}\n")
    return root


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_dataset(tmp_path_factory.mktemp("tiny") / "data")


def train_tiny_artifact(data: Path, tmp_path_factory: pytest.TempPathFactory, **overrides: Any) -> Path:
    """An AlphaFuse + SASRec artifact trained briefly on `data` with real MiniLM text (the default recipe)."""
    from training.config import TrainConfig
    from training.train import run_training

    out = tmp_path_factory.mktemp("artifact") / "model"
    fields: dict[str, Any] = {
        "epochs": 12, "patience": 12, "hidden_dim": 16, "d_n": 8, "max_len": 8, "batch_size": 16, "negatives": 8,
        **overrides,
    }
    cfg = TrainConfig(
        data=str(data), protocol="loo", out=str(out), cache_dir=str(tmp_path_factory.mktemp("cache")), **fields
    )
    run_training(cfg)
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tiny_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return train_tiny_artifact(tiny_data, tmp_path_factory)


@pytest.fixture(scope="module")
def artifact(tiny_artifact: Path):  # noqa: ANN201 - a model.artifact.Artifact
    """`tiny_artifact` loaded, once per test module."""
    from model.artifact import load_artifact

    return load_artifact(tiny_artifact)


@pytest.fixture(scope="module")
def encoder(artifact):  # noqa: ANN001, ANN201 - the artifact's TextEncoder
    from training.encoders import encoder_from_identity

    assert artifact.encoder_identity is not None
    return encoder_from_identity(artifact.encoder_identity)


# a throwaway PostgreSQL server for the store contract and replica tests (skips without the binaries)
from tests.pg import pg_cluster, pg_url  # noqa: E402, F401
