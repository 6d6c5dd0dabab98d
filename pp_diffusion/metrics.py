"""Sample-based distances used to score samplers against exact draws, and generative models against data."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["expected_modes_covered", "frechet_distance", "gaussian_frechet_distance", "interval_coverage",
           "marginal_distortion", "mean_pairwise_distance", "mixture_labels", "modes_covered",
           "nearest_neighbour_distance", "psnr", "sliced_wasserstein", "vendi_score"]


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


# --------------------------------------------------------------------------- diversity within groups of samples


def _groups(name: str, groups, min_size: int = 2) -> np.ndarray:
    """``groups`` of shape ``(G, n, *event)`` as float64 rows (G, n, D), with n >= ``min_size``."""
    a = np.asarray(groups, dtype=np.float64)
    if a.ndim < 3:
        raise ValueError(f"{name} must have shape (G, n, *event) with at least one event axis, got shape {a.shape}; "
                         f"for a single group of shape (n, ...), pass {name}[None]")
    if a.shape[0] < 1 or a.shape[1] < min_size:
        raise ValueError(f"{name} must hold G >= 1 groups of n >= {min_size} samples, got shape {a.shape}")
    return a.reshape(a.shape[0], a.shape[1], -1)


def _pairwise_sq_distances(z: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances (G, n, n) within each group of rows z (G, n, D), from the differences
    themselves (no |a|^2 + |b|^2 - 2 a.b cancellation), one row of pairs at a time."""
    _, n, _ = z.shape
    out = np.zeros(z.shape[:2] + (n,))
    for i in range(n - 1):
        sq = np.sum((z[:, i + 1:] - z[:, i:i + 1]) ** 2, axis=-1)
        out[:, i, i + 1:] = sq
        out[:, i + 1:, i] = sq
    return out


def mean_pairwise_distance(groups) -> np.ndarray:
    """The mean Euclidean distance between the samples of each group: ``groups`` of shape
    ``(G, n, *event)`` (event axes flattened, n >= 2) gives the (G,) float64 values

    .. math::  \\frac{2}{n (n - 1)} \\sum_{i < j} \\|z_i - z_j\\|

    Pass ``groups[None]`` for one group of shape (n, ...).
    """
    z = _groups("groups", groups)
    n = z.shape[1]
    upper = np.triu_indices(n, k=1)
    return np.sqrt(_pairwise_sq_distances(z)[:, upper[0], upper[1]]).mean(axis=1)


def vendi_score(groups, kernel="cosine", bandwidth=None) -> np.ndarray:
    """The Vendi score of each group (Friedman & Dieng, 2023, "The Vendi Score: A Diversity Evaluation
    Metric for Machine Learning", TMLR): the exponential of the Shannon entropy of the eigenvalues
    :math:`\\lambda_i` of K / n, with K the n x n similarity matrix of the group (K_ii = 1),

    .. math::  VS = \\exp\\Big(-\\sum_i \\lambda_i \\log \\lambda_i\\Big),  \\quad 0 \\log 0 = 0

    an effective number of distinct samples: 1 when all n are identical, n when they are mutually
    orthogonal (cosine) or far apart (rbf). ``groups`` has shape ``(G, n, *event)`` (event axes flattened,
    n >= 2; pass ``groups[None]`` for one group). ``kernel`` is ``"cosine"``,
    :math:`K_{ij} = \\langle z_i, z_j \\rangle / (\\|z_i\\| \\|z_j\\|)`; ``"rbf"``,
    :math:`K_{ij} = \\exp(-\\|z_i - z_j\\|^2 / h)` with the required ``bandwidth`` h > 0; or a callable
    ``k(a, b) -> scalar`` on flattened rows, symmetric, positive semi-definite and with k(a, a) = 1
    (called for the pairs i <= j only). Eigenvalues by ``numpy.linalg.eigvalsh`` in float64, round-off
    negatives set to 0; returns (G,) float64. NumPy, not traceable by JAX.
    """
    z = _groups("groups", groups)
    if bandwidth is not None and not (isinstance(kernel, str) and kernel == "rbf"):
        raise ValueError(f"bandwidth is only used by kernel='rbf', got bandwidth={bandwidth!r} with kernel={kernel!r}")
    if isinstance(kernel, str) and kernel == "cosine":
        norms = np.linalg.norm(z, axis=-1, keepdims=True)
        if np.any(norms == 0):
            raise ValueError("groups has a zero row, whose cosine similarity is undefined: use kernel='rbf'")
        u = z / norms
        K = u @ np.swapaxes(u, 1, 2)
    elif isinstance(kernel, str) and kernel == "rbf":
        if bandwidth is None or not np.isfinite(bandwidth) or bandwidth <= 0:
            raise ValueError(f"kernel='rbf' needs a positive bandwidth, got bandwidth={bandwidth!r}")
        K = np.exp(-_pairwise_sq_distances(z) / float(bandwidth))
    elif callable(kernel):
        G, n, _ = z.shape
        K = np.empty((G, n, n))
        for g in range(G):
            for i in range(n):
                for j in range(i, n):
                    K[g, i, j] = K[g, j, i] = float(kernel(z[g, i], z[g, j]))
        diagonal = np.diagonal(K, axis1=1, axis2=2)
        if not np.allclose(diagonal, 1.0, rtol=0.0, atol=1e-6):
            raise ValueError(f"kernel must give k(a, a) = 1, got values from {diagonal.min()} to {diagonal.max()}")
    else:
        raise ValueError(f"kernel must be 'cosine', 'rbf' or a callable k(a, b), got {kernel!r}")
    K = (K + np.swapaxes(K, 1, 2)) / 2
    lam = np.linalg.eigvalsh(K / K.shape[1])
    if np.any(lam < -1e-6):
        raise ValueError(f"kernel matrix is not positive semi-definite (eigenvalue {lam.min() * K.shape[1]:.3g})")
    lam = np.clip(lam, 0.0, None)
    with np.errstate(divide="ignore", invalid="ignore"):
        entropy = -np.sum(np.where(lam > 0, lam * np.log(lam), 0.0), axis=1)
    return np.exp(entropy)


