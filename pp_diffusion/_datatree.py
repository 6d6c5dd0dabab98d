"""The single conversion point from sampler arrays to an ArviZ ``xarray.DataTree``, and plots."""

from __future__ import annotations

import datetime
import sys
from typing import Any

import numpy as np
import xarray as xr
from arviz_base import make_attrs

__all__ = ["to_datatree"]


def _dataset(variables: dict[str, Any], sample_dims, dims, attrs):
    """An ArviZ-convention ``xarray.Dataset`` (what ``arviz_base.dict_to_dataset`` builds: leading
    ``sample_dims``, then the named ``dims``, then ``<name>_dim_<i>``; an integer coordinate on every
    dimension; ArviZ's standard attributes), built directly: infer calls this on every run, and the
    generic converter costs several milliseconds more."""
    data_vars, coords = {}, {}
    for name, value in variables.items():
        array = np.asarray(value)
        names = [*sample_dims, *(dims or {}).get(name, ())]
        names += [f"{name}_dim_{i}" for i in range(array.ndim - len(names))]
        data_vars[name] = (names, array)
        for dim, size in zip(names, array.shape):
            coords.setdefault(dim, np.arange(size))
    attrs = make_attrs(attrs=attrs, inference_library=sys.modules["pp_diffusion"], sample_dims=list(sample_dims))
    return xr.Dataset(data_vars, coords=coords, attrs=attrs)


def to_datatree(
    posterior: dict[str, Any],
    sample_stats: dict[str, Any],
    run_stats: dict[str, Any],
    observed: dict[str, Any],
    *,
    stat_dims: dict[str, tuple[str, ...]],
    attrs: dict[str, Any],
) -> xr.DataTree:
    """Assemble the DataTree ``infer`` returns.

    ``posterior`` and ``sample_stats`` arrays have leading ``(chain, draw)`` axes; ``run_stats``
    arrays have a leading ``chain`` axis and join ``sample_stats`` with the dims ``stat_dims``
    names; ``observed`` goes to ``observed_data``. ``attrs`` go on every group.
    """
    attrs = {**attrs, "created_at": datetime.datetime.now(datetime.timezone.utc).isoformat()}
    groups = {"posterior": _dataset(posterior, ["chain", "draw"], None, attrs)}
    # per-draw statistics (chain, draw) and per-run ones (chain, then their ``stat_dims``), in one dataset
    per_run = {k: tuple(stat_dims.get(k, ())) for k in run_stats}
    stats = _dataset({**sample_stats, **run_stats}, ["chain"],
                     {**{k: ("draw",) for k in sample_stats}, **per_run}, attrs)
    stats.attrs["sample_dims"] = ["chain", "draw"]
    groups["sample_stats"] = stats
    if observed:
        groups["observed_data"] = _dataset(observed, [], None, attrs)
    return xr.DataTree.from_dict(groups)
