"""Particle guidance (Corso et al., "Particle Guidance: non-I.I.D. Diverse Sampling with Diffusion
Models", ICLR 2024): the n draws of one chain move together and repel each other.

Each particle's score gets the gradient of the joint potential Phi = sum_{i<j} k(z_i, z_j)
(:mod:`pp_diffusion.guidance._repulsion`),

.. math::  s_i(X_t) = \\nabla \\log p_t(x_i) - \\mathrm{strength}\\, \\nabla_{x_i} \\Phi(z_1, \\dots, z_n),

with z_i = x_i (pixel space) or z_i = f(xhat_0(x_i)) for a feature function f (the gradient then
goes through the network: one VJP per step), while sigma_t / alpha_t >= ``active_above`` (the
reference's default, 1: high noise only). Program observations add the DPS term of
:func:`pp_diffusion.guidance.dps` (its normalised step for linear-Gaussian observations, else
``scale`` grad log G(xhat_0)), so diverse posterior draws are one sampler.

Every integrator reads the model only through xhat_0, and a score shift g is the data-prediction
shift sigma_t^2 g / alpha_t (s = (alpha xhat_0 - x) / sigma^2): the guided prediction is computed once
per step for the whole group and handed to the prior's own integrator step, so DDIM, DDPM,
DPM-Solver++ and UniPC chains, deterministic or stochastic, all take the guidance unchanged. DPS's
normalised step is a shift d of the DDIM(eta) kernel mean (eta 0 for other integrators); it enters as
the score term d / k_t, k_t the coefficient of the score in that mean, which moves a DDIM mean by d.

Particle guidance defines no target: the joint law of a group changes every particle's marginal in
a way no weight corrects (:func:`pp_diffusion.smc.repulsive` samples a defined joint target
instead). A chain of :func:`pp_diffusion.infer` is one group: ``posterior`` has dims (chain = group,
draw = member of the group, ...).
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Callable

import jax
import jax.numpy as jnp

from pp_diffusion.guidance._dps import residual_norm
from pp_diffusion.guidance._repulsion import joint_potential
from pp_diffusion.integrators._ddim import score_coefficient
from pp_diffusion.program import feynman_kac
from pp_diffusion.samplers import Sampler, SamplerOutput, _check_positive_int, draw_checks

__all__ = ["particle"]


class _Prediction:
    """A network that returns a data prediction made beforehand (the guided xhat_0 of one particle)."""

    def __init__(self, x0):
        self.x0 = x0

    def __call__(self, x, t):
        return self.x0


jax.tree_util.register_pytree_node(_Prediction, lambda p: ((p.x0,), None), lambda _, c: _Prediction(*c))


def _check_real(value, name, *, positive=False):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not (
            float(value) > 0 if positive else float(value) >= 0):
        raise ValueError(f"{name} must be a {'positive' if positive else 'non-negative'} number, got {value!r}")
    return float(value)


def _check_features(features, model):
    """The feature function's output for one sample of the model's event shape must be a vector."""
    try:
        out = jax.eval_shape(features, jax.ShapeDtypeStruct(model.event_shape, jnp.float32))
    except Exception as err:  # noqa: BLE001 - any failure to trace it is the user's function's
        raise ValueError(f"features must map one sample of shape {model.event_shape} (an xhat_0) to a feature "
                         f"vector; calling it failed: {err}") from err
    shape = getattr(out, "shape", None)
    if shape is None or len(shape) != 1 or shape[0] < 1:
        raise ValueError(f"features must return a 1-D feature vector for one sample of shape {model.event_shape}, "
                         f"got output {out!r}")


def particle(num_particles: int, strength: float, *, features: Callable | None = None,
             kernel: Callable | None = None, bandwidth: float | None = None, active_above: float = 1.0,
             scale: float = 1.0, normalize: bool | None = None) -> Sampler:
    """Particle guidance: each chain is a group of ``num_particles`` draws that repel each other.

    Parameters
    ----------
    num_particles
        n >= 2, the size of a group (one chain).
    strength
        The coefficient of -grad_{x_i} Phi in each particle's score (>= 0; 0 gives i.i.d. draws of
        the prior's chain, or DPS draws for a program with observations).
    features
        ``features(x0) -> (k,)`` for one unbatched sample: the repulsion acts on f(xhat_0(x_t)) (e.g. the
        zoo classifier's penultimate ``features``), through one VJP per step. None: on x_t itself.
    kernel
        A pair potential ``kernel(a, b) -> scalar`` on two points of the repulsion space; None: the RBF
        exp(-||a - b||^2 / h).
    bandwidth
        The RBF's h (> 0); None: the median heuristic at every step (:mod:`~pp_diffusion.guidance._repulsion`).
    active_above
        The repulsion acts while sigma_t / alpha_t >= this (0: at every step).
    scale, normalize
        The DPS step for the program's observations (:func:`pp_diffusion.guidance.dps`).

    Returns
    -------
    A :class:`~pp_diffusion.Sampler`. It runs the prior's own integrator (any ``DiffusionPrior``,
    deterministic or stochastic, classifier-free guided or not); ``sample_stats`` counts ``nfe`` (the
    chain's) and ``vjp`` (steps with a VJP: observations, or feature-space repulsion while active);
    ``diagnostics`` has the bandwidth of each step (``bandwidth``, NaN for a custom ``kernel``) and
    whether the repulsion acted (``repulsion_active``). Cost of the kernel: O(n^2 d) per step.
    """
    num_particles = _check_positive_int(num_particles, "num_particles")
    if num_particles < 2:
        raise ValueError(f"num_particles must be at least 2 (particles of a group repel each other), got {num_particles}")
    strength = _check_real(strength, "strength")
    if bandwidth is not None:
        bandwidth = _check_real(bandwidth, "bandwidth", positive=True)
    active_above = _check_real(active_above, "active_above")
    scale = _check_real(scale, "scale")
    if features is not None and not callable(features):
        raise TypeError(f"features must be a function x0 -> feature vector, got {type(features).__name__}")
    if kernel is not None and not callable(kernel):
        raise TypeError(f"kernel must be a function (a, b) -> scalar, got {type(kernel).__name__}")
    if normalize is not None and not isinstance(normalize, bool):
        raise TypeError(f"normalize must be True, False or None, got {normalize!r}")
    n = num_particles

    def setup(program, info, data):
        fk = feynman_kac(program, info, data, stochastic=False)
        if features is not None:
            _check_features(features, fk.prior.model)
        observed = bool(info.observed)
        normed = observed and (fk.all_linear_gaussian if normalize is None else normalize)
        if normed and not fk.all_linear_gaussian:
            raise ValueError("particle(normalize=True) needs linear-Gaussian observations; use normalize=False")
        obs_term = None
        if observed:
            obs_term = residual_norm(fk.linear_gaussian) if normed else fk.log_g
        return fk, obs_term, normed

    def run(rng_key, context) -> SamplerOutput:
        fk, obs_term, normed = context
        prior = fk.prior
        model, integrator, times = prior.model, prior.integrator, prior.times
        sched = model.schedule
        eta = 0.0 if prior.eta is None else prior.eta
        num_steps = times.shape[0] - 1
        k_init, k_run, k_sites = jax.random.split(rng_key, 3)
        x_T = prior.initial_noise(k_init, n)

        def repulsion(z):
            return joint_potential(z, kernel, bandwidth)

        def guided(X, t, s, final):
            """The guided xhat_0 of the group, the bandwidth, whether the repulsion acted, and whether a VJP ran."""
            alpha, sigma = sched.alpha(t), sched.sigma(t)
            active = (sigma >= active_above * alpha) & ~final & (strength > 0)
            c_pg = jnp.where(active, strength, 0.0)
            c_obs = jnp.asarray(scale)
            if normed:  # the mean shift d = 2 scale grad(-||r||) as the score term d / k_t
                c_obs = 2.0 * scale / jnp.where(final, 1.0, score_coefficient(sched, t, s, eta, prior.x0_var))
            denoise = jax.vmap(lambda x: model.denoise(x, t))
            nan = jnp.full((), jnp.nan, X.dtype)

            def through_x0(x0):  # the part of the guidance taken through the network, and the bandwidth
                total, h = jnp.zeros(()), nan
                if obs_term is not None:
                    total = total + c_obs * jnp.sum(jax.vmap(obs_term)(x0))
                if features is not None:
                    phi, h = repulsion(jax.vmap(features)(x0))
                    total = total - c_pg * phi
                return total, h

            def with_vjp(X):
                x0, pull = jax.vjp(denoise, X)
                cot, h = jax.grad(through_x0, has_aux=True)(x0)
                return x0, pull(cot)[0], h

            vjp_now = jnp.asarray(False)
            if obs_term is not None or features is not None:
                vjp_now = ~final & ((obs_term is not None) | active)
                x0, grad, h = jax.lax.cond(vjp_now, with_vjp, lambda X: (denoise(X), jnp.zeros_like(X), nan), X)
            else:
                x0, grad, h = denoise(X), jnp.zeros_like(X), nan
            if features is None:  # pixel space: the kernel's gradient needs no network
                phi_grad, h = jax.grad(repulsion, has_aux=True)(X)
                grad = grad - c_pg * phi_grad
            return x0 + (sigma**2 / alpha) * grad, h, active, vjp_now

        def body(state, inputs):
            key, t, s, index = inputs
            final = index == num_steps - 1
            x0g, h, active, vjp_now = guided(state.x, t, s, final)

            def one(k, st, x0):
                m = dataclasses.replace(model, network=_Prediction(x0), parameterization="x0", data_range=None,
                                        data_distribution=None)
                return integrator.step(k, st, m, t, s)[0]

            state = jax.vmap(one)(jax.random.split(key, n), state, x0g)
            return state, (h, active, vjp_now)

        keys = jax.random.split(k_run, num_steps)
        inputs = (keys, times[:-1], times[1:], jnp.arange(num_steps))
        state, (h, active, vjp_steps) = jax.lax.scan(body, jax.vmap(integrator.init)(x_T), inputs)
        draws = state.x
        per_call = model.nfe_per_call
        nfe = jnp.full((n,), prior.nfe, jnp.int32)
        vjp = jnp.full((n,), jnp.sum(vjp_steps) * per_call, jnp.int32)
        posterior = {fk.site: draws, **jax.vmap(fk.deterministic)(jax.random.split(k_sites, n), draws)}
        run_stats = {"bandwidth": h, "repulsion_active": active, **draw_checks(model, draws)}
        return SamplerOutput(posterior, {"nfe": nfe, "vjp": vjp}, run_stats)

    settings = {"num_particles": n, "strength": strength, "features": "none" if features is None else "given",
                "kernel": "rbf" if kernel is None else "given", "bandwidth": "median" if bandwidth is None else bandwidth,
                "active_above": active_above, "scale": scale, "normalize": str(normalize)}
    return Sampler("particle_guidance", settings, setup, run,
                   {"bandwidth": ("step",), "repulsion_active": ("step",)},
                   twists=lambda kinds: {k: "dps" for k in kinds})
