"""pp_diffusion.infer with the unconditional sampler iid: the DataTree it returns, ArviZ on it,
independent chains, reproducibility, and the errors it raises.

The program draws x from a DiffusionPrior over the exact 2-D Gaussian mixture, so the posterior
(here the prior) mean is known in closed form; the extra latent z ~ N(sum(x), 1) and the
deterministic norm(x) are checked draw by draw.
"""

import arviz as az
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr

import pp_diffusion as ppd
from pp_diffusion import DiffusionPrior, GaussianMixture, schedules

SEED = 0
WEIGHTS = np.array([0.3, 0.5, 0.2])
MEANS = np.array([[-4.0, 0.0], [4.0, 2.0], [0.0, -4.0]])
MIXTURE = GaussianMixture(WEIGHTS, MEANS, np.ones(3))
MODEL = MIXTURE.diffusion_model(schedules.ddpm_linear())
MIXTURE_MEAN = WEIGHTS @ MEANS
MIXTURE_VAR = WEIGHTS @ (1.0 + MEANS**2) - MIXTURE_MEAN**2

STEPS, NUM_CHAINS, NUM_DRAWS = 50, 4, 500
PRIOR = DiffusionPrior(MODEL, steps=STEPS)
SAMPLER = ppd.iid(NUM_DRAWS)


def program():
    x = numpyro.sample("x", PRIOR)
    numpyro.deterministic("norm", jnp.linalg.norm(x))
    numpyro.sample("z", dist.Normal(jnp.sum(x), 1.0))


def observing_program(y=None):
    x = numpyro.sample("x", PRIOR)
    numpyro.sample("y", dist.Normal(jnp.sum(x), 1.0), obs=y)


def _infer(seed):
    return ppd.infer(program, SAMPLER, jax.random.key(seed), num_chains=NUM_CHAINS)


@pytest.fixture(scope="module")
def idata():
    return _infer(SEED)


# --------------------------------------------------------------------------- the DataTree

def test_groups_and_dimensions(idata):
    assert isinstance(idata, xr.DataTree)
    assert set(idata.children) == {"prior", "sample_stats_prior", "diagnostics"}  # nothing observed
    post = idata.prior
    assert set(post.data_vars) == {"x", "norm", "z"}
    assert post["x"].dims == ("chain", "draw", "x_dim_0")
    assert post["x"].shape == (NUM_CHAINS, NUM_DRAWS, 2)
    assert post["norm"].dims == ("chain", "draw") and post["z"].dims == ("chain", "draw")
    np.testing.assert_array_equal(post["chain"], np.arange(NUM_CHAINS))
    np.testing.assert_array_equal(post["draw"], np.arange(NUM_DRAWS))
    assert np.all(np.isfinite(post["x"].values))


def test_sample_stats_count_network_evaluations(idata):
    nfe = idata.sample_stats_prior["nfe"]
    assert nfe.dims == ("chain", "draw")
    assert np.all(nfe.values == STEPS * PRIOR.integrator.nfe_per_step)
    assert np.all(nfe.values == PRIOR.nfe)


def test_attributes_name_the_sampler_and_settings(idata):
    for group in ["prior", "sample_stats_prior"]:
        attrs = idata[group].attrs
        assert attrs["sampler"] == "iid"
        assert attrs["sampler_num_samples"] == NUM_DRAWS
        assert attrs["num_chains"] == NUM_CHAINS
        assert attrs["steps"] == STEPS
        assert attrs["integrator"] == PRIOR.integrator.name == "ddpm"
        assert attrs["model"] == "gmm"
        assert attrs["diffusion_site"] == "x"
        assert attrs["inference_library"] == "pp_diffusion"


# --------------------------------------------------------------------------- ArviZ on it

