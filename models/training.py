"""What every zoo training script shares: the eps loss (and the energy-distillation loss), its evaluation, the scanned Optax/EMA
training loop, the command line, and the checkpoint writer.

Imported by ``models/<name>/train.py`` (which put ``models/`` on ``sys.path``); not part of the
package: a trained checkpoint needs only :mod:`pp_diffusion.zoo` to load.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm.auto import tqdm

import pp_diffusion
from pp_diffusion import _model_io, zoo

ZOO_DIR = Path(pp_diffusion.__file__).resolve().parent / "_zoo"


def load_script(relative: str):
    """Another zoo training script as a module, e.g. ``load_script("digits/train.py")`` (a script that
    extends another one: the class-conditional and energy variants)."""
    import importlib.util

    path = Path(__file__).resolve().parent / relative
    spec = importlib.util.spec_from_file_location(path.parent.name + "_" + path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# --------------------------------------------------------------------------- loss


def squared_errors(network, schedule, x0, t, eps, labels=None):
    """Per-sample mean squared eps error on x_t = alpha_t x0 + sigma_t eps (batched x0, t, eps and,
    for a class-conditional network ``network(x, t, label)``, labels)."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    alpha = schedule.alpha(t).reshape(shape)
    sigma = schedule.sigma(t).reshape(shape)
    x_t = alpha * x0 + sigma * eps
    pred = jax.vmap(network)(x_t, t) if labels is None else jax.vmap(network)(x_t, t, labels)
    return jnp.mean((pred - eps) ** 2, axis=tuple(range(1, x0.ndim)))


def eps_loss(network, schedule, x0, t, eps, labels=None):
    """Mean squared error of the eps prediction on x_t = alpha_t x0 + sigma_t eps (batched x0, t, eps)."""
    return jnp.mean(squared_errors(network, schedule, x0, t, eps, labels))


def energy_score(energy, x, t, labels=None):
    """-grad_x E(x, t) of a batch (``energy(x, t)`` or ``energy(x, t, label)`` a scalar per image)."""
    if labels is None:
        return -jax.vmap(jax.grad(energy))(x, t)
    return -jax.vmap(jax.grad(energy))(x, t, labels)


def distill_errors(energy, schedule, x0, t, eps, labels=None, *, teacher):
    """Per-sample conservative-projection (distillation) error of an energy network against an
    eps-prediction ``teacher`` network, on x_t = alpha_t x0 + sigma_t eps, in eps units:

        mean over pixels of || sigma_t (-grad_x E(x_t, t)) - sigma_t s_teacher(x_t, t) ||^2
                          = || sigma_t grad_x E(x_t, t) - eps_teacher(x_t, t) ||^2,

    i.e. the score residual weighted by sigma_t^2, which balances the noise levels (the teacher's
    own eps loss has the same scale). ``eps`` only draws x_t: the target is the teacher's
    prediction (its raw network output, without any clipping of xhat_0), not the noise."""
    shape = (-1,) + (1,) * (x0.ndim - 1)
    sigma = schedule.sigma(t).reshape(shape)
    x_t = schedule.alpha(t).reshape(shape) * x0 + sigma * eps
    target = jax.vmap(teacher)(x_t, t) if labels is None else jax.vmap(teacher)(x_t, t, labels)
    pred = -sigma * energy_score(energy, x_t, t, labels)  # the energy's eps = -sigma * score
    return jnp.mean((pred - jax.lax.stop_gradient(target)) ** 2, axis=tuple(range(1, x0.ndim)))


def distill_loss(energy, schedule, x0, t, eps, labels=None, *, teacher):
    """The mean of :func:`distill_errors` over a batch."""
    return jnp.mean(distill_errors(energy, schedule, x0, t, eps, labels, teacher=teacher))


