"""The AlphaFuse decomposition of language embeddings (README "How it works", steps 2-3), as numpy functions.

Everything here is computed in float64: the covariance of unit-norm sentence embeddings has eigenvalues
spanning several orders of magnitude, and the whitening `S^-1/2` of the smallest kept ones amplifies
float32 round-off by the same factor.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Weighting = Literal["uniform", "popularity"]


def weighted_mean_cov(
    emb: np.ndarray, weights: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Steps 1-2: `mu = sum_i p_i E_i`, `C = (E - mu)^T diag(p) (E - mu)`; `p` uniform if `weights` is None.

    `weights` are non-negative and normalised here, so raw interaction counts can be passed.
    """
    e = np.asarray(emb, dtype=np.float64)
    if e.ndim != 2 or e.shape[0] == 0:
        raise ValueError(f"embeddings must be a non-empty (N, d) matrix, got shape {e.shape}")
    if not np.isfinite(e).all():
        raise ValueError("embeddings contain NaN or inf")
    n = e.shape[0]
    if weights is None:
        p = np.full(n, 1.0 / n)
    else:
        p = np.asarray(weights, dtype=np.float64)
        if p.shape != (n,):
            raise ValueError(f"weights must have shape ({n},), got {p.shape}")
        if (p < 0).any() or p.sum() <= 0:
            raise ValueError("weights must be non-negative with a positive sum")
        p = p / p.sum()
    mu = p @ e  # (d,)
    centred = e - mu  # (N, d)
    cov = centred.T @ (centred * p[:, None])  # (d, d)
    return mu, (cov + cov.T) / 2.0  # symmetrise away round-off so eigh sees an exactly symmetric matrix


