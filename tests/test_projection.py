import numpy as np
import pytest

from model.projection import (
    Projection,
    eigendecompose,
    fit_projection,
    null_space_by_dim,
    null_space_by_threshold,
    weighted_mean_cov,
    whitening_scale,
)


def cross(a: float, b: float, shift: tuple[float, float, float] = (0.0, 0.0, 0.0)) -> np.ndarray:
    """Four points (+-a, 0, 0), (0, +-b, 0) in 3-d: mean = shift, covariance diag(a^2/2, b^2/2, 0)."""
    pts = np.array([[a, 0, 0], [-a, 0, 0], [0, b, 0], [0, -b, 0]], dtype=np.float64)
    return pts + np.array(shift)


def test_mean_and_covariance_closed_form() -> None:
    mu, cov = weighted_mean_cov(cross(2.0, 1.0, (1.0, -1.0, 3.0)))
    np.testing.assert_allclose(mu, [1.0, -1.0, 3.0])
    np.testing.assert_allclose(cov, np.diag([2.0, 0.5, 0.0]), atol=1e-12)


def test_popularity_weights_move_mean_and_covariance() -> None:
    e = np.array([[0.0, 0.0], [1.0, 0.0]])
    mu, cov = weighted_mean_cov(e, np.array([3.0, 1.0]))  # p = (3/4, 1/4)
    np.testing.assert_allclose(mu, [0.25, 0.0])
    # sum p (x - mu)^2 = 3/4 * 1/16 + 1/4 * 9/16 = 3/16
    np.testing.assert_allclose(cov, [[3 / 16, 0.0], [0.0, 0.0]], atol=1e-12)


def test_eigendecompose_sorted_descending_with_fixed_signs() -> None:
    rot = np.array([[np.cos(0.3), -np.sin(0.3)], [np.sin(0.3), np.cos(0.3)]])
    cov = rot @ np.diag([1.0, 4.0]) @ rot.T
    s, u = eigendecompose(cov)
    np.testing.assert_allclose(s, [4.0, 1.0])
    np.testing.assert_allclose(u @ np.diag(s) @ u.T, cov, atol=1e-12)
    assert (u[np.abs(u).argmax(axis=0), [0, 1]] > 0).all()
    s2, u2 = eigendecompose(cov.copy())
    np.testing.assert_array_equal(u, u2)


def test_null_space_by_dim_and_threshold() -> None:
    assert null_space_by_dim(128, 64, 384) == (64, 64)
    with pytest.raises(ValueError, match="hidden_dim"):
        null_space_by_dim(500, 64, 384)
    with pytest.raises(ValueError, match="d_n"):
        null_space_by_dim(128, 129, 384)
    assert null_space_by_threshold(np.array([5.0, 1.0, 0.25, 0.1, 0.0]), 0.25) == (2, 3)


def test_whitening_floor_and_off_switch() -> None:
    np.testing.assert_allclose(whitening_scale(np.array([4.0, 0.0]), floor=1e-2), [0.5, 10.0])
    np.testing.assert_array_equal(whitening_scale(np.array([4.0, 0.0]), 1e-2, standardise=False), [1.0, 1.0])
    with pytest.raises(ValueError, match="floor"):
        whitening_scale(np.array([1.0]), floor=0.0)


def test_fit_projection_closed_form() -> None:
    e = cross(2.0, 1.0, (1.0, -1.0, 3.0))
    p = fit_projection(e, hidden_dim=3, d_n=1, floor=1e-6)
    assert (p.d_s, p.d_n) == (2, 1)
    np.testing.assert_allclose(p.eigenvalues, [2.0, 0.5, 0.0], atol=1e-12)
    z = p.apply(e)
    # whitened: the first point lies at +a along e1 -> 2 / sqrt(2) = sqrt(2)
    np.testing.assert_allclose(np.abs(z[0, 0]), np.sqrt(2.0))
    # the kept non-degenerate directions have unit variance, the zero-variance one stays at zero
    np.testing.assert_allclose(z[:, :2].var(axis=0), [1.0, 1.0])
    np.testing.assert_allclose(z[:, 2], 0.0, atol=1e-6)


def test_clipping_and_threshold_modes() -> None:
    rng = np.random.default_rng(0)
    e = rng.normal(size=(200, 16)) * np.linspace(3, 0.01, 16)
    clipped = fit_projection(e, hidden_dim=8, d_n=4)
    assert clipped.output_dim == 8 and clipped.d_s == 4
    unclipped = fit_projection(e, hidden_dim=8, d_n=4, clip=False)
    assert unclipped.output_dim == 16 and (unclipped.d_s, unclipped.d_n) == (12, 4)
    thr = fit_projection(e, threshold=0.01)
    assert thr.output_dim == 16 and thr.d_n == int((thr.eigenvalues <= 0.01).sum()) > 0
    with pytest.raises(ValueError, match="either threshold"):
        fit_projection(e, threshold=0.1, hidden_dim=8, d_n=4)


def test_scale_changes_eigenvalues_not_whitened_coordinates() -> None:
    rng = np.random.default_rng(1)
    e = rng.normal(size=(100, 6))
    p1 = fit_projection(e, hidden_dim=6, d_n=2)
    p40 = fit_projection(e, hidden_dim=6, d_n=2, scale=40.0)
    np.testing.assert_allclose(p40.eigenvalues, p1.eigenvalues * 1600)
    np.testing.assert_allclose(p40.apply(e), p1.apply(e), atol=1e-9)


def test_projection_validates_shapes() -> None:
    with pytest.raises(ValueError, match="d_s"):
        Projection(np.zeros(3), np.eye(3)[:, :2], np.ones(2), np.ones(2), d_s=2, d_n=1, scale=1.0)
    p = fit_projection(np.random.default_rng(0).normal(size=(10, 3)), hidden_dim=2, d_n=1)
    with pytest.raises(ValueError, match=r"\(n, 3\)"):
        p.apply(np.zeros((2, 4)))


def test_language_scale_multiplies_the_coordinates_and_is_validated() -> None:
    e = np.random.default_rng(0).normal(size=(40, 6))
    base = fit_projection(e, hidden_dim=4, d_n=2)
    scaled = fit_projection(e, hidden_dim=4, d_n=2, language_scale=0.5)
    np.testing.assert_allclose(scaled.apply(e[:3]), 0.5 * base.apply(e[:3]), rtol=1e-12)
    z = scaled.apply(e)
    np.testing.assert_allclose(z.var(axis=0), np.full(4, 0.25), rtol=1e-9)  # whitened, then scaled
    with pytest.raises(ValueError, match="language_scale"):
        fit_projection(e, hidden_dim=4, d_n=2, language_scale=0.0)