def evaluate(network, schedule, data: np.ndarray, key, draws: int = 8, chunk: int = 512, labels=None,
             errors=squared_errors) -> float:
    """The eps loss averaged over every data point with ``draws`` stratified times t = (k + u) / draws
    each (given ``labels``, of the class-conditional network at those labels). ``errors`` is the
    per-sample error ``errors(network, schedule, x0, t, eps[, labels])``: by default the eps error
    (:func:`squared_errors`); the distillation error with
    ``functools.partial(distill_errors, teacher=...)``."""
    n = data.shape[0]
    k_t, k_eps = jax.random.split(key)
    strata = (jnp.arange(draws)[None, :] + jax.random.uniform(k_t, (n, draws))) / draws
    x0 = jnp.repeat(jnp.asarray(data), draws, axis=0)
    t = strata.reshape(-1)
    eps = jax.random.normal(k_eps, x0.shape)
    arrays = (x0, t, eps) if labels is None else (x0, t, eps, jnp.repeat(jnp.asarray(labels, jnp.int32), draws))
    per_sample = eqx.filter_jit(lambda net, *a: errors(net, schedule, *a))

    total = x0.shape[0]
    pad = (-total) % chunk
    arrays = [jnp.concatenate([a, jnp.zeros((pad, *a.shape[1:]), a.dtype)]) for a in arrays]
    losses = [per_sample(network, *(a[i:i + chunk] for a in arrays)) for i in range(0, total + pad, chunk)]
    return float(jnp.mean(jnp.concatenate(losses)[:total]))


# --------------------------------------------------------------------------- training loop


def optimizer_description(args) -> str:
    return (f"clip_by_global_norm(1) + adamw(lr={args.lr:g}, weight_decay={args.weight_decay:g}), "
            f"{args.warmup} warm-up steps then cosine decay to lr/100")


