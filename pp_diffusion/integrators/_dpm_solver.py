"""DPM-Solver++ multistep (Lu et al., 2022, "DPM-Solver++: Fast solver for guided sampling").

The probability-flow ODE in the half log-SNR lambda = log(alpha / sigma), written for the data
prediction, is solved exactly in its linear part:

.. math::
    x_s = \\frac{\\sigma_s}{\\sigma_t} x_t + \\sigma_s \\int_{\\lambda_t}^{\\lambda_s} e^{\\lambda} \\hat x_0(x_\\lambda)\\, d\\lambda,

and the integral is approximated by a polynomial through the last ``order`` x0 predictions
(one network evaluation per step). With h = lambda_s - lambda_t and phi = expm1(-h):

- order 1 (DDIM): x_s = (sigma_s / sigma_t) x_t - alpha_s phi D0;
- order 2 ("2M"): adds - alpha_s phi D1 / 2 with D1 = (D0 - D_prev) / r, r = h_prev / h;
- order 3 ("3M"): adds alpha_s phi_2 D1 - c alpha_s phi_3 D2, with phi_2 = phi / h + 1,
  phi_3 = phi_2 / h - 1/2, D1 the second-order estimate of h x0'(lambda_t) and
  D2 = (D1_0 - D1_1) / (r0 + r1) ~ h^2 x0''(lambda_t) / 2 from the last three predictions.

Two forms of the third-order term (``third_order``):

- ``"reference"`` (c = 1, the default): as ``multistep_dpm_solver_third_update`` in
  LuChengTHU/dpm-solver and diffusers writes it.
- ``"taylor"`` (c = 2): the Taylor term of the integral is
  alpha_s e^{-h} \\int_0^h e^u u^2 du x0''/2 = alpha_s (-2 phi_3) D2 (= alpha_s h^3 x0''/6 + ...),
  so the reference update has an O(h^3) local error and is only second order. On a Gaussian,
  where the exact ODE solution is closed-form, the reference form's error falls 4.4x when the
  steps double, against 16x with the factor 2 (tests/test_integrators.py). With the factor 2 the
  update coincides with UniP-3 (:func:`~pp_diffusion.integrators.unipc` with ``corrector=False``),
  derived from the order conditions independently.

Why the reference form is the default: the order argument is asymptotic (many steps, smooth
x0(lambda)). On the 25-component mixture of ``benchmarks/integrators.py`` (table (a): RMSE to the
exact ODE endpoint, 2,000 samples, the same x_T for both), d = 64, uniform-t grid, the reference
form gives 1.864 / 0.704 / 0.242 at NFE 10 / 20 / 50 against 1.931 / 0.852 / 0.327 with the
factor 2 (standard errors about 0.055, but the draws are shared, so the differences are far
more precise than that), and fewer samples end in another component (12.6 / 2.0 / 0.25% against
13.4 / 2.85 / 0.45%). There x0(lambda) changes abruptly as a sample commits to a component and
the full-weight D2 extrapolation overshoots. In d = 2 the two forms trade places (reference
0.359 against 0.428 at NFE 10; Taylor 0.0084 against 0.0112 at NFE 50). The measured difference
comes from the D2 coefficient, not from the final steps: lowering the order on the final steps
(below) changes the d = 64 RMSE by less than 0.002 at NFE 10 and not at all from 15 steps on;
at NFE 5 it helps in d = 2 (1.29 -> 1.13) and costs a little in d = 64 (4.29 -> 4.33).

Orders drop at the start (not enough history) and on the step into clean data (sigma_s = 0,
h = inf), which is first order, where the update is exactly x_s = alpha_s xhat_0 (needed because
r = 0 there). With ``lower_order_final`` and the number of ``steps`` given, the last steps also use
order min(order, steps remaining) when there are fewer than 15 steps, as diffusers does (so 3M's
penultimate step is second order there): that reproduces the peer's endpoints from the same x_T
to float32 round-off (median 1e-6 per coordinate, benchmark table (a)).
"""

