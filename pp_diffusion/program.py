"""Reading a NumPyro program: where its `DiffusionPrior` site is, what it observes, and its
Feynman–Kac model over the reverse chain.

Tracing uses NumPyro's own handlers (``seed``, ``trace``, ``substitute``), and a site's
log-probability is computed as NumPyro's ``log_density`` computes it: ``fn.log_prob(value)`` with
the masks of ``handlers.mask`` / ``obs_mask`` / ``Distribution.mask`` inside ``fn``, times the
site's ``scale``, summed. The tracer reads every observed site and factor into a *term* and gives
each a twist (:mod:`pp_diffusion.twists`):

- ``Normal(loc, scale)`` with loc affine in x_0 and scale free of it is a linear-Gaussian
  observation of its unmasked elements, y_i - b_i = A_i x_0 + N(0, scale_i^2 / w_i) with w_i the
  element's ``scale`` (``handlers.scale``), plus a constant that keeps log G NumPyro's; all such
  sites together are one :class:`~pp_diffusion.potentials.LinearGaussian`, whatever the reshapes,
  slices, sums, masks and scales that wrote them;
- ``StudentT`` / ``Laplace`` of an affine loc (scale free of x_0) get the linearised twist; every other
  site (factors, rewards, classifiers, discrete likelihoods, nonlinear locs) the tempered look-ahead,
  which measured better than the linearised one on nonlinear locs (``tests/smc/test_conditioning.py``);
  ``infer={"twist": ...}`` on a site overrides the choice.

Latent sites that no observed site depends on (``obs_mask``'s ``<name>_unobserved``, or a
predictive ``numpyro.sample("y_new", ...)``) integrate out of G exactly; they are drawn given each
posterior draw of x_0. Other latent sites (a noise scale, a class) are refused, as are subsampled
plates (a sampler would see the same subsample at every evaluation).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro import handlers
from numpyro.distributions.distribution import Unit

from pp_diffusion import twists as twists_lib
from pp_diffusion.prior import DiffusionPrior
from pp_diffusion.x0_variance import conditioning_x0_var

__all__ = ["ProgramInfo", "inspect_program", "feynman_kac", "FeynmanKacModel", "site_twists", "unobserved"]


class ProgramInfo(NamedTuple):
    """What one trace of a program shows.

    site
        Name of the (single) ``DiffusionPrior`` sample site.
    prior
        That site's :class:`DiffusionPrior`.
    observed
        ``{name: value}`` of the observed sample sites (factors included), in program order.
    latent
        Names of latent sample sites other than the diffusion site.
    deterministic
        Names of ``numpyro.deterministic`` sites.
    data
        The (concrete) keyword arguments the program was traced with.
    observed_args
        Names of the array arguments that are passed as an observed site's value (``obs=y``):
        ``infer`` passes these to its compiled run as arguments, so a new observation of the
        same shape reuses the compilation.
    predictive
        The latent sites among ``latent`` that no observed site depends on: they integrate out of
        G and are drawn given x_0 after the run.
    factors
        The observed sites that are factors (``numpyro.factor``: rewards, constraints), not data.
    """

    site: str
    prior: DiffusionPrior
    observed: dict[str, Any]
    latent: tuple[str, ...]
    deterministic: tuple[str, ...]
    data: dict[str, Any] = {}
    observed_args: tuple[str, ...] = ()
    predictive: tuple[str, ...] = ()
    factors: tuple[str, ...] = ()

    @property
    def sites(self) -> tuple[str, ...]:
        """Every sample and deterministic site's name: the diffusion site, latents, deterministic and
        observed sites (factors included)."""
        return (self.site, *self.latent, *self.deterministic, *self.observed)


def as_data(data: dict) -> dict:
    """A program's keyword arguments with lists and tuples of numbers as NumPy arrays (a program that
    indexes or reshapes its data expects arrays); everything else as given."""
    out = {}
    for k, v in data.items():
        if isinstance(v, (list, tuple)):
            arr = np.asarray(v) if v else None
            if arr is not None and arr.dtype.kind in "biuf":
                v = arr
        out[k] = v
    return out


def _array_like(value) -> bool:
    """An array or a number (not a bool): what a compiled run can take as an argument."""
    return isinstance(value, (np.ndarray, jax.Array, np.generic, numbers.Number)) and not isinstance(value, bool)


def _base_distribution(fn):
    """Unwrap ExpandedDistribution / Independent / MaskedDistribution wrappers."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def _is_prior_site(site) -> bool:
    return site["type"] == "sample" and isinstance(_base_distribution(site["fn"]), DiffusionPrior)


def _observed_sites(trace):
    return [s for s in trace.values() if s["type"] == "sample" and s["is_observed"] and not _is_prior_site(s)]


def elementwise_log_prob(site):
    """A sample site's log-probability over its batch shape: ``fn.log_prob(value)`` (masks inside
    ``fn``: masked elements are 0), times the site's ``scale``."""
    lp = site["fn"].log_prob(site["value"])
    return lp if site.get("scale") is None else site["scale"] * lp


def site_log_prob(site):
    """A sample site's log-probability as NumPyro's ``log_density`` sums it (:func:`elementwise_log_prob`)."""
    return jnp.sum(elementwise_log_prob(site))


def _over_elements(a, fn, shape):
    """An array over ``fn``'s batch shape (a mask or a scale) broadcast over the elements of a value of
    ``shape`` (batch dims on the left of the event dims, as NumPyro aligns them)."""
    a = jnp.broadcast_to(jnp.asarray(a), fn.batch_shape)
    return jnp.broadcast_to(a.reshape(tuple(fn.batch_shape) + (1,) * len(fn.event_shape)), shape)


def _unwrap(fn, shape):
    """(base distribution, boolean array of ``shape``: the elements no mask removes)."""
    keep = jnp.ones(shape, bool)
    while True:
        if isinstance(fn, dist.MaskedDistribution):
            keep = keep & _over_elements(fn._mask, fn, shape)
            fn = fn.base_dist
        elif isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
            fn = fn.base_dist
        else:
            return fn, keep


