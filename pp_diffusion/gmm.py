"""The exact Gaussian-mixture diffusion model: the ground truth every sampler is tested against.

For data x_0 ~ sum_k w_k N(mu_k, C_k) and x_t = alpha x_0 + sigma eps, every quantity a sampler
needs is closed-form:

.. math::
    p_t(x) = \\sum_k w_k \\, N(x;\\ \\alpha\\mu_k,\\ \\alpha^2 C_k + \\sigma^2 I), \\qquad
    E[x_0 \\mid x_t = x] = \\sum_k r_k(x)\\,\\big(\\mu_k + \\alpha C_k(\\alpha^2 C_k + \\sigma^2 I)^{-1}(x - \\alpha\\mu_k)\\big),

with r_k(x) the component responsibilities under p_t. Under a linear-Gaussian observation
y = A x_0 + N(0, Sigma_y) the posterior is again a Gaussian mixture, with weights
proportional to w_k N(y; A mu_k, A C_k A^T + Sigma_y), and the evidence is
p(y) = sum_k w_k N(y; A mu_k, A C_k A^T + Sigma_y).

Covariances are stored by their eigendecomposition C_k = Q_k diag(l_k) Q_k^T, so the noisy
marginal at any (alpha, sigma) costs no matrix factorisation; isotropic and diagonal
components skip the rotation entirely (the common benchmark case, cheap even at d = 800).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jax.typing import ArrayLike

from pp_diffusion.model import DiffusionModel
from pp_diffusion.parameterization import from_x0
from pp_diffusion.schedules import Schedule

__all__ = ["GaussianMixture"]

_LOG_2PI = float(np.log(2 * np.pi))


class GaussianMixture(eqx.Module):
    """A mixture of K Gaussians in d dimensions with exact diffusion quantities.

    Parameters
    ----------
    weights
        ``(K,)`` non-negative mixture weights (normalised here).
    means
        ``(K, d)`` component means.
    covariances
        ``(K,)`` variances of isotropic components, ``(K, d)`` diagonal variances, or
        ``(K, d, d)`` full symmetric positive semi-definite covariances. Defaults to identity.
    """

    log_weights: jnp.ndarray  # (K,)
    means: jnp.ndarray  # (K, d)
    eigvals: jnp.ndarray  # (K, d)
    eigvecs: jnp.ndarray | None  # (K, d, d) or None when every covariance is diagonal

    def __init__(self, weights: ArrayLike, means: ArrayLike, covariances: ArrayLike | None = None):
        w = np.asarray(weights, dtype=np.float64)
        mu = np.asarray(means, dtype=np.float64)
        if mu.ndim != 2:
            raise ValueError(f"means must have shape (K, d), got {mu.shape}")
        k, d = mu.shape
        if w.shape != (k,) or np.any(w < 0) or not np.any(w > 0):
            raise ValueError(
                f"weights must be {k} non-negative numbers, not all zero (one per mean), got shape {w.shape}"
            )
        cov = np.ones(k) if covariances is None else np.asarray(covariances, dtype=np.float64)
        vecs = None
        if cov.shape == (k,):
            vals = np.repeat(cov[:, None], d, axis=1)
        elif cov.shape == (k, d):
            vals = cov
        elif cov.shape == (k, d, d):
            if not np.allclose(cov, np.swapaxes(cov, 1, 2), atol=1e-8 * max(1.0, np.abs(cov).max())):
                raise ValueError("covariances must be symmetric")
            vals, vecs = np.linalg.eigh(cov)
            # Round-off can make the eigenvalues of a singular PSD matrix slightly negative;
            # anything beyond that is a real negative eigenvalue (checked below, not clipped away).
            tol = 1e-8 * max(1.0, np.abs(cov).max())
            vals = np.where((vals < 0) & (vals >= -tol), 0.0, vals)
        else:
            raise ValueError(
                f"covariances must have shape ({k},), ({k}, {d}) or ({k}, {d}, {d}), got {cov.shape}"
            )
        if np.any(vals < -1e-10):
            raise ValueError("covariances must be positive semi-definite")
        with np.errstate(divide="ignore"):  # a zero weight (e.g. a posterior weight that underflows) is log 0 = -inf
            self.log_weights = jnp.asarray(np.log(w / w.sum()), dtype=jnp.float32)
        self.means = jnp.asarray(mu, dtype=jnp.float32)
        self.eigvals = jnp.asarray(np.maximum(vals, 0.0), dtype=jnp.float32)
        self.eigvecs = None if vecs is None else jnp.asarray(vecs, dtype=jnp.float32)

    # ------------------------------------------------------------------ shapes and basics
    @property
    def num_components(self) -> int:
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def weights(self) -> jnp.ndarray:
        return jnp.exp(self.log_weights)

    def covariances(self) -> jnp.ndarray:
        """Dense ``(K, d, d)`` covariances (for inspection; the maths uses the eigendecomposition)."""
        if self.eigvecs is None:
            return jax.vmap(jnp.diag)(self.eigvals)
        return jnp.einsum("kij,kj,klj->kil", self.eigvecs, self.eigvals, self.eigvecs)

    def covariance(self) -> np.ndarray:
        """The mixture's ``(d, d)`` covariance Cov[x] = sum_k w_k (C_k + mu_k mu_k^T) - mu mu^T (float64),
        e.g. the data covariance of :func:`pp_diffusion.smc.mcgdiff`."""
        w = np.asarray(self.weights, dtype=np.float64)
        mu = np.asarray(self.means, dtype=np.float64)
        mean = w @ mu
        within = np.einsum("k,kij->ij", w, np.asarray(self.covariances(), dtype=np.float64))
        return within + (w[:, None] * mu).T @ mu - np.outer(mean, mean)

    def mean_variance(self) -> float:
        """The average per-coordinate variance of the mixture: trace(Cov[x]) / d."""
        w = np.asarray(self.weights, dtype=np.float64)
        mu = np.asarray(self.means, dtype=np.float64)
        within = np.asarray(self.eigvals, dtype=np.float64).sum(axis=1)
        between = np.sum((mu - w @ mu) ** 2, axis=1)
        return float(w @ (within + between) / self.dim)

    def _rotate(self, v):
        """Q_k^T v_k for v of shape (K, d)."""
        return v if self.eigvecs is None else jnp.einsum("kji,kj->ki", self.eigvecs, v)

    def _unrotate(self, v):
        """Q_k v_k for v of shape (K, d)."""
        return v if self.eigvecs is None else jnp.einsum("kij,kj->ki", self.eigvecs, v)

    # ------------------------------------------------------------------ noisy marginals
    def _component_terms(self, x, alpha, sigma):
        """Per-component log w_k N(x; alpha mu_k, alpha^2 C_k + sigma^2 I), the rotated residuals and variances."""
        x = jnp.asarray(x)
        var = alpha**2 * self.eigvals + sigma**2  # (K, d)
        resid = self._rotate(x[None, :] - alpha * self.means)  # (K, d)
        log_norm = -0.5 * jnp.sum(resid**2 / var + jnp.log(var) + _LOG_2PI, axis=-1)
        return self.log_weights + log_norm, resid, var

    def marginal_log_prob(self, x, alpha, sigma):
        """log p_t(x) for one x of shape (d,) at the noise level (alpha, sigma)."""
        terms, _, _ = self._component_terms(x, alpha, sigma)
        return logsumexp(terms)

    def responsibilities(self, x, alpha, sigma):
        terms, _, _ = self._component_terms(x, alpha, sigma)
        return jax.nn.softmax(terms)

    def score(self, x, alpha, sigma):
        """grad_x log p_t(x)."""
        terms, resid, var = self._component_terms(x, alpha, sigma)
        r = jax.nn.softmax(terms)
        return -jnp.sum(r[:, None] * self._unrotate(resid / var), axis=0)

    def denoise(self, x, alpha, sigma):
        """E[x_0 | x_t = x], the exact Tweedie estimate."""
        terms, resid, var = self._component_terms(x, alpha, sigma)
        r = jax.nn.softmax(terms)
        gain = alpha * self.eigvals / var
        post_means = self.means + self._unrotate(gain * resid)
        return jnp.sum(r[:, None] * post_means, axis=0)

    def log_prob(self, x):
        """log p_0(x) (needs non-singular covariances); x of shape (..., d)."""
        x = jnp.asarray(x)
        flat = x.reshape(-1, self.dim)
        out = jax.vmap(lambda v: self.marginal_log_prob(v, 1.0, 0.0))(flat)
        return out.reshape(x.shape[:-1])

    def sample(self, key, num_samples: int, alpha=1.0, sigma=0.0):
        """Exact draws of x_t (of x_0 with the defaults), shape ``(num_samples, d)``.

        With full covariances each draw is rotated by its component's eigenvectors in batches of
        at most ~4M gathered matrix entries (``jax.lax.map``), never an (n, d, d) array.
        """
        k_comp, k_noise = jax.random.split(key)
        comp = jax.random.categorical(k_comp, self.log_weights, shape=(num_samples,))
        z = jax.random.normal(k_noise, (num_samples, self.dim))
        std = jnp.sqrt(alpha**2 * self.eigvals[comp] + sigma**2)
        dev = std * z
        if self.eigvecs is not None:
            batch = max(1, min(num_samples, 4_000_000 // (self.dim * self.dim)))
            rotate = lambda cv: self.eigvecs[cv[0]] @ cv[1]
            dev = jax.lax.map(rotate, (comp, dev), batch_size=batch)
        return alpha * self.means[comp] + dev

    # ------------------------------------------------------------------ linear-Gaussian observations
    def _observation_terms(self, A, y, noise_cov):
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        if A.shape[1] != self.dim:
            raise ValueError(f"A must have shape (dy, {self.dim}), got {A.shape}")
        if y.shape != (A.shape[0],):
            raise ValueError(f"y must have shape ({A.shape[0]},) to match A {A.shape}, got {y.shape}")
        noise = np.asarray(noise_cov, dtype=np.float64)
        if noise.ndim == 0:
            noise = noise * np.eye(A.shape[0])
        elif noise.ndim == 1:
            noise = np.diag(noise)
        if noise.shape != (A.shape[0], A.shape[0]):
            raise ValueError(
                f"noise_cov must be a scalar, ({A.shape[0]},) or ({A.shape[0]}, {A.shape[0]}), got {noise.shape}"
            )
        # Rebuild the covariances in float64 from the stored factors (not via the float32
        # covariances()): a singular direction then stays singular in the posterior to ~1e-16,
        # instead of picking up a spurious variance of float32 round-off (~1e-7 * scale).
        vals = np.asarray(self.eigvals, dtype=np.float64)
        if self.eigvecs is None:
            C = vals[:, :, None] * np.eye(self.dim)
        else:
            Q = np.asarray(self.eigvecs, dtype=np.float64)
            C = np.einsum("kij,kj,klj->kil", Q, vals, Q)
        mu = np.asarray(self.means, dtype=np.float64)
        S = np.einsum("ij,kjl,ml->kim", A, C, A) + noise  # (K, dy, dy)
        resid = y - mu @ A.T  # (K, dy)
        L = np.linalg.cholesky(S)
        sol = np.linalg.solve(S, resid[..., None])[..., 0]
        logdet = 2 * np.sum(np.log(np.diagonal(L, axis1=1, axis2=2)), axis=1)
        log_lik = -0.5 * (np.sum(resid * sol, axis=1) + logdet + A.shape[0] * np.log(2 * np.pi))
        return A, C, mu, S, resid, log_lik

    def log_evidence(self, A, y, noise_cov) -> float:
        """log p(y) for y = A x_0 + N(0, noise_cov); ``noise_cov`` a scalar variance, a diagonal or a matrix."""
        *_, log_lik = self._observation_terms(A, y, noise_cov)
        lw = np.asarray(self.log_weights, dtype=np.float64) + log_lik
        m = lw.max()
        return float(m + np.log(np.exp(lw - m).sum()))

    def posterior(self, A, y, noise_cov) -> "GaussianMixture":
        """The exact posterior p(x_0 | y) under y = A x_0 + N(0, noise_cov), a Gaussian mixture."""
        A, C, mu, S, resid, log_lik = self._observation_terms(A, y, noise_cov)
        gain = np.einsum("kij,lj,klm->kim", C, A, np.linalg.inv(S))  # C A^T S^-1, (K, d, dy)
        post_mu = mu + np.einsum("kim,km->ki", gain, resid)
        post_C = C - np.einsum("kim,ml,kln->kin", gain, A, C)
        post_C = 0.5 * (post_C + np.swapaxes(post_C, 1, 2))
        lw = np.asarray(self.log_weights, dtype=np.float64) + log_lik
        w = np.exp(lw - lw.max())
        return GaussianMixture(w, post_mu, post_C)

    # ------------------------------------------------------------------ rewards, classifiers, constraints
    def _dense64(self):
        """(float64 weights, means, covariances) for the closed forms below."""
        w = np.exp(np.asarray(self.log_weights, np.float64))
        vals = np.asarray(self.eigvals, np.float64)
        if self.eigvecs is None:
            C = vals[:, :, None] * np.eye(self.dim)
        else:
            Q = np.asarray(self.eigvecs, np.float64)
            C = np.einsum("kij,kj,klj->kil", Q, vals, Q)
        return w / w.sum(), np.asarray(self.means, np.float64), C

    def tilt(self, a, lam: float = 1.0) -> tuple["GaussianMixture", float]:
        """The linear reward tilt p(x) exp(lam a . x) / Z: component k becomes N(mu_k + lam C_k a, C_k)
        with weight proportional to w_k exp(lam a . mu_k + lam^2 a^T C_k a / 2); returns the tilted
        mixture and log Z = log E[exp(lam a . x)]."""
        w, mu, C = self._dense64()
        a = np.asarray(a, np.float64).reshape(self.dim)
        shift = lam * np.einsum("kij,j->ki", C, a)
        log_terms = np.log(w) + lam * mu @ a + 0.5 * lam**2 * np.einsum("i,kij,j->k", a, C, a)
        m = log_terms.max()
        log_z = float(m + np.log(np.exp(log_terms - m).sum()))
        return GaussianMixture(np.exp(log_terms - m), mu + shift, C), log_z

    def product(self, other: "GaussianMixture") -> tuple["GaussianMixture", float]:
        """The normalised product p(x) q(x) / Z of this mixture and ``other``, and log Z = log int p q dx.
        Component (i, j) is N(m_ij, P_ij) with P_ij = C_i (C_i + D_j)^-1 D_j, m_ij = D_j (C_i + D_j)^-1 mu_i +
        C_i (C_i + D_j)^-1 nu_j and weight w_i v_j N(mu_i; nu_j, C_i + D_j), whose sum is Z."""
        if not isinstance(other, GaussianMixture) or other.dim != self.dim:
            raise ValueError(f"other must be a GaussianMixture in d = {self.dim}, got {other!r}")
        w, mu, C = self._dense64()
        v, nu, D = other._dense64()
        S = C[:, None] + D[None, :]  # (K, L, d, d)
        S_inv = np.linalg.inv(S)
        P = np.einsum("kab,klbc,lcd->klad", C, S_inv, D)
        m = (np.einsum("lab,klbc,kc->kla", D, S_inv, mu) + np.einsum("kab,klbc,lc->kla", C, S_inv, nu))
        resid = mu[:, None] - nu[None, :]
        _, logdet = np.linalg.slogdet(S)
        log_n = -0.5 * (np.einsum("kla,klab,klb->kl", resid, S_inv, resid) + logdet + self.dim * np.log(2 * np.pi))
        log_terms = (np.log(w)[:, None] + np.log(v)[None, :] + log_n).reshape(-1)
        top = log_terms.max()
        log_z = float(top + np.log(np.exp(log_terms - top).sum()))
        P = 0.5 * (P + np.swapaxes(P, -1, -2))
        return GaussianMixture(np.exp(log_terms - top), m.reshape(-1, self.dim), P.reshape(-1, self.dim, self.dim)), log_z

    def group_log_posterior(self, x, groups, alpha=1.0, sigma=0.0):
        """log p(c | x_t = x) for the Bayes classifier whose classes are groups of components: ``groups``
        is a length-K integer array of class labels, p(c | x_t) = sum_{k: groups_k = c} w_k p_t^k(x) / p_t(x).
        At (alpha, sigma) = (1, 0) the clean classifier; at a noise level, the exact noise-conditional
        one, which is E[p(c | x_0) | x_t]: the ideal twist of an observed class. One x of shape (d,);
        returns the (num_classes,) log-probabilities."""
        groups = np.asarray(groups)
        terms, _, _ = self._component_terms(x, alpha, sigma)
        num = int(groups.max()) + 1
        member = jnp.asarray(groups[None, :] == np.arange(num)[:, None])
        per_class = logsumexp(jnp.where(member, terms[None, :], -jnp.inf), axis=1)
        return per_class - logsumexp(terms)

    def condition_on_group(self, groups, c: int) -> tuple["GaussianMixture", float]:
        """Conditioning on class c of :meth:`group_log_posterior`: the mixture of group c's components,
        and log p(c) = log sum_{k in c} w_k."""
        w, mu, C = self._dense64()
        keep = np.asarray(groups) == c
        if not keep.any():
            raise ValueError(f"no component has class {c}")
        return GaussianMixture(w[keep], mu[keep], C[keep]), float(np.log(w[keep].sum()))

    def halfspace_log_mass(self, a, b: float) -> float:
        """log P(a . x > b): sum_k w_k Phi((a . mu_k - b) / sqrt(a^T C_k a)), the normaliser of the hard
        constraint G(x) = 1[a . x > b]."""
        from scipy.special import log_ndtr

        w, mu, C = self._dense64()
        a = np.asarray(a, np.float64).reshape(self.dim)
        sd = np.sqrt(np.einsum("i,kij,j->k", a, C, a))
        terms = np.log(w) + log_ndtr((mu @ a - b) / sd)
        m = terms.max()
        return float(m + np.log(np.exp(terms - m).sum()))

    # ------------------------------------------------------------------ as a diffusion model
    def diffusion_model(self, schedule: Schedule, parameterization: str = "x0", name: str = "gmm") -> DiffusionModel:
        """This mixture as a :class:`DiffusionModel` whose network is the exact prediction of the given kind."""
        network = _ExactNetwork(self, schedule, parameterization)
        return DiffusionModel(network, parameterization, schedule, (self.dim,), data_distribution=self, name=name,
                              data_var=self.mean_variance())


class _ExactNetwork(eqx.Module):
    """The exact eps / x0 / v / score / energy prediction of a mixture, callable as ``network(x, t)``."""

    mixture: GaussianMixture
    schedule: Schedule
    kind: str = eqx.field(static=True)

    def __call__(self, x, t):
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        if self.kind == "energy":
            return -self.mixture.marginal_log_prob(x, alpha, sigma)
        return from_x0(self.kind, self.mixture.denoise(x, alpha, sigma), x, alpha, sigma)
