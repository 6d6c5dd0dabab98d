"""`infer`: run a sampler on a NumPyro program, ``num_chains`` independent times, and return ArviZ."""

from __future__ import annotations

import collections
import json
import numbers
import warnings

import jax
import numpy as np
import xarray as xr

from pp_diffusion import _fingerprint, _progress
from pp_diffusion._datatree import to_datatree
from pp_diffusion.program import inspect_program, site_twists
from pp_diffusion.samplers import Sampler

__all__ = ["infer"]

_CACHE: "collections.OrderedDict[tuple, list]" = collections.OrderedDict()
_CACHE_SIZE = 16


def _as_arrays(data: dict) -> dict:
    """Lists and tuples of numbers as NumPy arrays (a program that indexes or reshapes its data expects
    arrays); everything else as given."""
    out = {}
    for k, v in data.items():
        if isinstance(v, (list, tuple)):
            arr = np.asarray(v) if v else None
            if arr is not None and arr.dtype.kind in "biuf":
                v = arr
        out[k] = v
    return out


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
    compilation. The program, the sampler and every other keyword argument key it by value
    (:mod:`pp_diffusion._fingerprint`): a new but equal sampler reuses the compilation, and a program
    whose closure, globals or sites changed compiles anew. With ``traced_observations=False`` the
    observations are constants of the compilation too (the fallback for programs that need their
    concrete values). ``progress`` compiles in the progress bar's host callbacks.
    """
    obs_keys = info.observed_args if traced_observations else ()
    static = {k: v for k, v in data.items() if k not in obs_keys}
    args = {k: data[k] for k in obs_keys}
    program_digest, program_refs = _fingerprint.of_program(program, info._replace(observed_args=obs_keys), data)
    sampler_digest, sampler_refs = _fingerprint.of_value(sampler)
    key = (program_digest, sampler_digest, traced_observations, progress)
    hit = _CACHE.get(key)
    if hit is not None:
        _CACHE.move_to_end(key)
        if hit[0] is None:  # this program needs concrete observations (see infer)
            return _compiled_run(program, sampler, info, data, progress=progress, traced_observations=False)
        return hit[0], args

    if traced_observations:
        def run_all(keys, args):
            context = sampler.setup(program, info, {**static, **args})
            return jax.vmap(lambda k: sampler.run(k, context))(keys)
    else:
        context = sampler.setup(program, info, data)  # eagerly, as the sampler's setup may assume

        def run_all(keys, args):
            return jax.vmap(lambda k: sampler.run(k, context))(keys)

    compiled = jax.jit(run_all)
    # the references keep every object fingerprinted by identity alive, so that its id stays its own
    _CACHE[key] = [compiled, program, sampler, program_refs, sampler_refs]
    if len(_CACHE) > _CACHE_SIZE:
        _CACHE.popitem(last=False)
    return compiled, args


_TWISTS: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()


def _site_twists(program, info) -> dict:
    """:func:`~pp_diffusion.program.site_twists`, once per program and data (it traces the program at
    several points; the compiled run is reused, so is this)."""
    digest, refs = _fingerprint.of_program(program, info, info.data)
    if digest not in _TWISTS:
        _TWISTS[digest] = (site_twists(program, info), refs)
        if len(_TWISTS) > _CACHE_SIZE:
            _TWISTS.popitem(last=False)
    return _TWISTS[digest][0]


def _warn(sampler, info, run_stats) -> None:
    """The warnings of a run: degenerate chains, collapsed ESS, and sites that are non-finite everywhere."""
    stats = {k: np.asarray(v) for k, v in run_stats.items()}
    sites = list(info.observed)
    dead = []
    if "site_nonfinite" in stats and sites:
        num = stats["final_log_weights"].shape[-1] if "final_log_weights" in stats else None
        counts = stats["site_nonfinite"].reshape(-1, len(sites))
        dead = [name for i, name in enumerate(sites) if num is not None and np.any(counts[:, i] >= num)]
        some = [name for i, name in enumerate(sites) if name not in dead and np.any(counts[:, i] > 0)]
        if some:
            warnings.warn(
                f"{sampler.name}: the log-probability of site(s) {some} is NaN or infinite at some final particles "
                "(sample_stats.site_nonfinite counts them per chain); those particles get weight zero",
                RuntimeWarning, stacklevel=3,
            )
    if "degenerate" in stats and np.any(stats["degenerate"]):
        bad = np.flatnonzero(stats["degenerate"]).tolist()
        named = f"; site(s) {dead} are NaN or -inf at every particle" if dead else ""
        warnings.warn(
            f"{sampler.name}: chains {bad} degenerated (all weights zero, a non-finite evidence, or "
            f"non-finite draws){named}; their draws are NaN and sample_stats.degenerate is True",
            RuntimeWarning, stacklevel=3,
        )
    elif dead:
        warnings.warn(f"{sampler.name}: site(s) {dead} are NaN or -inf at every final particle of some chain",
                      RuntimeWarning, stacklevel=3)
    if "low_ess" in stats and np.any(stats["low_ess"]):
        low = np.flatnonzero(stats["low_ess"]).tolist()
        ess = stats["min_ess"].reshape(-1)[low]
        warnings.warn(
            f"{sampler.name}: the effective sample size of chains {low} fell to "
            f"{', '.join(f'{e:.1f}' for e in ess)} during the run (sample_stats.min_ess; low_ess is True): "
            "their draws descend from a few particles and their log-evidence is unreliable, even where the "
            "final ESS recovered after resampling; use more particles or steps, or a sampler whose proposal "
            "uses the observation",
            RuntimeWarning, stacklevel=3,
        )
    if "nonfinite_draws" in stats and np.any(stats["nonfinite_draws"]):
        bad = np.flatnonzero(stats["nonfinite_draws"]).tolist()
        warnings.warn(f"{sampler.name}: chains {bad} have non-finite draws (sample_stats.nonfinite_draws counts "
                      "them): the network or the program returned NaN or inf", RuntimeWarning, stacklevel=3)
    if "out_of_support" in stats and np.any(stats["out_of_support"]):
        bad = np.flatnonzero(stats["out_of_support"]).tolist()
        warnings.warn(
            f"{sampler.name}: chains {bad} have draws far outside the model's data range "
            "(sample_stats.out_of_support counts them): the sampler diverged", RuntimeWarning, stacklevel=3)


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
        Keyword arguments of ``program`` (observations among them; lists of numbers become arrays).

    Returns
    -------
    xarray.DataTree
        Groups ``posterior`` (dims ``chain``, ``draw``, then the site's), ``sample_stats``
        (``nfe`` and the sampler's diagnostics) and ``observed_data`` (when the program observes
        anything); attributes name the sampler and its settings and, for conditioning samplers,
        the twist each observed site got (``twists``, a JSON object). The runs of all chains are one
        ``jax.jit`` over a ``vmap``, compiled once per program, sampler and data (by value: see
        :mod:`pp_diffusion._fingerprint`) and reused for new observations of the same shape.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(
            f"sampler must be a pp_diffusion Sampler (e.g. pp_diffusion.iid(1000)), got {type(sampler).__name__}"
        )
    if isinstance(num_chains, bool) or not isinstance(num_chains, numbers.Integral) or num_chains < 1:
        raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
    num_chains = int(num_chains)
    try:
        keys = jax.random.split(rng_key, num_chains)
    except (TypeError, ValueError) as err:
        raise TypeError(f"rng_key must be a JAX PRNG key such as jax.random.key(0), got {rng_key!r}") from err
    data = _as_arrays(data)
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
            for entry in _CACHE.values():
                if entry[0] is run_all:
                    entry[0] = None
            run_all, args = _compiled_run(program, sampler, info, data, progress=progress,
                                          traced_observations=False)
            out = jax.block_until_ready(run_all(keys, args))
    _warn(sampler, info, out.run_stats)
    attrs = {
        "sampler": sampler.name,
        **{f"sampler_{k}": v if isinstance(v, (int, float, str)) else repr(v) for k, v in sampler.settings.items()},
        "num_chains": num_chains,
        "model": info.prior.model.name,
        "steps": info.prior.steps,
        "integrator": info.prior.integrator.name,
        "diffusion_site": info.site,
    }
    if info.observed and sampler.twists is not None:
        attrs["twists"] = json.dumps(sampler.twists(_site_twists(program, info)))
    return to_datatree(
        out.posterior, out.sample_stats, out.run_stats, info.observed,
        stat_dims=sampler.stat_dims, attrs=attrs,
    )
