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
from pp_diffusion.program import (
    as_data, data_sites, inspect_program, pointwise_log_likelihood_fn, posterior_predictive_draws, site_twists,
)
from pp_diffusion.samplers import Sampler, iid, split_key

__all__ = ["infer"]

_CACHE: "collections.OrderedDict[tuple, list]" = collections.OrderedDict()
_CACHE_SIZE = 16


_TRACE_ERRORS = (
    jax.errors.ConcretizationTypeError,
    jax.errors.TracerArrayConversionError,
    jax.errors.TracerBoolConversionError,
    jax.errors.TracerIntegerConversionError,
)


def _compiled_run(program, sampler, info, data, *, progress: bool = False, traced_observations: bool = True):
    """``(run_all, args)``: the jitted ``vmap`` of ``sampler.run`` over chain keys and the arguments
    to call it with, ``run_all(keys, args) -> (SamplerOutput, {site: pointwise log-likelihood})``.

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

    def run_chains(keys, context, data):
        """Each chain's SamplerOutput, and the pointwise log-likelihood of its posterior draws."""
        pointwise = None
        if sampler.draws_from == "posterior" and data_sites(info):
            pointwise = pointwise_log_likelihood_fn(program, info, data)

        def one(key):
            out = sampler.run(key, context)
            return out, ({} if pointwise is None else jax.vmap(pointwise)(out.posterior))

        return jax.vmap(one)(keys)

    if traced_observations:
        def run_all(keys, args):
            data_in = {**static, **args}
            return run_chains(keys, sampler.setup(program, info, data_in), data_in)
    else:
        context = sampler.setup(program, info, data)  # eagerly, as the sampler's setup may assume

        def run_all(keys, args):
            return run_chains(keys, context, data)

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


def _warn(sampler, info, out) -> None:
    """The warnings of a run: degenerate chains, collapsed ESS, and sites that are non-finite everywhere."""
    stats = {k: np.asarray(v) for k, v in out.run_stats.items()}
    sites = list(info.observed)
    dead = []
    if "site_nonfinite" in stats and sites:
        num = np.shape(out.particles["log_weight"])[-1] if "log_weight" in out.particles else None
        counts = stats["site_nonfinite"].reshape(-1, len(sites))
        dead = [name for i, name in enumerate(sites) if num is not None and np.any(counts[:, i] >= num)]
        some = [name for i, name in enumerate(sites) if name not in dead and np.any(counts[:, i] > 0)]
        if some:
            warnings.warn(
                f"{sampler.name}: the log-probability of site(s) {some} is NaN or infinite at some final particles "
                "(diagnostics.site_nonfinite counts them per chain); those particles get weight zero",
                RuntimeWarning, stacklevel=3,
            )
    if "degenerate" in stats and np.any(stats["degenerate"]):
        bad = np.flatnonzero(stats["degenerate"]).tolist()
        named = f"; site(s) {dead} are NaN or -inf at every particle" if dead else ""
        warnings.warn(
            f"{sampler.name}: chains {bad} degenerated (all weights zero, a non-finite evidence, or "
            f"non-finite draws){named}; their draws are NaN and diagnostics.degenerate is True",
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
            f"{', '.join(f'{e:.1f}' for e in ess)} during the run (diagnostics.min_ess; low_ess is True): "
            "their draws descend from a few particles and their log-evidence is unreliable, even where the "
            "final ESS recovered after resampling; use more particles or steps, or a sampler whose proposal "
            "uses the observation",
            RuntimeWarning, stacklevel=3,
        )
    if "num_divergent" in stats and np.any(stats["num_divergent"]):
        bad = np.flatnonzero(stats["num_divergent"]).tolist()
        counts = stats["num_divergent"].reshape(-1)[bad]
        warnings.warn(
            f"{sampler.name}: chains {bad} have {', '.join(str(c) for c in counts)} divergent transitions after "
            "warmup (sample_stats.diverging marks them, diagnostics.num_divergent counts them): the step size "
            "cannot resolve part of the posterior and the draws may be biased; raise target_acceptance_rate",
            RuntimeWarning, stacklevel=3)
    if "nonfinite_lp" in stats and np.any(stats["nonfinite_lp"]):
        bad = np.flatnonzero(stats["nonfinite_lp"]).tolist()
        warnings.warn(
            f"{sampler.name}: the log-density is NaN or infinite at draws of chains {bad} "
            "(diagnostics.nonfinite_lp counts them, sample_stats.lp shows them): the model's log p_0 or a "
            "site's log-probability is not finite there", RuntimeWarning, stacklevel=3)
    if "nan_leaves" in stats and np.any(stats["nan_leaves"]):
        bad = np.flatnonzero(stats["nan_leaves"]).tolist()
        counts = stats["nan_leaves"].reshape(-1)[bad]
        warnings.warn(
            f"{sampler.name}: log G was NaN at {', '.join(str(c) for c in counts)} leaves of the trees of chains {bad} "
            "(diagnostics.nan_leaves counts them): they got value -inf and the search went on; the program's "
            "likelihood or factor is NaN there", RuntimeWarning, stacklevel=3)
    if "nonfinite_draws" in stats and np.any(stats["nonfinite_draws"]):
        bad = np.flatnonzero(stats["nonfinite_draws"]).tolist()
        warnings.warn(f"{sampler.name}: chains {bad} have non-finite draws (diagnostics.nonfinite_draws counts "
                      "them): the network or the program returned NaN or inf", RuntimeWarning, stacklevel=3)
    if "out_of_support" in stats and np.any(stats["out_of_support"]):
        bad = np.flatnonzero(stats["out_of_support"]).tolist()
        warnings.warn(
            f"{sampler.name}: chains {bad} have draws far outside the model's data range "
            "(diagnostics.out_of_support counts them): the sampler diverged", RuntimeWarning, stacklevel=3)