def mixture_labels(mixture, x) -> np.ndarray:
    """The component of a :class:`pp_diffusion.GaussianMixture` most responsible for each sample:
    :math:`\\arg\\max_k w_k N(x; \\mu_k, C_k)`, the exact responsibilities of the clean data law
    (alpha = 1, sigma = 0: the covariances must be non-singular). ``x`` of shape (..., d) gives an
    integer array of shape ``x.shape[:-1]``: the labels for :func:`modes_covered`.
    """
    x = jnp.asarray(x)
    if x.ndim < 1 or x.shape[-1] != mixture.dim:
        raise ValueError(f"x must have shape (..., {mixture.dim}) for this mixture, got shape {x.shape}")
    flat = x.reshape(-1, mixture.dim)
    resp = jax.vmap(lambda v: mixture.responsibilities(v, 1.0, 0.0))(flat)
    return np.asarray(jnp.argmax(resp, axis=-1)).reshape(x.shape[:-1])


def modes_covered(labels, num_modes=None) -> np.ndarray:
    """The number of distinct labels in each group: ``labels`` of shape (G, n), integers (e.g. from
    :func:`mixture_labels`), gives (G,) integers, the modes a group of n samples hits (the mode count
    of mixtures of Gaussians in the GAN literature, e.g. Metz et al., 2017, "Unrolled GANs"). With
    ``num_modes``, the labels are checked to lie in [0, num_modes). Compare with
    :func:`expected_modes_covered`, the value for i.i.d. draws.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2 or not (np.issubdtype(labels.dtype, np.integer) or labels.dtype == bool):
        raise ValueError(f"labels must be an integer array of shape (G, n), got shape {labels.shape} "
                         f"and dtype {labels.dtype}")
    if num_modes is not None:
        if int(num_modes) != num_modes or num_modes < 1:
            raise ValueError(f"num_modes must be a positive integer, got {num_modes!r}")
        if labels.size and (labels.min() < 0 or labels.max() >= num_modes):
            raise ValueError(f"labels must lie in [0, num_modes) = [0, {int(num_modes)}), "
                             f"got values from {labels.min()} to {labels.max()}")
    if labels.shape[1] == 0:
        return np.zeros(labels.shape[0], dtype=np.int64)
    ordered = np.sort(labels, axis=1)
    return 1 + np.sum(ordered[:, 1:] != ordered[:, :-1], axis=1)


def expected_modes_covered(weights, n: int) -> float:
    """The expected number of distinct categories among n i.i.d. draws of a categorical law with
    probabilities ``weights`` (non-negative, normalised here), by linearity over the categories:

    .. math::  E[\\#\\text{modes}] = \\sum_k 1 - (1 - w_k)^n

    e.g. 6.513 for 10 equal weights and n = 10: the floor that a diversity method should beat with
    :func:`modes_covered`.
    """
    w = np.asarray(weights, dtype=np.float64)
    if w.ndim != 1 or w.size == 0 or not np.all(np.isfinite(w)) or np.any(w < 0) or w.sum() <= 0:
        raise ValueError(f"weights must be a non-empty 1-D array of finite non-negative numbers with a positive "
                         f"sum, got {weights!r}")
    if int(n) != n or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    w = w / w.sum()
    return float(np.sum(1.0 - (1.0 - w) ** int(n)))


def marginal_distortion(rng_key, groups, exact_draws, num_directions: int = 1000) -> float:
    """How far a diversity method moves the law of each sample away from the data: the
    :func:`sliced_wasserstein` (p = 1) distance between all the groups' draws pooled,
    ``(G * n, d)`` from ``groups`` of shape ``(G, n, *event)``, and exact data draws of shape ``(m, *event)``
    (event axes flattened). The diversity of a group is bought by its correlations; a method
    whose every sample is still a draw of the data law keeps this at the floor that i.i.d. draws
    from the model give (the sampling error of ``G * n`` against m draws).
    """
    shape = np.shape(groups)
    if len(shape) < 3 or shape[0] < 1 or shape[1] < 1:
        raise ValueError(f"groups must have shape (G, n, *event) with at least one event axis, got shape {shape}; "
                         f"for a single group of shape (n, ...), pass groups[None]")
    if np.ndim(exact_draws) < 2 or np.shape(exact_draws)[0] < 1:
        raise ValueError(f"exact_draws must have shape (m, *event) with m >= 1, got shape {np.shape(exact_draws)}")
    pooled = jnp.asarray(groups).reshape(shape[0] * shape[1], -1)
    exact = jnp.asarray(exact_draws)
    exact = exact.reshape(exact.shape[0], -1)
    if pooled.shape[1] != exact.shape[1]:
        raise ValueError(f"groups and exact_draws must have the same dimension, got {pooled.shape[1]} "
                         f"and {exact.shape[1]}")
    return float(sliced_wasserstein(rng_key, pooled, exact, num_directions=num_directions))