def _site_shape(site):
    return tuple(site["fn"].batch_shape) + tuple(site["fn"].event_shape)


def _placeholder(site):
    # read the structure without running the reverse chain: x_0 = 0 stands in for the draw
    if _is_prior_site(site) and not site["is_observed"]:
        return jnp.zeros(site["fn"].shape())
    return None


def _check_finite_observation(site, data):
    value = site["value"]
    if not jnp.issubdtype(jnp.result_type(value), jnp.floating):
        return
    _, keep = _unwrap(site["fn"], np.shape(value))
    bad = ~np.isfinite(np.asarray(value)) & np.asarray(keep)
    if bad.any():
        names = [k for k, v in data.items() if v is value]
        arg = f" (argument {names[0]!r})" if names else ""
        raise ValueError(
            f"observed site {site['name']!r}{arg} has {int(bad.sum())} non-finite value(s) (NaN or inf) among "
            "the elements it observes; pass finite data, or leave missing entries out with "
            "numpyro.sample(..., obs_mask=...) or handlers.mask"
        )


def inspect_program(program: Callable, data: dict[str, Any]) -> ProgramInfo:
    """Trace ``program(**data)`` once and describe it.

    Raises ``ValueError`` when it has no (or more than one) ``DiffusionPrior`` site, when an
    observation is not finite where it is observed or has the wrong shape, and for subsampled plates.
    """
    if not callable(program):
        raise TypeError(f"program must be a callable NumPyro program, got {type(program).__name__}")
    try:
        traced = handlers.substitute(handlers.seed(program, jax.random.key(0)), substitute_fn=_placeholder)
        trace = handlers.trace(traced).get_trace(**data)
    except TypeError as err:
        raise TypeError(f"could not call program with the data {sorted(data)}: {err}") from err
    prior_sites = [name for name, site in trace.items() if _is_prior_site(site)]
    if not prior_sites:
        raise ValueError(
            "program has no DiffusionPrior sample site: write x = numpyro.sample('x', "
            "pp_diffusion.DiffusionPrior(model)) in it"
        )
    if len(prior_sites) > 1:
        raise ValueError(f"program must have exactly one DiffusionPrior site, found {prior_sites}")
    site = prior_sites[0]
    if trace[site]["is_observed"]:
        raise ValueError(f"the DiffusionPrior site {site!r} is observed; pp_diffusion samples it, so leave it latent")
    prior = _base_distribution(trace[site]["fn"])
    if trace[site]["fn"].batch_shape not in ((), (1,)):
        raise ValueError(
            f"the DiffusionPrior site {site!r} has batch shape {trace[site]['fn'].batch_shape}: "
            "draw one x per program (use more particles or draws instead of a plate around it)"
        )
    for name, s in trace.items():
        if s["type"] == "plate" and s["args"][1] is not None and s["args"][1] < s["args"][0]:
            raise ValueError(
                f"plate {name!r} subsamples {s['args'][1]} of {s['args'][0]} elements: the conditioning samplers "
                "evaluate the program many times and need the whole likelihood; drop subsample_size"
            )
    observed = {}
    for s in _observed_sites(trace):
        name = s["name"]
        if name in data and np.shape(s["value"]) != _site_shape(s):
            raise ValueError(
                f"observed value {name!r} has shape {np.shape(s['value'])}, but its distribution "
                f"{type(s['fn']).__name__} has shape {_site_shape(s)}"
            )
        _check_finite_observation(s, data)
        observed[name] = np.asarray(s["value"])
    latent = tuple(
        name for name, s in trace.items() if s["type"] == "sample" and not s["is_observed"] and name != site
    )
    deterministic = tuple(name for name, s in trace.items() if s["type"] == "deterministic")
    obs_values = [s["value"] for s in _observed_sites(trace)]
    observed_args = tuple(
        k for k, v in data.items()
        if _array_like(v) and any(v is o for o in obs_values)
    )
    predictive = _predictive_latents(program, site, prior, latent, data) if latent else ()
    factors = tuple(s["name"] for s in _observed_sites(trace) if isinstance(_base_distribution(s["fn"]), Unit))
    return ProgramInfo(site, prior, observed, latent, deterministic, dict(data), observed_args, predictive, factors)


def _predictive_latents(program, site, prior, latent, data) -> tuple[str, ...]:
    """The latent sites whose values change no observed site's log-probability.

    Checked numerically: at two random x_0, each latent site is given three draws of its distribution
    (the others held) and the observed sites' log-probabilities must stay bit-identical.
    """
    out = []
    seeded = handlers.seed(program, jax.random.key(7))
    with jax.ensure_compile_time_eval():
        for name in latent:
            independent = True
            for x_seed in range(2):
                x0 = jax.random.normal(jax.random.key(100 + x_seed), prior.event_shape)
                first = handlers.trace(handlers.substitute(seeded, data={site: x0})).get_trace(**data)
                totals = []
                for seed in range(3):
                    value = first[name]["fn"].sample(jax.random.key(11 + seed))
                    tr = handlers.trace(handlers.substitute(seeded, data={site: x0, name: value})).get_trace(**data)
                    totals.append(np.asarray([site_log_prob(s) for s in _observed_sites(tr)], np.float64))
                if not all(np.array_equal(totals[0], t, equal_nan=True) for t in totals[1:]):
                    independent = False
            if independent:
                out.append(name)
    return tuple(out)


# --------------------------------------------------------------------------- program -> Feynman–Kac pieces

class _Unobserved(handlers.Messenger):
    """Observed sample sites (factors excepted) become draws from their distribution."""

    def process_message(self, msg):
        if (msg["type"] == "sample" and msg.get("is_observed") and not isinstance(_base_distribution(msg["fn"]), Unit)
                and not _is_prior_site(msg)):
            msg["value"] = None
            msg["is_observed"] = False
            msg["infer"] = {**msg.get("infer", {}), "was_observed": True}


