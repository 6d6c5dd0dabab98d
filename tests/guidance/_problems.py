"""Exact Gaussian-mixture problems shared by the particle-guidance tests: the 25-component mixture of the
benchmarks (``benchmarks/gmm_posterior.py``) and rings of equal-width modes, with their programs."""

from __future__ import annotations

import functools

import numpy as np
import numpyro

import pp_diffusion as ppd


def mixture_means(d: int) -> np.ndarray:
    """The 25 means of the benchmark mixture, mu = (-8i, -8j, -8i, -8j, ...) for i, j in -2..2."""
    ij = np.array([(-8.0 * i, -8.0 * j) for i in range(-2, 3) for j in range(-2, 3)])
    return np.tile(ij, (1, d // 2))


def mixture_weights(d: int) -> np.ndarray:
    """The benchmark's weights (problem seed 0): squared standard normals, normalised."""
    w = np.random.default_rng([0, d, 0, 1]).standard_normal(25) ** 2
    return w / w.sum()


@functools.cache
def grid_mixture(d: int) -> ppd.GaussianMixture:
    return ppd.GaussianMixture(mixture_weights(d), mixture_means(d), np.ones(25))


def ring_mixture(weights, radius: float = 3.0, std: float = 0.3) -> ppd.GaussianMixture:
    """Modes at angles 2 pi k / K on a circle of ``radius`` in 2-D, isotropic with standard deviation ``std``."""
    k = len(weights)
    angles = 2 * np.pi * np.arange(k) / k
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return ppd.GaussianMixture(np.asarray(weights, np.float64), means, np.full(k, std**2))


def program_of(prior):
    def program():
        numpyro.sample("x", prior)

    return program


def chain_program(mixture, steps: int = 100, schedule=None, **prior_kwargs):
    """The program sampling ``mixture``'s exact-score reverse chain (VPLinear, eps parameterisation by default)."""
    model = mixture.diffusion_model(ppd.schedules.VPLinear() if schedule is None else schedule, "eps")
    return program_of(ppd.DiffusionPrior(model, steps=steps, **prior_kwargs))
