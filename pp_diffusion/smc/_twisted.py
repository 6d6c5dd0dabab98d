"""Bootstrap SMC, twisted SMC (TDS) and Feynman–Kac steering: one move, three settings.

All three propagate particles with the prior's DDIM(eta) kernel p(x_s | x_t) = N(m(x_t), c^2 I),
possibly shifted, and weight them with a twist h_t:

- ``bootstrap`` (SMCDiff-style; Trippe et al., 2022): q = p, h_t the program's twist;
- ``twisted`` (TDS; Wu et al., 2023): q = p with the score replaced by score + grad log h_t,
  i.e. the mean shifted by k_t grad log h_t(x_t), k_t = alpha_s sigma_t^2 / alpha_t -
  sigma_t sqrt(sigma_s^2 - c^2) (the coefficient of the score in m; for a second-order prior,
  whose m extrapolates xhat_0 through the particle's previous prediction ``x0_prev``, the same
  first-order k_t: the weight corrects any shift);
- ``fk_steering`` (Singhal et al., 2025): q = p, with r_t = log h_t(x_t) the program's twist
  (the reward of the Tweedie estimate, log G(xhat_0(x_t)), unless the observation is
  linear-Gaussian, where the variance-corrected form replaces it) and the
  potentials "diff" (h_t = exp(r_t)), "max" (exp(max_{u >= t} r_u)) or "sum" (exp(sum_{u >= t} r_u));
  the last step uses h_0 = G, which divides out the path's potentials so the target stays
  p_theta(x_0) G(x_0). Resampling at a fixed interval; the weights of skipped steps are carried
  (the reference implementation drops them, which biases it).
"""

from __future__ import annotations

import numbers
from typing import Callable

import blackjax.smc.resampling as resampling_lib
import jax
import jax.numpy as jnp

from pp_diffusion.integrators._base import half_log_snr
from pp_diffusion.integrators._ddim import kernel_moments, multistep_x0
from pp_diffusion.program import FeynmanKacModel
from pp_diffusion.samplers import Sampler
from pp_diffusion.smc import _base
from pp_diffusion.smc._augmented import augmented_moves
from pp_diffusion.smc._base import Particle, fk_sampler, gaussian_log_ratio

__all__ = ["bootstrap", "twisted", "fk_steering", "chain_moves"]


def prior_kernel(prior, p: Particle, t, s, index):
    """Mean and std of the prior's DDIM(eta) kernel from the particle's (x, t) to s, step ``index``
    (:func:`pp_diffusion.integrators._ddim.kernel_moments`, with the prior's ``x0_var``; at ``order=2`` the
    mean extrapolates from ``p.x0_prev``, made at the previous grid time and set by ``run_smc``), and k_t, the coefficient of
    the score in the first-order mean."""
    x0_pred = p.x0_hat
    if prior.order == 2:
        lam = lambda u: half_log_snr(prior.model, u)
        t_prev = prior.times[jnp.maximum(index - 1, 0)]  # = t at the first step: no extrapolation
        x0_pred = multistep_x0(p.x0_hat, p.x0_prev, lam(t_prev), lam(t), lam(s))
    return kernel_moments(prior.model.schedule, p.x, x0_pred, t, s, prior.eta, prior.x0_var)


