"""Particle Gibbs against the exact posteriors of test_pmmh.py: sigma under y = A x + N(0, sigma^2 I)
(HalfNormal(1) prior) and the gain a under y = a x + N(0, 0.3^2 I), each by 1-D quadrature of the mixture's
closed-form p(y | theta), and x by the exact mixture posteriors integrated over theta.

Tolerances from replicated runs (4 chains x 400 kept iterations after 100 of warm-up, conditional bootstrap
SMC with 16 particles, 100 DDPM steps): see the figures in each test. A theta density without the
log-Jacobian of sigma = exp(u) (a deliberately wrong acceptance ratio for NUTS) fails the quantile check.
"""

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import pp_diffusion as ppd
from pp_diffusion.pmcmc import _gibbs

from .test_pmmh import (MIX2, MIX8, STEPS, _mixture_mean, _prior, _rng, gain_program, halfnormal_log_prior,
                        noise_program, quadrature, quantiles)

Y2 = np.array([1.5, 0.5])
GRID = np.linspace(2e-3, 4.0, 2000)


def run(program, y, key, num_particles=16, num_samples=400, num_warmup=100, **kwargs):
    sampler = ppd.particle_gibbs(ppd.smc.bootstrap(num_particles), num_samples, num_warmup, **kwargs)
    return ppd.infer(program, sampler, jax.random.key(key), num_chains=4, y=jnp.asarray(y, jnp.float32))


def exact_noise_posterior(dim):
    program, A = noise_program(dim)
    mix = MIX2 if dim == 2 else MIX8
    y = Y2 if dim == 2 else A @ np.asarray(mix.sample(jax.random.key(1), 1))[0] + 0.3 * np.random.default_rng(
        4).normal(size=4)
    w = quadrature(lambda g: mix.log_evidence(A, y, g**2), halfnormal_log_prior, GRID)
    posteriors = [(wi, mix.posterior(A, y, g**2)) for wi, g in zip(w, GRID) if wi > 1e-8]
    mean_x = sum(wi * _mixture_mean(p) for wi, p in posteriors)
    heavier = sum(wi * np.asarray(p.weights)[1] for wi, p in posteriors)  # P(x in the second component | y)
    return program, y, quantiles(GRID, w), mean_x, heavier