def test_arviz_summary_rhat_and_ess(idata):
    total = NUM_CHAINS * NUM_DRAWS
    summary = az.summary(idata, group="prior", round_to="none")
    assert {"x[0]", "x[1]", "norm", "z"} <= set(summary.index)
    # independent draws: r_hat ~ 1 (measured |r_hat - 1| <= 0.0031 over seeds 0-9), ESS ~ the
    # number of draws (measured bulk ESS 1740-2155 of 2000)
    assert np.all(np.abs(summary["r_hat"].astype(float) - 1.0) < 0.01)
    assert np.all(summary["ess_bulk"].astype(float) > 0.75 * total)
    # the sample mean against the exact mixture mean, at 5 standard errors (measured |z| <= 1.63)
    means = summary.loc[["x[0]", "x[1]"], "mean"].astype(float).to_numpy()
    assert np.all(np.abs(means - MIXTURE_MEAN) < 5 * np.sqrt(MIXTURE_VAR / total)), means

    rhat = az.rhat(idata, group="prior")
    ess = az.ess(idata, group="prior")
    np.testing.assert_allclose(rhat["x"].values, summary.loc[["x[0]", "x[1]"], "r_hat"].astype(float), rtol=1e-6)
    np.testing.assert_allclose(ess["x"].values, summary.loc[["x[0]", "x[1]"], "ess_bulk"].astype(float), rtol=1e-6)
    assert np.all(np.abs(rhat["z"].values - 1.0) < 0.01)


def test_deterministic_and_extra_latent_sites_are_carried(idata):
    x = idata.prior["x"].values.astype(np.float64)
    np.testing.assert_allclose(idata.prior["norm"].values, np.linalg.norm(x, axis=-1), rtol=1e-5)
    # z | x ~ N(x_1 + x_2, 1): its residuals are standard normal and independent of x
    # (measured |z| of their mean and variance <= 2.2, seeds 0-9)
    resid = (idata.prior["z"].values - x.sum(-1)).ravel()
    n = resid.size
    assert abs(resid.mean()) < 5 / np.sqrt(n)
    assert abs(resid.var() - 1.0) < 5 * np.sqrt(2.0 / n)
    assert abs(np.corrcoef(resid, x.sum(-1).ravel())[0, 1]) < 5 / np.sqrt(n)


def test_chains_are_independent_runs(idata):
    x = idata.prior["x"].values
    assert np.unique(x[..., 0]).size == x[..., 0].size  # no draw repeated within or across chains
    for a in range(NUM_CHAINS):
        for b in range(a + 1, NUM_CHAINS):
            assert not np.allclose(x[a], x[b])
    # each chain on its own is a sample from the mixture: component frequencies within 5 SE
    # (measured max |z| 2.7 over the 12 frequencies, seeds 0-9)
    nearest = np.argmin(((x[..., None, :] - MEANS) ** 2).sum(-1), axis=-1)
    freq = np.stack([np.bincount(c, minlength=3) / NUM_DRAWS for c in nearest])
    assert np.all(np.abs(freq - WEIGHTS) < 5 * np.sqrt(WEIGHTS * (1 - WEIGHTS) / NUM_DRAWS)), freq


def test_same_key_same_result_other_key_other_result(idata):
    again = _infer(SEED)
    for name in ["x", "norm", "z"]:
        np.testing.assert_array_equal(again.prior[name].values, idata.prior[name].values)
    other = _infer(SEED + 1)
    assert not np.allclose(other.prior["x"].values, idata.prior["x"].values)


# --------------------------------------------------------------------------- errors

def test_program_without_a_diffusion_prior():
    def plain():
        numpyro.sample("x", dist.Normal(0.0, 1.0))

    with pytest.raises(ValueError, match="DiffusionPrior"):
        ppd.infer(plain, SAMPLER, jax.random.key(0))


def test_program_with_two_diffusion_priors():
    def two():
        numpyro.sample("a", PRIOR)
        numpyro.sample("b", PRIOR)

    with pytest.raises(ValueError, match="DiffusionPrior") as err:
        ppd.infer(two, SAMPLER, jax.random.key(0))
    assert "'a'" in str(err.value) and "'b'" in str(err.value)


def test_observed_diffusion_site():
    def observed_x(x=None):
        numpyro.sample("x", PRIOR, obs=x)

    with pytest.raises(ValueError, match="observed"):
        ppd.infer(observed_x, SAMPLER, jax.random.key(0), x=jnp.zeros(2))


