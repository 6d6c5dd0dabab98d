"""``infer``'s DataTree in ArviZ's conventions: log_likelihood (LOO, model comparison), prior and
predictive groups (predictive checks, prior-posterior plots), diagnostics in a group of their own,
``dims`` / ``coords``, and NetCDF / Zarr round trips. Checked on the exact 2-D mixture."""

import arviz as az
import jax
import matplotlib
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from numpyro import handlers
from scipy import stats

import pp_diffusion as ppd

matplotlib.use("Agg")

MIXTURE = ppd.GaussianMixture(np.ones(4), 4.0 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]))
PRIOR = ppd.DiffusionPrior(MIXTURE.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=30)
Y = np.array([[2.0, 0.5], [1.5, -0.5], [2.5, 0.0]])  # three replicates of a noisy x


def noisy(sigma):
    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        with numpyro.plate("obs", 3):
            numpyro.sample("y", dist.Normal(x, sigma).to_event(1), obs=y)
    return program


@pytest.fixture(scope="module")
def idata():
    return ppd.infer(noisy(1.0), ppd.smc.twisted(400), jax.random.key(0), num_chains=2, y=Y,
                     dims={"x": ["axis"], "y": ["obs", "axis"]}, coords={"axis": ["a", "b"]},
                     posterior_predictive=True, num_prior_draws=300, return_particles=True)


def test_groups_and_dims(idata):
    assert set(idata.children) == {"posterior", "sample_stats", "log_likelihood", "posterior_predictive",
                                   "observed_data", "diagnostics", "particles", "prior", "sample_stats_prior",
                                   "prior_predictive"}
    assert idata.posterior["x"].dims == ("chain", "draw", "axis")
    assert list(idata.posterior["axis"].values) == ["a", "b"]
    assert idata.observed_data["y"].dims == ("obs", "axis")
    # the Normal's event dimension is summed in the log-likelihood: one value per replicate
    assert idata.log_likelihood["y"].dims == ("chain", "draw", "obs")
    assert idata.posterior_predictive["y"].dims == ("chain", "draw", "obs", "axis")
    assert idata.prior_predictive["y"].shape == (2, 300, 3, 2)
    assert idata.diagnostics["log_marginal_likelihood"].dims == ("chain",)
    assert idata.diagnostics["ess"].dims == ("chain", "step")
    assert all(v.dims[:2] == ("chain", "draw") for v in idata.sample_stats.data_vars.values())


def test_log_likelihood_is_each_replicates_log_density_at_each_draw(idata):
    x = idata.posterior["x"].values.astype(np.float64)
    want = stats.norm.logpdf(Y[None, None], x[:, :, None, :], 1.0).sum(-1)
    np.testing.assert_allclose(idata.log_likelihood["y"].values, want, rtol=1e-4, atol=1e-4)


def test_masks_and_scales_reach_the_log_likelihood():
    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        with handlers.scale(scale=2.0), handlers.mask(mask=np.array([True, False])):
            numpyro.sample("y", dist.Normal(x, 0.5), obs=y)

    out = ppd.infer(program, ppd.smc.bootstrap(64), jax.random.key(1), y=np.array([2.0, 0.0]))
    x = out.posterior["x"].values.astype(np.float64)
    ll = out.log_likelihood["y"].values
    np.testing.assert_allclose(ll[..., 0], 2.0 * stats.norm.logpdf(2.0, x[..., 0], 0.5), rtol=1e-4, atol=1e-4)
    assert np.all(ll[..., 1] == 0.0)  # a masked element contributes nothing


