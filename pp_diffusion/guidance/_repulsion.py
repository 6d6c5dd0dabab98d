"""The joint potential of a group of n samples: Phi(z_1..z_n) = sum_{i<j} k(z_i, z_j).

The default pair potential is the RBF kernel k(a, b) = exp(-||a - b||^2 / h), whose bandwidth is
either fixed or the median heuristic of particle guidance (Corso et al., ICLR 2024),

.. math::  h = \\mathrm{median}_{i<j} \\lVert z_i - z_j \\rVert^2 / \\log(n - 1),

which makes sum_{j != i} k(z_i, z_j) about 1 for each i. At n = 2 the denominator log 1 is 0: h is
infinite and the repulsion vanishes without a word, so the denominator is floored at log 2 (the value
at n = 3; one other particle then sits at k = 1/2). The heuristic bandwidth is held constant in the
gradient (as the reference does): grad_{z_i} Phi = -(2 / h) sum_j (z_i - z_j) k(z_i, z_j).

For a symmetric k, grad_{z_i} Phi = grad_{z_i} sum_{j != i} k(z_i, z_j): particle guidance's term
-strength grad_{z_i} sum_j k(z_i, z_j) is -strength grad_{z_i} Phi, and it is the gradient of the
log-density exp(-gamma Phi) that :func:`pp_diffusion.smc.repulsive` targets (gamma = strength).
A custom pair potential ``kernel(a, b) -> scalar`` replaces the RBF (no bandwidth then).
"""

from __future__ import annotations

import math
from typing import Callable

import jax
import jax.numpy as jnp

__all__ = ["median_bandwidth", "rbf", "joint_potential", "pair_values"]


def _pair_squared_distances(z):
    """||z_i - z_j||^2 over the pairs i < j of the rows of ``z`` ``(n, ...)`` (trailing axes flattened),
    and the pairs' indices."""
    i, j = jnp.triu_indices(z.shape[0], k=1)
    return jnp.sum(jnp.reshape(z[i] - z[j], (i.shape[0], -1)) ** 2, axis=-1), (i, j)


def _median_heuristic(d2, n: int):
    return jnp.median(jax.lax.stop_gradient(d2)) / math.log(max(n - 1, 2))


def median_bandwidth(z):
    """The median heuristic median_{i<j} ||z_i - z_j||^2 / max(log(n - 1), log 2) (module docstring),
    for ``z`` of shape ``(n, ...)`` with n >= 2; constant under differentiation."""
    return _median_heuristic(_pair_squared_distances(z)[0], z.shape[0])


def rbf(a, b, bandwidth):
    """k(a, b) = exp(-||a - b||^2 / bandwidth)."""
    return jnp.exp(-jnp.sum((a - b) ** 2) / bandwidth)


def pair_values(z, kernel: Callable | None = None, bandwidth=None):
    """The values k(z_i, z_j) over the pairs i < j, ``(n (n - 1) / 2,)``, and the bandwidth used (NaN for
    a custom ``kernel``). ``bandwidth`` None takes the median heuristic for the RBF."""
    if kernel is None:
        d2, _ = _pair_squared_distances(z)
        h = _median_heuristic(d2, z.shape[0]) if bandwidth is None else jnp.asarray(bandwidth, z.dtype)
        return jnp.exp(-d2 / h), h
    i, j = jnp.triu_indices(z.shape[0], k=1)
    return jax.vmap(kernel)(z[i], z[j]), jnp.full((), jnp.nan, z.dtype)


def joint_potential(z, kernel: Callable | None = None, bandwidth=None):
    """``(Phi, h)``: Phi(z) = sum_{i<j} k(z_i, z_j) for ``z`` ``(n, ...)`` and the bandwidth used."""
    values, h = pair_values(z, kernel, bandwidth)
    return jnp.sum(values), h
