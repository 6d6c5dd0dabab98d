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
image, from a fixed key, so they are reproducible and comparable between runs.

Output (default ``pp_diffusion/_zoo/digits/``, the package data that ``pp_diffusion.zoo`` loads):
``weights.eqx`` (``equinox.tree_serialise_leaves``: raw ``.npy`` records, no pickle) and
``model.json`` (network class and hyper-parameters, schedule, data variance, SHA-256 of the
weights, the training record).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import pp_diffusion
from pp_diffusion import schedules, zoo
from pp_diffusion.networks import num_parameters

ZOO_DIR = Path(pp_diffusion.__file__).resolve().parent / "_zoo"


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


# --------------------------------------------------------------------------- loss


def eps_loss(network, schedule, x0, t, eps):
    """Mean squared error of the eps prediction on x_t = alpha_t x0 + sigma_t eps (batched x0, t, eps)."""
    alpha = schedule.alpha(t)[:, None, None]
    sigma = schedule.sigma(t)[:, None, None]
    pred = jax.vmap(network)(alpha * x0 + sigma * eps, t)
    return jnp.mean((pred - eps) ** 2)


def evaluate(network, schedule, images: np.ndarray, key, draws: int = 8, chunk: int = 512) -> float:
    """The eps loss averaged over every image with ``draws`` stratified times t = (k + u) / draws each."""
    n = images.shape[0]
    k_t, k_eps = jax.random.split(key)
    strata = (jnp.arange(draws)[None, :] + jax.random.uniform(k_t, (n, draws))) / draws
    x0 = jnp.repeat(jnp.asarray(images), draws, axis=0)
    t = strata.reshape(-1)
    eps = jax.random.normal(k_eps, x0.shape)

    @eqx.filter_jit
    def per_sample(net, x0, t, eps):
        alpha = schedule.alpha(t)[:, None, None]
        sigma = schedule.sigma(t)[:, None, None]
        pred = jax.vmap(net)(alpha * x0 + sigma * eps, t)
        return jnp.mean((pred - eps) ** 2, axis=(1, 2))

    total = x0.shape[0]
    pad = (-total) % chunk
    x0, t, eps = (jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]) for a in (x0, t, eps))
    losses = [per_sample(network, x0[i:i + chunk], t[i:i + chunk], eps[i:i + chunk])
              for i in range(0, total + pad, chunk)]
    return float(jnp.mean(jnp.concatenate(losses)[:total]))


# --------------------------------------------------------------------------- training


def build(args) -> dict:
    if args.arch == "unet":
        config = {"size": 8, "channels": args.channels, "channel_mult": list(args.channel_mult),
                  "blocks": args.blocks, "emb_dim": args.emb_dim, "num_classes": None}
        return {"class": "UNet", "config": config}
    config = {"event_shape": [8, 8], "width": args.width, "depth": args.depth, "emb_dim": args.emb_dim}
    return {"class": "ResidualMLP", "config": config}


