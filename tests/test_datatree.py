"""``diagnostics.to_datatree`` builds its datasets directly (it runs on every ``infer`` call); they must be
what ArviZ's own converter, ``arviz_base.dict_to_dataset``, would build from the same arrays."""

import sys

import numpy as np
import pytest
import xarray as xr
from arviz_base import dict_to_dataset

import pp_diffusion  # noqa: F401
from pp_diffusion.diagnostics import to_datatree

RNG = np.random.default_rng(0)
POSTERIOR = {"x": RNG.normal(size=(2, 50, 8)).astype(np.float32), "img": RNG.normal(size=(2, 50, 3, 4))}
SAMPLE_STATS = {"nfe": np.zeros((2, 50), np.int32), "vjp": np.ones((2, 50), np.int32)}
RUN_STATS = {"log_evidence": RNG.normal(size=2), "final_log_weights": RNG.normal(size=(2, 50)),
             "ess": RNG.normal(size=(2, 10)), "degenerate": np.zeros(2, bool), "extra": np.zeros((2, 3, 2))}
STAT_DIMS = {"final_log_weights": ("particle",), "ess": ("step",)}
OBSERVED = {"y": np.arange(3.0), "s": np.float32(1.0)}


def _arviz(variables, sample_dims, dims, attrs):
    return dict_to_dataset(variables, sample_dims=sample_dims, dims=dims, attrs=attrs,
                           inference_library=sys.modules["pp_diffusion"])


@pytest.mark.parametrize("run_stats", [RUN_STATS, {}])
@pytest.mark.parametrize("observed", [OBSERVED, {}])
def test_groups_are_what_arviz_builds(run_stats, observed):
    tree = to_datatree(POSTERIOR, SAMPLE_STATS, run_stats, observed, stat_dims=STAT_DIMS, attrs={"sampler": "s"})
    attrs = {"sampler": "s", "created_at": tree["posterior"].attrs["created_at"]}
    stats = _arviz(SAMPLE_STATS, ["chain", "draw"], None, attrs)
    if run_stats:
        dims = {k: list(STAT_DIMS.get(k, ())) for k in run_stats}
        stats = xr.merge([stats, _arviz(run_stats, ["chain"], dims, attrs)], combine_attrs="override")
    expected = {"posterior": _arviz(POSTERIOR, ["chain", "draw"], None, attrs), "sample_stats": stats}
    if observed:
        expected["observed_data"] = _arviz(observed, [], None, attrs)
    assert set(tree.children) == set(expected)
    for group, want in expected.items():
        got = tree[group].to_dataset()
        xr.testing.assert_identical(got, want)
        assert list(got.data_vars) == list(want.data_vars)
        assert got.attrs == want.attrs
