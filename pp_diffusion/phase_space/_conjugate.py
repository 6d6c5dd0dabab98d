"""Conjugate integrators for phase-space models, and their splitting hybrids (Pandey, Rudolph & Mandt, 2024).

The eps-parameterised score is s = -C_t eps with C_t = L_t^{-T} (Sigma_t = L_t L_t^T, the kernel
covariance), so in forward time the PF-ODE is dz/dt = F z + (1/2) G G^T C_t eps. For B_t = lambda I
the map A_t = e^{lambda t} exp(-F t) (it solves dA/dt = A (B - F), A_0 = I; F and B commute) turns
it into

.. math::
    \\frac{d\\hat z}{dt} = \\lambda \\hat z + \\frac{d\\Phi}{dt}\\, \\varepsilon, \\qquad \\hat z = A_t z, \\qquad
    \\Phi_t = \\int_0^t \\tfrac12 A_u\\, G G^T C_u\\, du \\quad (2 \\times 2).

exp(-F t) is closed-form under critical damping, e^{-mu t}(I - (F - mu I) t) with mu the repeated
eigenvalue. Phi_s - Phi_t is computed inside the step by an 8-node Gauss–Legendre rule in v = sqrt(u)
(du = 2 v dv): C_u grows like u^{-1/2} toward clean data (L_u's position entry is
sqrt(beta Gamma u) to first order), and the substitution makes the integrand smooth.

- **conjugate Euler** (``conjugate_euler``, 1 NFE): Euler in zhat with eps frozen at (z_t, t),

      zhat_s = (1 + lambda (s - t)) zhat_t + (Phi_s - Phi_t) eps(z_t, t),     z_s = A_s^{-1} zhat_s.

  lambda = 0 is the exponential integrator in the eps parameterisation (the analogue of DDIM).
  The step factor must stay positive: lambda < 1, as for :func:`pp_diffusion.integrators.lambda_ddim`.

- **conjugate symplectic Euler** (``conjugate_symplectic_euler``, 2 NFE; the deterministic hybrid):
  the position row of z_s from the conjugate step with eps(z_t, t); then the momentum row of z_s
  from the conjugate step from the same z_t with eps re-evaluated at (x_s, m_t) (at time t, as
  the m-update of :func:`naive_symplectic_euler`). Each half is a consistent first-order step, so
  the composition is first order; it differs from conjugate Euler only in the score the momentum
  sees, which has already felt the position update (the splitting idea).

- **conjugate OBA** (``conjugate_oba``, 1 NFE; the stochastic hybrid): the reverse SDE is the PF-ODE
  plus a Langevin correction (1/2) D s dtau + D^{1/2} dW that leaves p_t invariant, with
  D = diag(eta^2, beta M nu) (eta^2 the position-noise rate, default beta Gamma: the exact reverse
  SDE). With s = -Sigma_inf^{-1} z + r the correction is an OU process (solved exactly: the O step
  of :func:`oba`) plus the drift (1/2) D r. One step: O over h; evaluate eps once at the new state;
  kick z by (1/2) h D r with r from that eps; then the conjugate Euler step of the PF-ODE with the
  same eps (reused after the kick, as reduced OBA reuses its residual). First order (weakly).

These hybrids are derived here from the paper's description (its update equations are not
public); they are measured, not assumed, to help (``benchmarks/integrators.py``, part (b)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from pp_diffusion.integrators._conjugate import check_lam
from pp_diffusion.phase_space._psld import PSLD, eps_to_score
from pp_diffusion.phase_space._splitting import (
    SplittingIntegrator,
    _advance,
    _check_sde,
    _info,
    _init,
    _mat,
    _o_step,
    _position_noise,
    _residual_from_score,
)

__all__ = ["conjugate_euler", "conjugate_oba", "conjugate_symplectic_euler"]

_GL_X, _GL_W = (np.asarray(a) for a in np.polynomial.legendre.leggauss(8))


def _exp_neg_f(sde: PSLD, t, dtype):
    """exp(-F t) = e^{-mu t}(I - (F - mu I) t), mu = sde.eigenvalue (critical damping: (F - mu I)^2 = 0)."""
    N = sde.drift_matrix(dtype) - sde.eigenvalue * jnp.eye(2, dtype=dtype)
    return jnp.exp(-sde.eigenvalue * t) * (jnp.eye(2, dtype=dtype) - N * t)


def transform(sde: PSLD, lam: float, t, dtype):
    """A_t = e^{lam t} exp(-F t)."""
    return jnp.exp(lam * t) * _exp_neg_f(sde, t, dtype)


def _sqrt_nodes(lo, hi, dtype):
    """Gauss–Legendre nodes u and weights w on [lo, hi] in v = sqrt(u): sum_k w_k f(u_k) ~ int_lo^hi f(u) du."""
    a, b = jnp.sqrt(lo), jnp.sqrt(hi)
    v = 0.5 * (a + b) + 0.5 * (b - a) * jnp.asarray(_GL_X, dtype)
    return v**2, 0.5 * (b - a) * jnp.asarray(_GL_W, dtype) * 2 * v


def flow_rate(sde: PSLD, u, dtype):
    """omega_u = -(L_u^{-1} M_u L_u)_{01}, M_u = F + (1/2) G G^T Sigma_u^{-1}: the rotation rate of the
    PF-ODE's noise frame (R_u = L_u O(theta_u) solves dR/du = M_u R)."""
    _, S = sde.kernel(jnp.asarray(u, dtype))
    L = jnp.linalg.cholesky(S)
    M = sde.drift_matrix(dtype) + 0.5 * sde.diffusion_gram(dtype) @ jnp.linalg.inv(S)
    return -(jnp.linalg.inv(L) @ M @ L)[0, 1]


