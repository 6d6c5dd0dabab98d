"""Particle marginal Metropolis–Hastings (Andrieu, Doucet & Holenstein, 2010) over a program's global
latents theta (a noise scale, an operator's gain), with a conditioning SMC sampler inside.

For fixed theta the program is an ordinary conditioned program over the diffusion site x (the sites
of theta set and hidden: :func:`~pp_diffusion.program.with_globals`), whose SMC run gives an unbiased
estimate Zhat(theta) of p(y | theta) and a draw x from the weighted particles. PMMH is
Metropolis–Hastings on (theta, x) whose proposal is a random walk theta' followed by that SMC run at
theta'; its acceptance ratio

.. math::  \\frac{\\hat Z(\\theta')\\, p(\\theta')\\, |J(u')|}{\\hat Z(\\theta)\\, p(\\theta)\\, |J(u)|}

(u the unconstrained value, theta = T(u) by NumPyro's ``biject_to``, J its Jacobian; the walk on u
is symmetric) leaves p(theta, x | y) invariant for any particle count: the estimator's noise costs
mixing, not correctness. The chain sticks where log Zhat happened to come out high, and the known
rule (Doucet, Pitt, Deligiannidis & Kohn, 2015) is a particle count at which the standard deviation
of log Zhat near the posterior is about 1 (1.2-1.7 at best); every iteration records its proposal's
log Zhat, ``diagnostics.log_z_sd`` is the standard deviation over the post-warm-up proposals (an
upper bound: it adds the spread of log p(y | theta') over the proposed theta'), and
``log_z_sd_at_theta`` that of 8 more runs at the chain's last theta, with the particle count that
would bring it to 1 (``advised_num_particles``).

The random walk's scale adapts during warm-up (Robbins–Monro on its log toward ``target_acceptance``),
then stays fixed. The chain is one ``lax.scan`` over iterations, each holding one SMC run: it
compiles once. The Metropolis step is written here rather than taken from BlackJAX's ``rmh``: that
kernel scores a proposal by a deterministic log-density of the position alone, while PMMH's score is
a random estimate whose same SMC run also yields the proposal's x.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pp_diffusion.pmcmc._inner import check_inner, conditioned_program, inner_settings, run_at
from pp_diffusion.program import GlobalSites, ProgramInfo, global_sites
from pp_diffusion.samplers import Sampler, SamplerOutput, _check_positive_int

__all__ = ["pmmh"]

REPEATS = 8  # SMC runs at the chain's last theta, for the spread of log Zhat there


class _Context(NamedTuple):
    globals: GlobalSites
    program: object  # the program with the globals set from data[GLOBALS_ARG]
    info: ProgramInfo  # its structure, read at globals.initial
    data: dict
    site: str


def pmmh(smc: Sampler, num_samples: int = 1000, num_warmup: int = 500, *, step_size: float = 0.5,
         target_acceptance: float = 0.25) -> Sampler:
    """PMMH over the program's global latents with the SMC sampler ``smc`` inside (module docstring).

    ``smc`` is ``pp_diffusion.smc.bootstrap``, ``twisted`` or ``fk_steering`` with its particle count;
    ``num_warmup`` iterations adapt the random walk's ``step_size`` (on the unconstrained scale, the
    same for every coordinate) toward ``target_acceptance``, then ``num_samples`` iterations are kept.
    Returns theta's sites and the diffusion site in ``posterior``; ``sample_stats`` per iteration:
    ``accepted``, ``acceptance_rate`` (min(1, ratio)), ``log_evidence`` (the proposal's log Zhat),
    ``ess`` (its final ESS), ``nfe`` and ``vjp`` (the iteration's network evaluations and VJPs, all
    particles); ``diagnostics``: the chain's acceptance rate, ``log_z_sd``, the adapted ``step_size``,
    ``nfe_per_accepted`` (the cost of one accepted draw), ``log_z_sd_at_theta`` (the sd of log Zhat over
    8 more SMC runs at the chain's last theta) and ``advised_num_particles``, N sd^2: the count at which
    that sd would be about 1 (the variance of log Zhat falls like 1 / N), the known rule for PMMH.
    """
    check_inner(smc)
    num_samples = _check_positive_int(num_samples, "num_samples")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative integer, got {num_warmup!r}")
    if not (isinstance(step_size, (int, float)) and not isinstance(step_size, bool) and step_size > 0
            and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    if not 0 < float(target_acceptance) < 1:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance!r}")
    total = num_warmup + num_samples
    num_particles = smc.settings["num_particles"]

    def setup(program, info, data) -> _Context:
        g = global_sites(program, info, data)
        conditioned, inner_info = conditioned_program(smc, program, info, data, g.names, g.initial)
        return _Context(g, conditioned, inner_info, dict(data), info.site)

    def run(rng_key, ctx: _Context) -> SamplerOutput:
        g = ctx.globals

        def smc_at(key, u):
            theta, log_det = g.constrain(u)
            k_run, k_pick = jax.random.split(key)
            out, nfe, vjp = run_at(smc, k_run, ctx.program, ctx.info, ctx.data, theta)
            log_z = out.run_stats["log_marginal_likelihood"]
            pick = jax.random.categorical(k_pick, out.particles["log_weight"])
            x = out.particles["x"][pick]
            log_target = log_z + g.log_prior(theta) + log_det
            log_target = jnp.where(jnp.isnan(log_target), -jnp.inf, log_target)
            return log_target, x, log_z, out.run_stats["final_ess"], (nfe, vjp)

        k_init, k_chain = jax.random.split(rng_key)
        u0 = g.unconstrain(g.initial)
        lt0, x0, _, _, _ = smc_at(k_init, u0)

        def body(carry, inputs):
            u, log_target, x, log_step = carry
            key, i = inputs
            k_prop, k_smc, k_acc = jax.random.split(key, 3)
            u_new = u + jnp.exp(log_step) * jax.random.normal(k_prop, u.shape)
            lt_new, x_new, log_z, ess, (nfe, vjp) = smc_at(k_smc, u_new)
            log_ratio = lt_new - log_target
            prob = jnp.where(jnp.isnan(log_ratio), 0.0, jnp.exp(jnp.minimum(log_ratio, 0.0)))
            accept = jax.random.uniform(k_acc) < prob
            # Robbins–Monro on the log step during warm-up (gain (i + 1)^-0.6), fixed afterwards
            gain = jnp.where(i < num_warmup, (i + 1.0) ** -0.6, 0.0)
            log_step = log_step + gain * (prob - target_acceptance)
            u, log_target = jnp.where(accept, u_new, u), jnp.where(accept, lt_new, log_target)
            x = jnp.where(accept, x_new, x)
            stats = {"accepted": accept, "acceptance_rate": prob, "log_evidence": log_z, "ess": ess, "nfe": nfe,
                     "vjp": vjp, "step_size": jnp.exp(log_step)}
            return (u, log_target, x, log_step), (g.constrain(u)[0], x, stats)

        keys = jax.random.split(k_chain, total)
        carry0 = (u0, lt0, x0, jnp.log(jnp.asarray(step_size, jnp.float32)))
        (u_end, *_), (thetas, xs, stats) = jax.lax.scan(body, carry0, (keys, jnp.arange(total)))
        # the estimator's own noise at the chain's last theta: REPEATS runs there, and the particle count
        # that would bring the sd of log Zhat to 1 (its variance falls like 1 / N)
        repeats = jax.lax.map(lambda k: smc_at(k, u_end)[2], jax.random.split(jax.random.fold_in(rng_key, 1), REPEATS))
        sd_at_theta = jnp.std(repeats, ddof=1)
        keep = lambda a: a[num_warmup:]
        thetas, xs, stats = jax.tree.map(keep, thetas), keep(xs), jax.tree.map(keep, stats)
        log_z = stats["log_evidence"]
        finite = jnp.isfinite(log_z)
        mean = jnp.sum(jnp.where(finite, log_z, 0.0)) / jnp.maximum(jnp.sum(finite), 1)
        log_z_sd = jnp.sqrt(jnp.sum(jnp.where(finite, (log_z - mean) ** 2, 0.0)) / jnp.maximum(jnp.sum(finite) - 1, 1))
        accepted = jnp.sum(stats["accepted"])
        run_stats = {"acceptance_rate": jnp.mean(stats["accepted"].astype(jnp.float32)), "log_z_sd": log_z_sd,
                     "step_size": stats["step_size"][-1], "nonfinite_log_z": jnp.sum(~finite).astype(jnp.int32),
                     "nfe_per_accepted": jnp.sum(stats["nfe"]) / jnp.maximum(accepted, 1),
                     "log_z_sd_at_theta": sd_at_theta,
                     "advised_num_particles": jnp.ceil(num_particles * sd_at_theta**2).astype(jnp.int32)}
        sample_stats = {k: (v.astype(jnp.int32) if k in ("nfe", "vjp") else v) for k, v in stats.items()
                        if k != "step_size"}
        return SamplerOutput({**thetas, ctx.site: xs}, sample_stats, run_stats)

    settings = {**inner_settings(smc), "num_samples": num_samples,
                "num_warmup": num_warmup, "step_size": float(step_size), "target_acceptance": float(target_acceptance)}
    return Sampler("pmmh", settings, setup, run)
