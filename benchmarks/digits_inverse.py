"""Image inverse problems on the digits test split: DPS, TDS, FK steering and MCGdiff at equal NFE.

    python benchmarks/digits_inverse.py                      # the README table (100 images)
    python benchmarks/digits_inverse.py --images 20 --tasks inpaint_half --samplers twisted

The prior is the zoo's ``digits`` model (``pp_diffusion.zoo.load("digits")``, DDPM chain of
``--steps`` steps; with ``--x0-var``, the analytic reverse variance measured on the training
split). Each task observes y = A x + N(0, sigma_y^2) for a test image x, with the likelihood
written as an ordinary NumPyro observation ``numpyro.sample("y", dist.Normal(op(x), sigma_y),
obs=y)``:

- ``inpaint_half``: the left half of the image (32 pixels), sigma_y = 0.1;
- ``inpaint_random``: 50% of the pixels, drawn once from ``--seed``, sigma_y = 0.1;
- ``superres_2x``: 2x2 average pooling, 8x8 -> 4x4, sigma_y = 0.05;
- ``deblur``: 3x3 Gaussian blur (std 1 pixel), sigma_y = 0.05;
- ``denoise``: every pixel, sigma_y = 0.5.

Every sampler runs ``--particles`` particles (DPS: that many independent guided chains) for the
same ``--steps`` steps, so all spend the same number of network evaluations per image (NFE =
particles x steps); DPS and TDS add one vector-Jacobian product (VJP) per evaluation. For each
(task, sampler) the images are one ``jax.vmap`` inside one ``jax.jit``; the printed wall time is
the compiled run's (compilation is printed apart).

``mcgdiff(data_cov)`` is MCGdiff with the training split's pixel covariance (``np.cov``) as its
``data_cov``.

Figures per (task, sampler), over the images:

- PSNR of the posterior mean, 10 log10(2^2 / MSE) (pixels span [-1, 1]);
- coverage of the pixel-wise 90% credible intervals (the 5% and 95% quantiles of the draws; a
  calibrated posterior covers about 90% of the true pixels);
- accuracy of the zoo's clean classifier (``zoo.load_classifier("digits_classifier")``) on the
  draws, against the true digit (the fraction of all draws classified correctly);
- log-evidence: the mean over images of the sampler's log p(y) estimate (NaN for DPS).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

import pp_diffusion as ppd
from pp_diffusion.metrics import interval_coverage, psnr
from pp_diffusion.program import inspect_program

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import print_table  # noqa: E402


class Task(NamedTuple):
    name: str
    operator: ppd.operators.LinearOperator
    sigma_y: float


def tasks(seed: int) -> dict[str, Task]:
    half = np.zeros((8, 8), dtype=bool)
    half[:, :4] = True
    random = np.zeros(64, dtype=bool)
    random[np.random.default_rng(seed).permutation(64)[:32]] = True
    return {
        "inpaint_half": Task("inpaint_half", ppd.operators.Inpaint(half), 0.1),
        "inpaint_random": Task("inpaint_random", ppd.operators.Inpaint(random.reshape(8, 8)), 0.1),
        "superres_2x": Task("superres_2x", ppd.operators.Downsample((8, 8), 2), 0.05),
        "deblur": Task("deblur", ppd.operators.Blur.gaussian((8, 8), 3, 1.0), 0.05),
        "denoise": Task("denoise", ppd.operators.Inpaint(np.ones((8, 8), dtype=bool)), 0.5),
    }


def samplers(particles: int, data_cov=None) -> dict[str, ppd.Sampler]:
    """``data_cov``: the training split's pixel covariance, for MCGdiff's Gaussian-surrogate twist."""
    return {
        "dps": ppd.guidance.dps(particles, scale=1.0, normalize=False),
        "twisted": ppd.smc.twisted(particles),
        "fk_steering": ppd.smc.fk_steering(particles),
        "mcgdiff": ppd.smc.mcgdiff(particles),
        "mcgdiff(data_cov)": ppd.smc.mcgdiff(particles, data_cov=data_cov),
    }


def make_program(prior, task: Task):
    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(task.operator(x), task.sigma_y), obs=y)

    return program


def observations(key, task: Task, images):
    clean = jax.vmap(task.operator)(images)
    return clean + task.sigma_y * jax.random.normal(key, clean.shape)


def batched_run(program, sampler, ys):
    """One compiled function: every image's y (vmapped), one run of ``sampler`` each."""
    info = inspect_program(program, {"y": ys[0]})
    run = lambda k, y: sampler.run(k, sampler.setup(program, info, {"y": y}))
    return jax.jit(jax.vmap(run))


def classifier_accuracy(classify, draws, labels):
    logits = classify(jnp.asarray(draws.reshape(-1, 8, 8)))
    predicted = np.asarray(jnp.argmax(logits, axis=-1)).reshape(draws.shape[:2])
    return float(np.mean(predicted == labels[:, None]))


