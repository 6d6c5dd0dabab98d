"""The integrator interface: a pure ``init`` / ``step`` pair over a NamedTuple state, and the scan that runs it."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp

from pp_diffusion import _progress


class IntegratorState(NamedTuple):
    """State carried between steps, for one unbatched sample (callers ``vmap`` over particles).

    x
        The current x_t.
    x0_history
        ``(order - 1, *event_shape)`` previous x0 predictions, newest first (multistep methods).
    lambda_history
        ``(order - 1,)`` the half log-SNR ``log(alpha / sigma)`` at which they were made.
    count
        Number of steps taken so far.
    """

    x: jax.Array
    x0_history: jax.Array
    lambda_history: jax.Array
    count: jax.Array


class IntegratorInfo(NamedTuple):
    """Per-step diagnostics: the Tweedie estimate xhat_0(x_t) made at this step."""

    x0_hat: jax.Array


class Integrator(NamedTuple):
    """A reverse-time integrator, independent of the model (BlackJAX's ``build_kernel`` convention).

    init
        ``init(x_T) -> IntegratorState``.
    step
        ``step(rng_key, state, model, t, s) -> (IntegratorState, IntegratorInfo)``: move from time
        ``t`` to the earlier time ``s`` with the :class:`~pp_diffusion.DiffusionModel` ``model``.
    nfe_per_step
        Network evaluations per step and per sample.
    name
        A label for results.
    """

    init: Callable
    step: Callable
    nfe_per_step: int
    name: str


def init_state(x, history: int) -> IntegratorState:
    return IntegratorState(
        x=x,
        x0_history=jnp.zeros((history, *jnp.shape(x)), dtype=jnp.result_type(x)),
        lambda_history=jnp.zeros((history,), dtype=jnp.result_type(x)),
        count=jnp.zeros((), dtype=jnp.int32),
    )


def half_log_snr(model, t):
    """lambda = log(alpha_t / sigma_t) (DPM-Solver's convention: half the log-SNR); +inf at clean data."""
    return jnp.log(model.schedule.alpha(t)) - jnp.log(model.schedule.sigma(t))


def integrate(rng_key, integrator: Integrator, model, x_T, times, *, return_trajectory: bool = False):
    """Run ``integrator`` from ``x_T`` along the decreasing ``times`` in one ``lax.scan``.

    Returns ``(x_0, info)``; ``info.x0_hat`` is stacked over steps, and when
    ``return_trajectory`` the stacked states' ``x`` are returned instead of just x_0.
    """
    from pp_diffusion.phase_space import AugmentedModel

    if isinstance(model, AugmentedModel):
        raise TypeError(f"model is an augmented (phase-space) model ({model.name!r}, states of shape "
                        f"{model.state_shape}); integrator {integrator.name!r} integrates VP/VE models only: use "
                        "pp_diffusion.phase_space.integrate with one of its splitting integrators")
    keys = jax.random.split(rng_key, times.shape[0] - 1)

    def body(state, inputs):
        key, t, s, index = inputs
        state, info = integrator.step(key, state, model, t, s)
        _progress.tick(index)
        return state, ((state.x, info) if return_trajectory else info)

    steps = jnp.arange(times.shape[0] - 1)
    state, out = jax.lax.scan(body, integrator.init(x_T), (keys, times[:-1], times[1:], steps))
    return (out if return_trajectory else (state.x, out))
