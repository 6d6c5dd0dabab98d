"""Checks of a sampler's quality on a program: simulation-based calibration and predictive checks.

Simulation-based calibration (SBC; Talts, Betancourt, Simpson, Vehtari & Gelman, 2018,
arXiv:1804.06788) rests on the self-consistency of Bayes' rule: if x* ~ p(x), y ~ p(y | x*) and
x_1, ..., x_L are independent draws of p(x | y), then for every scalar function f the rank
r = #{l : f(x_l) < f(x*)} is uniform on {0, ..., L}. :func:`sbc` simulates (x*, y) from the program's
prior predictive (:func:`~pp_diffusion.program.unobserved`; the diffusion site runs its own reverse
chain, so p(x) is the chain's law p_theta, the very prior the samplers condition), runs the sampler on
each y through :func:`~pp_diffusion.infer`, and tests the ranks of every coordinate for uniformity.

:func:`posterior_predictive` draws the observed sites again given posterior draws, for ArviZ's
posterior predictive plots.
"""

from __future__ import annotations

import collections
import numbers
import warnings
from typing import Callable, Sequence

import jax
import numpy as np
import xarray as xr
from arviz_base import dict_to_dataset
from scipy import stats as scipy_stats

from pp_diffusion import _fingerprint, _progress
from pp_diffusion._infer import infer
from pp_diffusion.program import (
    as_data, check_conditionable, inspect_program, observed_arguments, prior_predictive_fn,
)
from pp_diffusion.samplers import Sampler, _check_positive_int, split_key

__all__ = ["sbc", "sbc_ranks", "plot_sbc"]


# --------------------------------------------------------------------------- argument checks

