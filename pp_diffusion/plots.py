"""Plots of two-dimensional draws, reverse-diffusion trajectories, image grids and SMC diagnostics.

Every function builds its own :class:`matplotlib.figure.Figure` (or draws into the ``ax`` it is
given) and returns the figure; nothing touches ``matplotlib.pyplot`` or any other global state, so
the functions work under any backend and in threads. Save with ``fig.savefig(path)``. In Jupyter
the returned figure displays itself once the inline backend is active (``%matplotlib inline``, or any
``pyplot`` import, registers the display of figures; a fresh kernel otherwise shows only their repr).
"""

from __future__ import annotations

from typing import Any, Callable

import matplotlib
import numpy as np
import xarray as xr
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

__all__ = ["density_grid", "plot_samples_2d", "plot_trajectories_2d", "plot_smc_diagnostics", "plot_image_grid"]


def _axes(ax, figsize):
    if ax is not None:
        return ax.figure, ax
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _points(draws, name: str) -> np.ndarray:
    """Flatten ``(..., 2)`` draws (chains, draws, ...) to ``(n, 2)``."""
    pts = np.asarray(draws, dtype=float)
    if pts.ndim < 2 or pts.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (..., 2) (two-dimensional points), got {pts.shape}")
    return pts.reshape(-1, 2)


def _log_density_fn(density) -> Callable[[np.ndarray], Any]:
    if density is None:
        return None
    fn = getattr(density, "log_prob", density)
    if not callable(fn):
        raise TypeError(
            "density must be a callable log_prob(points) -> log densities or an object with a "
            f"log_prob method (e.g. a pp_diffusion.GaussianMixture), got {type(density).__name__}"
        )
    return fn


def _extent(points: np.ndarray, pad: float = 0.1) -> tuple[float, float, float, float]:
    """A square-ish box around the central 99.8 % of ``points`` with ``pad`` relative margin."""
    lo = np.nanpercentile(points, 0.1, axis=0)
    hi = np.nanpercentile(points, 99.9, axis=0)
    span = np.maximum(hi - lo, 1e-6).max()
    mid = 0.5 * (lo + hi)
    half = 0.5 * span * (1 + 2 * pad)
    return (mid[0] - half, mid[0] + half, mid[1] - half, mid[1] + half)


def density_grid(density, extent, resolution: int = 200):
    """Evaluate a two-dimensional log density on a regular grid.

    Parameters
    ----------
    density : callable or object with ``log_prob``
        ``log_prob(points)`` mapping an ``(n, 2)`` array to ``(n,)`` log densities, for example
        a :class:`~pp_diffusion.GaussianMixture` or its ``log_prob`` method.
    extent : tuple of float
        ``(xmin, xmax, ymin, ymax)``.
    resolution : int, default 200
        Number of grid points along each axis.

    Returns
    -------
    xs, ys : numpy.ndarray
        ``(resolution,)`` grid coordinates.
    log_density : numpy.ndarray
        ``(resolution, resolution)`` log densities, rows indexed by ``ys``.
    """
    fn = _log_density_fn(density)
    xmin, xmax, ymin, ymax = extent
    xs = np.linspace(xmin, xmax, resolution)
    ys = np.linspace(ymin, ymax, resolution)
    gx, gy = np.meshgrid(xs, ys)
    pts = np.stack([gx.ravel(), gy.ravel()], axis=-1).astype(np.float32)
    return xs, ys, np.asarray(fn(pts), dtype=float).reshape(gx.shape)


def _draw_density(ax, density, extent, resolution, filled: bool) -> Line2D:
    """Contours of ``density`` at the 1, 2 and 3 sigma-equivalent levels below its maximum (on
    top of everything, so points do not hide them); returns a legend handle for them."""
    xs, ys, logp = density_grid(density, extent, resolution)
    top = np.nanmax(logp)
    levels = top - 0.5 * np.array([3.0, 2.0, 1.0]) ** 2  # increasing, as contour needs
    if filled:
        ax.contourf(xs, ys, np.exp(logp - top), levels=12, cmap="Blues", alpha=0.5, zorder=0)
    ax.contour(xs, ys, logp, levels=levels, colors="k", linestyles="solid",
               linewidths=(0.5, 0.7, 0.9), alpha=0.8, zorder=5)
    return Line2D([], [], color="k", linewidth=0.8, label="density: 1, 2, 3 sd contours")


