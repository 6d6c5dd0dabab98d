"""Accuracy figures of the shipped ``digits_classifier`` networks on the held-out digits.

    python models/digits_classifier/quality.py

Prints, on the 360 test images of the zoo's split: the clean classifier's accuracy, per-class
accuracy and mean negative log-likelihood (log 10 = 2.303 for a uniform guess); the
noise-conditional classifier's accuracy and NLL at several t, with ``--draws`` noise draws per image
(x_t = alpha_t x_0 + sigma_t eps, VPCosine), next to the clean classifier's on the same x_t (which
was never trained on noisy images).
"""

from __future__ import annotations

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

import pp_diffusion as ppd
from pp_diffusion import schedules

TIMES = (0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)


@eqx.filter_jit
def _scores(net, x, labels, t):
    logits = jax.vmap(net)(x) if t is None else jax.vmap(net, (0, None))(x, t)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, labels)
    return jnp.argmax(logits, axis=-1) == labels, nll


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--draws", type=int, default=16, help="noise draws per test image at each t")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    data = ppd.zoo.digits_data()
    clean = ppd.zoo.load_classifier("digits_classifier")
    noisy = ppd.zoo.load_classifier("digits_classifier", noise_conditional=True)
    x, y = jnp.asarray(data.x_test), jnp.asarray(data.y_test)
    correct, nll = (np.asarray(a) for a in _scores(clean, x, y, None))
    per_class = [correct[data.y_test == c].mean() for c in range(10)]
    print(f"clean classifier, {len(y)} test images: accuracy {correct.mean():.4f} ({int((~correct).sum())} "
          f"errors), mean NLL {nll.mean():.4f}")
    print("  per class: " + " ".join(f"{c}:{a:.3f}" for c, a in enumerate(per_class)))

    schedule = schedules.VPCosine()
    x0 = jnp.repeat(x, args.draws, axis=0)
    labels = jnp.repeat(y, args.draws)
    print(f"noise-conditional classifier, {args.draws} noise draws per test image (clean classifier on the same x_t):")
    print("      t  alpha_t  sigma_t  accuracy     NLL   (clean: accuracy     NLL)")
    for i, t in enumerate(TIMES):
        eps = jax.random.normal(jax.random.fold_in(jax.random.key(args.seed), i), x0.shape)
        x_t = schedule.alpha(t) * x0 + schedule.sigma(t) * eps
        acc, nll = (np.asarray(a) for a in _scores(noisy, x_t, labels, jnp.float32(t)))
        acc_c, nll_c = (np.asarray(a) for a in _scores(clean, x_t, labels, None))
        print(f"  {t:5.2f}  {float(schedule.alpha(t)):7.3f}  {float(schedule.sigma(t)):7.3f}  {acc.mean():8.4f}  "
              f"{nll.mean():6.3f}   ({acc_c.mean():15.4f}  {nll_c.mean():6.3f})")


if __name__ == "__main__":
    main()
