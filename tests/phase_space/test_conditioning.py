"""Conditioning a phase-space prior: bootstrap SMC and DPS move z = [x; m] with the prior's splitting
integrator (``pp_diffusion/smc/_augmented.py``); the other samplers refuse it by name.

Exact reference: the 4-component mixture of the conditioning notebook under y = a^T x + N(0, 0.3^2),
whose posterior (component weights, means) and evidence are closed-form. The prior's chain is the
exact augmented score (``AugmentedGaussianMixture.model``) through 100 SSCS steps.

Measured (4 chains x 2000 particles, keys 0-2): heavier posterior mode's weight 0.680-0.684 (exact
0.676), log Z per chain within -1.44..-1.37 (exact -1.374; the chain's own, Monte Carlo, -1.40),
sd of a^T x in the heavier mode 0.262-0.275 (exact 0.257). DPS (plain look-ahead, scale 1) puts
0.52 in the heavier mode and sd 0.20: concentrated on the line, biased in the weights, as in the VP
form (tests/smc/test_samplers.py::test_dps_is_biased_where_smc_is_not).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import pp_diffusion as ppd
from pp_diffusion import GaussianMixture
from pp_diffusion.phase_space import PSLD, AugmentedGaussianMixture, sscs, strang_midpoint

SDE = PSLD()
MEANS = np.array([[-3.0, 3.0], [3.0, 3.0], [-3.0, -3.0], [3.5, -2.5]])
MIX = GaussianMixture(np.full(4, 0.25), MEANS, np.full(4, 0.5**2))
MODEL = AugmentedGaussianMixture(MIX, SDE).model()
PRIOR = ppd.DiffusionPrior(MODEL, steps=100, integrator=sscs(SDE))
A = np.array([1.0, 1.0]) / np.sqrt(2.0)
SIGMA_Y, Y = 0.3, 0.0
POSTERIOR = MIX.posterior(A[None], np.array([Y]), SIGMA_Y**2)
LOG_Z = float(MIX.log_evidence(A[None], np.array([Y]), SIGMA_Y**2))
HEAVY = np.argsort(np.asarray(POSTERIOR.weights))[::-1][:2]  # the two posterior modes, heavier first


def program_of(prior):
    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(jnp.dot(x, A), SIGMA_Y), obs=y)

    return program


def mode_summary(draws):
    """(share of draws nearer the heavier mode than the lighter one, sd of a^T x among them, share
    near a component the observation excludes)."""
    d = np.linalg.norm(draws[:, None, :] - np.asarray(POSTERIOR.means)[None], axis=-1)
    nearest = d.argmin(axis=1)
    heavy = d[:, HEAVY[0]] < d[:, HEAVY[1]]
    return float(np.mean(heavy)), float(np.std(draws[heavy & np.isin(nearest, HEAVY)] @ A)), \
        float(np.mean(~np.isin(nearest, HEAVY)))


@pytest.fixture(scope="module")
def bootstrap_runs():
    return [ppd.infer(program_of(PRIOR), ppd.smc.bootstrap(2000), jax.random.PRNGKey(k), num_chains=4,
                      y=jnp.asarray(Y)) for k in range(2)]


def test_bootstrap_matches_the_exact_posterior_and_evidence(bootstrap_runs):
    exact_heavy = float(np.asarray(POSTERIOR.weights)[HEAVY[0]])
    exact_sd = float(np.sqrt(1.0 / (1.0 / 0.25 + 1.0 / SIGMA_Y**2)))  # within a mode, along a
    for idata in bootstrap_runs:
        draws = np.asarray(idata.posterior["x"]).reshape(-1, 2)
        heavy, sd, excluded = mode_summary(draws)
        assert abs(heavy - exact_heavy) < 0.03, (heavy, exact_heavy)
        assert abs(sd - exact_sd) < 0.03, (sd, exact_sd)
        assert excluded < 0.002
        log_z = np.asarray(idata.diagnostics["log_marginal_likelihood"])
        assert abs(log_z.mean() - LOG_Z) < 0.08, (log_z, LOG_Z)
        assert log_z.std(ddof=1) < 0.1, log_z
        # 100 SSCS score calls and 100 twist evaluations (z_T and after each step but the last)
        assert np.all(idata.sample_stats["nfe"].values == 200) and np.all(idata.sample_stats["vjp"].values == 0)
        assert idata.posterior["x"].shape == (4, 2000, 2)


def test_bootstrap_twist_is_divided_out():
    """The plain look-ahead twist log G(xhat_0(z_t)) in place of the variance-corrected one, on a wider
    observation (sigma_y = 1.5, where it does not collapse the weights): the same evidence and
    posterior, as the twist changes the variance, not the target. A twist left in the last weight
    would shift log Z by log h_t1 - log G."""
    sigma = 1.5

    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(jnp.dot(x, A), sigma), obs=y, infer={"twist": "lookahead"})

    idata = ppd.infer(program, ppd.smc.bootstrap(2000), jax.random.PRNGKey(5), num_chains=4, y=jnp.asarray(Y))
    log_z = np.asarray(idata.diagnostics["log_marginal_likelihood"])
    exact = float(MIX.log_evidence(A[None], np.array([Y]), sigma**2))
    assert abs(log_z.mean() - exact) < 0.05, (log_z, exact)
    assert "lookahead" in str(idata.posterior.attrs["twists"])


def test_dps_is_guided_and_unweighted():
    idata = ppd.infer(program_of(PRIOR), ppd.guidance.dps(2000), jax.random.PRNGKey(3), y=jnp.asarray(Y))
    draws = np.asarray(idata.posterior["x"]).reshape(-1, 2)
    heavy, sd, excluded = mode_summary(draws)
    # pulled onto the line a^T x = y (the prior's sd along a is 4.3) and off the excluded modes ...
    assert abs(float(np.mean(draws @ A)) - Y) < 0.3 and sd < 0.3 and excluded < 0.01, (heavy, sd, excluded)
    # ... with the plug-in likelihood's known bias in the weights (exact 0.676)
    assert 0.4 < heavy < 0.62, heavy
    assert np.isnan(idata.diagnostics["log_marginal_likelihood"].values).all()
    assert np.all(idata.sample_stats["nfe"].values == 100) and np.all(idata.sample_stats["vjp"].values == 100)


def test_dps_at_scale_zero_is_the_prior():
    idata = ppd.infer(program_of(PRIOR), ppd.guidance.dps(4000, scale=0.0), jax.random.PRNGKey(4), y=jnp.asarray(Y))
    draws = np.asarray(idata.posterior["x"]).reshape(-1, 2)
    nearest = np.linalg.norm(draws[:, None] - MEANS[None], axis=-1).argmin(1)
    np.testing.assert_allclose(np.bincount(nearest, minlength=4) / len(nearest), 0.25, atol=0.03)


def test_other_samplers_and_bad_input_are_refused():
    program = program_of(PRIOR)
    y = jnp.asarray(Y)
    for sampler in (ppd.smc.twisted(16), ppd.smc.fk_steering(16), ppd.smc.mcgdiff(16), ppd.smc.svdd(16),
                    ppd.smc.energy(16), ppd.mcmc.nuts(10, 10), ppd.tree.dts(8), ppd.guidance.particle(4, 1.0)):
        with pytest.raises(ValueError, match="bootstrap or pp_diffusion.guidance.dps"):
            ppd.infer(program, sampler, jax.random.PRNGKey(0), y=y)
    deterministic = ppd.DiffusionPrior(MODEL, steps=10, integrator=strang_midpoint(SDE))
    with pytest.raises(ValueError, match="strang_midpoint"):
        ppd.infer(program_of(deterministic), ppd.smc.bootstrap(16), jax.random.PRNGKey(0), y=y)
    with pytest.raises(ValueError, match="normalize"):
        ppd.infer(program, ppd.guidance.dps(16, normalize=True), jax.random.PRNGKey(0), y=y)

    def custom(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(jnp.dot(x, A), SIGMA_Y), obs=y,
                       infer={"twist": ppd.twists.custom(lambda x_t, t, value: jnp.zeros(()))})

    with pytest.raises(ValueError, match="custom twists"):
        ppd.infer(custom, ppd.smc.bootstrap(16), jax.random.PRNGKey(0), y=y)

    def factor(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.factor("r", -jnp.sum(x**2))

    with pytest.raises(ValueError, match="'lookahead'"):
        ppd.infer(factor, ppd.smc.bootstrap(16), jax.random.PRNGKey(0))
