"""Best-of-N: the baseline of inference-time search. N independent draws of the prior chain, ranked by
log G (the program's observed sites and factors); the ``num_draws`` best are returned, best first."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pp_diffusion.program import feynman_kac
from pp_diffusion.samplers import Sampler, SamplerOutput, _check_positive_int, draw_checks

__all__ = ["best_of_n"]


def best_of_n(num_candidates: int, *, num_draws: int = 1) -> Sampler:
    """The ``num_draws`` highest-log G of ``num_candidates`` prior draws (``num_candidates`` chains of
    NFE each). ``diagnostics.max_log_g`` is the best log G found; ``log_marginal_likelihood`` the plain
    Monte Carlo estimate log mean G of the candidates."""
    num_candidates = _check_positive_int(num_candidates, "num_candidates")
    num_draws = _check_positive_int(num_draws, "num_draws")
    if num_draws > num_candidates:
        raise ValueError(f"num_draws ({num_draws}) must not exceed num_candidates ({num_candidates})")

    def setup(program, info, data):
        return feynman_kac(program, info, data)

    def run(rng_key, fk) -> SamplerOutput:
        k_draw, k_sites = jax.random.split(rng_key)
        x = fk.prior.sample(k_draw, (num_candidates,))
        log_g = jax.vmap(fk.log_g)(x)
        rank = jnp.where(jnp.isnan(log_g), -jnp.inf, log_g)
        best, idx = jax.lax.top_k(rank, num_draws)
        draws = x[idx]
        nfe = fk.prior.nfe * num_candidates // num_draws
        posterior = {fk.site: draws, **jax.vmap(fk.deterministic)(jax.random.split(k_sites, num_draws), draws)}
        stats = {"nfe": jnp.full((num_draws,), nfe, jnp.int32), "log_g": best}
        lse = jax.scipy.special.logsumexp(rank) - jnp.log(num_candidates)
        run_stats = {"log_marginal_likelihood": lse, "max_log_g": best[0], "nfe": jnp.asarray(
            fk.prior.nfe * num_candidates, jnp.int32), **draw_checks(fk.prior.model, draws)}
        return SamplerOutput(posterior, stats, run_stats)

    return Sampler("best_of_n", {"num_candidates": num_candidates, "num_draws": num_draws}, setup, run, {},
                   twists=lambda sites: {k: "none" for k in sites})