def _check_dims(dims, coords, info) -> tuple[dict, dict]:
    """``dims`` and ``coords`` as ``arviz_base.from_numpyro`` takes them, checked against the program's
    sites before the run (names, and lengths where a site's shape is known)."""
    dims = {} if dims is None else dims
    coords = {} if coords is None else coords
    if not isinstance(dims, dict) or not all(isinstance(v, (list, tuple)) for v in dims.values()):
        raise TypeError(f"dims must be a dict {{site: [dim name, ...]}}, got {dims!r}")
    if not isinstance(coords, dict):
        raise TypeError(f"coords must be a dict {{dim name: values}}, got {coords!r}")
    sites = set(info.sites) - set(info.factors)
    unknown = sorted(set(dims) - sites)
    if unknown:
        raise ValueError(f"dims names site(s) {unknown} that the program does not have; its sites are {sorted(sites)}")
    shapes = {info.site: tuple(info.prior.event_shape),
              **{name: np.shape(info.observed[name]) for name in data_sites(info)}}
    sizes = {}
    for name, names in dims.items():
        if name in shapes:
            if len(names) != len(shapes[name]):
                raise ValueError(f"dims[{name!r}] names {len(names)} dimension(s) {list(names)}, but site {name!r} "
                                 f"has shape {shapes[name]} ({len(shapes[name])} dimension(s))")
            sizes.update({d: n for d, n in zip(names, shapes[name])})
    for dim, values in coords.items():
        if dim in sizes and len(values) != sizes[dim]:
            raise ValueError(f"coords[{dim!r}] has {len(values)} values, but dimension {dim!r} has size {sizes[dim]}")
    return {k: list(v) for k, v in dims.items()}, coords