def plot_samples_2d(
    draws,
    density=None,
    *,
    reference=None,
    extent=None,
    ax=None,
    title: str | None = None,
    resolution: int = 200,
    max_points: int = 5000,
    figsize=(5.5, 5.0),
) -> Figure:
    """Scatter two-dimensional draws over the contours of a density.

    Parameters
    ----------
    draws : array_like
        ``(..., 2)`` points; leading axes (chains, draws) are flattened.
    density : callable or object with ``log_prob``, optional
        The density to draw under the points, e.g. the exact
        :class:`~pp_diffusion.GaussianMixture`; shown filled, with contour lines at the levels
        1, 2 and 3 "standard deviations" below its maximum (log-density drops of 0.5, 2, 4.5).
    reference : array_like, optional
        ``(..., 2)`` exact draws to show faintly for comparison.
    extent : tuple of float, optional
        ``(xmin, xmax, ymin, ymax)``; by default a box around the draws.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    title : str, optional
        Axes title.
    resolution : int, default 200
        Grid points per axis for the density.
    max_points : int, default 5000
        Show at most this many draws (the first ones), to keep the figure light.
    figsize : tuple of float, default (5.5, 5.0)
        Size of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes.
    """
    pts = _points(draws, "draws")
    fig, ax = _axes(ax, figsize)
    extent = _extent(pts) if extent is None else tuple(extent)
    handles = []
    if density is not None:
        handles.append(_draw_density(ax, density, extent, resolution, filled=True))
    if reference is not None:
        ref = _points(reference, "reference")[:max_points]
        handles.append(ax.scatter(ref[:, 0], ref[:, 1], s=4, c="0.5", alpha=0.35, linewidths=0,
                                  label="reference", zorder=2))
    shown = pts[:max_points]
    handles.append(ax.scatter(shown[:, 0], shown[:, 1], s=5, c="C3", alpha=0.6, linewidths=0,
                              label=f"draws (n={len(pts)})", zorder=3))
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    if title:
        ax.set_title(title)
    ax.legend(handles=handles, loc="upper right", fontsize="small", markerscale=2.5, framealpha=0.9)
    return fig


def plot_trajectories_2d(
    trajectories,
    times=None,
    density=None,
    *,
    extent=None,
    ax=None,
    title: str | None = None,
    cmap: str = "viridis",
    resolution: int = 200,
    figsize=(6.0, 5.0),
) -> Figure:
    """Reverse-diffusion trajectories x_T -> x_0 of a few two-dimensional samples.

    Parameters
    ----------
    trajectories : array_like
        ``(num_samples, num_times, 2)`` states along the reverse chain, noise first.
    times : array_like, optional
        ``(num_times,)`` diffusion times of the states (1 = noise, 0 = data), used to colour
        the paths; by default the step index.
    density : callable or object with ``log_prob``, optional
        Data density whose contours are drawn underneath (lines only).
    extent : tuple of float, optional
        ``(xmin, xmax, ymin, ymax)``; by default a box around the trajectories.
    ax : matplotlib.axes.Axes, optional
        Draw into these axes instead of a new figure.
    title : str, optional
        Axes title.
    cmap : str, default "viridis"
        Colour map over time.
    resolution : int, default 200
        Grid points per axis for the density.
    figsize : tuple of float, default (6.0, 5.0)
        Size of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure holding the axes; a colour bar shows the time.
    """
    paths = np.asarray(trajectories, dtype=float)
    if paths.ndim != 3 or paths.shape[-1] != 2 or paths.shape[1] < 2:
        raise ValueError(f"trajectories must have shape (num_samples, num_times >= 2, 2), got {paths.shape}")
    n_times = paths.shape[1]
    if times is None:
        t = np.linspace(1.0, 0.0, n_times)
        label = "reverse step (noise $\\to$ data)"
    else:
        t = np.asarray(times, dtype=float)
        if t.shape != (n_times,):
            raise ValueError(f"times must have shape ({n_times},) to match the trajectories, got {t.shape}")
        label = "diffusion time $t$"
    fig, ax = _axes(ax, figsize)
    extent = _extent(paths.reshape(-1, 2), pad=0.05) if extent is None else tuple(extent)
    handles = []
    if density is not None:
        handles.append(_draw_density(ax, density, extent, resolution, filled=False))
    seg_t = 0.5 * (t[:-1] + t[1:])
    segments = np.stack([paths[:, :-1], paths[:, 1:]], axis=2).reshape(-1, 2, 2)
    lines = LineCollection(segments, array=np.tile(seg_t, len(paths)), cmap=cmap, linewidths=1.2,
                           alpha=0.9, zorder=2)
    lines.set_clim(min(t.min(), t.max()), max(t.min(), t.max()))
    ax.add_collection(lines)
    handles.append(ax.scatter(paths[:, 0, 0], paths[:, 0, 1], marker="o", s=18, facecolors="none",
                              edgecolors="k", linewidths=0.8, label="start (noise)", zorder=6))
    handles.append(ax.scatter(paths[:, -1, 0], paths[:, -1, 1], marker="*", s=70, c="C3", edgecolors="k",
                              linewidths=0.5, label="end (sample)", zorder=7))
    ax.set(xlim=extent[:2], ylim=extent[2:], xlabel="$x_1$", ylabel="$x_2$", aspect="equal")
    if title:
        ax.set_title(title)
    ax.legend(handles=handles, loc="upper right", fontsize="small", framealpha=0.9)
    fig.colorbar(lines, ax=ax, label=label, shrink=0.85)
    return fig


