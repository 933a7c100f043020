"""Small helpers several test modules share."""

from __future__ import annotations

import socket

import numpy as np


def free_port() -> int:
    """A loopback port nobody listens on now (a server started right after takes it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unit_embedding(seed: int, dim: int = 384) -> list[float]:
    """A random unit vector of the encoder's width: an item's precomputed `embedding`."""
    e = np.random.default_rng(seed).standard_normal(dim)
    return (e / np.linalg.norm(e)).tolist()
