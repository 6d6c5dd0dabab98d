"""`infer`: run a sampler on a NumPyro program, ``num_chains`` independent times, and return ArviZ."""

from __future__ import annotations

import jax
import xarray as xr

from pp_diffusion.diagnostics import to_datatree
from pp_diffusion.program import inspect_program
from pp_diffusion.samplers import Sampler

__all__ = ["infer"]


def infer(program, sampler: Sampler, rng_key, *, num_chains: int = 1, **data) -> xr.DataTree:
    """Sample the posterior of ``program(**data)`` with ``sampler``.

    Parameters
    ----------
    program
        A NumPyro program with exactly one ``DiffusionPrior`` sample site.
    sampler
        A :class:`~pp_diffusion.samplers.Sampler`, e.g. ``pp_diffusion.iid(1000)``.
    rng_key
        A JAX PRNG key (``jax.random.key(0)``).
    num_chains
        Number of independent runs; they become the DataTree's ``chain`` dimension, so
        ``arviz.rhat`` compares them.
    **data
        Keyword arguments of ``program`` (observations among them).

    Returns
    -------
    xarray.DataTree
        Groups ``posterior`` (dims ``chain``, ``draw``, then the site's), ``sample_stats``
        (``nfe`` and the sampler's diagnostics) and ``observed_data`` (when the program observes
        anything); attributes name the sampler and its settings. The runs of all chains are one
        ``jax.jit`` over a ``vmap``.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(
            f"sampler must be a pp_diffusion Sampler (e.g. pp_diffusion.iid(1000)), got {type(sampler).__name__}"
        )
    if isinstance(num_chains, bool) or not isinstance(num_chains, int) or num_chains < 1:
        raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
    try:
        keys = jax.random.split(rng_key, num_chains)
    except (TypeError, ValueError) as err:
        raise TypeError(f"rng_key must be a JAX PRNG key such as jax.random.key(0), got {rng_key!r}") from err
    info = inspect_program(program, data)
    if info.observed and not sampler.conditions:
        raise ValueError(
            f"sampler {sampler.name!r} draws from the prior and would ignore the observed sites "
            f"{sorted(info.observed)}; use a conditioning sampler (pp_diffusion.smc, pp_diffusion.guidance)"
        )

    @jax.jit
    def run_all(keys):
        return jax.vmap(lambda k: sampler.run(k, program, info, data))(keys)

    out = run_all(keys)
    attrs = {
        "sampler": sampler.name,
        **{f"sampler_{k}": v if isinstance(v, (int, float, str)) else repr(v) for k, v in sampler.settings.items()},
        "num_chains": num_chains,
        "model": info.prior.model.name,
        "steps": info.prior.steps,
        "integrator": info.prior.integrator.name,
        "diffusion_site": info.site,
    }
    return to_datatree(
        out.posterior, out.sample_stats, out.run_stats, info.observed,
        stat_dims=sampler.stat_dims, attrs=attrs,
    )
