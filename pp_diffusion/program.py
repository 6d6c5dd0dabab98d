"""Reading a NumPyro program: where its `DiffusionPrior` site is, what it observes, what else it samples.

Tracing uses NumPyro's own handlers (``seed``, ``trace``, ``substitute``), so plates, ``mask``,
``scale``, ``deterministic`` and any NumPyro distribution behave as they do in NumPyro.
"""

from __future__ import annotations

from typing import Any, Callable, NamedTuple

import jax
import numpy as np
from numpyro import handlers

from pp_diffusion.prior import DiffusionPrior

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
    """

    site: str
    prior: DiffusionPrior
    observed: dict[str, Any]
    latent: tuple[str, ...]
    deterministic: tuple[str, ...]


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
    try:
        trace = handlers.trace(handlers.seed(program, jax.random.key(0))).get_trace(**data)
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
    observed = {
        name: np.asarray(s["value"]) for name, s in trace.items() if s["type"] == "sample" and s["is_observed"]
    }
    latent = tuple(
        name for name, s in trace.items() if s["type"] == "sample" and not s["is_observed"] and name != site
    )
    deterministic = tuple(name for name, s in trace.items() if s["type"] == "deterministic")
    return ProgramInfo(site, prior, observed, latent, deterministic)
