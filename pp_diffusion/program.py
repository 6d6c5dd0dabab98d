"""Reading a NumPyro program: where its `DiffusionPrior` site is, what it observes, what else it samples.

Tracing uses NumPyro's own handlers (``seed``, ``trace``, ``substitute``), so plates, ``mask``,
``scale``, ``deterministic`` and any NumPyro distribution behave as they do in NumPyro.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from numpyro import handlers

from pp_diffusion.prior import DiffusionPrior
from pp_diffusion.x0_variance import conditioning_x0_var

__all__ = ["ProgramInfo", "inspect_program"]


class ProgramInfo(NamedTuple):
    """What one trace of a program shows.

    site
        Name of the (single) ``DiffusionPrior`` sample site.
    prior
        That site's :class:`DiffusionPrior`.
    observed
        ``{name: value}`` of the observed sample sites.
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
    """

    site: str
    prior: DiffusionPrior
    observed: dict[str, Any]
    latent: tuple[str, ...]
    deterministic: tuple[str, ...]
    data: dict[str, Any] = {}
    observed_args: tuple[str, ...] = ()


def _base_distribution(fn):
    """Unwrap ExpandedDistribution / Independent / MaskedDistribution wrappers."""
    while hasattr(fn, "base_dist"):
        fn = fn.base_dist
    return fn


def inspect_program(program: Callable, data: dict[str, Any]) -> ProgramInfo:
    """Trace ``program(**data)`` once and describe it; raises ``ValueError`` when it has no
    (or more than one) ``DiffusionPrior`` site."""
    if not callable(program):
        raise TypeError(f"program must be a callable NumPyro program, got {type(program).__name__}")
    def placeholder(site):
        # read the structure without running the reverse chain: x_0 = 0 stands in for the draw
        if site["type"] == "sample" and isinstance(_base_distribution(site["fn"]), DiffusionPrior) and not site["is_observed"]:
            return jnp.zeros(site["fn"].shape())
        return None

    try:
        traced = handlers.substitute(handlers.seed(program, jax.random.key(0)), substitute_fn=placeholder)
        trace = handlers.trace(traced).get_trace(**data)
    except TypeError as err:
        raise TypeError(f"could not call program with the data {sorted(data)}: {err}") from err
    prior_sites = [
        name for name, site in trace.items()
        if site["type"] == "sample" and isinstance(_base_distribution(site["fn"]), DiffusionPrior)
    ]
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
    observed = {}
    for name, s in trace.items():
        if s["type"] == "sample" and s["is_observed"]:
            shape = tuple(s["fn"].batch_shape) + tuple(s["fn"].event_shape)
            if name in data and np.shape(s["value"]) != shape:
                raise ValueError(
                    f"observed value {name!r} has shape {np.shape(s['value'])}, but its distribution "
                    f"{type(s['fn']).__name__} has shape {shape}"
                )
            observed[name] = np.asarray(s["value"])
    latent = tuple(
        name for name, s in trace.items() if s["type"] == "sample" and not s["is_observed"] and name != site
    )
    deterministic = tuple(name for name, s in trace.items() if s["type"] == "deterministic")
    obs_values = [s["value"] for s in trace.values() if s["type"] == "sample" and s["is_observed"]]
    observed_args = tuple(
        k for k, v in data.items()
        if isinstance(v, (np.ndarray, jax.Array)) and any(v is o for o in obs_values)
    )
    return ProgramInfo(site, prior, observed, latent, deterministic, dict(data), observed_args)


# --------------------------------------------------------------------------- program -> Feynman–Kac pieces

def _conditioned_trace(program, info: ProgramInfo, data, x0):
    substituted = handlers.substitute(handlers.seed(program, jax.random.key(0)), data={info.site: x0})
    return handlers.trace(substituted).get_trace(**data)


def check_conditionable(info: ProgramInfo) -> None:
    """Conditioning samplers handle programs whose only latent variable is the diffusion site."""
    if info.latent:
        raise ValueError(
            f"latent sites other than the diffusion site {info.site!r} are not supported by the "
            f"conditioning samplers yet: {list(info.latent)}. Observe them, or integrate them out "
            "into a numpyro.factor"
        )


def log_potential_fn(program, info: ProgramInfo, data) -> Callable:
    """log G(x_0): the sum of the log-probabilities of every observed site and factor of the program
    with the diffusion site set to x_0 (``scale`` and ``mask`` handlers applied as NumPyro does)."""

    def log_g(x0):
        trace = _conditioned_trace(program, info, data, x0)
        total = jnp.zeros(())
        for name, site in trace.items():
            if site["type"] != "sample" or not site["is_observed"]:
                continue
            lp = jnp.sum(site["fn"].log_prob(site["value"]))
            if site.get("scale") is not None:
                lp = site["scale"] * lp
            total = total + lp
        return total

    return log_g


def deterministic_fn(program, info: ProgramInfo, data) -> Callable:
    """x_0 -> {name: value} of the program's deterministic sites."""

    def values(x0):
        trace = _conditioned_trace(program, info, data, x0)
        return {name: site["value"] for name, site in trace.items() if site["type"] == "deterministic"}

    return values