def _choose_bins(num_values: int, num_simulations: int) -> int:
    """The largest divisor of ``num_values`` (>= 2) that leaves at least 5 expected ranks per bin, else
    as many (unequal) bins as that rule allows."""
    target = min(num_values, max(2, num_simulations // 5))
    divisors = [d for d in range(2, target + 1) if num_values % d == 0]
    return divisors[-1] if divisors else target


# --------------------------------------------------------------------------- ranks and their tests

def sbc_ranks(truth, draws, rng: np.random.Generator):
    """Ranks of ``truth`` (``(S, ...)``) among ``draws`` (``(S, L, ...)``), ties broken uniformly.

    .. math::  r = \\#\\{l : x_l < x^*\\} + U, \\quad U \\sim \\mathcal{U}\\{0, \\dots, \\#\\{l : x_l = x^*\\}\\}

    so that r is uniform on {0, ..., L} under calibration even where draws repeat the true value (a
    discrete site; copies of one particle). NaN where the truth or any draw is not finite.
    """
    truth = np.asarray(truth, np.float64)
    draws = np.asarray(draws, np.float64)
    below = np.sum(draws < truth[:, None], axis=1)
    ties = np.sum(draws == truth[:, None], axis=1)
    ranks = below + np.floor(rng.uniform(size=ties.shape) * (ties + 1))
    valid = np.isfinite(truth) & np.all(np.isfinite(draws), axis=1)
    return np.where(valid, ranks, np.nan)


def _chi_square(ranks, num_values: int, num_bins: int):
    """Pearson's chi-square of the rank histogram against the discrete uniform, over ``num_bins`` bins of
    consecutive ranks (``np.array_split`` of 0..L), along the first axis; (statistic, p-value)."""
    edges = np.cumsum([0] + [len(b) for b in np.array_split(np.arange(num_values), num_bins)])
    valid = np.isfinite(ranks)
    n = valid.sum(axis=0)
    counts = np.stack([np.sum(valid & (ranks >= lo) & (ranks < hi), axis=0) for lo, hi in zip(edges[:-1], edges[1:])])
    expected = n[None] * (np.diff(edges) / num_values).reshape((-1,) + (1,) * (ranks.ndim - 1))
    with np.errstate(invalid="ignore", divide="ignore"):
        stat = np.sum((counts - expected) ** 2 / expected, axis=0)
    p_value = np.where(n > 0, scipy_stats.chi2.sf(stat, num_bins - 1), np.nan)
    return np.where(n > 0, stat, np.nan), p_value


def _summary(ranks: xr.Dataset, pit: xr.Dataset, num_values: int, num_bins: int, significance: float):
    """Per coordinate: the chi-square of the rank histogram, ArviZ's PIT uniformity test, their
    combination, and the PIT's mean and standard deviation."""
    import arviz_stats  # noqa: F401  (registers the ``azstats`` accessor)

    out = {}
    pit_p, _, _ = pit.fillna(0.5).azstats.uniformity_test(dim="simulation", method="pot_c")
    for name, da in ranks.items():
        stat, chi_p = _chi_square(da.values, num_values, num_bins)
        dims = da.dims[1:]
        pit_values = pit[name].values
        n = np.isfinite(da.values).sum(axis=0)
        pot = np.where(n == da.shape[0], np.asarray(pit_p[name].values), np.nan)  # NaN PIT values are not tested
        combined = np.minimum(1.0, 2.0 * np.fmin(chi_p, pot))
        out[f"{name}_chi2"] = (dims, stat)
        out[f"{name}_chi2_p_value"] = (dims, chi_p)
        out[f"{name}_pit_p_value"] = (dims, pot)
        out[f"{name}_p_value"] = (dims, combined)
        out[f"{name}_calibrated"] = (dims, combined >= significance)
        out[f"{name}_pit_mean"] = (dims, np.nanmean(pit_values, axis=0))
        out[f"{name}_pit_std"] = (dims, np.nanstd(pit_values, axis=0))
        out[f"{name}_num_valid"] = (dims, n)
    return xr.Dataset(out, coords={d: ranks[d] for d in ranks.dims if d != "simulation"})


# --------------------------------------------------------------------------- SBC

_SIMULATORS: "collections.OrderedDict[str, tuple]" = collections.OrderedDict()
_CACHE_SIZE = 8


def _joint_draws(program, data, names) -> Callable:
    """``keys -> {name: (num_keys, ...)}``: :func:`~pp_diffusion.program.prior_predictive_fn` as a jitted
    ``vmap``, compiled once per program and data, keyed by value as :func:`~pp_diffusion.infer` keys its
    runs."""
    digest, refs = _fingerprint.of_value((program, data, names))
    if digest not in _SIMULATORS:
        _SIMULATORS[digest] = (jax.jit(jax.vmap(prior_predictive_fn(program, data, names))), program, refs)
        if len(_SIMULATORS) > _CACHE_SIZE:
            _SIMULATORS.popitem(last=False)
    _SIMULATORS.move_to_end(digest)
    return _SIMULATORS[digest][0]


def sbc(program: Callable, sampler: Sampler, rng_key, *, num_simulations: int = 100, num_draws: int = 19,
        draws_per_chain: int = 1, var_names: Sequence[str] | None = None, num_bins: int | None = None,
        significance: float = 0.01, simulator: Callable | None = None, progress_bar: bool | None = None,
        **data) -> xr.DataTree:
    """Simulation-based calibration of ``sampler`` on ``program`` (Talts et al., 2018).

    For s = 1..S (``num_simulations``): draw (x*, y) jointly from the prior predictive
    ``unobserved(program)`` (one ``vmap`` over keys; the diffusion site runs its reverse chain), run
    ``infer(program, sampler, ..., y)`` (one compilation for all S), and rank every scalar coordinate
    of x* among L = ``num_draws`` posterior draws, ties broken uniformly (:func:`sbc_ranks`). For an
    exact sampler each rank is uniform on {0, ..., L}.

    Thinning: SMC returns N equally weighted draws that are resampled copies of correlated particles,
    and correlated draws make the rank histogram U-shaped even for an exact sampler. So the L draws
    come from L / ``draws_per_chain`` independent runs (``infer``'s chains), ``draws_per_chain`` draws
    of each picked uniformly at random without replacement among its N draws. With the default 1 the
    L draws are independent given y, each from the single-draw law of an N-particle run (what the
    check then tests, finite-N bias included); more per chain is cheaper but its draws are correlated
    (a U shape then need not mean miscalibration).

    Parameters
    ----------
    program
        A NumPyro program with one ``DiffusionPrior`` site and observed sample sites (no factors: the
        program must be generative).
    sampler
        A conditioning :class:`~pp_diffusion.Sampler` (``pp_diffusion.smc.twisted(256)``).
    rng_key
        A JAX PRNG key.
    num_simulations
        S, the number of simulated data sets.
    num_draws
        L, the posterior draws each true value is ranked among (L + 1 possible ranks; choose L + 1
        with many divisors, e.g. 19, 31 or 99, for equal histogram bins).
    draws_per_chain
        Draws taken from each independent run; must divide ``num_draws``.
    var_names
        Posterior variables to check: default, the diffusion site and the program's other latent
        sample sites; deterministic sites may be named too.
    num_bins
        Bins of the chi-square test over ranks (default: the largest divisor of L + 1 leaving at least
        5 expected ranks per bin).
    significance
        Level of the ``calibrated`` flags.
    simulator
        The program whose prior predictive draws (x*, y); default ``unobserved(program)``. Another one
        (same sites, e.g. a wider likelihood) asks how the sampler's posterior under ``program`` fares on
        data from a different model: the ranks are then not uniform even for an exact sampler.
    progress_bar
        A ``tqdm`` bar over the simulations (default: as :func:`~pp_diffusion.infer`).
    **data
        The program's keyword arguments as for :func:`~pp_diffusion.infer`, the observations included:
        they say which arguments are observed (and their shape and dtype); each simulation replaces them.

    Returns
    -------
    xarray.DataTree
        ``ranks`` (dims ``simulation`` and the site's own), ``prior_sbc`` (the randomised PIT values
        (r + V) / (L + 1), V ~ U(0, 1), continuous uniform under calibration: what
        ``arviz_plots.plot_ecdf_pit`` reads), ``summary`` (per coordinate: ``<var>_chi2`` and
        ``<var>_chi2_p_value`` of the rank histogram, ``<var>_pit_p_value`` of ArviZ's ``pot_c``
        uniformity test of the PIT values, ``<var>_p_value`` = min(1, 2 min of the two),
        ``<var>_calibrated`` (p-value >= ``significance``), ``<var>_pit_mean`` (0.5 under calibration:
        above, the sampler's draws sit below the truth) and ``<var>_pit_std`` (1/sqrt(12) = 0.289: above,
        too narrow a posterior, a U-shaped histogram; below, too wide), ``<var>_num_valid`` (simulations
        with finite draws)), ``truth`` (x*) and ``simulated_data`` (y). The root's attributes hold the
        settings, ``p_value`` (the smallest coordinate p-value times the number of coordinates, capped
        at 1) and ``calibrated`` (``p_value >= significance``).
    """
    num_simulations = _check_positive_int(num_simulations, "num_simulations")
    num_draws = _check_positive_int(num_draws, "num_draws")
    draws_per_chain = _check_positive_int(draws_per_chain, "draws_per_chain")
    if num_draws % draws_per_chain:
        raise ValueError(f"draws_per_chain must divide num_draws, got draws_per_chain={draws_per_chain} and "
                         f"num_draws={num_draws}")
    num_chains = num_draws // draws_per_chain
    num_values = num_draws + 1
    if num_bins is None:
        num_bins = _choose_bins(num_values, num_simulations)
    elif _check_positive_int(num_bins, "num_bins") < 2 or num_bins > num_values:
        raise ValueError(f"num_bins must lie between 2 and num_draws + 1 = {num_values}, got {num_bins}")
    if not isinstance(significance, numbers.Real) or not 0.0 < float(significance) < 1.0:
        raise ValueError(f"significance must lie in (0, 1), got {significance!r}")
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a pp_diffusion Sampler (e.g. pp_diffusion.smc.twisted(256)), "
                        f"got {type(sampler).__name__}")
    if not sampler.conditions:
        raise ValueError(f"sampler {sampler.name!r} does not condition on observations (it draws from the prior): "
                         "calibration checks a conditioning sampler (pp_diffusion.smc, pp_diffusion.guidance)")
    per_run = sampler.settings.get("num_particles", sampler.settings.get("num_samples"))
    if isinstance(per_run, numbers.Integral) and draws_per_chain > per_run:
        raise ValueError(f"draws_per_chain={draws_per_chain} exceeds the {per_run} draws per run of sampler "
                         f"{sampler.name!r}")
    k_sim, k_infer, k_pick = split_key(rng_key, 3)
    data = as_data(data)
    info = inspect_program(program, data)
    if not info.observed:
        raise ValueError(
            "program observes nothing with the data given "
            f"({sorted(data) if data else 'none'}): pass its observations as keyword arguments, as for infer "
            "(their values are replaced by simulated ones; their shape and dtype are kept)"
        )
    check_conditionable(info)
    arguments = observed_arguments(program, info, data)
    candidates = (info.site, *info.latent, *info.deterministic)
    if var_names is None:
        var_names = (info.site, *info.latent)
    else:
        var_names = (var_names,) if isinstance(var_names, str) else tuple(var_names)
        unknown = [v for v in var_names if v not in candidates]
        if unknown or not var_names:
            raise ValueError(f"var_names must name latent or deterministic sites of program {list(candidates)}, "
                             f"got {list(var_names)}")

    # the joint draws (x*, y), all simulations in one vmap
    if simulator is None:
        simulator = program
    elif not callable(simulator):
        raise TypeError(f"simulator must be a NumPyro program, got {type(simulator).__name__}")
    recorded = tuple(dict.fromkeys((*var_names, *arguments)))
    if simulator is not program:
        sites = inspect_program(simulator, data).sites
        lacking = [name for name in recorded if name not in sites]
        if lacking:
            raise ValueError(f"simulator has no site(s) {lacking}: it must draw the sites program checks and observes")
    joint = _joint_draws(simulator, data, recorded)(jax.random.split(k_sim, num_simulations))
    joint = {name: np.asarray(value) for name, value in joint.items()}
    missing = [v for v in var_names if v not in joint]
    if missing:
        raise ValueError(f"sites {missing} do not appear in the prior predictive of program")

    rng = np.random.default_rng(np.asarray(jax.random.key_data(k_pick)).ravel().tolist())
    keys = jax.random.split(k_infer, num_simulations)
    picked = {name: [] for name in var_names}
    dims: dict[str, tuple[str, ...]] = {}
    messages: dict[str, int] = {}
    progress = _progress.default_enabled() if progress_bar is None else bool(progress_bar)
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=num_simulations, desc=f"sbc {sampler.name}", unit="sim", delay=_progress.DELAY, leave=False)
    try:
        for s in range(num_simulations):
            data_s = dict(data)
            for site, arg in arguments.items():
                data_s[arg] = np.asarray(joint[site][s], dtype=np.asarray(data[arg]).dtype)
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                idata = infer(program, sampler, keys[s], num_chains=num_chains, progress_bar=False, **data_s)
            for w in caught:
                text = str(w.message)
                messages[text] = messages.get(text, 0) + 1
            posterior = idata.posterior
            num_available = posterior.sizes["draw"]
            if draws_per_chain > num_available:
                raise ValueError(f"draws_per_chain={draws_per_chain} exceeds the {num_available} draws per chain "
                                 f"sampler {sampler.name!r} returns")
            slots = np.stack([rng.choice(num_available, draws_per_chain, replace=False) for _ in range(num_chains)])
            for name in var_names:
                values = np.asarray(posterior[name].values)  # (chain, draw, *shape)
                dims.setdefault(name, tuple(posterior[name].dims[2:]))
                chosen = np.take_along_axis(values, slots.reshape(slots.shape + (1,) * (values.ndim - 2)), axis=1)
                picked[name].append(chosen.reshape((num_draws,) + values.shape[2:]))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    if messages:
        first = max(messages, key=messages.get)
        warnings.warn(f"sbc: infer warned {sum(messages.values())} time(s) over {num_simulations} simulations; "
                      f"most often ({messages[first]} times): {first}", RuntimeWarning, stacklevel=2)

    ranks, pit, truth = {}, {}, {}
    for name in var_names:
        draws = np.stack(picked[name])  # (S, L, *shape)
        true = joint[name].reshape((num_simulations,) + draws.shape[2:])
        r = sbc_ranks(true, draws, rng)
        ranks[name] = r
        pit[name] = (r + rng.uniform(size=r.shape)) / num_values
        truth[name] = true
    site_dims = {name: ("simulation", *dims[name]) for name in var_names}
    attrs = {"sampler": sampler.name, "num_simulations": num_simulations, "num_draws": num_draws,
             "draws_per_chain": draws_per_chain, "num_chains": num_chains, "num_bins": num_bins,
             "significance": float(significance), "diffusion_site": info.site,
             "thinning": f"{draws_per_chain} draw(s) picked uniformly from each of {num_chains} independent runs"}
    ranks_ds = _sim_dataset(ranks, site_dims, attrs)
    pit_ds = _sim_dataset(pit, site_dims, attrs)
    summary = _summary(ranks_ds, pit_ds, num_values, num_bins, float(significance))
    p_values = np.concatenate([np.ravel(summary[f"{name}_p_value"].values) for name in var_names])
    num_coords = int(np.sum(np.isfinite(p_values)))
    overall = float(min(1.0, num_coords * np.nanmin(p_values))) if num_coords else float("nan")
    groups = {
        "ranks": ranks_ds,
        "prior_sbc": pit_ds,
        "summary": summary,
        "truth": _sim_dataset(truth, site_dims, attrs),
        "simulated_data": dict_to_dataset({site: joint[site] for site in arguments}, sample_dims=["simulation"],
                                          attrs=attrs, check_conventions=False),
    }
    tree = xr.DataTree.from_dict(groups)
    tree.attrs = {**attrs, "p_value": overall, "calibrated": bool(overall >= significance)}
    return tree


