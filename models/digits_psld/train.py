"""Train the ``digits_psld`` zoo model: an eps-prediction network on the phase-space (PSLD) process over scikit-learn's 8x8 digits.

    python models/digits_psld/train.py                 # the shipped checkpoint (seed 0)
    python models/digits_psld/train.py --no-progress --steps 300 --out /tmp/psld   # a quick try

Data: the digits split every digits model shares (``pp_diffusion.zoo.digits_data()``), pixels in
[-1, 1]. Process: :class:`pp_diffusion.phase_space.PSLD` with the paper's CIFAR-10 settings (beta 8,
Gamma 0.01, nu = Gamma + 4, initial momentum variance 0.04 M). Each pixel x carries a momentum m;
the state z = [x; m] has shape (2, 8, 8).

Objective: E || eps_theta(z_t, t) - eps ||^2 (mean over the 128 coordinates) with z_t = A_t [x_0; 0] +
L_t eps drawn by :meth:`PSLD.perturb` (the momentum's initial draw is part of the kernel). Times
t = t_min + (1 - t_min) u^2, u ~ U(0, 1), t_min = 1e-3: the process forgets the data by t ~ 0.4
(the mean coefficient a_t is 0.30 at t = 0.3), so uniform times would spend most of the budget on
near-stationary states. The same Optax AdamW / EMA loop as the other digits models
(``models/training.py``). The score is -L_t^{-T} eps_theta (:class:`pp_diffusion.phase_space.AugmentedModel`).

Output (default ``pp_diffusion/_zoo/digits_psld/``): ``weights.eqx`` and ``model.json`` (kind
``"augmented"``: ``pp_diffusion.zoo.load("digits_psld")`` returns an ``AugmentedModel``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from pp_diffusion import zoo
from pp_diffusion.networks import num_parameters
from pp_diffusion.phase_space import PSLD

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import training  # noqa: E402  (models/training.py: the loop and writer every zoo script shares)

T_MIN = 1e-3


def times(u):
    """The training-time law t = t_min + (1 - t_min) u^2."""
    return T_MIN + (1.0 - T_MIN) * u**2


def squared_errors(network, sde, x0, t, eps):
    """Per-sample mean squared eps error on z_t = A_t [x_0; 0] + L_t eps (batched x0 (n, 8, 8), t (n,), eps (n, 2, 8, 8))."""
    def one(x, s, e):
        A, S = sde.kernel(s)
        L = jnp.linalg.cholesky(S)
        z = A[:, 0].reshape(2, 1, 1) * x[None] + jnp.tensordot(L, e, axes=1)
        return jnp.mean((network(z, s) - e) ** 2)

    return jax.vmap(one)(x0, t, eps)


def evaluate(network, sde, data, key, draws: int = 8, chunk: int = 512) -> float:
    """The eps loss over every image with ``draws`` stratified u-strata (fixed key: reproducible)."""
    import equinox as eqx

    n = data.shape[0]
    k_u, k_eps = jax.random.split(key)
    u = (jnp.arange(draws)[None, :] + jax.random.uniform(k_u, (n, draws))) / draws
    x0 = jnp.repeat(jnp.asarray(data), draws, axis=0)
    t = times(u.reshape(-1))
    eps = jax.random.normal(k_eps, (x0.shape[0], 2, *x0.shape[1:]))
    fn = eqx.filter_jit(lambda net, *a: squared_errors(net, sde, *a))
    losses = [fn(network, x0[i:i + chunk], t[i:i + chunk], eps[i:i + chunk]) for i in range(0, x0.shape[0], chunk)]
    return float(jnp.mean(jnp.concatenate(losses)))


def train(args) -> None:
    start = time.perf_counter()
    load_at_start = os.getloadavg()
    data = zoo.digits_data()
    x_train = data.x_train
    sde = PSLD(beta=args.beta, gamma=args.gamma, m0_var_scale=args.m0_var_scale)
    spec = {"class": "UNet", "config": {"size": 8, "channels": args.channels, "channel_mult": list(args.channel_mult),
                                        "blocks": args.blocks, "emb_dim": args.emb_dim, "num_classes": None,
                                        "in_channels": 2}}
    k_init, k_train, k_eval = jax.random.split(jax.random.key(args.seed), 3)
    network = zoo.build_network(spec, k_init)
    n_params = num_parameters(network)
    train_images = jnp.asarray(x_train)

    def batch_fn(key):
        k_idx, k_t, k_eps = jax.random.split(key, 3)
        x0 = train_images[jax.random.randint(k_idx, (args.batch_size,), 0, train_images.shape[0])]
        t = times(jax.random.uniform(k_t, (args.batch_size,)))
        return x0, t, jax.random.normal(k_eps, (args.batch_size, 2, *x0.shape[1:]))

    eval_fn = lambda net: {"ema_test_loss": round(evaluate(net, sde, data.x_test, k_eval, args.eval_draws), 5)}
    loss_fn = lambda net, batch: jnp.mean(squared_errors(net, sde, *batch))
    network, history, train_seconds = training.fit(network, loss_fn, batch_fn, k_train, args, eval_fn,
                                                   desc="digits_psld")
    final = {part: evaluate(network, sde, x, k_eval, args.eval_draws)
             for part, x in (("train", x_train), ("test", data.x_test))}
    print(f"final EMA eps loss: train {final['train']:.4f}, test {final['test']:.4f} (predicting zeros: 1.0); "
          f"{n_params:,} parameters; training {train_seconds / 60:.1f} min")
    meta = {
        "name": "digits_psld",
        "kind": "augmented",
        "description": "eps-prediction network on the phase-space (PSLD) process over the scikit-learn 8x8 "
                       "digits, pixels in [-1, 1]; state [x; m] of shape (2, 8, 8).",
        "network": spec,
        "num_parameters": n_params,
        "parameterization": "eps",
        "sde": {"class": "PSLD", "beta": sde.beta, "gamma": sde.gamma, "nu": sde.nu,
                "m0_var_scale": sde.m0_var_scale},
        "event_shape": [8, 8],
        "data_var": float(x_train.var(axis=0).mean()),
        "data_range": [-1.0, 1.0],
        "t_min": T_MIN,
        "data": {"source": "sklearn.datasets.load_digits()", "scaling": "pixel / 8 - 1",
                 "split_file": zoo.DIGITS_SPLIT, "num_train": int(x_train.shape[0]),
                 "num_test": int(data.x_test.shape[0])},
    }
    record = training.run_record(args, "models/digits_psld/train.py", start, load_at_start, train_seconds, history)
    meta["training"] = {**record, "loss": "mean squared eps error of the PSLD kernel, t = 1e-3 + (1 - 1e-3) u^2",
                        "eval": f"EMA network, {args.eval_draws} stratified (u, eps) draws per image, fixed key",
                        "final_train_loss": round(final["train"], 5), "final_test_loss": round(final["test"], 5)}
    training.save(args.out, network, meta)


def make_parser():
    parser = training.base_parser(__doc__, str(training.ZOO_DIR / "digits_psld"), steps=3000, batch_size=128,
                                  lr=2e-3, warmup=200, chunk=50, eval_every=500)
    parser.add_argument("--channels", type=int, default=32)
    parser.add_argument("--channel-mult", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--blocks", type=int, default=1)
    parser.add_argument("--emb-dim", type=int, default=64)
    parser.add_argument("--beta", type=float, default=8.0)
    parser.add_argument("--gamma", type=float, default=0.01)
    parser.add_argument("--m0-var-scale", type=float, default=0.04)
    parser.add_argument("--eval-draws", type=int, default=8)
    return parser


if __name__ == "__main__":
    train(training.parse(make_parser()))
