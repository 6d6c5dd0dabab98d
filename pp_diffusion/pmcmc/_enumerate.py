"""Discrete global latents by enumeration: the posterior over a class label or model index c is

.. math::  p(c \\mid y) = \\frac{p(y \\mid c)\\, p(c)}{\\sum_{c'} p(y \\mid c')\\, p(c')},

with p(y | c) the SMC evidence estimate of the program with c set (one run per value, all values in
one compiled ``lax.map``), and x | c, y drawn from that run's weighted particles. The values of every
discrete global site are enumerated jointly (their product); the estimate of each log p(y | c) is
unbiased on the natural scale, so the weights are consistent as the particle count grows.
"""

from __future__ import annotations

import itertools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp

from pp_diffusion.pmcmc._inner import check_inner, conditioned_program, inner_settings, run_at
from pp_diffusion.program import ProgramInfo, discrete_global_sites
from pp_diffusion.samplers import Sampler, SamplerOutput, _check_positive_int

__all__ = ["enumerate_globals"]

MAX_VALUES = 4096  # the enumerated combinations: each is one SMC run


class _Context(NamedTuple):
    names: tuple
    values: dict  # {name: (num_values, ...)} stacked over the combinations
    log_prior: jax.Array  # (num_values,)
    program: object
    info: ProgramInfo
    data: dict
    site: str


def enumerate_globals(smc: Sampler, num_draws: int | None = None) -> Sampler:
    """Enumerate the program's discrete global latents with the SMC sampler ``smc`` (module docstring).

    ``num_draws`` (default: the SMC sampler's particle count) joint draws of (c, x) per chain form
    ``posterior``; ``diagnostics`` holds, per enumerated value, ``log_evidence`` (log Zhat(c)),
    ``log_prior`` and ``posterior_probability`` (p(c | y)), over the ``value`` dimension (value k is the
    k-th combination of ``itertools.product`` over the sites' supports, in program order; each draw's
    ``sample_stats.value_index`` names it), ``log_marginal_likelihood``, log sum_c Zhat(c) p(c), and
    ``nfe_total``, the network evaluations of all the runs (``sample_stats.nfe`` splits it over the draws).
    """
    check_inner(smc)
    draws = smc.settings["num_particles"] if num_draws is None else _check_positive_int(num_draws, "num_draws")

    def setup(program, info, data) -> _Context:
        names, supports, log_prior_fn = discrete_global_sites(program, info, data)
        combos = list(itertools.product(*supports))
        if len(combos) > MAX_VALUES:
            raise ValueError(f"the discrete globals {list(names)} take {len(combos)} joint values; enumeration runs one "
                             f"SMC per value and is capped at {MAX_VALUES}")
        values = {n: jnp.asarray(np.array([c[i] for c in combos])) for i, n in enumerate(names)}
        log_prior = jnp.asarray([float(log_prior_fn(dict(zip(names, c)))) for c in combos], jnp.float32)
        conditioned, inner_info = conditioned_program(smc, program, info, data, names, {n: v[0] for n, v in values.items()})
        return _Context(names, values, log_prior, conditioned, inner_info, dict(data), info.site)

    def run(rng_key, ctx: _Context) -> SamplerOutput:
        num = ctx.log_prior.shape[0]

        def one(inputs):
            key, value = inputs
            out, nfe, vjp = run_at(smc, key, ctx.program, ctx.info, ctx.data, value)
            return out.run_stats["log_marginal_likelihood"], out.particles["x"], out.particles["log_weight"], (nfe, vjp)

        k_runs, k_c, k_x = jax.random.split(rng_key, 3)
        log_z, xs, log_w, (nfe, vjp) = jax.lax.map(one, (jax.random.split(k_runs, num), ctx.values))
        log_joint = jnp.where(jnp.isnan(log_z), -jnp.inf, log_z) + ctx.log_prior
        total = logsumexp(log_joint)
        probs = jnp.exp(log_joint - total)
        c = jax.random.categorical(k_c, log_joint, shape=(draws,))
        pick = jax.vmap(lambda k, lw: jax.random.categorical(k, lw))(jax.random.split(k_x, draws), log_w[c])
        x = xs[c, pick]
        posterior = {n: v[c] for n, v in ctx.values.items()} | {ctx.site: x}
        total_nfe, total_vjp = jnp.sum(nfe), jnp.sum(vjp)
        sample_stats = {"value_index": c.astype(jnp.int32), "nfe": jnp.full((draws,), total_nfe // draws, jnp.int32),
                        "vjp": jnp.full((draws,), total_vjp // draws, jnp.int32)}
        run_stats = {"log_evidence": log_z, "log_prior": ctx.log_prior, "posterior_probability": probs,
                     "log_marginal_likelihood": total, "nfe_total": total_nfe.astype(jnp.int32)}
        return SamplerOutput(posterior, sample_stats, run_stats)

    stat_dims = {"log_evidence": ("value",), "log_prior": ("value",), "posterior_probability": ("value",)}
    settings = {**inner_settings(smc), "num_draws": draws}
    return Sampler("enumerate_globals", settings, setup, run, stat_dims)
