"""The single conversion point from sampler arrays to an ArviZ ``xarray.DataTree``.

Every group is built by ``arviz_base.dict_to_dataset`` (ArviZ's own converter: its dims, integer
coordinates and standard attributes), with the group layout of ``arviz_base.from_numpyro``:

- ``posterior`` (or ``prior``, for samplers that ignore the observations), ``sample_stats`` (or
  ``sample_stats_prior``): per draw, dims ``(chain, draw, ...)``;
- ``log_likelihood``: per draw and per element of each observed data site;
- ``posterior_predictive`` / ``prior_predictive``: simulated observations, dims ``(chain, draw, ...)``;
- ``observed_data``: the observations;
- ``diagnostics``: the sampler's per-run figures (dim ``chain``) and per-step ones (``chain, step``),
  e.g. ``log_marginal_likelihood`` (the name PyMC's SMC gives the log-evidence), ``ess``, ``min_ess``;
- ``particles`` (opt-in): the final weighted particle system, dims ``(chain, particle, ...)``.

Flags are stored as 0/1 integers, so that ``arviz.summary(idata, group=...)`` runs on every group
(``sample_dims=["chain"]`` for ``diagnostics``). NetCDF (``idata.to_netcdf``, through h5netcdf) and
Zarr (``idata.to_zarr``) round trips need nothing beyond the package's dependencies.
"""

from __future__ import annotations

import datetime
import sys
from typing import Any

import numpy as np
import xarray as xr
from arviz_base import dict_to_dataset

__all__ = ["to_datatree"]


def _site_dims(dims: dict, names) -> dict:
    return {name: list(dims[name]) for name in names if name in dims}


def to_datatree(
    groups: dict[str, dict[str, Any]],
    *,
    stat_dims: dict[str, tuple[str, ...]],
    dims: dict[str, list[str]] | None = None,
    coords: dict[str, Any] | None = None,
    attrs: dict[str, Any],
) -> xr.DataTree:
    """Assemble the DataTree ``infer`` returns from ``{group: {variable: array}}``.

    Arrays of ``posterior``, ``prior``, ``sample_stats*``, ``log_likelihood`` and the predictive
    groups have leading ``(chain, draw)`` axes; ``diagnostics`` arrays a leading ``chain`` axis, then
    the dims ``stat_dims`` names; ``particles`` arrays ``(chain, particle, ...)``; ``observed_data``
    has no sample axes. ``dims`` (``{variable: [dim, ...]}``, as ``arviz_base.from_numpyro`` takes it)
    names a variable's own dimensions in every group it appears in (``x`` in ``posterior`` and
    ``particles``, an observed site in ``observed_data``, ``log_likelihood`` and the predictive groups),
    ``coords`` their values. Empty groups are left out; ``attrs`` go on every group.
    """
    dims = dict(dims or {})
    coords = dict(coords or {})
    attrs = {**attrs, "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    library = sys.modules["pp_diffusion"]
    sample_dims = {"diagnostics": ["chain"], "particles": ["chain", "particle"], "observed_data": []}
    tree = {}
    for group, variables in groups.items():
        if not variables:
            continue
        # flags (degenerate, low_ess, resampled) as 0/1 integers: arviz.summary runs on every group
        variables = {k: np.asarray(v).astype(np.int8) if np.asarray(v).dtype == bool else np.asarray(v)
                     for k, v in variables.items()}
        group_dims = _site_dims(dims, variables)
        group_coords = dict(coords)
        if group == "diagnostics":
            group_dims = {k: list(stat_dims[k]) for k in variables if k in stat_dims}
            group_coords = {k: v for k, v in coords.items() if k == "site"}
        tree[group] = dict_to_dataset(
            variables, attrs=attrs, inference_library=library, coords=group_coords, dims=group_dims,
            sample_dims=sample_dims.get(group, ["chain", "draw"]), check_conventions=False,
            # a site's event dimensions are summed in its log-likelihood: its leading dims name the rest
            skip_event_dims=group == "log_likelihood",
        )
    return xr.DataTree.from_dict(tree)
