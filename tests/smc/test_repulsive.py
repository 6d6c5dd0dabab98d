"""smc.repulsive against 2-D quadrature: n = 2 members of a 1-D mixture with an RBF repulsion.

The target pi(x_1, x_2) = p(x_1) p(x_2) exp(-gamma k(x_1, x_2)) / Z, k = exp(-(x_1 - x_2)^2 / h), has
its evidence Z and the member marginal m(x_1) = p(x_1) E_p[exp(-gamma k(x_1, X))] / Z by quadrature on a
fine grid (the mixture's density is exact). The chain's own law differs from the mixture by its
discretisation: at 200 DDPM steps the log Z of the chain is within 0.01 of the quadrature's (400 steps:
-0.618 against -0.613; 100 steps: -0.637).
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import pytest

import pp_diffusion as ppd

MIX = ppd.GaussianMixture(np.array([0.3, 0.7]), np.array([[-2.0], [1.5]]), np.array([0.5, 0.3]))
GAMMA, H = 3.0, 1.0


def quadrature(gamma=GAMMA, h=H):
    """(log Z, P(x_1 < 0), E|x_1 - x_2|, grid, member marginal density) of the target."""
    g = np.linspace(-8.0, 8.0, 1601)
    dx = g[1] - g[0]
    p = np.exp(np.asarray(MIX.log_prob(jnp.asarray(g[:, None])), np.float64))
    joint = p[:, None] * p[None, :] * np.exp(-gamma * np.exp(-((g[:, None] - g[None, :]) ** 2) / h))
    z = joint.sum() * dx * dx
    marginal = joint.sum(1) * dx / z
    gap = (joint * np.abs(g[:, None] - g[None, :])).sum() * dx * dx / z
    return np.log(z), marginal[g < 0].sum() * dx, gap, g, marginal


def program_for(steps):
    prior = ppd.DiffusionPrior(MIX.diffusion_model(ppd.schedules.VPLinear(), "eps"), steps=steps)

    def program():
        numpyro.sample("x", prior)

    return program


@pytest.fixture(scope="module")
def runs():
    dt = ppd.infer(program_for(200), ppd.smc.repulsive(2000, 2, GAMMA, bandwidth=H), jax.random.key(0), num_chains=4)
    return dt


def test_evidence_matches_quadrature(runs):
    log_z = quadrature()[0]
    est = runs.diagnostics.log_marginal_likelihood.values
    errors = est - log_z
    print(f"log Z {log_z:.4f}; errors over 4 runs: median {np.median(errors):+.4f}, range "
          f"[{errors.min():+.4f}, {errors.max():+.4f}]")
    assert abs(np.median(errors)) < 0.03
    assert np.all(np.abs(errors) < 0.08)


def test_member_marginal_and_spread_match_quadrature(runs):
    _, p_neg, gap, g, marginal = quadrature()
    x = runs.posterior["x"].values[..., 0]  # (chain, draw, member)
    p_hat = (x < 0).mean(axis=(1, 2))
    gap_hat = np.abs(x[..., 0] - x[..., 1]).mean(axis=1)
    # W1 of the pooled members' law to the quadrature marginal, through the CDFs
    cdf = np.cumsum(marginal) * (g[1] - g[0])
    emp = np.searchsorted(np.sort(x.reshape(-1)), g) / x.size
    w1 = np.sum(np.abs(cdf - emp)) * (g[1] - g[0])
    print(f"P(x_1 < 0): exact {p_neg:.4f}, runs {np.round(p_hat, 4)}; E|x_1 - x_2|: exact {gap:.4f}, runs "
          f"{np.round(gap_hat, 4)}; W1 to the member marginal {w1:.4f}")
    # i.i.d. draws would give P(x < 0) = 0.3 and E|x_1 - x_2| = 1.82: far outside these bands
    assert np.all(np.abs(p_hat - p_neg) < 0.03)
    assert np.all(np.abs(gap_hat - gap) < 0.08)
    assert w1 < 0.06


def test_zero_gamma_is_iid_with_zero_evidence():
    dt = ppd.infer(program_for(50), ppd.smc.repulsive(256, 3, 0.0, bandwidth=H), jax.random.key(1))
    assert float(dt.diagnostics.log_marginal_likelihood.values[0]) == pytest.approx(0.0, abs=1e-6)
    assert dt.posterior["x"].shape == (1, 256, 3, 1)


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_particles=10, group_size=1, gamma=1.0, bandwidth=1.0), "group_size"),
    (dict(num_particles=10, group_size=2, gamma=-1.0, bandwidth=1.0), "gamma"),
    (dict(num_particles=10, group_size=2, gamma=1.0), "bandwidth is required"),
    (dict(num_particles=10, group_size=2, gamma=1.0, bandwidth=0.0), "bandwidth"),
])
def test_bad_input(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ppd.smc.repulsive(**kwargs)


def test_observations_are_refused():
    import numpyro.distributions as dist

    prior = ppd.DiffusionPrior(MIX.diffusion_model(ppd.schedules.VPLinear(), "eps"), steps=10)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    with pytest.raises(ValueError, match="guidance.particle"):
        ppd.infer(program, ppd.smc.repulsive(16, 2, 1.0, bandwidth=1.0), jax.random.key(0), y=np.zeros(1))
