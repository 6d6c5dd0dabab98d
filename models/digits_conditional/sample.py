"""Draw digits of each class from the shipped ``digits_conditional`` model with classifier-free guidance.

    python models/digits_conditional/sample.py                         # 20 draws per class at w = 0, 1, 2, 3
    python models/digits_conditional/sample.py --scales 2 --out grid.png   # and an image grid (a row per class)

For each guidance scale w (``pp_diffusion.guidance.classifier_free``: eps_null + w (eps_c - eps_null))
it prints the fraction of draws whose nearest class mean of the training images (pixel space) is
their own class; the same nearest-mean classifier's accuracy on the held-out test images is printed
for reference. Sampling: ``DiffusionPrior(guided, steps, eta)`` (DDIM by default).
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np

import pp_diffusion as ppd


def nearest_class_mean(train_x, train_y):
    means = np.stack([train_x[train_y == c].mean(0) for c in range(10)]).reshape(10, -1)
    return lambda x: np.argmin(((x.reshape(len(x), 1, -1) - means[None]) ** 2).sum(-1), axis=1)


def guided_draws(model, key, scale: float, per_class: int, steps: int, eta: float):
    """``(10, per_class, 8, 8)`` draws, row c guided towards class c."""

    def one(label, k):
        guided = ppd.guidance.classifier_free(model, label, scale)
        return ppd.DiffusionPrior(guided, steps=steps, eta=eta).sample(k, (per_class,))

    return jax.jit(jax.vmap(one))(jnp.arange(10), jax.random.split(key, 10))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-class", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eta", type=float, default=0.0, help="0: DDIM, 1: DDPM ancestral")
    parser.add_argument("--scales", type=float, nargs="+", default=[0.0, 1.0, 2.0, 3.0])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="PNG file for a grid of the draws at the last scale")
    args = parser.parse_args(argv)

    model = ppd.zoo.load("digits_conditional")
    data = ppd.zoo.digits_data()
    classify = nearest_class_mean(data.x_train, data.y_train)
    print(f"nearest-class-mean accuracy on the test images: {np.mean(classify(data.x_test) == data.y_test):.3f}")
    target = np.repeat(np.arange(10), args.per_class)
    for scale in args.scales:
        start = time.perf_counter()
        x = np.asarray(guided_draws(model, jax.random.key(args.seed), scale, args.per_class, args.steps, args.eta))
        seconds = time.perf_counter() - start
        accuracy = np.mean(classify(x.reshape(-1, 8, 8)) == target)
        print(f"w = {scale:g}: {10 * args.per_class} draws ({args.steps} steps, eta {args.eta:g}) in {seconds:.1f} s; "
              f"nearest-class-mean accuracy {accuracy:.3f}; range [{x.min():.2f}, {x.max():.2f}]")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        cols = min(args.per_class, 10)
        fig, axes = plt.subplots(10, cols, figsize=(cols, 10), squeeze=False)
        for c in range(10):
            for j in range(cols):
                axes[c, j].imshow(np.clip(x[c, j], -1, 1), cmap="gray_r", vmin=-1, vmax=1)
                axes[c, j].axis("off")
        fig.savefig(args.out, dpi=80, bbox_inches="tight")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