def _sim_dataset(values: dict[str, np.ndarray], dims: dict[str, tuple[str, ...]], attrs) -> xr.Dataset:
    """A Dataset over ``simulation`` and each site's own dims (those of the posterior), integer coordinates."""
    ds = dict_to_dataset(values, sample_dims=["simulation"], dims={k: list(v[1:]) for k, v in dims.items()},
                         attrs=attrs, check_conventions=False)
    ds.attrs["sample_dims"] = ["simulation"]
    return ds


# --------------------------------------------------------------------------- plots

def plot_sbc(result: xr.DataTree, *, var_names: Sequence[str] | str | None = None, backend: str | None = None,
             **kwargs):
    """The ECDF-PIT plot of an :func:`sbc` result (``arviz_plots.plot_ecdf_pit`` of its ``prior_sbc``
    group over ``simulation``): one panel per checked coordinate, the ECDF of the PIT values minus the
    uniform CDF. Under calibration the curve stays near 0; a curve above 0 on the left and below on the
    right (ranks piled at both ends, a U-shaped histogram) means too narrow a posterior, the mirror
    image too wide, a curve on one side a bias. Each panel shows the p-value of ArviZ's ``pot_c``
    uniformity test and marks the points that drive a rejection (``method="envelope"`` draws
    simultaneous bands instead). Returns the ``PlotCollection``; other keyword arguments go to
    ``plot_ecdf_pit``.
    """
    import arviz_plots

    if not isinstance(result, xr.DataTree) or "prior_sbc" not in result.children:
        raise TypeError("result must be the DataTree pp_diffusion.diagnostics.sbc returns (with a prior_sbc group)")
    return arviz_plots.plot_ecdf_pit(result, var_names=var_names, group="prior_sbc", sample_dims=["simulation"],
                                     backend=backend, **kwargs)
