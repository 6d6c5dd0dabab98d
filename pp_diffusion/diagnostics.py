"""The single conversion point from sampler arrays to an ArviZ ``xarray.DataTree``, and plots."""

from __future__ import annotations

import datetime
import sys
from typing import Any

import numpy as np
import xarray as xr
from arviz_base import dict_to_dataset

__all__ = ["to_datatree"]


def _dataset(variables: dict[str, Any], sample_dims, dims, attrs):
    return dict_to_dataset(
        {k: np.asarray(v) for k, v in variables.items()},
        sample_dims=sample_dims, dims=dims, attrs=attrs, inference_library=sys.modules["pp_diffusion"],
    )


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
    stats = _dataset(sample_stats, ["chain", "draw"], None, attrs)
    if run_stats:
        dims = {k: list(stat_dims.get(k, ())) for k in run_stats}
        stats = xr.merge([stats, _dataset(run_stats, ["chain"], dims, attrs)], combine_attrs="override")
    groups["sample_stats"] = stats
    if observed:
        groups["observed_data"] = _dataset(observed, [], None, attrs)
    return xr.DataTree.from_dict(groups)
