"""Train the ``digits_classifier`` zoo models: a clean and a noise-conditional classifier of scikit-learn's 8x8 digits.

    python models/digits_classifier/train.py                  # both shipped checkpoints (seed 0)
    python models/digits_classifier/train.py --which clean --steps 300 --no-progress --out /tmp/clf  # a quick try

Data: the zoo's fixed digits split (:func:`pp_diffusion.zoo.digits_data`; 1,437 train / 360 test
images in [-1, 1]); only the training images are trained on.

Networks: :class:`pp_diffusion.networks.Classifier`.

- ``clean``: logits = f(x_0); loss: cross-entropy on the training images.
- ``noise_conditional``: logits = g(x_t, t), a model of p(c | x_t, t); loss: cross-entropy on
  x_t = alpha_t x_0 + sigma_t eps with t ~ U(0, 1) and eps ~ N(0, I) on the
  :class:`pp_diffusion.schedules.VPCosine` schedule of the ``digits`` diffusion model.

Optax AdamW with linear warm-up and cosine decay, gradient clipping at norm 1, steps in jitted
``lax.scan`` chunks, and an exponential moving average (EMA) of the weights, which is what is saved.
Test accuracy is that of the EMA network on the whole test split; the noise-conditional one's at
fixed t, with ``--eval-draws`` noise draws per image from a fixed key.

Output (default ``pp_diffusion/_zoo/digits_classifier/``): ``clean.eqx`` and
``noise_conditional.eqx`` (``equinox.tree_serialise_leaves``: raw ``.npy`` records, no pickle) and
``model.json`` (``"kind": "classifier"``, each network's class and hyper-parameters, the SHA-256
of its weights, accuracies and training record). Training only one of the two (``--which``)
keeps the other's entry.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax

from pp_diffusion import _model_io, schedules, zoo
from pp_diffusion.networks import num_parameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import training  # noqa: E402  (models/training.py: the scanned Optax/EMA loop and run record every zoo script shares)

ZOO_DIR = training.ZOO_DIR
EVAL_TIMES = (0.0, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
FILES = {"clean": "clean.eqx", "noise_conditional": "noise_conditional.eqx"}


# --------------------------------------------------------------------------- losses and accuracy


def noisy(schedule, x0, t, eps):
    """x_t = alpha_t x0 + sigma_t eps for batched x0 (n, 8, 8) and t (n,)."""
    return schedule.alpha(t)[:, None, None] * x0 + schedule.sigma(t)[:, None, None] * eps


def cross_entropy(network, x, labels, t=None):
    logits = jax.vmap(network)(x) if t is None else jax.vmap(network)(x, t)
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, labels))


@eqx.filter_jit
def _predict(network, x, t):
    logits = jax.vmap(network)(x) if t is None else jax.vmap(network, (0, None))(x, t)
    return jnp.argmax(logits, axis=-1)


def predictions(network, x, t=None, chunk: int = 512) -> np.ndarray:
    """Arg-max class of each image (at time t, a scalar, for a noise-conditional network)."""
    t = None if t is None else jnp.float32(t)
    return np.concatenate([np.asarray(_predict(network, jnp.asarray(x[i:i + chunk]), t))
                           for i in range(0, x.shape[0], chunk)])


def accuracy(network, x, labels, t=None) -> float:
    return float(np.mean(predictions(network, x, t) == labels))


def noisy_accuracy(network, schedule, x0, labels, t: float, key, draws: int = 8) -> float:
    """Accuracy of g(x_t, t) over every image and ``draws`` noise draws each."""
    x0 = np.repeat(x0, draws, axis=0)
    eps = np.asarray(jax.random.normal(key, x0.shape))
    x_t = np.asarray(noisy(schedule, jnp.asarray(x0), jnp.full(x0.shape[0], t), jnp.asarray(eps)))
    return accuracy(network, x_t, np.repeat(labels, draws), t)


# --------------------------------------------------------------------------- training


def build(args, which: str) -> dict:
    config = {"size": 8, "channels": args.channels, "channel_mult": list(args.channel_mult),
              "blocks": args.blocks, "num_classes": 10,
              "emb_dim": args.emb_dim if which == "noise_conditional" else None}
    return {"class": "Classifier", "config": config}


def fit(args, which: str, data, schedule) -> dict:
    """Train one network; write its weights; return its model.json entry."""
    start = time.perf_counter()
    load_at_start = os.getloadavg()
    steps = args.steps if args.steps is not None else (args.clean_steps if which == "clean" else args.noisy_steps)
    if not 0 <= args.warmup < steps:
        raise SystemExit(f"--warmup ({args.warmup}) must be smaller than the number of steps ({steps})")
    spec = build(args, which)
    # one seed, two networks: different streams for the clean and noise-conditional runs
    key = jax.random.fold_in(jax.random.key(args.seed), 0 if which == "clean" else 1)
    k_init, k_train, k_eval = jax.random.split(key, 3)
    network = zoo.build_network(spec, k_init)
    n_params = num_parameters(network)

    images, labels = jnp.asarray(data.x_train), jnp.asarray(data.y_train)

    def batch_fn(key):
        k_idx, k_t, k_eps = jax.random.split(key, 3)
        idx = jax.random.randint(k_idx, (args.batch_size,), 0, images.shape[0])
        x0, y = images[idx], labels[idx]
        if which == "clean":
            return x0, y
        t = jax.random.uniform(k_t, (args.batch_size,))
        return noisy(schedule, x0, t, jax.random.normal(k_eps, x0.shape)), y, t

    def evaluate(net) -> dict:
        if which == "clean":
            return {"test_accuracy": round(accuracy(net, data.x_test, data.y_test), 4)}
        return {f"test_accuracy_t{t:g}": round(noisy_accuracy(net, schedule, data.x_test, data.y_test, t,
                                                              jax.random.fold_in(k_eval, i), args.eval_draws), 4)
                for i, t in enumerate(EVAL_TIMES)}

    network, history, train_seconds = training.fit(
        network, lambda net, batch: cross_entropy(net, *batch), batch_fn, k_train, args, evaluate,
        desc=which, steps=steps)
    if which == "clean":
        figures = {"train_accuracy": round(accuracy(network, data.x_train, data.y_train), 4), **evaluate(network)}
    else:
        figures = {"test_accuracy_by_t": {f"{t:g}": v for t, v in zip(EVAL_TIMES, evaluate(network).values())},
                   "eval": f"EMA network, {args.eval_draws} noise draws per test image at each t, fixed key"}
    print(f"{which}: {json.dumps(figures)}; {n_params:,} parameters; training {train_seconds / 60:.1f} min")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    entry = _model_io.write_weights(out, network, FILES[which])  # the writer of pp_diffusion.save_model
    entry.pop("weights_format")  # recorded once, for both networks
    weights = out / FILES[which]
    print(f"wrote {weights} ({weights.stat().st_size:,} bytes)")
    return {
        **entry,
        **figures,
        "training": {
            **training.run_record(argparse.Namespace(**{**vars(args), "steps": steps}),
                                  "models/digits_classifier/train.py", start, load_at_start, train_seconds, history),
            "loss": ("cross-entropy on the clean training images" if which == "clean" else
                     "cross-entropy on x_t = alpha_t x0 + sigma_t eps, t ~ U(0, 1), eps ~ N(0, I)"),
        },
    }


def train(args) -> None:
    data = zoo.digits_data()
    schedule = schedules.VPCosine()
    out = Path(args.out)
    old = out / "model.json"
    entries = json.loads(old.read_text()).get("networks", {}) if old.is_file() else {}
    which = ["clean", "noise_conditional"] if args.which == "both" else [args.which]
    for w in which:
        entries[w] = fit(args, w, data, schedule)
    meta = {
        "name": "digits_classifier",
        "kind": "classifier",
        "description": "Classifiers of the scikit-learn 8x8 digits (pixels in [-1, 1]): a clean one, "
                       "logits = f(x), and a noise-conditional one, logits = g(x_t, t), for the VPCosine "
                       "schedule of the digits diffusion model.",
        "num_classes": 10,
        "event_shape": [8, 8],
        "schedule": {"class": "VPCosine", "s": schedule.s, "t_max": schedule.t_max},
        "data": {"source": "sklearn.datasets.load_digits()", "scaling": "pixel / 8 - 1",
                 "split_file": zoo.DIGITS_SPLIT, "num_train": int(data.x_train.shape[0]),
                 "num_test": int(data.x_test.shape[0])},
        "weights_format": "equinox.tree_serialise_leaves (numpy .npy records, no pickle); EMA weights",
        "networks": {k: entries[k] for k in ("clean", "noise_conditional") if k in entries},
    }
    (out / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {out / 'model.json'}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--which", choices=["both", "clean", "noise_conditional"], default="both")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--clean-steps", type=int, default=1000)
    parser.add_argument("--noisy-steps", type=int, default=3000)
    parser.add_argument("--steps", type=int, default=None, help="overrides --clean-steps and --noisy-steps")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    parser.add_argument("--channels", type=int, default=32, help="first-level width")
    parser.add_argument("--channel-mult", type=int, nargs="+", default=[1, 2], help="width per level")
    parser.add_argument("--blocks", type=int, default=1, help="residual blocks per level")
    parser.add_argument("--emb-dim", type=int, default=64, help="time-embedding width (noise-conditional)")
    parser.add_argument("--chunk", type=int, default=50, help="training steps per jitted lax.scan call")
    parser.add_argument("--eval-every", type=int, default=500, help="test-accuracy check interval (0: never)")
    parser.add_argument("--eval-draws", type=int, default=8, help="noise draws per test image (noise-conditional)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")
    parser.add_argument("--out", default=str(ZOO_DIR / "digits_classifier"), help="output folder")
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    train(args)


if __name__ == "__main__":
    main()
