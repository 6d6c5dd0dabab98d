"""Blind image inverse problems on the digits test split: an unknown noise level or blur width inferred
jointly with the image by particle Gibbs, against the solution that knows it.

    python benchmarks/digits_blind.py                     # the README figures (50 images per task)
    python benchmarks/digits_blind.py --images 10 --tasks denoise

The prior is the zoo's ``digits`` model (DDPM chain of ``--steps`` steps). Each test image gets its own
global theta, drawn from theta's prior (so that a calibrated posterior's 90% interval covers the truth
in about 90% of the images), and its observation y:

- ``denoise``: y = x + N(0, sigma^2 I), sigma ~ Uniform(0.05, 0.6) unknown;
- ``deblur``: y = blur_w(x) + N(0, 0.05^2 I), a 5 x 5 Gaussian blur of width w ~ Uniform(0.5, 2)
  pixels unknown (``ppd.operators.Blur.gaussian`` with a traced width).

Each is an ordinary NumPyro program with theta a latent site before x. ``ppd.particle_gibbs`` runs
``--chains`` chains per image (conditional bootstrap SMC of ``--particles`` particles, NUTS on theta,
``--warmup`` + ``--samples`` iterations); the known-theta solution is twisted SMC with ``--known-particles``
particles on the program with theta given as data (its posterior mean averages about as many draws as the
chains keep). All images and chains of a task are one ``jax.vmap`` in
one ``jax.jit``.

Figures per task, over the images:

- theta's 90% interval coverage (the 5% and 95% quantiles of the pooled chains), the median absolute
  error of its posterior median, the median and largest R-hat across images (ArviZ);
- PSNR of the posterior mean, 10 log10(2^2 / MSE), blind and with theta known, and of y itself
  (denoise);
- x's update rate (the share of iterations whose x_0 changed), NUTS's acceptance rate, s/image.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import arviz_stats
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import xarray as xr

import pp_diffusion as ppd
from pp_diffusion.metrics import psnr
from pp_diffusion.program import inspect_program

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import print_table  # noqa: E402

SIGMA_RANGE = (0.05, 0.6)
WIDTH_RANGE = (0.5, 2.0)
DEBLUR_NOISE = 0.05


def denoise_program(prior):
    def program(y=None, sigma=None):
        if sigma is None:
            sigma = numpyro.sample("sigma", dist.Uniform(*SIGMA_RANGE))
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(x, sigma), obs=y)

    return program


def deblur_program(prior):
    def program(y=None, width=None):
        if width is None:
            width = numpyro.sample("width", dist.Uniform(*WIDTH_RANGE))
        x = numpyro.sample("x", prior)
        blurred = ppd.operators.Blur.gaussian((8, 8), 5, width)(x)
        numpyro.sample("y", dist.Normal(blurred, DEBLUR_NOISE), obs=y)

    return program


TASKS = {"denoise": ("sigma", SIGMA_RANGE, denoise_program), "deblur": ("width", WIDTH_RANGE, deblur_program)}


def observations(key, task: str, images):
    """Each image's true theta (a draw of its prior) and y."""
    name, (lo, hi), _ = TASKS[task]
    k_theta, k_noise = jax.random.split(key)
    theta = jax.random.uniform(k_theta, (images.shape[0],), minval=lo, maxval=hi)
    if task == "denoise":
        clean, scale = images, theta[:, None, None]
    else:
        clean = jax.vmap(lambda x, w: ppd.operators.Blur.gaussian((8, 8), 5, w)(x))(images, theta)
        scale = DEBLUR_NOISE
    return theta, clean + scale * jax.random.normal(k_noise, clean.shape)


