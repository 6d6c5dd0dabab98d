"""Feynman–Kac SMC over the reverse diffusion chain, on ``blackjax.smc.base.step``.

Particles move backward along the prior's time grid t_N = 1 > ... > t_0 = 0. A method supplies
``init_particle(x_T)`` and ``move(rng_key, particle, t, s, index, final)`` (``index`` counts steps
from 0; ``final`` is a Python bool, true for the last step into clean data): the move proposes x_s ~ q(. | x_t)
and returns the incremental log-weight

.. math::  \\log w = \\log h_s(x_s) + \\log p_\\theta(x_s \\mid x_t) - \\log h_t(x_t) - \\log q(x_s \\mid x_t),

with h_0 = G, so the product of the mean weights estimates Z = E_{p_theta}[G(x_0)] = p(y)
(unbiased, because the weights of steps that do not resample are carried forward). The
initial weights are h_N(x_N).

The last transition, x_t1 -> x_0, is deterministic in the DDIM-family chain (x_0 = xhat_0(x_t1)).
Under linear-Gaussian observations the weighted samplers replace it by the Gaussian
N(xhat_0(x_t1), r_t1^2 I), r_t1^2 = v sigma_t1^2 / (alpha_t1^2 v + sigma_t1^2) (Var[x_0 | x_t1] for
data of variance v; ``FeynmanKacModel.final_var``), and draw x_0 from its product with the
likelihood: otherwise an observation more precise than the chain's last noise level (sigma_y
below r_t1 times the singular values of A) leaves a single particle with weight and an evidence
estimate off by thousands of nats.

Each step is one ``blackjax.smc.base.step(update_fn, weight_fn, resample_fn)``. BlackJAX's step
always resamples; adaptive resampling (ESS below ``ess_threshold * N``, or every
``resample_every`` steps) is expressed through its own hooks: the resampling function is the
identity on steps that skip resampling, and the particles carry their log-weights
log(N w), which ``weight_fn`` adds to the increment (and ``update_fn`` resets after a
resampling). BlackJAX's ``normalizing_constant`` is then exactly the log-evidence increment
log sum_i w_i exp(incr_i).

Numerical trouble is reported, not hidden: a NaN increment becomes -inf (BlackJAX's MALA
convention) and is counted in ``SMCInfo.num_nan``; if every weight is zero the run is marked
``degenerate`` and its draws are NaN. A run whose final ESS (after the last reweighting) is
below ``max(2, LOW_ESS_FRACTION * N)`` is marked ``low_ess``: its draws are copies of a few
particles and its evidence estimate is unreliable (``infer`` warns about both flags).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import blackjax.smc.base as smc_base
import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from pp_diffusion import _progress
from pp_diffusion.program import FeynmanKacModel, feynman_kac
from pp_diffusion.samplers import Sampler, SamplerOutput, _check_positive_int

__all__ = ["Particle", "SMCInfo", "run_smc", "gaussian_log_ratio", "fk_sampler", "LOW_ESS_FRACTION"]

LOW_ESS_FRACTION = 0.01


class Particle(NamedTuple):
    """One particle (vmapped to a batch in the sampler).

    x
        The current x_t.
    x0_hat
        Its Tweedie estimate E[x_0 | x_t] (cached: the next transition needs it).
    log_h
        The twist log h_t(x_t) (path-dependent for FK steering's max / sum potentials).
    grad_log_h
        grad_x log h_t(x_t) when the method's proposal uses it, else zeros.
    aux
        A running statistic of the path (FK steering's max / sum), or a method's own bookkeeping
        (MCGdiff: the part of log h_t the next weight divides out), else zero.
    log_w
        The carried log-weight log(N w) of steps that did not resample.
    incr
        This step's incremental log-weight.
    x0_prev
        The previous step's x0 prediction (the ancestor's ``x0_hat``), which the second-order
        kernel of a ``DiffusionPrior(..., order=2)`` extrapolates from: :func:`run_smc` sets it
        (``carry_x0_prev``), so moves need not; None at order 1.
    """

    x: jax.Array
    x0_hat: jax.Array
    log_h: jax.Array
    grad_log_h: jax.Array
    aux: jax.Array
    log_w: jax.Array
    incr: jax.Array
    x0_prev: jax.Array | None = None


class SMCInfo(NamedTuple):
    """Per-step diagnostics: ESS after reweighting, whether the step resampled first, the
    log-evidence increment and the number of NaN increments mapped to -inf."""

    ess: jax.Array
    resampled: jax.Array
    log_evidence_increment: jax.Array
    num_nan: jax.Array


def gaussian_log_ratio(noise, shift, std):
    """log N(x; m_p, std^2 I) - log N(x; m_q, std^2 I) for x = m_q + std * noise and shift = m_q - m_p,

    .. math::  -\\frac{noise \\cdot shift}{std} - \\frac{\\lVert shift \\rVert^2}{2\\, std^2},

    computed from the noise and the shift, never from x: the difference of two squared distances
    of order |x|^2 / std^2 loses its digits in float32 when |x| is large and std small. Zero when
    std = 0 (no proposal noise: then q = p).
    """
    safe = jnp.where(std > 0, std, 1.0)
    d = -jnp.sum(noise * shift) / safe - jnp.sum(shift**2) / (2 * safe**2)
    return jnp.where(std > 0, d, 0.0)


def _identity_resampling(rng_key, weights, num_samples):
    del rng_key, weights
    return jnp.arange(num_samples)


def run_smc(
    rng_key,
    *,
    x_T: jax.Array,
    times: jax.Array,
    init_particle: Callable,
    move: Callable,
    resampling: Callable,
    ess_threshold: float,
    resample_every: int | None = None,
    weighted: bool = True,
    carry_x0_prev: bool = False,
):
    """Run SMC along ``times`` from the ``(N, *event)`` initial ``x_T``.

    Returns ``(final SMCState, log_evidence, stacked SMCInfo)``. ``resample_every`` (when
    given) resamples on a fixed interval of steps, as FK steering does; otherwise the step
    resamples when the ESS is below ``ess_threshold * N``. ``weighted=False`` starts from uniform
    weights (for methods whose particles are never weighted). ``carry_x0_prev`` gives every moved
    particle its ancestor's ``x0_hat`` as ``x0_prev`` (the initial particles their own).
    """
    num = x_T.shape[0]
    particles = jax.vmap(init_particle)(x_T)
    if carry_x0_prev:
        particles = particles._replace(x0_prev=particles.x0_hat)
    log_w0 = jnp.where(jnp.isnan(particles.log_h), -jnp.inf, particles.log_h)
    if not weighted:
        log_w0 = jnp.zeros_like(log_w0)
    log_z0 = logsumexp(log_w0) - jnp.log(num)
    weights = jnp.exp(log_w0 - logsumexp(log_w0))
    state = smc_base.SMCState(particles, weights, {"resample": jnp.asarray(False)})
    num_steps = times.shape[0] - 1

    def one_step(carry, inputs, final):
        state, log_z = carry
        key, t, s, index = inputs
        ess_before = 1.0 / jnp.sum(state.weights**2)
        if resample_every is None:
            do_resample = ess_before < ess_threshold * num
        else:
            do_resample = (index % resample_every == 0) & (index > 0)
        log_w = jnp.log(num * state.weights)
        state = smc_base.SMCState(
            state.particles._replace(log_w=log_w), state.weights, {"resample": do_resample}
        )

        def resample_fn(key, weights, n):
            return jax.lax.cond(
                do_resample,
                lambda k, w: resampling(k, w, n),
                lambda k, w: _identity_resampling(k, w, n),
                key, weights,
            )

        def update_fn(keys, particles, params):
            particles = particles._replace(
                log_w=jnp.where(params["resample"], 0.0, particles.log_w)
            )
            moved = jax.vmap(lambda k, p: move(k, p, t, s, index, final))(keys, particles)
            if carry_x0_prev:
                moved = moved._replace(x0_prev=particles.x0_hat)
            return moved, None

        def weight_fn(particles):
            incr = jnp.where(jnp.isnan(particles.incr), -jnp.inf, particles.incr)
            return particles.log_w + incr

        new_state, info = smc_base.step(key, state, update_fn, weight_fn, resample_fn)
        num_nan = jnp.sum(jnp.isnan(new_state.particles.incr))
        ess = 1.0 / jnp.sum(new_state.weights**2)
        step_info = SMCInfo(ess, do_resample, info.log_likelihood_increment, num_nan)
        _progress.tick(index)
        return (new_state, log_z + info.log_likelihood_increment), step_info

    keys = jax.random.split(rng_key, num_steps)
    inputs = (keys, times[:-1], times[1:], jnp.arange(num_steps))
    head = jax.tree.map(lambda a: a[:-1], inputs)
    last = jax.tree.map(lambda a: a[-1], inputs)
    carry, infos = jax.lax.scan(lambda c, i: one_step(c, i, False), (state, log_z0), head)
    (state, log_z), last_info = one_step(carry, last, True)
    infos = jax.tree.map(lambda a, b: jnp.concatenate([a, b[None]]), infos, last_info)
    return state, log_z, infos


def smc_output(rng_key, state, log_z, infos, *, resampling, nfe: int, vjp: int):
    """Equally weighted draws (a final resampling of the weighted particles) and the diagnostics
    of one run, as a :class:`~pp_diffusion.samplers.SamplerOutput`."""
    num = state.weights.shape[0]
    log_weights = jnp.log(state.weights)
    degenerate = ~jnp.all(jnp.isfinite(state.weights)) | ~jnp.isfinite(log_z)
    safe_weights = jnp.where(degenerate, jnp.full_like(state.weights, 1.0 / num), state.weights)
    k_resample, k_order = jax.random.split(rng_key)
    # resampling returns sorted indices: shuffle them so that copies of one particle are not
    # adjacent draws (ArviZ's autocorrelation-based ESS and R-hat read draw order)
    idx = jax.random.permutation(k_order, resampling(k_resample, safe_weights, num))
    draws = state.particles.x[idx]
    # unweighted methods (DPS) can diverge without any weight noticing: flag non-finite draws too
    degenerate = degenerate | ~jnp.all(jnp.isfinite(draws))
    draws = jnp.where(degenerate, jnp.nan, draws)
    sample_stats = {
        "nfe": jnp.full((num,), nfe, jnp.int32),
        "vjp": jnp.full((num,), vjp, jnp.int32),
    }
    run_stats = {
        "log_evidence": jnp.where(degenerate, -jnp.inf, log_z),
        "final_log_weights": log_weights,
        "ess": infos.ess,
        "resampled": infos.resampled,
        "num_nan": infos.num_nan,
        "degenerate": degenerate,
        "final_ess": infos.ess[-1],
        "low_ess": ~degenerate & (infos.ess[-1] < max(2.0, LOW_ESS_FRACTION * num)),
    }
    return draws, sample_stats, run_stats


STAT_DIMS = {
    "final_log_weights": ("particle",),
    "ess": ("step",),
    "resampled": ("step",),
    "num_nan": ("step",),
}


def fk_sampler(name: str, moves: Callable, *, num_particles: int, nfe_per_step: int, vjp_per_step: int,
               resampling: Callable, ess_threshold: float, resample_every: int | None = None,
               data_var: float | None = None, weighted: bool = True,
               extra_settings: dict | None = None) -> Sampler:
    """A :class:`~pp_diffusion.Sampler` running :func:`run_smc` with the moves ``moves(fk)``.

    ``nfe_per_step`` / ``vjp_per_step`` count network evaluations and VJPs per particle for each
    step after the first evaluation at t_N (which costs one of each kind the method uses); the
    step into clean data reuses the cached x0 prediction and costs none. ``weighted=False`` is
    for methods whose particles carry no weights (DPS, SVDD): uniform weights, NaN log-evidence.
    """
    _check_positive_int(num_particles, "num_particles")
    if not callable(resampling):
        raise TypeError(
            "resampling must be a function (rng_key, weights, num_samples) -> indices, e.g. "
            f"pp_diffusion.smc.resampling.systematic; got {resampling!r}"
        )
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold}")
    if resample_every is not None:
        _check_positive_int(resample_every, "resample_every")
    if data_var is not None and not float(data_var) > 0:
        raise ValueError(f"data_var must be positive, got {data_var!r}")
    settings = dict(num_particles=num_particles, resampling=getattr(resampling, "__name__", repr(resampling)),
                    ess_threshold=ess_threshold, resample_every=str(resample_every), **(extra_settings or {}))

    def setup(program, info, data):
        return feynman_kac(program, info, data, data_var=data_var)

    def run(rng_key, fk: FeynmanKacModel, *, moves=moves) -> SamplerOutput:
        init_particle, move = moves(fk) if callable(moves) else moves
        k_init, k_run, k_out = jax.random.split(rng_key, 3)
        x_T = fk.prior.initial_noise(k_init, num_particles)
        state, log_z, infos = run_smc(
            k_run, x_T=x_T, times=fk.prior.times, init_particle=init_particle, move=move,
            resampling=resampling, ess_threshold=ess_threshold, resample_every=resample_every,
            weighted=weighted, carry_x0_prev=fk.prior.order == 2,
        )
        steps = fk.prior.steps
        per_call = fk.prior.model.nfe_per_call  # e.g. 2 under classifier-free guidance
        nfe = (1 + nfe_per_step * (steps - 1)) * per_call
        vjp = 0 if vjp_per_step == 0 else (1 + vjp_per_step * (steps - 1)) * per_call
        draws, sample_stats, run_stats = smc_output(k_out, state, log_z, infos, resampling=resampling,
                                                    nfe=nfe, vjp=vjp)
        if not weighted:
            run_stats["log_evidence"] = jnp.full((), jnp.nan)
        posterior = {fk.site: draws, **jax.vmap(fk.deterministic)(draws)}
        return SamplerOutput(posterior, sample_stats, run_stats)

    return Sampler(name, settings, setup, run, STAT_DIMS)