def _diagnostics(idata):
    """The ``diagnostics`` dataset of a DataTree (or a dataset given directly)."""
    if isinstance(idata, xr.Dataset):
        return idata
    if not isinstance(idata, xr.DataTree):
        raise TypeError(
            "idata must be the xarray.DataTree that pp_diffusion.infer returns (or its diagnostics "
            f"dataset), got {type(idata).__name__}"
        )
    if "diagnostics" not in idata.children:
        raise ValueError(
            f"idata has no diagnostics group (groups: {sorted(idata.children)}); plot_smc_diagnostics "
            "needs the DataTree of an SMC sampler from pp_diffusion.infer"
        )
    return idata["diagnostics"].to_dataset()


def _attr_number(attrs, name):
    try:
        return float(attrs[name])
    except (KeyError, TypeError, ValueError):
        return None


def plot_smc_diagnostics(
    idata,
    *,
    log_evidence_exact: float | None = None,
    axes=None,
    title: str | None = None,
    figsize=(11.0, 4.2),
) -> Figure:
    """Effective sample size along the reverse chain and the log-evidence estimate of each chain.

    Parameters
    ----------
    idata : xarray.DataTree or xarray.Dataset
        What :func:`pp_diffusion.infer` returns for an SMC sampler (or its ``diagnostics``
        group). Its ``diagnostics`` must hold ``ess`` (dims ``chain``, ``step``) and
        ``log_marginal_likelihood`` (dim ``chain``); ``resampled`` (dims ``chain``, ``step``) is used
        when present.
    log_evidence_exact : float, optional
        The exact log p(y), drawn as a reference line (for example
        :meth:`pp_diffusion.GaussianMixture.log_evidence`).
    axes : sequence of two matplotlib.axes.Axes, optional
        Draw into these (ESS, log-evidence) axes instead of a new figure.
    title : str, optional
        Figure title (a new figure only); by default the sampler's name from the attributes.
    figsize : tuple of float, default (11.0, 4.2)
        Size of a new figure.

    Returns
    -------
    matplotlib.figure.Figure
        The figure. Left: one line per chain of the ESS after each step's reweighting, with a
        marker on every step that began by resampling, and a dashed line at the adaptive
        resampling threshold when the attributes give it. Right: one marker per chain (same
        colours) at its log-evidence estimate, a solid line at their mean over the finite values
        with a band of one standard error, and the exact value as a dashed line when given.
        Chains without an estimate (NaN: DPS and SVDD give none) or with a degenerate run
        (-inf) are named in the panel instead of being silently dropped.

    Raises
    ------
    ValueError
        When ``diagnostics`` lacks ``ess`` or ``log_marginal_likelihood`` (naming which) or their
        dimensions are not the ones above.
    """
    stats = _diagnostics(idata)
    missing = [name for name in ("ess", "log_marginal_likelihood") if name not in stats.data_vars]
    if missing:
        raise ValueError(
            f"diagnostics has no {' and no '.join(repr(m) for m in missing)} (it has "
            f"{sorted(stats.data_vars)}); plot_smc_diagnostics needs the per-step ESS and per-chain "
            "log-evidence that the SMC samplers of pp_diffusion.smc record"
        )
    ess_da = stats["ess"]
    if set(ess_da.dims) != {"chain", "step"}:
        raise ValueError(f"diagnostics['ess'] must have dims ('chain', 'step'), got {ess_da.dims}")
    ess = np.asarray(ess_da.transpose("chain", "step"), dtype=float)
    logz_da = stats["log_marginal_likelihood"]
    if logz_da.dims != ("chain",):
        raise ValueError(f"diagnostics['log_marginal_likelihood'] must have dims ('chain',), got {logz_da.dims}")
    logz = np.asarray(logz_da, dtype=float)
    n_chains, n_steps = ess.shape
    if logz.shape[0] != n_chains:
        raise ValueError(f"log_marginal_likelihood has {logz.shape[0]} chains but ess has {n_chains}")
    resampled = None
    if "resampled" in stats.data_vars:
        res_da = stats["resampled"]
        if set(res_da.dims) != {"chain", "step"}:
            raise ValueError(f"diagnostics['resampled'] must have dims ('chain', 'step'), got {res_da.dims}")
        resampled = np.asarray(res_da.transpose("chain", "step"), dtype=bool)
    steps = np.asarray(ess_da["step"]) if "step" in ess_da.coords else np.arange(n_steps)
    chains = np.asarray(logz_da["chain"]) if "chain" in logz_da.coords else np.arange(n_chains)
    attrs = dict(stats.attrs)

    if axes is None:
        fig = Figure(figsize=figsize, layout="constrained")
        ax_ess, ax_z = fig.subplots(1, 2, width_ratios=(1.6, 1.0))
        sampler = attrs.get("sampler")
        if title is None and sampler is not None:
            title = f"SMC diagnostics: {sampler}"
        if title:
            fig.suptitle(title)
    else:
        if len(axes) != 2:
            raise ValueError(f"axes must be two matplotlib Axes (ESS, log-evidence), got {len(axes)}")
        ax_ess, ax_z = axes
        fig = ax_ess.figure

    # ---- left: ESS per step
    colors = [f"C{i % 10}" for i in range(n_chains)]
    for i in range(n_chains):
        marks = np.flatnonzero(resampled[i]) if resampled is not None else []
        ax_ess.plot(steps, ess[i], color=colors[i], linewidth=1.0, marker="o", markersize=3.5,
                    markevery=[int(m) for m in marks], label=f"chain {chains[i]}")
    handles, _ = ax_ess.get_legend_handles_labels()
    if resampled is not None:
        count = int(resampled.sum())
        handles.append(Line2D([], [], color="0.3", marker="o", markersize=3.5, linestyle="none",
                              label=f"resampled before this step ({count} in all)"))
    num_particles = _attr_number(attrs, "sampler_num_particles")
    threshold = _attr_number(attrs, "sampler_ess_threshold")
    adaptive = str(attrs.get("sampler_resample_every", "None")) == "None"
    if num_particles and threshold and adaptive:
        handles.append(ax_ess.axhline(threshold * num_particles, color="0.3", linestyle="--", linewidth=0.8,
                                      label=f"threshold {threshold:g} x {num_particles:g} particles"))
    top = num_particles if num_particles else np.nanmax(ess) if np.isfinite(ess).any() else 1.0
    ax_ess.set(xlabel="reverse step (noise $\\to$ data)", ylabel="effective sample size",
               ylim=(0, 1.05 * top), title="ESS after each step's reweighting")
    ax_ess.legend(handles=handles, loc="best", fontsize="small", framealpha=0.9)

    # ---- right: log-evidence per chain
    positions = np.arange(n_chains)
    for i in range(n_chains):
        ax_z.plot([positions[i]], [logz[i]], linestyle="none", marker="o", markersize=7, color=colors[i])
    finite = np.isfinite(logz)
    notes = []
    if np.isnan(logz).any():
        notes.append(f"no estimate (NaN) in chains {chains[np.isnan(logz)].tolist()}")
    if np.isneginf(logz).any():
        notes.append(f"degenerate (-inf) in chains {chains[np.isneginf(logz)].tolist()}")
    handles = []
    if finite.any():
        mean = float(np.mean(logz[finite]))
        handles.append(ax_z.axhline(mean, color="k", linewidth=1.2,
                                    label=f"mean of {int(finite.sum())} chains: {mean:.3f}"))
        if finite.sum() >= 2:
            se = float(np.std(logz[finite], ddof=1) / np.sqrt(finite.sum()))
            handles.append(ax_z.axhspan(mean - se, mean + se, color="0.6", alpha=0.3, linewidth=0,
                                        label=f"$\\pm$ 1 standard error ({se:.3f})"))
    if log_evidence_exact is not None:
        exact = float(log_evidence_exact)
        handles.append(ax_z.axhline(exact, color="C3", linestyle="--", linewidth=1.2,
                                    label=f"exact: {exact:.3f}"))
    if notes:
        ax_z.text(0.5, 0.04, "\n".join(notes), transform=ax_z.transAxes, ha="center", va="bottom",
                  fontsize="small", color="0.3")
    ax_z.set(xlabel="chain", ylabel="log-evidence estimate  $\\log \\hat Z$", title="log-evidence per chain")
    ax_z.set_xticks(positions, [str(c) for c in chains])
    ax_z.set_xlim(-0.6, n_chains - 0.4)
    if handles:
        ax_z.legend(handles=handles, loc="best", fontsize="small", framealpha=0.9)
    return fig


