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

``order=2`` replaces xhat_0 in the mean by the multistep extrapolation through the previous step's
prediction (Lu et al., 2022, "DPM-Solver++"), in the half log-SNR lambda = log(alpha / sigma):

.. math::  D = \\hat x_0 + \\frac{h}{2 h'} (\\hat x_0 - \\hat x_0'), \\qquad h = \\lambda_s - \\lambda_t,\\ h' = \\lambda_t - \\lambda_{t'},

x_0' the prediction made at the previous time t'. At eta = 0 this is DPM-Solver++(2M), at eta = 1
SDE-DPM-Solver++(2M) (its "midpoint" form): the same variance and one network evaluation per step,
with a second-order mean. The kernel stays Gaussian given (x_t, x_0'), a Markov chain on that pair,
so SMC weights are unchanged. The first step (no previous prediction) and the step into clean data
are first order. On the 25-component mixture of ``benchmarks/gmm_posterior.py`` (exact denoiser,
100 uniform steps) DDPM's draws put 1.8-1.9% of the mass in the wrong components (total
variation), all of it from the coarse steps at high noise (sigma / alpha > 6); the second-order
mean brings it to 0.7%, near a 1,000-step DDPM chain's 0.5% (tests/test_second_order.py).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pp_diffusion.integrators._base import IntegratorInfo, Integrator, half_log_snr, init_state


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


def _score_coefficient(alpha_t, sigma_t, alpha_s, noise_coef):
    return alpha_s * sigma_t**2 / alpha_t - sigma_t * noise_coef


def score_coefficient(schedule, t, s, eta, x0_var=None):
    """k_t, the coefficient of the score in the DDIM(eta) kernel mean from t to s: a score shift g moves
    the mean by k_t g."""
    alpha_t, sigma_t, alpha_s, noise_coef, _ = coefficients(schedule, t, s, eta, x0_var)
    return _score_coefficient(alpha_t, sigma_t, alpha_s, noise_coef)


def multistep_x0(x0_hat, x0_prev, lam_prev, lam_t, lam_s):
    """The second-order data prediction D = xhat_0 + h / (2 h') (xhat_0 - x0_prev) (module docstring),
    from the prediction ``x0_prev`` made at half log-SNR ``lam_prev``; xhat_0 itself when
    lam_prev = lam_t (no previous prediction) or lam_s = inf (the step into clean data)."""
    h_prev, h = lam_t - lam_prev, lam_s - lam_t
    usable = (h_prev > 0) & jnp.isfinite(h)
    ratio = jnp.where(usable, jnp.where(usable, h, 0.0) / (2 * jnp.where(usable, h_prev, 1.0)), 0.0)
    return x0_hat + ratio * (x0_hat - x0_prev)


def kernel_moments(schedule, x, x0_pred, t, s, eta, x0_var=None):
    """Mean and std of the DDIM(eta) kernel from (x, t) to s given the data prediction ``x0_pred``
    (xhat_0, or the multistep D), and k_t = alpha_s sigma_t^2 / alpha_t - sigma_t noise_coef, the
    coefficient of the score in the first-order mean (TDS's shift is k_t grad log h_t)."""
    alpha_t, sigma_t, alpha_s, noise_coef, std = coefficients(schedule, t, s, eta, x0_var)
    k = _score_coefficient(alpha_t, sigma_t, alpha_s, noise_coef)
    eps_hat = (x - alpha_t * x0_pred) / sigma_t
    return alpha_s * x0_pred + noise_coef * eps_hat, std, k


def transition(model, x, t, s, eta, x0_var=None, x0_prev=None, lam_prev=None):
    """Mean and standard deviation of the DDIM(eta) kernel from t to s, and the x0 prediction used;
    with ``x0_prev`` (made at half log-SNR ``lam_prev``) the second-order kernel (module docstring)."""
    x0_hat = model.denoise(x, t)
    if x0_prev is None:
        x0_pred = x0_hat
    else:
        x0_pred = multistep_x0(x0_hat, x0_prev, lam_prev, half_log_snr(model, t), half_log_snr(model, s))
    mean, std, _ = kernel_moments(model.schedule, x, x0_pred, t, s, eta, x0_var)
    return mean, std, x0_hat


def check_order(order) -> int:
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2):
        raise ValueError(f"order must be 1 (xhat_0) or 2 (the multistep extrapolation), got {order!r}")
    return order


def state_transition(model, state, t, s, eta, x0_var=None):
    """:func:`transition` from an :class:`IntegratorState` (with one previous prediction in its history
    for the second-order kernel): ``(mean, std, x0_hat, state)``, the state advanced (its count, and
    its history at order 2) but for ``x``, which the caller draws."""
    if state.x0_history.shape[0] == 0:
        mean, std, x0_hat = transition(model, state.x, t, s, eta, x0_var)
        return mean, std, x0_hat, state._replace(count=state.count + 1)
    lam_t = half_log_snr(model, t)
    lam_prev = jnp.where(state.count > 0, state.lambda_history[0], lam_t)
    mean, std, x0_hat = transition(model, state.x, t, s, eta, x0_var, state.x0_history[0], lam_prev)
    return mean, std, x0_hat, state._replace(x0_history=x0_hat[None], lambda_history=jnp.reshape(lam_t, (1,)),
                                             count=state.count + 1)


def ddim(eta: float = 0.0, x0_var=None, order: int = 1) -> Integrator:
    """DDIM with stochasticity ``eta`` in [0, 1] (0: deterministic; 1: DDPM ancestral); ``x0_var``
    (a :class:`~pp_diffusion.DenoisingVariance`) adds the analytic reverse variance; ``order=2``
    uses the multistep data prediction (eta = 0: DPM-Solver++(2M); eta = 1: SDE-DPM-Solver++(2M))."""
    if not 0.0 <= float(eta) <= 1.0:
        raise ValueError(f"eta must lie in [0, 1], got {eta}")
    eta, order = float(eta), check_order(order)
    stochastic = eta > 0.0 or x0_var is not None

    def init(x):
        return init_state(x, order - 1)

    def step(rng_key, state, model, t, s):
        mean, std, x0_hat, state = state_transition(model, state, t, s, eta, x0_var)
        x = mean + std * jax.random.normal(rng_key, mean.shape, mean.dtype) if stochastic else mean
        return state._replace(x=x), IntegratorInfo(x0_hat)

    name = ("ddpm" if eta == 1.0 else f"ddim(eta={eta:g})") + ("_2m" if order == 2 else "")
    return Integrator(init, step, 1, name + ("+x0_var" if x0_var is not None else ""))


def ddpm() -> Integrator:
    """DDPM ancestral sampling (Ho et al., 2020): DDIM with eta = 1."""
    return ddim(1.0)
