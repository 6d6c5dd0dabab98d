"""Sample-based distances used to score samplers against exact draws."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["sliced_wasserstein"]


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
