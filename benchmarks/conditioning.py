"""Every kind of conditioning against its exact answer: log Z error and posterior distance, replicated.

    python benchmarks/conditioning.py                          # the README table (d = 2 and d = 8)
    python benchmarks/conditioning.py --dims 2 --problems tanh square --samplers twisted

The problems are the test suite's (``tests/smc/_conditioning.py``: linear and quadratic rewards
written as factors, the mixture's Bayes classifier observed as a Categorical, a halfspace
constraint, a partial mask, a scale, Student-t, tanh and x^2 observations), each a NumPyro program
over the exact Gaussian-mixture prior with a 100-step DDPM chain, each with its exact log Z and
exact posterior draws. For each (problem, sampler, N) the script runs ``--runs`` independent runs
(infer's chains) and prints the median and range of |log Zhat - log Z|, the median sliced
distance to 8,192 exact posterior draws over the floor (the same distance for N exact draws), the
median minimum ESS during the run as a fraction of N, and the twist the site got.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

import jax
import numpy as np

import pp_diffusion as ppd

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from _tables import print_table  # noqa: E402
from tests.smc import _conditioning as C  # noqa: E402 - the problems are defined once, with the tests

SAMPLERS = {
    "bootstrap": ppd.smc.bootstrap,
    "twisted": ppd.smc.twisted,
    "fk_steering": ppd.smc.fk_steering,
}


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 8], choices=[2, 8])
    parser.add_argument("--problems", nargs="+", default=None)
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=list(SAMPLERS))
    parser.add_argument("--particles", type=int, nargs="+", default=[256, 4096])
    parser.add_argument("--runs", type=int, default=8)
    args = parser.parse_args(argv)
    for dim in args.dims:
        table = C.PROBLEMS_2D if dim == 2 else C.PROBLEMS_8D
        rows = []
        for name, make in table.items():
            if args.problems and name not in args.problems:
                continue
            problem = make()
            ref = problem.sample(jax.random.key(99), 8192)
            for sampler in args.samplers:
                for n in args.particles:
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore", RuntimeWarning)
                        err, draws, idata = C.run(problem, SAMPLERS[sampler](n), jax.random.key(n + 13 * dim),
                                                  num_chains=args.runs)
                    err = np.abs(err)
                    dist = [C.sliced(jax.random.key(c), draws[c], ref) for c in range(args.runs)]
                    floor = np.median([C.sliced(jax.random.key(c), problem.sample(jax.random.key(1000 + c), n), ref)
                                       for c in range(args.runs)])
                    min_ess = np.median(idata.diagnostics["min_ess"].values) / n
                    rows.append([name, sampler, n, f"{np.median(err):.2f} [{err.min():.2f}, {err.max():.2f}]",
                                 f"{np.nanmedian(dist) / floor:.2f}", f"{min_ess:.2f}",
                                 idata.posterior.attrs.get("twists", "")])
                    print(f"  d = {dim} {name} {sampler} N = {n}: done", file=sys.stderr, flush=True)
        print(f"\nd = {dim}, 100 DDPM steps, {args.runs} runs per row")
        print_table(["problem", "sampler", "N", "|log Z error| median [min, max]", "distance / floor",
                     "min ESS / N", "twists"], rows)


if __name__ == "__main__":
    main()
