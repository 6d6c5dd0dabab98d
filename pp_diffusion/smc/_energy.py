"""SMC on a path of energy targets (Thornton et al., 2025; Del Moral, Doucet & Jasra, 2006).

The program's diffusion site has an energy E_t (one model with an energy, or an
:class:`~pp_diffusion.energy.EnergyPrior`: products, tempering, guidance), which defines targets
gamma_t(x) = exp(-E_t(x)) on the time grid t_N > ... > t_0 = 0. Particles start from
pi_N = N(0, sigma_N^2 I) (sigma_N = ``prior.initial_std``: sigma_T / sqrt(sum_k beta_k) for an energy prior)
with weight gamma_N / pi_N, move by the reverse DDPM-family kernel of the
energy's own score, M(x_s | x_t) = N(m(x_t), c^2 I) (shifted by k_t grad log h_t when the program
observes something, as in TDS), and are weighted with the forward noising kernel
q(x_t | x_s) = N(alpha_t/alpha_s x_s, (sigma_t^2 - alpha_t^2/alpha_s^2 sigma_s^2) I) as backward kernel:

.. math::  w_s = \\frac{\\gamma_s(x_s)\\, h_s(x_s)\\; q(x_t \\mid x_s)}{\\gamma_t(x_t)\\, h_t(x_t)\\; M(x_s \\mid x_t)},

with h_t the program's twist (1 without observations; h_0 = G). The product of the mean weights
estimates Z = int gamma_0(x) G(x) dx, unbiased; for energies that are normalised log densities (the
exact mixture) this is the normaliser of the composed target itself (for a product of two
mixtures, sum_ij w_i w_j N(mu_i; mu_j, C_i + C_j)), and for network energies Z is relative to the
networks' own constants at t = 0.

The last step. When every energy is an exact log density (``EnergySum.clean_energy``, or a model with
a ``data_distribution``), x_0 is drawn from N(xhat_0(x_t1), r_t1^2 I) (r_t1^2 the conditioning
samplers' Var[x_0 | x_t1]) and weighted against gamma_0 G. A network energy is not defined at
sigma = 0, so there the weighted path ends at t_1 and x_0 = xhat_0(x_t1), the chain's own last step,
with weight G(x_0) / h_t1(x_t1).

MCMC moves (:mod:`pp_diffusion.mcmc`) run after each resampling (every step with
``move_every_step``) on log gamma_t + log h_t at the particles' current time.
"""

from __future__ import annotations

from typing import Callable

import blackjax.smc.resampling as resampling_lib
import jax
import jax.numpy as jnp
import numpy as np

from pp_diffusion.energy import EnergySum, has_exact_energy
from pp_diffusion.integrators._ddim import coefficients, kernel_moments
from pp_diffusion.mcmc._moves import Move, MoveState, apply_move
from pp_diffusion.parameterization import tweedie
from pp_diffusion.program import FeynmanKacModel, feynman_kac
from pp_diffusion.samplers import Sampler
from pp_diffusion.smc._base import Particle, fk_sampler

__all__ = ["energy"]

_LOG_2PI = float(np.log(2 * np.pi))


def _gaussian_log_density(resid, std):
    """log N(resid; 0, std^2 I) for an array ``resid``."""
    d = resid.size
    return -0.5 * jnp.sum(resid**2) / std**2 - d * jnp.log(std) - 0.5 * d * _LOG_2PI


def clean_energy(model) -> bool:
    """Whether the model's energy is an exact log density down to t = 0."""
    if isinstance(model.network, EnergySum):
        return model.network.clean_energy
    return has_exact_energy(model)


