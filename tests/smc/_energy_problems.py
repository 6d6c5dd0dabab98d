"""Energy targets with exact answers on the Gaussian mixture: products (closed form), tempering and guidance
(2-D quadrature). Each :class:`EnergyProblem` has a program whose diffusion site is the composed prior, the
exact log Z = log int gamma_0 and exact draws of gamma_0 / Z."""

from __future__ import annotations

from typing import Callable, NamedTuple

import jax
import numpy as np
import numpyro

import pp_diffusion as ppd

from ._conditioning import _mixture_sampler, _quadrature
from ._problems import GMM

STEPS = 100
SCHEDULE = ppd.schedules.ddpm_linear()

GA2 = ppd.GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5])
GB2 = ppd.GaussianMixture([0.3, 0.7], [[0.0, -1.0], [2.0, 1.0]], [1.0, 0.6])
_rng = np.random.default_rng(15)
GA8 = ppd.GaussianMixture([1.0, 1.0, 2.0], 1.5 * _rng.normal(size=(3, 8)), 0.5 + _rng.random((3, 8)))
GB8 = ppd.GaussianMixture([2.0, 1.0], 1.5 * _rng.normal(size=(2, 8)), 0.5 + _rng.random((2, 8)))
GROUPS = np.array([0, 0, 1])  # GMM's components 0 and 1 are class 0


class EnergyProblem(NamedTuple):
    name: str
    program: Callable
    log_z: float
    sample: Callable  # (rng_key, n) -> exact draws (n, d)


def prior(mixture: ppd.GaussianMixture, steps: int = STEPS):
    return ppd.DiffusionPrior(mixture.diffusion_model(SCHEDULE), steps=steps)


def _program(energy_prior):
    def program():
        numpyro.sample("x", energy_prior)

    return program


def product(dim: int, steps: int = STEPS) -> EnergyProblem:
    a, b = (GA2, GB2) if dim == 2 else (GA8, GB8)
    exact, log_z = a.product(b)
    return EnergyProblem(f"product_d{dim}", _program(ppd.product(prior(a, steps), prior(b, steps))), log_z,
                         _mixture_sampler(exact))


def _log_p(mixture):
    return lambda xx: np.asarray(mixture.log_prob(np.asarray(xx, np.float32)), np.float64)


def temper(beta: float, steps: int = STEPS) -> EnergyProblem:
    log_p = _log_p(GMM)
    log_z, sample = _quadrature(GMM, lambda xx: (beta - 1.0) * log_p(xx))
    return EnergyProblem(f"temper_{beta:g}", _program(ppd.temper(prior(GMM, steps), beta)), log_z, sample)


def guided(w: float, steps: int = STEPS) -> EnergyProblem:
    cond, _ = GMM.condition_on_group(GROUPS, 0)
    log_p, log_c = _log_p(GMM), _log_p(cond)
    log_z, sample = _quadrature(GMM, lambda xx: w * (log_c(xx) - log_p(xx)))
    return EnergyProblem(f"guided_{w:g}", _program(ppd.guided(prior(GMM, steps), prior(cond, steps), w)), log_z,
                         sample)


PROBLEMS = {
    "product_d2": lambda: product(2),
    "product_d8": lambda: product(8),
    "temper_0.5": lambda: temper(0.5),
    "temper_2": lambda: temper(2.0),
    "temper_4": lambda: temper(4.0),
    "guided_2": lambda: guided(2.0),
    "guided_4": lambda: guided(4.0),
}


def run(problem: EnergyProblem, sampler, rng_key, num_chains=4):
    """``(log Z errors per chain, draws per chain (chains, N, d), DataTree)``."""
    idata = ppd.infer(problem.program, sampler, rng_key, num_chains=num_chains)
    log_z = np.asarray(idata.diagnostics["log_marginal_likelihood"].values, np.float64)
    return log_z - problem.log_z, np.asarray(idata.posterior["x"].values, np.float64), idata


def draws_key(problem: EnergyProblem, n: int):
    return jax.random.key(7 * n + len(problem.name))
