"""Energy targets on the digits with the distilled energy models: low temperature, exact guidance and
"class a AND class b", the energy SMC against the score heuristics, at equal NFE per draw.

    python benchmarks/energy.py                      # the README table
    python benchmarks/energy.py --betas 2 --particles 128 --chains 2

The prior is the zoo's ``digits_energy`` (distilled from ``digits``), ``--steps`` DDPM steps from
t = 0.95. Rows:

- ``chain``: the model's own DDPM chain (beta = 1), for reference;
- ``score x beta``: ``ppd.temper(prior, beta).sample``: the reverse chain of beta times the score
  (no weights), the common heuristic, which does not sample p^beta (Du et al., 2023); run with
  ``3 x --steps`` steps, so that it costs what the SMC row costs per draw;
- ``smc.energy``: ``ppd.smc.energy(--particles, move=ppd.mcmc.mala_move(1), move_every_step=True)``
  on the program ``x ~ ppd.temper(prior, beta)``: one energy gradient per step and one MALA iteration
  (plus its start) after each, 3 x ``--steps`` NFE per particle.

Figures per row: the clean classifier's confidence (mean max probability: sharper digits score higher),
the Frechet distance to the 360 test images in the classifier's features (low temperature moves away from
the data law, so it should rise with beta), the diversity (mean pairwise L2 distance between draws, in
pixels), the SMC's log Z (of gamma_0 = exp(-beta E_0): relative to the network's own constant), its
minimum ESS as a fraction of the particles, the MALA acceptance, the NFE per draw and the wall time.

With ``digits_conditional_energy`` in the zoo, two more tables: guidance toward ``--guided-class`` c,
``ppd.guided(uncond, cond_c, w)`` by SMC against classifier-free guidance at the same w (the chain of
(1 - w) s_null + w s_c, 3 x ``--steps`` steps), with the accuracy, p(c | x), the Frechet distance to the
class's test images and the diversity; and "class a AND class b", ``ppd.compose(cond_a, cond_b, uncond,
betas=(1, 1, -1))`` against the chain of the summed scores, with the fractions classified a and b and the
mean min(p(a | x), p(b | x)).
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

import pp_diffusion as ppd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import print_table  # noqa: E402


def mean_pairwise_distance(x: np.ndarray) -> float:
    flat = x.reshape(len(x), -1)
    sq = np.sum(flat**2, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * flat @ flat.T, 0.0)
    n = len(flat)
    return float(np.sqrt(d2)[~np.eye(n, dtype=bool)].mean())


def chain_draws(energy_prior, key, num):
    """``num`` draws of the prior's own chain (for an energy prior: the summed-score heuristic), the row's
    empty SMC cells and its NFE per draw, and the wall time."""
    start = time.perf_counter()
    draws = np.asarray(jax.jit(lambda k: energy_prior.sample(k, (num,)))(key))
    return draws, ["", "", "", str(energy_prior.nfe)], time.perf_counter() - start


def smc_draws(energy_prior, key, particles, chains):
    """Draws of ``smc.energy`` with one MALA iteration after every step, the row's SMC cells (log Z per chain,
    minimum ESS / N per chain, mean acceptance, NFE per draw) and the wall time."""
    def program():
        numpyro.sample("x", energy_prior)

    sampler = ppd.smc.energy(particles, move=ppd.mcmc.mala_move(1), move_every_step=True)
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        idata = ppd.infer(program, sampler, key, num_chains=chains, progress_bar=False)
    seconds = time.perf_counter() - start
    draws = np.asarray(idata.posterior["x"].values).reshape(-1, *energy_prior.event_shape)
    extra = [" / ".join(f"{v:.1f}" for v in np.asarray(idata.diagnostics["log_marginal_likelihood"].values)),
             " / ".join(f"{v:.3f}" for v in np.asarray(idata.diagnostics["min_ess"].values) / particles),
             f"{float(np.nanmean(idata.diagnostics['acceptance_rate'].values)):.2f}",
             str(int(idata.sample_stats["nfe"].values[0, 0]))]
    return draws, extra, seconds


def compile_times() -> None:
    """First call (trace, compile, run) and second call of ``infer`` against the number of steps: flat when the
    step body is compiled once."""
    schedule = ppd.schedules.ddpm_linear()
    a = ppd.GaussianMixture([0.5, 0.5], [[-2.0, 0.0], [2.0, 0.0]], [0.5, 0.5])
    b = ppd.GaussianMixture([0.3, 0.7], [[0.0, -1.0], [2.0, 1.0]], [1.0, 0.6])
    rows = []
    for steps in (25, 100, 400):
        both = ppd.product(ppd.DiffusionPrior(a.diffusion_model(schedule), steps=steps),
                           ppd.DiffusionPrior(b.diffusion_model(schedule), steps=steps))

        def program():
            numpyro.sample("x", both)

        sampler = ppd.smc.energy(64, move=ppd.mcmc.mala_move(1), move_every_step=True)
        times = []
        for seed in (0, 1):
            start = time.perf_counter()
            ppd.infer(program, sampler, jax.random.key(seed), progress_bar=False)
            times.append(time.perf_counter() - start)
        rows.append([str(steps), f"{times[0]:.1f}", f"{times[1]:.2f}"])
    print_table(["steps", "first call (s)", "second call (s)"], rows)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--betas", type=float, nargs="+", default=[2.0, 4.0])
    parser.add_argument("--particles", type=int, default=256)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--guided-class", type=int, default=3)
    parser.add_argument("--w", type=float, nargs="+", default=[2.0, 4.0])
    parser.add_argument("--and-classes", type=int, nargs=2, default=[1, 7])
    parser.add_argument("--conditional-only", action="store_true",
                        help="only the guidance and composition tables of digits_conditional_energy")
    parser.add_argument("--compile", action="store_true",
                        help="only print the first-call time of smc.energy with MALA moves against the number of "
                             "steps (the product of two 2-D mixtures, 64 particles)")
    args = parser.parse_args(argv)
    if args.compile:
        return compile_times()

    model = ppd.zoo.load("digits_energy")
    prior = ppd.DiffusionPrior(model, steps=args.steps)
    f = ppd.zoo.load_classifier("digits_classifier")
    features = jax.jit(jax.vmap(f.features))
    probabilities = jax.jit(jax.vmap(lambda x: jax.nn.softmax(f(x))))
    data = ppd.zoo.digits_data()
    test_features = np.asarray(features(jnp.asarray(data.x_test)))
    num = args.particles * args.chains

    def figures(draws):
        draws = draws[np.all(np.isfinite(draws.reshape(len(draws), -1)), axis=1)]
        conf = float(np.mean(np.max(np.asarray(probabilities(jnp.asarray(draws))), axis=1)))
        fd = ppd.metrics.frechet_distance(np.asarray(features(jnp.asarray(draws))), test_features)
        return conf, fd, mean_pairwise_distance(draws)

    if args.conditional_only:
        return conditional_tables(args, features, probabilities, data, num)
    rows = []

    def chain_row(label, beta, energy_prior, steps):
        draws, _, seconds = chain_draws(energy_prior, jax.random.key(args.seed), num)
        conf, fd, div = figures(draws)
        rows.append([label, f"{beta:g}", f"{conf:.3f}", f"{fd:.2f}", f"{div:.2f}", "", "", "", str(steps),
                     f"{seconds:.0f}"])

    chain_row("chain", 1.0, prior, args.steps)
    for beta in args.betas:
        heuristic = ppd.temper(ppd.DiffusionPrior(model, steps=3 * args.steps), beta)
        chain_row("score x beta", beta, heuristic, 3 * args.steps)
        draws, extra, seconds = smc_draws(ppd.temper(prior, beta), jax.random.key(args.seed + 1), args.particles,
                                          args.chains)
        conf, fd, div = figures(draws)
        rows.append(["smc.energy + mala", f"{beta:g}", f"{conf:.3f}", f"{fd:.2f}", f"{div:.2f}", *extra,
                     f"{seconds:.0f}"])

    print(f"digits_energy, {args.steps} DDPM steps from t = 0.95, {args.particles} particles x {args.chains} chains "
          f"({num} draws per row), seed {args.seed}")
    print_table(["sampler", "beta", "confidence", "Frechet", "diversity", "log Z (chains)", "min ESS / N",
                 "acceptance", "NFE / draw", "seconds"], rows)
    if "digits_conditional_energy" not in ppd.zoo.available():
        print("(digits_conditional_energy is not in the zoo: the guidance and composition tables are skipped)")
        return
    conditional_tables(args, features, probabilities, data, num)


def conditional_tables(args, features, probabilities, data, num) -> None:
    """The exact guided target against classifier-free guidance at the same w, and "class a AND class b"."""
    cond = ppd.zoo.load("digits_conditional_energy")
    uncond = ppd.DiffusionPrior(cond, steps=args.steps)  # network(x, t): the null class
    of_class = lambda c, steps: ppd.DiffusionPrior(ppd.guidance.classifier_free(cond, c, 1.0), steps=steps)

    smc_run = lambda energy_prior, key: smc_draws(energy_prior, key, args.particles, args.chains)
    chain_run = lambda energy_prior, key: chain_draws(energy_prior, key, num)

    c = args.guided_class
    test_c = np.asarray(features(jnp.asarray(data.x_test[data.y_test == c])))
    rows = []
    for w in args.w:
        for label, run in (("classifier-free", lambda: chain_run(
                               ppd.guided(ppd.DiffusionPrior(cond, steps=3 * args.steps), of_class(c, 3 * args.steps), w),
                               jax.random.key(args.seed + 2))),
                           ("smc.energy + mala", lambda: smc_run(ppd.guided(uncond, of_class(c, args.steps), w),
                                                                 jax.random.key(args.seed + 3)))):
            draws, extra, seconds = run()
            draws = draws[np.all(np.isfinite(draws.reshape(len(draws), -1)), axis=1)]
            p = np.asarray(probabilities(jnp.asarray(draws)))
            fd = ppd.metrics.frechet_distance(np.asarray(features(jnp.asarray(draws))), test_c)
            rows.append([label, f"{w:g}", f"{np.mean(np.argmax(p, 1) == c):.3f}", f"{np.mean(p[:, c]):.3f}", f"{fd:.2f}",
                         f"{mean_pairwise_distance(draws):.2f}", *extra, f"{seconds:.0f}"])
    print(f"\nguidance toward class {c}: p(x)^(1-w) p(x | c)^w ({num} draws per row; Frechet distance to the "
          f"class's {len(test_c)} test images)")
    print_table(["sampler", "w", "accuracy", "p(c | x)", "Frechet", "diversity", "log Z (chains)", "min ESS / N",
                 "acceptance", "NFE / draw", "seconds"], rows)

    a, b = args.and_classes
    rows = []
    for label, steps_, run in (("summed scores", 3 * args.steps, chain_run), ("smc.energy + mala", args.steps, smc_run)):
        both = ppd.compose(of_class(a, steps_), of_class(b, steps_), ppd.DiffusionPrior(cond, steps=steps_),
                           betas=(1.0, 1.0, -1.0))
        draws, extra, seconds = run(both, jax.random.key(args.seed + 4))
        draws = draws[np.all(np.isfinite(draws.reshape(len(draws), -1)), axis=1)]
        p = np.asarray(probabilities(jnp.asarray(draws)))
        predicted = np.argmax(p, 1)
        rows.append([label, f"{np.mean(predicted == a):.3f}", f"{np.mean(predicted == b):.3f}",
                     f"{np.mean(np.minimum(p[:, a], p[:, b])):.3f}", f"{mean_pairwise_distance(draws):.2f}", *extra,
                     f"{seconds:.0f}"])
    print(f"\n\"class {a} AND class {b}\": p(x | {a}) p(x | {b}) / p(x) ({num} draws per row)")
    print_table(["sampler", f"classified {a}", f"classified {b}", f"mean min(p({a}), p({b}))", "diversity",
                 "log Z (chains)", "min ESS / N", "acceptance", "NFE / draw", "seconds"], rows)


if __name__ == "__main__":
    main()
