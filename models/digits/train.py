"""Train the ``digits`` zoo model: an unconditional eps-prediction denoiser on scikit-learn's 8x8 digits.

    python models/digits/train.py                 # the shipped checkpoint (seed 0)
    python models/digits/train.py --no-progress --steps 500 --out /tmp/digits   # a quick try

Data: ``sklearn.datasets.load_digits()`` (1,797 images bundled with scikit-learn), pixels scaled
from [0, 16] to [-1, 1]; a stratified 80/20 split (``train_test_split(random_state=0)``), whose
indices are written once to ``pp_diffusion/_zoo/digits_split.json`` (and checked, not rewritten,
on later runs) so that every digits model and every evaluation uses the same test images.

Objective: the "simple" DDPM loss ``E ||eps_theta(alpha_t x_0 + sigma_t eps, t) - eps||^2`` (mean
over pixels) with t ~ U(0, 1) on the :class:`pp_diffusion.schedules.VPCosine` schedule. Optax
AdamW with linear warm-up and cosine decay, gradient clipping at norm 1, and an exponential moving
average (EMA) of the weights, which is what is saved. The final train and test losses are the EMA
network's loss over the whole train / test set with ``--eval-draws`` stratified (t, eps) draws per
image, from a fixed key, so they are reproducible and comparable between runs. The loss, the
scanned training loop and the checkpoint writer are ``models/training.py``, shared by every zoo
training script; ``models/digits_conditional/train.py`` reuses this script with class labels.

Output (default ``pp_diffusion/_zoo/digits/``, the package data that ``pp_diffusion.zoo`` loads):
``weights.eqx`` (``equinox.tree_serialise_leaves``: raw ``.npy`` records, no pickle) and
``model.json`` (network class and hyper-parameters, schedule, data variance, SHA-256 of the
weights, the training record).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from pp_diffusion import schedules, zoo
from pp_diffusion.networks import num_parameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import training  # noqa: E402  (models/training.py: the loop, loss and writer every zoo script shares)

ZOO_DIR = training.ZOO_DIR


# --------------------------------------------------------------------------- data and split


def make_split(labels: np.ndarray, test_size: float = 0.2, random_state: int = 0):
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(np.arange(labels.shape[0]), test_size=test_size,
                                   random_state=random_state, stratify=labels)
    return np.sort(train), np.sort(test)


def write_or_check_split(path: Path, train: np.ndarray, test: np.ndarray) -> None:
    record = {
        "source": "sklearn.datasets.load_digits()",
        "scaling": "pixel / 8 - 1, from [0, 16] to [-1, 1]",
        "method": "sklearn.model_selection.train_test_split(np.arange(1797), test_size=0.2, "
                  "random_state=0, stratify=target), indices sorted",
        "train_index": train.tolist(),
        "test_index": test.tolist(),
    }
    if path.exists():
        old = json.loads(path.read_text())
        if old["train_index"] != record["train_index"] or old["test_index"] != record["test_index"]:
            raise SystemExit(f"{path} holds a different split from the one computed now (another "
                             "scikit-learn version?); every digits model must share one split: delete "
                             "the file only if you mean to retrain all of them")
        return
    path.write_text(json.dumps(record) + "\n")


# --------------------------------------------------------------------------- training


def build(args) -> dict:
    if args.arch == "unet":
        config = {"size": 8, "channels": args.channels, "channel_mult": list(args.channel_mult),
                  "blocks": args.blocks, "emb_dim": args.emb_dim, "num_classes": args.num_classes}
        return {"class": "UNet", "config": config}
    if args.num_classes is not None:
        raise SystemExit("class conditioning needs --arch unet")
    config = {"event_shape": [8, 8], "width": args.width, "depth": args.depth, "emb_dim": args.emb_dim}
    return {"class": "ResidualMLP", "config": config}


def final_losses(network, schedule, split: dict, key, draws: int, num_classes: int | None) -> dict:
    """EMA-network losses on the train and test splits: unconditional, or for a class-conditional
    network at the true labels (``train``, ``test``) and at the null class (``train_null``, ``test_null``)."""
    out = {}
    for part in ("train", "test"):
        x, y = split[f"x_{part}"], split[f"y_{part}"]
        out[part] = training.evaluate(network, schedule, x, key, draws=draws,
                                      labels=None if num_classes is None else y)
        if num_classes is not None:
            out[f"{part}_null"] = training.evaluate(network, schedule, x, key, draws=draws,
                                                    labels=np.full_like(y, num_classes))
    return out


def train(args) -> None:
    start = time.perf_counter()
    load_at_start = os.getloadavg()
    images, labels = zoo.digits_images()
    train_index, test_index = make_split(labels)
    write_or_check_split(ZOO_DIR / zoo.DIGITS_SPLIT, train_index, test_index)
    split = {"x_train": images[train_index], "y_train": labels[train_index],
             "x_test": images[test_index], "y_test": labels[test_index]}
    x_train = split["x_train"]
    data_var = float(x_train.var(axis=0).mean())
    num_classes = args.num_classes  # None: unconditional; else label num_classes is the null class

    schedule = schedules.VPCosine()
    spec = build(args)
    k_init, k_train, k_eval = jax.random.split(jax.random.key(args.seed), 3)
    network = zoo.build_network(spec, k_init)
    n_params = num_parameters(network)
    data = jnp.asarray(x_train)
    data_labels = jnp.asarray(split["y_train"], jnp.int32)

    def batch_fn(key):
        k_idx, k_t, k_eps = jax.random.split(key, 3)
        idx = jax.random.randint(k_idx, (args.batch_size,), 0, data.shape[0])
        x0 = data[idx]
        t = jax.random.uniform(k_t, (args.batch_size,))
        eps = jax.random.normal(k_eps, x0.shape)
        if num_classes is None:
            return x0, t, eps, None
        # classifier-free guidance training: each label is dropped to the null class with probability p
        drop = jax.random.uniform(jax.random.fold_in(key, 3), (args.batch_size,)) < args.label_dropout
        return x0, t, eps, jnp.where(drop, num_classes, data_labels[idx])

    test_labels = None if num_classes is None else split["y_test"]
    eval_fn = lambda net: {"ema_test_loss": round(training.evaluate(
        net, schedule, split["x_test"], k_eval, draws=args.eval_draws, labels=test_labels), 5)}
    loss_fn = lambda net, batch: training.eps_loss(net, schedule, *batch)
    network, history, train_seconds = training.fit(network, loss_fn, batch_fn, k_train, args, eval_fn,
                                                   desc=args.name)
    final = final_losses(network, schedule, split, k_eval, args.eval_draws, num_classes)
    extra = ("" if num_classes is None
             else f"; null class: train {final['train_null']:.4f}, test {final['test_null']:.4f}")
    print(f"final EMA eps loss: train {final['train']:.4f}, test {final['test']:.4f}{extra} "
          f"(predicting zeros: 1.0); {n_params:,} parameters; training {train_seconds / 60:.1f} min")

    meta = {
        "name": args.name,
        "description": args.description,
        "network": spec,
        "num_parameters": n_params,
        "parameterization": "eps",
        "schedule": {"class": "VPCosine", "s": schedule.s, "t_max": schedule.t_max},
        "event_shape": [8, 8],
        "data_var": data_var,
        "data_range": [-1.0, 1.0],  # pixels scaled to [-1, 1]: xhat_0 is clipped to it (DiffusionModel.data_range)
        # the chain starts at t = 0.95: see DiffusionModel.t_start (xhat_0 is unreliable above it)
        "t_start": 0.95,
    }
    if num_classes is not None:
        meta["conditioning"] = {"kind": "class", "num_classes": num_classes, "null_class": num_classes,
                                "label_dropout": args.label_dropout,
                                "labels": "the digit 0-9; the null class (unconditional) is num_classes"}
    meta["data"] = {"source": "sklearn.datasets.load_digits()", "scaling": "pixel / 8 - 1",
                    "split_file": zoo.DIGITS_SPLIT, "num_train": int(x_train.shape[0]),
                    "num_test": int(split["x_test"].shape[0])}
    record = training.run_record(args, args.script, start, load_at_start, train_seconds, history)
    losses = {"loss": "mean squared eps error, t ~ U(0, 1)",
              "eval": f"EMA network, {args.eval_draws} stratified (t, eps) draws per image, fixed key",
              "final_train_loss": round(final["train"], 5), "final_test_loss": round(final["test"], 5)}
    if num_classes is not None:
        losses["loss"] += f"; label replaced by the null class with probability {args.label_dropout:g}"
        losses["eval"] += "; final_*_loss at the true labels, final_*_loss_null at the null class"
        losses["final_train_loss_null"] = round(final["train_null"], 5)
        losses["final_test_loss_null"] = round(final["test_null"], 5)
    meta["training"] = {**record, **losses}
    training.save(args.out, network, meta)


def make_parser(name: str = "digits", doc: str = __doc__):
    """The command line of a digits training script; ``--out`` defaults to the zoo folder ``name``."""
    parser = training.base_parser(doc, str(ZOO_DIR / name), steps=2500, batch_size=128, lr=2e-3, warmup=200,
                                  chunk=50, eval_every=500)
    parser.add_argument("--arch", choices=["unet", "mlp"], default="unet")
    parser.add_argument("--channels", type=int, default=32, help="U-Net: first-level width")
    parser.add_argument("--channel-mult", type=int, nargs="+", default=[1, 2], help="U-Net: width per level")
    parser.add_argument("--blocks", type=int, default=1, help="U-Net: residual blocks per level")
    parser.add_argument("--width", type=int, default=256, help="MLP: residual width")
    parser.add_argument("--depth", type=int, default=4, help="MLP: residual blocks")
    parser.add_argument("--emb-dim", type=int, default=64, help="time-embedding width")
    parser.add_argument("--eval-draws", type=int, default=8, help="(t, eps) draws per image in evaluations")
    parser.set_defaults(name=name, num_classes=None, label_dropout=0.0, script="models/digits/train.py",
                        description="Unconditional eps-prediction denoiser on the scikit-learn 8x8 digits, "
                                    "pixels in [-1, 1].")
    return parser


def main(argv=None):
    train(training.parse(make_parser(), argv))


if __name__ == "__main__":
    main()
