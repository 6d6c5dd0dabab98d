"""Conditional SMC with ancestor sampling over the reverse diffusion chain (Andrieu, Doucet & Holenstein,
2010; Lindsten, Jordan & Schön, 2014), the x-update of particle Gibbs.

The Feynman–Kac model is that of bootstrap / twisted SMC on the program at fixed globals
(:func:`pp_diffusion.smc._twisted.chain_moves`): target path law p(x_N) prod_k p(x_{k+1} | x_k) G(x_0),
twists h_t that telescope out of it. One particle (index 0) is the *reference*: its path
x_N, ..., x_0 is given, and at every step it moves to its next given state instead of a draw (weighted as
the move there), while the other N - 1 particles are resampled multinomially (BlackJAX's
``resampling.multinomial``) and moved as usual. The kernel that draws a new path from the final weights
leaves the exact conditional p(x_{0:N} | y) invariant, for any N >= 2.

Ancestor sampling: before each step but the last, the reference's ancestor is redrawn among all
particles with probability proportional to

.. math::  W_t^i \\, p(x_s^{ref} \\mid x_t^i) \\, / \\, h_t(x_t^i),

(the weight of particle i times the target's transition to the reference's next state, the twist that the
reference's future weights no longer divide out removed), which lets the new path leave the old one
early instead of coalescing onto it (path degeneracy). The last step, into clean data, keeps the
reference's own ancestor: its transition x_0 = xhat_0(x_t1) is deterministic unless the program is
linear-Gaussian, and skipping ancestor sampling at a step keeps the kernel valid.

The run needs a first-order (Markov) chain: a second-order prior's kernel reads the ancestor's previous
prediction, so the reference's future would change with its ancestor. It resamples at every step.
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import blackjax.smc.base as smc_base
import blackjax.smc.resampling as resampling_lib
import jax
import jax.numpy as jnp

from pp_diffusion.smc._base import init_key, skeleton_state
from pp_diffusion.smc._twisted import prior_kernel

__all__ = ["CSMCInfo", "conditional_smc"]


class CSMCInfo(NamedTuple):
    """One conditional SMC run: the final ESS, the smallest ESS over steps, the run's log-evidence
    estimate (conditioned on the reference: not an unbiased estimate of p(y)), the NaN increments mapped
    to -inf, and whether every final weight was zero."""

    final_ess: jax.Array
    min_ess: jax.Array
    log_evidence: jax.Array
    num_nan: jax.Array
    degenerate: jax.Array


def conditional_smc(rng_key, fk, init_particle: Callable, move: Callable, num_particles: int, reference,
                    conditional, *, ancestor_sampling: bool = True):
    """``(path, CSMCInfo)``: a path x_N, ..., x_0 (shape ``(num_steps + 1, *event)``) drawn from the final
    weights of an SMC run over ``fk``'s chain with ``move`` (a :func:`~pp_diffusion.smc._twisted.chain_moves`
    move), conditioned on the path ``reference`` where the traced bool ``conditional`` is true (module
    docstring), an ordinary SMC run with multinomial resampling at every step where it is false."""
    times = fk.prior.times
    num_steps = times.shape[0] - 1
    ref_flag = (jnp.arange(num_particles) == 0) & conditional
    k_noise, k_run, k_pick = jax.random.split(rng_key, 3)
    x_T = fk.prior.initial_noise(k_noise, num_particles)
    x_T = x_T.at[0].set(jnp.where(conditional, reference[0], x_T[0]))
    state = skeleton_state(x_T, init_particle)
    first = jax.vmap(lambda k, p: move(k, p, times[0], times[0], -1, False))(
        jax.random.split(init_key(k_run), num_particles), state.particles)
    log_w0 = jnp.where(jnp.isnan(first.incr), -jnp.inf, first.incr)
    log_z0 = jax.scipy.special.logsumexp(log_w0) - jnp.log(num_particles)
    start = smc_base.SMCState(first._replace(log_w=jnp.zeros(num_particles)), jax.nn.softmax(log_w0), {})

    def body(carry, inputs):
        st, log_z, min_ess, num_nan = carry
        key, index = inputs
        t, s = times[index], times[index + 1]
        final = index == num_steps - 1
        k_as, k_step = jax.random.split(key)
        x_next = reference[index + 1]
        if ancestor_sampling:
            log_as = jnp.log(st.weights) - st.particles.log_h + jax.vmap(
                lambda p: _log_transition(fk.prior, p, t, s, index, x_next))(st.particles)
            a_ref = jnp.where(final, 0, jax.random.categorical(k_as, jnp.where(jnp.isnan(log_as), -jnp.inf, log_as)))
        else:
            a_ref = 0

        def resample_fn(key, weights, n):
            idx = resampling_lib.multinomial(key, weights, n)
            return idx.at[0].set(jnp.where(conditional, a_ref, idx[0]))

        def update_fn(keys, particles, params):
            def moved(last):
                return jax.vmap(lambda k, p, f: move(k, p, t, s, index, last, fixed=(x_next, f)))(
                    keys, particles, ref_flag)
            return jax.lax.cond(final, lambda: moved(True), lambda: moved(False)), None

        def weight_fn(particles):
            return jnp.where(jnp.isnan(particles.incr), -jnp.inf, particles.incr)

        new, info = smc_base.step(k_step, st, update_fn, weight_fn, resample_fn)
        ess = 1.0 / jnp.sum(new.weights**2)
        carry = (new, log_z + info.log_likelihood_increment, jnp.minimum(min_ess, ess),
                 num_nan + jnp.sum(jnp.isnan(new.particles.incr)))
        return carry, (new.particles.x, info.ancestors)

    carry0 = (start, log_z0, 1.0 / jnp.sum(start.weights**2), jnp.sum(jnp.isnan(first.incr)))
    keys = jax.random.split(k_run, num_steps)
    (end, log_z, min_ess, num_nan), (xs, ancestors) = jax.lax.scan(body, carry0, (keys, jnp.arange(num_steps)))
    degenerate = ~jnp.all(jnp.isfinite(end.weights))
    pick = jax.random.categorical(k_pick, jnp.log(jnp.where(degenerate, 1.0, end.weights)))

    def back(i, inputs):  # the picked particle's ancestor one level up, and its state there
        a, x_prev = inputs
        return a[i], x_prev[a[i]]

    levels = jnp.concatenate([first.x[None], xs[:-1]])  # the states each step moved from
    _, path = jax.lax.scan(back, pick, (ancestors, levels), reverse=True)
    path = jnp.concatenate([path, xs[-1][pick][None]])
    info = CSMCInfo(1.0 / jnp.sum(end.weights**2), min_ess, log_z, num_nan.astype(jnp.int32), degenerate)
    return path, info


def _log_transition(prior, p, t, s, index, x_next):
    """log p(x_next | x_t) of the prior's DDIM(eta) kernel from particle ``p`` (its cached x0_hat)."""
    mean, std, _ = prior_kernel(prior, p, t, s, index)
    std = jnp.broadcast_to(std, mean.shape)
    return jnp.sum(-0.5 * ((x_next - mean) / std) ** 2 - jnp.log(std))