@pytest.mark.parametrize("num_chains", [0, -2, 1.5, True, "4"])
def test_num_chains_must_be_a_positive_integer(num_chains):
    with pytest.raises(ValueError, match="num_chains"):
        ppd.infer(program, SAMPLER, jax.random.key(0), num_chains=num_chains)


@pytest.mark.parametrize("sampler", [ppd.iid, "iid", None, {"name": "iid"}])
def test_sampler_must_be_a_sampler(sampler):
    with pytest.raises(TypeError, match="Sampler"):
        ppd.infer(program, sampler, jax.random.key(0))


def test_rng_key_must_be_a_key():
    with pytest.raises(TypeError, match="rng_key"):
        ppd.infer(program, SAMPLER, 0)


def test_iid_draws_the_prior_and_prior_predictive_of_a_program_with_observations():
    """iid ignores the observations: its draws are the prior, and the observed site is simulated (the
    prior predictive). y ~ N(x_1 + x_2, 1): its mean and variance are the mixture's sum's, plus 1."""
    idata = ppd.infer(observing_program, ppd.iid(2000), jax.random.key(0), num_chains=2, y=1.0)
    assert {"prior", "prior_predictive", "observed_data"} <= set(idata.children)
    assert "posterior" not in idata.children and "log_likelihood" not in idata.children
    y = np.asarray(idata.prior_predictive["y"].values, np.float64).ravel()
    mean = MIXTURE_MEAN.sum()
    var = float(np.ones(2) @ MIXTURE.covariance() @ np.ones(2)) + 1.0
    # 4,000 draws of the 50-step chain: 5 standard errors (the chain's own bias is below 0.05 here)
    assert abs(y.mean() - mean) < 5 * np.sqrt(var / y.size) + 0.05, (y.mean(), mean)
    assert abs(y.var() / var - 1.0) < 0.1, (y.var(), var)
    with pytest.raises(ValueError, match="posterior_predictive"):
        ppd.infer(observing_program, ppd.iid(10), jax.random.key(0), y=1.0, posterior_predictive=True)


def test_iid_num_samples_must_be_a_positive_integer():
    for bad in [0, -1, 2.5, True]:
        with pytest.raises(ValueError, match="num_samples"):
            ppd.iid(bad)


# --------------------------------------------------------------------------- progress bar


def _bar_lines(err: str) -> list[str]:
    return [part for part in err.replace("\r", "\n").split("\n") if "step" in part and "/" in part]


@pytest.mark.parametrize("make_sampler, steps", [(lambda: ppd.iid(8), 30), (lambda: ppd.smc.bootstrap(8), 25)])
def test_progress_bar_counts_every_step(monkeypatch, make_sampler, steps):
    import tqdm.auto

    from pp_diffusion import _progress

    closed = {}

    class Recording(tqdm.auto.tqdm):
        def close(self):  # tqdm may close a bar more than once
            closed.setdefault(id(self), (self.n, self.total))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Recording)
    monkeypatch.setattr(_progress, "_interactive", lambda: True)  # a tqdm bar, as on a terminal
    mixture = GaussianMixture(np.ones(2), np.array([[-2.0], [2.0]]), np.full(2, 0.25))
    prior = DiffusionPrior(mixture.diffusion_model(schedules.VPLinear()), steps=steps)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x, 1.0), obs=y)

    data = {"y": jnp.array([0.5])} if make_sampler().conditions else {}
    ppd.infer(program, make_sampler(), jax.random.key(0), num_chains=3, progress_bar=True, **data)
    ppd.infer(program, make_sampler(), jax.random.key(1), num_chains=3, progress_bar=False, **data)
    assert list(closed.values()) == [(steps, steps)]  # one bar, on the first run only, at every step once


def test_progress_bar_is_off_by_default_under_pytest(capsys):
    from pp_diffusion import _progress

    assert not _progress.default_enabled()
    mixture = GaussianMixture(np.ones(1), np.zeros((1, 1)), np.ones(1))
    prior = DiffusionPrior(mixture.diffusion_model(schedules.VPLinear()), steps=10)
    ppd.infer(lambda: numpyro.sample("x", prior), ppd.iid(4), jax.random.key(1))
    assert _bar_lines(capsys.readouterr().err) == []