def train(args) -> None:
    start = time.perf_counter()
    load_at_start = os.getloadavg()
    images, labels = zoo.digits_images()
    train_index, test_index = make_split(labels)
    write_or_check_split(ZOO_DIR / zoo.DIGITS_SPLIT, train_index, test_index)
    x_train, x_test = images[train_index], images[test_index]
    data_var = float(x_train.var(axis=0).mean())

    schedule = schedules.VPCosine()
    spec = build(args)
    key = jax.random.key(args.seed)
    k_init, k_train, k_eval = jax.random.split(key, 3)
    network = zoo.build_network(spec, k_init)
    n_params = num_parameters(network)

    lr_schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, args.warmup, args.steps,
                                                     end_value=args.lr * 0.01)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(lr_schedule, weight_decay=args.weight_decay))
    params, static = eqx.partition(network, eqx.is_inexact_array)
    opt_state = optimizer.init(params)
    ema = params
    data = jnp.asarray(x_train)

    # Steps run in chunks of ``--chunk`` inside one jitted lax.scan. (This is fast on CPU only
    # because pp_diffusion.networks.Conv2d differentiates through matrix products: XLA's own
    # convolution gradients run 14-70x slower inside a loop body.)
    def step_fn(carry, step):
        params, opt_state, ema = carry
        k_idx, k_t, k_eps = jax.random.split(jax.random.fold_in(k_train, step), 3)
        x0 = data[jax.random.randint(k_idx, (args.batch_size,), 0, data.shape[0])]
        t = jax.random.uniform(k_t, (args.batch_size,))
        eps = jax.random.normal(k_eps, x0.shape)
        loss, grads = jax.value_and_grad(
            lambda p: eps_loss(eqx.combine(p, static), schedule, x0, t, eps))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        decay = jnp.minimum(args.ema, (1.0 + step) / (10.0 + step))
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
        return (params, opt_state, ema), loss

    run = jax.jit(lambda carry, steps: jax.lax.scan(step_fn, carry, steps))

    carry = (params, opt_state, ema)
    history, recent = [], []
    bar = tqdm(total=args.steps, disable=not args.progress, desc="digits", unit="step")
    train_start = time.perf_counter()
    for begin in range(0, args.steps, args.chunk):
        stop = min(begin + args.chunk, args.steps)
        carry, losses = run(carry, jnp.arange(begin, stop))
        recent.append(np.asarray(losses))
        bar.update(stop - begin)
        bar.set_postfix(loss=f"{float(np.mean(recent[-1])):.4f}")
        if args.eval_every and (stop % args.eval_every == 0 or stop == args.steps):
            test = evaluate(eqx.combine(carry[2], static), schedule, x_test, k_eval, draws=args.eval_draws)
            batch = float(np.mean(np.concatenate(recent)))
            history.append({"step": stop, "train_batch_loss": round(batch, 5), "ema_test_loss": round(test, 5),
                            "seconds": round(time.perf_counter() - train_start, 1)})
            recent = []
            tqdm.write(f"step {stop:6d}  mean train batch loss {batch:.4f}  EMA test loss {test:.4f}  "
                       f"({history[-1]['seconds']:.0f} s)")
    bar.close()
    train_seconds = time.perf_counter() - train_start

    network = eqx.combine(carry[2], static)  # the EMA weights are the ones saved
    final_train = evaluate(network, schedule, x_train, k_eval, draws=args.eval_draws)
    final_test = evaluate(network, schedule, x_test, k_eval, draws=args.eval_draws)
    print(f"final EMA eps loss: train {final_train:.4f}, test {final_test:.4f} "
          f"(predicting zeros: 1.0); {n_params:,} parameters; training {train_seconds / 60:.1f} min")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    weights = out / "weights.eqx"
    eqx.tree_serialise_leaves(weights, network)
    meta = {
        "name": "digits",
        "description": "Unconditional eps-prediction denoiser on the scikit-learn 8x8 digits, pixels in [-1, 1].",
        "network": spec,
        "num_parameters": n_params,
        "parameterization": "eps",
        "schedule": {"class": "VPCosine", "s": schedule.s, "t_max": schedule.t_max},
        "event_shape": [8, 8],
        "data_var": data_var,
        "data_range": [-1.0, 1.0],  # pixels scaled to [-1, 1]: xhat_0 is clipped to it (DiffusionModel.data_range)
        # the chain starts at t = 0.95: see DiffusionModel.t_start (xhat_0 is unreliable above it)
        "t_start": 0.95,
        "data": {"source": "sklearn.datasets.load_digits()", "scaling": "pixel / 8 - 1",
                 "split_file": zoo.DIGITS_SPLIT, "num_train": int(x_train.shape[0]),
                 "num_test": int(x_test.shape[0])},
        "weights": weights.name,
        "weights_format": "equinox.tree_serialise_leaves (numpy .npy records, no pickle); EMA weights",
        "sha256": zoo.sha256(weights),
        "training": {
            "command": " ".join(["python models/digits/train.py", *args.argv]),
            "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size,
            "optimizer": f"clip_by_global_norm(1) + adamw(lr={args.lr:g}, weight_decay={args.weight_decay:g}), "
                         f"{args.warmup} warm-up steps then cosine decay to lr/100",
            "ema_decay": args.ema, "loss": "mean squared eps error, t ~ U(0, 1)",
            "eval": f"EMA network, {args.eval_draws} stratified (t, eps) draws per image, fixed key",
            "final_train_loss": round(final_train, 5), "final_test_loss": round(final_test, 5),
            "history": history,
            "train_seconds": round(train_seconds, 1), "total_seconds": round(time.perf_counter() - start, 1),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average at start "
                       f"{load_at_start[0]:.1f} (shared machine)",
            "versions": {"jax": jax.__version__, "equinox": eqx.__version__, "optax": optax.__version__},
        },
    }
    (out / "model.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(f"wrote {weights} ({weights.stat().st_size / 1e6:.2f} MB) and {out / 'model.json'}")


def main(argv=None):
    import sys

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=2500)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    parser.add_argument("--arch", choices=["unet", "mlp"], default="unet")
    parser.add_argument("--channels", type=int, default=32, help="U-Net: first-level width")
    parser.add_argument("--channel-mult", type=int, nargs="+", default=[1, 2], help="U-Net: width per level")
    parser.add_argument("--blocks", type=int, default=1, help="U-Net: residual blocks per level")
    parser.add_argument("--width", type=int, default=256, help="MLP: residual width")
    parser.add_argument("--depth", type=int, default=4, help="MLP: residual blocks")
    parser.add_argument("--emb-dim", type=int, default=64, help="time-embedding width")
    parser.add_argument("--chunk", type=int, default=50, help="training steps per jitted lax.scan call")
    parser.add_argument("--eval-every", type=int, default=500, help="test-loss check interval (0: never)")
    parser.add_argument("--eval-draws", type=int, default=8, help="(t, eps) draws per image in evaluations")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")
    parser.add_argument("--out", default=str(ZOO_DIR / "digits"), help="output folder")
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        parser.error(f"--warmup ({args.warmup}) must be smaller than --steps ({args.steps})")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    train(args)


if __name__ == "__main__":
    main()
