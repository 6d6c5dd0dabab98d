"""`infer`: run a sampler on a NumPyro program, ``num_chains`` independent times, and return ArviZ."""

from __future__ import annotations

import collections
import hashlib
import warnings

import jax
import numpy as np
import xarray as xr

from pp_diffusion import _progress
from pp_diffusion.diagnostics import to_datatree
from pp_diffusion.program import inspect_program
from pp_diffusion.samplers import Sampler

__all__ = ["infer"]

_CACHE: "collections.OrderedDict[tuple, tuple]" = collections.OrderedDict()
_CACHE_SIZE = 16


def _fingerprint(value):
    try:
        arr = np.asarray(value)
    except Exception:  # not array-like: identity
        return ("id", id(value))
    if arr.dtype == object:
        return ("id", id(value))
    return (arr.shape, str(arr.dtype), hashlib.sha1(np.ascontiguousarray(arr).tobytes()).hexdigest())


_TRACE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _compiled_run(program, sampler, info, data, *, progress: bool = False, traced_observations: bool = True):
    """``(run_all, args)``: the jitted ``vmap`` of ``sampler.run`` over chain keys and the arguments
    to call it with, ``run_all(keys, args)``.

    The observed values passed as keyword arguments (``info.observed_args``) are arguments of the
    compiled function, so only their shapes and dtypes key the cache: a new observation reuses the
    compilation. Every other keyword argument is fingerprinted (a new value compiles anew), and so
    is everything the sampler reads off the program's structure. With ``traced_observations=False``
    the observations are constants of the compilation too (the fallback for programs that need their
    concrete values). ``progress`` compiles in the progress bar's host callbacks.
    """
    obs_keys = info.observed_args if traced_observations else ()
    static = {k: v for k, v in data.items() if k not in obs_keys}
    args = {k: data[k] for k in obs_keys}
    key = (id(program), id(sampler), traced_observations, progress,
           tuple(sorted((k, _fingerprint(v)) for k, v in static.items())),
           tuple(sorted((k, np.shape(v), str(np.asarray(v).dtype)) for k, v in args.items())))
    hit = _CACHE.get(key)
    if hit is not None and hit[0] is program and hit[1] is sampler:
        _CACHE.move_to_end(key)
        if hit[2] is None:  # this program needs concrete observations (see infer)
            return _compiled_run(program, sampler, info, data, progress=progress, traced_observations=False)
        return hit[2], args

    if traced_observations:
        def run_all(keys, args):
            context = sampler.setup(program, info, {**static, **args})
            return jax.vmap(lambda k: sampler.run(k, context))(keys)
    else:
        context = sampler.setup(program, info, data)  # eagerly, as the sampler's setup may assume

        def run_all(keys, args):
            return jax.vmap(lambda k: sampler.run(k, context))(keys)

    compiled = jax.jit(run_all)
    _CACHE[key] = (program, sampler, compiled)  # strong references keep the ids valid
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return compiled, args


def infer(program, sampler: Sampler, rng_key, *, num_chains: int = 1, progress_bar: bool | None = None,
          **data) -> xr.DataTree:
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
    progress_bar
        Show a ``tqdm`` bar over the reverse-diffusion steps for runs longer than a couple of
        seconds. ``None`` (default): on, except under pytest or with ``PP_DIFFUSION_PROGRESS=0``.
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

    progress = _progress.default_enabled() if progress_bar is None else bool(progress_bar)
    run_all, args = _compiled_run(program, sampler, info, data, progress=progress)
    with _progress.tracing(progress), _progress.bar(info.prior.steps, sampler.name, progress):
        try:
            out = jax.block_until_ready(run_all(keys, args))
        except _TRACE_ERRORS:
            if not args:
                raise
            # the program needs its observations' concrete values: compile them in as constants, and
            # remember it for the next call
            for key, entry in _CACHE.items():
                if entry[2] is run_all:
                    _CACHE[key] = (program, sampler, None)
            run_all, args = _compiled_run(program, sampler, info, data, progress=progress,
                                          traced_observations=False)
            out = jax.block_until_ready(run_all(keys, args))
    if "degenerate" in out.run_stats and np.any(np.asarray(out.run_stats["degenerate"])):
        bad = np.flatnonzero(np.asarray(out.run_stats["degenerate"])).tolist()
        warnings.warn(
            f"{sampler.name}: chains {bad} degenerated (all weights zero, a non-finite evidence, or "
            "non-finite draws); their draws are NaN and sample_stats.degenerate is True",
            RuntimeWarning, stacklevel=2,
        )
    if "low_ess" in out.run_stats and np.any(np.asarray(out.run_stats["low_ess"])):
        low = np.flatnonzero(np.asarray(out.run_stats["low_ess"])).tolist()
        ess = np.asarray(out.run_stats["final_ess"]).reshape(-1)[low]
        warnings.warn(
            f"{sampler.name}: chains {low} ended with an effective sample size of "
            f"{', '.join(f'{e:.1f}' for e in ess)}: their draws are copies of a few particles and their "
            "log-evidence is unreliable (sample_stats.low_ess is True); use more particles or steps, or a "
            "sampler whose proposal uses the observation",
            RuntimeWarning, stacklevel=2,
        )
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