def unobserved(program: Callable) -> Callable:
    """``program`` with every observed sample site drawn from its distribution instead (as Pyro's
    ``poutine.uncondition``): the prior predictive. Factors (``numpyro.factor``) stay as they are: they
    weight a trace, they are not data. Traced sites that were observed carry
    ``site["infer"]["was_observed"]``; ``obs_mask`` sites are drawn whole."""
    return _Unobserved(program)


def _conditioned_trace(program, info: ProgramInfo, data, x0, rng_key=None):
    key = jax.random.key(0) if rng_key is None else rng_key
    substituted = handlers.substitute(handlers.seed(program, key), data={info.site: x0})
    return handlers.trace(substituted).get_trace(**data)


def check_conditionable(info: ProgramInfo) -> None:
    """Conditioning samplers handle programs whose only latent variable that the observations depend
    on is the diffusion site."""
    globals_ = [name for name in info.latent if name not in info.predictive]
    if globals_:
        raise ValueError(
            f"latent sites other than the diffusion site {info.site!r} that the observations depend on are not "
            f"supported by this sampler: {globals_}. Sample them jointly with x by pp_diffusion.pmmh(smc, ...) "
            "(global latents), observe them, or integrate them out into a numpyro.factor"
        )


GLOBALS_ARG = "_pp_diffusion_globals"  # the keyword argument that carries the global latents' values


class GlobalSites(NamedTuple):
    """The global latent sites of a program (latents other than the diffusion site that the
    observations depend on), for the particle-MCMC samplers (:mod:`pp_diffusion.pmcmc`).

    names, shapes
        The sites, in program order, and their value shapes.
    constrain
        ``u -> ({name: value}, log |det J|)``: a flat unconstrained vector to the sites' values, by
        NumPyro's ``biject_to`` of each site's support, with the log-Jacobian of the map.
    unconstrain
        ``{name: value} -> u``.
    log_prior
        ``{name: value} -> log p(theta)``, the sites' log-densities (with the data, the diffusion site
        at zero: they do not depend on it).
    initial
        A value of every site: a draw of its prior, key 0 (concrete), where the program's structure is read.
    dim
        The length of u.
    """

    names: tuple
    shapes: tuple
    constrain: Callable
    unconstrain: Callable
    log_prior: Callable
    initial: dict
    dim: int


def global_sites(program, info: ProgramInfo, data) -> GlobalSites:
    """The :class:`GlobalSites` of ``program``; ``ValueError`` naming the site for one the samplers cannot
    take: a site inside a plate (local latents), a discrete site, one whose distribution depends on the
    diffusion site, or a support whose unconstrained shape differs from the value's (simplex, correlation)."""
    from numpyro.distributions.transforms import biject_to

    names, trace = _checked_globals(program, info, data)
    transforms, shapes, initial = [], [], {}
    for name in names:
        site = trace[name]
        fn = site["fn"]
        if fn.support.is_discrete:
            raise ValueError(f"latent site {name!r} is discrete ({type(fn).__name__}): pmmh moves continuous global "
                             "latents by a random walk; enumerate discrete ones with pp_diffusion.pmcmc.enumerate_globals")
        t = biject_to(fn.support)
        value = np.asarray(site["value"])
        if tuple(t.inverse_shape(value.shape)) != value.shape:
            raise ValueError(f"latent site {name!r}: its support {fn.support} has an unconstrained shape "
                             f"{t.inverse_shape(value.shape)} other than its value's {value.shape}; not supported")
        transforms.append(t)
        shapes.append(value.shape)
        initial[name] = value  # concrete (NumPy): the structure is read at it, under jit too
    sizes = [int(np.prod(s)) for s in shapes]
    offsets = np.concatenate([[0], np.cumsum(sizes)])

    def constrain(u):
        values, log_det = {}, jnp.zeros(())
        for name, t, shape, a, b in zip(names, transforms, shapes, offsets[:-1], offsets[1:]):
            v = jnp.reshape(u[a:b], shape)
            values[name] = t(v)
            log_det = log_det + jnp.sum(t.log_abs_det_jacobian(v, values[name]))
        return values, log_det

    def unconstrain(values):
        return jnp.concatenate([jnp.reshape(t.inv(jnp.asarray(values[n])), -1) for n, t in zip(names, transforms)])

    return GlobalSites(names, tuple(shapes), constrain, unconstrain, _globals_log_prior(program, info, data, names),
                       initial, int(offsets[-1]))


def _globals_log_prior(program, info: ProgramInfo, data, names) -> Callable:
    """``{name: value} -> log p(theta)``: the global sites' log-densities, the diffusion site at zero."""
    d = info.prior.event_shape

    def log_prior(values):
        seeded = handlers.seed(program, jax.random.key(0))
        trace = handlers.trace(handlers.substitute(seeded, data={**values, info.site: jnp.zeros(d)})).get_trace(
            **data)
        return sum((jnp.sum(trace[n]["fn"].log_prob(values[n])) for n in names), jnp.zeros(()))

    return log_prior


def _checked_globals(program, info: ProgramInfo, data):
    """The global latent sites' names and one trace of the program (x = 0), after the checks every
    particle-MCMC sampler needs: at least one site, none inside a plate, none depending on x."""
    names = tuple(n for n in info.latent if n not in info.predictive)
    if not names:
        raise ValueError("program has no global latent site the observations depend on: sample it with a "
                         "conditioning sampler (e.g. pp_diffusion.smc.twisted) instead")
    d = info.prior.event_shape
    with jax.ensure_compile_time_eval():
        traces = [_conditioned_trace(program, info, data, v * jnp.ones(d)) for v in (0.0, 0.7)]
        for name in names:
            site = traces[0][name]
            if site["cond_indep_stack"]:
                raise ValueError(f"latent site {name!r} is inside plate(s) "
                                 f"{[f.name for f in site['cond_indep_stack']]}: local latents (one per data point) "
                                 "are not supported; only global ones (no plate)")
            same = np.allclose(np.asarray(site["fn"].log_prob(site["value"])),
                               np.asarray(traces[1][name]["fn"].log_prob(site["value"])), equal_nan=True)
            if not same:
                raise ValueError(f"latent site {name!r} depends on the diffusion site {info.site!r}: the particle-MCMC "
                                 "samplers need global latents that come before or beside x, not after it")
    return names, traces[0]