def linear_gaussian_structure(program, info: ProgramInfo, data):
    """If every observed site is ``Normal(loc(x_0), scale)`` with loc affine in x_0 and scale free of
    x_0 (and no factors, masks or scales), return :class:`~pp_diffusion.potentials.LinearGaussian`
    for y - b = A x_0 + noise over flattened x_0; otherwise None.

    A is read off the program by differentiating loc (so ``op(x)`` for any linear operator, a slice
    or a matrix product is recognised) and affinity is checked at random points of several scales.
    The structure is read with the concrete data ``info.data``; only y comes from ``data`` (which
    ``infer`` traces, so that a new observation reuses its compilation).
    """
    if not info.observed:
        return None
    event_shape = info.prior.event_shape

    concrete = info.data if info.data else data  # the structure is read from concrete values

    def pieces(x0_flat, data=concrete):
        trace = _conditioned_trace(program, info, data, x0_flat.reshape(event_shape))
        locs, scales, values = [], [], []
        for name, site in trace.items():
            if site["type"] != "sample" or not site["is_observed"]:
                continue
            fn = site["fn"]
            if site.get("scale") is not None or isinstance(fn, dist.MaskedDistribution):
                return None
            while isinstance(fn, (dist.Independent, dist.ExpandedDistribution)):
                fn = fn.base_dist
            if type(fn) is not dist.Normal:
                return None
            shape = jnp.shape(site["value"])
            locs.append(jnp.broadcast_to(fn.loc, shape).reshape(-1))
            scales.append(jnp.broadcast_to(fn.scale, shape).reshape(-1))
            values.append(jnp.reshape(site["value"], -1))
        return jnp.concatenate(locs), jnp.concatenate(scales), jnp.concatenate(values)

    d = int(np.prod(event_shape))
    with jax.ensure_compile_time_eval():  # concrete even while infer's jit traces the sampler's setup
        lg = _linear_gaussian_from(pieces, d)
    if lg is None or not any(data[k] is not concrete.get(k) for k in data):
        return lg
    # the observation itself from the data given (traced under infer's jit): y - b, whitened
    traced = pieces(jnp.zeros(d), data)
    y = traced[2] - traced[0]
    return lg._replace(y=y.astype(jnp.float32), y_white=(y / jnp.sqrt(lg.noise_var)).astype(jnp.float32))


def _linear_gaussian_from(pieces, d):
    from pp_diffusion.potentials import LinearGaussian

    probe = pieces(jnp.zeros(d))
    if probe is None:
        return None
    loc_fn = lambda x: pieces(x)[0]
    k1, k2 = jax.random.split(jax.random.key(1))
    p1, p2 = jax.random.normal(k1, (d,)), 3.0 * jax.random.normal(k2, (d,))
    A = np.asarray(jax.jacfwd(loc_fn)(p1), dtype=np.float64)
    b = np.asarray(probe[0], dtype=np.float64)
    # probe on both sides of the origin and over four decades of scale: two points of scale ~1
    # miss piecewise-linear locs (a clip to [-1, 1] looks like the identity there)
    for p in (p1, -p1, p2, 0.01 * p2, 100.0 * p2):
        loc, sc, _ = pieces(p)
        expected = A @ np.asarray(p, dtype=np.float64) + b
        tol = 1e-4 * (1.0 + np.abs(expected).max())
        if np.abs(np.asarray(loc) - expected).max() > tol or not np.allclose(np.asarray(sc), np.asarray(probe[1])):
            return None
    y = np.asarray(probe[2], dtype=np.float64) - b
    return LinearGaussian.build(A, y, np.asarray(probe[1], dtype=np.float64) ** 2)


class FeynmanKacModel(NamedTuple):
    """A program as a Feynman–Kac model over its prior's reverse chain.

    site
        Name of the diffusion site.
    prior
        The program's :class:`DiffusionPrior` (model, time grid, eta).
    log_g
        log G(x_0), the sum of the observed sites' and factors' log-probabilities.
    potential
        log G with its twist: the variance-corrected Gaussian look-ahead when the observations
        are linear-Gaussian, else the Tweedie look-ahead log G(xhat_0(x_t)).
    linear_gaussian
        The :class:`~pp_diffusion.potentials.LinearGaussian` structure, or None.
    deterministic
        x_0 -> the program's deterministic sites.
    data_var
        The data variance v of the Gaussian twist (and of the last transition of
        :meth:`final_var`); the model's ``data_var`` unless overridden.
    """

    site: str
    prior: DiffusionPrior
    log_g: Callable
    potential: Any
    linear_gaussian: Any
    deterministic: Callable
    data_var: float = 1.0

    def final_var(self, t):
        """r_t^2, the Var[x_0 | x_t] of the conditioning samplers (their linear-Gaussian twist and last
        transition x_{t_1} -> x_0): the prior's ``x0_var`` Gamma_t when it has one, else
        v sigma_t^2 / (alpha_t^2 v + sigma_t^2), exact for data x_0 ~ N(0, v I)."""
        sched = self.prior.model.schedule
        return conditioning_x0_var(self.prior.x0_var, self.data_var, t, sched.alpha(t), sched.sigma(t))


def feynman_kac(program, info: ProgramInfo, data, *, data_var: float | None = None) -> FeynmanKacModel:
    """Build the Feynman–Kac model of a conditioned program (eagerly: call outside ``jax.jit``).

    ``data_var`` overrides the model's ``data_var`` in the variance-corrected Gaussian twist."""
    from pp_diffusion import potentials

    check_conditionable(info)
    if info.prior.eta is None or (info.prior.eta <= 0 and info.prior.x0_var is None):
        raise ValueError(
            "conditioning samplers need the stochastic DDIM-family chain: build the prior as "
            f"DiffusionPrior(model, eta > 0) or with x0_var, got eta={info.prior.eta} "
            f"(integrator {info.prior.integrator.name})"
        )
    log_g = log_potential_fn(program, info, data)
    lg = linear_gaussian_structure(program, info, data)
    v = float(info.prior.model.data_var if data_var is None else data_var)
    if lg is not None:
        potential = potentials.linear_gaussian_potential(lg, v, info.prior.x0_var)
    else:
        potential = potentials.tweedie_lookahead(log_g)
    return FeynmanKacModel(info.site, info.prior, log_g, potential, lg, deterministic_fn(program, info, data), v)
