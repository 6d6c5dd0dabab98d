"""pp_diffusion.diagnostics: simulation-based calibration passes for twisted SMC on the exact mixture
and flags a sampler whose likelihood is narrower than the data's; its plot and the posterior
predictive render through arviz-plots; bad arguments are refused before anything runs.

All SBC runs share one compilation: the same program (30 DDPM steps on the exact 2-D mixture) and
the same sampler, twisted SMC with 64 particles, over 19 chains.
"""

import warnings

import jax
import jax.numpy as jnp
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr

import pp_diffusion as ppd
from pp_diffusion.diagnostics import sbc_ranks

matplotlib.use("Agg")

GMM = ppd.GaussianMixture(np.ones(3), np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]]), np.array([0.3, 0.5, 0.4]))
PRIOR = ppd.DiffusionPrior(GMM.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=30)
OP = ppd.operators.Dense(np.array([[1.0, 0.5]]))
NUM_DRAWS = 19
SAMPLER = ppd.smc.twisted(64)
Y = np.zeros(1, np.float32)  # a template: each simulation replaces it


def make_program(sigma):
    """x ~ the mixture's 30-step DDPM chain; side = [x_0 > 0], a discrete quantity whose ranks tie;
    y ~ N(A x, sigma^2), A = [1, 0.5]."""
    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.deterministic("side", jnp.where(x[0] > 0, 1.0, 0.0))
        numpyro.sample("y", dist.Normal(OP(x), sigma), obs=y)

    return program


PROGRAM = make_program(0.5)


def run_sbc(key, num_simulations, **kwargs):
    return ppd.diagnostics.sbc(PROGRAM, SAMPLER, jax.random.key(key), num_simulations=num_simulations,
                               num_draws=NUM_DRAWS, var_names=["x", "side"], progress_bar=False, y=Y, **kwargs)


@pytest.fixture(scope="module")
def calibrated():
    with warnings.catch_warnings():  # a few runs of 64 particles hit low ESS, which sbc reports once
        warnings.filterwarnings("ignore", "sbc: infer warned", RuntimeWarning)
        return run_sbc(0, 100)


# --------------------------------------------------------------------------- SBC on the exact mixture

def test_sbc_passes_for_twisted_smc(calibrated):
    """100 simulations, ranks among 19 draws (20 bins): seen p-values 0.094 and 0.90 for x, 0.67 for side,
    0.28 overall. Fails with the ranks of x_0's truth taken among x_1's draws, and (side) without the
    random tie-breaking."""
    summary = calibrated["summary"]
    assert calibrated["ranks"]["x"].dims == ("simulation", "x_dim_0")
    assert calibrated["ranks"]["x"].shape == (100, 2)
    ranks = calibrated["ranks"].to_dataset()
    assert ranks["x"].min() >= 0 and ranks["x"].max() <= NUM_DRAWS
    assert int(summary["x_num_valid"].min()) == 100
    assert np.all(summary["x_p_value"].values > 0.01)
    assert float(summary["side_p_value"]) > 0.01
    assert calibrated.attrs["p_value"] > 0.05 and calibrated.attrs["calibrated"]
    pit = calibrated["prior_sbc"].to_dataset()
    assert float(pit["x"].min()) > 0 and float(pit["x"].max()) < 1
    # the PIT is uniform's: mean 1/2, standard deviation 1/sqrt(12) = 0.289, within sampling error (~0.03)
    np.testing.assert_allclose(summary["x_pit_mean"].values, 0.5, atol=0.06)
    np.testing.assert_allclose(summary["x_pit_std"].values, 12**-0.5, atol=0.03)


