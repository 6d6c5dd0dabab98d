"""Bootstrap SMC and DPS over a phase-space prior's chain (z = [x; m], :mod:`pp_diffusion.phase_space`).

A :class:`~pp_diffusion.DiffusionPrior` over an :class:`~pp_diffusion.phase_space.AugmentedModel`
is the law of x = z_{t_min}[0] at the end of its splitting integrator's chain z_{t_N} -> ... ->
z_{t_min}, started from z_{t_N} ~ N(0, Sigma_inf). Its steps (SSCS, Euler–Maruyama, OBA) are Markov
kernels on z whose densities are not available in closed form (SSCS composes two Gaussian
half-steps around a nonlinear score step), so the methods that divide by a proposal density
(twisted SMC, FK steering's guided variant, MCGdiff) have no phase-space form here. Two do not need
one:

- **bootstrap SMC**: particles are z, moved by the prior's own step (q = p), weighted by
  h_s(z_s) / h_t(z_t) with the twist evaluated at the GLS Tweedie estimate xhat_0(z_t)
  (:meth:`AugmentedModel.denoise`) and r_t^2 = Var[x_0 | z_t] for N(0, v) data
  (:meth:`AugmentedModel.x0_var`), and h_0 = G at x = z_{t_min}[0]. The twist is any positive function,
  so the estimator of Z = E[G(x)] is unbiased and the draws consistent whatever the twist's accuracy;
  the momentum is carried and marginalised by reading x off z.
- **DPS**: one guided chain per draw, the prior's step with the score replaced by
  s(z, t) + scale * grad_z log G(xhat_0(z, t)) (the gradient through the denoiser, over x and m
  alike), unweighted. The normalised step of the VP form is a step on x_t, not a score term, and is
  not offered here.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pp_diffusion.phase_space._splitting import SplittingState
from pp_diffusion.program import FeynmanKacModel
from pp_diffusion.smc._base import Particle

__all__ = ["augmented_moves", "augmented_cost"]


def augmented_cost(fk: FeynmanKacModel, *, weighted: bool) -> tuple[int, int]:
    """Network evaluations and VJPs per particle of one run: the integrator's score calls at every
    step (its ``first_step_extra_nfe`` once), and for weighted runs one denoiser call per twist
    evaluation (at z_T and after every step but the last); DPS's guided score costs one VJP per call."""
    prior = fk.prior
    integrator_calls = prior.steps * prior.integrator.nfe_per_step + prior.integrator.first_step_extra_nfe
    if weighted:
        return integrator_calls + prior.steps, 0
    return integrator_calls, integrator_calls


def augmented_moves(fk: FeynmanKacModel, *, guidance_scale: float | None = None):
    """``init_particle``, ``move`` for bootstrap SMC (``guidance_scale=None``) or DPS (the guided score,
    unweighted) over a phase-space prior (module docstring). A particle's ``x`` is z, ``x0_hat`` the
    Tweedie estimate xhat_0(z_t) (for the twist; x itself after the last step)."""
    prior = fk.prior
    model, integrator = prior.model, prior.integrator
    guided = guidance_scale is not None
    one = jnp.ones(())

    def guided_score(z, t):
        def lookahead(z_):
            score, x0 = model.score_and_denoise(z_, t)
            return fk.log_g(x0), score

        grad, score = jax.grad(lookahead, has_aux=True)(z)
        return score + guidance_scale * grad

    score_fn = guided_score if guided else model.score

    def twist(z, t):
        if guided:  # unweighted: no twist
            return jnp.zeros(()), jnp.zeros(prior.event_shape, z.dtype)
        x0 = model.denoise(z, t)
        return fk.potential.log_h(z, x0, t, one, one), x0  # r_t^2 from model.x0_var (feynman_kac)

    def init_particle(z_T):  # unevaluated: the first step (index -1) evaluates it
        zeros = jnp.zeros(())
        return Particle(z_T, jnp.zeros(prior.event_shape, z_T.dtype), zeros, jnp.zeros_like(z_T), zeros, zeros, zeros)

    def move(rng_key, p: Particle, t, s, index, final: bool):
        first = index < 0
        state = SplittingState(p.x, jnp.zeros_like(p.x), jnp.maximum(index, 0))
        # the first evaluation (t = s = t_N) takes no step: a cond, not a discarded network call
        z_s = jax.lax.cond(first, lambda: p.x, lambda: integrator.step(rng_key, state, score_fn, t, s)[0].z)
        if final:  # h_0 = G at x = z_{t_min}[0]
            x = z_s[0]
            log_h, x0_hat = fk.log_g(x), x
        else:  # index -1 evaluates the initial particle (z_s = z_T)
            log_h, x0_hat = twist(z_s, s)
        incr = jnp.zeros(()) if guided else log_h - p.log_h
        return Particle(z_s, x0_hat, log_h, jnp.zeros_like(z_s), jnp.zeros(()), p.log_w, incr)

    return init_particle, move
