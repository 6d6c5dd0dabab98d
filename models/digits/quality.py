"""Quality figures of the shipped ``digits`` model (or another unconditional digits zoo model): Frechet distance in a classifier's feature space and a memorisation check.

    python models/digits/quality.py                    # 1,437 draws, DDPM with 100 steps, seed 0
    python models/digits/quality.py --steps 200 --seed 1
    python models/digits/quality.py --model digits_energy --seed 0   # the distilled energy model, same figures
    python models/digits/quality.py --model digits_psld   # the phase-space model (SSCS, quadratic grid; --eta ignored)

Draws ``--num`` images (default 1,437, the size of the training split, so that the Frechet
distances below compare sets of equal sizes: the statistic is biased upwards for finite sets) with
the DDPM ancestral chain and prints:

- Frechet distance (:func:`pp_diffusion.metrics.frechet_distance`) between the features of the
  draws and of the 360 test images, next to the same between the 1,437 training images and the
  test images (both splits are stratified, with the same class balance: a low reference); then
  the same for each half of the draws next to the range over random halves of the training images
  (``--reference`` sets, drawn without replacement): what a generator of the training distribution
  scores, with the statistic's noise from finite sets and class-balance fluctuations. Features: the
  penultimate layer (64 numbers) of the clean ``digits_classifier``, ``f.features(x)``.
- The classifier's predicted class frequencies of the draws (the data has ~10% each).
- Memorisation: the Euclidean distance (64 pixels in [-1, 1]) from each draw, and from each test
  image, to its nearest training image (:func:`pp_diffusion.metrics.nearest_neighbour_distance`);
  their means and medians, and the fraction of draws closer to the training set than the 5th
  percentile of the test images' distances (5% for a generator that does not copy its training data).
"""

from __future__ import annotations

import argparse
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import pp_diffusion as ppd
from pp_diffusion.metrics import frechet_distance, nearest_neighbour_distance


def features(classifier, x, chunk: int = 512) -> np.ndarray:
    """The classifier's penultimate-layer features of a batch of images."""
    fn = eqx.filter_jit(lambda net, x: jax.vmap(net.features)(x))
    return np.concatenate([np.asarray(fn(classifier, jnp.asarray(x[i:i + chunk]))) for i in range(0, len(x), chunk)])


def predicted_classes(classifier, x) -> np.ndarray:
    logits = eqx.filter_jit(lambda net, x: jax.vmap(net)(x))(classifier, jnp.asarray(x))
    return np.asarray(jnp.argmax(logits, axis=-1))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="digits",
                        help="the zoo model to sample (default digits; e.g. digits_energy; a class-conditional "
                             "model samples its null class)")
    parser.add_argument("--num", type=int, default=1437, help="number of draws (default: the training-set size)")
    parser.add_argument("--steps", type=int, default=100, help="reverse-chain steps")
    parser.add_argument("--eta", type=float, default=1.0, help="1: DDPM ancestral, 0: DDIM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--reference", type=int, default=100,
                        help="random halves of the training set for the Frechet distance's reference range (0: none)")
    args = parser.parse_args(argv)
    if args.num < 2:
        parser.error(f"--num must be at least 2, got {args.num}")

    data = ppd.zoo.digits_data()
    classifier = ppd.zoo.load_classifier("digits_classifier")
    model = ppd.zoo.load(args.model)
    if isinstance(model, ppd.phase_space.AugmentedModel):  # a phase-space model: SSCS on its default (quadratic) grid
        prior = ppd.DiffusionPrior(model, steps=args.steps, integrator=ppd.phase_space.sscs(model.sde))
    else:
        prior = ppd.DiffusionPrior(model, steps=args.steps, eta=args.eta)
    start = time.perf_counter()
    x = np.asarray(jax.jit(lambda k: prior.sample(k, (args.num,)))(jax.random.key(args.seed)))
    seconds = time.perf_counter() - start
    print(f"{args.num} draws from {args.model!r}, {args.steps} steps (eta={args.eta:g}, seed {args.seed}) in "
          f"{seconds:.0f} s; pixel range [{x.min():.2f}, {x.max():.2f}]")

    f_draws, f_train, f_test = (features(classifier, a) for a in (x, data.x_train, data.x_test))
    fd_draws = frechet_distance(f_draws, f_test)
    fd_train = frechet_distance(f_train, f_test)
    print(f"Frechet distance to the {len(f_test)} test images (clean-classifier features, d={f_test.shape[1]}, "
          f"total variance of the test features {np.trace(np.cov(f_test, rowvar=False)):.3f}): "
          f"{len(x)} draws {fd_draws:.3f}, {len(f_train)} training images {fd_train:.3f}; ratio {fd_draws / fd_train:.2f}")
    # The scale of the statistic's noise: halves of the draws against random halves of the training
    # images (drawn without replacement, so no duplicates; their class balance fluctuates about half as
    # much as that of independent draws: a slightly optimistic reference).
    half = min(len(x) // 2, len(f_train))
    if args.reference and half >= 2:
        rng = np.random.default_rng(args.seed)
        ref = np.array([frechet_distance(f_train[rng.permutation(len(f_train))[:half]], f_test)
                        for _ in range(args.reference)])
        halves = [frechet_distance(f_draws[:half], f_test), frechet_distance(f_draws[half:2 * half], f_test)]
        print(f"  sets of {half}: the two halves of the draws {halves[0]:.3f}, {halves[1]:.3f}; {args.reference} random "
              f"sets of {half} training images: median {np.median(ref):.3f}, 5-95% range "
              f"[{np.percentile(ref, 5):.3f}, {np.percentile(ref, 95):.3f}]")
    counts = np.bincount(predicted_classes(classifier, x), minlength=10) / len(x)
    print("predicted class frequencies of the draws: " + " ".join(f"{c}:{p:.3f}" for c, p in enumerate(counts))
          + f" (min {counts.min():.3f}, max {counts.max():.3f})")

    nn_draws = nearest_neighbour_distance(x, data.x_train)
    nn_test = nearest_neighbour_distance(data.x_test, data.x_train)
    p5 = float(np.percentile(nn_test, 5))
    print(f"distance to the nearest training image: draws mean {nn_draws.mean():.3f} (median "
          f"{np.median(nn_draws):.3f}), test images mean {nn_test.mean():.3f} (median {np.median(nn_test):.3f})")
    print(f"fraction of draws closer than the test images' 5th percentile ({p5:.3f}): "
          f"{np.mean(nn_draws < p5):.3f} (5% expected without memorisation); "
          f"draws within 0.5 of a training image: {np.mean(nn_draws < 0.5):.3f}")


if __name__ == "__main__":
    main()
