"""The accuracy targets on the benchmark's own problems (``benchmarks/gmm_posterior.py``: the MCGdiff
paper's 25-component mixture, d = 8, dy = 1, 100 DDPM steps, N = 1,000), at a smaller size than the
benchmark: 4,000 exact reference draws, 200 directions, 8 floor sets, and the median of 4 runs per
problem instead of one run, so that one unlucky run does not decide the figure."""

import importlib.util
import pathlib
import types

import jax
import numpy as np
import pytest

import pp_diffusion as ppd

_PATH = pathlib.Path(__file__).resolve().parents[2] / "benchmarks" / "gmm_posterior.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("gmm_posterior", _PATH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _ratios(bench, make_sampler, problems=range(5), runs=4):
    """Per problem, the median over ``runs`` runs of SW1(draws, exact) / floor."""
    args = types.SimpleNamespace(seed=0, exact=4_000, directions=200, floor_sets=8, x0_var=False, order=1)
    out = []
    for index in problems:
        problem = bench.Problem(8, 1, index, args)
        idata = ppd.infer(problem.program(100), make_sampler(problem), jax.random.key(index), num_chains=runs,
                          y=problem.y, progress_bar=False)
        floor = problem.floor(1000)[0]
        x = np.asarray(idata.posterior["x"].values)
        out.append(np.median([problem.sw(xc) / floor for xc in x]))
    return np.array(out)


@pytest.mark.slow
def test_mcgdiff_with_the_data_covariance_and_twisted_meet_their_targets(bench):
    """Median over the 5 problems of the per-problem medians: mcgdiff(data_cov) within 1.3x the floor and
    twisted within 2.5x; the data covariance is what brings MCGdiff there. Measured (per problem):
    mcgdiff(data_cov) 1.03 0.92 1.49 0.96 1.12 (median 1.03), mcgdiff 0.94 1.52 1.91 1.89 2.74 (1.89),
    twisted 1.22 2.82 2.01 1.39 1.93 (1.93)."""
    cov = _ratios(bench, lambda p: ppd.smc.mcgdiff(1000, data_cov=p.data_cov()))
    default = _ratios(bench, lambda p: ppd.smc.mcgdiff(1000))
    twisted = _ratios(bench, lambda p: ppd.smc.twisted(1000))
    assert np.median(cov) <= 1.3, cov
    assert np.median(twisted) <= 2.5, twisted
    assert np.median(cov) < np.median(default), (cov, default)