def fit(network, loss_fn, batch_fn, key, args, eval_fn=None, desc: str = "train", steps: int | None = None):
    """Train ``network`` on ``loss_fn(network, batch)`` and return ``(ema_network, history, train_seconds)``.

    ``batch_fn(key)`` draws one batch, with ``key`` folded from ``key`` and the step number.
    ``steps`` (default ``args.steps``) Optax ``clip_by_global_norm(1)`` + AdamW steps with linear
    warm-up and cosine decay to lr/100; an EMA of the weights with decay ``args.ema`` (warm-up
    ``(1 + n) / (10 + n)``), which is what is returned. Steps run in chunks of ``args.chunk``
    inside one jitted ``lax.scan``. Every ``args.eval_every`` steps ``eval_fn(ema_network)`` (a
    dict of held-out scores) is recorded in the history next to the mean training-batch loss.
    """
    steps = args.steps if steps is None else steps
    lr_schedule = optax.warmup_cosine_decay_schedule(0.0, args.lr, args.warmup, steps,
                                                     end_value=args.lr * 0.01)
    optimizer = optax.chain(optax.clip_by_global_norm(1.0),
                            optax.adamw(lr_schedule, weight_decay=args.weight_decay))
    params, static = eqx.partition(network, eqx.is_inexact_array)
    opt_state = optimizer.init(params)

    # (Scanned image-model steps are fast on CPU only because pp_diffusion.networks.Conv2d
    # differentiates through matrix products: XLA's own convolution gradients run 14-70x slower
    # inside a loop body.)
    def step_fn(carry, step):
        params, opt_state, ema = carry
        batch = batch_fn(jax.random.fold_in(key, step))
        loss, grads = jax.value_and_grad(lambda p: loss_fn(eqx.combine(p, static), batch))(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        params = optax.apply_updates(params, updates)
        decay = jnp.minimum(args.ema, (1.0 + step) / (10.0 + step))
        ema = jax.tree_util.tree_map(lambda e, p: decay * e + (1 - decay) * p, ema, params)
        return (params, opt_state, ema), loss

    run = jax.jit(lambda carry, steps: jax.lax.scan(step_fn, carry, steps))

    carry = (params, opt_state, params)
    history, recent = [], []
    bar = tqdm(total=steps, disable=not args.progress, desc=desc, unit="step")
    train_start = time.perf_counter()
    for begin in range(0, steps, args.chunk):
        stop = min(begin + args.chunk, steps)
        carry, losses = run(carry, jnp.arange(begin, stop))
        recent.append(np.asarray(losses))
        bar.update(stop - begin)
        bar.set_postfix(loss=f"{float(np.mean(recent[-1])):.4f}")
        if eval_fn is not None and args.eval_every and (stop % args.eval_every == 0 or stop == steps):
            scores = eval_fn(eqx.combine(carry[2], static))
            batch = float(np.mean(np.concatenate(recent)))
            history.append({"step": stop, "train_batch_loss": round(batch, 5), **scores,
                            "seconds": round(time.perf_counter() - train_start, 1)})
            recent = []
            tqdm.write(f"{desc} step {stop:6d}  mean train batch loss {batch:.4f}  "
                       + "  ".join(f"{k} {v:.4f}" for k, v in scores.items())
                       + f"  ({history[-1]['seconds']:.0f} s)")
    bar.close()
    return eqx.combine(carry[2], static), history, time.perf_counter() - train_start


# --------------------------------------------------------------------------- command line and output


def base_parser(doc: str, out: str, *, steps: int, batch_size: int, lr: float, warmup: int,
                chunk: int, eval_every: int) -> argparse.ArgumentParser:
    """The options every training script has; ``--out`` defaults to ``out``."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=steps)
    parser.add_argument("--batch-size", type=int, default=batch_size)
    parser.add_argument("--lr", type=float, default=lr)
    parser.add_argument("--warmup", type=int, default=warmup)
    parser.add_argument("--weight-decay", type=float, default=1e-4)
    parser.add_argument("--ema", type=float, default=0.999, help="EMA decay of the saved weights")
    parser.add_argument("--chunk", type=int, default=chunk, help="training steps per jitted lax.scan call")
    parser.add_argument("--eval-every", type=int, default=eval_every, help="test-loss check interval (0: never)")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")
    parser.add_argument("--out", default=out, help="output folder")
    return parser


def parse(parser: argparse.ArgumentParser, argv=None):
    """Parse and check the common options; ``args.argv`` keeps the command line for the record."""
    args = parser.parse_args(argv)
    if not 0 <= args.warmup < args.steps:
        parser.error(f"--warmup ({args.warmup}) must be smaller than --steps ({args.steps})")
    args.argv = list(sys.argv[1:] if argv is None else argv)
    return args


def run_record(args, script: str, start: float, load_at_start, train_seconds: float, history: list) -> dict:
    """The reproducibility part of ``model.json["training"]``: command, optimiser, timings, machine, versions."""
    return {
        "command": " ".join([f"python {script}", *args.argv]),
        "seed": args.seed, "steps": args.steps, "batch_size": args.batch_size,
        "optimizer": optimizer_description(args), "ema_decay": args.ema,
        "history": history,
        "train_seconds": round(train_seconds, 1), "total_seconds": round(time.perf_counter() - start, 1),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, load average at start "
                   f"{load_at_start[0]:.1f} (shared machine)",
        "versions": {"jax": jax.__version__, "equinox": eqx.__version__, "optax": optax.__version__},
    }


def save(out, network, meta: dict) -> Path:
    """Write ``weights.eqx`` and ``model.json`` (``meta`` plus the weights' entry: network spec,
    parameter count, file name and format, SHA-256 and leaf records) to the folder ``out``, with the
    writer :func:`pp_diffusion.save_model` uses (``equinox.tree_serialise_leaves``: raw ``.npy``
    records, no pickle)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    entry = _model_io.write_weights(out, network)
    entry["weights_format"] += "; EMA weights"
    training = meta.pop("training")
    meta = {"format_version": _model_io.FORMAT_VERSION, **meta, **entry, "training": training}
    (out / _model_io.MODEL_FILE).write_text(json.dumps(meta, indent=1) + "\n")
    weights = out / entry["weights"]
    print(f"wrote {weights} ({weights.stat().st_size:,} bytes) and {out / _model_io.MODEL_FILE}")
    return weights
