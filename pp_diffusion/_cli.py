"""The ``pp-diffusion`` command line.

``pp-diffusion demo`` inpaints a test digit with the shipped ``digits`` model: the model is the
prior of a NumPyro program that observes half the image, :func:`pp_diffusion.infer` samples its
posterior with twisted SMC, ArviZ summarises a few pixels, and the image grid goes to a PNG.
``pp-diffusion ring`` checks the prior chain end to end on an exact Gaussian mixture against exact
samples. Heavy imports (JAX, NumPyro, ArviZ, Matplotlib) happen inside the commands so that
``--help`` answers at once.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

__all__ = ["main", "build_parser"]

DEFAULT_OUT = "pp_diffusion_demo.png"
DEFAULT_RING_OUT = "pp_diffusion_ring.png"
MASKS = ("left", "top", "random")
SAMPLERS = ("twisted", "mcgdiff", "bootstrap", "fk_steering", "dps")
SUMMARY_PIXELS = 4
GRID_DRAWS = 8

# The demo's mixture: 8 isotropic components on a ring.
RING_COMPONENTS = 8
RING_RADIUS = 4.0
RING_STD = 0.5
NUM_TRAJECTORIES = 8
MAX_TRAJECTORY_POINTS = 50
NUM_SW_REPEATS = 5
NUM_SW_DIRECTIONS = 200


# --------------------------------------------------------------------------- option types

def _checked(name: str, convert, ok, expected: str):
    """An argparse type: ``convert(text)``, which must satisfy ``ok``; else "NAME must be EXPECTED"."""
    def parse(text: str):
        try:
            value = convert(text)
        except ValueError:
            value = None
        if value is None or not ok(value):
            raise argparse.ArgumentTypeError(f"{name} must be {expected}, got {text!r}")
        return value

    return parse


def _positive_int(name: str):
    return _checked(name, int, lambda v: v >= 1, "a positive integer")


def _non_negative_int(name: str):
    return _checked(name, int, lambda v: v >= 0, "a non-negative integer")


def _positive_float(name: str):
    return _checked(name, float, lambda v: 0 < v < float("inf"), "a positive number")


_seed = _checked("seed", int, lambda v: 0 <= v < 2**32, "a non-negative integer below 2**32")


def _image_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not text or path.is_dir():
        raise argparse.ArgumentTypeError(f"out must be a file path, got the directory {text!r}")
    if not path.suffix:
        path = path.with_suffix(".png")
    from matplotlib.figure import Figure

    formats = Figure().canvas.get_supported_filetypes()
    if path.suffix[1:].lower() not in formats:
        raise argparse.ArgumentTypeError(
            f"out must end in an image extension matplotlib can write ({', '.join(sorted(formats))}), got {text!r}"
        )
    if not path.parent.exists():
        raise argparse.ArgumentTypeError(f"the directory of out does not exist: {str(path.parent)!r}")
    return path


# --------------------------------------------------------------------------- parser

def build_parser() -> argparse.ArgumentParser:
    """The ``pp-diffusion`` argument parser (one sub-parser per command)."""
    from pp_diffusion import __version__

    parser = argparse.ArgumentParser(
        prog="pp-diffusion",
        description=(
            "pp_diffusion: probabilistic programming with diffusion-model priors. A trained diffusion "
            "model is the prior of a latent variable in a NumPyro program; pp_diffusion.infer samples "
            "the program and returns an ArviZ DataTree."
        ),
        epilog="Run 'pp-diffusion COMMAND --help' for the options of a command.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", title="commands", required=True)

    demo = commands.add_parser(
        "demo",
        help="inpaint a test digit with the shipped digits model (twisted SMC), print ArviZ "
             "diagnostics and the PSNR, and save the image grid",
        description=(
            "Inpaint one image of the digits test split with the shipped 'digits' diffusion model "
            "(pp_diffusion.zoo.load('digits')). The NumPyro program draws x from DiffusionPrior(model, "
            "steps=STEPS) and observes y = x[mask] + N(0, SIGMA^2) as numpyro.sample('y', "
            "dist.Normal(op(x), SIGMA), obs=y) with op = pp_diffusion.operators.Inpaint(mask). "
            "pp_diffusion.infer samples the posterior with SAMPLER (PARTICLES particles, CHAINS "
            "independent runs). The command prints the ArviZ summary of a few unobserved pixels "
            "(r_hat across the independent runs), the per-run log-evidence, the PSNR of the "
            "posterior mean against the true image, and what the zoo's clean classifier reads in the "
            "draws; it writes the grid truth / observation / draws / mean / std. A progress bar "
            "shows on runs longer than two seconds."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--out", type=_image_path, default=DEFAULT_OUT, metavar="PATH",
                      help="where to write the image grid (PNG unless the extension names another "
                           "matplotlib format)")
    demo.add_argument("--seed", type=_seed, default=0, metavar="N",
                      help="seed of the JAX PRNG key (observation noise, random mask, sampler)")
    demo.add_argument("--image", type=_non_negative_int("image"), default=0, metavar="N",
                      help="index of the image in the digits test split (0-359)")
    demo.add_argument("--mask", choices=MASKS, default="left",
                      help="observed pixels: the left or top half, or 50%% of them at random")
    demo.add_argument("--sigma", type=_positive_float("sigma"), default=0.1, metavar="S",
                      help="standard deviation of the observation noise (pixels span [-1, 1])")
    demo.add_argument("--sampler", choices=SAMPLERS, default="twisted",
                      help="conditioning sampler: pp_diffusion.smc.<name>, or pp_diffusion.guidance.dps")
    demo.add_argument("--particles", type=_positive_int("particles"), default=64, metavar="N",
                      help="particles per run (DPS: independent guided chains)")
    demo.add_argument("--chains", type=_positive_int("chains"), default=4, metavar="N",
                      help="number of independent runs (ArviZ compares them for r_hat)")
    demo.add_argument("--steps", type=_positive_int("steps"), default=50, metavar="N",
                      help="reverse-diffusion steps of the prior")
    demo.set_defaults(func=_demo)

    ring = commands.add_parser(
        "ring",
        help="sample an exact 2-D Gaussian-mixture diffusion prior end to end, check it against "
             "exact samples, and save a figure",
        description=(
            "Run a small job end to end (well under a minute on two CPU cores). The prior is the exact "
            f"diffusion model of an {RING_COMPONENTS}-component Gaussian mixture on a ring of radius "
            f"{RING_RADIUS:g} (component std {RING_STD:g}) under a linear VP schedule; the NumPyro program "
            "draws x from DiffusionPrior(model, steps=STEPS) (DDPM ancestral chain) and records "
            "radius = |x| as a deterministic site. pp_diffusion.infer runs CHAINS independent chains of "
            "DRAWS i.i.d. draws each. The command prints an ArviZ summary, the sliced Wasserstein "
            "distance of the draws to exact mixture samples next to the exact-vs-exact floor (the same "
            "distance between two exact sample sets of the same size: a distance near the floor means "
            "the draws are as good as exact ones), and writes a figure of the draws over the exact "
            "density and of a few reverse trajectories."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    ring.add_argument("--out", type=_image_path, default=DEFAULT_RING_OUT, metavar="PATH",
                      help="where to write the figure (PNG unless the extension names another "
                           "matplotlib format)")
    ring.add_argument("--seed", type=_seed, default=0, metavar="N",
                      help="seed of the JAX PRNG key for sampling and for the exact reference samples")
    ring.add_argument("--chains", type=_positive_int("chains"), default=4, metavar="N",
                      help="number of independent chains (ArviZ compares them for r_hat)")
    ring.add_argument("--draws", type=_positive_int("draws"), default=500, metavar="N",
                      help="draws per chain")
    ring.add_argument("--steps", type=_positive_int("steps"), default=200, metavar="N",
                      help="reverse-diffusion steps of the prior (network evaluations per draw)")
    ring.set_defaults(func=_ring)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``pp-diffusion`` console script; returns the exit code.

    Bad options exit through ``argparse`` with code 2.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    return args.func(args)


# --------------------------------------------------------------------------- demo: digits inpainting

def inpainting_mask(kind: str, rng_key) -> "np.ndarray":
    """The demo's observed pixels on the 8x8 grid: the left or top half, or 32 at random."""
    import jax
    import numpy as np

    mask = np.zeros((8, 8), dtype=bool)
    if kind == "left":
        mask[:, :4] = True
    elif kind == "top":
        mask[:4] = True
    elif kind == "random":
        mask.reshape(-1)[np.asarray(jax.random.permutation(rng_key, 64))[:32]] = True
    else:
        raise ValueError(f"mask must be one of {MASKS}, got {kind!r}")
    return mask