def energy_moves(fk: FeynmanKacModel):
    """``init_particle`` and ``move`` of :func:`energy` (module docstring)."""
    prior = fk.prior
    model, schedule = prior.model, prior.model.schedule
    observed = bool(fk.twists)
    clean = clean_energy(model)
    potential = fk.potential
    shape = model.event_shape

    # The twist looks ahead through the Tweedie estimate of the score divided by B = sum_k beta_k: for p^beta
    # that is p's own denoiser. The composed score's Tweedie estimate (x + sigma^2 B s) / alpha diverges at high
    # noise for B != 1 (about -x / alpha for p^2), and a twist of it sends the particles to infinity; the
    # proposal keeps the composed estimate, whose divergence cancels in the DDPM mean.
    total_beta = sum(model.network.betas) if isinstance(model.network, EnergySum) else 1.0

    def twist(y, t, score):
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        x0 = tweedie(y, score / total_beta, alpha, sigma)
        value = potential.log_h(y, x0, t, alpha, sigma)
        if potential.lookahead is not None:  # tempered sites: the plain look-ahead, log G(xhat_0(x_t))
            value = value + potential.lookahead(x0)
        return value

    def evaluate(x, t):
        """The particle at x and time t: log_h = log gamma_t + log h_t, grad_log_h = grad log h_t, aux = log h_t."""
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)

        def parts(y):
            e, score = model.energy_and_score(y, t)
            x0 = tweedie(y, score, alpha, sigma)
            return (twist(y, t, score) if observed else jnp.zeros(())), (e, x0)

        if observed:
            (log_h, (e, x0)), grad = jax.value_and_grad(parts, has_aux=True)(x)
        else:
            log_h, (e, x0) = parts(x)
            grad = jnp.zeros_like(x)
        z = jnp.zeros(())
        return Particle(x, x0, log_h - e, grad, log_h, z, z)

    def log_target(x, t):
        """log gamma_t(x) + log h_t(x), the MCMC moves' target."""
        if not observed:
            return -model.energy(x, t)
        e, score = model.energy_and_score(x, t)
        return twist(x, t, score) - e

    def init_particle(x_T):
        z = jnp.zeros(())
        return Particle(x_T, jnp.zeros_like(x_T), z, jnp.zeros_like(x_T), z, z, z)

    sigma_N = prior.initial_std  # x_T ~ N(0, sigma_N^2 I)

    def move(rng_key, p: Particle, t, s, index, final: bool):
        if final:
            alpha_t, sigma_t = schedule.alpha(t), schedule.sigma(t)
            if clean:  # x_0 ~ N(xhat_0, r^2 I), weighted against gamma_0 G with q(x_t1 | x_0) = N(alpha x_0, sigma^2 I)
                r = jnp.sqrt(fk.final_var(t))
                z = jax.random.normal(rng_key, shape)
                x0 = p.x0_hat + r * z
                target = fk.log_g(x0) - model.energy(x0, s)
                log_back = _gaussian_log_density(p.x - alpha_t * x0, sigma_t)
                incr = target + log_back - p.log_h - _gaussian_log_density(r * z, r)
            else:  # the chain's deterministic last step; the twist is divided out, gamma_t1 kept
                x0 = p.x0_hat
                target = fk.log_g(x0)
                incr = target - p.aux
            z0 = jnp.zeros(())
            return Particle(x0, x0, target, jnp.zeros_like(x0), z0, p.log_w, incr, origin=p.origin)
        first = index < 0
        mean_p, std, k = kernel_moments(schedule, p.x, p.x0_hat, t, s, prior.eta, None)
        # widened by the uncertainty of x_0 given x_t (module docstring): c^2 + c_0^2 r_t^2
        alpha_t, sigma_t, alpha_s, noise_coef, _ = coefficients(schedule, t, s, prior.eta)
        c0 = alpha_s - noise_coef * alpha_t / sigma_t
        std = jnp.sqrt(std**2 + c0**2 * fk.final_var(t))
        mean_q = mean_p + k * p.grad_log_h if observed else mean_p
        z = jax.random.normal(rng_key, shape)
        x_s = jnp.where(first, p.x, mean_q + std * z)
        new = evaluate(x_s, s)._replace(log_w=p.log_w, origin=p.origin)
        ratio = jnp.where(first, 1.0, schedule.alpha(t) / schedule.alpha(s))
        back_std = jnp.sqrt(jnp.maximum(schedule.sigma(t) ** 2 - ratio**2 * schedule.sigma(s) ** 2, 1e-30))
        log_back = _gaussian_log_density(p.x - ratio * x_s, back_std) - _gaussian_log_density(std * z, std)
        incr = jnp.where(first, new.log_h - _gaussian_log_density(x_s, sigma_N), new.log_h - p.log_h + log_back)
        return new._replace(incr=incr)

    return init_particle, move, evaluate, log_target


