"""MCMC moves for SMC samplers: BlackJAX's MALA, HMC and NUTS kernels, called per particle.

A move is a value (:class:`Move`) that :func:`pp_diffusion.smc.energy` applies to every particle
after resampling, ``num_steps`` iterations of a kernel leaving the particles' current target
gamma_t(x) h_t(x) invariant. The kernels are BlackJAX's (``blackjax.mala``, ``blackjax.hmc``,
``blackjax.nuts``), unchanged; `unadjusted_langevin_move` (ULA, BlackJAX's SGLD step with the exact
gradient) has no Metropolis correction, so it is not invariant and says so in its name.

Step size. The targets change at every step of the reverse chain, so the step size is set per step
as ``exp(log_step) * v_t^p``, with v_t = alpha_t^2 v + sigma_t^2 the variance of the noisy data
(v the model's ``data_var``) and p = 1 for Langevin kernels (their step size is a variance) and 1/2 for
Hamiltonian ones (a length); ``log_step`` adapts across steps toward ``target_acceptance`` by a
Robbins–Monro update, log_step += ``adaptation_rate`` (acceptance - target), from the acceptance of the
last application (BlackJAX's window and dual-averaging adaptations tune one fixed target over a run of
one chain, not a sequence of targets). The step size of an application is fixed before it runs, so
each application is an exact MH kernel for its target.
"""

from __future__ import annotations

import numbers
from typing import Callable, NamedTuple

import blackjax
import blackjax.sgmcmc.diffusions as sgld_diffusions
import jax
import jax.numpy as jnp
from blackjax.mcmc.hmc import HMCState
from blackjax.mcmc.mala import MALAState

__all__ = ["Move", "MoveState", "mala_move", "hmc_move", "nuts_move", "unadjusted_langevin_move", "apply_move"]


