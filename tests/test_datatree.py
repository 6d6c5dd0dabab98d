"""``_datatree.to_datatree``: ArviZ's group layout, the sites' dims in every group they appear in, and
per-run diagnostics in a group of their own."""

import sys

import numpy as np
import xarray as xr
from arviz_base import dict_to_dataset

import pp_diffusion  # noqa: F401
from pp_diffusion._datatree import to_datatree

RNG = np.random.default_rng(0)
POSTERIOR = {"x": RNG.normal(size=(2, 50, 3)).astype(np.float32), "img": RNG.normal(size=(2, 50, 3, 4))}
SAMPLE_STATS = {"nfe": np.zeros((2, 50), np.int32), "particle": np.tile(np.arange(50), (2, 1))}
DIAGNOSTICS = {"log_marginal_likelihood": RNG.normal(size=2), "ess": RNG.normal(size=(2, 10)),
               "degenerate": np.zeros(2, bool), "site_nonfinite": np.zeros((2, 2), np.int32)}
STAT_DIMS = {"ess": ("step",), "site_nonfinite": ("site",)}
OBSERVED = {"y": np.arange(3.0)}
LOG_LIK = {"y": RNG.normal(size=(2, 50, 3))}


def _tree(**kw):
    groups = {"posterior": POSTERIOR, "sample_stats": SAMPLE_STATS, "log_likelihood": LOG_LIK,
              "observed_data": OBSERVED, "diagnostics": DIAGNOSTICS, "particles": {}}
    return to_datatree(groups, stat_dims=STAT_DIMS, attrs={"sampler": "s"}, **kw)


def test_per_draw_groups_are_what_arviz_builds():
    tree = _tree()
    assert set(tree.children) == {"posterior", "sample_stats", "log_likelihood", "observed_data", "diagnostics"}
    attrs = {"sampler": "s", "created_at": tree["posterior"].attrs["created_at"]}
    for group, variables in [("posterior", POSTERIOR), ("sample_stats", SAMPLE_STATS), ("log_likelihood", LOG_LIK)]:
        want = dict_to_dataset(variables, sample_dims=["chain", "draw"], attrs=attrs,
                               inference_library=sys.modules["pp_diffusion"])
        xr.testing.assert_identical(tree[group].to_dataset(), want)
        assert tree[group].attrs == want.attrs


def test_diagnostics_have_named_dims_and_flags_are_integers():
    tree = _tree(coords={"site": ["y", "f"]})
    diag = tree["diagnostics"].to_dataset()
    assert diag["log_marginal_likelihood"].dims == ("chain",)
    assert diag["ess"].dims == ("chain", "step")
    assert diag["site_nonfinite"].dims == ("chain", "site") and list(diag["site"].values) == ["y", "f"]
    assert diag["degenerate"].dtype == np.int8  # so that arviz.summary runs on the group


def test_dims_and_coords_name_a_site_in_every_group():
    tree = _tree(dims={"x": ["axis"], "y": ["obs"]}, coords={"obs": ["a", "b", "c"]})
    assert tree["posterior"]["x"].dims == ("chain", "draw", "axis")
    assert tree["log_likelihood"]["y"].dims == ("chain", "draw", "obs")
    assert tree["observed_data"]["y"].dims == ("obs",)
    assert list(tree["observed_data"]["obs"].values) == ["a", "b", "c"]
    assert tree["posterior"]["img"].dims == ("chain", "draw", "img_dim_0", "img_dim_1")
