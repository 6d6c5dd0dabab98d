"""DEIS with the time Adams–Bashforth rule, "tAB-DEIS" (Zhang & Chen, ICLR 2023, "Fast sampling of
diffusion models with exponential integrator").

The probability-flow ODE for the noise prediction eps, in the scaled variable x / alpha, reads
d(x / alpha) = eps d rho with rho = sigma / alpha, so its exact solution from t to s < t is

.. math::
    x_s = \\frac{\\alpha_s}{\\alpha_t} x_t + \\alpha_s \\int_t^s \\frac{d\\rho}{d\\tau}\\,
          \\varepsilon(x_\\tau)\\, d\\tau .

tAB-DEIS replaces eps(x_tau) by its Lagrange polynomial in tau through the last ``order``
evaluations, made at t = t_0 > t_1 > ... (the Adams–Bashforth extrapolation, one network evaluation
per step):

.. math::
    x_s = \\frac{\\alpha_s}{\\alpha_t} x_t + \\sum_j C_j\\, \\varepsilon(x_{t_j}), \\qquad
    C_j = \\alpha_s \\int_t^s \\frac{d\\rho}{d\\tau}\\, \\ell_j(\\tau)\\, d\\tau ,

l_j the Lagrange basis through t_0, ..., t_{order-1}. The coefficients are computed inside the step
(the grid is known only there, which keeps the kernel a pure function of (t, s) and the history),
after an integration by parts that needs no derivative of the schedule:

.. math::
    C_j = \\alpha_s \\Big( \\rho_s \\ell_j(s) - \\rho_t \\ell_j(t)
          - \\int_t^s \\rho(\\tau)\\, \\ell_j'(\\tau)\\, d\\tau \\Big),

the remaining integral by an 8-node Gauss–Legendre rule on [s, t]. Integrating rho, not d rho / d tau,
matters at the ends of the schedules: rho ~ sqrt(t) near clean data on VP schedules (d rho / d tau is
singular there), and on VE / EDM sigma jumps from sigma_min to sigma_0 = 0 at t = 0, a jump the
boundary term rho_s l_j(s) carries exactly. Order 1 is deterministic DDIM (C_0 = alpha_s (rho_s -
rho_t)); the first steps use the orders their history allows. The step into clean data keeps the
full order (rho_0 = 0 is an ordinary value; the polynomial is extrapolated to tau = 0).

The helpers here (the Gauss–Legendre rule, the Lagrange basis, rho) are shared with the conjugate
integrators (:mod:`pp_diffusion.integrators._conjugate`).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pp_diffusion.integrators._base import IntegratorInfo, Integrator

QUADRATURE_NODES = 8  # Gauss-Legendre nodes per step: exact for polynomials of degree 15
_GL_X, _GL_W = np.polynomial.legendre.leggauss(QUADRATURE_NODES)


def check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    return order


def gauss_legendre(a, b, dtype):
    """Nodes and weights of the Gauss–Legendre rule on the interval from ``a`` to ``b`` (b < a allowed:
    the weights are then negative, and sum(w f(x)) approximates the oriented integral from a to b)."""
    half = 0.5 * (b - a)
    return 0.5 * (a + b) + half * jnp.asarray(_GL_X, dtype), half * jnp.asarray(_GL_W, dtype)


def rho(schedule, t):
    """sigma_t / alpha_t (0 at clean data)."""
    return schedule.sigma(t) / schedule.alpha(t)


def lagrange(nodes, x):
    """Values and derivatives at ``x`` of the Lagrange basis polynomials through ``nodes`` (a tuple of
    distinct scalars): two lists of arrays shaped like x."""
    values, derivatives = [], []
    for j, nj in enumerate(nodes):
        others = [nm for m, nm in enumerate(nodes) if m != j]
        factors = [(x - nm) / (nj - nm) for nm in others]
        value = jnp.ones_like(x)
        for f in factors:
            value = value * f
        derivative = jnp.zeros_like(x)
        for i, nm in enumerate(others):
            term = jnp.ones_like(x) / (nj - nm)
            for q, f in enumerate(factors):
                if q != i:
                    term = term * f
            derivative = derivative + term
        values.append(value)
        derivatives.append(derivative)
    return values, derivatives


def lagrange_integrals(nodes, a, b, dtype):
    """int_a^b l_j(x) dx for the Lagrange basis through ``nodes`` (at most 3, so the 8-node
    Gauss–Legendre rule is exact)."""
    xs, ws = gauss_legendre(a, b, dtype)
    values, _ = lagrange(nodes, xs)
    return [jnp.sum(ws * v) for v in values]


def history_nodes(history, count, step, order):
    """The interpolation nodes (0, h_1, ..., h_{order-1}) as offsets from the current point, with the
    entries not yet filled (``count`` steps taken) replaced by the distinct dummies -j * step, so the
    higher-order candidates that :func:`select_order` discards stay finite."""
    nodes = [jnp.zeros_like(step)]
    for j in range(1, order):
        nodes.append(jnp.where(count >= j, history[j - 1], -j * step))
    return nodes


def select_order(candidates, available):
    """candidates[k - 1] where ``available`` == k (the order the history allows)."""
    out = candidates[0]
    for k, c in enumerate(candidates[1:], start=2):
        out = jnp.where(available >= k, c, out)
    return out


class StepTerms(NamedTuple):
    """What an eps-based step from t to s reads off the schedule and the model: the times in the state's
    dtype, alpha_t, sigma_t, alpha_s, rho = sigma / alpha at t and s, xhat_0(x_t) and its eps."""

    t: jax.Array
    s: jax.Array
    alpha_t: jax.Array
    sigma_t: jax.Array
    alpha_s: jax.Array
    rho_t: jax.Array
    rho_s: jax.Array
    x0_hat: jax.Array
    eps: jax.Array


def step_terms(model, x, t, s) -> StepTerms:
    """:class:`StepTerms` at (x, t) towards s: one network evaluation."""
    sched, dtype = model.schedule, jnp.result_type(x)
    t, s = jnp.asarray(t, dtype), jnp.asarray(s, dtype)
    alpha_t, sigma_t, alpha_s = sched.alpha(t), sched.sigma(t), sched.alpha(s)
    x0_hat = model.denoise(x, t)
    eps = (x - alpha_t * x0_hat) / sigma_t
    return StepTerms(t, s, alpha_t, sigma_t, alpha_s, sigma_t / alpha_t, rho(sched, s), x0_hat, eps)


def push(history, value):
    """The history with ``value`` prepended and its oldest entry dropped."""
    if history.shape[0] == 0:
        return history
    return jnp.concatenate([jnp.asarray(value, history.dtype)[None], history[:-1]], axis=0)


class DEISState(NamedTuple):
    """x: the current x_t; eps_history / t_history: the previous ``order - 1`` noise predictions
    (newest first) and their times; count: steps taken."""

    x: jax.Array
    eps_history: jax.Array
    t_history: jax.Array
    count: jax.Array


def deis(order: int = 2) -> Integrator:
    """tAB-DEIS (Zhang & Chen, 2023) of order 1 (= deterministic DDIM), 2 or 3.

    The exponential integrator x_s = (alpha_s / alpha_t) x_t + sum_j C_j eps(x_{t_j}) with eps
    extrapolated by its Lagrange polynomial in t through the last ``order`` evaluations,
    C_j = alpha_s int_t^s d(sigma / alpha)/dtau l_j(tau) dtau computed inside each step by
    Gauss–Legendre quadrature (after an integration by parts, so no derivative of the schedule is
    needed). One network evaluation per step; the first steps use the orders their history allows.
    """
    order = check_order(order)

    def init(x):
        dtype = jnp.result_type(x)
        return DEISState(
            x=x,
            eps_history=jnp.zeros((order - 1, *jnp.shape(x)), dtype),
            t_history=jnp.zeros((order - 1,), dtype),
            count=jnp.zeros((), jnp.int32),
        )

    def step(rng_key, state, model, t, s):
        del rng_key  # deterministic
        sched, x = model.schedule, state.x
        dtype = jnp.result_type(x)
        t, s, alpha_t, sigma_t, alpha_s, rho_t, rho_s, x0_hat, eps = step_terms(model, x, t, s)
        eps_hist = [eps] + [state.eps_history[j] for j in range(order - 1)]
        h = s - t  # < 0; nodes and quadrature in the offset tau - t
        offsets = history_nodes(state.t_history - t, state.count, h, order)
        xs, ws = gauss_legendre(jnp.zeros_like(h), h, dtype)
        rho_nodes = rho(sched, t + xs)
        base = (alpha_s / alpha_t) * x
        candidates = []
        for k in range(1, order + 1):
            at_s, _ = lagrange(offsets[:k], h)
            _, slopes = lagrange(offsets[:k], xs)
            update = base
            for j in range(k):
                at_t = 1.0 if j == 0 else 0.0  # l_j(t) = delta_j0
                c_j = alpha_s * (rho_s * at_s[j] - rho_t * at_t - jnp.sum(ws * rho_nodes * slopes[j]))
                update = update + c_j * eps_hist[j]
            candidates.append(update)
        x_s = select_order(candidates, jnp.minimum(state.count + 1, order))
        new = DEISState(x=x_s, eps_history=push(state.eps_history, eps), t_history=push(state.t_history, t),
                        count=state.count + 1)
        return new, IntegratorInfo(x0_hat)

    return Integrator(init, step, 1, f"deis_tab{order}")
