"""Sample-based distances used to score samplers against exact draws, and generative models against data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sliced_wasserstein", "frechet_distance", "gaussian_frechet_distance", "nearest_neighbour_distance", "psnr",
           "interval_coverage"]


def _sort_columns(a):
    """Sort along axis 0: with NumPy when ``a`` is concrete (XLA's CPU sort is ~20x slower on a
    10,000 x 1,000 array), with ``jnp.sort`` under a transformation."""
    try:
        host = np.asarray(a)
    except jax.errors.TracerArrayConversionError:
        return jnp.sort(a, axis=0)
    return jnp.asarray(np.sort(host, axis=0))


def sliced_wasserstein(rng_key, x, y, num_directions: int = 1000, p: int = 1):
    """Sliced p-Wasserstein distance between two sample sets of shape (n, d) and (m, d).

    .. math::  SW_p(\\mu, \\nu) = \\Big(E_{\\theta \\sim U(S^{d-1})} W_p^p(\\theta_\\# \\mu, \\theta_\\# \\nu)\\Big)^{1/p}

    One-dimensional distances are computed between the empirical quantile functions on a common
    grid of max(n, m) levels, so sets of different sizes can be compared. Called eagerly, the
    projections are sorted by NumPy; under ``jax.jit`` by XLA (the same value).
    """
    x = jnp.asarray(x).reshape(x.shape[0], -1)
    y = jnp.asarray(y).reshape(y.shape[0], -1)
    if x.shape[1] != y.shape[1]:
        raise ValueError(f"x and y must have the same dimension, got {x.shape[1]} and {y.shape[1]}")
    theta = jax.random.normal(rng_key, (x.shape[1], num_directions))
    theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
    px = _sort_columns(x @ theta)
    py = _sort_columns(y @ theta)
    m = max(x.shape[0], y.shape[0])
    levels = (jnp.arange(m) + 0.5) / m
    # the inverse empirical CDF at each level is a row of the sorted projections
    qx = px[jnp.floor(levels * x.shape[0]).astype(jnp.int32)]
    qy = py[jnp.floor(levels * y.shape[0]).astype(jnp.int32)]
    return jnp.mean(jnp.abs(qx - qy) ** p) ** (1.0 / p)


def _rows(name: str, a) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    if a.ndim < 2 or a.shape[0] < 1:
        raise ValueError(f"{name} must be an array of shape (n, ...) with n >= 1 rows, got shape {a.shape}")
    return a.reshape(a.shape[0], -1)


def _psd_sqrt(cov: np.ndarray) -> np.ndarray:
    """Symmetric square root of a symmetric positive semi-definite matrix (negative round-off eigenvalues -> 0)."""
    w, v = np.linalg.eigh(cov)
    return (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T


def gaussian_frechet_distance(mean_a, cov_a, mean_b, cov_b) -> float:
    """Squared Frechet (2-Wasserstein) distance between N(mean_a, cov_a) and N(mean_b, cov_b).

    .. math::  \\|\\mu_a - \\mu_b\\|^2 + \\mathrm{Tr}\\big(C_a + C_b - 2 (C_a C_b)^{1/2}\\big)

    The trace of the matrix square root is computed as that of the symmetric positive semi-definite
    :math:`(C_a^{1/2} C_b C_a^{1/2})^{1/2}` (same eigenvalues as :math:`(C_a C_b)^{1/2}`), from two
    ``eigh`` calls in float64 with round-off negative eigenvalues set to zero, so singular (rank-deficient
    sample) covariances are fine. NumPy, not traceable by JAX.
    """
    mean_a, mean_b = (np.asarray(m, dtype=np.float64) for m in (mean_a, mean_b))
    cov_a, cov_b = (np.asarray(c, dtype=np.float64) for c in (cov_a, cov_b))
    d = mean_a.shape[0]
    if mean_a.shape != (d,) or mean_b.shape != (d,) or cov_a.shape != (d, d) or cov_b.shape != (d, d):
        raise ValueError(f"expected means of shape (d,) and covariances of shape (d, d) with one d; got "
                         f"{mean_a.shape}, {cov_a.shape}, {mean_b.shape}, {cov_b.shape}")
    cov_a, cov_b = (cov_a + cov_a.T) / 2, (cov_b + cov_b.T) / 2
    root_a = _psd_sqrt(cov_a)
    middle = root_a @ cov_b @ root_a
    trace_root = np.sum(np.sqrt(np.clip(np.linalg.eigvalsh((middle + middle.T) / 2), 0.0, None)))
    value = np.sum((mean_a - mean_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * trace_root
    return float(max(value, 0.0))


def frechet_distance(features_a, features_b) -> float:
    """Frechet distance between two sets of feature vectors, ``(n, d)`` and ``(m, d)``: the
    :func:`gaussian_frechet_distance` between Gaussians with their sample means and covariances
    (Heusel et al., 2017, "FID", with Inception features; for the digits, use the zoo classifier's
    ``features``). Note that it is biased upwards for finite sets (more so for fewer rows than ``d``):
    compare only numbers computed from sets of the same sizes.
    """
    a, b = _rows("features_a", features_a), _rows("features_b", features_b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"features_a and features_b must have the same dimension, got {a.shape[1]} and {b.shape[1]}")
    if a.shape[0] < 2 or b.shape[0] < 2:
        raise ValueError(f"need at least 2 rows in each set for a covariance, got {a.shape[0]} and {b.shape[0]}")
    return gaussian_frechet_distance(a.mean(0), np.cov(a, rowvar=False).reshape(a.shape[1], -1),
                                     b.mean(0), np.cov(b, rowvar=False).reshape(b.shape[1], -1))


def nearest_neighbour_distance(samples, reference, chunk_size: int = 1 << 22) -> np.ndarray:
    """Euclidean distance from each row of ``samples`` ``(n, ...)`` to its nearest row of ``reference``
    ``(m, ...)`` (trailing axes flattened), shape ``(n,)``, float64.

    Squared distances are ``|x|^2 + |r|^2 - 2 x.r`` in float64, over blocks of samples holding at
    most ``chunk_size`` distances at a time, so memory stays bounded for large sets. A memorisation
    check: compare the samples' distances to the training set with held-out images' distances.
    """
    x, r = _rows("samples", samples), _rows("reference", reference)
    if x.shape[1] != r.shape[1]:
        raise ValueError(f"samples and reference must have the same dimension, got {x.shape[1]} and {r.shape[1]}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be a positive integer, got {chunk_size}")
    rows = max(1, int(chunk_size) // r.shape[0])
    r2 = np.sum(r**2, axis=1)
    out = np.empty(x.shape[0])
    for i in range(0, x.shape[0], rows):
        block = x[i:i + rows]
        sq = np.sum(block**2, axis=1)[:, None] + r2[None, :] - 2.0 * block @ r.T
        out[i:i + rows] = np.sqrt(np.clip(sq.min(axis=1), 0.0, None))
    return out


def psnr(estimate, truth, data_range: float = 2.0, axis=None):
    """Peak signal-to-noise ratio 10 log10(range^2 / MSE) in dB, the MSE taken over ``axis`` (all
    by default; ``(-2, -1)`` gives one value per image). ``data_range`` is the span of the pixel
    values: 2 for images in [-1, 1]."""
    mse = np.mean((np.asarray(estimate, np.float64) - np.asarray(truth, np.float64)) ** 2, axis=axis)
    return 10.0 * np.log10(data_range**2 / mse)


def interval_coverage(draws, truth, level: float = 0.9, axis: int = 0) -> float:
    """The fraction of ``truth``'s entries inside the central ``level`` credible intervals of
    ``draws`` (their quantiles along ``axis``, the draws' axis): about ``level`` for a calibrated
    posterior."""
    lo, hi = np.quantile(np.asarray(draws), [(1 - level) / 2, (1 + level) / 2], axis=axis)
    truth = np.asarray(truth)
    return float(np.mean((truth >= lo) & (truth <= hi)))
