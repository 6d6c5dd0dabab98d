"""The DDIM family of reverse transitions (Song et al., 2021), DDPM ancestral sampling as eta = 1.

From time t to s < t, with xhat_0 = xhat_0(x_t) and epsilon-hat = (x_t - alpha_t xhat_0) / sigma_t,

.. math::
    x_s \\sim N\\big(\\alpha_s \\hat x_0 + \\sqrt{\\sigma_s^2 - c^2}\\,\\hat\\varepsilon,\\ c^2 I\\big), \\qquad
    c = \\eta\\,\\frac{\\sigma_s}{\\sigma_t}\\sqrt{\\sigma_t^2 - \\alpha_{t|s}^2\\sigma_s^2},\\quad
    \\alpha_{t|s} = \\alpha_t / \\alpha_s .

eta = 1 gives the DDPM posterior q(x_s | x_t, x_0 = xhat_0) (Ho et al., 2020); eta = 0 the
deterministic DDIM step, a first-order solver of the probability-flow ODE. With ``x0_var`` (a
:class:`~pp_diffusion.DenoisingVariance`, Gamma_t) the variance becomes c^2 + c_0^2 Gamma_t, c_0 the
coefficient of xhat_0 in the mean: the analytic reverse variance (Bao et al., 2022). The formulas hold for
any schedule (VP, VE, EDM, rectified flow). The kernel is Gaussian, so SMC can evaluate its density.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pp_diffusion.integrators._base import IntegratorInfo, Integrator, init_state


def coefficients(schedule, t, s, eta, x0_var=None):
    """(alpha_t, sigma_t, alpha_s, noise_coef, std) of the DDIM(eta) kernel from t to s: its mean is
    alpha_s xhat_0 + noise_coef epshat, its std sqrt(c^2 + c_0^2 Gamma_t) (c_0 = alpha_s - noise_coef
    alpha_t / sigma_t; Gamma_t = 0 without ``x0_var``)."""
    alpha_t, sigma_t = schedule.alpha(t), schedule.sigma(t)
    alpha_s, sigma_s = schedule.alpha(s), schedule.sigma(s)
    ratio = alpha_t / alpha_s
    bridge_var = jnp.maximum(sigma_t**2 - ratio**2 * sigma_s**2, 0.0)
    std = eta * sigma_s / sigma_t * jnp.sqrt(bridge_var)
    noise_coef = jnp.sqrt(jnp.maximum(sigma_s**2 - std**2, 0.0))
    if x0_var is not None:
        c0 = alpha_s - noise_coef * alpha_t / sigma_t
        std = jnp.sqrt(std**2 + c0**2 * x0_var(t))
    return alpha_t, sigma_t, alpha_s, noise_coef, std


def transition(model, x, t, s, eta, x0_var=None):
    """Mean and standard deviation of the DDIM(eta) kernel from t to s, and the x0 prediction used."""
    alpha_t, sigma_t, alpha_s, noise_coef, std = coefficients(model.schedule, t, s, eta, x0_var)
    x0_hat = model.denoise(x, t)
    eps_hat = (x - alpha_t * x0_hat) / sigma_t
    return alpha_s * x0_hat + noise_coef * eps_hat, std, x0_hat


def ddim(eta: float = 0.0, x0_var=None) -> Integrator:
    """DDIM with stochasticity ``eta`` in [0, 1] (0: deterministic; 1: DDPM ancestral); ``x0_var``
    (a :class:`~pp_diffusion.DenoisingVariance`) adds the analytic reverse variance."""
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    eta = float(eta)
    stochastic = eta > 0.0 or x0_var is not None

    def init(x):
        return init_state(x, 0)

    def step(rng_key, state, model, t, s):
        mean, std, x0_hat = transition(model, state.x, t, s, eta, x0_var)
        x = mean + std * jax.random.normal(rng_key, mean.shape, mean.dtype) if stochastic else mean
        return state._replace(x=x, count=state.count + 1), IntegratorInfo(x0_hat)

    name = "ddpm" if eta == 1.0 else f"ddim(eta={eta:g})"
    return Integrator(init, step, 1, name + ("+x0_var" if x0_var is not None else ""))


def ddpm() -> Integrator:
    """DDPM ancestral sampling (Ho et al., 2020): DDIM with eta = 1."""
    return ddim(1.0)