def test_sbc_flags_a_too_narrow_likelihood():
    """Data simulated with noise sd 3, the posterior computed with sd 0.5: the posterior is too narrow,
    the ranks pile up at both ends (PIT sd above 0.289). 40 simulations: seen p-value 1.2e-7 for x_0,
    3.6e-7 overall."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "sbc: infer warned", RuntimeWarning)
        result = run_sbc(1, 40, simulator=make_program(3.0))
    summary = result["summary"]
    assert result.attrs["p_value"] < 1e-4 and not result.attrs["calibrated"]
    assert not bool(summary["x_calibrated"][0])
    assert float(summary["x_pit_std"][0]) > 0.35


def test_ranks_break_ties_uniformly():
    """A discrete truth among tied draws: without the random tie-breaking the rank would always be the
    count of draws below (here 3); with it, uniform on 3..3+4."""
    rng = np.random.default_rng(0)
    truth = np.ones((4000,))
    draws = np.broadcast_to(np.array([0, 0, 0, 1, 1, 1, 1, 2, 2]), (4000, 9))
    ranks = sbc_ranks(truth, draws, rng)
    counts = np.bincount(ranks.astype(int), minlength=10)
    assert counts[:3].sum() == 0 and counts[8:].sum() == 0
    np.testing.assert_allclose(counts[3:8] / 4000, 0.2, atol=0.025)
    draws = np.array([[0.0, np.nan]])
    assert np.isnan(sbc_ranks(np.zeros(1), draws, rng)[0])


# --------------------------------------------------------------------------- plots

def test_plot_sbc_has_one_panel_per_coordinate(calibrated):
    from matplotlib.figure import Figure

    pc = ppd.diagnostics.plot_sbc(calibrated, backend="matplotlib")
    fig = pc.viz["figure"].item()
    assert isinstance(fig, Figure)
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.lines]
    assert len(panels) == 3  # x[0], x[1], side
    titles = sorted(ax.get_title() for ax in panels)
    assert any("side" in t for t in titles) and sum("x" in t for t in titles) == 2
    pc = ppd.diagnostics.plot_sbc(calibrated, var_names="x", backend="matplotlib")
    assert len([ax for ax in pc.viz["figure"].item().axes if ax.get_visible() and ax.lines]) == 2


# --------------------------------------------------------------------------- argument checks

@pytest.mark.parametrize("kwargs, match", [
    ({"num_simulations": 0}, "num_simulations must be a positive integer"),
    ({"num_simulations": 2.5}, "num_simulations must be a positive integer"),
    ({"num_draws": -1}, "num_draws must be a positive integer"),
    ({"num_draws": 10, "draws_per_chain": 3}, "draws_per_chain must divide num_draws"),
    ({"num_draws": 128, "draws_per_chain": 128}, "exceeds the 64 draws per run"),
    ({"num_bins": 50}, "num_bins must lie between 2"),
    ({"significance": 1.5}, "significance must lie in"),
    ({"var_names": ["z"]}, "var_names must name"),
])
def test_sbc_refuses_bad_arguments(kwargs, match):
    kwargs = {"num_simulations": 10, "num_draws": 9, **kwargs}
    with pytest.raises(ValueError, match=match):
        ppd.diagnostics.sbc(PROGRAM, SAMPLER, jax.random.key(0), y=Y, **kwargs)


def test_sbc_refuses_programs_and_samplers_it_cannot_check():
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="program observes nothing"):
        ppd.diagnostics.sbc(PROGRAM, SAMPLER, key, num_simulations=5, num_draws=3)
    with pytest.raises(ValueError, match="does not condition"):
        ppd.diagnostics.sbc(PROGRAM, ppd.iid(10), key, num_simulations=5, num_draws=3, y=Y)
    with pytest.raises(TypeError, match="sampler must be"):
        ppd.diagnostics.sbc(PROGRAM, "twisted", key, num_simulations=5, num_draws=3, y=Y)
    with pytest.raises(TypeError, match="rng_key must be"):
        ppd.diagnostics.sbc(PROGRAM, SAMPLER, 0, num_simulations=5, num_draws=3, y=Y)

    def with_factor(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(OP(x), 0.5), obs=y)
        numpyro.factor("penalty", -jnp.sum(x**2))

    with pytest.raises(ValueError, match="factor site"):
        ppd.diagnostics.sbc(with_factor, SAMPLER, key, num_simulations=5, num_draws=3, y=Y)

    def derived(data=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(OP(x), 0.5), obs=data["y"])

    with pytest.raises(ValueError, match="takes its value from no keyword argument"):
        ppd.diagnostics.sbc(derived, SAMPLER, key, num_simulations=5, num_draws=3, data={"y": Y})

    def no_side(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(OP(x), 0.5), obs=y)

    with pytest.raises(ValueError, match=r"simulator has no site\(s\) \['side'\]"):
        ppd.diagnostics.sbc(PROGRAM, SAMPLER, key, num_simulations=5, num_draws=3, var_names=["x", "side"],
                            simulator=no_side, y=Y)


def test_plot_sbc_refuses_other_input():
    with pytest.raises(TypeError, match="result must be"):
        ppd.diagnostics.plot_sbc(xr.DataTree())


# --------------------------------------------------------------------------- replicated (slow)

@pytest.mark.slow
def test_sbc_p_values_are_not_too_small_over_replicates():
    """Five more calibrated runs of 100 simulations (keys 10-14): at the 0.01 level at most one may reject.
    Seen overall p-values 0.60, 0.92, 0.77, 1.0, 0.84 (100 s)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        p = [run_sbc(10 + i, 100).attrs["p_value"] for i in range(5)]
    assert sum(v < 0.01 for v in p) <= 1, p
