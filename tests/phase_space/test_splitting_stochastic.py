"""Stochastic splitting integrators against exact samples of the augmented mixture at t_min:
the sliced distance (64 random directions, 1-D W2 by sorted quantiles) falls with NFE and at 100 NFE
is within a few times the two-exact-sample floor."""

import functools

import jax
import jax.numpy as jnp
import pytest

from pp_diffusion import GaussianMixture
from pp_diffusion.phase_space import (
    PSLD,
    AugmentedGaussianMixture,
    conjugate_oba,
    euler_maruyama,
    oba,
    reduced_oba,
    sscs,
    time_grid,
)

from ._helpers import run

SDE = PSLD()


_run = run


def _sliced(a, b, key, n_dirs=64):
    dirs = jax.random.normal(key, (a.shape[1], n_dirs))
    dirs = dirs / jnp.linalg.norm(dirs, axis=0)
    pa, pb = jnp.sort(a @ dirs, axis=0), jnp.sort(b @ dirs, axis=0)
    return float(jnp.sqrt(jnp.mean((pa - pb) ** 2)))


STOCHASTIC = {
    "euler_maruyama": euler_maruyama,
    "sscs": sscs,
    "oba": oba,
    "reduced_oba": reduced_oba,
    "reduced_oba_eta0": functools.partial(reduced_oba, position_noise=0.0),
    "conjugate_oba": conjugate_oba,
    "conjugate_oba_lam": functools.partial(conjugate_oba, lam=0.5),
}


@functools.cache
def _problem():
    mix = GaussianMixture([0.4, 0.6], [[-1.5, 0.5], [1.0, -1.0]], [0.2, 0.3])
    aug = AugmentedGaussianMixture(mix, SDE)
    n, t_min = 2000, 0.05
    z_T = jax.vmap(lambda k: SDE.prior_sample(k, (2,)))(jax.random.split(jax.random.PRNGKey(0), n))
    exact = aug.sample(jax.random.PRNGKey(5), n, t_min).reshape(n, 4)
    floor = _sliced(exact, aug.sample(jax.random.PRNGKey(6), n, t_min).reshape(n, 4), jax.random.PRNGKey(7))
    return aug, n, t_min, z_T, exact, floor


@pytest.mark.parametrize("name", sorted(STOCHASTIC))
def test_stochastic_against_exact_samples(name):
    aug, n, t_min, z_T, exact, floor = _problem()
    integrator = STOCHASTIC[name](SDE)
    dist = {}
    for nfe in (10, 100):
        steps = nfe // integrator.nfe_per_step
        out = _run(integrator, aug.score, z_T, time_grid(steps, t_min=t_min), jax.random.PRNGKey(2)).reshape(n, 4)
        dist[nfe] = _sliced(out, exact, jax.random.PRNGKey(7))
    print(name, dist, "floor", floor)
    assert dist[100] < dist[10]
    assert dist[100] < 4 * floor + 0.05