def _sampler(name: str, particles: int):
    import pp_diffusion as ppd

    if name == "dps":
        return ppd.guidance.dps(particles)
    return getattr(ppd.smc, name)(particles)


def _demo(args) -> int:
    import arviz as az
    import jax
    import numpy as np
    import numpyro
    import numpyro.distributions as dist
    import xarray as xr

    import pp_diffusion as ppd
    from pp_diffusion import plots
    from pp_diffusion.metrics import interval_coverage, psnr

    start = time.perf_counter()
    data = ppd.zoo.digits_data()
    if args.image >= data.x_test.shape[0]:
        raise SystemExit(f"pp-diffusion demo: error: image must be below {data.x_test.shape[0]} (the test split), "
                         f"got {args.image}")
    model = ppd.zoo.load("digits")
    prior = ppd.DiffusionPrior(model, steps=args.steps)
    k_mask, k_noise, k_infer = jax.random.split(jax.random.key(args.seed), 3)
    mask = inpainting_mask(args.mask, k_mask)
    op = ppd.operators.Inpaint(mask)
    truth = np.asarray(data.x_test[args.image])
    label = int(data.y_test[args.image])
    y = op(truth) + args.sigma * jax.random.normal(k_noise, op.out_shape)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(op(x), args.sigma), obs=y)

    sampler = _sampler(args.sampler, args.particles)
    print(f"pp-diffusion demo: inpaint test digit #{args.image} (a {label}) from its {args.mask} "
          f"{'half' if args.mask != 'random' else '50% of pixels'} ({int(mask.sum())} of 64 pixels observed, "
          f"noise sd {args.sigma:g})")
    print(f"  prior: zoo model 'digits' ({model.parameterization}-prediction U-Net), "
          f"DiffusionPrior(steps={args.steps}, integrator={prior.integrator.name})")
    print(f"  sampler: {sampler.name}({args.particles}) x {args.chains} independent runs; seed {args.seed}")
    t0 = time.perf_counter()
    idata = ppd.infer(program, sampler, k_infer, num_chains=args.chains, y=y)
    print(f"  sampled in {time.perf_counter() - t0:.1f} s (compilation included)")

    draws = np.asarray(idata.posterior["x"])  # (chain, draw, 8, 8)
    flat = draws.reshape(-1, 8, 8)
    hidden = np.flatnonzero(~mask.reshape(-1))
    pixels = hidden[np.linspace(0, hidden.size - 1, SUMMARY_PIXELS).astype(int)]
    coords = [(int(p) // 8, int(p) % 8) for p in pixels]
    print()
    print(f"ArviZ summary of {SUMMARY_PIXELS} unobserved pixels (row, column) against their true values:")
    labels = [f"({r},{c})" for r, c in coords]
    picked = idata.posterior["x"].isel(
        x_dim_0=xr.DataArray([r for r, _ in coords], dims="pixel", coords={"pixel": labels}),
        x_dim_1=xr.DataArray([c for _, c in coords], dims="pixel", coords={"pixel": labels}),
    )
    summary = az.summary(xr.Dataset({"x": picked}))
    summary.insert(0, "true", [round(float(truth[r, c]), 3) for r, c in coords])
    print(summary.to_string())
    print(f"  r_hat: agreement between the {args.chains} independent runs (near 1.00 when they find the same "
          "posterior); the draws of one run are resampled copies of its particles, so ess_* are not "
          "MCMC-style counts here")
    stats = idata.diagnostics
    if "log_marginal_likelihood" in stats:
        log_z = np.asarray(stats["log_marginal_likelihood"])
        print(f"log-evidence log p(y) per run: {np.array2string(log_z, precision=2)}"
              + ("" if np.all(np.isfinite(log_z)) else " (DPS has no evidence estimate)"))
        print("  each run's estimate of the log-probability of the observation under the prior (the sum over "
              "steps of the log mean weight increment); their spread across runs is its Monte Carlo error")
    if "ess" in stats:
        print(f"ESS at the last step per run: {np.array2string(np.asarray(stats['ess'])[:, -1], precision=1)} "
              f"of {args.particles}")
        print("  effective sample size 1 / sum(w^2) of the final weights: how many of the particles carry the "
              "weight (all of them when the weights are equal)")

    mean, std = flat.mean(axis=0), flat.std(axis=0)
    observed_only = np.where(mask, truth, 0.0)
    print()
    print(f"PSNR of the posterior mean: {psnr(mean, truth):.2f} dB "
          f"(unobserved pixels alone: {psnr(mean[~mask], truth[~mask]):.2f} dB; "
          f"the observed half with zeros elsewhere: {psnr(observed_only, truth):.2f} dB)")
    print(f"true pixels inside the 90% credible intervals: {interval_coverage(flat, truth):.2f}")
    classify = jax.jit(jax.vmap(ppd.zoo.load_classifier("digits_classifier")))
    predicted = np.asarray(classify(flat).argmax(axis=-1))
    counts = np.bincount(predicted, minlength=10)
    print(f"clean classifier on the {flat.shape[0]} draws: {counts[label] / flat.shape[0]:.2f} read a {label}; "
          f"most common reading {int(counts.argmax())}")

    observation = np.full((8, 8), np.nan)
    observation[mask] = np.asarray(y)
    fig = plots.plot_image_grid(
        [truth[None], observation[None], flat[:: max(1, flat.shape[0] // GRID_DRAWS)][:GRID_DRAWS], mean[None], std[None]],
        row_labels=["truth", "observed", "draws", "mean", "std"],
        vrange=[(-1.0, 1.0)] * 4 + [(0.0, max(float(std.max()), 1e-6))],
        title=f"{sampler.name}: inpainting digit #{args.image} (PSNR {psnr(mean, truth):.1f} dB)",
    )
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out.resolve()}")
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


# --------------------------------------------------------------------------- ring: the exact mixture

def ring_mixture(components: int = RING_COMPONENTS, radius: float = RING_RADIUS, std: float = RING_STD):
    """The demo's data distribution: equally weighted isotropic Gaussians on a circle."""
    import numpy as np

    from pp_diffusion import GaussianMixture

    angles = 2 * np.pi * np.arange(components) / components
    means = radius * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    return GaussianMixture(np.ones(components), means, np.full(components, std**2))


def _sliced_wasserstein_check(key, draws, mixture, repeats: int = NUM_SW_REPEATS):
    """Mean sliced Wasserstein distance of ``draws`` to ``repeats`` exact sample sets of the same
    size, and the mean (and spread) of the distance between ``repeats`` pairs of exact sets: the
    floor a perfect sampler would reach. Each pair of distances uses the same random directions."""
    import jax
    import numpy as np

    from pp_diffusion.metrics import sliced_wasserstein

    n = draws.shape[0]
    # 200 directions pin a 2-D sliced distance to a few per cent; the default 1000 costs 5x more.
    sw = jax.jit(lambda k, x, y: sliced_wasserstein(k, x, y, num_directions=NUM_SW_DIRECTIONS))
    to_draws, floor = [], []
    for k in jax.random.split(key, repeats):
        k_dir, k_a, k_b = jax.random.split(k, 3)
        exact_a, exact_b = mixture.sample(k_a, n), mixture.sample(k_b, n)
        to_draws.append(float(sw(k_dir, draws, exact_a)))
        floor.append(float(sw(k_dir, exact_a, exact_b)))
    return float(np.mean(to_draws)), float(np.mean(floor)), float(np.std(floor))


def _ring(args) -> int:
    import arviz as az
    import jax
    import jax.numpy as jnp
    import numpy as np
    import numpyro
    from matplotlib.figure import Figure

    import pp_diffusion as ppd
    from pp_diffusion import plots
    from pp_diffusion.integrators import integrate

    start = time.perf_counter()
    mixture = ring_mixture()
    model = mixture.diffusion_model(ppd.schedules.VPLinear(), name="ring8")
    prior = ppd.DiffusionPrior(model, steps=args.steps)

    def program():
        x = numpyro.sample("x", prior)
        numpyro.deterministic("radius", jnp.linalg.norm(x, axis=-1))

    print(f"pp-diffusion ring: {RING_COMPONENTS}-component Gaussian mixture on a ring of radius "
          f"{RING_RADIUS:g} (std {RING_STD:g}), exact denoiser, VPLinear schedule")
    print(f"  prior: DiffusionPrior(steps={args.steps}, integrator={prior.integrator.name}); "
          f"sampler: iid({args.draws}) x {args.chains} chains; seed {args.seed}")

    key = jax.random.key(args.seed)
    k_infer, k_check, k_traj = jax.random.split(key, 3)
    t0 = time.perf_counter()
    idata = ppd.infer(program, ppd.iid(args.draws), k_infer, num_chains=args.chains)
    print(f"  sampled {args.chains * args.draws} draws in {time.perf_counter() - t0:.1f} s (compilation included)")

    print()
    print(az.summary(idata, group="prior").to_string())
    print()

    draws = np.asarray(idata.prior["x"]).reshape(-1, 2)
    dist, floor, floor_sd = _sliced_wasserstein_check(k_check, draws, mixture)
    print(f"sliced Wasserstein distance to exact samples: {dist:.4f}")
    print(f"exact-vs-exact floor (same sample size):      {floor:.4f} (sd {floor_sd:.4f} over {NUM_SW_REPEATS} pairs)")
    print(f"ratio to floor: {dist / floor:.2f} (about 1 when the draws are as good as exact ones)")

    # A few reverse trajectories of the prior's own chain, noise first, thinned for readability.
    k_noise, k_paths = jax.random.split(k_traj)
    x_T = prior.initial_noise(k_noise, NUM_TRAJECTORIES)
    run = lambda k, x: integrate(k, prior.integrator, model, x, prior.times, return_trajectory=True)[0]
    paths = jax.vmap(run)(jax.random.split(k_paths, NUM_TRAJECTORIES), x_T)
    paths = np.concatenate([np.asarray(x_T)[:, None], np.asarray(paths)], axis=1)
    times = np.asarray(prior.times)
    stride = max(1, -(-args.steps // MAX_TRAJECTORY_POINTS))
    keep = np.unique(np.r_[np.arange(0, args.steps + 1, stride), args.steps])
    shown = f"{args.steps} {prior.integrator.name} steps" + (f", states every {stride} steps shown" if stride > 1 else "")

    half = RING_RADIUS + 3 * RING_STD + 1.0  # room for the legends in the corners
    extent = (-half, half, -half, half)
    # A bare Figure (no pyplot) renders with the Agg canvas and leaves matplotlib's global state alone.
    fig = Figure(figsize=(11.5, 5.4), layout="constrained")
    left, right = fig.subplots(1, 2)
    plots.plot_samples_2d(draws, mixture, extent=extent, ax=left,
                          title=f"{args.chains} chains x {args.draws} draws over the exact density\n"
                                f"sliced W1 to exact {dist:.3f}, exact-vs-exact floor {floor:.3f}")
    plots.plot_trajectories_2d(paths[:, keep], times=times[keep], density=mixture, extent=extent, ax=right,
                               title=f"{NUM_TRAJECTORIES} reverse trajectories $x_T \\to x_0$\n({shown})")
    fig.suptitle("pp-diffusion ring: exact Gaussian-mixture diffusion prior")
    fig.savefig(args.out, dpi=110)
    print(f"figure: {args.out.resolve()}")
    print(f"total {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
