"""The phase-space Langevin diffusion (PSLD) forward process on z = [x; m], with CLD as Gamma -> 0.

Each data coordinate x carries a momentum m, and the pair follows the same 2 x 2 linear SDE
(independently per coordinate):

.. math::
    dx = \\tfrac{\\beta}{2}(M^{-1} m - \\Gamma x)\\,dt + \\sqrt{\\beta\\Gamma}\\,dW_x, \\qquad
    dm = \\tfrac{\\beta}{2}(-x - \\nu m)\\,dt + \\sqrt{\\beta M \\nu}\\,dW_m,

i.e. dz = F z dt + G dW with F = (beta/2) [[-Gamma, 1/M], [-1, -nu]] and
G = diag(sqrt(beta Gamma), sqrt(beta M nu)), under critical damping 1/M = (Gamma - nu)^2 / 4.
Critical damping makes F's eigenvalue repeated, lambda = -beta (Gamma + nu) / 4, so the mean
matrix is closed-form, exp(F t) = e^{lambda t} (I + (F - lambda I) t).

Stationary law. Sigma_inf = diag(1, M) solves the Lyapunov equation
F Sigma + Sigma F^T + G G^T = 0 (for every Gamma >= 0, so also for CLD, Gamma = 0).

Perturbation kernel. z_t | z_0 ~ N(A_t z_0, Sigma_t) with A_t = exp(F t) and

.. math::
    \\Sigma_t = \\int_0^t e^{F(t-s)} G G^T e^{F^T(t-s)} ds + A_t \\Sigma_0 A_t^T
             = \\Sigma_\\infty + A_t (\\Sigma_0 - \\Sigma_\\infty) A_t^T ,

the second form because D = Sigma - Sigma_inf solves dD/dt = F D + D F^T. Sigma_0 =
diag(0, m0_var_scale * M) is the initial momentum variance (m_0 ~ N(0, m0_var_scale M), x_0
given). :meth:`PSLD.covariance_van_loan` computes the integral independently by the
matrix-fraction (Van Loan) method, expm of the 4 x 4 block [[-F, G G^T], [0, F^T]] t; the two
agree to round-off (tested). The closed form loses relative precision in the x-x entry at very
small t in float32 (it is 1 - (1 - O(t)): about 1e-3 relative at t = 1e-3); use float64 there.

Training targets: with Sigma_t = L L^T (Cholesky) and z_t = A_t z_0 + L eps, the score of the
kernel is -Sigma_t^{-1}(z_t - A_t z_0) = -L^{-T} eps.

Layout: an augmented state is an array of shape ``(2, *event)``, ``z[0] = x`` and ``z[1] = m``.
Time runs on [0, 1] as in :mod:`pp_diffusion.schedules` (beta is the constant rate).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.linalg import expm

__all__ = ["CLD", "PSLD", "PerturbedSample", "eps_to_score"]


def _check_positive_number(name, value, *, allow_zero=False):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TypeError(f"{name} must be a real number, got {value!r}") from None
    if math.isnan(v) or (v < 0 if allow_zero else v <= 0):
        raise ValueError(f"{name} must be {'>= 0' if allow_zero else '> 0'}, got {value!r}")
    return v


class PerturbedSample(NamedTuple):
    """A draw from the perturbation kernel (what a denoising score-matching loss needs).

    z_t
        ``(2, *event)`` the perturbed augmented state.
    eps
        ``(2, *event)`` the standard-normal draw, z_t = A_t z_0 + L_t eps.
    score
        ``(2, *event)`` the kernel score -L_t^{-T} eps (the denoising score-matching target).
    """

    z_t: jax.Array
    eps: jax.Array
    score: jax.Array


class PSLD(eqx.Module):
    """Phase-space Langevin diffusion with critical damping (:func:`CLD` is ``gamma = 0``).

    An immutable Equinox module whose (static) fields are validated on construction.

    Parameters
    ----------
    beta
        The constant rate (> 0); the forward process runs on t in [0, 1].
    gamma
        Gamma >= 0, the position friction (0 gives CLD).
    nu
        The momentum friction; ``None`` gives ``gamma + 4`` (the paper's CIFAR-10 setting). Must
        exceed ``gamma`` (critical damping then gives 1/M = (gamma - nu)^2 / 4 > 0).
    m0_var_scale
        The initial momentum variance is ``m0_var_scale * M`` (>= 0).
    """

    beta: float = eqx.field(static=True)
    gamma: float = eqx.field(static=True)
    nu: float = eqx.field(static=True)
    m0_var_scale: float = eqx.field(static=True)

    def __init__(self, beta=8.0, gamma=0.01, nu=None, m0_var_scale=0.04):
        self.beta = _check_positive_number("beta", beta)
        self.gamma = _check_positive_number("gamma", gamma, allow_zero=True)
        self.nu = self.gamma + 4.0 if nu is None else _check_positive_number("nu", nu)
        if not self.nu > self.gamma:
            raise ValueError(
                f"nu must exceed gamma for critical damping 1/M = (gamma - nu)^2 / 4, got nu={nu}, gamma={gamma}"
            )
        self.m0_var_scale = _check_positive_number("m0_var_scale", m0_var_scale, allow_zero=True)

    # ------------------------------------------------------------------ constants
    @property
    def _nu(self) -> float:
        return self.nu

    @property
    def mass(self) -> float:
        """M, from critical damping 1/M = (Gamma - nu)^2 / 4."""
        return 4.0 / (self.gamma - self._nu) ** 2

    @property
    def eigenvalue(self) -> float:
        """The repeated eigenvalue of F, -beta (Gamma + nu) / 4."""
        return -self.beta * (self.gamma + self._nu) / 4.0

    def drift_matrix(self, dtype=None) -> jax.Array:
        """F (2 x 2)."""
        b = self.beta / 2.0
        return jnp.asarray([[-b * self.gamma, b / self.mass], [-b, -b * self._nu]], dtype=dtype)

    def diffusion_matrix(self, dtype=None) -> jax.Array:
        """G (2 x 2, diagonal)."""
        return jnp.diag(jnp.sqrt(jnp.asarray([self.beta * self.gamma, self.beta * self.mass * self._nu], dtype=dtype)))

    def diffusion_gram(self, dtype=None) -> jax.Array:
        """G G^T = beta diag(Gamma, M nu)."""
        return jnp.diag(jnp.asarray([self.beta * self.gamma, self.beta * self.mass * self._nu], dtype=dtype))

    def stationary_covariance(self, dtype=None) -> jax.Array:
        """Sigma_inf = diag(1, M)."""
        return jnp.diag(jnp.asarray([1.0, self.mass], dtype=dtype))

    def initial_covariance(self, dtype=None) -> jax.Array:
        """Sigma_0 = diag(0, m0_var_scale M), the kernel covariance at t = 0 (x_0 given)."""
        return jnp.diag(jnp.asarray([0.0, self.m0_var_scale * self.mass], dtype=dtype))

    # ------------------------------------------------------------------ perturbation kernel
    def mean_matrix(self, t) -> jax.Array:
        """A_t = exp(F t), closed form e^{lambda t}(I + (F - lambda I) t) (critical damping)."""
        t = jnp.asarray(t)
        dtype = jnp.result_type(t, float)
        F = self.drift_matrix(dtype)
        N = F - self.eigenvalue * jnp.eye(2, dtype=dtype)
        return jnp.exp(self.eigenvalue * t) * (jnp.eye(2, dtype=dtype) + N * t)

    def mean_matrix_expm(self, t) -> jax.Array:
        """A_t by ``jax.scipy.linalg.expm`` (the reference for :meth:`mean_matrix`)."""
        t = jnp.asarray(t)
        return expm(self.drift_matrix(jnp.result_type(t, float)) * t)

    def covariance(self, t) -> jax.Array:
        """Sigma_t = Sigma_inf + A_t (Sigma_0 - Sigma_inf) A_t^T (2 x 2)."""
        t = jnp.asarray(t)
        dtype = jnp.result_type(t, float)
        A = self.mean_matrix(t)
        inf = self.stationary_covariance(dtype)
        S = inf + A @ (self.initial_covariance(dtype) - inf) @ A.T
        return 0.5 * (S + S.T)

    def covariance_van_loan(self, t) -> jax.Array:
        """Sigma_t by the matrix-fraction method: expm([[-F, GG^T], [0, F^T]] t) = [[., B12], [0, B22]],
        int_0^t e^{F(t-s)} GG^T e^{F^T(t-s)} ds = B22^T B12; plus A_t Sigma_0 A_t^T."""
        t = jnp.asarray(t)
        dtype = jnp.result_type(t, float)
        F, Q = self.drift_matrix(dtype), self.diffusion_gram(dtype)
        block = jnp.block([[-F, Q], [jnp.zeros((2, 2), dtype), F.T]]) * t
        B = expm(block)
        A = B[2:, 2:].T
        S = A @ B[:2, 2:] + A @ self.initial_covariance(dtype) @ A.T
        return 0.5 * (S + S.T)

    def kernel(self, t) -> tuple[jax.Array, jax.Array]:
        """(A_t, Sigma_t): z_t | z_0 ~ N(A_t z_0, Sigma_t), per coordinate."""
        return self.mean_matrix(t), self.covariance(t)

    def perturb(self, rng_key, x0, t) -> PerturbedSample:
        """Draw z_t given data x_0 (shape ``event``): m_0 is part of the kernel through Sigma_0."""
        x0 = jnp.asarray(x0)
        A, S = self.kernel(t)
        L = jnp.linalg.cholesky(S)
        eps = jax.random.normal(rng_key, (2, *x0.shape), dtype=jnp.result_type(x0, jnp.float32))
        mean = A[:, 0].reshape((2,) + (1,) * x0.ndim) * x0[None]
        z_t = mean + jnp.tensordot(L, eps, axes=1)
        score = -jnp.tensordot(jnp.linalg.inv(L).T, eps, axes=1)
        return PerturbedSample(z_t=z_t, eps=eps, score=score)

    def kernel_score(self, z_t, x0, t) -> jax.Array:
        """grad_z log N(z_t; A_t [x_0; 0], Sigma_t) = -Sigma_t^{-1}(z_t - A_t[:, 0] x_0)."""
        z_t, x0 = jnp.asarray(z_t), jnp.asarray(x0)
        A, S = self.kernel(t)
        resid = z_t - A[:, 0].reshape((2,) + (1,) * x0.ndim) * x0[None]
        return -jnp.tensordot(jnp.linalg.inv(S), resid, axes=1)

    def prior_sample(self, rng_key, event_shape, dtype=jnp.float32) -> jax.Array:
        """A draw of N(0, Sigma_inf) of shape ``(2, *event_shape)`` (the reverse process's start)."""
        eps = jax.random.normal(rng_key, (2, *tuple(event_shape)), dtype=dtype)
        scale = jnp.sqrt(jnp.asarray([1.0, self.mass], dtype=dtype)).reshape((2,) + (1,) * len(tuple(event_shape)))
        return scale * eps


def eps_to_score(sde: PSLD, t, dtype):
    """(C_t, L_t) with Sigma_t = L_t L_t^T (Cholesky) and C_t = L_t^{-T}: an eps-prediction's score is
    s = -C_t eps (and eps = -L_t^T s)."""
    _, S = sde.kernel(jnp.asarray(t, dtype))
    L = jnp.linalg.cholesky(S)
    return jnp.linalg.inv(L).T, L


def CLD(beta=8.0, nu=4.0, m0_var_scale=0.04) -> PSLD:
    """Critically-damped Langevin diffusion: PSLD with Gamma = 0 (noise on the momentum only)."""
    return PSLD(beta=beta, gamma=0.0, nu=nu, m0_var_scale=m0_var_scale)