def infer(program, sampler: Sampler, rng_key, *, num_chains: int = 1, dims: dict | None = None,
          coords: dict | None = None, posterior_predictive: bool = False, num_prior_draws: int = 0,
          return_particles: bool = False, progress_bar: bool | None = None, **data) -> xr.DataTree:
    """Sample the posterior of ``program(**data)`` with ``sampler``.

    Parameters
    ----------
    program
        A NumPyro program with exactly one ``DiffusionPrior`` sample site.
    sampler
        A :class:`~pp_diffusion.samplers.Sampler`, e.g. ``pp_diffusion.smc.twisted(1000)``.
    rng_key
        A JAX PRNG key (``jax.random.key(0)``).
    num_chains
        Number of independent runs; they become the DataTree's ``chain`` dimension, so
        ``arviz.rhat`` compares them.
    dims, coords
        Names and coordinates of the sites' own dimensions, as ``arviz_base.from_numpyro`` takes them:
        ``dims={"x": ["row", "col"], "y": ["obs"]}``, ``coords={"obs": [...]}``.
    posterior_predictive
        Also draw the observed sites given each posterior draw (NumPyro's ``Predictive``): the
        ``posterior_predictive`` group.
    num_prior_draws
        Also draw this many prior draws per chain (:func:`~pp_diffusion.iid`, a second compiled run):
        the ``prior``, ``prior_predictive`` and ``sample_stats_prior`` groups.
    return_particles
        Add the ``particles`` group: each chain's final weighted particle system (``x``,
        ``log_weight``, ``origin``: the initial particle it descends from); the draws are
        ``x[sample_stats.particle]``.
    progress_bar
        Show a ``tqdm`` bar over the reverse-diffusion steps for runs longer than a couple of
        seconds. ``None`` (default): on, except under pytest or with ``PP_DIFFUSION_PROGRESS=0``.
    **data
        Keyword arguments of ``program`` (observations among them; lists of numbers become arrays).

    Returns
    -------
    xarray.DataTree
        In ArviZ's layout (:mod:`pp_diffusion._datatree`): ``posterior`` (dims ``chain``, ``draw``,
        then the site's), ``sample_stats`` (per draw: ``nfe``, ``vjp`` and, for SMC, ``particle``),
        ``log_likelihood`` (each observed data site, pointwise: ``arviz.loo`` and ``arviz.compare``
        run on it), ``observed_data``, ``diagnostics`` (per chain and per step: ``log_marginal_likelihood``,
        ``ess``, ``min_ess``, ...), and the opt-in groups above. An :func:`~pp_diffusion.iid` sampler's
        draws are the ``prior`` (and ``prior_predictive``) instead. Attributes name the sampler and its
        settings and, for conditioning samplers, the twist each observed site got (``twists``, a JSON
        object). The runs of all chains are one ``jax.jit`` over a ``vmap``, compiled once per
        program, sampler and data (by value: see :mod:`pp_diffusion._fingerprint`) and reused for new
        observations of the same shape.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(
            f"sampler must be a pp_diffusion Sampler (e.g. pp_diffusion.iid(1000)), got {type(sampler).__name__}"
        )
    if isinstance(num_chains, bool) or not isinstance(num_chains, numbers.Integral) or num_chains < 1:
        raise ValueError(f"num_chains must be a positive integer, got {num_chains!r}")
    num_chains = int(num_chains)
    if isinstance(num_prior_draws, bool) or not isinstance(num_prior_draws, numbers.Integral) or num_prior_draws < 0:
        raise ValueError(f"num_prior_draws must be a non-negative integer, got {num_prior_draws!r}")
    keys = split_key(rng_key, num_chains)
    data = as_data(data)
    info = inspect_program(program, data)
    dims, coords = _check_dims(dims, coords, info)
    prior_only = sampler.draws_from == "prior"
    if posterior_predictive and prior_only:
        raise ValueError(f"sampler {sampler.name!r} draws from the prior: its draws come with a prior_predictive "
                         "group already; posterior_predictive=True needs a conditioning sampler")
    if return_particles and sampler.kernel is None:
        raise ValueError(f"sampler {sampler.name!r} has no weighted particle system: return_particles=True needs "
                         "an SMC sampler (pp_diffusion.smc)")

    progress = _progress.default_enabled() if progress_bar is None else bool(progress_bar)
    run_all, args = _compiled_run(program, sampler, info, data, progress=progress)
    with _progress.tracing(progress), _progress.bar(info.prior.steps, sampler.name, progress):
        try:
            out, log_lik = jax.block_until_ready(run_all(keys, args))
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
            out, log_lik = jax.block_until_ready(run_all(keys, args))
    _warn(sampler, info, out)
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
    observed = {name: info.observed[name] for name in data_sites(info)}
    if prior_only:
        groups = {"prior": out.posterior, "sample_stats_prior": out.sample_stats, "prior_predictive": out.predictive}
    else:
        groups = {"posterior": out.posterior, "sample_stats": out.sample_stats, "log_likelihood": log_lik}
        if posterior_predictive:
            groups["posterior_predictive"] = posterior_predictive_draws(
                program, info, data, out.posterior, jax.random.fold_in(rng_key, 2))
    groups["observed_data"] = observed
    groups["diagnostics"] = out.run_stats
    if return_particles:
        groups["particles"] = out.particles
    if num_prior_draws and not prior_only:
        prior = infer(program, iid(int(num_prior_draws)), jax.random.fold_in(rng_key, 3), num_chains=num_chains,
                      progress_bar=progress_bar, **data)
        for name in ("prior", "sample_stats_prior", "prior_predictive"):
            if name in prior.children:
                groups[name] = {k: v.values for k, v in prior[name].data_vars.items()}
    site_coords = {"site": list(info.observed)} if "site_nonfinite" in out.run_stats else {}
    return to_datatree(groups, stat_dims=sampler.stat_dims, dims=dims, coords={**coords, **site_coords}, attrs=attrs)
