"""Tree sampling against exact answers on the mixture (slow): the Gaussian likelihood, the linear tilt and
the Bayes-classifier condition of the conditioning tests, in d = 2 and d = 8, 4 independent trees per
budget, with DTS's defaults (the paper's selection rule, honest values).

The distance to the exact posterior falls from 256 to 4,096 rollouts, and at 4,096 the median |log Z
error| is below 0.3 nat in d = 2 (0.75 in d = 8, where the estimate is still 0.3-0.5 nat low at 4,096
rollouts, as with uniform selection: exp(v) is unbiased, its log is not; at 16,384 the median is -0.05).
The paper's estimator (``honest=False``) is biased low at these budgets (1.3 nat on the Gaussian
likelihood in d = 2) and fails the log Z bound: set ``PAPER_RULE = True`` to print its figures beside
these (docs/samplers.md, "Tree sampling", has them).

DTS* (a search) finds a higher max log G than best-of-N at the same NFE on the linear tilt in d = 2,
whose reward grows without bound in one direction, so that a search has something to find."""

import functools

import jax
import numpy as np
import pytest

import pp_diffusion as ppd
from smc import _conditioning as C  # tests/ is on the path

PAPER_RULE = False
PROBLEMS = {"quadratic_reward": C.quadratic_reward, "linear_reward": C.linear_reward, "classifier": C.classifier}
LOG_Z_BOUND = {2: 0.3, 8: 0.75}


@functools.cache
def _problem(name, d):
    problem = PROBLEMS[name](d)
    return problem, problem.sample(jax.random.key(99), 8192)


def _run(name, d, rollouts, **options):
    problem, ref = _problem(name, d)
    idata = ppd.infer(problem.program, ppd.tree.dts(rollouts, batch_size=64, **options),
                      jax.random.key(rollouts), num_chains=4, y=problem.y)
    x = idata.posterior["x"].values
    dist = np.array([C.sliced(jax.random.key(c), x[c], ref) for c in range(4)])
    err = np.abs(idata.diagnostics["log_marginal_likelihood"].values - problem.log_z)
    return dist, err


@pytest.mark.slow
@pytest.mark.parametrize("d", [2, 8])
@pytest.mark.parametrize("name", sorted(PROBLEMS))
def test_dts_converges_to_the_exact_posterior(name, d):
    d_small, _ = _run(name, d, 256)
    d_big, e_big = _run(name, d, 4096)
    print(f"{name}, d = {d}: distance {np.median(d_small):.3f} -> {np.median(d_big):.3f}, |log Z error| "
          f"{np.median(e_big):.3f}")
    if PAPER_RULE:
        d_paper, e_paper = _run(name, d, 4096, honest=False)
        print(f"  the paper's estimator at 4,096: distance {np.median(d_paper):.3f}, |log Z error| "
              f"{np.median(e_paper):.3f}")
    assert np.median(d_big) < np.median(d_small)
    assert np.median(e_big) < LOG_Z_BOUND[d]


@pytest.mark.slow
def test_dts_star_finds_more_than_best_of_n_at_equal_nfe():
    """Median over 4 runs of the best log G found: DTS* (1,024 rollouts, its defaults) against best-of-N
    with the NFE DTS* spent (measured: 5.90 against 5.61; with DTS's widening alpha = 0.8, DTS* falls
    behind, 5.54 against 5.80)."""
    problem, _ = _problem("linear_reward", 2)
    star = ppd.infer(problem.program, ppd.tree.dts_star(1024, batch_size=8), jax.random.key(1024), num_chains=4)
    nfe = int(np.median(star.diagnostics["nfe"].values))
    best = ppd.infer(problem.program, ppd.tree.best_of_n(nfe // C.STEPS), jax.random.key(1024), num_chains=4)
    star_max, best_max = (np.median(i.diagnostics["max_log_g"].values) for i in (star, best))
    print(f"DTS* {star_max:.3f} against best-of-{nfe // C.STEPS} {best_max:.3f} at {nfe} NFE")
    assert star_max > best_max