def batched(program, sampler, data):
    """One compiled function over images (and chains: a leading axis of keys per image)."""
    info = inspect_program(program, {k: v[0] for k, v in data.items()})
    run = lambda k, d: sampler.run(k, sampler.setup(program, info, d))
    return jax.jit(jax.vmap(jax.vmap(run, in_axes=(0, None))))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--images", type=int, default=50, help="first N images of the test split")
    parser.add_argument("--particles", type=int, default=8)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--chains", type=int, default=2)
    parser.add_argument("--samples", type=int, default=150)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--known-particles", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=list(TASKS))
    args = parser.parse_args(argv)
    if args.images < 1 or args.particles < 2 or args.steps < 2 or args.chains < 1 or args.samples < 2:
        parser.error("--images, --chains >= 1, --particles, --steps, --samples >= 2")
    data = ppd.zoo.digits_data()
    images = jnp.asarray(data.x_test[: args.images])
    truth = np.asarray(images)
    prior = ppd.DiffusionPrior(ppd.zoo.load("digits"), steps=args.steps)
    print(f"digits blind inverse problems: {args.images} test images, particle Gibbs with {args.chains} chains x "
          f"({args.warmup} + {args.samples}) iterations, conditional bootstrap SMC of {args.particles} particles, "
          f"{args.steps} DDPM steps, seed {args.seed}")
    print(f"jax {jax.__version__} on {jax.devices()[0].platform}, {jax.device_count()} device(s)")
    gibbs = ppd.particle_gibbs(ppd.smc.bootstrap(args.particles), args.samples, args.warmup)
    known = ppd.smc.twisted(args.known_particles)
    rows = []
    for task in args.tasks:
        name, _, make = TASKS[task]
        program = make(prior)
        key = jax.random.fold_in(jax.random.key(args.seed), list(TASKS).index(task))
        k_obs, k_run, k_known = jax.random.split(key, 3)
        theta, ys = observations(k_obs, task, images)
        keys = jax.random.split(k_run, (args.images, args.chains))
        start = time.perf_counter()
        out = jax.block_until_ready(batched(program, gibbs, {"y": ys})(keys, {"y": ys}))
        run_s = time.perf_counter() - start
        draws = np.asarray(out.posterior[name])  # (images, chains, samples)
        x = np.asarray(out.posterior["x"])  # (images, chains, samples, 8, 8)
        lo, med, hi = np.quantile(draws.reshape(args.images, -1), [0.05, 0.5, 0.95], axis=1)
        theta = np.asarray(theta)
        covered = (theta >= lo) & (theta <= hi)
        rhat = np.array([float(arviz_stats.rhat(xr.Dataset({name: (("chain", "draw"), d)}))[name]) for d in draws]) \
            if args.chains > 1 else np.full(args.images, np.nan)
        known_keys = jax.random.split(k_known, (args.images, 1))
        k_out = batched(program, known, {"y": ys, name: jnp.asarray(theta)})(known_keys, {"y": ys, name: jnp.asarray(theta)})
        known_x = np.asarray(k_out.posterior["x"])[:, 0]
        blind_psnr = psnr(x.reshape(args.images, -1, 8, 8).mean(axis=1), truth, axis=(-2, -1))
        known_psnr = psnr(known_x.mean(axis=1), truth, axis=(-2, -1))
        rows.append({
            "task": task, "theta": name, "90% cover": float(np.mean(covered)),
            "|median - true|": float(np.median(np.abs(med - theta))),
            "R-hat med": float(np.nanmedian(rhat)), "R-hat max": float(np.nanmax(rhat)) if args.chains > 1 else np.nan,
            "PSNR blind": float(np.mean(blind_psnr)), "PSNR known": float(np.mean(known_psnr)),
            "PSNR y": float(np.mean(psnr(np.asarray(ys), truth, axis=(-2, -1)))) if task == "denoise" else np.nan,
            "x update": float(np.mean(np.asarray(out.run_stats["x_update_rate"]))),
            "accept": float(np.mean(np.asarray(out.run_stats["acceptance_rate"]))),
            "s/image": run_s / args.images,
        })
        r = rows[-1]
        print(f"  {task}: cover {r['90% cover']:.2f}, PSNR blind {r['PSNR blind']:.2f} / known {r['PSNR known']:.2f}, "
              f"R-hat max {r['R-hat max']:.3f}, {run_s:.0f} s (compile included)", flush=True)
    print()
    header = list(rows[0])
    formats = {"90% cover": "{:.2f}", "|median - true|": "{:.3f}", "R-hat med": "{:.3f}", "R-hat max": "{:.3f}",
               "PSNR blind": "{:.2f}", "PSNR known": "{:.2f}", "PSNR y": "{:.2f}", "x update": "{:.2f}",
               "accept": "{:.2f}", "s/image": "{:.2f}"}
    print_table(header, [[formats.get(h, "{}").format(r[h]) for h in header] for r in rows])


if __name__ == "__main__":
    main()
