"""The sampler interface that `pp_diffusion.infer` runs, and the unconditional sampler `iid`.

A sampler is a value (:class:`Sampler`) built by a function such as :func:`iid` or
``pp_diffusion.smc.twisted(...)``. ``setup(program, info, data)`` runs once, eagerly (it may read
the program's structure with NumPy); ``run(rng_key, context)`` does one independent run on what
``setup`` returned and gives a :class:`SamplerOutput` of arrays. ``infer`` vmaps ``run`` over
chains, jits the whole, and converts the result to ArviZ. A sampler's draws are the ``posterior`` of
the program, or, for :func:`iid`, its ``prior`` (with the simulated observations as its
``prior_predictive``).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import jax
import jax.numpy as jnp
from numpyro import handlers

from pp_diffusion.program import unobserved

__all__ = ["Sampler", "SamplerOutput", "iid"]


class SamplerOutput(NamedTuple):
    """One run's arrays.

    posterior
        ``{site: (draws, *site_shape)}`` equally weighted draws (of the prior, for a sampler whose
        ``draws_from`` is ``"prior"``).
    sample_stats
        ``{name: (draws,)}`` per-draw statistics.
    run_stats
        ``{name: array}`` per-run statistics (log-evidence, ESS per step, ...); their extra
        dimensions are named by :attr:`Sampler.stat_dims`.
    particles
        The final weighted particle system of a weighted sampler, ``{"x": (N, *event), "log_weight":
        (N,), "origin": (N,)}`` (``origin``: the initial particle each descends from); the draws are
        ``x[sample_stats["particle"]]``. Empty for samplers without one.
    predictive
        ``{site: (draws, ...)}`` simulated values of the program's observed sites (:func:`iid`: the
        prior predictive); empty otherwise.
    """

    posterior: dict[str, jax.Array]
    sample_stats: dict[str, jax.Array]
    run_stats: dict[str, jax.Array]
    particles: dict[str, jax.Array] = {}
    predictive: dict[str, jax.Array] = {}


class Sampler(NamedTuple):
    """A sampling method with its settings fixed.

    name
        Short name, stored in the DataTree's attributes.
    settings
        ``{setting: value}`` also stored there.
    setup
        ``setup(program, info, data) -> context``, called once outside ``jax.jit``; ``info`` is
        the :class:`~pp_diffusion.program.ProgramInfo` of the program.
    run
        ``run(rng_key, context) -> SamplerOutput`` for one independent run (traced under jit).
    stat_dims
        ``{stat: (dim, ...)}`` names of the non-chain dimensions of ``run_stats`` entries.
    conditions
        Whether the sampler conditions on observed sites (``False``: it draws from the prior and
        ``infer`` refuses programs that observe anything).
    twists
        ``{site: twist kind} -> {site: what the sampler uses}``, for the DataTree's ``twists``
        attribute (None: the sampler uses no twists).
    draws_from
        ``"posterior"``, or ``"prior"`` for samplers that ignore the observations (:func:`iid`).
    kernel
        For SMC samplers, ``kernel(context) -> SMCKernel`` (``pp_diffusion.smc.SMCKernel``: ``init`` /
        ``step`` / ``output`` over the weighted particle system); None otherwise.
    tree
        For tree samplers (:mod:`pp_diffusion.tree`), their settings; None otherwise.
    """

    name: str
    settings: dict[str, Any]
    setup: Callable
    run: Callable
    stat_dims: dict[str, tuple[str, ...]] = {}
    conditions: bool = True
    twists: Callable | None = None
    draws_from: str = "posterior"
    kernel: Callable | None = None
    tree: Any = None


SUPPORT_SDS = 10.0


def draw_checks(model, draws) -> dict:
    """Per-run counts of bad draws ``(num, *event)``: ``nonfinite_draws`` (NaN or inf anywhere) and
    ``out_of_support``: outside the model's ``data_range`` by more than half its width, or, for models
    without one, beyond ``SUPPORT_SDS`` data standard deviations sqrt(data_var) of 0 in any coordinate
    (diffusion models map N(0, I) noise to data of roughly that scale)."""
    flat = draws.reshape(draws.shape[0], -1)
    finite = jnp.all(jnp.isfinite(flat), axis=1)
    if model.data_range is not None:
        low, high = model.data_range
        margin = 0.5 * (high - low)
        outside = jnp.any((flat < low - margin) | (flat > high + margin), axis=1)
    else:
        outside = jnp.any(jnp.abs(flat) > SUPPORT_SDS * jnp.sqrt(jnp.maximum(model.data_var, 1e-12)), axis=1)
    return {"nonfinite_draws": jnp.sum(~finite), "out_of_support": jnp.sum(finite & outside)}


def _check_positive_int(value, name):
    """``int(value)`` for a positive integer (Python's or NumPy's), else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return int(value)


def split_key(rng_key, num: int):
    """``jax.random.split(rng_key, num)``, else a ``TypeError`` saying what ``rng_key`` must be."""
    try:
        return jax.random.split(rng_key, num)
    except (TypeError, ValueError) as err:
        raise TypeError(f"rng_key must be a JAX PRNG key such as jax.random.key(0), got {rng_key!r}") from err


def iid(num_samples: int = 1000) -> Sampler:
    """Independent draws of the whole program from its prior (no conditioning).

    The diffusion site runs its :class:`~pp_diffusion.DiffusionPrior`'s own chain; every
    other site is drawn from its distribution given them, as ``numpyro.infer.Predictive``
    does. The draws are the DataTree's ``prior`` group; observed sites, if the program has any, are
    drawn too (:func:`~pp_diffusion.program.unobserved`) and make its ``prior_predictive``.
    ``sample_stats.nfe`` is the number of network evaluations behind each draw;
    ``nonfinite_draws`` and ``out_of_support`` count bad draws per chain (:func:`draw_checks`), and
    ``infer`` warns about them.
    """
    num_samples = _check_positive_int(num_samples, "num_samples")

    def setup(program, info, data):
        return unobserved(program), info, data

    def run(rng_key, context):
        program, info, data = context

        def one(key):
            trace = handlers.trace(handlers.seed(program, key)).get_trace(**data)
            latent, simulated = {}, {}
            for name, site in trace.items():
                if site["type"] == "sample" and site["infer"].get("was_observed"):
                    simulated[name] = site["value"]
                elif site["type"] in ("sample", "deterministic") and not site.get("is_observed", False):
                    latent[name] = site["value"]
            return latent, simulated

        draws, simulated = jax.vmap(one)(jax.random.split(rng_key, num_samples))
        nfe = jnp.full((num_samples,), info.prior.nfe, dtype=jnp.int32)
        return SamplerOutput(draws, {"nfe": nfe}, draw_checks(info.prior.model, draws[info.site]),
                             predictive=simulated)

    return Sampler("iid", {"num_samples": num_samples}, setup, run, {}, conditions=False, draws_from="prior")
