"""Tree sampling (DTS, DTS*) against SMC and best-of-N on the exact 2-D mixture, and the cost of the tree.

    python benchmarks/tree.py                          # the tables in docs/benchmarks.md
    python benchmarks/tree.py --rollouts 256 1024 --chains 2 --png /tmp/tree.png

(a) Accuracy against NFE, on the 2-D Gaussian mixture of the conditioning tests with two exact
    targets: a Gaussian likelihood y = x + N(0, 0.5^2 I) ("gaussian") and the tilt exp(1.5 a . x)
    ("linear"); 100 DDPM steps. For DTS at each number of rollouts (the paper's selection rule, and
    uniform selection during the search: ``selection_scale=0``) and for bootstrap, twisted SMC
    and FK steering at the particle count of about the same NFE: the median over ``--chains``
    independent runs (with the min-max range) of the sliced 1-Wasserstein distance between the draws
    and 8,192 exact posterior draws, over the floor (the same distance for as many exact draws), and
    of |log Z error|. Best-of-N (N chains) reports its max log G beside DTS*'s at equal NFE. With
    ``--png`` the curves are drawn (distance and |log Z error| against NFE).
(b) Cost: wall time of a steady-state run per rollout and per node, against the number of rollouts
    (should not grow faster than linearly in the tree's size), with the tree's bytes.

Each figure is printed with the command line that made it. The digits part of the issue (class
posteriors of the unconditional model against NFE up to 10^6) is not in this script yet.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import numpy as np

import pp_diffusion as ppd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import print_table  # noqa: E402
from smc import _conditioning as C  # noqa: E402  (the exact problems of the tests)

PROBLEMS = {"gaussian": lambda: C.quadratic_reward(2), "linear": lambda: C.linear_reward(2)}


def summary(values):
    v = np.asarray(values, float)
    return f"{np.median(v):.3f} [{v.min():.3f}, {v.max():.3f}]"


def run(problem, sampler, key, chains):
    t0 = time.perf_counter()
    idata = ppd.infer(problem.program, sampler, key, num_chains=chains, y=problem.y)
    seconds = time.perf_counter() - t0
    return idata, seconds


def accuracy(args):
    curves = {}
    for name in args.problems:
        problem = PROBLEMS[name]()
        ref = problem.sample(jax.random.key(99), 8192)
        rows = []
        for rollouts in args.rollouts:
            batch = min(args.batch, rollouts)
            idata, seconds = run(problem, ppd.tree.dts(rollouts, batch_size=batch), jax.random.key(rollouts),
                                 args.chains)
            nfe = float(np.median(idata.diagnostics["nfe"].values))
            particles = max(8, int(round(nfe / 100)))
            entries = [("dts", idata, seconds, nfe)]
            uniform, s_uniform = run(problem, ppd.tree.dts(rollouts, batch_size=batch, selection_scale=0.0),
                                     jax.random.key(rollouts), args.chains)
            entries.append(("dts(selection_scale=0)", uniform, s_uniform,
                            float(np.median(uniform.diagnostics["nfe"].values))))
            for label, make in (("bootstrap", ppd.smc.bootstrap), ("twisted", ppd.smc.twisted),
                                ("fk_steering", ppd.smc.fk_steering)):
                smc, s = run(problem, make(particles), jax.random.key(rollouts), args.chains)
                entries.append((label, smc, s, 100.0 * particles))
            for label, idata_, seconds_, nfe_ in entries:
                x = idata_.posterior["x"].values
                n = x.shape[1]
                dist = [C.sliced(jax.random.key(c), x[c], ref) for c in range(args.chains)]
                floor = np.mean([C.sliced(jax.random.key(c), problem.sample(jax.random.key(1000 + c), n), ref)
                                 for c in range(args.chains)])
                err = np.abs(idata_.diagnostics["log_marginal_likelihood"].values - problem.log_z)
                ratio = np.asarray(dist) / floor
                curves.setdefault((name, label), []).append((nfe_, np.median(ratio), np.median(err)))
                rows.append([label, rollouts if label.startswith("dts") else particles, f"{nfe_:.0f}", summary(ratio),
                             summary(err), f"{seconds_:.1f}"])
            star, s_star = run(problem, ppd.tree.dts_star(rollouts, batch_size=batch), jax.random.key(rollouts),
                               args.chains)
            budget = max(1, int(np.median(star.diagnostics["nfe"].values)) // 100)
            best, s_best = run(problem, ppd.tree.best_of_n(budget), jax.random.key(rollouts), args.chains)
            rows.append(["dts_star max log G", rollouts, f"{np.median(star.diagnostics['nfe'].values):.0f}",
                         summary(star.diagnostics["max_log_g"].values), "", f"{s_star:.1f}"])
            rows.append(["best_of_n max log G", budget, f"{100 * budget}",
                         summary(best.diagnostics["max_log_g"].values), "", f"{s_best:.1f}"])
        print(f"\n(a) {name}: exact log Z = {problem.log_z:.3f}; {args.chains} runs per row, median [min, max]")
        print_table(["sampler", "rollouts / N", "NFE", "distance / floor (or max log G)", "|log Z error|",
                     "seconds"], rows)
    return curves


def cost(args):
    problem = PROBLEMS["gaussian"]()
    rows = []
    for rollouts in args.cost_rollouts:
        sampler = ppd.tree.dts(rollouts, batch_size=args.batch)
        kern = ppd.tree.kernel(sampler, problem.program, y=problem.y)
        tree = kern.grow(kern.init(jax.random.key(0)), args.batch)  # compile
        jax.block_until_ready(tree)
        t0 = time.perf_counter()
        tree = jax.block_until_ready(kern.grow(kern.init(jax.random.key(1)), rollouts))
        seconds = time.perf_counter() - t0
        nodes = int(tree.num_nodes)
        nbytes = sum(np.asarray(a).nbytes for a in jax.tree.leaves(tree))
        rows.append([rollouts, nodes, f"{seconds:.2f}", f"{1e3 * seconds / rollouts:.2f}",
                     f"{1e6 * seconds / rollouts / nodes:.3f}", f"{nbytes / 2**20:.1f}"])
    print(f"\n(b) cost of growing a tree (batch {args.batch}, 100 steps, d = 2)")
    print_table(["rollouts", "nodes", "seconds", "ms / rollout", "us / rollout / node", "tree MiB"], rows)


def plot(curves, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted({k[0] for k in curves})
    fig, axes = plt.subplots(2, len(names), figsize=(5 * len(names), 7), squeeze=False)
    for j, name in enumerate(names):
        for (problem, label), points in sorted(curves.items()):
            if problem != name:
                continue
            nfe, ratio, err = np.asarray(points).T
            axes[0, j].loglog(nfe, ratio, "o-", label=label)
            axes[1, j].loglog(nfe, np.maximum(err, 1e-3), "o-", label=label)
        axes[0, j].set_title(f"{name}: distance / floor")
        axes[1, j].set_title(f"{name}: |log Z error|")
        axes[1, j].set_xlabel("NFE")
        axes[0, j].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    print(f"\ncurves written to {path}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--problems", nargs="+", default=list(PROBLEMS), choices=list(PROBLEMS))
    parser.add_argument("--rollouts", type=int, nargs="+", default=[256, 1024, 4096])
    parser.add_argument("--cost-rollouts", type=int, nargs="+", default=[512, 2048, 8192])
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--png", default=None)
    args = parser.parse_args()
    print("command: python benchmarks/tree.py " + " ".join(sys.argv[1:]))
    curves = accuracy(args)
    cost(args)
    if args.png:
        plot(curves, args.png)


if __name__ == "__main__":
    main()