def plot_image_grid(rows, *, row_labels=None, col_labels=None, vrange=(-1.0, 1.0), cmap: str = "gray_r",
                    missing_colour: str = "#e8a0a0", missing_label: str = "unobserved pixel",
                    colorbar_rows=None, cell: float = 0.9, title: str | None = None):
    """A grid of single-channel images: ``rows`` is a sequence of arrays ``(n_i, h, w)`` (or one
    ``(rows, cols, h, w)`` array), one figure row each, e.g. [observation, draws, mean, std].

    ``vrange`` fixes the colour scale of every cell (``None``: each row scaled to its own range,
    as for standard deviations), or is a list with one such entry per row. A row with a scale of
    its own (a ``None`` entry, or one that differs from the first row's) gets a colour bar after its
    last image; ``colorbar_rows`` (row indices) chooses the rows instead. Missing pixels (the
    unobserved part of an observation) are passed as NaN, drawn in ``missing_colour`` and named
    ``missing_label`` in a legend under the grid.
    """
    arrays = [np.asarray(r, dtype=float) for r in rows]
    for i, a in enumerate(arrays):
        if a.ndim == 2:
            arrays[i] = a = a[None]
        if a.ndim != 3:
            raise ValueError(f"rows[{i}] must have shape (n, height, width), got {a.shape}")
    if not arrays:
        raise ValueError("rows must hold at least one row of images")
    if row_labels is not None and len(row_labels) != len(arrays):
        raise ValueError(f"row_labels must have one label per row ({len(arrays)}), got {len(row_labels)}")
    colours = matplotlib.colormaps[cmap].with_extremes(bad=missing_colour)
    ranges = vrange if isinstance(vrange, list) else [vrange] * len(arrays)
    if len(ranges) != len(arrays):
        raise ValueError(f"a list vrange must have one entry per row ({len(arrays)}), got {len(ranges)}")
    if colorbar_rows is None:
        bars = [i for i, r in enumerate(ranges) if r is None or (i and tuple(r) != tuple(ranges[0] or ()))]
    else:
        bars = sorted({int(i) for i in colorbar_rows})
        if any(not 0 <= i < len(arrays) for i in bars):
            raise ValueError(f"colorbar_rows must be row indices below {len(arrays)}, got {list(colorbar_rows)}")
    missing = any(np.isnan(a).any() for a in arrays)
    cols = max(a.shape[0] for a in arrays)
    if col_labels is not None and len(col_labels) > cols:
        raise ValueError(f"col_labels has {len(col_labels)} labels for {cols} columns")
    full = [i for i in bars if arrays[i].shape[0] == cols]  # no free cell beside: an extra column
    width = cell * cols + (1.0 if row_labels else 0.2) + (0.6 if full else 0.0)
    height = cell * len(arrays) + (0.4 if title else 0.1) + (0.3 if missing else 0.0)
    fig = Figure(figsize=(width, height), layout="constrained")
    grid = fig.add_gridspec(len(arrays), cols + bool(full), width_ratios=[1.0] * cols + [0.12] * bool(full))
    axes = np.array([[fig.add_subplot(grid[i, j]) for j in range(cols)] for i in range(len(arrays))])
    shown = {}
    for i, a in enumerate(arrays):
        lo, hi = ranges[i] if ranges[i] is not None else (np.nanmin(a), np.nanmax(a))
        for j in range(cols):
            ax = axes[i, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j < a.shape[0]:
                shown[i] = ax.imshow(np.ma.masked_invalid(a[j]), cmap=colours, vmin=lo, vmax=hi,
                                     interpolation="nearest")
            else:
                ax.axis("off")
            if j == 0 and row_labels is not None:
                ax.set_ylabel(row_labels[i], rotation=0, ha="right", va="center")
            if i == 0 and col_labels is not None and j < len(col_labels):
                ax.set_title(col_labels[j], fontsize="small")
    for i in bars:  # in the free cell after the row's images, or in the extra column (after the grid in fig.axes)
        n = arrays[i].shape[0]
        cax = axes[i, n].inset_axes([0.04, 0.0, 0.12, 1.0]) if n < cols else fig.add_subplot(grid[i, cols])
        fig.colorbar(shown[i], cax=cax).ax.tick_params(labelsize="x-small")
    if missing:
        fig.legend(handles=[Patch(facecolor=missing_colour, edgecolor="0.6", label=missing_label)],
                   loc="outside lower center", fontsize="small", frameon=False)
    if title:
        fig.suptitle(title)
    return fig