def main(argv=None) -> None:
    all_tasks = tasks(0)
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=100, help="first N images of the test split")
    parser.add_argument("--particles", type=int, default=16)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--x0-var", action="store_true",
                        help="DiffusionPrior(..., x0_var=denoising_variance(model, key, training split)) instead of DDPM's kernel")
    parser.add_argument("--order", type=int, choices=[1, 2], default=1,
                        help="DiffusionPrior(..., order=...): 1, DDPM's mean; 2, the multistep SDE-DPM-Solver++(2M) mean")
    parser.add_argument("--tasks", nargs="+", default=list(all_tasks), choices=list(all_tasks))
    sampler_names = list(samplers(1))
    parser.add_argument("--samplers", nargs="+", default=sampler_names, choices=sampler_names)
    args = parser.parse_args(argv)
    problems = tasks(args.seed)
    if args.images < 1 or args.particles < 2 or args.steps < 2:
        parser.error("--images must be >= 1, --particles >= 2 and --steps >= 2")

    data = ppd.zoo.digits_data()
    if args.images > data.x_test.shape[0]:
        parser.error(f"--images must be at most {data.x_test.shape[0]} (the test split)")
    images = jnp.asarray(data.x_test[: args.images])
    labels = data.y_test[: args.images]
    model = ppd.zoo.load("digits")
    train = np.asarray(data.x_train, np.float64).reshape(data.x_train.shape[0], -1)
    chosen = samplers(args.particles, np.cov(train, rowvar=False))
    x0_var = ppd.denoising_variance(model, jax.random.key(1), data.x_train) if args.x0_var else None
    prior = ppd.DiffusionPrior(model, steps=args.steps, x0_var=x0_var, order=args.order)
    classifier = ppd.zoo.load_classifier("digits_classifier")
    classify = jax.jit(jax.vmap(classifier))
    truth = np.asarray(images)

    print(f"digits inverse problems: {args.images} test images, {args.particles} particles, "
          f"{args.steps} DDPM steps (t from {model.t_start:g}{', analytic variance' if args.x0_var else ''}{', second order' if args.order == 2 else ''}), seed {args.seed}; "
          f"clean-classifier accuracy on the true images {classifier_accuracy(classify, truth[:, None], labels):.3f}")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
    rows = []
    key = jax.random.key(args.seed)
    for task_name in args.tasks:
        task = problems[task_name]
        k_obs, k_run = jax.random.split(jax.random.fold_in(key, hash(task_name) % 2**31))
        ys = observations(k_obs, task, images)
        program = make_program(prior, task)
        for sampler_name in args.samplers:
            sampler = chosen[sampler_name]
            keys = jax.random.split(k_run, args.images)
            start = time.perf_counter()
            compiled = batched_run(program, sampler, ys).lower(keys, ys).compile()
            compile_s = time.perf_counter() - start
            start = time.perf_counter()
            out = jax.block_until_ready(compiled(keys, ys))
            run_s = time.perf_counter() - start
            draws = np.asarray(out.posterior["x"])  # (images, particles, 8, 8)
            nfe = int(np.asarray(out.sample_stats["nfe"]).reshape(args.images, -1)[0].sum())
            vjp = int(np.asarray(out.sample_stats.get("vjp", np.zeros(1))).reshape(args.images, -1)[0].sum())
            finite = np.isfinite(draws).all(axis=(1, 2, 3))
            log_z = np.asarray(out.run_stats["log_marginal_likelihood"])
            rows.append({
                "task": task_name,
                "sampler": sampler_name,
                "PSNR": float(np.mean(psnr(draws.mean(axis=1), truth, axis=(-2, -1))[finite])) if finite.any() else float("nan"),
                "90% cover": interval_coverage(draws[finite], truth[finite], axis=1) if finite.any() else float("nan"),
                "accuracy": classifier_accuracy(classify, np.nan_to_num(draws), labels),
                "log p(y)": float(np.mean(log_z)) if np.isfinite(log_z).any() else float("nan"),
                "failed": int((~finite).sum()),
                "NFE": nfe,
                "VJP": vjp,
                "run s": run_s,
                "s/image": run_s / args.images,
                "compile s": compile_s,
            })
            r = rows[-1]
            print(f"  {task_name:15s} {sampler_name:12s} PSNR {r['PSNR']:6.2f}  cover {r['90% cover']:.3f}  "
                  f"acc {r['accuracy']:.3f}  run {run_s:6.1f} s  compile {compile_s:5.1f} s", flush=True)
    print()
    header = ["task", "sampler", "PSNR", "90% cover", "accuracy", "log p(y)", "failed", "NFE", "VJP",
              "s/image", "compile s"]
    formats = {"PSNR": "{:.2f}", "90% cover": "{:.3f}", "accuracy": "{:.3f}", "log p(y)": "{:.1f}",
               "s/image": "{:.3f}", "compile s": "{:.0f}"}
    print_table(header, [[formats.get(h, "{}").format(r[h]) for h in header] for r in rows])


if __name__ == "__main__":
    main()