class Move(NamedTuple):
    """An MCMC move: ``kernel(rng_key, state, logdensity_fn, step_size, num_steps) -> (state, mean
    acceptance, gradient evaluations)`` over a :class:`MoveState`, ``num_steps`` iterations of one BlackJAX kernel (:func:`apply_move`)."""

    name: str
    kernel: Callable
    num_steps: int
    step_size: float
    target_acceptance: float | None
    adaptation_rate: float
    step_power: float
    adjusted: bool

    @property
    def settings(self) -> dict:
        return {"move": self.name, "move_steps": self.num_steps, "move_step_size": self.step_size,
                "move_target_acceptance": "none" if self.target_acceptance is None else self.target_acceptance}


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def _positive(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not float(value) > 0:
        raise ValueError(f"{name} must be a positive number, got {value!r}")
    return float(value)


def _acceptance(target) -> float | None:
    if target is None:
        return None
    if isinstance(target, bool) or not isinstance(target, numbers.Real) or not 0 < float(target) < 1:
        raise ValueError(f"target_acceptance must lie in (0, 1) or be None (no adaptation), got {target!r}")
    return float(target)


class MoveState(NamedTuple):
    """A particle's position with its log-density and gradient (the fields of BlackJAX's ``MALAState`` and
    ``HMCState``), so that a move starts and ends without an extra evaluation."""

    position: jax.Array
    logdensity: jax.Array
    logdensity_grad: jax.Array


def _iterate(state_type, step: Callable, evaluations: Callable):
    """A move's kernel from a BlackJAX ``step(key, state, logdensity_fn, step_size) -> (state, info)`` over
    ``state_type`` (``MALAState`` or ``HMCState``): ``num_steps`` iterations in a ``lax.scan``, with the mean
    acceptance and the gradient evaluations (``evaluations(info)`` per iteration)."""

    def kernel(rng_key, state: MoveState, logdensity_fn, step_size, num_steps):
        def body(state, key):
            state, info = step(key, state, logdensity_fn, step_size)
            return state, (info.acceptance_rate, evaluations(info))

        start = state_type(*state)
        end, (acc, evals) = jax.lax.scan(body, start, jax.random.split(rng_key, num_steps))
        return MoveState(end.position, end.logdensity, end.logdensity_grad), jnp.mean(acc), jnp.sum(evals)

    return kernel


def mala_move(num_steps: int = 1, *, step_size: float = 0.1, target_acceptance: float | None = 0.574,
         adaptation_rate: float = 1.0) -> Move:
    """Metropolis-adjusted Langevin (``blackjax.mala``): x' = x + eps grad log pi(x) + sqrt(2 eps) xi,
    accepted with the Metropolis–Hastings ratio of that Gaussian proposal. ``step_size`` is the initial
    eps relative to v_t (module docstring); ``target_acceptance`` None keeps it fixed."""
    kernel = _iterate(MALAState, blackjax.mala.build_kernel(), lambda info: jnp.asarray(1.0))
    return Move("mala", kernel, _positive_int(num_steps, "num_steps"), _positive(step_size, "step_size"),
                _acceptance(target_acceptance), _positive(adaptation_rate, "adaptation_rate"), 1.0, True)


def hmc_move(num_steps: int = 1, *, num_integration_steps: int = 5, step_size: float = 0.3,
        target_acceptance: float | None = 0.65, adaptation_rate: float = 1.0) -> Move:
    """Hamiltonian Monte Carlo (``blackjax.hmc``), ``num_integration_steps`` leapfrog steps, identity
    mass matrix; ``step_size`` is the initial leapfrog step relative to sqrt(v_t)."""
    leapfrog = _positive_int(num_integration_steps, "num_integration_steps")

    def step(rng_key, state, logdensity_fn, step_size):
        inverse_mass = jnp.ones(state.position.size, state.position.dtype)
        return blackjax.hmc.build_kernel()(rng_key, state, logdensity_fn, step_size, inverse_mass, leapfrog)

    kernel = _iterate(HMCState, step, lambda info: jnp.asarray(float(leapfrog)))
    return Move(f"hmc({leapfrog})", kernel, _positive_int(num_steps, "num_steps"), _positive(step_size, "step_size"),
                _acceptance(target_acceptance), _positive(adaptation_rate, "adaptation_rate"), 0.5, True)


def nuts_move(num_steps: int = 1, *, step_size: float = 0.3, max_num_doublings: int = 6,
         target_acceptance: float | None = 0.8, adaptation_rate: float = 1.0) -> Move:
    """The No-U-Turn sampler (``blackjax.nuts``), identity mass matrix, at most ``max_num_doublings``
    doublings. Under ``vmap`` every particle waits for the longest trajectory of the batch; the NFE
    reported is the mean trajectory length."""
    doublings = _positive_int(max_num_doublings, "max_num_doublings")

    def step(rng_key, state, logdensity_fn, step_size):
        inverse_mass = jnp.ones(state.position.size, state.position.dtype)
        return blackjax.nuts.build_kernel()(rng_key, state, logdensity_fn, step_size, inverse_mass, doublings)

    kernel = _iterate(HMCState, step, lambda info: info.num_integration_steps.astype(jnp.float32))
    return Move("nuts", kernel, _positive_int(num_steps, "num_steps"), _positive(step_size, "step_size"),
                _acceptance(target_acceptance), _positive(adaptation_rate, "adaptation_rate"), 0.5, True)


def unadjusted_langevin_move(num_steps: int = 1, *, step_size: float = 0.01) -> Move:
    """Unadjusted Langevin (ULA): x' = x + eps grad log pi(x) + sqrt(2 eps) xi with no accept/reject
    (BlackJAX's SGLD step, ``blackjax.sgld``, with the exact gradient). Not invariant: its bias grows
    with eps. The step size stays fixed (relative to v_t); acceptance is reported as 1."""
    langevin = sgld_diffusions.overdamped_langevin()  # the update of blackjax.sgld, without its gradient estimator

    def kernel(rng_key, state: MoveState, logdensity_fn, step_size, num_steps):
        def body(state, key):
            x = langevin(key, state.position, state.logdensity_grad, step_size)
            return MoveState(x, *jax.value_and_grad(logdensity_fn)(x)), None

        state, _ = jax.lax.scan(body, state, jax.random.split(rng_key, num_steps))
        return state, jnp.asarray(1.0), jnp.asarray(float(num_steps))

    return Move("unadjusted_langevin", kernel, _positive_int(num_steps, "num_steps"),
                _positive(step_size, "step_size"), None, 1.0, 1.0, False)


def apply_move(move: Move, rng_key, state: MoveState, logdensity_fn: Callable, step_size):
    """``move.num_steps`` iterations of the move's kernel from ``state`` (one particle): ``(state, mean
    acceptance, gradient evaluations)``."""
    return move.kernel(rng_key, state, logdensity_fn, step_size, move.num_steps)