def test_factors_are_not_data():
    def program(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.factor("reward", 0.1 * x[0])

    out = ppd.infer(program, ppd.smc.bootstrap(64), jax.random.key(1))
    assert "log_likelihood" not in out.children and "observed_data" not in out.children


def test_posterior_predictive_matches_the_exact_posterior(idata):
    """y_rep = x + N(0, I): its mean is the posterior mean of x (exact: the mixture's posterior given
    the three replicates), its variance the posterior's plus 1."""
    post = MIXTURE.posterior(np.tile(np.eye(2), (3, 1)), Y.ravel(), 1.0)
    mean = np.asarray(post.weights, np.float64) @ np.asarray(post.means, np.float64)
    cov = post.covariance()
    rep = idata.posterior_predictive["y"].values.reshape(-1, 3, 2).astype(np.float64)
    # 800 draws, correlated by resampling (ESS of a few hundred): 0.25 is about 4 standard errors
    np.testing.assert_allclose(rep.mean(axis=(0, 1)), mean, atol=0.25)
    np.testing.assert_allclose(rep[:, 0].var(axis=0), np.diag(cov) + 1.0, rtol=0.25)


def test_arviz_loo_compare_and_plots_run(idata):
    loo = az.loo(idata)
    assert np.isfinite(loo.elpd) and loo.n_data_points == 3
    wide = ppd.infer(noisy(3.0), ppd.smc.twisted(400), jax.random.key(0), num_chains=2, y=Y)
    comparison = az.compare({"sigma=1": idata, "sigma=3": wide})
    assert set(comparison.index) == {"sigma=1", "sigma=3"}
    # the evidence says the same: the data were written with unit noise around x's modes
    log_z = {k: float(np.mean(v.diagnostics["log_marginal_likelihood"])) for k, v in
             {"sigma=1": idata, "sigma=3": wide}.items()}
    exact = {k: MIXTURE.log_evidence(np.tile(np.eye(2), (3, 1)), Y.ravel(), s**2) for k, s in
             {"sigma=1": 1.0, "sigma=3": 3.0}.items()}
    for k in log_z:
        assert abs(log_z[k] - exact[k]) < 0.3, (k, log_z[k], exact[k])
    assert comparison.index[0] == max(exact, key=exact.get)
    az.plot_ppc_dist(idata)
    az.plot_prior_posterior(idata, var_names=["x"])


@pytest.mark.parametrize("group", ["posterior", "sample_stats", "log_likelihood", "posterior_predictive",
                                   "prior", "prior_predictive", "sample_stats_prior"])
def test_summary_runs_on_every_group(idata, group):
    summary = az.summary(idata, group=group)
    assert len(summary) > 0 and "mean" in summary.columns


def test_summary_of_the_per_run_diagnostics(idata):
    summary = az.summary(idata, group="diagnostics", sample_dims=["chain"], kind="stats")
    np.testing.assert_allclose(float(summary.loc["log_marginal_likelihood", "mean"]),
                               float(idata.diagnostics["log_marginal_likelihood"].mean()), atol=0.01)


@pytest.mark.parametrize("fmt", ["netcdf", "zarr"])
def test_round_trips(idata, tmp_path, fmt):
    path = tmp_path / f"run.{fmt}"
    if fmt == "netcdf":
        idata.to_netcdf(path)
        back = xr.open_datatree(path)
    else:
        idata.to_zarr(path)
        back = xr.open_datatree(path, engine="zarr")
    assert set(back.children) == set(idata.children)
    for group in idata.children:
        xr.testing.assert_allclose(back[group].to_dataset().load(), idata[group].to_dataset(), rtol=0, atol=0)
    assert back.posterior.attrs["twists"] == idata.posterior.attrs["twists"]


@pytest.mark.parametrize("dims, coords, match", [
    ({"z": ["a"]}, None, "does not have"),
    ({"x": ["a", "b", "c"]}, None, r"dims\['x'\] names 3"),
    ({"y": ["obs"]}, None, r"dims\['y'\] names 1"),
    ({"x": ["axis"]}, {"axis": [1, 2, 3]}, r"coords\['axis'\] has 3 values"),
    ({"x": "axis"}, None, "dims must be a dict"),
])
def test_bad_dims_and_coords_are_refused_before_the_run(dims, coords, match):
    with pytest.raises((ValueError, TypeError), match=match):
        ppd.infer(noisy(1.0), ppd.smc.twisted(10), jax.random.key(0), y=Y, dims=dims, coords=coords)


def test_return_particles_and_prior_draws_need_the_right_sampler():
    with pytest.raises(ValueError, match="return_particles"):
        ppd.infer(noisy(1.0), ppd.iid(10), jax.random.key(0), y=Y, return_particles=True)
    with pytest.raises(ValueError, match="num_prior_draws"):
        ppd.infer(noisy(1.0), ppd.smc.twisted(10), jax.random.key(0), y=Y, num_prior_draws=-1)