def discrete_global_sites(program, info: ProgramInfo, data):
    """``(names, supports, log_prior)`` of a program whose global latents are all discrete with an
    enumerable support (``Categorical``, ``Bernoulli``, ...): each site's values as a list, and
    ``{name: value} -> log p(c)`` (concrete). ``ValueError`` naming a continuous or vector-valued site."""
    names, trace = _checked_globals(program, info, data)
    supports = []
    for name in names:
        fn = trace[name]["fn"]
        if not fn.support.is_discrete or not getattr(fn, "has_enumerate_support", False):
            raise ValueError(f"latent site {name!r} ({type(fn).__name__}) is not discrete with an enumerable support: "
                             "enumerate_globals takes Categorical / Bernoulli globals; use pp_diffusion.pmmh for "
                             "continuous ones")
        if fn.batch_shape != () or fn.event_shape != ():
            raise ValueError(f"latent site {name!r} has shape {fn.batch_shape + fn.event_shape}: enumerate_globals "
                             "takes scalar discrete globals")
        with jax.ensure_compile_time_eval():
            supports.append([np.asarray(v) for v in np.asarray(fn.enumerate_support(expand=False)).reshape(-1)])
    traced = _globals_log_prior(program, info, data, names)

    def log_prior(values):
        with jax.ensure_compile_time_eval():
            return float(traced(values))

    return names, supports, log_prior


def with_globals(program, names) -> Callable:
    """``program`` with the sites ``names`` set to the values passed as the keyword argument
    :data:`GLOBALS_ARG` and hidden from its trace: a program whose only latent is the diffusion site,
    for the conditioning samplers (the values may be traced)."""
    names = list(names)

    def conditioned(**data):
        values = data.pop(GLOBALS_ARG)
        return handlers.block(handlers.substitute(program, data=values), hide=names)(**data)

    return conditioned


def log_potential_fn(program, info: ProgramInfo, data) -> Callable:
    """log G(x_0): the sum of the log-probabilities of every observed site and factor of the program
    with the diffusion site set to x_0 (masks and scales applied as NumPyro does)."""

    def log_g(x0):
        trace = _conditioned_trace(program, info, data, x0)
        total = jnp.zeros(())
        for site in _observed_sites(trace):
            total = total + site_log_prob(site)
        return total

    return log_g


def posterior_sites_fn(program, info: ProgramInfo, data) -> Callable:
    """``(rng_key, x_0) -> {name: value}``: the program's deterministic sites and its predictive latent
    sites (drawn from their conditional given x_0)."""
    names = set(info.deterministic) | set(info.predictive)

    def values(rng_key, x0):
        if not names:
            return {}
        trace = _conditioned_trace(program, info, data, x0, rng_key)
        return {name: site["value"] for name, site in trace.items() if name in names}

    return values


def data_sites(info: ProgramInfo) -> tuple[str, ...]:
    """The observed sites that are data (factors are not: they weight a trace, as a reward or a
    constraint does), in program order: the sites of the ``log_likelihood`` and predictive groups."""
    return tuple(name for name in info.observed if name not in info.factors)


def pointwise_log_likelihood_fn(program, info: ProgramInfo, data) -> Callable:
    """``{latent: value} -> {site: log p(y_i | latents)}`` for one draw: each data site's elementwise
    log-probability (over its batch shape; event dimensions summed, as ``fn.log_prob`` gives it), with
    NumPyro's masks (masked elements are 0) and times the site's ``scale``, as ArviZ's
    ``log_likelihood`` group holds it. Factors are left out (:func:`data_sites`)."""
    names = data_sites(info)

    def pointwise(values):
        seeded = handlers.seed(program, jax.random.key(0))
        trace = handlers.trace(handlers.substitute(seeded, data=values)).get_trace(**data)
        return {name: elementwise_log_prob(trace[name]) for name in names}

    return pointwise


def observed_arguments(program, info: ProgramInfo, data) -> dict[str, str]:
    """``{observed data site: keyword argument}``: which argument of ``program`` carries each observed
    value (``obs=y`` with ``y`` passed as a keyword argument), for code that replaces observations
    (simulation-based calibration). Refuses factors (they are no data a simulation could replace) and
    observed values no argument carries."""
    if info.factors:
        raise ValueError(
            f"program has factor site(s) {list(info.factors)}: simulation-based calibration needs a generative "
            "program, one whose prior predictive draws the data the sampler conditions on; write the likelihood "
            "as an observed sample site (numpyro.sample(name, distribution, obs=value))"
        )
    traced = handlers.substitute(handlers.seed(program, jax.random.key(0)), substitute_fn=_placeholder)
    with jax.ensure_compile_time_eval():
        trace = handlers.trace(traced).get_trace(**data)
    out = {}
    for name in data_sites(info):
        args = [k for k, v in data.items() if v is trace[name]["value"]]
        if not args:
            raise ValueError(
                f"observed site {name!r} takes its value from no keyword argument of program as given: pass the "
                "observation itself as one (obs=y with y=... in the data), so that each simulation can replace it"
            )
        if args[0] in out.values():
            raise ValueError(f"keyword argument {args[0]!r} is the observed value of more than one site; give each "
                             "observed site its own argument")
        out[name] = args[0]
    return out


def prior_predictive_fn(program, data, names) -> Callable:
    """``rng_key -> {name: value}``: the sites ``names`` of one draw of the whole program from its prior
    (:func:`unobserved`: observed sites drawn too); sites the program does not have are left out."""
    released = unobserved(program)

    def draw(rng_key):
        trace = handlers.trace(handlers.seed(released, rng_key)).get_trace(**data)
        return {name: trace[name]["value"] for name in names if name in trace}

    return draw