@pytest.mark.parametrize("dim", [2, pytest.param(8, marks=pytest.mark.slow)])
def test_noise_scale_and_x_match_the_quadrature_posterior(dim):
    program, y, exact_q, exact_mean_x, heavier = exact_noise_posterior(dim)
    # d = 8: 64 particles and 1000 iterations (at 16 x 400 the Monte Carlo error alone reaches 0.1)
    n, iterations = (16, 400) if dim == 2 else (64, 1000)
    idata = run(program, y, key=10 + dim, num_particles=n, num_samples=iterations, num_warmup=iterations // 4)
    sigma = np.asarray(idata.posterior["sigma"]).ravel()
    x = np.asarray(idata.posterior["x"]).reshape(-1, dim)
    np.testing.assert_allclose(np.quantile(sigma, [0.1, 0.5, 0.9]), exact_q, atol=0.1)
    np.testing.assert_allclose(x.mean(axis=0), exact_mean_x, atol=0.25)
    if dim == 2:  # the components sit at x_1 = -2 and +2
        assert abs(np.mean(x[:, 0] > 0) - heavier) < 0.05, (np.mean(x[:, 0] > 0), heavier)
    rhat = float(arviz_stats.rhat(idata.posterior["sigma"].to_dataset())["sigma"])
    ess = float(arviz_stats.ess(idata.posterior["sigma"].to_dataset())["sigma"])
    assert rhat < 1.05 and ess > 100, (rhat, ess)
    acc = idata.diagnostics["acceptance_rate"].values
    assert np.all((acc > 0.6) & (acc < 0.95)), acc  # NUTS adapted toward 0.8
    update = idata.diagnostics["x_update_rate"].values
    assert np.all(update > 0.5), update
    stats = idata.sample_stats
    assert stats["x_changed"].shape == (4, iterations) and np.all(stats["nfe"].values == n * STEPS)
    np.testing.assert_allclose(idata.diagnostics["nfe_per_accepted"].values, n * STEPS / update, rtol=1e-4)


@pytest.mark.slow
def test_operator_gain_matches_the_quadrature_posterior():
    y = np.array([2.4, -0.3])
    grid = np.linspace(0.05, 4.0, 2000)
    w = quadrature(lambda a: MIX2.log_evidence(a * np.eye(2), y, 0.09),
                   lambda a: -np.log(a) - 0.5 * (np.log(a) / 0.5) ** 2, grid)
    idata = run(gain_program(), y, key=6, theta_kernel="mala", theta_steps=3)
    a = np.asarray(idata.posterior["a"]).ravel()
    np.testing.assert_allclose(np.quantile(a, [0.1, 0.5, 0.9]), quantiles(grid, w), atol=0.1)


def test_a_wrong_acceptance_ratio_fails_the_check(monkeypatch):
    """sigma's density without the log-Jacobian of sigma = exp(u): NUTS then samples p(sigma | x, y) / sigma."""
    program, y, exact_q, _, _ = exact_noise_posterior(2)
    real = ppd.program.global_sites

    def no_jacobian(*args):
        g = real(*args)
        return g._replace(constrain=lambda u: (g.constrain(u)[0], jnp.zeros(())))

    monkeypatch.setattr(_gibbs, "global_sites", no_jacobian)
    sigma = np.asarray(run(program, y, key=12).posterior["sigma"]).ravel()
    assert np.max(np.abs(np.quantile(sigma, [0.1, 0.5, 0.9]) - exact_q)) > 0.1


def test_programs_particle_gibbs_cannot_take_are_refused():
    y = jnp.array([1.0, 0.0])
    program, _ = noise_program(2)
    with pytest.raises(TypeError, match="smc must be"):
        ppd.particle_gibbs(ppd.smc.fk_steering(8))
    with pytest.raises(ValueError, match="theta_kernel"):
        ppd.particle_gibbs(ppd.smc.bootstrap(8), theta_kernel="hmc")
    with pytest.raises(ValueError, match="at least 2 particles"):
        ppd.particle_gibbs(ppd.smc.bootstrap(1))
    second = ppd.DiffusionPrior(_prior(2).model, steps=20, order=2)

    def order2(y=None):
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        x = numpyro.sample("x", second)
        numpyro.sample("y", dist.Normal(x, sigma).to_event(1), obs=y)

    with pytest.raises(ValueError, match="first-order chain"):
        ppd.infer(order2, ppd.particle_gibbs(ppd.smc.bootstrap(8), 2, 1), jax.random.key(0), y=y)

    def tempered(y=None):
        sigma = numpyro.sample("sigma", dist.HalfNormal(1.0))
        x = numpyro.sample("x", _prior(2))
        numpyro.sample("y", dist.StudentT(3.0, x, sigma).to_event(1), obs=y,
                       infer={"twist": ppd.twists.tempered()})

    with pytest.raises(ValueError, match="adaptively tempered"):
        ppd.infer(tempered, ppd.particle_gibbs(ppd.smc.bootstrap(8), 2, 1), jax.random.key(0), y=y)
    with pytest.raises(ValueError, match="'s' is inside plate"):
        def plate(y=None):
            with numpyro.plate("n", 2):
                s = numpyro.sample("s", dist.HalfNormal(1.0))
            x = numpyro.sample("x", _prior(2))
            numpyro.sample("y", dist.Normal(x, s).to_event(1), obs=y)
        ppd.infer(plate, ppd.particle_gibbs(ppd.smc.bootstrap(8), 2, 1), jax.random.key(0), y=y)
    del program
