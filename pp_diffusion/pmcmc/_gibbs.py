"""Particle Gibbs (Andrieu, Doucet & Holenstein, 2010) with ancestor sampling (Lindsten, Jordan & Schön,
2014) over a program's global latents theta and the diffusion draw x.

Each iteration alternates two updates that each leave p(theta, x_{0:N} | y) invariant:

1. x | theta, y: conditional SMC (:func:`~pp_diffusion.pmcmc._csmc.conditional_smc`) at theta, with the
   chain's current path as the retained reference; its new path is one draw from a kernel that keeps the
   exact conditional p(x_{0:N} | theta, y) invariant, for any particle count.
2. theta | x_0, y: the twists telescope out of the path law, so theta's conditional is
   p(theta) p(y | x_0, theta), a cheap density with no network in it. BlackJAX's ``nuts`` (or ``mala``)
   moves it on the unconstrained scale u (NumPyro's ``biject_to``, log-Jacobian included), ``theta_steps``
   moves per iteration, the step size adapted in warm-up by Robbins–Monro on its log toward
   ``target_acceptance``, then fixed; identity mass matrix.

Against PMMH (:func:`~pp_diffusion.pmcmc.pmmh`): no estimate of p(y | theta) enters, so few particles
suffice, but theta and x move one given the other: when y pins x_0 tightly and x_0 pins theta, the
chain moves theta slowly. The retained path's update rate (``x_update_rate``: the share of iterations
whose x_0 changed) is the particle count's diagnostic: near 1 - 1/N mixing is good, near 0 the path is
stuck on the reference.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import blackjax
import jax
import jax.numpy as jnp

from pp_diffusion.pmcmc._csmc import conditional_smc
from pp_diffusion.pmcmc._inner import conditioned_program, inner_settings
from pp_diffusion.program import GLOBALS_ARG, GlobalSites, ProgramInfo, global_sites, log_potential_fn
from pp_diffusion.samplers import Sampler, SamplerOutput, _check_positive_int
from pp_diffusion.smc._twisted import chain_moves

__all__ = ["particle_gibbs"]

KERNELS = {"nuts": 0.8, "mala": 0.57}  # BlackJAX kernel -> its default target acceptance rate


class _Context(NamedTuple):
    globals: GlobalSites
    program: object  # the program with the globals set from data[GLOBALS_ARG]
    info: ProgramInfo
    data: dict
    site: str


def particle_gibbs(smc: Sampler, num_samples: int = 1000, num_warmup: int = 500, *, theta_kernel: str = "nuts",
                   theta_steps: int = 1, step_size: float = 0.1, target_acceptance: float | None = None,
                   ancestor_sampling: bool = True) -> Sampler:
    """Particle Gibbs over the program's global latents and its diffusion site (module docstring).

    ``smc`` is ``pp_diffusion.smc.bootstrap`` or ``twisted`` with its particle count (its proposal and
    twists; the conditional run resamples multinomially at every step, whatever the sampler's own
    resampling settings). ``theta_kernel``: ``"nuts"`` or ``"mala"`` (BlackJAX), ``theta_steps`` of them per
    iteration, starting at ``step_size`` and adapted in the ``num_warmup`` iterations toward
    ``target_acceptance`` (0.8 for NUTS, 0.57 for MALA); ``num_samples`` iterations are kept.
    ``ancestor_sampling=False`` gives plain conditional SMC.

    Returns theta's sites and the diffusion site in ``posterior``; ``sample_stats`` per iteration:
    ``acceptance_rate`` (the theta moves' mean), ``x_changed`` (whether x_0 left the reference), ``ess``
    (the conditional run's final ESS), ``log_evidence`` (its log-evidence estimate, conditioned on the
    reference), ``nfe`` and ``vjp`` (all particles); ``diagnostics``: ``acceptance_rate``,
    ``x_update_rate``, the adapted ``step_size``, ``nfe_per_accepted`` (network evaluations per iteration
    whose x_0 changed) and ``degenerate_runs`` (conditional runs whose weights all vanished).
    """
    if not isinstance(smc, Sampler) or smc.name not in ("bootstrap", "twisted"):
        raise TypeError("smc must be pp_diffusion.smc.bootstrap or pp_diffusion.smc.twisted (the conditional SMC of "
                        f"particle Gibbs moves their chain), got {getattr(smc, 'name', type(smc).__name__)!r}")
    num_samples = _check_positive_int(num_samples, "num_samples")
    if isinstance(num_warmup, bool) or not isinstance(num_warmup, int) or num_warmup < 0:
        raise ValueError(f"num_warmup must be a non-negative integer, got {num_warmup!r}")
    if theta_kernel not in KERNELS:
        raise ValueError(f"theta_kernel must be one of {sorted(KERNELS)}, got {theta_kernel!r}")
    theta_steps = _check_positive_int(theta_steps, "theta_steps")
    if not (isinstance(step_size, (int, float)) and not isinstance(step_size, bool) and step_size > 0
            and math.isfinite(step_size)):
        raise ValueError(f"step_size must be a positive number, got {step_size!r}")
    target = KERNELS[theta_kernel] if target_acceptance is None else float(target_acceptance)
    if not 0 < target < 1:
        raise ValueError(f"target_acceptance must lie in (0, 1), got {target_acceptance!r}")
    num_particles = smc.settings["num_particles"]
    if num_particles < 2:
        raise ValueError(f"particle Gibbs needs at least 2 particles (one is the reference), got {num_particles}")
    guided = smc.name == "twisted"
    total = num_warmup + num_samples

    def setup(program, info, data) -> _Context:
        g = global_sites(program, info, data)
        conditioned, inner_info = conditioned_program(smc, program, info, data, g.names, g.initial)
        with jax.ensure_compile_time_eval():
            fk = smc.setup(conditioned, inner_info, {**(info.data or data), GLOBALS_ARG: g.initial})
        if fk.potential.lookahead is not None:
            raise ValueError("particle Gibbs does not take adaptively tempered twists (their exponent is chosen from "
                             "the particles, the reference included); give the sites fixed twists")
        if fk.prior.order != 1:
            raise ValueError(f"particle Gibbs's ancestor sampling needs a first-order chain; the prior of site "
                             f"{info.site!r} has order={fk.prior.order} (its kernel reads the ancestor's previous "
                             "prediction)")
        return _Context(g, conditioned, inner_info, dict(data), info.site)

    def run(rng_key, ctx: _Context) -> SamplerOutput:
        g = ctx.globals
        at = lambda theta: {**ctx.data, GLOBALS_ARG: theta}
        fk0 = smc.setup(ctx.program, ctx.info, at(g.initial))
        steps, per_call = fk0.prior.steps, fk0.prior.model.nfe_per_call
        nfe = num_particles * steps * per_call  # one evaluation per particle and step, the first included
        vjp = nfe if guided else 0

        def x_update(key, theta, path, conditional):
            fk = smc.setup(ctx.program, ctx.info, at(theta))
            init_particle, move = chain_moves(fk, guided=guided)
            return conditional_smc(key, fk, init_particle, move, num_particles, path, conditional,
                                   ancestor_sampling=ancestor_sampling)

        def logdensity(u, x0):
            theta, log_det = g.constrain(u)
            value = g.log_prior(theta) + log_det + log_potential_fn(ctx.program, ctx.info, at(theta))(x0)
            return jnp.where(jnp.isnan(value), -jnp.inf, value)

        def theta_update(key, u, x0, step):
            density = lambda v: logdensity(v, x0)
            if theta_kernel == "nuts":
                kernel = blackjax.nuts(density, step, jnp.ones(g.dim))
            else:
                kernel = blackjax.mala(density, step)

            def one(state, k):
                state, info = kernel.step(k, state)
                return state, info.acceptance_rate

            state, rates = jax.lax.scan(one, kernel.init(u), jax.random.split(key, theta_steps))
            return state.position, jnp.mean(rates)

        k_init, k_chain = jax.random.split(rng_key)
        u0 = g.unconstrain(g.initial)
        empty = jnp.zeros((steps + 1, *fk0.prior.event_shape))
        path0, _ = x_update(k_init, g.initial, empty, jnp.asarray(False))

        def body(carry, inputs):
            u, path, log_step = carry
            key, i = inputs
            k_x, k_theta = jax.random.split(key)
            new_path, info = x_update(k_x, g.constrain(u)[0], path, jnp.asarray(True))
            new_path = jnp.where(info.degenerate, path, new_path)  # counted in degenerate_runs
            changed = jnp.any(new_path[-1] != path[-1])
            u, rate = theta_update(k_theta, u, new_path[-1], jnp.exp(log_step))
            rate = jnp.where(jnp.isnan(rate), 0.0, rate)
            gain = jnp.where(i < num_warmup, (i + 1.0) ** -0.6, 0.0)
            log_step = log_step + gain * (rate - target)
            stats = {"acceptance_rate": rate, "x_changed": changed, "ess": info.final_ess,
                     "log_evidence": info.log_evidence, "degenerate": info.degenerate, "step_size": jnp.exp(log_step)}
            return (u, new_path, log_step), (g.constrain(u)[0], new_path[-1], stats)

        keys = jax.random.split(k_chain, total)
        carry0 = (u0, path0, jnp.log(jnp.asarray(step_size, jnp.float32)))
        _, (thetas, xs, stats) = jax.lax.scan(body, carry0, (keys, jnp.arange(total)))
        keep = lambda a: a[num_warmup:]
        thetas, xs, stats = jax.tree.map(keep, thetas), keep(xs), jax.tree.map(keep, stats)
        changed = jnp.sum(stats["x_changed"])
        run_stats = {"acceptance_rate": jnp.mean(stats["acceptance_rate"]),
                     "x_update_rate": jnp.mean(stats["x_changed"].astype(jnp.float32)),
                     "step_size": stats["step_size"][-1],
                     "nfe_per_accepted": nfe * num_samples / jnp.maximum(changed, 1),
                     "degenerate_runs": jnp.sum(stats["degenerate"]).astype(jnp.int32)}
        sample_stats = {k: v for k, v in stats.items() if k not in ("step_size", "degenerate")}
        sample_stats["nfe"] = jnp.full((num_samples,), nfe, jnp.int32)
        sample_stats["vjp"] = jnp.full((num_samples,), vjp, jnp.int32)
        return SamplerOutput({**thetas, ctx.site: xs}, sample_stats, run_stats)

    settings = {**inner_settings(smc), "num_samples": num_samples, "num_warmup": num_warmup,
                "theta_kernel": theta_kernel, "theta_steps": theta_steps, "step_size": float(step_size),
                "target_acceptance": target, "ancestor_sampling": bool(ancestor_sampling)}
    return Sampler("particle_gibbs", settings, setup, run)