def posterior_predictive_draws(program, info: ProgramInfo, data, posterior: dict, rng_key) -> dict:
    """The data sites drawn given each posterior draw (``posterior``: ``{site: (chain, draw, ...)}``):
    NumPyro's ``Predictive`` on the program with its observations released (:func:`unobserved`)."""
    from numpyro.infer import Predictive

    predictive = Predictive(unobserved(program), posterior_samples=posterior, batch_ndims=2,
                            return_sites=list(data_sites(info)))
    return {k: np.asarray(v) for k, v in predictive(rng_key, **data).items()}


class _Reading(NamedTuple):
    """The tracer's reading of one observed site (from concrete data).

    ``family``: the base distribution's class name ("factor" for ``numpyro.factor``); ``keep``: flat
    indices of the elements that count (unmasked, scale > 0), for location-scale families; ``twist``:
    the :class:`~pp_diffusion.twists.Twist` it gets.
    """

    name: str
    family: str
    keep: np.ndarray | None
    twist: twists_lib.Twist


_LOCATION_SCALE = {dist.Normal: "Normal", dist.StudentT: "StudentT", dist.Laplace: "Laplace"}


def _location_scale(site):
    """(family, loc, scale, df, weight, keep) over the site's elements (flattened), or None when the
    site is not a Normal / StudentT / Laplace (possibly masked, expanded, reinterpreted) one."""
    shape = np.shape(site["value"])
    base, keep = _unwrap(site["fn"], shape)
    family = _LOCATION_SCALE.get(type(base))
    if family is None:
        return None
    flat = lambda a: jnp.broadcast_to(a, shape).reshape(-1)
    weight = jnp.ones(shape)
    if site.get("scale") is not None:
        weight = _over_elements(site["scale"], site["fn"], shape)
    df = base.df if family == "StudentT" else jnp.zeros(())
    return (family, flat(base.loc), flat(base.scale), flat(df), weight.reshape(-1),
            (keep & (weight > 0)).reshape(-1))


def _site_spec(site) -> twists_lib.Twist | None:
    spec = (site.get("infer") or {}).get("twist")
    return None if spec is None else twists_lib.as_twist(spec, site["name"])


def _read_sites(program, info: ProgramInfo, data) -> tuple[list[_Reading], Any]:
    """Read every observed site of the program (with concrete ``data``) and choose its twist.

    Returns the readings and the linear-Gaussian observation of the sites that got the
    ``linear_gaussian`` twist (None if none did). Loc affinity and scale constancy are checked at random
    points of several scales and both signs (two points of scale ~1 miss piecewise-linear locs: a clip to
    [-1, 1] looks like the identity there).
    """
    from pp_diffusion.potentials import LinearGaussian

    event_shape = info.prior.event_shape
    d = int(np.prod(event_shape))
    sites_at = lambda x: _observed_sites(_conditioned_trace(program, info, data, jnp.reshape(x, event_shape)))
    zero = sites_at(jnp.zeros(d))
    k1, k2 = jax.random.split(jax.random.key(1))
    p1, p2 = jax.random.normal(k1, (d,)), 3.0 * jax.random.normal(k2, (d,))
    probes = (p1, -p1, p2, 0.01 * p2, 100.0 * p2)
    probe_sites = [sites_at(p) for p in probes]

    readings, lg_rows = [], []
    for i, site in enumerate(zero):
        name, spec = site["name"], _site_spec(site)
        base = _base_distribution(site["fn"])
        ls = _location_scale(site)
        family = "factor" if isinstance(base, Unit) else type(base).__name__
        keep, affine, constant_scale = None, False, False
        if ls is not None:
            keep = np.flatnonzero(np.asarray(ls[5]))
            loc_fn = lambda x, i=i, keep=keep: _location_scale(sites_at(x)[i])[1][keep]
            A = np.asarray(jax.jacfwd(loc_fn)(p1), np.float64).reshape(len(keep), d)
            b = np.asarray(ls[1][keep], np.float64)
            constant_scale, affine = True, True
            for p, sites in zip(probes, probe_sites):
                other = _location_scale(sites[i])
                constant_scale &= bool(np.allclose(np.asarray(other[2][keep]), np.asarray(ls[2][keep])))
                expected = A @ np.asarray(p, np.float64) + b
                tol = 1e-4 * (1.0 + np.abs(expected).max(initial=0.0))
                affine &= bool(np.abs(np.asarray(other[1][keep]) - expected).max(initial=0.0) <= tol)
        gaussian = ls is not None and family == "Normal" and affine and constant_scale
        if spec is None:
            # measured on the mixture's exact answers (tests/smc/test_conditioning.py): the linearised twist is
            # near exact for affine locs (Student-t, Laplace) but, for a nonlinear f, worse than the tempered
            # look-ahead (tanh: twisted SMC's log Z 0.8 nats low against 0.3; x^2: 3 nats, one of two modes lost)
            if gaussian:
                kind = "linear_gaussian"
            elif ls is not None and constant_scale and affine:
                kind = "linearized"
            else:
                kind = "tempered"
            spec = twists_lib.tempered() if kind == "tempered" else twists_lib.Twist(kind)
        elif spec.kind == "linear_gaussian" and not gaussian:
            raise ValueError(f"site {name!r} asks for the linear_gaussian twist but is not Normal(A x + b, sigma) "
                             "with sigma free of x; use 'linearized' or 'tempered'")
        elif spec.kind == "linearized" and not (ls is not None and constant_scale):
            raise ValueError(f"site {name!r} asks for the linearized twist, which needs a Normal, StudentT or Laplace "
                             "likelihood whose scale does not depend on x; use 'tempered'")
        if spec.kind == "tempered" and spec.schedule is not None:
            _check_schedule(spec.schedule, info.prior, name)
        if spec.kind == "custom":
            _check_custom(spec.log_h, info.prior, site, name)
        readings.append(_Reading(name, family, keep, spec))
        if spec.kind == "linear_gaussian" and len(keep):
            _, _, scale, _, weight, _ = ls
            var = np.asarray(scale[keep], np.float64) ** 2 / np.asarray(weight[keep], np.float64)
            w = np.asarray(weight[keep], np.float64)
            # w log N(y; m, s^2) = log N(y; m, s^2 / w) + c: log G stays NumPyro's
            const = np.sum(-0.5 * w * np.log(2 * np.pi * var * w) + 0.5 * np.log(2 * np.pi * var))
            y = np.asarray(jnp.reshape(site["value"], -1)[keep], np.float64)
            lg_rows.append((A, y - b, var, const))
    lg = None
    if lg_rows:
        A = np.concatenate([r[0] for r in lg_rows])
        lg = LinearGaussian.build(A, np.concatenate([r[1] for r in lg_rows]), np.concatenate([r[2] for r in lg_rows]),
                                  log_const=sum(r[3] for r in lg_rows))
    return readings, lg


