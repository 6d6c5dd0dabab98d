"""Particle guidance (``ppd.guidance.particle``): its argument checks, the median-bandwidth guard at
n = 2, strength 0 as the i.i.d. chain, every integrator, observations, feature-space repulsion and
classifier-free guidance.

The prior is a three-component 2-D mixture with exact scores under VPLinear, 30 steps; a chain of
``infer`` is a group, so ``posterior["x"]`` is (group, member, 2). Runs of one (program, sampler,
number of groups) share one compilation, so the tests reuse a few of them over several keys.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import pp_diffusion as ppd
from pp_diffusion import metrics

from ._problems import program_of

MIX = ppd.GaussianMixture(np.ones(3), np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]]), np.array([0.3, 0.5, 0.4]))
MODEL = MIX.diffusion_model(ppd.schedules.VPLinear(), "eps")
STEPS = 30
GROUPS = 200
KEYS = (0, 1, 2)
STRENGTH = 1.0
# the stochastic chain's fresh noise blurs the repulsion: DDPM gets twice the strength of the deterministic ones
# (UniPC stays at 1: at 2 and 3, about 1 group in 600 whose two x_T start very close, step-0 bandwidth
# 0.08-0.13, is flung out to |x| ~ 40 by its corrector; DDIM and DPM-Solver++ at the same strengths are not)
STRENGTHS = {"ddpm": 2.0, "ddim": STRENGTH, "dpm_solver_pp2": STRENGTH, "unipc": STRENGTH}

PRIORS = {
    "ddpm": {},
    "ddim": {"eta": 0.0},
    "dpm_solver_pp2": {"integrator": ppd.integrators.dpm_solver_pp(2)},
    "unipc": {"integrator": ppd.integrators.unipc()},
}


@functools.cache
def _prior(name):
    return ppd.DiffusionPrior(MODEL, steps=STEPS, **PRIORS[name])


@functools.cache
def _program(name):
    return program_of(_prior(name))


@functools.cache
def _run(name, strength, key):
    """``GROUPS`` groups of 2 (the smallest group: the median heuristic's guarded case)."""
    return ppd.infer(_program(name), ppd.guidance.particle(2, strength), jax.random.key(key), num_chains=GROUPS)


def _draws(dt, site="x"):
    return np.asarray(dt.posterior[site].values, np.float64)


@functools.cache
def _exact(num=100_000):
    return np.asarray(MIX.sample(jax.random.key(123), num), np.float64)


# ----------------------------------------------------------------------------------------- argument checks


@pytest.mark.parametrize("kwargs, name", [
    ({"num_particles": 4, "strength": -0.5}, "strength"),
    ({"num_particles": 1, "strength": 1.0}, "num_particles"),
    ({"num_particles": 0, "strength": 1.0}, "num_particles"),
    ({"num_particles": 4, "strength": 1.0, "bandwidth": 0.0}, "bandwidth"),
    ({"num_particles": 4, "strength": 1.0, "bandwidth": -1.0}, "bandwidth"),
    ({"num_particles": 4, "strength": 1.0, "active_above": -1.0}, "active_above"),
])
def test_bad_arguments_name_themselves(kwargs, name):
    kwargs = dict(kwargs)
    n, s = kwargs.pop("num_particles"), kwargs.pop("strength")
    with pytest.raises(ValueError, match=name):
        ppd.guidance.particle(n, s, **kwargs)


@pytest.mark.parametrize("features", [lambda x0: jnp.sum(x0**2), lambda x0: jnp.outer(x0, x0)],
                         ids=["scalar", "matrix"])
def test_features_must_return_a_vector_checked_at_infer(features):
    sampler = ppd.guidance.particle(4, 1.0, features=features)  # not checked until the model is known
    with pytest.raises(ValueError, match="features"):
        ppd.infer(_program("ddpm"), sampler, jax.random.key(0), num_chains=1)


# ------------------------------------------------------------------- strength 0 and the n = 2 bandwidth guard


def test_strength_zero_is_the_iid_chain():
    """Strength 0, 200 groups of 2 on three keys (1,200 draws), against 100,000 draws of the same
    30-step DDPM chain (``DiffusionPrior.sample``) and the exact mixture: the pooled mean and variance
    of each coordinate are the chain's within 4 standard errors, the exact mixture's within 4 standard
    errors plus the chain's own bias (measured: variance -0.27 and -0.24 of 3.06 and 2.56, mean within
    0.01; allowance 0.35 and 0.05), the two members of a group are uncorrelated, and their mean distance
    is the chain's i.i.d. E|x - x'| within 4 standard errors. Measured against the chain: mean errors
    -1.2 and -1.8 SE, variance errors -0.5 and +0.3 SE, |r| <= 0.02 (bound 0.16), distances -1.9 to
    +0.7 SE on the three keys."""
    chain = np.asarray(_prior("ddpm").sample(jax.random.key(77), (100_000,)), np.float64)
    exact = _exact()
    x = np.concatenate([_draws(_run("ddpm", 0.0, k)) for k in KEYS])  # (600, 2, 2)
    pooled = x.reshape(-1, 2)
    num = pooled.shape[0]
    for ref, mean_tol, var_tol in ((chain, 0.0, 0.0), (exact, 0.05, 0.35)):
        se_mean = np.sqrt(ref.var(0) / num)
        np.testing.assert_array_less(np.abs(pooled.mean(0) - ref.mean(0)), 4 * se_mean + mean_tol)
        m4 = np.mean((ref - ref.mean(0)) ** 4, axis=0)  # Var of a sample variance ~ (m4 - var^2) / N
        se_var = np.sqrt((m4 - ref.var(0) ** 2) / num)
        np.testing.assert_array_less(np.abs(pooled.var(0) - ref.var(0)), 4 * se_var + var_tol)
    for c in range(2):  # members uncorrelated: |r| < 4 / sqrt(G)
        r = np.corrcoef(x[:, 0, c], x[:, 1, c])[0, 1]
        assert abs(r) < 4 / np.sqrt(x.shape[0]), (c, r)
    iid_distance = np.mean(np.linalg.norm(chain[:50_000] - chain[50_000:], axis=1))
    for k in KEYS:
        dist_k = metrics.mean_pairwise_distance(_draws(_run("ddpm", 0.0, k)))
        se = dist_k.std() / np.sqrt(dist_k.size)
        assert abs(dist_k.mean() - iid_distance) < 4 * se, (k, dist_k.mean(), iid_distance, se)


def test_median_bandwidth_is_guarded_at_two_particles():
    """h = median_{i<j} ||z_i - z_j||^2 / max(log(n - 1), log 2): at n = 2 (log 1 = 0) the floor log 2
    keeps h finite, so the repulsion cannot vanish; from n = 3 on it is the heuristic itself."""
    from pp_diffusion.guidance._repulsion import joint_potential, median_bandwidth

    z2 = jnp.array([[0.0, 0.0], [3.0, 4.0]])
    assert float(median_bandwidth(z2)) == pytest.approx(25.0 / np.log(2.0), rel=1e-6)
    phi, h = joint_potential(z2)
    assert float(phi) == pytest.approx(0.5, rel=1e-6) and float(h) == pytest.approx(25.0 / np.log(2.0), rel=1e-6)  # the other particle sits at k = 1/2
    grad = jax.grad(lambda z: joint_potential(z)[0])(z2)
    assert np.all(np.isfinite(grad)) and float(jnp.linalg.norm(grad[0])) > 0.05
    z5 = jnp.arange(10.0).reshape(5, 2) ** 1.5
    d2 = np.sum((np.asarray(z5)[:, None] - np.asarray(z5)[None]) ** 2, axis=-1)[np.triu_indices(5, 1)]
    assert float(median_bandwidth(z5)) == pytest.approx(np.median(d2) / np.log(4.0), rel=1e-5)


@pytest.mark.parametrize("name", list(PRIORS))
def test_repulsion_spreads_the_group_with_every_integrator(name):
    """n = 2 against strength 0, on three keys, for DDPM (strength 2), deterministic DDIM (eta 0),
    DPM-Solver++(2M) and UniPC (strength 1). At n = 2 the median heuristic's log(n - 1) is 0: without
    the guard (log 2) the bandwidth is infinite, the repulsion vanishes and the two runs would agree
    within noise. The mean in-group distance must rise by 1.2x and by 5 standard errors of the
    difference. Measured (keys 0, 1, 2): strength 0 2.6-3.1 for all four; PG 3.94-4.07 (DDPM,
    1.36-1.52x, 7.7-10.1 SE), 5.54-5.56 (DDIM), 5.43-5.50 (DPM-Solver++), 5.46-5.55 (UniPC) (> 20 SE)."""
    for k in KEYS:
        iid = metrics.mean_pairwise_distance(_draws(_run(name, 0.0, k)))
        dt = _run(name, STRENGTHS[name], k)
        pg = metrics.mean_pairwise_distance(_draws(dt))
        se = np.sqrt(iid.var() / iid.size + pg.var() / pg.size)
        assert pg.mean() > 1.2 * iid.mean() and pg.mean() - iid.mean() > 5 * se, (name, k, iid.mean(), pg.mean(), se)
        h = dt.diagnostics["bandwidth"]
        assert h.dims == ("chain", "step") and h.sizes["step"] == STEPS
        assert np.all(np.isfinite(h.values)) and np.all(h.values > 0)  # the guard: finite at n = 2
        assert int(dt.diagnostics["out_of_support"].values.sum()) == 0
        assert np.all(dt.sample_stats["vjp"].values == 0)  # pixel space, no observation: no VJP
        assert np.all(dt.sample_stats["nfe"].values == _prior(name).nfe)


# ---------------------------------------------------------------------------------------------- compositions


def test_observation_composes_with_dps():
    """y = x_1 + N(0, 0.3^2) with y = 2: groups of 4 on two keys. The posterior keeps (group, member, 2),
    every non-final step takes one VJP (steps - 1), the bandwidth is per step, and the draws follow
    the observation (the prior's x_1 has mean 0 and standard deviation 1.7; measured: mean x_1 1.95
    and 2.03 on keys 0 and 1, asserted within 0.4 of 2)."""
    prior = _prior("ddpm")

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[:1], 0.3), obs=y)

    y = np.array([2.0])
    for k in (0, 1):
        dt = ppd.infer(program, ppd.guidance.particle(4, STRENGTH), jax.random.key(k), num_chains=50, y=y)
        x = dt.posterior["x"]
        assert x.dims[:2] == ("chain", "draw") and x.shape == (50, 4, 2)
        assert np.all(np.isfinite(x.values))
        assert np.all(dt.sample_stats["vjp"].values == STEPS - 1)
        assert dt.diagnostics["bandwidth"].dims == ("chain", "step")
        assert dt.diagnostics["bandwidth"].sizes["step"] == STEPS
        assert "y" in dt.observed_data
        assert abs(float(x.values[..., 0].mean()) - 2.0) < 0.4


