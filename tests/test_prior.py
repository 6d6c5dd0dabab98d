"""DiffusionPrior: the reverse chain as a NumPyro distribution, checked against the exact mixture.

Draws are compared with exact mixture draws by the batched sliced-Wasserstein statistic of
tests/test_integrators.py (mean over 8 batches of 1000 of SW(sampler batch, exact batch),
divided by the same statistic for independent exact draws); moments and component frequencies
are compared with the exact mixture at 5 standard errors.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from numpyro import handlers
from numpyro.infer import Predictive
from numpyro.infer.util import log_density
from scipy import stats

from pp_diffusion import DiffusionModel, DiffusionPrior, GaussianMixture, schedules
from pp_diffusion.integrators import Integrator, ddim, ddim_transition, dpm_solver_pp, integrate, unipc
from pp_diffusion.metrics import sliced_wasserstein

SEED = 0
SCHEDULE = schedules.ddpm_linear()
WEIGHTS = np.array([0.3, 0.5, 0.2])
MEANS = np.array([[-4.0, 0.0], [4.0, 2.0], [0.0, -4.0]])
MIXTURE = GaussianMixture(WEIGHTS, MEANS, np.ones(3))
MODEL = MIXTURE.diffusion_model(SCHEDULE)
MIXTURE_MEAN = WEIGHTS @ MEANS
MIXTURE_VAR = WEIGHTS @ (1.0 + MEANS**2) - MIXTURE_MEAN**2  # per coordinate

NUM_BATCHES, BATCH = 8, 1000
NUM = NUM_BATCHES * BATCH


@jax.jit
def _batched_sw(key, x, y):
    pairs = (x.reshape(NUM_BATCHES, BATCH, -1), y.reshape(NUM_BATCHES, BATCH, -1))
    return jnp.mean(jax.vmap(lambda a, b: sliced_wasserstein(key, a, b, num_directions=100))(*pairs))


def _sw_ratio(draws, seed):
    """Batched SW of ``draws`` to exact draws, over the same statistic for exact draws."""
    k_exact, k_floor, k_sw = jax.random.split(jax.random.key(seed + 1000), 3)
    exact = MIXTURE.sample(k_exact, NUM)
    floor = np.mean([float(_batched_sw(k_sw, MIXTURE.sample(k, NUM), exact)) for k in jax.random.split(k_floor, 4)])
    return float(_batched_sw(k_sw, jnp.asarray(draws), exact)) / floor


def _component_frequencies(x):
    nearest = np.argmin(((np.asarray(x)[:, None, :] - MEANS[None]) ** 2).sum(-1), axis=1)
    return np.bincount(nearest, minlength=len(WEIGHTS)) / len(nearest)


# --------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("sample_shape", [(), (3,), (2, 4)])
def test_sample_shapes(sample_shape):
    prior = DiffusionPrior(MODEL, steps=5)
    assert prior.event_shape == (2,) and prior.batch_shape == ()
    x = np.asarray(prior.sample(jax.random.key(SEED), sample_shape))
    assert x.shape == sample_shape + (2,)
    assert np.all(np.isfinite(x))
    flat = x.reshape(-1, 2)
    assert len(np.unique(flat[:, 0])) == flat.shape[0]  # independent draws, not one draw repeated


# Ratio to the exact-draw floor, measured over seeds 0-7 per case below (for exact draws the
# ratio's maximum over 60 seeds was 1.31; see tests/test_integrators.py).
SW_FACTOR = 1.75


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(steps=100),  # DDPM ancestral (eta = 1, the default); measured 0.93-1.17
        dict(steps=50, eta=0.0),  # deterministic DDIM; measured 0.97-1.23
        dict(steps=20, integrator=dpm_solver_pp(2), grid=schedules.uniform_log_snr),  # measured 0.99-1.21
    ],
    ids=["ddpm-100", "ddim-50", "dpm2-logsnr-20"],
)
def test_sample_matches_the_data_distribution(kwargs):
    prior = DiffusionPrior(MODEL, **kwargs)
    x = prior.sample(jax.random.key(SEED), (NUM,))
    assert _sw_ratio(x, SEED) < SW_FACTOR


def test_predictive_draws_from_the_prior():
    prior = DiffusionPrior(MODEL, steps=100)

    def program():
        x = numpyro.sample("x", prior)
        numpyro.deterministic("norm", jnp.linalg.norm(x))

    n = 2000
    draws = Predictive(program, num_samples=n)(jax.random.key(SEED))
    assert draws["x"].shape == (n, 2)
    assert draws["norm"].shape == (n,)
    np.testing.assert_allclose(draws["norm"], np.linalg.norm(draws["x"], axis=1), rtol=1e-6)
    freq = _component_frequencies(draws["x"])
    assert np.all(np.abs(freq - WEIGHTS) < 5 * np.sqrt(WEIGHTS * (1 - WEIGHTS) / n)), freq
    x = np.asarray(draws["x"], np.float64)
    assert np.all(np.abs(x.mean(0) - MIXTURE_MEAN) < 5 * np.sqrt(MIXTURE_VAR / n)), x.mean(0)
    # standard error of the sample variance from the mixture's fourth moment (estimated from exact draws)
    exact = np.asarray(MIXTURE.sample(jax.random.key(123), 200_000), np.float64)
    se_var = np.std((exact - MIXTURE_MEAN) ** 2, axis=0) / np.sqrt(n)
    assert np.all(np.abs(x.var(0) - MIXTURE_VAR) < 5 * se_var), x.var(0)
    # measured over seeds 0-7: |z| <= 2.0 for the frequencies, <= 1.7 for the means


# --------------------------------------------------------------------------- densities

@pytest.mark.parametrize("shape", [(2,), (5, 2), (3, 4, 2)])
def test_log_prob_is_the_exact_mixture_density(shape):
    prior = DiffusionPrior(MODEL, steps=10)
    x = np.random.default_rng(0).normal(scale=3.0, size=shape).astype(np.float32)
    lp = np.asarray(prior.log_prob(x))
    assert lp.shape == shape[:-1]
    comps = np.stack([stats.multivariate_normal(m, np.eye(2)).logpdf(x) for m in MEANS], axis=-1)
    expected = np.log(np.sum(WEIGHTS * np.exp(comps), axis=-1))
    np.testing.assert_allclose(lp, expected, rtol=1e-5, atol=1e-5)


def _network(x, t):
    return jnp.tanh(x) * (1.0 - t)  # a small "trained" eps network, no density


def test_log_prob_without_a_density_names_the_samplers():
    model = DiffusionModel(_network, "eps", schedules.VPLinear(), (2,), name="tiny")
    prior = DiffusionPrior(model, steps=4)
    assert prior.sample(jax.random.key(0), (3,)).shape == (3, 2)  # sampling still works
    with pytest.raises(NotImplementedError, match="tiny") as err:
        prior.log_prob(jnp.zeros(2))
    message = str(err.value)
    for name in ["pp_diffusion.infer", "pp_diffusion.smc", "twisted", "dps"]:
        assert name in message


# --------------------------------------------------------------------------- the chain as a program

def _chain_trace(prior, seed=SEED):
    return handlers.trace(handlers.seed(prior.chain_program(), jax.random.key(seed))).get_trace()


def test_chain_program_sites_and_gaussian_transitions():
    steps = 6
    prior = DiffusionPrior(MODEL, steps=steps)  # eta = 1
    trace = _chain_trace(prior)
    assert [name for name, site in trace.items() if site["type"] == "sample"] == ["x_T", "x", "x_0"]
    x_T, xs, x_0 = (np.asarray(trace[k]["value"]) for k in ["x_T", "x", "x_0"])
    assert x_T.shape == (2,) and xs.shape == (steps - 1, 2) and x_0.shape == (2,)

    times = np.asarray(prior.times)
    # x_0 is the last transition (into t = 0, where the DDPM kernel has zero variance)
    last_mean, last_std, _ = ddim_transition(MODEL, jnp.asarray(xs[-1]), times[-2], times[-1], 1.0)
    assert float(last_std) == 0.0
    np.testing.assert_allclose(x_0, last_mean, rtol=1e-6, atol=1e-6)

    # every scanned site is the Gaussian DDPM kernel from the previous state
    site_lp = np.asarray(trace["x"]["fn"].log_prob(trace["x"]["value"]))
    assert site_lp.shape == (steps - 1,)
    previous = np.concatenate([x_T[None], xs[:-1]])
    manual = []
    for k in range(steps - 1):
        mean, std, _ = ddim_transition(MODEL, jnp.asarray(previous[k]), times[k], times[k + 1], 1.0)
        assert float(std) > 0
        manual.append(stats.norm(np.asarray(mean, np.float64), float(std)).logpdf(xs[k]).sum())
    np.testing.assert_allclose(site_lp, manual, rtol=1e-4, atol=1e-4)

    # the joint density: N(0, sigma_1^2) for x_T plus the transitions (the x_0 Delta adds 0)
    sigma_1 = float(SCHEDULE.sigma(times[0]))
    prior_lp = stats.norm(0.0, sigma_1).logpdf(x_T).sum()
    joint, _ = log_density(prior.chain_program(), (), {}, {k: trace[k]["value"] for k in ["x_T", "x", "x_0"]})
    np.testing.assert_allclose(float(joint), prior_lp + sum(manual), rtol=1e-4)


def test_chain_program_is_stochastic_for_eta_one():
    prior = DiffusionPrior(MODEL, steps=6)
    a, b = _chain_trace(prior, 0), _chain_trace(prior, 1)
    assert not np.allclose(a["x"]["value"], b["x"]["value"])


@pytest.mark.parametrize(
    "kwargs, integrator",
    [(dict(eta=0.0), ddim(0.0)), (dict(integrator=dpm_solver_pp(2)), None)],
    ids=["ddim", "dpm_solver_pp_2"],
)
def test_deterministic_chain_program_follows_the_integrator(kwargs, integrator):
    steps = 8
    prior = DiffusionPrior(MODEL, steps=steps, **kwargs)
    integrator = integrator if integrator is not None else prior.integrator
    trace = _chain_trace(prior)
    assert isinstance(trace["x"]["fn"].base_dist if hasattr(trace["x"]["fn"], "base_dist") else trace["x"]["fn"], dist.Delta)
    x_T = trace["x_T"]["value"]
    traj, _ = integrate(jax.random.key(0), integrator, MODEL, x_T, prior.times, return_trajectory=True)
    np.testing.assert_allclose(trace["x"]["value"], traj[:-1], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(trace["x_0"]["value"], traj[-1], rtol=1e-5, atol=1e-5)


# --------------------------------------------------------------------------- cost

def test_nfe_is_steps_times_network_calls_per_step():
    assert DiffusionPrior(MODEL, steps=37).nfe == 37
    assert DiffusionPrior(MODEL, steps=12, integrator=unipc(3)).nfe == 12
    base = ddim(0.0)
    two_calls = Integrator(base.init, base.step, 2, "two-call")
    assert DiffusionPrior(MODEL, steps=12, integrator=two_calls).nfe == 24


# --------------------------------------------------------------------------- arguments

@pytest.mark.parametrize("steps", [0, -3, 2.5, "10", True])
def test_steps_must_be_a_positive_integer(steps):
    with pytest.raises((ValueError, TypeError), match="steps"):
        DiffusionPrior(MODEL, steps=steps)


def test_eta_and_integrator_are_exclusive():
    with pytest.raises(ValueError, match="eta.*integrator|integrator.*eta"):
        DiffusionPrior(MODEL, steps=10, eta=0.5, integrator=unipc(2))


@pytest.mark.parametrize("eta", [-0.5, 1.5])
def test_eta_outside_unit_interval(eta):
    with pytest.raises(ValueError, match="eta"):
        DiffusionPrior(MODEL, steps=10, eta=eta)


@pytest.mark.parametrize("model", [MIXTURE, _network, None])
def test_model_must_be_a_diffusion_model(model):
    with pytest.raises(TypeError, match="model"):
        DiffusionPrior(model, steps=10)


def test_integrator_must_be_an_integrator():
    with pytest.raises(TypeError, match="integrator"):
        DiffusionPrior(MODEL, steps=10, integrator="ddim")


@pytest.mark.parametrize(
    "grid",
    [
        [1.0, 0.4, 0.6, 0.0],  # not monotone
        [0.0, 0.4, 0.6, 1.0],  # increasing
        [1.0, 0.5, 0.0],  # steps + 1 = 4 times needed
        [1.5, 0.6, 0.3, 0.0],  # outside [0, 1]
    ],
)
def test_explicit_grid_is_checked(grid):
    with pytest.raises(ValueError, match="grid"):
        DiffusionPrior(MODEL, steps=3, grid=grid)


def test_explicit_grid_is_used():
    grid = [1.0, 0.7, 0.2, 0.0]
    prior = DiffusionPrior(MODEL, steps=3, grid=grid)
    np.testing.assert_allclose(prior.times, grid)