def _check_schedule(schedule, prior, name):
    times = np.asarray(prior.times, np.float64)
    values = np.asarray([float(schedule(float(t))) for t in times])
    if not np.all(np.isfinite(values)) or values.min() < 0 or values.max() > 1:
        raise ValueError(f"site {name!r}: the tempering schedule must lie in [0, 1] on the time grid, got values "
                         f"from {values.min():.3g} to {values.max():.3g}")
    if abs(values[-1] - 1.0) > 1e-6:
        raise ValueError(f"site {name!r}: the tempering schedule must end at 1 at t = 0 (the target is G itself), "
                         f"got schedule(0) = {values[-1]:.6g}")


def _check_custom(log_h, prior, site, name):
    x = jax.ShapeDtypeStruct(prior.event_shape, jnp.float32)
    try:
        out = jax.eval_shape(lambda x_t: log_h(x_t, jnp.asarray(0.5), site["value"]), x)
    except Exception as err:  # noqa: BLE001 - reported with the site's name
        raise ValueError(f"site {name!r}: its twist log_h(x_t, t, value) failed on x_t of shape {prior.event_shape}: "
                         f"{err}") from err
    if getattr(out, "shape", None) != ():
        raise ValueError(f"site {name!r}: its twist log_h(x_t, t, value) must return a scalar, got shape "
                         f"{getattr(out, 'shape', type(out).__name__)}")


def site_twists(program, info: ProgramInfo) -> dict[str, str]:
    """``{site: twist kind}`` for every observed site and factor of the program, as the conditioning
    samplers twist them (recorded in the DataTree's ``twists`` attribute)."""
    with jax.ensure_compile_time_eval():
        readings, _ = _read_sites(program, info, info.data)
    return {r.name: r.twist.kind for r in readings}


class FeynmanKacModel(NamedTuple):
    """A program as a Feynman–Kac model over its prior's reverse chain.

    site
        Name of the diffusion site.
    prior
        The program's :class:`DiffusionPrior` (model, time grid, eta).
    log_g
        log G(x_0), the sum of the observed sites' and factors' log-probabilities.
    potential
        log G with its twists (:class:`~pp_diffusion.potentials.Potential`): ``log_h`` sums the fixed
        twists, ``lookahead`` the log G(xhat_0) of the adaptively tempered sites (None if none).
    linear_gaussian
        The :class:`~pp_diffusion.potentials.LinearGaussian` observation of the sites twisted as
        linear-Gaussian, or None.
    deterministic
        ``(rng_key, x_0) -> {name: value}``: the deterministic and predictive latent sites.
    data_var
        The data variance v of the Gaussian twists (and of :meth:`final_var`); the model's
        ``data_var`` unless overridden.
    log_g_rest
        log G of the sites outside ``linear_gaussian`` (None when there are none).
    twists
        ``{site: twist kind}``.
    target_ess
        The conditional ESS the adaptive tempering keeps (None without tempered sites).
    site_log_probs
        x_0 -> the vector of every observed site's log-probability, in ``twists``' order.
    """

    site: str
    prior: DiffusionPrior
    log_g: Callable
    potential: Any
    linear_gaussian: Any
    deterministic: Callable
    data_var: float = 1.0
    log_g_rest: Callable | None = None
    twists: dict = {}
    target_ess: float | None = None
    site_log_probs: Callable | None = None

    @property
    def all_linear_gaussian(self) -> bool:
        """Whether every observed site is in ``linear_gaussian`` (MCGdiff's and DPS-normalised's case)."""
        return self.linear_gaussian is not None and self.log_g_rest is None

    def final_var(self, t):
        """r_t^2, the Var[x_0 | x_t] of the conditioning samplers (their Gaussian twists and last
        transition x_{t_1} -> x_0): the prior's ``x0_var`` Gamma_t when it has one, else
        v sigma_t^2 / (alpha_t^2 v + sigma_t^2), exact for data x_0 ~ N(0, v I)."""
        x0_var = _twist_x0_var(self.prior, self.data_var)  # for a phase-space prior, Var[x_0 | z_t] of its kernel
        if x0_var is not None:
            return x0_var(t)
        sched = self.prior.model.schedule
        return conditioning_x0_var(None, self.data_var, t, sched.alpha(t), sched.sigma(t))


def _twist_x0_var(prior, data_var):
    """The x0_var of the twists' r_t^2 (:func:`~pp_diffusion.x0_variance.conditioning_x0_var`): the prior's
    own, or for a phase-space prior the exact Var[x_0 | z_t] of N(0, v) data (which ignores alpha, sigma)."""
    if getattr(prior, "augmented", False):
        return lambda t: prior.model.x0_var(t, data_var)
    return prior.x0_var


def linear_gaussian_structure(program, info: ProgramInfo, data):
    """The :class:`~pp_diffusion.potentials.LinearGaussian` observation y - b = A x_0 + noise (over
    flattened x_0) when every observed site of the program is linear-Gaussian, else None.

    The structure is read with the concrete data ``info.data``; only y comes from ``data`` (which
    ``infer`` traces, so that a new observation reuses its compilation).
    """
    if not info.observed:
        return None
    with jax.ensure_compile_time_eval():
        readings, lg = _read_sites(program, info, info.data if info.data else data)
    if lg is None or any(r.twist.kind != "linear_gaussian" for r in readings):
        return None
    return _with_observation(lg, readings, program, info, data)