def eigendecompose(cov: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """`C = U diag(S) U^T` with S sorted descending; each eigenvector's sign fixed (largest entry positive).

    Fixing signs makes the basis a deterministic function of C, so two runs on the same data agree.
    """
    c = np.asarray(cov, dtype=np.float64)
    if c.ndim != 2 or c.shape[0] != c.shape[1]:
        raise ValueError(f"covariance must be square, got shape {c.shape}")
    s, u = np.linalg.eigh(c)  # ascending
    order = np.argsort(s)[::-1]
    s, u = s[order], u[:, order]
    s = np.clip(s, 0.0, None)  # a PSD matrix's negative eigenvalues are round-off
    pivot = np.abs(u).argmax(axis=0)
    signs = np.sign(u[pivot, np.arange(u.shape[1])])
    signs[signs == 0] = 1.0
    return s, u * signs


def null_space_by_dim(hidden_dim: int, d_n: int, d_l: int) -> tuple[int, int]:
    """Discriminative backbones: keep the top `hidden_dim` directions, the last `d_n` host the IDs.

    Returns `(d_s, d_n)`.
    """
    if not 0 < hidden_dim <= d_l:
        raise ValueError(f"hidden_dim must be in [1, {d_l}] (the encoder dimension), got {hidden_dim}")
    if not 0 <= d_n <= hidden_dim:
        raise ValueError(f"d_n must be in [0, hidden_dim={hidden_dim}], got {d_n}")
    return hidden_dim - d_n, d_n


def null_space_by_threshold(eigenvalues: np.ndarray, threshold: float) -> tuple[int, int]:
    """Generative backbones: keep all directions; the null space is every eigenvalue `<= threshold`.

    The threshold is on `S` of the (scaled) embeddings, so it depends on the scale. Returns `(d_s, d_n)`.
    """
    if threshold < 0:
        raise ValueError(f"threshold must be >= 0, got {threshold}")
    s = np.asarray(eigenvalues)
    d_n = int((s <= threshold).sum())
    return len(s) - d_n, d_n


def whitening_scale(eigenvalues: np.ndarray, floor: float, standardise: bool = True) -> np.ndarray:
    """Step 4: per-direction factor `max(S, floor)^-1/2`; all ones when standardisation is off.

    The floor guards the null-space directions, whose eigenvalues can be ~0: unguarded, they would blow
    round-off noise up to unit variance.
    """
    s = np.asarray(eigenvalues, dtype=np.float64)
    if not standardise:
        return np.ones_like(s)
    if floor <= 0:
        raise ValueError(f"eigenvalue floor must be > 0, got {floor}")
    return 1.0 / np.sqrt(np.maximum(s, floor))


@dataclass(frozen=True)
class Projection:
    """What folds any text embedding into the fused space:
    `Z = language_scale * ((scale * e - mu) @ basis * factor)`.

    `basis` holds the kept eigenvectors as columns (d_l, k) with `k = d_s + d_n`; `eigenvalues` are
    theirs; `factor` is the per-direction whitening (ones if standardisation is off). The language part
    of the null-space coordinates is kept (it is small, not zero); IDs are added on top of it.
    `identity_projection` is the degenerate case `Z = E` (identity basis; `eigenvalues` then hold the
    variance along each axis, for the record), for the baselines that read the encoder output as it is.

    `language_scale` sets the size of the frozen coordinates relative to the trainable ID rows that are
    added to them. Whitening leaves every direction with unit variance (rows of norm ~sqrt(k)), while
    Adam moves an ID coordinate by about the learning rate per step, so at scale 1 the IDs of a SASRec
    stay negligible for thousands of steps; 1/sqrt(k) gives rows of norm ~1, the scale an ID-only table
    starts from. Artifacts from before this field existed recorded no scale and mean 1.
    """

    mean: np.ndarray  # (d_l,) float64, in scaled units
    basis: np.ndarray  # (d_l, k) float64
    eigenvalues: np.ndarray  # (k,) float64
    factor: np.ndarray  # (k,) float64
    d_s: int
    d_n: int
    scale: float
    language_scale: float = 1.0

    def __post_init__(self) -> None:
        d_l, k = self.basis.shape
        if self.mean.shape != (d_l,):
            raise ValueError(f"mean has shape {self.mean.shape}, expected ({d_l},)")
        if self.eigenvalues.shape != (k,) or self.factor.shape != (k,):
            raise ValueError(
                f"eigenvalues {self.eigenvalues.shape} / factor {self.factor.shape} must be ({k},)"
            )
        if self.d_s + self.d_n != k or min(self.d_s, self.d_n) < 0:
            raise ValueError(f"d_s={self.d_s} + d_n={self.d_n} must equal the kept directions {k}")
        if self.scale <= 0:
            raise ValueError(f"scale must be > 0, got {self.scale}")
        if not (np.isfinite(self.language_scale) and self.language_scale > 0):
            raise ValueError(f"language_scale must be a finite number > 0, got {self.language_scale}")

    @property
    def input_dim(self) -> int:
        return int(self.basis.shape[0])

    @property
    def output_dim(self) -> int:
        return int(self.basis.shape[1])

    def apply(self, emb: np.ndarray) -> np.ndarray:
        """Step 5: language coordinates (n, k) float64 for raw encoder outputs (n, d_l)."""
        e = np.asarray(emb, dtype=np.float64)
        if e.ndim != 2 or e.shape[1] != self.input_dim:
            raise ValueError(f"expected embeddings of shape (n, {self.input_dim}), got {e.shape}")
        return ((self.scale * e - self.mean) @ self.basis) * (self.factor * self.language_scale)


def identity_projection(emb: np.ndarray) -> Projection:
    """`Z = E`: mean 0, identity basis, no whitening, scale 1 (every d_l direction kept, d_n = 0).

    The baselines that feed the raw encoder output to a trained adapter (MoRec, UniSRec, LLM-ESR's semantic
    view) store this, so the service folds new items in through the same file and code as AlphaFuse's, and
    `apply` returns the float64 embeddings unchanged (x @ I is exact). `emb` (N, d_l) only supplies the width
    and the per-axis variances kept as `eigenvalues`.
    """
    _, cov = weighted_mean_cov(emb)
    d_l = cov.shape[0]
    return Projection(
        mean=np.zeros(d_l), basis=np.eye(d_l), eigenvalues=np.diag(cov).copy(), factor=np.ones(d_l), d_s=d_l, d_n=0,
        scale=1.0, language_scale=1.0,
    )


def fit_projection(
    emb: np.ndarray,
    *,
    hidden_dim: int | None = None,
    d_n: int | None = None,
    threshold: float | None = None,
    weights: np.ndarray | None = None,
    scale: float = 1.0,
    standardise: bool = True,
    clip: bool = True,
    floor: float = 1e-6,
    language_scale: float = 1.0,
) -> Projection:
    """Fit the AlphaFuse projection on a catalogue's language embeddings (N, d_l).

    Pick the null space either by dimension (`hidden_dim` + `d_n`, SASRec) or by eigenvalue `threshold`
    (DreamRec, keeps all directions). `clip=False` is the paper's "without clipping" ablation: keep every
    direction and host the IDs in the last `d_n` of them (the hidden size becomes d_l). `language_scale`
    multiplies the resulting coordinates (see `Projection`).
    """
    e = np.asarray(emb, dtype=np.float64) * scale
    d_l = e.shape[1] if e.ndim == 2 else -1
    mu, cov = weighted_mean_cov(e, weights)
    s, u = eigendecompose(cov)
    if threshold is not None:
        if hidden_dim is not None or d_n is not None:
            raise ValueError("pass either threshold or (hidden_dim, d_n), not both")
        d_s, dn = null_space_by_threshold(s, threshold)
        k = d_l
    else:
        if hidden_dim is None or d_n is None:
            raise ValueError("pass hidden_dim and d_n (or a threshold)")
        if clip:
            d_s, dn = null_space_by_dim(hidden_dim, d_n, d_l)
            k = hidden_dim
        else:
            if not 0 <= d_n <= d_l:
                raise ValueError(f"d_n must be in [0, {d_l}], got {d_n}")
            d_s, dn, k = d_l - d_n, d_n, d_l
    factor = whitening_scale(s[:k], floor, standardise)
    return Projection(
        mean=mu, basis=u[:, :k].copy(), eigenvalues=s[:k].copy(), factor=factor, d_s=d_s, d_n=dn,
        scale=float(scale), language_scale=float(language_scale),
    )

