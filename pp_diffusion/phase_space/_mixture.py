"""The exact Gaussian mixture under a phase-space forward process.

For data x_0 ~ sum_k w_k N(mu_k, C_k) (a :class:`~pp_diffusion.GaussianMixture`, isotropic, diagonal
or full covariances) the PSLD kernel z_t | x_0 ~ N(a_t x_0, Sigma_t) per coordinate, with a_t the
first column of A_t = exp(F t) and Sigma_t including the initial momentum variance, is linear, so
the augmented marginal is a Gaussian mixture. In the eigenbasis C_k = Q_k diag(l_k) Q_k^T (both x
and m rotated by Q_k^T: the kernel acts identically on every coordinate, so it commutes with the
rotation) coordinate j of component k is an independent 2-D Gaussian,

.. math::
    \\tilde z_j \\mid k \\sim N\\big(a_t \\tilde\\mu_{kj},\\ l_{kj}\\, a_t a_t^T + \\Sigma_t\\big),

which gives the log-density, the score (grad with respect to both x and m) and the posterior
mean E[x_0 | z_t] = sum_k r_k(z) (mu_k + Q_k [l_kj a_t^T S_kj^{-1} (z~_j - a_t mu~_kj)]_j), with
S_kj = l_kj a a^T + Sigma_t and r_k the responsibilities. All 2 x 2 inverses are explicit.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from pp_diffusion.gmm import GaussianMixture
from pp_diffusion.phase_space._model import AugmentedModel
from pp_diffusion.phase_space._psld import PSLD, eps_to_score

__all__ = ["AugmentedGaussianMixture"]

_LOG_2PI = float(np.log(2 * np.pi))


class AugmentedGaussianMixture(eqx.Module):
    """The augmented marginals p_t(z), z = [x; m] of shape ``(2, d)``, of a mixture under ``sde``.

    Parameters
    ----------
    mixture
        The data law, a :class:`~pp_diffusion.GaussianMixture` in d dimensions.
    sde
        The :class:`PSLD` (or CLD) forward process.
    """

    mixture: GaussianMixture
    sde: PSLD

    def __init__(self, mixture: GaussianMixture, sde: PSLD):
        if not isinstance(mixture, GaussianMixture):
            raise TypeError(f"mixture must be a GaussianMixture, got {type(mixture).__name__}")
        if not isinstance(sde, PSLD):
            raise TypeError(f"sde must be a PSLD (or CLD), got {type(sde).__name__}")
        self.mixture = mixture
        self.sde = sde

    @property
    def dim(self) -> int:
        return self.mixture.dim

    def _rotate(self, v):  # v (2, d) -> (K, 2, d): Q_k^T applied to each row
        m = self.mixture
        if m.eigvecs is None:
            return jnp.broadcast_to(v[None], (m.num_components, *v.shape))
        return jnp.einsum("kji,rj->kri", m.eigvecs.astype(v.dtype), v)

    def _unrotate(self, v):  # v (K, r, d) -> Q_k v per row
        m = self.mixture
        return v if m.eigvecs is None else jnp.einsum("kij,krj->kri", m.eigvecs.astype(v.dtype), v)

    def _terms(self, z, t):
        z = jnp.asarray(z)
        if z.shape != (2, self.dim):
            raise ValueError(f"z must have shape (2, {self.dim}), got {z.shape}")
        dtype = jnp.result_type(z, jnp.float32)
        A, Sig = self.sde.kernel(jnp.asarray(t, dtype))
        a = A[:, 0]
        lam = self.mixture.eigvals.astype(dtype)  # (K, d)
        means = self.mixture.means.astype(dtype)  # (K, d)
        if self.mixture.eigvecs is None:
            mu_t = means
        else:
            mu_t = jnp.einsum("kji,kj->ki", self.mixture.eigvecs.astype(dtype), means)
        resid = self._rotate(z) - a[None, :, None] * mu_t[:, None, :]  # (K, 2, d)
        # S = l a a^T + Sig, entries (K, d)
        s00 = lam * a[0] ** 2 + Sig[0, 0]
        s01 = lam * a[0] * a[1] + Sig[0, 1]
        s11 = lam * a[1] ** 2 + Sig[1, 1]
        det = s00 * s11 - s01**2
        r0, r1 = resid[:, 0], resid[:, 1]
        sol0 = (s11 * r0 - s01 * r1) / det  # S^{-1} r
        sol1 = (-s01 * r0 + s00 * r1) / det
        quad = r0 * sol0 + r1 * sol1
        log_n = -0.5 * jnp.sum(quad + jnp.log(det) + 2 * _LOG_2PI, axis=-1)
        terms = self.mixture.log_weights.astype(dtype) + log_n
        return terms, jnp.stack([sol0, sol1], axis=1), a, lam

    def marginal_log_prob(self, z, t):
        """log p_t(z) for one z of shape ``(2, d)``."""
        terms, *_ = self._terms(z, t)
        return logsumexp(terms)

    def score(self, z, t):
        """grad_z log p_t(z), shape ``(2, d)``."""
        terms, sol, _, _ = self._terms(z, t)
        r = jax.nn.softmax(terms)
        return -jnp.sum(r[:, None, None] * self._unrotate(sol), axis=0)

    def denoise(self, z, t):
        """E[x_0 | z_t = z], shape ``(d,)``."""
        terms, sol, a, lam = self._terms(z, t)
        r = jax.nn.softmax(terms)
        gain = lam * (a[0] * sol[:, 0] + a[1] * sol[:, 1])  # l a^T S^{-1} resid, (K, d) rotated
        post = self.mixture.means.astype(gain.dtype) + self._unrotate(gain[:, None])[:, 0]
        return jnp.sum(r[:, None] * post, axis=0)

    def eps(self, z, t):
        """The exact eps-prediction, -L_t^T s(z, t) (what a perfectly trained network outputs)."""
        _, L = eps_to_score(self.sde, t, jnp.result_type(z, float))
        return -jnp.tensordot(L.T, self.score(z, t), axes=1)

    def model(self, name: str = "exact", t_min: float = 1e-3) -> AugmentedModel:
        """An :class:`AugmentedModel` whose network is the exact :meth:`eps` (``data_var`` the mixture's
        mean per-coordinate variance, as :meth:`GaussianMixture.diffusion_model`)."""
        return AugmentedModel(self.eps, self.sde, (self.dim,), name=name, t_min=t_min,
                              data_var=float(self.mixture.mean_variance()))

    def sample(self, rng_key, num_samples: int, t) -> jax.Array:
        """Exact draws of z_t, shape ``(num_samples, 2, d)``: x_0 from the mixture, then the kernel."""
        k0, k1 = jax.random.split(rng_key)
        x0 = self.mixture.sample(k0, num_samples)
        return jax.vmap(lambda k, x: self.sde.perturb(k, x, t).z_t)(jax.random.split(k1, num_samples), x0)
