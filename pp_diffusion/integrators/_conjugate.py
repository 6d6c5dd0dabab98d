"""Conjugate integrators (Pandey, Rudolph & Mandt, ICLR 2024, "Efficient integrators for diffusion
generative models"): "lambda-DDIM", Euler (or Adams–Bashforth) in a linearly transformed variable.

The forward SDE of every schedule is dz = f_t z dt + g_t dW with the scalars f = d log alpha / dt
and g^2 = d sigma^2 / dt - 2 f sigma^2; with the noise prediction eps and score -eps / sigma
(C_t = 1 / sigma_t) the probability-flow ODE is dz/dt = f z + (g^2 / 2 sigma) eps. For a chosen
B_t, the map A_t solving dA/dt = A (B - f), A_0 = I, turns it into

.. math::
    \\frac{d\\hat x}{dt} = B_t \\hat x + \\frac{d\\Phi}{dt}\\, \\varepsilon, \\qquad
    \\hat x = A_t z, \\qquad \\Phi_t = \\int_0^t \\tfrac12 A_\\tau g_\\tau^2 / \\sigma_\\tau \\, d\\tau .

Here B_t = lambda I, so A_t = e^{lambda t} / alpha_t and, since (g^2 / 2 sigma) / alpha =
d rho / dt with rho = sigma / alpha, Phi_t = int_0^t e^{lambda tau} d rho(tau). One Euler step from
t to s < t in the transformed variable, then back to z:

.. math::
    \\hat x_s = \\hat x_t + (s - t)\\, \\lambda\\, \\hat x_t + (\\Phi_s - \\Phi_t)\\, \\varepsilon(z_t), \\qquad
    z_s = \\hat x_s / A_s .

lambda = 0 is deterministic DDIM (Phi = rho): z_s = alpha_s (z_t / alpha_t + (rho_s - rho_t) eps).
lambda != 0 moves part of the drift into the Euler-discretised linear term, whose error (of order
lambda (s - t) (Phi_s - Phi_t) eps per step) can be tuned against the noise term's: on the Gaussian
of tests/test_integrators_conjugate.py (20 steps uniform in log-SNR) lambda = -0.5 cuts DDIM's
error 27-fold, 4.5e-3 against 0.12. It
also means lambda != 0 wants grids on which rho changes moderately per step: RectifiedFlow on a
uniform-t grid (rho from 999 to 28 in the first of 30 steps) loses most of its accuracy, the
Karras grid (:func:`~pp_diffusion.schedules.karras`) does not.

**Bounds on lambda.** The step factor 1 + lambda (s - t) must stay positive on every grid; as
s - t >= -1 on [0, 1] that holds for every grid exactly when lambda < 1 (lambda = 1 makes it 0 on
the one-step grid [1, 0]). Negative lambda (around -0.15 at 5 steps in the authors'
conditional-sampling code) keeps it above 1; lambda is bounded below by -10 (``LAMBDA_MIN``),
where e^{|lambda|} (the range of A_t over [0, 1]) is 2.2e4 and the 8-node quadrature below still
integrates e^{lambda tau} over a unit step to 1.6e-8 relative, below float32 resolution (4e-5 at
|lambda| = 20).

**Phi by quadrature.** The grid is known only at step time, so Phi_s - Phi_t is computed inside the
step, keeping the kernel a pure function of (t, s) and its history. Integrating by parts,

.. math::
    \\Phi_s - \\Phi_t = e^{\\lambda s} \\rho_s - e^{\\lambda t} \\rho_t
                      + \\lambda \\int_s^t e^{\\lambda\\tau} \\rho_\\tau \\, d\\tau ,

the integral by an 8-node Gauss–Legendre rule on [s, t]. The integrand is smooth where d rho / dt
is not: rho ~ sqrt(t) near clean data on VP schedules, and on VE / EDM (alpha = 1) sigma jumps
from sigma_min to sigma_0 = 0 at t = 0, which the boundary term e^{lambda s} rho_s carries exactly.
The step into clean data is an ordinary step (rho_0 = 0; Phi stays finite). (Near t_max of
RectifiedFlow, rho = t / (1 - t) has a pole just beyond the grid, and the rule is good to 0.5% of
the lambda term on a first step of 1/30, an error of 2e-5 of Phi_s - Phi_t there.)

**Higher order** (``order`` 2 and 3): Adams–Bashforth in the transformed variable, one network
evaluation per step. The step integrates the right-hand side exactly for interpolants of its two
factors,

.. math::
    \\hat x_s = \\hat x_t + \\lambda \\int_t^s e^{\\lambda\\tau}\\, U(\\rho_\\tau)\\, d\\tau
              + \\sum_j \\Big(\\int_{\\Phi_t}^{\\Phi_s} \\ell_j(\\phi)\\, d\\phi\\Big)\\, \\varepsilon_{t_j},

- eps as its Lagrange polynomial in Phi through the last ``order`` evaluations (basis l_j; an
  integral of a polynomial of degree < 3, which the Gauss–Legendre rule gives exactly). With
  lambda = 0 this is DEIS's rho-AB (Zhang & Chen, 2023: eps extrapolated in rho = Phi). Phi rather
  than t keeps the extrapolation smooth up to clean data (eps is smooth in rho, not in t, near
  t = 0 on VP schedules, and across the VE jump), so the last step into data keeps the full order.
- xhat = e^{lambda tau} u with u = z / alpha, and u replaced by the polynomial U in rho through
  u_t with its slope du/drho = eps_t (exact along the ODE, no network call), and at order 3 also
  through the previous (rho_1, u_1); the tau-integral by the same Gauss–Legendre nodes as Phi. u is
  smooth in rho where xhat is not smooth in t (A_t = e^{lambda t} / alpha_t varies 34-fold over the
  first uniform step of RectifiedFlow, and a polynomial in t for xhat failed there), and the slope
  makes even the first step, which has no history, second order in this term, so lambda != 0
  keeps the order: measured error ratios for doubled steps 3.8 (order 2) and 7.2-7.6 (order 3),
  as at lambda = 0.

At order 1 (plain lambda-DDIM) the linear term is the Euler term above, lambda (s - t) xhat_t.
The Phi values of the history are stored as offsets from the current Phi, so their differences keep
float32 precision when rho_T is in the hundreds. The first steps use the orders their history
allows.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pp_diffusion.integrators._base import IntegratorInfo, Integrator
from pp_diffusion.integrators._deis import (
    check_order,
    gauss_legendre,
    history_nodes,
    lagrange_integrals,
    push,
    rho,
    select_order,
    step_terms,
)

LAMBDA_MIN = -10.0  # see the module docstring; the upper bound, lambda < 1, keeps 1 + lambda (s - t) > 0


class ConjugateState(NamedTuple):
    """x: the current z_t; eps_history / phi_history: the previous ``order - 1`` noise predictions
    (newest first) and their Phi_{t_j} - Phi_t, offsets from the current Phi; u_history /
    rho_history: the previous ``order - 2`` scaled states z / alpha and their rho = sigma / alpha;
    count: steps taken."""

    x: jax.Array
    eps_history: jax.Array
    phi_history: jax.Array
    u_history: jax.Array
    rho_history: jax.Array
    count: jax.Array


def check_lam(lam) -> float:
    if isinstance(lam, bool):
        raise ValueError(f"lam must be a real number, got {lam!r}")
    try:
        value = float(lam)
    except (TypeError, ValueError):
        raise ValueError(f"lam must be a real number, got {lam!r}") from None
    if not math.isfinite(value):
        raise ValueError(f"lam must be finite, got {lam!r}")
    if not LAMBDA_MIN <= value < 1.0:
        raise ValueError(
            f"lam must lie in [{LAMBDA_MIN:g}, 1), got {lam!r}: for lam >= 1 the step factor 1 + lam (s - t) "
            "reaches 0 or changes sign on a step of length 1 / lam (the transform becomes singular), and below "
            f"{LAMBDA_MIN:g} e^(lam t) outgrows the quadrature's accuracy"
        )
    return value


def phi_increment(lam, t, s, rho_t, rho_s, taus, weights, rho_taus):
    """Phi_s - Phi_t = e^{lam s} rho_s - e^{lam t} rho_t + lam int_s^t e^{lam tau} rho_tau d tau, the
    integral by the Gauss–Legendre rule (``taus``, ``weights``) on [s, t] with rho_taus = rho(taus).
    At lam = 0 the quadrature term is multiplied by 0: Phi_s - Phi_t = rho_s - rho_t."""
    boundary = jnp.exp(lam * s) * rho_s - jnp.exp(lam * t) * rho_t
    return boundary + lam * jnp.sum(weights * jnp.exp(lam * taus) * rho_taus)


def lambda_ddim(lam: float = 0.0, order: int = 1) -> Integrator:
    """The conjugate integrator with B_t = ``lam`` I, "lambda-DDIM" (Pandey, Rudolph & Mandt, 2024).

    In xhat = e^{lam t} z / alpha_t the probability-flow ODE reads dxhat/dt = lam xhat + eps dPhi/dt,
    Phi_t = int_0^t e^{lam tau} d(sigma / alpha); ``order=1`` takes one Euler step in xhat and maps back,
    ``order`` 2 or 3 an Adams–Bashforth step (eps extrapolated in Phi through the last ``order``
    evaluations). One network evaluation per step; Phi_s - Phi_t by Gauss–Legendre quadrature inside
    the step. ``lam = 0`` is deterministic DDIM (at order k > 1: DEIS's rho-AB). ``lam`` must be finite
    and lie in [-10, 1): lam < 1 keeps the step factor 1 + lam (s - t) positive on every grid. With
    ``lam != 0`` prefer grids on which sigma / alpha changes moderately per step (e.g.
    :func:`~pp_diffusion.schedules.karras`). Details in the module docstring of
    ``pp_diffusion/integrators/_conjugate.py``.
    """
    lam, order = check_lam(lam), check_order(order)

    def init(x):
        dtype = jnp.result_type(x)
        lin = max(order - 2, 0)
        return ConjugateState(
            x=x,
            eps_history=jnp.zeros((order - 1, *jnp.shape(x)), dtype),
            phi_history=jnp.zeros((order - 1,), dtype),
            u_history=jnp.zeros((lin, *jnp.shape(x)), dtype),
            rho_history=jnp.zeros((lin,), dtype),
            count=jnp.zeros((), jnp.int32),
        )

    def step(rng_key, state, model, t, s):
        del rng_key  # deterministic
        sched, z = model.schedule, state.x
        dtype = jnp.result_type(z)
        t, s, alpha_t, sigma_t, alpha_s, rho_t, rho_s, x0_hat, eps = step_terms(model, z, t, s)
        u = z / alpha_t
        xhat = jnp.exp(lam * t) * u  # A_t z
        taus, weights = gauss_legendre(s, t, dtype)  # the rule on [s, t], shared by both integrals
        rho_taus = rho(sched, taus)
        d_phi = phi_increment(lam, t, s, rho_t, rho_s, taus, weights, rho_taus)
        if order == 1:  # Euler: xhat_s = (1 + lam (s - t)) xhat_t + (Phi_s - Phi_t) eps
            xhat_s = xhat + lam * (s - t) * xhat + d_phi * eps
        else:
            # int eps dPhi with eps extrapolated in Phi through the last `order` evaluations
            phi_nodes = history_nodes(state.phi_history, state.count, d_phi, order)
            eps_hist = [eps] + [state.eps_history[j] for j in range(order - 1)]
            noise = []
            for k in range(1, order + 1):
                w = lagrange_integrals(phi_nodes[:k], jnp.zeros_like(d_phi), d_phi, dtype)
                noise.append(sum(w_j * e_j for w_j, e_j in zip(w, eps_hist[:k])))
            noise = select_order(noise, jnp.minimum(state.count + 1, order))
            # int_t^s xhat dtau with xhat = e^{lam tau} U(rho_tau), U the polynomial in rho through
            # (rho_t, u_t) with slope du/drho = eps_t, and at order 3 through the previous (rho_1, u_1)
            d_rho = rho_taus - rho_t
            kernel = -weights * jnp.exp(lam * taus)  # int_t^s = -int_s^t
            linear = jnp.sum(kernel) * u + jnp.sum(kernel * d_rho) * eps
            if order == 3:
                ready = state.count >= 1
                r1 = jnp.where(ready, state.rho_history[0] - rho_t, 1.0)
                curvature = jnp.where(ready, (state.u_history[0] - u - r1 * eps) / r1**2, 0.0)
                linear = linear + jnp.sum(kernel * d_rho**2) * curvature
            xhat_s = xhat + lam * linear + noise
        z_s = alpha_s * jnp.exp(-lam * s) * xhat_s  # A_s^{-1} xhat_s
        new = ConjugateState(
            x=z_s,
            eps_history=push(state.eps_history, eps),
            phi_history=push(state.phi_history, jnp.zeros_like(d_phi)) - d_phi,
            u_history=push(state.u_history, u),
            rho_history=push(state.rho_history, rho_t),
            count=state.count + 1,
        )
        return new, IntegratorInfo(x0_hat)

    suffix = "" if order == 1 else f"_ab{order}"
    return Integrator(init, step, 1, f"lambda_ddim(lam={lam:g}){suffix}")
