"""pp_diffusion.plots: each function returns a Figure whose artists hold exactly the input data, and
rejects malformed input with a message naming what is wrong."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
import xarray as xr
from matplotlib.collections import LineCollection, PathCollection
from matplotlib.figure import Figure

import pp_diffusion as ppd
from pp_diffusion import plots

RNG = np.random.default_rng(0)


def _mixture():
    return ppd.GaussianMixture(np.array([0.5, 0.5]), np.array([[-2.0, 0.0], [2.0, 0.0]]), np.array([0.3, 0.3]))


def _markers(ax):
    """The per-chain log-evidence markers: unlabelled Line2D without a line."""
    return [line for line in ax.lines if line.get_linestyle() == "None"]


def _labelled(ax, prefix):
    return [line for line in ax.lines if line.get_label().startswith(prefix)]


# --------------------------------------------------------------------------- plot_samples_2d

def test_samples_2d_plots_the_draws_and_reference():
    draws = RNG.normal(size=(3, 40, 2))  # (chain, draw, 2) is flattened
    reference = RNG.normal(size=(25, 2))
    fig = plots.plot_samples_2d(draws, reference=reference, title="t")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    collections = [c for c in ax.collections if isinstance(c, PathCollection)]
    assert len(collections) == 2  # reference, then draws
    np.testing.assert_allclose(collections[0].get_offsets(), reference)
    np.testing.assert_allclose(collections[1].get_offsets(), draws.reshape(-1, 2))
    assert ax.get_title() == "t"


def test_samples_2d_density_contours_and_max_points():
    mixture = _mixture()
    draws = RNG.normal(size=(300, 2))
    fig = plots.plot_samples_2d(draws, mixture, max_points=100, resolution=30, extent=(-4, 4, -3, 3))
    (ax,) = fig.axes
    (points,) = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(points.get_offsets(), draws[:100])
    assert len(ax.collections) > 1  # the filled density and its contour lines
    assert ax.get_xlim() == (-4, 4) and ax.get_ylim() == (-3, 3)
    assert "n=300" in ax.get_legend().get_texts()[-1].get_text()


def test_samples_2d_draws_into_given_axes():
    fig = Figure()
    ax = fig.add_subplot()
    assert plots.plot_samples_2d(RNG.normal(size=(10, 2)), ax=ax) is fig
    assert fig.axes == [ax]


@pytest.mark.parametrize("bad", [np.zeros(5), np.zeros((5, 3)), np.zeros((2, 5, 1))])
def test_samples_2d_rejects_non_2d_points(bad):
    with pytest.raises(ValueError, match=r"draws must have shape \(\.\.\., 2\)"):
        plots.plot_samples_2d(bad)


def test_samples_2d_rejects_a_density_that_is_not_callable():
    with pytest.raises(TypeError, match="density must be a callable"):
        plots.plot_samples_2d(np.zeros((4, 2)), density=3.0)


# --------------------------------------------------------------------------- plot_trajectories_2d

def test_trajectories_2d_segments_and_endpoints_equal_the_paths():
    paths = RNG.normal(size=(4, 6, 2))
    times = np.linspace(1.0, 0.0, 6)
    fig = plots.plot_trajectories_2d(paths, times, _mixture(), resolution=30)
    assert isinstance(fig, Figure)
    assert len(fig.axes) == 2  # the plot and its colour bar
    ax = fig.axes[0]
    (lines,) = [c for c in ax.collections if isinstance(c, LineCollection) and c.get_array() is not None
                and len(c.get_segments()) == 4 * 5]
    segments = np.asarray(lines.get_segments())
    np.testing.assert_allclose(segments[:, 0], paths[:, :-1].reshape(-1, 2))
    np.testing.assert_allclose(segments[:, 1], paths[:, 1:].reshape(-1, 2))
    np.testing.assert_allclose(lines.get_array(), np.tile(0.5 * (times[:-1] + times[1:]), 4))
    start, end = [c for c in ax.collections if isinstance(c, PathCollection)]
    np.testing.assert_allclose(start.get_offsets(), paths[:, 0])
    np.testing.assert_allclose(end.get_offsets(), paths[:, -1])


def test_trajectories_2d_rejects_bad_shapes():
    with pytest.raises(ValueError, match="trajectories must have shape"):
        plots.plot_trajectories_2d(np.zeros((4, 2)))
    with pytest.raises(ValueError, match="trajectories must have shape"):
        plots.plot_trajectories_2d(np.zeros((4, 1, 2)))
    with pytest.raises(ValueError, match=r"times must have shape \(5,\)"):
        plots.plot_trajectories_2d(np.zeros((3, 5, 2)), times=np.linspace(1, 0, 4))


def test_density_grid_evaluates_the_log_density():
    mixture = _mixture()
    xs, ys, logp = plots.density_grid(mixture, (-3, 3, -1, 2), resolution=7)
    np.testing.assert_allclose(xs, np.linspace(-3, 3, 7))
    np.testing.assert_allclose(ys, np.linspace(-1, 2, 7))
    expected = np.asarray(mixture.log_prob(np.array([[xs[2], ys[5]]], dtype=np.float32)))[0]
    assert logp[5, 2] == pytest.approx(expected, rel=1e-5)


# --------------------------------------------------------------------------- plot_smc_diagnostics

def _smc_tree(num_chains=3, num_steps=20, log_evidence=None, attrs=None, drop=(), resampled=True):
    ess = RNG.uniform(50, 100, size=(num_chains, num_steps))
    res = RNG.uniform(size=(num_chains, num_steps)) < 0.25
    logz = RNG.normal(-2.0, 0.1, size=num_chains) if log_evidence is None else np.asarray(log_evidence, float)
    variables = {"ess": (("chain", "step"), ess), "log_marginal_likelihood": (("chain",), logz)}
    if resampled:
        variables["resampled"] = (("chain", "step"), res)
    for name in drop:
        variables.pop(name)
    stats = xr.Dataset(variables, coords={"chain": np.arange(num_chains), "step": np.arange(num_steps)},
                       attrs=attrs or {})
    return xr.DataTree.from_dict({"diagnostics": stats}), ess, res, logz


def test_smc_diagnostics_lines_hold_ess_resampling_and_evidence():
    tree, ess, res, logz = _smc_tree()
    fig = plots.plot_smc_diagnostics(tree, log_evidence_exact=-2.05)
    assert isinstance(fig, Figure)
    ax_ess, ax_z = fig.axes
    assert len(ax_ess.lines) == 3  # one per chain, no threshold line without the sampler's attributes
    for i, line in enumerate(ax_ess.lines):
        np.testing.assert_allclose(line.get_xdata(), np.arange(20))
        np.testing.assert_allclose(line.get_ydata(), ess[i])
        assert list(line.get_markevery()) == np.flatnonzero(res[i]).tolist()
    assert len(ax_z.lines) == 3 + 2  # a marker per chain, the mean, the exact value
    np.testing.assert_allclose([line.get_ydata()[0] for line in _markers(ax_z)], logz)
    (mean,) = _labelled(ax_z, "mean of 3 chains")
    np.testing.assert_allclose(mean.get_ydata(), logz.mean())
    (exact,) = _labelled(ax_z, "exact")
    np.testing.assert_allclose(exact.get_ydata(), -2.05)


def test_smc_diagnostics_threshold_line_and_title_from_attributes():
    attrs = {"sampler": "bootstrap", "sampler_num_particles": 100, "sampler_ess_threshold": 0.5,
             "sampler_resample_every": "None"}
    tree, *_ = _smc_tree(attrs=attrs)
    fig = plots.plot_smc_diagnostics(tree)
    ax_ess, ax_z = fig.axes
    assert len(ax_ess.lines) == 3 + 1
    (threshold,) = _labelled(ax_ess, "threshold")
    np.testing.assert_allclose(threshold.get_ydata(), 50.0)
    assert ax_ess.get_ylim()[1] == pytest.approx(105.0)
    assert "bootstrap" in fig.get_suptitle()
    assert len(ax_z.lines) == 3 + 1  # no exact value given

    # resampling on a fixed interval has no ESS threshold to draw
    tree, *_ = _smc_tree(attrs={**attrs, "sampler_resample_every": "5"})
    assert not _labelled(plots.plot_smc_diagnostics(tree).axes[0], "threshold")


def test_smc_diagnostics_without_evidence_says_so():
    tree, *_ = _smc_tree(log_evidence=[np.nan, np.nan], num_chains=2)
    fig = plots.plot_smc_diagnostics(tree, log_evidence_exact=-1.0)
    ax_z = fig.axes[1]
    assert not _labelled(ax_z, "mean")  # no mean of nothing
    assert len(_labelled(ax_z, "exact")) == 1
    assert any("no estimate (NaN) in chains [0, 1]" in t.get_text() for t in ax_z.texts)


def test_smc_diagnostics_names_degenerate_chains_and_averages_the_others():
    tree, *_ = _smc_tree(log_evidence=[-1.0, -np.inf, -3.0])
    ax_z = plots.plot_smc_diagnostics(tree).axes[1]
    (mean,) = _labelled(ax_z, "mean of 2 chains")
    np.testing.assert_allclose(mean.get_ydata(), -2.0)
    assert any("degenerate (-inf) in chains [1]" in t.get_text() for t in ax_z.texts)


def test_smc_diagnostics_without_resampled_has_no_markers():
    tree, ess, _, _ = _smc_tree(resampled=False)
    ax_ess = plots.plot_smc_diagnostics(tree).axes[0]
    assert all(len(line.get_markevery()) == 0 for line in ax_ess.lines)


def test_smc_diagnostics_accepts_the_dataset_and_given_axes():
    tree, ess, _, _ = _smc_tree()
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert plots.plot_smc_diagnostics(tree["diagnostics"].to_dataset(), axes=axes) is fig
    np.testing.assert_allclose(axes[0].lines[0].get_ydata(), ess[0])
    with pytest.raises(ValueError, match="two matplotlib Axes"):
        plots.plot_smc_diagnostics(tree, axes=[axes[0]])


@pytest.mark.parametrize("drop, missing", [(("ess",), "'ess'"),
                                           (("log_marginal_likelihood",), "'log_marginal_likelihood'"),
                                           (("ess", "log_marginal_likelihood"), "'ess' and no 'log_marginal_likelihood'")])
def test_smc_diagnostics_names_missing_statistics(drop, missing):
    tree, *_ = _smc_tree(drop=drop)
    with pytest.raises(ValueError, match=f"diagnostics has no {missing}"):
        plots.plot_smc_diagnostics(tree)


def test_smc_diagnostics_rejects_other_input():
    posterior_only = xr.DataTree.from_dict({"posterior": xr.Dataset({"x": (("chain", "draw"), np.zeros((2, 3)))})})
    with pytest.raises(ValueError, match="no diagnostics group"):
        plots.plot_smc_diagnostics(posterior_only)
    with pytest.raises(TypeError, match="xarray.DataTree"):
        plots.plot_smc_diagnostics({"ess": np.zeros((2, 3))})
    bad_dims = xr.Dataset({"ess": (("chain",), np.ones(2)), "log_marginal_likelihood": (("chain",), np.zeros(2))})
    with pytest.raises(ValueError, match=r"'ess'\] must have dims"):
        plots.plot_smc_diagnostics(bad_dims)


def test_smc_diagnostics_of_a_real_run():
    """The DataTree of ppd.infer with an SMC sampler plots as is."""
    mixture = _mixture()
    prior = ppd.DiffusionPrior(mixture.diffusion_model(ppd.schedules.VPLinear()), steps=10)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x[0], 0.5), obs=y)

    idata = ppd.infer(program, ppd.smc.bootstrap(32), jax.random.key(0), num_chains=2, y=jnp.asarray(1.0))
    fig = plots.plot_smc_diagnostics(idata, log_evidence_exact=mixture.log_evidence([[1.0, 0.0]], [1.0], 0.25))
    ax_ess, ax_z = fig.axes
    stats = idata.diagnostics
    for i, line in enumerate(ax_ess.lines[:2]):
        np.testing.assert_allclose(line.get_ydata(), np.asarray(stats["ess"][i]), rtol=1e-6)
        assert list(line.get_markevery()) == np.flatnonzero(np.asarray(stats["resampled"][i])).tolist()
    assert len(_labelled(ax_ess, "threshold")) == 1  # bootstrap resamples adaptively at 0.5 N
    np.testing.assert_allclose([line.get_ydata()[0] for line in _markers(ax_z)],
                               np.asarray(stats["log_marginal_likelihood"]), rtol=1e-6)


# --------------------------------------------------------------------------- image grids


def test_image_grid_shows_each_image_with_the_shared_colour_scale():
    from pp_diffusion.plots import plot_image_grid

    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (1, 8, 8))
    obs[0, :, 4:] = np.nan  # unobserved pixels show blank
    draws = rng.uniform(-1, 1, (5, 8, 8))
    std = rng.uniform(0, 0.3, (8, 8))
    fig = plot_image_grid([obs, draws, std], row_labels=["y", "draws", "std"], col_labels=list("abcde"),
                          vrange=None, title="grid")
    axes = np.array(fig.axes[:15]).reshape(3, 5)
    assert len(_colour_bars(fig)) == 3  # vrange=None: every row has its own scale, so its own colour bar
    images = [[ax.get_images() for ax in row] for row in axes]
    assert [sum(len(cell) for cell in row) for row in images] == [1, 5, 1]
    np.testing.assert_array_equal(images[1][3][0].get_array(), draws[3])
    assert images[0][0][0].get_array().mask[:, 4:].all() and not images[0][0][0].get_array().mask[:, :4].any()
    bad = images[0][0][0].get_cmap().get_bad()
    assert tuple(np.round(bad[:3], 3)) == (0.91, 0.627, 0.627)  # missing pixels stand out from white background
    # vrange=None: each row spans its own range
    assert images[2][0][0].get_clim() == (pytest.approx(std.min()), pytest.approx(std.max()))
    assert axes[1, 0].get_ylabel() == "draws" and axes[0, 2].get_title() == "c"
    fixed = plot_image_grid([draws])
    assert fixed.axes[0].get_images()[0].get_clim() == (-1.0, 1.0)
    per_row = plot_image_grid([draws, std[None]], vrange=[(-1.0, 1.0), (0.0, 0.5)])
    assert per_row.axes[5].get_images()[0].get_clim() == (0.0, 0.5)


def test_image_grid_rejects_bad_rows():
    from pp_diffusion.plots import plot_image_grid

    with pytest.raises(ValueError, match="rows\\[1\\]"):
        plot_image_grid([np.zeros((2, 8, 8)), np.zeros((2, 2, 8, 8))])
    with pytest.raises(ValueError, match="vrange"):
        plot_image_grid([np.zeros((2, 8, 8))], vrange=[None, None])
    with pytest.raises(ValueError, match="row_labels"):
        plot_image_grid([np.zeros((2, 8, 8))], row_labels=["a", "b"])


def _colour_bars(fig):
    return [a for ax in fig.axes for a in (ax, *ax.child_axes) if getattr(a, "_colorbar", None) is not None]


def test_image_grid_has_a_colour_bar_for_std_rows_and_a_legend_for_missing_pixels():
    from pp_diffusion.plots import plot_image_grid

    rng = np.random.default_rng(1)
    obs = rng.uniform(-1, 1, (1, 8, 8))
    obs[0, :, 4:] = np.nan
    draws = rng.uniform(-1, 1, (4, 8, 8))
    std = rng.uniform(0, 0.3, (1, 8, 8))
    fig = plot_image_grid([obs, draws, std], row_labels=["observed", "draws", "std"],
                          vrange=[(-1.0, 1.0), (-1.0, 1.0), (0.0, 0.3)])
    cells = fig.axes[:12]
    assert all(ax.get_images() or not ax.axison for ax in cells)  # the grid comes first, row by row
    (bar,) = _colour_bars(fig)  # one: the std row has its own scale
    assert bar.get_ylim() == (pytest.approx(0.0), pytest.approx(0.3))
    fig.canvas.draw()
    bar_box, std_box = bar.get_position(), cells[8].get_position()
    assert abs(bar_box.y0 - std_box.y0) < 0.05 and std_box.x1 < bar_box.x0 < cells[10].get_position().x0
    (legend,) = fig.legends
    assert [t.get_text() for t in legend.get_texts()] == ["unobserved pixel"]
    assert tuple(np.round(legend.legend_handles[0].get_facecolor()[:3], 3)) == (0.91, 0.627, 0.627)

    plain = plot_image_grid([draws])  # one shared scale, nothing missing: neither
    assert _colour_bars(plain) == [] and plain.legends == []
    chosen = plot_image_grid([draws, draws], colorbar_rows=[0], missing_label="hidden")
    assert len(chosen.axes) == 9 and len(_colour_bars(chosen)) == 1 and chosen.legends == []  # a column for it
    with pytest.raises(ValueError, match="colorbar_rows"):
        plot_image_grid([draws], colorbar_rows=[3])