from __future__ import annotations

import jax.numpy as jnp

from pp_diffusion.integrators._base import IntegratorInfo, Integrator, half_log_snr, init_state

THIRD_ORDER_DEFAULT = "reference"
LOWER_ORDER_FINAL_BELOW = 15  # diffusers' threshold on the number of steps


def dpm_solver_pp(order: int = 2, *, third_order: str = THIRD_ORDER_DEFAULT, lower_order_final: bool = True,
                  steps: int | None = None) -> Integrator:
    """DPM-Solver++ multistep of order 1, 2 (the usual "2M") or 3.

    third_order
        ``"reference"`` (coefficient phi_3 on the second difference, as in LuChengTHU/dpm-solver and
        diffusers) or ``"taylor"`` (2 phi_3, the Taylor coefficient); only used when ``order == 3``.
    lower_order_final, steps
        With ``steps`` (the number of steps of the grid) given and ``lower_order_final``, the last
        steps use order min(order, steps remaining) when ``steps < 15``, as diffusers'
        ``lower_order_final`` does. The step into clean data (sigma = 0) is first order whatever
        these are (see the module docstring). Without ``steps`` only that final step is lowered.
    """
    if isinstance(order, bool) or not isinstance(order, int) or order not in (1, 2, 3):
        raise ValueError(f"order must be 1, 2 or 3, got {order!r}")
    if third_order not in ("reference", "taylor"):
        raise ValueError(f"third_order must be 'reference' or 'taylor', got {third_order!r}")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise ValueError(f"steps must be a positive int or None, got {steps!r}")
    d2_coef = 2.0 if third_order == "taylor" else 1.0
    lower_final = bool(lower_order_final) and steps is not None and steps < LOWER_ORDER_FINAL_BELOW

    def init(x):
        return init_state(x, order - 1)

    def step(rng_key, state, model, t, s):
        del rng_key  # deterministic
        x = state.x
        alpha_s, sigma_s, sigma_t = model.schedule.alpha(s), model.schedule.sigma(s), model.schedule.sigma(t)
        lam_t, lam_s = half_log_snr(model, t), half_log_snr(model, s)
        final = sigma_s == 0
        h = jnp.where(final, 1.0, lam_s - lam_t)
        phi = jnp.where(final, -1.0, jnp.expm1(-h))
        d0 = model.denoise(x, t)
        base = (sigma_s / sigma_t) * x - alpha_s * phi * d0
        available = jnp.where(final, 1, jnp.minimum(state.count + 1, order))
        if lower_final:
            available = jnp.minimum(available, steps - state.count)
        update = base
        if order >= 2:
            r0 = (lam_t - state.lambda_history[0]) / h
            r0 = jnp.where(available >= 2, r0, 1.0)
            d1_0 = (d0 - state.x0_history[0]) / r0
            second = base - 0.5 * alpha_s * phi * d1_0
            update = jnp.where(available >= 2, second, update)
        if order >= 3:
            r1 = (state.lambda_history[0] - state.lambda_history[1]) / h
            r1 = jnp.where(available >= 3, r1, 1.0)
            d1_1 = (state.x0_history[0] - state.x0_history[1]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            third = (
                base
                + alpha_s * (phi / h + 1.0) * d1
                - d2_coef * alpha_s * ((phi + h) / h**2 - 0.5) * d2  # (2) phi_3: see the module docstring
            )
            update = jnp.where(available >= 3, third, update)
        x0_hist = jnp.concatenate([d0[None], state.x0_history[:-1]], axis=0) if order > 1 else state.x0_history
        lam_hist = jnp.concatenate([lam_t[None], state.lambda_history[:-1]]) if order > 1 else state.lambda_history
        new = state._replace(x=update, x0_history=x0_hist, lambda_history=lam_hist, count=state.count + 1)
        return new, IntegratorInfo(d0)

    suffix = "_taylor" if (order == 3 and third_order == "taylor") else ""
    return Integrator(init, step, 1, f"dpm_solver_pp_{order}m{suffix}")
