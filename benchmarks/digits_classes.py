"""Class-conditional sampling of the unconditional digits model through a classifier, at equal NFE.

    python benchmarks/digits_classes.py                           # the README table
    python benchmarks/digits_classes.py --classes 3 7 --samplers bootstrap twisted

The prior is the zoo's unconditional ``digits`` model (50 DDPM steps from t = 0.95); the program
observes the class through the zoo's clean classifier f, as an ordinary NumPyro observation:

    x = numpyro.sample("x", prior)
    numpyro.sample("c", dist.Categorical(logits=f(x)), obs=c)

so the target is p_theta(x) p_f(c | x), and its evidence p(c) = E[p_f(c | x)] is about the class
frequency 0.1 (the classifier is 99% accurate on real digits). The site's default twist is the
tempered look-ahead of f (``pp_diffusion.twists``); the ``+nc`` rows give it instead the zoo's
noise-conditional classifier g(x_t, t) as its twist
(``infer={"twist": ppd.twists.noise_conditional(g)}``), which models p(c | x_t) directly.

Samplers at equal NFE per draw budget: bootstrap, twisted (TDS) and FK steering (diff and max
potentials) with ``--particles`` particles; SVDD with ``--particles / 4`` particles of 4 children each;
DPS with ``--particles`` independent guided chains (constant step, scale 1). TDS and DPS add one VJP
per network evaluation. For each class and sampler, ``--chains`` independent runs.

Figures per sampler, averaged over the classes:

- accuracy: the fraction of draws the clean classifier assigns to the asked class;
- Frechet distance, in the clean classifier's penultimate features, between the draws of a class
  (all chains pooled) and the test images of that class (about 36 each; both sets small, so compare
  rows with one another, not with other tables);
- mean log p(c) estimate over chains and classes (log 0.1 = -2.30; NaN for the unweighted samplers),
  and its spread between the chains of a class;
- the minimum ESS during the run (the median over chains and classes, as a fraction of the particles).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import pp_diffusion as ppd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import print_table  # noqa: E402

SAMPLERS = ("bootstrap", "twisted", "fk_diff", "fk_max", "svdd", "dps",
            "bootstrap+nc", "twisted+nc", "fk_max+nc", "svdd+nc")


def make_sampler(name: str, particles: int):
    base = name.removesuffix("+nc")
    return {
        "bootstrap": lambda: ppd.smc.bootstrap(particles),
        "twisted": lambda: ppd.smc.twisted(particles),
        "fk_diff": lambda: ppd.smc.fk_steering(particles, potential="diff"),
        "fk_max": lambda: ppd.smc.fk_steering(particles, potential="max"),
        "svdd": lambda: ppd.smc.svdd(particles // 4, 4),
        "dps": lambda: ppd.guidance.dps(particles, scale=1.0, normalize=False),
    }[base]()


def make_program(prior, classify, twist=None):
    def program(c=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("c", dist.Categorical(logits=classify(x)), obs=c,
                       infer={} if twist is None else {"twist": twist})

    return program


def run_class(program, sampler, rng_key, chains, c):
    """``(DataTree, seconds)`` of one class's run (RuntimeWarnings of collapsing weights silenced)."""
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        idata = ppd.infer(program, sampler, rng_key, num_chains=chains, progress_bar=False,
                          c=np.asarray(c, np.int32))
    return idata, time.perf_counter() - start


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--samplers", nargs="+", default=list(SAMPLERS), choices=SAMPLERS)
    parser.add_argument("--particles", type=int, default=64)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    model = ppd.zoo.load("digits")
    prior = ppd.DiffusionPrior(model, steps=args.steps)
    f = ppd.zoo.load_classifier("digits_classifier")
    g = ppd.zoo.load_classifier("digits_classifier", noise_conditional=True)
    data = ppd.zoo.digits_data()
    features = jax.jit(jax.vmap(f.features))
    classify = jax.jit(jax.vmap(f))
    noisy = ppd.twists.noise_conditional(lambda x_t, t: g(x_t, t))
    programs = {False: make_program(prior, f), True: make_program(prior, f, noisy)}
    test_features = {c: np.asarray(features(jnp.asarray(data.x_test[data.y_test == c]))) for c in args.classes}

    rows = []
    for name in args.samplers:
        sampler = make_sampler(name, args.particles)
        program = programs[name.endswith("+nc")]
        acc, fd, log_z, spread, min_ess, seconds = [], [], [], [], [], []
        for c in args.classes:
            idata, took = run_class(program, sampler, jax.random.key(args.seed * 1000 + c), args.chains, c)
            seconds.append(took)
            draws = np.asarray(idata.posterior["x"].values).reshape(-1, 8, 8)
            finite = np.all(np.isfinite(draws.reshape(len(draws), -1)), axis=1)
            draws = draws[finite]
            predicted = np.asarray(jnp.argmax(classify(jnp.asarray(draws)), axis=-1))
            acc.append(float(np.mean(predicted == c)) if len(draws) else 0.0)
            fd.append(ppd.metrics.frechet_distance(np.asarray(features(jnp.asarray(draws))), test_features[c])
                      if len(draws) > 1 else np.nan)
            lz = np.asarray(idata.diagnostics["log_marginal_likelihood"].values, np.float64)
            log_z.append(np.mean(lz))
            spread.append(np.std(lz))
            stats = idata.diagnostics
            if np.all(np.isfinite(lz)):  # unweighted samplers (SVDD, DPS): no ESS
                num = idata.sample_stats.sizes["draw"]
                min_ess.extend(np.asarray(stats["min_ess"].values).reshape(-1) / num)
        nfe = int(np.asarray(idata.sample_stats["nfe"].values).reshape(-1)[0])
        vjp = int(np.asarray(idata.sample_stats["vjp"].values).reshape(-1)[0]) if "vjp" in idata.sample_stats else 0
        per_draw_budget = nfe * (args.particles // 4 if name.startswith("svdd") else args.particles)
        rows.append([name, f"{np.mean(acc):.3f}", f"{np.nanmean(fd):.1f}", f"{np.mean(log_z):.2f}",
                     f"{np.mean(spread):.2f}", f"{np.median(min_ess):.2f}" if min_ess else "-",
                     f"{per_draw_budget} / {vjp * (args.particles if vjp else 0)}",
                     f"{np.mean(seconds[1:] if len(seconds) > 1 else seconds):.1f}"])
        print(f"{name}: done", file=sys.stderr, flush=True)
    print(f"digits, classes {args.classes}, {args.particles} particles, {args.steps} steps, {args.chains} chains per class")
    print_table(["sampler", "accuracy", "Frechet", "mean log p(c)", "sd between chains", "min ESS / N",
                 "NFE / VJP per chain", "s per class"], rows)


if __name__ == "__main__":
    main()
