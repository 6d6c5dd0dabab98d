"""DPS's two step sizes and SVDD's temperature, against exact Gaussian-mixture answers.

Prior: the three-component 2-d mixture of test_samplers. DPS observes y = x_1 + x_2 / 2 + N(0, 0.01^2);
SVDD tilts by exp(x_1), whose exact tilted distribution is again a mixture (component k's mean moves
by its variance, its weight is multiplied by exp(mu_k1 + var_k / 2)).
"""

import warnings

import jax
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import pp_diffusion as ppd

from ._problems import GMM, dense_program

A = np.array([[1.0, 0.5]])
Y = np.array([1.2])
SIGMA = 0.01


def _run(program, sampler, chains=2, **data):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        idata = ppd.infer(program, sampler, jax.random.key(1), num_chains=chains, **data)
    return idata, [str(w.message) for w in caught]


def test_dps_normalized_step_does_not_diverge_where_the_constant_one_does():
    """Measured (seed 1, 2 chains of 1000): the constant step (scale 1, growing like 1 / sigma_y^2)
    makes every draw NaN; the normalised step zeta' = 0.1 keeps all draws finite, median |y - A x|
    0.121 (exact posterior 0.0067; the prior's 1.6: the fixed step length leaves a residual of
    about zeta' |A|^2) and the mean within 0.16 of the exact posterior mean."""
    program = dense_program(A, SIGMA)
    post = GMM.posterior(A, Y, SIGMA**2)
    exact = np.asarray(post.sample(jax.random.key(0), 50_000), np.float64)

    const, caught = _run(program, ppd.guidance.dps(1000, normalize=False), y=Y)
    assert np.all(const.diagnostics["degenerate"].values)
    assert np.all(np.isnan(const.posterior["x"].values))
    assert any("degenerated" in m for m in caught)

    normed, caught = _run(program, ppd.guidance.dps(1000, scale=0.1, normalize=True), y=Y)
    x = np.asarray(normed.posterior["x"].values, np.float64).reshape(-1, 2)
    assert np.all(np.isfinite(x)) and not np.any(normed.diagnostics["degenerate"].values)
    resid = np.median(np.abs(x @ A.T - Y))
    prior_resid = np.median(np.abs(np.asarray(GMM.sample(jax.random.key(2), 50_000)) @ A.T - Y))
    assert prior_resid > 1.0
    assert resid < 0.25
    np.testing.assert_allclose(x.mean(axis=0), exact.mean(axis=0), atol=0.3)
    attrs = normed.posterior.attrs
    assert attrs["sampler_normalize"] == "True" and attrs["sampler_scale"] == pytest.approx(0.1)


def test_dps_normalized_step_needs_linear_gaussian_observations():
    prior = ppd.DiffusionPrior(GMM.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=10)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Laplace(x[0], 0.1), obs=y)

    with pytest.raises(ValueError, match="normalize=True"):
        ppd.infer(program, ppd.guidance.dps(16, normalize=True), jax.random.key(0), y=1.0)
    with pytest.raises(TypeError, match="normalize"):
        ppd.guidance.dps(16, normalize="yes")


def test_svdd_temperature_one_aims_at_the_tilt_and_small_temperatures_maximise():
    """Tilt exp(x_1): exact tilted mean 2.20, sd 1.07. Measured (50 steps, 4 children, 2 chains of
    500): temperature 1 (the default) 1.72-1.75, sd 1.29-1.37; temperature 0.01 (the paper's) 5.53,
    sd 0.45, far past the tilted target."""
    prior = ppd.DiffusionPrior(GMM.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=50)

    def program():
        x = numpyro.sample("x", prior)
        numpyro.factor("r", x[0])

    w = np.asarray(GMM.weights, np.float64)
    mu = np.asarray(GMM.means, np.float64)[:, 0]
    var = np.diagonal(np.asarray(GMM.covariances(), np.float64), axis1=1, axis2=2)[:, 0]
    lw = np.log(w) + mu + var / 2
    p = np.exp(lw - lw.max())
    p /= p.sum()
    tilted_mean = float(p @ (mu + var))
    tilted_sd = float(np.sqrt(p @ (var + (mu + var) ** 2) - tilted_mean**2))
    assert tilted_mean == pytest.approx(2.20, abs=0.01)

    assert ppd.smc.svdd(10).settings["temperature"] == 1.0
    warm, _ = _run(program, ppd.smc.svdd(500, 4))
    cold, _ = _run(program, ppd.smc.svdd(500, 4, temperature=0.01))
    xw = np.asarray(warm.posterior["x"].values, np.float64)[..., 0]
    xc = np.asarray(cold.posterior["x"].values, np.float64)[..., 0]
    # temperature 1: below the tilted mean (SVDD under-tilts) but within 0.8 of it, spread of the same order
    assert np.all(np.abs(xw.mean(axis=1) - tilted_mean) < 0.8)
    assert np.all(np.abs(xw.std(axis=1) / tilted_sd - 1) < 0.5)
    # temperature 0.01: a reward maximiser, far past the tilted target and much narrower
    assert np.all(xc.mean(axis=1) > tilted_mean + 2.0)
    assert np.all(xc.std(axis=1) < 0.6 * tilted_sd)