def _with_observation(lg, readings, program, info, data):
    """``lg`` with y - b read from ``data`` (traced under infer's jit) instead of the concrete data; when
    data other than the observations changed too (a global latent's value, :mod:`pp_diffusion.pmcmc`),
    A, the noise variances and the SVD are read again from ``data`` (:meth:`LinearGaussian.build_traced`)."""
    concrete = info.data if info.data else data
    changed = [k for k in data if data[k] is not concrete.get(k)]
    if not changed:
        return lg
    if any(k not in info.observed_args for k in changed):
        return _linear_gaussian_traced(lg, readings, program, info, data)
    sites = _observed_sites(_conditioned_trace(program, info, data, jnp.zeros(info.prior.event_shape)))
    parts = []
    for r, site in zip(readings, sites):
        if r.twist.kind == "linear_gaussian" and len(r.keep):
            _, loc, *_ = _location_scale(site)
            parts.append(jnp.reshape(site["value"], -1)[r.keep] - loc[r.keep])
    y = jnp.concatenate(parts)
    return lg._replace(y=y.astype(jnp.float32), y_white=(y / jnp.sqrt(lg.noise_var)).astype(jnp.float32))


def _linear_gaussian_traced(lg, readings, program, info, data):
    """The linear-Gaussian rows of ``readings`` read from (traced) ``data``: A by forward mode at x = 0,
    b, the scales and weights there (the structure, its rows and the rank as read concretely)."""
    from pp_diffusion.potentials import LinearGaussian

    event_shape = info.prior.event_shape
    d = int(np.prod(event_shape))
    sites_at = lambda x: _observed_sites(_conditioned_trace(program, info, data, jnp.reshape(x, event_shape)))
    zero = sites_at(jnp.zeros(d))
    rows = []
    for i, (r, site) in enumerate(zip(readings, zero)):
        if r.twist.kind != "linear_gaussian" or not len(r.keep):
            continue
        _, loc, scale, _, weight, _ = _location_scale(site)
        A = jax.jacfwd(lambda x, i=i, keep=r.keep: _location_scale(sites_at(x)[i])[1][keep])(jnp.zeros(d))
        var = scale[r.keep] ** 2 / weight[r.keep]
        w = weight[r.keep]
        const = jnp.sum(-0.5 * w * jnp.log(2 * jnp.pi * var * w) + 0.5 * jnp.log(2 * jnp.pi * var))
        y = jnp.reshape(site["value"], -1)[r.keep]
        rows.append((jnp.reshape(A, (len(r.keep), d)), y - loc[r.keep], var, const))
    return LinearGaussian.build_traced(jnp.concatenate([a[0] for a in rows]), jnp.concatenate([a[1] for a in rows]),
                                       jnp.concatenate([a[2] for a in rows]), sum(a[3] for a in rows), lg.s.shape[0])


def _potential(program, info, data, readings, lg, data_var):
    """The Potential of the readings (see :mod:`pp_diffusion.twists`)."""
    from pp_diffusion import potentials

    event_shape, x0_var = info.prior.event_shape, _twist_x0_var(info.prior, data_var)
    index = {r.name: i for i, r in enumerate(readings)}
    linearized = [r for r in readings if r.twist.kind == "linearized" and len(r.keep)]
    at_x0_hat = [r for r in readings if r.twist.kind == "lookahead"
                 or (r.twist.kind == "tempered" and r.twist.schedule is not None)]
    custom = [r for r in readings if r.twist.kind == "custom"]
    adaptive = [r for r in readings if r.twist.kind == "tempered" and r.twist.schedule is None]
    if getattr(info.prior, "augmented", False) and (custom or adaptive):
        names = [r.name for r in custom + adaptive]
        raise ValueError(
            f"site(s) {names}: custom twists (which read the VP state x_t) and adaptively tempered twists (the "
            f"default of factors) are not available on the phase-space prior of site {info.site!r}; declare "
            "another on the site, e.g. infer={'twist': 'lookahead'} (pp_diffusion.twists)")
    sites_at = lambda x0: _observed_sites(_conditioned_trace(program, info, data, x0))

    def linearized_terms(x0_hat, r2):
        """The linearised twists: one joint Gaussian over the Normal sites, the widened family per element
        for the others; f's Jacobian by forward mode over flattened x_0 (no network call)."""
        def locs(flat):
            sites = sites_at(jnp.reshape(flat, event_shape))
            parts = []
            for r in linearized:
                site = sites[index[r.name]]
                _, loc, scale, df, weight, _ = _location_scale(site)
                y = jnp.reshape(site["value"], -1)
                parts.append(tuple(a[r.keep] for a in (loc, scale, df, weight, y)))
            return jnp.concatenate([p[0] for p in parts]), parts

        J, parts = jax.jacfwd(locs, has_aux=True)(jnp.reshape(x0_hat, -1))
        total, row, normal = jnp.zeros(()), 0, []
        for r, (loc, scale, df, weight, y) in zip(linearized, parts):
            family = r.family
            rows = J[row: row + len(r.keep)]
            row += len(r.keep)
            if family == "Normal":
                var = scale**2 / weight
                const = jnp.sum(-0.5 * weight * jnp.log(2 * jnp.pi * var * weight) + 0.5 * jnp.log(2 * jnp.pi * var))
                normal.append((y - loc, var, rows, const))
                continue
            widened = twists_lib.widened_scale(family, scale, df, r2 * jnp.sum(rows**2, axis=1))
            base = dist.Laplace(loc, widened) if family == "Laplace" else dist.StudentT(df, loc, widened)
            total = total + jnp.sum(weight * base.log_prob(y))
        if normal:
            resid, var, rows, const = (jnp.concatenate(parts) for parts in zip(*[(a, b, c, jnp.atleast_1d(k))
                                                                                  for a, b, c, k in normal]))
            total = total + twists_lib.gaussian_log_density(resid, var, rows, r2) + jnp.sum(const)
        return total

    def log_h(x_t, x0_hat, t, alpha, sigma):
        r2 = conditioning_x0_var(x0_var, data_var, t, alpha, sigma)
        terms = []
        if lg is not None:
            terms.append(lg.log_likelihood(jnp.reshape(x0_hat, -1), r2))
        if linearized:
            terms.append(linearized_terms(x0_hat, r2))
        if at_x0_hat:
            sites = sites_at(x0_hat)
            for r in at_x0_hat:
                value = site_log_prob(sites[index[r.name]])
                terms.append(value if r.twist.kind == "lookahead" else r.twist.schedule(t) * value)
        if custom:
            sites = sites_at(x0_hat)
            for r in custom:
                site = sites[index[r.name]]
                scale = 1.0 if site.get("scale") is None else jnp.sum(site["scale"])
                terms.append(scale * r.twist.log_h(x_t, t, site["value"]))
        return sum(terms[1:], terms[0]) if terms else jnp.zeros(())

    def lookahead(x0_hat):
        sites = sites_at(x0_hat)
        return sum((site_log_prob(sites[index[r.name]]) for r in adaptive), jnp.zeros(()))

    def log_g(x0):
        sites = sites_at(x0)
        return sum((site_log_prob(s) for s in sites), jnp.zeros(()))

    return potentials.Potential(log_g, log_h, lookahead if adaptive else None)


