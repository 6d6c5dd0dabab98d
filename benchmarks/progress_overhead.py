"""What the progress bar costs a compiled ``infer`` call: the time with ``progress_bar=True`` over
the time with ``progress_bar=False``, both compiled beforehand, on the README's 2-D mixture (100 DDPM
steps, one Dense observation, twisted SMC with 1,000 particles, 4 chains) and on a 64-dimensional
mixture (8 components, 8 observed coordinates, same sampler).

Each repeat times ``--calls`` calls of each setting, interleaved, and takes the ratio of their
fastest times (the least disturbed by other processes); the script prints the median and the range
of that ratio over ``--repeats`` repeats. Run it from the repository root with the package on the
path (``PYTHONPATH=. python benchmarks/progress_overhead.py``). Output goes through the bar as in
use (plain lines when stderr is redirected, which the gmm64 runs, over two seconds, write).

    python benchmarks/progress_overhead.py
    python benchmarks/progress_overhead.py --repeats 3 --calls 5 --problems gmm2
"""

from __future__ import annotations

import argparse
import statistics
import time

from _tables import print_table

PROBLEMS = ("gmm2", "gmm64")


def problem(name: str):
    import numpy as np
    import numpyro
    import numpyro.distributions as dist

    import pp_diffusion as ppd

    if name == "gmm2":
        gmm = ppd.GaussianMixture(weights=np.ones(4), means=4.0 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]))
        A, y = np.array([[1.0, 0.5]]), np.array([2.0])
    else:
        means = 3.0 * np.random.default_rng(0).standard_normal((8, 64))
        gmm = ppd.GaussianMixture(weights=np.ones(8), means=means)
        A = np.eye(64)[:8]
        y = A @ means[0]
    prior = ppd.DiffusionPrior(gmm.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=100)
    op = ppd.operators.Dense(A)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(op(x), 0.5), obs=y)

    return program, {"y": y}


def measure(name: str, repeats: int, calls: int) -> list[float]:
    import jax

    import pp_diffusion as ppd

    program, data = problem(name)
    sampler = ppd.smc.twisted(1000)
    key = jax.random.key(0)
    run = {on: (lambda on=on: ppd.infer(program, sampler, key, num_chains=4, progress_bar=on, **data))
           for on in (True, False)}
    for on in (True, False):  # compile both
        run[on]()
    ratios = []
    for _ in range(repeats):
        times = {True: [], False: []}
        for _ in range(calls):
            for on in (True, False):
                start = time.perf_counter()
                run[on]()
                times[on].append(time.perf_counter() - start)
        ratios.append(min(times[True]) / min(times[False]))
    return ratios, min(times[False])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--calls", type=int, default=5)
    parser.add_argument("--problems", nargs="+", choices=PROBLEMS, default=list(PROBLEMS))
    args = parser.parse_args()
    rows = []
    for name in args.problems:
        ratios, off = measure(name, args.repeats, args.calls)
        rows.append([name, f"{1e3 * off:.1f}", f"{statistics.median(ratios):.3f}",
                     f"{min(ratios):.3f}-{max(ratios):.3f}"])
    print(f"infer time with the progress bar on / off (compiled; {args.repeats} repeats of {args.calls} calls each)")
    print_table(["problem", "off, fastest (ms)", "ratio median", "ratio range"], rows)


if __name__ == "__main__":
    main()
