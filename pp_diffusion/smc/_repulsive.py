"""Repulsive groups with a defined joint target: SMC over groups of n draws.

Particle guidance (:func:`pp_diffusion.guidance.particle`) changes the law of every member of a
group in a way no weight accounts for. This sampler targets a joint law instead,

.. math::  \\pi(x_1, \\dots, x_n) \\propto \\prod_i p_\\theta(x_i)\\, \\exp\\Big(-\\gamma \\sum_{i<j} k(x_i, x_j)\\Big),

with k the RBF exp(-||a - b||^2 / h) of a fixed bandwidth h (a heuristic bandwidth would make the
target depend on the draws) or any pair potential, on x_0 or on features f(x_0). One SMC particle is
a whole group: the product model p_theta^{(x) n} runs the prior's DDIM(eta) chain on every member,
the twist is the repulsion at the members' Tweedie estimates,
log h_t(X_t) = -gamma Phi(xhat_0(x_1), ..., xhat_0(x_n)), and the proposal is TDS's (Wu et al.,
2023): the prior kernel with the score shifted by grad log h_t, which is the particle-guidance term
taken through xhat_0. The weights h_s p / (h_t q) correct it, and at t = 0 the twist is the
potential itself, so the draws are from pi and the product of mean weights estimates

.. math::  Z = E_{p_\\theta^{\\otimes n}}\\big[\\exp(-\\gamma \\Phi(x_1, \\dots, x_n))\\big]

(``diagnostics.log_marginal_likelihood``). Each draw of the DataTree is a group: ``posterior`` has
dims (chain, draw, member, ...). Programs with observations are refused (the per-member likelihood
of a group draw is not a site of the program); condition through particle guidance instead.
"""

from __future__ import annotations

import dataclasses
import numbers
from typing import Callable

import blackjax.smc.resampling as resampling_lib
import equinox as eqx
import jax
import jax.numpy as jnp

from pp_diffusion import potentials
from pp_diffusion.guidance._repulsion import joint_potential, pair_values
from pp_diffusion.prior import DiffusionPrior
from pp_diffusion.program import FeynmanKacModel, feynman_kac
from pp_diffusion.samplers import Sampler, _check_positive_int
from pp_diffusion.smc._base import fk_sampler
from pp_diffusion.smc._twisted import chain_moves

__all__ = ["repulsive"]


class GroupNetwork(eqx.Module):
    """The network of one member applied to every member of a group ``(n, *event)``."""

    network: Callable

    @property
    def evaluations_per_call(self):
        return getattr(self.network, "evaluations_per_call", 1)

    def __call__(self, x, t):
        return jax.vmap(lambda xi: self.network(xi, t))(x)


def group_prior(prior: DiffusionPrior, n: int) -> DiffusionPrior:
    """The product prior of n independent members: the same chain on ``(n, *event)``."""
    model = prior.model
    group = dataclasses.replace(model, network=GroupNetwork(model.network), event_shape=(n, *model.event_shape),
                                data_distribution=None, name=f"{model.name}^{n}")
    return DiffusionPrior(group, prior.steps, grid=prior.times, eta=prior.eta, x0_var=prior.x0_var, order=prior.order)


def repulsive(num_particles: int, group_size: int, gamma: float, *, bandwidth: float | None = None,
              kernel: Callable | None = None, features: Callable | None = None,
              resampling: Callable = resampling_lib.systematic, ess_threshold: float = 0.5) -> Sampler:
    """SMC over ``num_particles`` groups of ``group_size`` draws targeting
    prod_i p_theta(x_i) exp(-gamma sum_{i<j} k(z_i, z_j)) (module docstring), z = x_0 or ``features(x_0)``.

    ``bandwidth``: the RBF's h (> 0, required unless ``kernel`` is given); ``kernel(a, b) -> scalar``:
    another pair potential. ``gamma`` >= 0 (0: i.i.d. groups, log Z = 0). Costs one network evaluation
    and one VJP per member and step; the repulsion O(n^2 d) per group and step.
    """
    num_particles = _check_positive_int(num_particles, "num_particles")
    group_size = _check_positive_int(group_size, "group_size")
    if group_size < 2:
        raise ValueError(f"group_size must be at least 2 (the members of a group repel each other), got {group_size}")
    if isinstance(gamma, bool) or not isinstance(gamma, numbers.Real) or not float(gamma) >= 0:
        raise ValueError(f"gamma must be a non-negative number, got {gamma!r}")
    gamma = float(gamma)
    if kernel is None:
        if bandwidth is None:
            raise ValueError("bandwidth is required for the RBF kernel (a fixed h > 0: a heuristic bandwidth would "
                             "make the target depend on the draws), or give kernel=")
        if isinstance(bandwidth, bool) or not isinstance(bandwidth, numbers.Real) or not float(bandwidth) > 0:
            raise ValueError(f"bandwidth must be a positive number, got {bandwidth!r}")
        bandwidth = float(bandwidth)
    elif not callable(kernel):
        raise TypeError(f"kernel must be a function (a, b) -> scalar, got {type(kernel).__name__}")
    if features is not None and not callable(features):
        raise TypeError(f"features must be a function x0 -> feature vector, got {type(features).__name__}")
    n = group_size

    def log_repulsion(X0):
        z = X0 if features is None else jax.vmap(features)(X0)
        return -gamma * joint_potential(z, kernel, bandwidth)[0]

    def widened_twist(x_t, X0_hat, t, alpha, sigma, r2):
        """-gamma sum_{i<j} E[k(x_i, x_j)] for x_i ~ N(xhat_0(x_i), r_t^2 I) independent: the RBF of
        bandwidth h + 4 r_t^2 times (h / (h + 4 r_t^2))^(d/2), exact at r_t = 0."""
        width = bandwidth + 4.0 * r2
        d = X0_hat[0].size
        values, _ = pair_values(X0_hat, None, width)
        return -gamma * (bandwidth / width) ** (d / 2) * jnp.sum(values)

    def setup(program, info, data):
        if info.observed:
            raise ValueError(
                f"smc.repulsive samples groups from the prior's repulsive joint law and does not condition on "
                f"observations; the program observes {list(info.observed)}. Use guidance.particle for diverse "
                "posterior draws")
        fk = feynman_kac(program, info, data)
        if features is not None:
            from pp_diffusion.guidance._particle import _check_features

            _check_features(features, fk.prior.model)
        prior = group_prior(fk.prior, n)
        deterministic = lambda key, X: jax.vmap(fk.deterministic)(jax.random.split(key, n), X)
        if kernel is None and features is None:  # the twist's variance correction (module docstring)
            def log_h(x_t, X0_hat, t, alpha, sigma):
                return widened_twist(x_t, X0_hat, t, alpha, sigma, fk.final_var(t))

            potential = potentials.Potential(log_repulsion, log_h)
        else:
            potential = potentials.tweedie_lookahead(log_repulsion)
        return FeynmanKacModel(fk.site, prior, log_repulsion, potential, None, deterministic, fk.data_var)

    moves = lambda fk: chain_moves(fk, guided=True)
    sampler = fk_sampler("repulsive", moves, num_particles=num_particles, nfe_per_step=1, vjp_per_step=1,
                         resampling=resampling, ess_threshold=ess_threshold, setup=setup,
                         extra_settings={"group_size": n, "gamma": gamma, "bandwidth": str(bandwidth),
                                         "kernel": "rbf" if kernel is None else "given",
                                         "features": "none" if features is None else "given"})
    return sampler
