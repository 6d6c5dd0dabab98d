"""Draw from the shipped ``digits`` model with its reverse chain and compare pixel statistics with the data.

    python models/digits/sample.py                        # 256 draws, 50 DDPM steps, prints statistics
    python models/digits/sample.py --out samples.png      # and writes an image grid of the first 64

Prints the total-variation distance between the pixel-value histograms (8 bins on [-1, 1]) of the
draws and of the training images, and the mean absolute difference of the mean images, each next
to the same number for the held-out test images.
"""

from __future__ import annotations

import argparse
import time

import jax
import numpy as np

import pp_diffusion as ppd


def histogram(x):
    return np.histogram(np.clip(x, -1, 1), np.linspace(-1, 1, 9))[0] / x.size


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--num", type=int, default=256)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--eta", type=float, default=1.0, help="1: DDPM ancestral, 0: DDIM")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=None, help="PNG file for a grid of the first 64 draws")
    args = parser.parse_args(argv)

    prior = ppd.DiffusionPrior(ppd.zoo.load("digits"), steps=args.steps, eta=args.eta)
    start = time.perf_counter()
    x = np.asarray(jax.jit(lambda k: prior.sample(k, (args.num,)))(jax.random.key(args.seed)))
    seconds = time.perf_counter() - start
    data = ppd.zoo.digits_data()
    train, test = data.x_train, data.x_test
    tv = lambda a: 0.5 * np.abs(histogram(a) - histogram(train)).sum()
    mean_diff = lambda a: float(np.abs(a.mean(0) - train.mean(0)).mean())
    print(f"{args.num} draws, {args.steps} steps (eta={args.eta:g}) in {seconds:.1f} s (with compilation); "
          f"range [{x.min():.2f}, {x.max():.2f}]")
    print(f"pixel-histogram TV to train: samples {tv(x):.3f}, test images {tv(test):.3f}")
    print(f"mean-image |difference| to train: samples {mean_diff(x):.3f}, test images {mean_diff(test):.3f}")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        n = min(64, args.num)
        cols = 8
        rows = -(-n // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(cols, rows))
        for ax, img in zip(np.ravel(axes), x[:n]):
            ax.imshow(np.clip(img, -1, 1), cmap="gray_r", vmin=-1, vmax=1)
        for ax in np.ravel(axes):
            ax.axis("off")
        fig.savefig(args.out, dpi=80, bbox_inches="tight")
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