def feynman_kac(program, info: ProgramInfo, data, *, data_var: float | None = None,
                energy_targets: bool = False, stochastic: bool = True,
                augmented: bool = False) -> FeynmanKacModel:
    """Build the Feynman–Kac model of a conditioned program (its structure is read eagerly from
    ``info.data``; the observations come from ``data``, which may be traced).

    ``data_var`` overrides the model's ``data_var`` in the Gaussian twists. A diffusion site that is an
    :class:`~pp_diffusion.energy.EnergyPrior` is refused unless ``energy_targets`` (the sampler weighs
    its energies: :func:`pp_diffusion.smc.energy`). ``stochastic=False`` accepts any chain of the prior,
    deterministic integrators included (for samplers that weigh nothing: particle guidance). A
    phase-space prior (:class:`~pp_diffusion.phase_space.AugmentedModel`) is refused unless
    ``augmented`` (the sampler moves z = [x; m] with the prior's splitting integrator: bootstrap SMC and
    DPS); its twists take r_t^2 = Var[x_0 | z_t] from :meth:`AugmentedModel.x0_var`."""
    check_conditionable(info)
    from pp_diffusion.energy import EnergyPrior

    if getattr(info.prior, "augmented", False):
        if not augmented:
            raise ValueError(
                f"the diffusion site {info.site!r} has a phase-space prior ({info.prior.model.name}): this "
                "sampler's kernels and twists are those of the VP chain x_t = alpha_t x_0 + sigma_t eps, not of "
                "z = [x; m]. Condition it with pp_diffusion.smc.bootstrap or pp_diffusion.guidance.dps (they "
                "move z with the prior's splitting integrator; docs/samplers.md, 'Phase-space priors')")
        if stochastic and not info.prior.integrator.stochastic:
            raise ValueError(
                f"conditioning samplers need a stochastic chain: the phase-space prior of site {info.site!r} "
                f"runs the deterministic integrator {info.prior.integrator.name!r}; build it with a stochastic "
                "one (phase_space.sscs, euler_maruyama, oba, reduced_oba or conjugate_oba)")
    if isinstance(info.prior, EnergyPrior) and not energy_targets:
        raise ValueError(
            f"the diffusion site {info.site!r} is an energy prior ({info.prior.model.name}): its target "
            "exp(-sum_k beta_k E_k) is sampled by pp_diffusion.smc.energy; this sampler would run the chain of the "
            "summed score, which samples a different law")
    if stochastic and not getattr(info.prior, "augmented", False) and (
            info.prior.eta is None or (info.prior.eta <= 0 and info.prior.x0_var is None)):
        raise ValueError(
            "conditioning samplers need the stochastic DDIM-family chain: build the prior as "
            f"DiffusionPrior(model, eta > 0) or with x0_var, got eta={info.prior.eta} "
            f"(integrator {info.prior.integrator.name})"
        )
    v = float(info.prior.model.data_var if data_var is None else data_var)
    log_g = log_potential_fn(program, info, data)
    readings, lg = [], None
    if info.observed:
        with jax.ensure_compile_time_eval():  # concrete even while infer's jit traces the sampler's setup
            readings, lg = _read_sites(program, info, info.data if info.data else data)
        if lg is not None:
            lg = _with_observation(lg, readings, program, info, data)
    rest = [r.name for r in readings if r.twist.kind != "linear_gaussian"]
    if readings and not rest:
        from pp_diffusion import potentials

        potential = potentials.linear_gaussian_potential(lg, v, _twist_x0_var(info.prior, v))
    else:
        potential = _potential(program, info, data, readings, lg, v)
    sites_at = lambda x0: _observed_sites(_conditioned_trace(program, info, data, x0))

    def log_g_rest(x0):
        sites = {s["name"]: s for s in sites_at(x0)}
        return sum((site_log_prob(sites[name]) for name in rest), jnp.zeros(()))

    def site_log_probs(x0):
        sites = sites_at(x0)
        return jnp.stack([site_log_prob(s) for s in sites]) if sites else jnp.zeros((0,))

    ess = {r.twist.target_ess for r in readings if r.twist.kind == "tempered" and r.twist.schedule is None}
    if len(ess) > 1:
        raise ValueError(f"the adaptively tempered sites share one exponent and need one target_ess, got {sorted(ess)}")
    return FeynmanKacModel(
        info.site, info.prior, log_g, potential, lg, posterior_sites_fn(program, info, data), v,
        log_g_rest if (lg is not None and rest) else None,
        {r.name: r.twist.kind for r in readings}, ess.pop() if ess else None, site_log_probs,
    )