def chain_moves(fk: FeynmanKacModel, *, guided: bool, guidance_scale: float = 1.0,
                path: str | None = None, weighted: bool = True, score_step: bool = True, lam: float = 1.0):
    """``init_particle``, ``move`` (and ``temper``, under adaptive tempering) for the methods above (and
    DPS: ``weighted=False``).

    Guided proposals shift the kernel mean by ``guidance_scale * k_t * grad log h_t(x_t)`` (a
    score term), or by ``guidance_scale * grad log h_t(x_t)`` when ``score_step`` is false (a
    plain gradient step, as DPS's normalised step). ``lam`` multiplies the intermediate twists (FK
    steering's lambda; the last step's G is untouched, so the target is too).

    The last step, into clean data, is the prior's (x_0 = xhat_0(x_t1), or N(xhat_0, Gamma_t1) when
    the prior has ``x0_var``; weight G / h_t1), except for weighted methods on programs with
    linear-Gaussian observations: there x_0 is drawn from the locally optimal proposal
    N(xhat_0(x_t1), r_t1^2 I) N(y; A x_0, Sigma_y) (normalised, closed form in the whitened SVD
    coordinates; r_t1^2 = ``fk.final_var(t1)``), with weight
    N(y; A xhat_0, Sigma_y + r_t1^2 A A^T) G_rest(x_0) / h_t1(x_t1) (G_rest: the other sites). A
    deterministic last step with a twist much wider than G along A (sigma_y below r_t1 s_i)
    leaves one particle and an evidence estimate thousands of nats low.

    Under adaptive tempering (``fk.potential.lookahead``) a particle's twist is
    lam * (fixed + lambda_t lookahead); ``evaluate`` leaves the parts apart and ``temper`` joins them at
    the lambda that :func:`~pp_diffusion.smc._base.run_smc` chooses. The guided proposal's gradient is
    taken at the previous step's lambda (it is known when x_s is evaluated; one VJP), which the weight
    corrects.
    """
    model, potential = fk.prior.model, fk.potential
    lg = fk.linear_gaussian if weighted else None
    tempering = potential.lookahead is not None and weighted
    start = -jnp.inf if path == "max" else 0.0

    def evaluate(x, t, aux_prev, first, lam_prev):
        alpha, sigma = model.schedule.alpha(t), model.schedule.sigma(t)

        def twist(y):
            x0 = model.denoise(y, t)
            fixed = potential.log_h(y, x0, t, alpha, sigma)
            if potential.lookahead is None:
                return lam * fixed, (x0, jnp.zeros(()), fixed)
            raw = potential.lookahead(x0)
            if not tempering:  # unweighted methods (DPS, SVDD) use the plain look-ahead
                return lam * (fixed + raw), (x0, jnp.zeros(()), fixed)
            return lam * (fixed + _base.tempered_value(lam_prev, raw)), (x0, raw, lam * fixed)

        if guided:
            (value, (x0_hat, raw, fixed)), grad = jax.value_and_grad(twist, has_aux=True)(x)
        else:
            value, (x0_hat, raw, fixed) = twist(x)
            grad = jnp.zeros_like(x)
        if tempering:  # the twist's parts apart, for temper(): fixed in log_h, the path so far in aux
            return Particle(x, x0_hat, fixed, grad, aux_prev, jnp.zeros(()), jnp.zeros(()), lookahead=raw)
        if path == "max":
            aux = jnp.where(first, value, jnp.maximum(aux_prev, value))
        elif path == "sum":
            aux = jnp.where(first, value, aux_prev + value)
        else:
            aux = value
        return Particle(x, x0_hat, aux, grad, aux, jnp.zeros(()), jnp.zeros(()))

    def temper(p: Particle, lam_t):
        r = p.log_h + lam * _base.tempered_value(lam_t, p.lookahead)
        aux = jnp.maximum(p.aux, r) if path == "max" else p.aux + r if path == "sum" else r
        return p._replace(log_h=aux, aux=aux, incr=p.incr + aux, lam=lam_t)

    def init_particle(x_T):  # unevaluated: run_smc's first step (index -1) evaluates it
        zeros = jnp.zeros(())
        p = Particle(x_T, jnp.zeros_like(x_T), zeros, jnp.zeros_like(x_T), jnp.asarray(start), zeros, zeros)
        return p._replace(lam=zeros) if tempering else p

    def final_particle(x_s):
        return Particle(x_s, x_s, fk.log_g(x_s), jnp.zeros_like(x_s), jnp.zeros(()), jnp.zeros(()), jnp.zeros(()))

    def move(rng_key, p: Particle, t, s, index, final: bool, fixed=None):
        # fixed = (x, flag): where flag, the particle moves to the given x instead of a draw, weighted as
        # the move to x (conditional SMC's retained path, pp_diffusion/pmcmc/_csmc.py)
        given = (lambda drawn: drawn) if fixed is None else (lambda drawn: jnp.where(fixed[1], fixed[0], drawn))
        mean_p, std, k = prior_kernel(fk.prior, p, t, s, index)
        if final and lg is not None:  # locally optimal Gaussian proposal (see the docstring); h_0 = G
            flat, log_norm = lg.condition(rng_key, mean_p.reshape(-1), fk.final_var(t))
            x_s = given(flat.reshape(p.x.shape))
            new = final_particle(x_s)._replace(aux=p.aux, log_w=p.log_w, lam=p.lam)
            if fk.log_g_rest is not None:
                log_norm = log_norm + fk.log_g_rest(x_s)
            return new._replace(incr=log_norm - p.log_h)
        if final:  # into clean data: x_0 = xhat_0(x_t1), or N(xhat_0, Gamma_t1) with x0_var; h_0 = G
            x_s = mean_p
            if fk.prior.x0_var is not None:
                x_s = mean_p + std * jax.random.normal(rng_key, p.x.shape, p.x.dtype)
            x_s = given(x_s)
            new = final_particle(x_s)._replace(aux=p.aux, log_w=p.log_w, lam=p.lam)
            log_q_ratio = 0.0
        else:  # index -1 evaluates the initial particle (x_s = x_T, no proposal); the proposal is then unused
            first = index < 0
            shift = guidance_scale * (k if score_step else 1.0) * p.grad_log_h
            mean_q = mean_p + shift if guided else mean_p
            noise = jax.random.normal(rng_key, p.x.shape, p.x.dtype)
            if fixed is not None:  # the noise that moves mean_q to the given x (std > 0: a stochastic chain)
                noise = jnp.where(fixed[1], (fixed[0] - mean_q) / std, noise)
            x_s = jnp.where(first, p.x, given(mean_q + std * noise))
            new = evaluate(x_s, s, p.aux, first, p.lam)._replace(log_w=p.log_w, lam=p.lam)
            log_q_ratio = jnp.where(first, 0.0, gaussian_log_ratio(noise, shift, std)) if guided else 0.0
            if tempering:  # temper() adds the new twist once lambda is chosen
                z = jax.random.normal(jax.random.fold_in(rng_key, 1), p.x.shape, p.x.dtype)
                ahead = potential.lookahead(new.x0_hat + jnp.sqrt(fk.final_var(s)) * z)
                return new._replace(incr=log_q_ratio - p.log_h, lookahead_x0=ahead)
        incr = new.log_h - p.log_h + log_q_ratio if weighted else jnp.zeros(())
        return new._replace(incr=incr)

    if tempering:
        return init_particle, move, temper
    return init_particle, move


