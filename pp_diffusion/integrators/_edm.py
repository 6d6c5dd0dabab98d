"""The EDM deterministic samplers (Karras et al., NeurIPS 2022, "Elucidating the design space of
diffusion-based generative models", Algorithm 1): Euler and Heun on the probability-flow ODE in sigma.

With the scaled variable u = x / alpha and the scaled noise level sigma~ = sigma / alpha (the paper's
s(t) = alpha_t and sigma(t) = sigma~_t), the probability-flow ODE of every schedule is

.. math::  \\frac{du}{d\\tilde\\sigma} = \\frac{u - D(x)}{\\tilde\\sigma}, \\qquad x = \\alpha u,

with D(x) = xhat_0(x_t) the denoiser. The integrators step in sigma~ between the grid's times (a
uniform-t grid on :class:`~pp_diffusion.schedules.EDM` is the paper's rho = 7 grid; on other
schedules use :func:`~pp_diffusion.schedules.karras`):

- Euler: u_s = u_t + (sigma~_s - sigma~_t) d_t, d_t = (u_t - D(x_t)) / sigma~_t. This is
  deterministic DDIM, one network evaluation per step.
- Heun: the Euler step is corrected with the slope at its end, u_s = u_t + (sigma~_s - sigma~_t)
  (d_t + d'_s) / 2, d'_s = (u'_s - D(alpha_s u'_s)) / sigma~_s: second order, two network
  evaluations per step (``nfe_per_step=2``). The step into clean data (sigma_s = 0), where d'_s is
  undefined, is the Euler step, as in the paper's Algorithm 1 (there the sampler spends 2N - 1
  evaluations in N steps). Under ``jax.vmap`` both branches are computed, so the second evaluation
  is then made at (x_t, t) and discarded: the step always costs two evaluations, which is what
  ``nfe_per_step`` counts.
"""

from __future__ import annotations

import jax.numpy as jnp

from pp_diffusion.integrators._base import IntegratorInfo, Integrator, init_state


def _euler(model, x, t, s):
    """(u_t, the Euler endpoint u_s, the slope d_t, xhat_0(x_t), alpha_s, sigma~_t, sigma~_s)."""
    sched = model.schedule
    alpha_t, alpha_s = sched.alpha(t), sched.alpha(s)
    rho_t, rho_s = sched.sigma(t) / alpha_t, sched.sigma(s) / alpha_s
    x0_hat = model.denoise(x, t)
    u = x / alpha_t
    slope = (u - x0_hat) / rho_t
    return u, u + (rho_s - rho_t) * slope, slope, x0_hat, alpha_s, rho_t, rho_s


def edm_euler():
    """The Euler sampler of EDM (Karras et al., 2022) on du/dsigma~ = (u - D(x)) / sigma~ in the scaled
    variables u = x / alpha, sigma~ = sigma / alpha: deterministic DDIM, one network evaluation per step."""

    def init(x):
        return init_state(x, 0)

    def step(rng_key, state, model, t, s):
        del rng_key  # deterministic
        _, u_s, _, x0_hat, alpha_s, _, _ = _euler(model, state.x, t, s)
        return state._replace(x=alpha_s * u_s, count=state.count + 1), IntegratorInfo(x0_hat)

    return Integrator(init, step, 1, "edm_euler")


def edm_heun():
    """The deterministic Heun sampler of EDM (Karras et al., 2022, Algorithm 1) in u = x / alpha,
    sigma~ = sigma / alpha: second order, two network evaluations per step (``nfe_per_step=2``), and
    the Euler step on the last step into clean data, where the corrector's slope is undefined.
    Use it with the Karras grid (:func:`~pp_diffusion.schedules.karras`, or uniform t on
    :class:`~pp_diffusion.schedules.EDM`)."""

    def init(x):
        return init_state(x, 0)

    def step(rng_key, state, model, t, s):
        del rng_key  # deterministic
        sched, x = model.schedule, state.x
        u, u_euler, slope, x0_hat, alpha_s, rho_t, rho_s = _euler(model, x, t, s)
        final = sched.sigma(s) == 0
        # the corrector's evaluation at (alpha_s u'_s, s); into clean data a harmless (x_t, t), discarded
        t_eval = jnp.where(final, t, s)
        alpha_eval = jnp.where(final, sched.alpha(t), alpha_s)
        rho_eval = jnp.where(final, rho_t, rho_s)
        x_eval = jnp.where(final, x, alpha_s * u_euler)
        slope_end = (x_eval / alpha_eval - model.denoise(x_eval, t_eval)) / rho_eval
        u_heun = u + (rho_s - rho_t) * 0.5 * (slope + slope_end)
        x_s = alpha_s * jnp.where(final, u_euler, u_heun)
        return state._replace(x=x_s, count=state.count + 1), IntegratorInfo(x0_hat)

    return Integrator(init, step, 2, "edm_heun")
