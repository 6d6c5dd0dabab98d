"""The analytic reverse variance: the measured denoising error Gamma_t and the chain that uses it.

For Gaussian data x_0 ~ N(0, v I) everything is exact: Gamma_t = v sigma_t^2 / (alpha_t^2 v + sigma_t^2),
the reverse transitions with variance c^2 + c_0^2 Gamma_t are the true ones (a 5-step chain has the data
distribution as its marginal), and so is the posterior the conditioning samplers target.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import pp_diffusion as ppd

V = 4.0
GAUSS = ppd.GaussianMixture(np.ones(1), np.zeros((1, 2)), np.array([V]))
MODEL = GAUSS.diffusion_model(ppd.schedules.ddpm_linear(), "eps")


def exact_gamma(t):
    """Var[x_0 | x_t] of the Gaussian data: V sigma_t^2 / (alpha_t^2 V + sigma_t^2)."""
    alpha, sigma = MODEL.schedule.alpha(t), MODEL.schedule.sigma(t)
    return V * sigma**2 / (alpha**2 * V + sigma**2)


@pytest.fixture(scope="module")
def x0_var():
    return ppd.denoising_variance(MODEL, jax.random.key(1), GAUSS.sample(jax.random.key(0), 20_000), num_times=50)


def test_denoising_variance_is_the_posterior_variance_of_gaussian_data(x0_var):
    exact = exact_gamma(x0_var.times[1:])
    assert float(x0_var.values[0]) == 0.0
    np.testing.assert_allclose(np.asarray(x0_var.values[1:]), np.asarray(exact), rtol=0.05)
    # interpolation between grid times
    mid = 0.5 * (x0_var.times[10] + x0_var.times[11])
    assert float(x0_var(mid)) == pytest.approx(0.5 * float(x0_var.values[10] + x0_var.values[11]), rel=1e-5)


@pytest.mark.parametrize("steps", [3, 10])
@pytest.mark.parametrize("eta", [1.0, 0.0])
def test_chain_with_analytic_variance_keeps_the_data_variance(x0_var, steps, eta):
    """DDPM's kernel under-disperses at few steps (26% of the variance at 3 steps, 59% at 10);
    with Gamma_t the chain is exact for Gaussian data, for DDIM(eta = 0)'s mean too."""
    plain = np.var(np.asarray(ppd.DiffusionPrior(MODEL, steps).sample(jax.random.key(2), (20_000,))), axis=0)
    analytic = ppd.DiffusionPrior(MODEL, steps, eta=eta, x0_var=x0_var).sample(jax.random.key(2), (20_000,))
    assert np.all(plain < 0.7 * V)
    np.testing.assert_allclose(np.var(np.asarray(analytic), axis=0), V, rtol=0.05)


def test_chain_program_uses_the_analytic_variance(x0_var):
    prior = ppd.DiffusionPrior(MODEL, 4, x0_var=x0_var)
    trace = numpyro.handlers.trace(numpyro.handlers.seed(prior.chain_program(), 0)).get_trace()
    x, times = trace["x"]["value"], prior.times
    _, std, _ = ppd.integrators.ddim_transition(MODEL, x[0], times[1], times[2], 1.0, x0_var)
    _, plain_std, _ = ppd.integrators.ddim_transition(MODEL, x[0], times[1], times[2], 1.0)
    assert float(std) > 1.1 * float(plain_std)
    assert float(trace["x"]["fn"].base_dist.scale[1, 0]) == pytest.approx(float(std), rel=1e-6)
    # the last step is N(xhat_0(x_t1), Gamma_t1), not deterministic
    assert float(trace["x_0"]["fn"].base_dist.scale[0]) == pytest.approx(float(jnp.sqrt(x0_var(times[-2]))), rel=1e-5)


@pytest.mark.parametrize("make, eta", [(ppd.smc.bootstrap, 1.0), (ppd.smc.twisted, 1.0), (ppd.smc.mcgdiff, 1.0),
                                       (ppd.smc.twisted, 0.0)], ids=["bootstrap", "twisted", "mcgdiff", "twisted-eta0"])
def test_conditioning_with_a_five_step_analytic_chain_is_exact(x0_var, make, eta):
    A, y, sigma_y = np.array([[1.0, 0.5]]), np.array([1.3]), 0.3
    prior = ppd.DiffusionPrior(MODEL, 5, eta=eta, x0_var=x0_var)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(ppd.operators.Dense(A)(x), sigma_y), obs=y)

    idata = ppd.infer(program, make(2000), jax.random.key(3), num_chains=4, y=y, progress_bar=False)
    draws = np.asarray(idata.posterior["x"].values).reshape(-1, 2)
    exact = np.asarray(GAUSS.posterior(A, y, sigma_y**2).sample(jax.random.key(9), 100_000))
    np.testing.assert_allclose(draws.mean(0), exact.mean(0), atol=0.06)
    np.testing.assert_allclose(draws.var(0) / exact.var(0), 1.0, atol=0.07)
    log_z_err = idata.diagnostics["log_marginal_likelihood"].values - GAUSS.log_evidence(A, y, sigma_y**2)
    assert np.max(np.abs(log_z_err)) < 0.08  # 0.15-0.2 nats with DDPM's kernel at 5 steps