def test_feature_space_repulsion_takes_one_vjp_per_active_step():
    """features = tanh(xhat_0): a VJP at each active step only (sigma_t / alpha_t >= 1, final step
    excluded), counted from the grid; the repulsion through the network still spreads a group of 2 at
    strength 4 (against the strength-0 run of the same prior: measured 2.62 -> 4.35 and 2.90 -> 4.46 on
    keys 0 and 1, 13-14 standard errors of the difference; asserted: 5)."""
    prior = _prior("ddpm")
    times = np.asarray(prior.times)
    sched = prior.model.schedule
    ratio = np.asarray(sched.sigma(times[:-1])) / np.asarray(sched.alpha(times[:-1]))
    expected = int(np.sum(ratio[:-1] >= 1.0))  # the last transition (to t = 0) never repels
    assert 0 < expected < STEPS - 1
    for k in (0, 1):
        dt = ppd.infer(_program("ddpm"), ppd.guidance.particle(2, 4.0, features=jnp.tanh),
                       jax.random.key(k), num_chains=GROUPS)
        active = dt.diagnostics["repulsion_active"].values
        assert np.all(active.sum(axis=1) == expected)
        assert np.all(dt.sample_stats["vjp"].values == expected)
        pg = metrics.mean_pairwise_distance(_draws(dt))
        iid = metrics.mean_pairwise_distance(_draws(_run("ddpm", 0.0, k)))
        se = np.sqrt(iid.var() / iid.size + pg.var() / pg.size)
        assert pg.mean() - iid.mean() > 5 * se, (k, iid.mean(), pg.mean(), se)


def test_classifier_free_guided_prior():
    """CFG's model (two network calls per step) under particle guidance: 10 steps, one group of 4."""
    model = ppd.guidance.classifier_free(ppd.zoo.load("digits_conditional"), label=3, scale=2.0)
    prior = ppd.DiffusionPrior(model, steps=10)
    dt = ppd.infer(program_of(prior), ppd.guidance.particle(4, STRENGTH), jax.random.key(0), num_chains=1)
    x = dt.posterior["x"].values
    assert x.shape == (1, 4, 8, 8)
    assert np.all(np.isfinite(x))
    assert np.all(dt.sample_stats["nfe"].values == 20)
    assert np.all(np.isfinite(dt.diagnostics["bandwidth"].values))
