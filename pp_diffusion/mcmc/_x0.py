"""Gradient MCMC directly on the clean data x_0: :func:`nuts` and :func:`mala`.

The target is the program's posterior over its diffusion site,

.. math::  \\log \\pi(x) = \\log p_0(x) + \\log G(x),

with G the program's observed sites and factors (:func:`pp_diffusion.program.log_potential_fn`, the
same log G the SMC samplers end on) and log p_0 the model's clean-data log-density:

- the exact ``model.data_distribution.log_prob`` when the model has one (the Gaussian mixture's
  :meth:`~pp_diffusion.GaussianMixture.diffusion_model`, through :meth:`DiffusionPrior.log_prob`);
- else, for an energy network (``parameterization="energy"``), -E(x, t = 0): log p_0 up to a
  constant, which MCMC does not need.

A trained eps / x0 / v / score network has neither, and these samplers refuse it (the SMC samplers
of :mod:`pp_diffusion.smc` need neither). The reverse chain is used only to draw the starting points.

The kernels, the warmup and the step-size control are BlackJAX's: ``blackjax.nuts`` with
``blackjax.window_adaptation`` (Stan's windows: step size by dual averaging, then a diagonal inverse
mass matrix), and ``blackjax.mala`` with ``blackjax.adaptation.step_size.dual_averaging_adaptation``
toward the target acceptance rate. One chain is ``setup`` + ``run`` of a :class:`~pp_diffusion.Sampler`;
:func:`pp_diffusion.infer` vmaps it over ``num_chains`` keys and jits the whole (warmup and sampling
are ``lax.scan`` loops inside that one compilation).

MCMC on x_0 is local: a chain stays in the mode it starts in when the posterior has well-separated
modes, and each chain's draws then describe one mode, weighted by where the chains happened to start,
not by the modes' posterior mass. Several chains from dispersed starts (prior draws) show it as a
large R-hat (``arviz.rhat``); SMC over the reverse chain does not get stuck this way
(``docs/samplers.md``).
"""

from __future__ import annotations

import numbers
from typing import Any, Callable, NamedTuple

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.adaptation.base import get_filter_adapt_info_fn
from blackjax.adaptation.step_size import dual_averaging_adaptation

from pp_diffusion import _progress
from pp_diffusion.program import check_conditionable, log_potential_fn, posterior_sites_fn
from pp_diffusion.samplers import Sampler, SamplerOutput, _check_positive_int, draw_checks

__all__ = ["nuts", "mala", "log_density_fn"]


