"""Tree sampling (DTS, DTS*) against SMC, DPS and best-of-N: the exact 2-D mixture, digit classes, the tree's cost.

    python benchmarks/tree.py                          # the tables in docs/benchmarks.md
    python benchmarks/tree.py --rollouts 256 1024 --chains 2 --png /tmp/tree.png
    python benchmarks/tree.py --digits --classes 3 7 --budgets 1000 3000 10000 30000 --chains 1

(a) Accuracy against NFE, on the 2-D Gaussian mixture of the conditioning tests with two exact
    targets: a Gaussian likelihood y = x + N(0, 0.5^2 I) ("gaussian") and the tilt exp(1.5 a . x)
    ("linear"); 100 DDPM steps. For DTS at each number of rollouts (its defaults, honest values; the
    paper's estimator, ``honest=False``; uniform selection, ``selection_scale=0``) and for bootstrap, twisted SMC
    and FK steering at the particle count of about the same NFE: the median over ``--chains``
    independent runs (with the min-max range) of the sliced 1-Wasserstein distance between the draws
    and 8,192 exact posterior draws, over the floor (the same distance for as many exact draws), and
    of |log Z error|. Best-of-N (N chains) reports its max log G beside DTS*'s at equal NFE. With
    ``--png`` the curves are drawn (distance and |log Z error| against NFE).
(b) ``--digits``: class-conditional sampling of the zoo's unconditional ``digits`` model, the program of
    benchmarks/digits_classes.py (``numpyro.sample("c", dist.Categorical(logits=f(x)), obs=c)`` with the
    clean classifier f, 50 DDPM steps), so the target is p_theta(x) p_f(c | x). For each class of
    ``--classes``, NFE budget B of ``--budgets`` and sampler of ``--samplers``: DTS (honest, the paper's
    estimator and ``selection_scale=0``) with B / 50 rollouts (its NFE, read from the tree, is a little below B: rollouts
    start at inner nodes), DTS* and best-of-N (the ``--draws`` best of B / 50 rollouts / candidates), FK
    steering and TDS with B / 50 particles, DPS with B / 50 guided chains (TDS and DPS also spend one VJP
    per NFE; a budget below 50 ``--draws`` is raised to it). Every run gives ``--draws`` draws (the SMC and
    DPS ones a random subset), over which: the Frechet distance in f's penultimate features to the class's
    test images (about 36; a "training images" row gives the same distance for as many training images:
    the floor of the small sets), E[log p_f(c | x)], the mean pairwise pixel distance of the draws
    (diversity) and the wall time per run (the mean over the classes after the first, whose run compiles).
    Then the NFE at which DTS first reaches the best baseline's Frechet distance at the largest budget, and
    the ratio of the NFEs.
(c) Cost: wall time of a steady-state run per rollout and per node, against the number of rollouts
    (should not grow faster than linearly in the tree's size), with the tree's bytes and the process's
    peak resident memory so far (``--cost-only``: this part alone, in a fresh process).

Each figure is printed with the command line that made it.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import pp_diffusion as ppd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import print_table  # noqa: E402
from smc import _conditioning as C  # noqa: E402  (the exact problems of the tests)
from digits_classes import make_program, run_class  # noqa: E402

PROBLEMS = {"gaussian": lambda: C.quadratic_reward(2), "linear": lambda: C.linear_reward(2)}
DIGIT_SAMPLERS = ("dts", "dts(honest=False)", "dts(selection_scale=0)", "dts_star", "fk_steering", "twisted", "dps", "best_of_n")
BASELINES = ("fk_steering", "twisted", "dps", "best_of_n")


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
            for label, options in (("dts(honest=False)", dict(honest=False)),
                                   ("dts(selection_scale=0)", dict(selection_scale=0.0, honest=False))):
                other, s_other = run(problem, ppd.tree.dts(rollouts, batch_size=batch, **options),
                                     jax.random.key(rollouts), args.chains)
                entries.append((label, other, s_other, float(np.median(other.diagnostics["nfe"].values))))
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
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**10  # KiB on Linux
        rows.append([rollouts, nodes, f"{seconds:.2f}", f"{1e3 * seconds / rollouts:.2f}",
                     f"{1e6 * seconds / rollouts / nodes:.3f}", f"{nbytes / 2**20:.1f}", f"{peak:.0f}"])
    print(f"\n(c) cost of growing a tree (batch {args.batch}, 100 steps, d = 2)")
    print_table(["rollouts", "nodes", "seconds", "ms / rollout", "us / rollout / node", "tree MiB",
                 "process peak RSS MiB"], rows)


def digits_sampler(name, budget, steps, batch, draws):
    """The sampler ``name`` at about ``budget`` NFE: B / steps rollouts, particles, chains or candidates."""
    n = max(draws, budget // steps)
    batch = min(batch, max(1, n // 10))  # at least 10 batches of rollouts
    rollouts = n // batch * batch
    return {
        "dts": lambda: ppd.tree.dts(rollouts, batch_size=batch, num_draws=draws),
        "dts(honest=False)": lambda: ppd.tree.dts(rollouts, batch_size=batch, num_draws=draws, honest=False),
        "dts(selection_scale=0)": lambda: ppd.tree.dts(rollouts, batch_size=batch, num_draws=draws,
                                                       selection_scale=0.0, honest=False),
        "dts_star": lambda: ppd.tree.dts_star(rollouts, batch_size=batch, num_draws=draws),
        "fk_steering": lambda: ppd.smc.fk_steering(n),
        "twisted": lambda: ppd.smc.twisted(n),
        "dps": lambda: ppd.guidance.dps(n, scale=1.0, normalize=False),
        "best_of_n": lambda: ppd.tree.best_of_n(n, num_draws=draws),
    }[name](), (rollouts if name.startswith("dts") else n)


def run_nfe(idata):
    """NFE of each chain: the tree's and best-of-N's run total, or NFE per particle times particles."""
    if "nfe" in idata.diagnostics:
        return np.asarray(idata.diagnostics["nfe"].values, float).reshape(-1)
    per_particle = np.asarray(idata.sample_stats["nfe"].values, float)  # (chain, particle)
    return per_particle.sum(axis=1)


def mean_pairwise_distance(x):
    x = x.reshape(len(x), -1)
    d = np.sqrt(np.maximum(np.sum((x[:, None] - x[None]) ** 2, -1), 0.0))
    return float(d[np.triu_indices(len(x), 1)].mean())


def first_match(points, target):
    """The smallest NFE where the (NFE, distance) curve reaches ``target``, log-interpolated between the
    grid points; None if it never does."""
    points = sorted(points)
    for i, (nfe, value) in enumerate(points):
        if value <= target:
            if i == 0:
                return nfe
            (n0, v0), (n1, v1) = points[i - 1], points[i]
            return float(np.exp(np.log(n0) + (v0 - target) / (v0 - v1) * (np.log(n1) - np.log(n0))))
    return None


def digits(args):
    prior = ppd.DiffusionPrior(ppd.zoo.load("digits"), steps=args.steps)
    f = ppd.zoo.load_classifier("digits_classifier")
    data = ppd.zoo.digits_data()
    features = jax.jit(jax.vmap(f.features))
    log_p = jax.jit(jax.vmap(lambda x: jax.nn.log_softmax(f(x))))
    program = make_program(prior, f)
    rng = np.random.default_rng(args.seed)
    test = {c: np.asarray(features(jnp.asarray(data.x_test[data.y_test == c]))) for c in args.classes}
    floor = []  # as many training images of the class as a run pools draws
    for c in args.classes:
        train = data.x_train[data.y_train == c]
        pick = train[rng.choice(len(train), args.chains * args.draws, replace=False)]
        floor.append(ppd.metrics.frechet_distance(np.asarray(features(jnp.asarray(pick))), test[c]))
    rows, curves = [], {}
    for budget in args.budgets:
        for name in args.samplers:
            fd, log_pc, diversity, nfe, seconds, bad = [], [], [], [], [], 0
            for c in args.classes:
                sampler, size = digits_sampler(name, budget, args.steps, args.digits_batch, args.draws)
                idata, took = run_class(program, sampler, jax.random.key(args.seed * 1000 + c), args.chains, c)
                seconds.append(took)
                nfe.extend(run_nfe(idata))
                x = np.asarray(idata.posterior["x"].values)  # (chain, draw, 8, 8)
                pooled = []
                for chain in x:
                    if len(chain) > args.draws:
                        chain = chain[rng.choice(len(chain), args.draws, replace=False)]
                    finite = np.all(np.isfinite(chain.reshape(len(chain), -1)), axis=1)
                    bad += int(np.sum(~finite))
                    chain = chain[finite]
                    pooled.append(chain)
                    if len(chain) > 1:
                        log_pc.append(float(np.mean(np.asarray(log_p(jnp.asarray(chain)))[:, c])))
                        diversity.append(mean_pairwise_distance(chain))
                pooled = np.concatenate(pooled)
                fd.append(ppd.metrics.frechet_distance(np.asarray(features(jnp.asarray(pooled))), test[c])
                          if len(pooled) > 1 else np.nan)
            curves.setdefault(name, []).append((float(np.median(nfe)), float(np.nanmean(fd))))
            per_class = " / ".join(f"{v:.1f}" for v in fd)
            rows.append([budget, name, size, f"{np.median(nfe):.0f}", f"{np.nanmean(fd):.1f} ({per_class})",
                         f"{np.mean(log_pc):.3f}", f"{np.mean(diversity):.2f}",
                         f"{np.mean(seconds[1:] or seconds):.1f}" + (f" ({bad} non-finite)" if bad else "")])
            print(f"{budget} {name}: {seconds[-1]:.1f} s", file=sys.stderr, flush=True)
    rows.append(["-", "training images", "-", "-", f"{np.mean(floor):.1f}", "", "", ""])
    print(f"\n(b) digits, classes {args.classes}, {args.steps} steps, {args.chains} chain(s) per class and run, "
          f"{args.draws} draws per chain; Frechet and the rest: mean over the classes")
    print_table(["budget", "sampler", "rollouts / N", "NFE per run", "Frechet (per class)", "E[log p(c | x)]", "diversity",
                 "s / run"], rows)
    baselines = [b for b in BASELINES if b in curves]
    if not baselines:
        return
    best = min(baselines, key=lambda b: max(curves[b])[1])
    best_nfe, target = max(curves[best])
    print(f"\nbest baseline at its largest budget: {best}, Frechet {target:.2f} at {best_nfe:.0f} NFE")
    for name in ("dts", "dts(honest=False)", "dts(selection_scale=0)"):
        if name not in curves:
            continue
        nfe = first_match(curves[name], target)
        smallest = min(curves[name])[0]
        if nfe is None:
            reached = min(v for _, v in curves[name])
            print(f"{name}: does not reach Frechet {target:.2f} on the grid (reaches {reached:.2f})")
        else:
            bound = "at least " if nfe == smallest else ""
            print(f"{name}: reaches it at {nfe:.0f} NFE: {bound}{best_nfe / nfe:.1f}x less compute "
                  f"(paper: up to 10x)")


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
    parser.add_argument("--digits", action="store_true", help="run the digits part (b) instead")
    parser.add_argument("--classes", type=int, nargs="+", default=[3, 7], help="--digits: the classes")
    parser.add_argument("--budgets", type=int, nargs="+", default=[1000, 10000, 100000],
                        help="--digits: NFE per run")
    parser.add_argument("--samplers", nargs="+", default=list(DIGIT_SAMPLERS), choices=DIGIT_SAMPLERS,
                        help="--digits: the samplers")
    parser.add_argument("--draws", type=int, default=20, help="--digits: draws per chain")
    parser.add_argument("--digits-batch", type=int, default=64, help="--digits: rollouts per batch (at most)")
    parser.add_argument("--steps", type=int, default=50, help="--digits: DDPM steps")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cost-only", action="store_true", help="run the cost part (c) alone")
    args = parser.parse_args()
    print("command: python benchmarks/tree.py " + " ".join(sys.argv[1:]))
    if args.digits:
        digits(args)
        return
    if args.cost_only:
        cost(args)
        return
    curves = accuracy(args)
    cost(args)
    if args.png:
        plot(curves, args.png)


if __name__ == "__main__":
    main()