def _mcmc(move: Move):
    """The ``mcmc`` factory of :func:`pp_diffusion.smc._base.fk_sampler` for a :class:`Move`."""

    def factory(fk: FeynmanKacModel):
        *_, evaluate, log_target = energy_moves(fk)
        schedule, v = fk.prior.model.schedule, fk.prior.model.data_var
        cost = 2 if fk.twists else 1  # a twist through xhat_0 differentiates the score: one more VJP

        def mcmc(keys, particles, t, log_step):
            alpha, sigma = schedule.alpha(t), schedule.sigma(t)
            step_size = jnp.exp(log_step) * (alpha**2 * v + sigma**2) ** move.step_power
            target = lambda y: log_target(y, t)

            def one(key, p):
                start = MoveState(p.x, *jax.value_and_grad(target)(p.x))
                end, acc, evals = apply_move(move, key, start, target, step_size)
                if fk.twists:  # x0_hat needs the energy's score alone: evaluate again
                    new, evals = evaluate(end.position, t), evals + 2.0
                else:  # the target's gradient is the score
                    x0 = tweedie(end.position, end.logdensity_grad, alpha, sigma)
                    new, evals = p._replace(x=end.position, x0_hat=x0, log_h=end.logdensity), evals + 1.0
                return new._replace(log_w=p.log_w, origin=p.origin, incr=p.incr), acc, evals

            moved, acc, evals = jax.vmap(one)(keys, particles)
            acc = jnp.mean(jnp.where(jnp.isnan(acc), 0.0, acc))
            new_log_step = log_step
            if move.target_acceptance is not None:
                new_log_step = log_step + move.adaptation_rate * (acc - move.target_acceptance)
            return moved, acc, step_size, jnp.mean(evals) * cost, new_log_step

        return mcmc, float(np.log(move.step_size)), fk.prior.model.nfe_per_call

    return factory


def _setup(program, info, data):
    model = info.prior.model
    if getattr(info.prior, "augmented", False):
        raise ValueError(f"smc.energy weighs a VP energy model's chain; the diffusion site {info.site!r} has a "
                         f"phase-space prior ({model.name}): condition it with pp_diffusion.smc.bootstrap or "
                         "pp_diffusion.guidance.dps")
    model.check_energy(f"the diffusion site {info.site!r}'s model")
    if info.prior.order != 1 or info.prior.x0_var is not None:
        raise ValueError("smc.energy uses the first-order DDPM-family kernel: build the prior without order=2 and "
                         "without x0_var")
    return feynman_kac(program, info, data, energy_targets=True)


def energy(num_particles: int = 1000, *, move: Move | None = None, move_every_step: bool = False,
           resampling: Callable = resampling_lib.systematic, ess_threshold: float = 0.5) -> Sampler:
    """SMC on the energy targets gamma_t = exp(-E_t) of the program's diffusion prior (module docstring):
    a product, tempered or guided :class:`~pp_diffusion.energy.EnergyPrior`, or one model with an energy,
    times the program's twists when it observes something.

    ``move``: an MCMC move of :mod:`pp_diffusion.mcmc` (``mala_move``, ``hmc_move``, ``nuts_move``, or
    ``unadjusted_langevin_move``) applied after each resampling (``move_every_step``: at every step),
    leaving gamma_t h_t invariant. Costs one energy evaluation and its gradient (one NFE and one VJP
    per model of a composition) per step and particle, two VJPs when the program observes something,
    plus the moves' gradient evaluations; per-step acceptance rates and step sizes are in the
    DataTree's ``diagnostics``.
    """
    if move is not None and not isinstance(move, Move):
        raise TypeError(f"move must be an MCMC move such as pp_diffusion.mcmc.mala_move(), got {type(move).__name__}")
    extra = {"move": "none"} if move is None else move.settings
    extra["move_every_step"] = bool(move_every_step)
    return fk_sampler("energy", lambda fk: energy_moves(fk)[:2], num_particles=num_particles, nfe_per_step=1,
                      vjp_per_step=lambda fk: 2 if fk.twists else 1, resampling=resampling,
                      ess_threshold=ess_threshold, extra_settings=extra, setup=_setup,
                      mcmc=None if move is None else _mcmc(move), mcmc_every_step=move_every_step)