def _rotation(theta):
    c, s = jnp.cos(theta), jnp.sin(theta)
    return jnp.stack([jnp.stack([c, -s]), jnp.stack([s, c])])


def theta_increment(sde: PSLD, t, u, dtype):
    """theta_u - theta_t = int_t^u omega (oriented), by the rule in sqrt(u)."""
    lo, hi = jnp.minimum(t, u), jnp.maximum(t, u)
    nodes, w = _sqrt_nodes(lo, hi, dtype)
    total = jnp.sum(w * jax.vmap(lambda x: flow_rate(sde, x, dtype))(nodes))
    return jnp.where(u >= t, total, -total)


def phi_increment(sde: PSLD, lam: float, t, s, dtype, rotate: bool = True):
    """Phi_s - Phi_t = -int_s^t (1/2) A_u G G^T C_u O(theta_u - theta_t) du (2 x 2), by Gauss–Legendre
    in v = sqrt(u) (and theta's increments by a nested rule); ``rotate=False`` drops the rotation
    (the Cholesky noise frame)."""
    Q = sde.diffusion_gram(dtype)
    nodes, w = _sqrt_nodes(s, t, dtype)

    def integrand(u):
        M = 0.5 * transform(sde, lam, u, dtype) @ Q @ eps_to_score(sde, u, dtype)[0]
        return M @ _rotation(theta_increment(sde, t, u, dtype)) if rotate else M

    return -jnp.einsum("n,nij->ij", w, jax.vmap(integrand)(nodes))


def _step_coefficients(sde, lam, t, s, dtype, rotate=True):
    """The conjugate step t -> s as z_s = K z_t + P e: K = A_s^{-1} (1 + lam (s - t)) A_t and
    P = A_s^{-1} (Phi_s - Phi_t), with A_s^{-1} = e^{-lam s} exp(F s) in closed form."""
    back = jnp.exp(-lam * s) * sde.mean_matrix(jnp.asarray(s, dtype))
    K = (1 + lam * (s - t)) * back @ transform(sde, lam, t, dtype)
    return K, back @ phi_increment(sde, lam, t, s, dtype, rotate)


def _apply(coefficients, z, e):
    K, P = coefficients
    return _mat(K, z) + _mat(P, e)


def _score_and_eps(score_fn, sde, z, t):
    """The score at (z, t) and the network's eps = -L_t^T s (recovered from the score)."""
    score = score_fn(z, t)
    return score, -_mat(eps_to_score(sde, t, z.dtype)[1].T, score)


def conjugate_euler(sde: PSLD, lam: float = 0.0, *, rotate: bool = True) -> SplittingIntegrator:
    """Euler in zhat = A_t z with B = ``lam`` I and Phi by quadrature (1 NFE per step, deterministic)."""
    _check_sde(sde)
    lam = check_lam(lam)

    def step(rng_key, state, score_fn, t, s):
        del rng_key
        z = state.z
        coefficients = _step_coefficients(sde, lam, t, s, z.dtype, rotate)
        return _advance(state, _apply(coefficients, z, _score_and_eps(score_fn, sde, z, t)[1])), _info(1)

    return SplittingIntegrator(_init, step, 1, "conjugate_euler", False)


def conjugate_symplectic_euler(sde: PSLD, lam: float = 0.0, *, rotate: bool = True) -> SplittingIntegrator:
    """The deterministic hybrid: the position from a conjugate step with eps(z_t), the momentum from a
    conjugate step with eps re-evaluated at (x_s, m_t) (2 NFE per step)."""
    _check_sde(sde)
    lam = check_lam(lam)

    def step(rng_key, state, score_fn, t, s):
        del rng_key
        z = state.z
        coefficients = _step_coefficients(sde, lam, t, s, z.dtype, rotate)  # shared by both halves
        x_s = _apply(coefficients, z, _score_and_eps(score_fn, sde, z, t)[1])[0]
        m_s = _apply(coefficients, z, _score_and_eps(score_fn, sde, jnp.stack([x_s, z[1]]), t)[1])[1]
        return _advance(state, jnp.stack([x_s, m_s])), _info(2)

    return SplittingIntegrator(_init, step, 2, "conjugate_symplectic_euler", False)


def conjugate_oba(sde: PSLD, lam: float = 0.0, position_noise: float | None = None, *,
                  rotate: bool = True) -> SplittingIntegrator:
    """The stochastic hybrid: exact O step, the residual kick of the Langevin correction, then the
    conjugate Euler step of the PF-ODE, all with one eps evaluation (1 NFE per step)."""
    _check_sde(sde)
    lam = check_lam(lam)
    eta2 = _position_noise(sde, position_noise)
    D = np.asarray([eta2, sde.beta * sde.mass * sde.nu])

    def step(rng_key, state, score_fn, t, s):
        h = t - s
        z = _o_step(sde, eta2, rng_key, state.z, h)
        score, e = _score_and_eps(score_fn, sde, z, t)
        r = _residual_from_score(sde, z, score)
        z_kick = z + 0.5 * h * jnp.asarray(D, z.dtype).reshape((2,) + (1,) * (z.ndim - 1)) * r
        coefficients = _step_coefficients(sde, lam, t, s, z.dtype, rotate)
        return _advance(state, _apply(coefficients, z_kick, e)), _info(1)

    return SplittingIntegrator(_init, step, 1, "conjugate_oba", True)
