"""A phase-space model as a NumPyro prior: ``DiffusionPrior(AugmentedModel(...))`` draws x_0 with the
momentum marginalised, the model's GLS-Tweedie denoiser equals the exact posterior mean for an exact
score, and every path that cannot take an augmented model says so (the conditioning samplers:
``test_conditioning.py``)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import pp_diffusion as ppd
from pp_diffusion import GaussianMixture
from pp_diffusion.phase_space import (
    PSLD,
    AugmentedGaussianMixture,
    AugmentedModel,
    euler_maruyama,
    reduced_velocity_verlet,
    sscs,
    time_grid,
)

SDE = PSLD()
MIX = GaussianMixture([0.3, 0.7], [[-1.5, 0.5], [1.0, -1.0]], [0.15, 0.25])
AUG = AugmentedGaussianMixture(MIX, SDE)


MODEL = AUG.model()


def test_score_and_denoiser_of_an_exact_eps_network():
    z = AUG.sample(jax.random.PRNGKey(0), 16, 0.2)
    for t in (0.05, 0.2, 0.6):
        np.testing.assert_allclose(jax.vmap(MODEL.score, (0, None))(z, t), jax.vmap(AUG.score, (0, None))(z, t),
                                   rtol=2e-3, atol=2e-4)
        np.testing.assert_allclose(jax.vmap(MODEL.denoise, (0, None))(z, t), jax.vmap(AUG.denoise, (0, None))(z, t),
                                   rtol=2e-3, atol=2e-3)


@pytest.mark.parametrize("make", [sscs, euler_maruyama])
def test_prior_draws_match_the_mixture(make):
    prior = ppd.DiffusionPrior(MODEL, steps=100, integrator=make(SDE))
    assert prior.event_shape == (2,) and prior.nfe == 100
    x = np.asarray(jax.jit(lambda k: prior.sample(k, (4000,)))(jax.random.PRNGKey(1)))
    ref = np.asarray(MIX.sample(jax.random.PRNGKey(2), 200_000))
    np.testing.assert_allclose(x.mean(0), ref.mean(0), atol=0.06)
    np.testing.assert_allclose(np.cov(x.T), np.cov(ref.T), atol=0.08)
    assert abs(np.mean(x[:, 0] < -0.25) - np.mean(ref[:, 0] < -0.25)) < 0.03  # the weight of the left mode


def test_prior_in_a_numpyro_program_and_options():
    prior = ppd.DiffusionPrior(MODEL, steps=10, grid=time_grid(10, power=2.0),
                               integrator=reduced_velocity_verlet(SDE))
    assert prior.nfe == 11  # one extra score on the first step

    def program():
        numpyro.sample("x", prior)

    draws = numpyro.infer.Predictive(program, num_samples=8)(jax.random.PRNGKey(0))["x"]
    assert draws.shape == (8, 2) and bool(jnp.all(jnp.isfinite(draws)))


def test_bad_input_names_the_argument():
    vp = ppd.DiffusionModel(lambda x, t: jnp.zeros_like(x), "eps", ppd.schedules.VPLinear(), (2,))
    with pytest.raises(TypeError, match="integrator"):
        ppd.DiffusionPrior(MODEL, steps=10, integrator=ppd.integrators.ddim(0.0))
    with pytest.raises(ValueError, match="eta"):
        ppd.DiffusionPrior(MODEL, steps=10, eta=1.0)
    with pytest.raises(TypeError, match="phase-space splitting integrator"):
        ppd.DiffusionPrior(vp, steps=10, integrator=sscs(SDE))
    with pytest.raises(ValueError, match="grid"):
        ppd.DiffusionPrior(MODEL, steps=10, grid=time_grid(5))
    with pytest.raises(TypeError, match="augmented"):
        ppd.integrators.integrate(jax.random.PRNGKey(0), ppd.integrators.ddim(0.0), MODEL, jnp.zeros((2, 2)),
                                  jnp.linspace(1.0, 0.0, 3))
    with pytest.raises(TypeError, match="score_fn"):
        ppd.phase_space.integrate(jax.random.PRNGKey(0), sscs(SDE), vp, jnp.zeros((2, 2)), time_grid(2))
    with pytest.raises(ValueError, match="t_min"):
        AugmentedModel(AUG.eps, SDE, (2,), t_min=0.0)