def _check_rate(value, name: str) -> float:
    """``float(value)`` for a number strictly between 0 and 1, else a ``ValueError`` naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0.0 < float(value) < 1.0:
        raise ValueError(f"{name} must be a number strictly between 0 and 1, got {value!r}")
    return float(value)


def _check_init(init):
    """``"prior"``, a callable ``init(rng_key) -> x_0``, or a finite array (checked against the event
    shape in ``setup``)."""
    if isinstance(init, str):
        if init != "prior":
            raise ValueError(f"init must be 'prior', a function rng_key -> x_0, or an array x_0, got {init!r}")
        return init
    if callable(init):
        return init
    try:
        arr = np.asarray(init, dtype=np.float32)
    except (TypeError, ValueError):
        raise TypeError(f"init must be 'prior', a function rng_key -> x_0, or an array x_0, got {init!r}") from None
    if not np.all(np.isfinite(arr)):
        raise ValueError("init must be finite: it is the starting point x_0 of every chain")
    return arr


def _log_p0_fn(model, prior) -> tuple[Callable, str]:
    """``(x_0 -> log p_0(x_0), "exact" | "energy")`` of a model, or the ``ValueError`` that says how to get one."""
    if getattr(prior, "augmented", False):
        raise ValueError(
            f"MCMC on x_0 needs the clean-data log-density log p_0, and the phase-space model {model.name!r} has none "
            "(its chain runs on z = [x; m]); condition it with pp_diffusion.smc.bootstrap or pp_diffusion.guidance.dps")
    data = model.data_distribution
    if data is not None and hasattr(data, "log_prob"):
        return prior.log_prob, "exact"
    if model.parameterization == "energy":
        return (lambda x: -model.energy(x, jnp.zeros(()))), "energy"
    raise ValueError(
        f"MCMC on x_0 needs the clean-data log-density log p_0, and model {model.name!r} has none: its "
        f"parameterization is {model.parameterization!r} and it has no exact data distribution. Use a model with "
        "an exact density (e.g. pp_diffusion.GaussianMixture(...).diffusion_model(schedule)) or an energy model "
        "(DiffusionModel(network, parameterization='energy', ...), whose -E(x, 0) is log p_0 up to a constant); "
        "or sample with pp_diffusion.smc, which needs neither"
    )


def log_density_fn(program, info, data) -> tuple[Callable, str]:
    """``(logdensity, kind)``: log pi(x) = log p_0(x) + log G(x) of the program's diffusion site, as a
    function of the *flattened* x_0 (BlackJAX's kernels and mass matrices work on vectors); ``kind`` is
    ``"exact"`` or ``"energy"`` (module docstring). Raises the ``ValueError`` of a model with neither."""
    log_p0, kind = _log_p0_fn(info.prior.model, info.prior)
    log_g = log_potential_fn(program, info, data)
    shape = tuple(info.prior.event_shape)

    def logdensity(flat):
        x = jnp.reshape(flat, shape)
        return log_p0(x) + log_g(x)

    return logdensity, kind


class _Context(NamedTuple):
    logdensity: Callable
    initial: Callable  # rng_key -> (flat x_0, network evaluations it cost)
    site: str
    event_shape: tuple
    model: Any
    deterministic: Callable


def _setup_fn(init):
    def setup(program, info, data) -> _Context:
        check_conditionable(info)
        logdensity, _ = log_density_fn(program, info, data)
        shape = tuple(info.prior.event_shape)
        prior = info.prior
        if isinstance(init, str):
            def initial(key):
                # infer's progress bar counts reverse-chain steps: the starting draw's are not the run's
                with _progress.tracing(False):
                    return jnp.reshape(prior.sample(key), -1), prior.nfe
        elif callable(init):
            def initial(key):
                x = jnp.asarray(init(key), jnp.float32)
                if x.shape != shape:
                    raise ValueError(f"init(rng_key) must return an x_0 of the event shape {shape}, got shape "
                                     f"{x.shape}")
                return jnp.reshape(x, -1), 0
        else:
            if init.shape != shape:
                raise ValueError(f"init must have the event shape {shape} of site {info.site!r}, got shape "
                                 f"{init.shape}")
            initial = lambda key: (jnp.reshape(jnp.asarray(init), -1), 0)
        return _Context(logdensity, initial, info.site, shape, prior.model,
                        posterior_sites_fn(program, info, data))

    return setup


def _output(ctx: _Context, rng_key, positions, lp, sample_stats, run_stats, num_grads) -> SamplerOutput:
    """The draws (reshaped to the event shape, with the deterministic and predictive sites), the
    per-draw statistics (``nfe`` = ``vjp`` = gradient evaluations times the model's ``nfe_per_call``)
    and the per-chain ones (plus :func:`~pp_diffusion.samplers.draw_checks`)."""
    num = positions.shape[0]
    draws = jnp.reshape(positions, (num, *ctx.event_shape))
    per_call = ctx.model.nfe_per_call
    stats = {**sample_stats, "lp": lp,
             "nfe": (num_grads * per_call).astype(jnp.int32), "vjp": (num_grads * per_call).astype(jnp.int32)}
    run_stats = {**run_stats, "nonfinite_lp": jnp.sum(~jnp.isfinite(lp)).astype(jnp.int32),
                 **draw_checks(ctx.model, draws)}
    sites = jax.vmap(ctx.deterministic)(jax.random.split(rng_key, num), draws)
    return SamplerOutput({ctx.site: draws, **sites}, stats, run_stats)


def _settings(num_samples, num_warmup, init, **rest) -> dict:
    return {"num_samples": num_samples, "num_warmup": num_warmup,
            "init": init if isinstance(init, str) else ("function" if callable(init) else "array"), **rest}


def nuts(num_samples: int = 1000, num_warmup: int = 1000, *, target_acceptance_rate: float = 0.8,
         max_num_doublings: int = 10, init="prior") -> Sampler:
    """The No-U-Turn Sampler (BlackJAX's ``blackjax.nuts``) on the posterior of the diffusion site x_0.

    Targets log pi(x) = log p_0(x) + log G(x) (:mod:`pp_diffusion.mcmc._x0`): the model needs an exact
    data density or an energy network. Each chain starts at ``init``, runs ``num_warmup`` steps of
    ``blackjax.window_adaptation`` (Stan's windowed adaptation of the step size, by dual averaging toward
    ``target_acceptance_rate``, and of a diagonal inverse mass matrix), then ``num_samples`` NUTS steps
    with the adapted parameters; both loops are ``lax.scan`` inside :func:`~pp_diffusion.infer`'s one jit,
    the chains vmapped.

    Parameters
    ----------
    num_samples, num_warmup
        Draws kept per chain, and warmup steps before them (positive integers; fewer than 20 warmup
        steps adapt the step size only, as BlackJAX's schedule does).
    target_acceptance_rate
        In (0, 1); Stan's 0.8 by default. Raise it (0.9, 0.95) when draws diverge.
    max_num_doublings
        The largest tree depth: at most 2**max_num_doublings - 1 leapfrog steps per draw.
    init
        Where each chain starts: ``"prior"`` (default), one draw of the program's
        :class:`~pp_diffusion.DiffusionPrior` (``DiffusionPrior.sample``, its reverse chain: dispersed
        starts, so that R-hat can see chains that do not mix); a function ``init(rng_key) -> x_0``
        (called with each chain's own key); or an array of the event shape, where every chain starts.

    Returns
    -------
    Sampler
        For :func:`pp_diffusion.infer`: ``posterior`` with dims ``(chain, draw, ...)``; ``sample_stats``
        per draw with ArviZ's names ``acceptance_rate``, ``diverging``, ``step_size``, ``n_steps``
        (leapfrog steps), ``tree_depth``, ``energy``, ``lp`` (log pi, unnormalised for an energy model)
        and ``nfe`` = ``vjp`` = ``n_steps`` (a gradient of log p_0 is one evaluation and one VJP of the
        model, times its ``nfe_per_call``); ``diagnostics`` per chain: ``num_divergent``, ``nonfinite_lp``
        (draws whose log pi is NaN or infinite), ``warmup_nfe`` (the warmup's gradients and the first one at
        the start), ``init_nfe`` (the prior draw's network evaluations), ``nonfinite_draws`` and
        ``out_of_support``; ``infer`` warns about divergences and non-finite log-densities.

    Examples
    --------
    >>> idata = ppd.infer(program, ppd.mcmc.nuts(500, 500), jax.random.key(0), num_chains=4, y=y)
    >>> arviz.rhat(idata)   # > 1.01: the chains disagree (a multimodal posterior, or too short a run)
    """
    num_samples = _check_positive_int(num_samples, "num_samples")
    num_warmup = _check_positive_int(num_warmup, "num_warmup")
    rate = _check_rate(target_acceptance_rate, "target_acceptance_rate")
    doublings = _check_positive_int(max_num_doublings, "max_num_doublings")
    init = _check_init(init)

    def run(rng_key, ctx: _Context) -> SamplerOutput:
        k_init, k_warm, k_sample, k_out = jax.random.split(rng_key, 4)
        x_init, init_nfe = ctx.initial(k_init)
        warmup = blackjax.window_adaptation(
            blackjax.nuts, ctx.logdensity, target_acceptance_rate=rate, max_num_doublings=doublings,
            adaptation_info_fn=get_filter_adapt_info_fn(info_keys={"num_integration_steps"}))
        (state, parameters), warm_info = warmup.run(k_warm, x_init, num_warmup)
        kernel = blackjax.nuts(ctx.logdensity, **parameters)

        def step(state, key):
            state, info = kernel.step(key, state)
            return state, (state.position, state.logdensity, info)

        _, (positions, lp, info) = jax.lax.scan(step, state, jax.random.split(k_sample, num_samples))
        step_size = jnp.full((num_samples,), parameters["step_size"])
        stats = {"acceptance_rate": info.acceptance_rate, "diverging": info.is_divergent,
                 "step_size": step_size, "n_steps": info.num_integration_steps.astype(jnp.int32),
                 "tree_depth": info.num_trajectory_expansions.astype(jnp.int32), "energy": info.energy}
        per_call = ctx.model.nfe_per_call
        run_stats = {
            "num_divergent": jnp.sum(info.is_divergent).astype(jnp.int32),
            "warmup_nfe": ((1 + jnp.sum(warm_info.info.num_integration_steps)) * per_call).astype(jnp.int32),
            "init_nfe": jnp.asarray(init_nfe * per_call, jnp.int32),
        }
        return _output(ctx, k_out, positions, lp, stats, run_stats, info.num_integration_steps)

    settings = _settings(num_samples, num_warmup, init, target_acceptance_rate=rate, max_num_doublings=doublings)
    return Sampler("mcmc.nuts", settings, _setup_fn(init), run)


def mala(num_samples: int = 1000, num_warmup: int = 1000, *, step_size: float | None = None,
         target_acceptance_rate: float = 0.574, init="prior") -> Sampler:
    """The Metropolis-adjusted Langevin algorithm (BlackJAX's ``blackjax.mala``) on the posterior of the
    diffusion site x_0.

    Targets log pi(x) = log p_0(x) + log G(x) (:mod:`pp_diffusion.mcmc._x0`), as :func:`nuts` does. A step
    proposes x' = x + tau grad log pi(x) + sqrt(2 tau) z (BlackJAX's convention for the step size tau) and
    accepts it by Metropolis-Hastings. Each chain starts at ``init``, runs ``num_warmup`` steps (with
    ``step_size=None``, adapting tau by BlackJAX's dual averaging,
    ``blackjax.adaptation.step_size.dual_averaging_adaptation``, toward ``target_acceptance_rate``, from
    tau_0 = data_var d^(-1/3) / 2; the draws then use its averaged value), then ``num_samples`` steps.

    Parameters
    ----------
    num_samples, num_warmup
        Draws kept per chain, and warmup (burn-in, and adaptation) steps before them; positive integers.
    step_size
        A fixed tau > 0 (no adaptation), or None (default) to adapt it.
    target_acceptance_rate
        In (0, 1); 0.574, optimal for MALA in high dimension (Roberts & Rosenthal 1998), by default.
    init
        As in :func:`nuts`: ``"prior"`` (default, one ``DiffusionPrior.sample`` draw per chain), a function
        ``init(rng_key) -> x_0``, or an array of the event shape.

    Returns
    -------
    Sampler
        As :func:`nuts`'s, with ``sample_stats`` ``acceptance_rate``, ``step_size``, ``n_steps`` (1),
        ``lp``, ``nfe`` = ``vjp`` = 1 per draw (times the model's ``nfe_per_call``), and ``diagnostics``
        ``nonfinite_lp``, ``warmup_nfe``, ``init_nfe``, ``nonfinite_draws``, ``out_of_support``.
    """
    num_samples = _check_positive_int(num_samples, "num_samples")
    num_warmup = _check_positive_int(num_warmup, "num_warmup")
    rate = _check_rate(target_acceptance_rate, "target_acceptance_rate")
    if step_size is not None:
        if isinstance(step_size, bool) or not isinstance(step_size, numbers.Real) or not (
                np.isfinite(step_size) and step_size > 0):
            raise ValueError(f"step_size must be a positive finite number, or None to adapt it; got {step_size!r}")
        step_size = float(step_size)
    init = _check_init(init)

    def run(rng_key, ctx: _Context) -> SamplerOutput:
        k_init, k_warm, k_sample, k_out = jax.random.split(rng_key, 4)
        x_init, init_nfe = ctx.initial(k_init)
        kernel = blackjax.mala.build_kernel()
        state = blackjax.mala.init(x_init, ctx.logdensity)

        if step_size is None:
            da_init, da_update, da_final = dual_averaging_adaptation(rate)
            dim = x_init.shape[0]
            tau0 = 0.5 * max(ctx.model.data_var, 1e-6) * dim ** (-1.0 / 3.0)

            def warm(carry, key):
                state, da_state = carry
                state, info = kernel(key, state, ctx.logdensity, jnp.exp(da_state.log_step_size))
                rate_ = jnp.where(jnp.isnan(info.acceptance_rate), 0.0, info.acceptance_rate)
                return (state, da_update(da_state, rate_)), None

            (state, da_state), _ = jax.lax.scan(warm, (state, da_init(jnp.asarray(tau0, jnp.float32))),
                                                jax.random.split(k_warm, num_warmup))
            tau = da_final(da_state)
        else:
            def burn(state, key):
                return kernel(key, state, ctx.logdensity, step_size)[0], None

            state, _ = jax.lax.scan(burn, state, jax.random.split(k_warm, num_warmup))
            tau = jnp.asarray(step_size, jnp.float32)

        def step(state, key):
            state, info = kernel(key, state, ctx.logdensity, tau)
            return state, (state.position, state.logdensity, info.acceptance_rate)

        _, (positions, lp, acceptance) = jax.lax.scan(step, state, jax.random.split(k_sample, num_samples))
        ones = jnp.ones((num_samples,), jnp.int32)
        stats = {"acceptance_rate": acceptance, "step_size": jnp.full((num_samples,), tau), "n_steps": ones}
        per_call = ctx.model.nfe_per_call
        run_stats = {"warmup_nfe": jnp.asarray((1 + num_warmup) * per_call, jnp.int32),
                     "init_nfe": jnp.asarray(init_nfe * per_call, jnp.int32)}
        return _output(ctx, k_out, positions, lp, stats, run_stats, ones)

    settings = _settings(num_samples, num_warmup, init, step_size="adapted" if step_size is None else step_size,
                         target_acceptance_rate=rate)
    return Sampler("mcmc.mala", settings, _setup_fn(init), run)