# --------------------------------------------------------------------------- compilation cache

class _Counter:
    """A mutable counter that the compilation cache keys by identity (a plain dict it would key by
    content, and its changing count would make every call compile anew)."""

    def __init__(self):
        self.traces = 0

    def __getitem__(self, key):
        return getattr(self, key)

    def __setitem__(self, key, value):
        setattr(self, key, value)


def _counting(sampler):
    """The sampler with a counter of how often its run is traced (once per compilation)."""
    count = _Counter()

    def run(rng_key, context):
        count["traces"] += 1
        return sampler.run(rng_key, context)

    return sampler._replace(run=run), count


def _posterior_mean(y, sigma):
    post = MIXTURE.posterior(np.eye(2), y, sigma**2)
    return np.asarray(post.weights, np.float64) @ np.asarray(post.means, np.float64)


@pytest.mark.parametrize("make", [lambda: ppd.smc.bootstrap(400), lambda: ppd.smc.mcgdiff(400)])
def test_a_new_observation_reuses_the_compilation(make):
    """The observed values are arguments of the compiled run: a second y of the same shape is not
    traced again, and its draws follow its own exact posterior (means within 0.15; measured
    errors <= 0.05 with 2 chains of 400)."""

    def observed(y=None):
        x = numpyro.sample("x", PRIOR)
        numpyro.sample("y", dist.Normal(x, 0.5), obs=y)

    sampler, count = _counting(make())
    for i, y in enumerate([np.array([4.0, 2.5]), np.array([-4.0, 0.5]), np.array([0.5, -3.5])]):
        idata = ppd.infer(observed, sampler, jax.random.key(i), num_chains=2, y=y)
        mean = np.asarray(idata.posterior["x"].values, np.float64).mean(axis=(0, 1))
        np.testing.assert_allclose(mean, _posterior_mean(y, 0.5), atol=0.15)
        np.testing.assert_allclose(idata.observed_data["y"].values, y)
        assert count["traces"] == 1


def test_a_program_needing_concrete_observations_still_runs():
    """A program that reads its observation with NumPy cannot take it as a traced argument: infer
    falls back to compiling it in (a new trace per value) and gives the same answer."""

    def numpy_program(y=None):
        x = numpyro.sample("x", PRIOR)
        scale = float(np.abs(np.asarray(y)).max()) * 0 + 0.5  # concrete use of y
        numpyro.sample("y", dist.Normal(x, scale), obs=y)

    sampler, count = _counting(ppd.smc.bootstrap(400))
    for i, y in enumerate([np.array([4.0, 2.5]), np.array([-4.0, 0.5])]):
        idata = ppd.infer(numpy_program, sampler, jax.random.key(i), num_chains=2, y=y)
        mean = np.asarray(idata.posterior["x"].values, np.float64).mean(axis=(0, 1))
        np.testing.assert_allclose(mean, _posterior_mean(y, 0.5), atol=0.15)
    # one compilation per value (the traced attempt fails in the setup, before the run is traced)
    assert count["traces"] == 2


def test_a_network_returning_nan_gives_flagged_draws_under_infer_and_predictive():
    """A network that returns NaN (here, once the chain leaves |x| < 3): iid's draws are counted and
    warned about, and numpyro.infer.Predictive, which returns what DiffusionPrior.sample gives, warns too."""
    from numpyro.infer import Predictive

    far_nan = lambda x, t: jnp.where(jnp.sum(x**2) > 9.0, jnp.nan, 0.1 * x)
    prior = ppd.DiffusionPrior(ppd.DiffusionModel(far_nan, "eps", ppd.schedules.VPLinear(), (2,)), 5)

    def program():
        numpyro.sample("x", prior)

    with pytest.warns(RuntimeWarning, match="non-finite draws"):
        idata = ppd.infer(program, ppd.iid(400), jax.random.key(0))
    bad = int(idata.diagnostics["nonfinite_draws"].values.sum())
    assert bad == int(np.sum(~np.all(np.isfinite(idata.prior["x"].values), axis=-1))) > 0
    with pytest.warns(RuntimeWarning, match="not finite"):
        Predictive(program, num_samples=8)(jax.random.key(1))