def bootstrap(num_particles: int = 1000, *, resampling: Callable = resampling_lib.systematic,
              ess_threshold: float = 0.5, data_var: float | None = None) -> Sampler:
    """Bootstrap SMC: prior proposals, weights h_s(x_s) / h_t(x_t) (SMCDiff; Trippe et al., 2022).

    Resamples (with ``resampling``, any of ``blackjax.smc.resampling``) when the ESS falls below
    ``ess_threshold * num_particles``. ``data_var`` overrides the model's data variance in the
    variance-corrected Gaussian twist of linear-Gaussian observations
    (:func:`pp_diffusion.potentials.linear_gaussian`). Also conditions phase-space priors
    (:mod:`pp_diffusion.phase_space`): the particles are z = [x; m], moved by the prior's stochastic
    splitting integrator (``pp_diffusion/smc/_augmented.py``).
    """

    def moves(fk):
        if fk.prior.augmented:
            return augmented_moves(fk)
        return chain_moves(fk, guided=False)

    return fk_sampler("bootstrap", moves, num_particles=num_particles, nfe_per_step=1, vjp_per_step=0,
                      resampling=resampling, ess_threshold=ess_threshold, data_var=data_var, augmented=True)


def twisted(num_particles: int = 1000, *, resampling: Callable = resampling_lib.systematic,
            ess_threshold: float = 0.5, data_var: float | None = None) -> Sampler:
    """Twisted diffusion sampler, TDS (Wu et al., NeurIPS 2023).

    Proposal: the prior kernel with the score replaced by score + grad log h_t(x_t); weights
    h_s(x_s) p(x_s | x_t) / (h_t(x_t) q(x_s | x_t)). Costs one network evaluation and one VJP
    per step and particle.
    """
    moves = lambda fk: chain_moves(fk, guided=True)
    return fk_sampler("twisted", moves, num_particles=num_particles, nfe_per_step=1, vjp_per_step=1,
                      resampling=resampling, ess_threshold=ess_threshold, data_var=data_var)


def fk_steering(num_particles: int = 1000, *, potential: str = "max", lam: float = 1.0,
                resample_every: int | None = 5, resampling: Callable = resampling_lib.systematic,
                ess_threshold: float = 0.5) -> Sampler:
    """Feynman–Kac steering (Singhal et al., 2025) with r_t = ``lam`` times the program's twist log h_t(x_t).

    ``potential``: "diff", "max" or "sum" (see the module docstring). ``lam`` is the paper's lambda on
    the intermediate potentials exp(lam r_t); the last step divides them out, so the target stays the
    program's p_theta(x_0) G(x_0) whatever ``lam`` (to tilt the target by exp(lam r), write the factor
    ``numpyro.factor("r", lam * r(x))`` in the program). ``resample_every``: resample on this fixed
    interval of steps (the paper's choice); ``None`` resamples adaptively when the ESS drops under
    ``ess_threshold * num_particles``.
    """
    if potential not in ("diff", "max", "sum"):
        raise ValueError(f"potential must be 'diff', 'max' or 'sum', got {potential!r}")
    if isinstance(lam, bool) or not isinstance(lam, numbers.Real) or not float(lam) >= 0:
        raise ValueError(f"lam must be a non-negative number, got {lam!r}")
    moves = lambda fk: chain_moves(fk, guided=False, path=None if potential == "diff" else potential,
                                   lam=float(lam))
    return fk_sampler("fk_steering", moves, num_particles=num_particles, nfe_per_step=1, vjp_per_step=0,
                      resampling=resampling, ess_threshold=ess_threshold, resample_every=resample_every,
                      extra_settings={"potential": potential, "lam": float(lam)})
