"""Energies, energy priors (product, temper, guided) and the energy SMC sampler: exactness of the energy
interface on the mixture, a fast accuracy check of ``smc.energy`` against the closed-form product normaliser,
its NFE accounting, and the errors for bad input (the replicated exact checks are in
tests/smc/test_energy_exact.py)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import pp_diffusion as ppd

from . import _energy_problems as E

SCHED = ppd.schedules.ddpm_linear()


def test_mixture_energy_is_minus_log_p_t_with_its_score():
    model = E.GA2.diffusion_model(SCHED)
    x = jnp.array([0.3, -0.7])
    for t in (0.0, 0.3, 0.9):
        alpha, sigma = SCHED.alpha(t), SCHED.sigma(t)
        e, score = model.energy_and_score(x, t)
        assert np.isclose(e, -E.GA2.marginal_log_prob(x, alpha, sigma), atol=1e-5)
        assert np.allclose(score, E.GA2.score(x, alpha, sigma), atol=1e-4)
        if t > 0:
            assert np.allclose(score, model.score(x, t), atol=1e-4)


def test_energy_network_energy_and_its_score():
    net = lambda x, t: 0.5 * jnp.sum((x - 1.0) ** 2) / (1.0 + t)
    model = ppd.DiffusionModel(net, "energy", SCHED, (3,))
    e, score = model.energy_and_score(jnp.zeros(3), 0.5)
    assert np.isclose(e, 1.0) and np.allclose(score, 1.0 / 1.5)
    assert model.has_energy


def test_models_without_an_energy_say_how_to_get_one():
    model = ppd.DiffusionModel(lambda x, t: jnp.zeros_like(x), "eps", SCHED, (2,))
    assert not model.has_energy
    with pytest.raises(ValueError, match="exact model.*distilled energy"):
        model.energy(jnp.zeros(2), 0.5)
    with pytest.raises(ValueError, match="prior: model 'model' has no energy"):
        ppd.temper(ppd.DiffusionPrior(model, steps=10), 2.0)

    def program():
        numpyro.sample("x", ppd.DiffusionPrior(model, steps=10))

    with pytest.raises(ValueError, match="diffusion site 'x'.*has no energy"):
        ppd.infer(program, ppd.smc.energy(16), jax.random.key(0))


def test_bad_compositions_are_refused_before_any_compilation():
    a = E.prior(E.GA2, 20)
    with pytest.raises(ValueError, match="beta must be positive"):
        ppd.temper(a, 0.0)
    with pytest.raises(ValueError, match="beta must be positive"):
        ppd.temper(a, -1.0)
    with pytest.raises(ValueError, match="w must be non-negative"):
        ppd.guided(a, a, -0.5)
    with pytest.raises(ValueError, match="event shape"):
        ppd.product(a, E.prior(E.GA8, 20))
    other = ppd.DiffusionPrior(E.GA2.diffusion_model(ppd.schedules.VPCosine()), steps=20)
    with pytest.raises(ValueError, match="schedule"):
        ppd.product(a, other)
    with pytest.raises(ValueError, match="time grids"):
        ppd.product(a, E.prior(E.GB2, 30))
    with pytest.raises(ValueError, match="eta > 0"):
        ppd.product(a, ppd.DiffusionPrior(E.GB2.diffusion_model(SCHED), steps=20, eta=0.0))
    with pytest.raises(ValueError, match="at least two"):
        ppd.product(a)
    with pytest.raises(TypeError, match="move must be an MCMC move"):
        ppd.smc.energy(16, move="mala")


def test_other_samplers_refuse_an_energy_prior():
    problem = E.product(2, steps=10)
    with pytest.raises(ValueError, match="sampled by pp_diffusion.smc.energy"):
        ppd.infer(problem.program, ppd.smc.twisted(16), jax.random.key(0))


def test_composition_flattens_and_keeps_the_exponents():
    a, b = E.prior(E.GA2, 20), E.prior(E.GB2, 20)
    tempered = ppd.temper(ppd.product(a, b), 2.0)
    assert [beta for _, beta in tempered.components] == [2.0, 2.0]
    x = jnp.array([0.5, 0.1])
    expected = 2.0 * (a.model.energy(x, 0.4) + b.model.energy(x, 0.4))
    assert np.isclose(tempered.model.energy(x, 0.4), expected, rtol=1e-6)
    assert tempered.model.nfe_per_call == 2


def test_energy_smc_estimates_the_product_normaliser():
    """1,024 particles with MALA moves, 2 runs: log Z of the product of two 2-D mixtures within 0.3 nat of
    sum_ij w_i v_j N(mu_i; nu_j, C_i + D_j) (this fails without the backward kernel in the weight: the
    evidence of the unweighted chain is off by more than a nat); NFE counts the moves."""
    problem = E.product(2)
    sampler = ppd.smc.energy(1024, move=ppd.mcmc.mala_move(2), move_every_step=True)
    err, draws, idata = E.run(problem, sampler, jax.random.key(3), num_chains=2)
    assert np.all(np.abs(err) < 0.3), err
    acc = idata.diagnostics["acceptance_rate"].values
    assert np.all(np.abs(np.median(acc[:, 10:], axis=1) - 0.574) < 0.05)  # adapted to MALA's target rate
    # per particle: 1 + 99 chain evaluations, and before each of the 100 moves: 1 start + 2 MALA iterations (no
    # re-evaluation without observations), each for both models
    assert int(idata.sample_stats["nfe"].values[0, 0]) == 2 * (100 + 100 * 3)


def test_energy_smc_with_an_observation_on_a_tempered_prior():
    """p^2 times N(1; x_1, 0.5^2): log Z within 0.3 nat of 2-D quadrature (the twist looks ahead through p's
    own denoiser; through the tempered score's Tweedie estimate it diverged, log Z of order -1e38)."""
    from scipy.special import logsumexp

    tempered = ppd.temper(E.prior(E.GA2), 2.0)

    def program(y=None):
        x = numpyro.sample("x", tempered)
        numpyro.sample("y", numpyro.distributions.Normal(x[0], 0.5), obs=y)

    g = np.linspace(-7, 7, 701)
    xx = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_p = np.asarray(E.GA2.log_prob(jnp.asarray(xx, jnp.float32)), np.float64)
    log_lik = -0.5 * (1.0 - xx[:, 0]) ** 2 / 0.25 - 0.5 * np.log(2 * np.pi * 0.25)
    exact = logsumexp(2 * log_p + log_lik) + 2 * np.log(g[1] - g[0])
    sampler = ppd.smc.energy(1024, move=ppd.mcmc.mala_move(2), move_every_step=True)
    idata = ppd.infer(program, sampler, jax.random.key(4), num_chains=2, y=1.0)
    err = idata.diagnostics["log_marginal_likelihood"].values - exact
    assert np.all(np.abs(err) < 0.3), err