def test_bad_input():
    x0 = GAUSS.sample(jax.random.key(0), 10)
    with pytest.raises(ValueError, match=r"x0 must have shape \(n, \*event_shape\) = \(n, 2\)"):
        ppd.denoising_variance(MODEL, jax.random.key(0), x0[:, :1])
    with pytest.raises(ValueError, match="num_times"):
        ppd.denoising_variance(MODEL, jax.random.key(0), x0, num_times=1)
    with pytest.raises(ValueError, match="non-finite"):
        ppd.denoising_variance(MODEL, jax.random.key(0), jnp.full((4, 2), jnp.nan))
    with pytest.raises(TypeError, match="x0_var must be a pp_diffusion.DenoisingVariance"):
        ppd.DiffusionPrior(MODEL, 5, x0_var=1.0)
    table = ppd.DenoisingVariance(jnp.linspace(0, 1, 3), jnp.zeros(3))
    with pytest.raises(ValueError, match="give eta, not integrator"):
        ppd.DiffusionPrior(MODEL, 5, x0_var=table, integrator=ppd.integrators.unipc())


def test_weighted_sampler_with_a_factor_ends_with_the_priors_gaussian_step(x0_var):
    """A numpyro.factor is no linear-Gaussian observation, so SMC's last step is the prior's own:
    N(xhat_0, Gamma_t1) with x0_var. Gaussian prior times a Gaussian factor: exact posterior."""
    c, tau2 = np.array([1.5, -1.0]), 4.0
    prior = ppd.DiffusionPrior(MODEL, 3, x0_var=x0_var)  # a deterministic last step would give variance 1.6, not 2

    def program():
        x = numpyro.sample("x", prior)
        numpyro.factor("g", -0.5 * jnp.sum((x - c) ** 2) / tau2)

    idata = ppd.infer(program, ppd.smc.bootstrap(4000), jax.random.key(4), num_chains=2, progress_bar=False)
    draws = np.asarray(idata.posterior["x"].values).reshape(-1, 2)
    np.testing.assert_allclose(draws.mean(0), c * V / (V + tau2), atol=0.06)
    np.testing.assert_allclose(draws.var(0), V * tau2 / (V + tau2), rtol=0.08)


def test_on_separated_modes_the_analytic_chain_keeps_each_modes_spread_at_100_steps():
    """Four components of sd 0.5: at 100 steps DDPM's chain gives each 0.47, the analytic one 0.50.
    (At 10-20 steps the x-independent Gamma_t over-disperses instead, 0.52-0.58: it averages the
    between-mode uncertainty of x_t that lie between modes into every x_t; see the README.)"""
    means = np.array([[-3.0, 3.0], [3.0, 3.0], [-3.0, -3.0], [3.5, -2.5]])
    mix = ppd.GaussianMixture(np.full(4, 0.25), means, np.full(4, 0.25))
    model = mix.diffusion_model(ppd.schedules.ddpm_linear(), "eps")
    x0_var = ppd.denoising_variance(model, jax.random.key(11), mix.sample(jax.random.key(10), 20_000))

    def spread(prior):
        x = np.asarray(prior.sample(jax.random.key(1), (20_000,)))
        nearest = np.argmin(((x[:, None] - means[None]) ** 2).sum(-1), axis=1)
        return np.mean([x[nearest == k].std(axis=0).mean() for k in range(4)])

    assert spread(ppd.DiffusionPrior(model, 100)) < 0.48
    assert spread(ppd.DiffusionPrior(model, 100, x0_var=x0_var)) == pytest.approx(0.5, abs=0.01)


@pytest.mark.parametrize("sigma_y", [0.3, 0.003], ids=["pinned-mid-chain", "pinned-at-t0"])
def test_mcgdiff_proposal_is_locally_optimal_for_gaussian_data(sigma_y):
    """With the exact kernel (x0_var = Gamma_t of N(0, V I) data) MCGdiff's Tweedie twist is p(z | x_t)
    itself and its linearised proposal the locally optimal one: every incremental weight is 1, so the
    ESS never moves from the initial weights'. Holding xhat_0 at x_t's value in the proposal instead
    (kappa_s = 0) ends at ESS ~ 0.3 (pinned mid-chain) and ~ 0.1 (pinned at t = 0) of the initial."""
    steps, A, y = 20, np.array([[1.0, 0.5]]), np.array([1.3])
    times = ppd.DiffusionPrior(MODEL, steps).times[::-1]
    exact = ppd.DenoisingVariance(times, exact_gamma(times))
    prior = ppd.DiffusionPrior(MODEL, steps, x0_var=exact)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(ppd.operators.Dense(A)(x), sigma_y), obs=y)

    idata = ppd.infer(program, ppd.smc.mcgdiff(512, ess_threshold=0.0), jax.random.key(5), num_chains=2, y=y,
                      progress_bar=False)
    ess = idata.diagnostics["ess"].values  # (chain, step)
    assert np.all(ess[:, 1:] > 0.999 * ess[:, :1]), ess.min(axis=1) / ess[:, 0]
    log_z_err = idata.diagnostics["log_marginal_likelihood"].values - GAUSS.log_evidence(A, y, sigma_y**2)
    assert np.max(np.abs(log_z_err)) < 0.05
