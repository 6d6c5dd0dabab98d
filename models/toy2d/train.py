"""Train the ``toy2d_moons``, ``toy2d_spirals`` and ``toy2d_checkerboard`` zoo models: eps-prediction
denoisers of 2-D toy data sets.

    python models/toy2d/train.py                         # all three shipped checkpoints (seed 0)
    python models/toy2d/train.py --data spirals --no-progress --steps 500 --out /tmp/toy   # a quick try

Data: :func:`pp_diffusion.zoo.toy2d_data` (standardised per coordinate): a training set of
``--num-train`` draws (seed ``1000 * seed``), a test set of 10,000 draws (seed ``1000 * seed + 1``).
Network: :class:`pp_diffusion.networks.ResidualMLP` on (2,). Loss, optimiser, EMA and the scanned
training loop are ``models/training.py`` (shared with the digits models), on the VPCosine schedule.

After training, the EMA model is scored by the sliced 1-Wasserstein distance
(:func:`pp_diffusion.metrics.sliced_wasserstein`, 1,000 directions) between 2,000 draws of
``DiffusionPrior(model, steps=100)`` (DDPM ancestral) and 2,000 fresh data points, over five seeds,
next to the same distance between two independent data sets of 2,000 (the floor set by finite
samples). Output: ``<out>/toy2d_<data>/weights.eqx`` and ``model.json``.
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import pp_diffusion as ppd
from pp_diffusion import schedules, zoo
from pp_diffusion.networks import num_parameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import training  # noqa: E402  (models/training.py: the loop, loss and writer every zoo script shares)

NUM_TEST = 10_000
SW_NUM, SW_SEEDS, SW_STEPS = 2000, 5, 100


def sliced_wasserstein_scores(model, name: str, seed: int) -> dict:
    """SW_1(model draws, fresh data) and SW_1(data, data) over ``SW_SEEDS`` seeds of ``SW_NUM`` points each."""
    prior = ppd.DiffusionPrior(model, steps=SW_STEPS)
    draw = jax.jit(lambda k: prior.sample(k, (SW_NUM,)))
    model_sw, floor_sw = [], []
    for i in range(SW_SEEDS):
        base = 1000 * seed + 10 + 3 * i  # data seeds disjoint from the train (1000 s) and test (1000 s + 1) sets
        fresh, other = zoo.toy2d_data(name, SW_NUM, base), zoo.toy2d_data(name, SW_NUM, base + 1)
        k_sample, k_sw = jax.random.split(jax.random.key(base))
        x = draw(k_sample)
        model_sw.append(float(ppd.metrics.sliced_wasserstein(k_sw, x, fresh)))
        floor_sw.append(float(ppd.metrics.sliced_wasserstein(k_sw, other, fresh)))
    return {"model_vs_data": [round(v, 4) for v in model_sw], "data_vs_data": [round(v, 4) for v in floor_sw],
            "model_vs_data_mean": round(float(np.mean(model_sw)), 4),
            "data_vs_data_mean": round(float(np.mean(floor_sw)), 4),
            "method": f"pp_diffusion.metrics.sliced_wasserstein (p=1, 1000 directions) between {SW_NUM} draws of "
                      f"DiffusionPrior(model, steps={SW_STEPS}) (DDPM) and {SW_NUM} fresh data points, "
                      f"{SW_SEEDS} seeds; data_vs_data: two independent data sets of {SW_NUM}"}


def train_one(name: str, args) -> None:
    start = time.perf_counter()
    load_at_start = os.getloadavg()
    x_train = zoo.toy2d_data(name, args.num_train, 1000 * args.seed)
    x_test = zoo.toy2d_data(name, NUM_TEST, 1000 * args.seed + 1)
    schedule = schedules.VPCosine()
    spec = {"class": "ResidualMLP",
            "config": {"event_shape": [2], "width": args.width, "depth": args.depth, "emb_dim": args.emb_dim}}
    k_init, k_train, k_eval = jax.random.split(jax.random.key(args.seed), 3)
    network = zoo.build_network(spec, k_init)
    n_params = num_parameters(network)
    data = jnp.asarray(x_train)

    def batch_fn(key):
        k_idx, k_t, k_eps = jax.random.split(key, 3)
        x0 = data[jax.random.randint(k_idx, (args.batch_size,), 0, data.shape[0])]
        return x0, jax.random.uniform(k_t, (args.batch_size,)), jax.random.normal(k_eps, x0.shape), None

    evaluate = lambda net, x: training.evaluate(net, schedule, x, k_eval, draws=8, chunk=8192)
    network, history, train_seconds = training.fit(
        network, lambda net, batch: training.eps_loss(net, schedule, *batch), batch_fn, k_train, args,
        lambda net: {"ema_test_loss": round(evaluate(net, x_test), 5)}, desc=f"toy2d_{name}")
    final_train, final_test = evaluate(network, x_train), evaluate(network, x_test)
    model = ppd.DiffusionModel(network, "eps", schedule, (2,), name=f"toy2d_{name}",
                               data_var=float(x_train.var(axis=0).mean()))
    sw = sliced_wasserstein_scores(model, name, args.seed)
    print(f"toy2d_{name}: final EMA eps loss train {final_train:.4f}, test {final_test:.4f}; "
          f"SW_1 model-vs-data {sw['model_vs_data_mean']:.4f}, data-vs-data {sw['data_vs_data_mean']:.4f}; "
          f"{n_params:,} parameters; training {train_seconds:.0f} s")
    meta = {
        "name": f"toy2d_{name}",
        "description": f"Eps-prediction denoiser of the standardised 2-D '{name}' toy data "
                       f"(pp_diffusion.zoo.toy2d_data('{name}', n, seed)).",
        "network": spec,
        "num_parameters": n_params,
        "parameterization": "eps",
        "schedule": {"class": "VPCosine", "s": schedule.s, "t_max": schedule.t_max},
        "event_shape": [2],
        "data_var": float(x_train.var(axis=0).mean()),
        "data": {"source": f"pp_diffusion.zoo.toy2d_data('{name}', n, seed), standardised",
                 "num_train": args.num_train, "train_seed": 1000 * args.seed,
                 "num_test": NUM_TEST, "test_seed": 1000 * args.seed + 1},
        "sliced_wasserstein": sw,
    }
    record = training.run_record(args, "models/toy2d/train.py", start, load_at_start, train_seconds, history)
    meta["training"] = {**record, "loss": "mean squared eps error, t ~ U(0, 1)",
                        "eval": "EMA network, 8 stratified (t, eps) draws per point, fixed key",
                        "final_train_loss": round(final_train, 5), "final_test_loss": round(final_test, 5)}
    training.save(Path(args.out) / f"toy2d_{name}", network, meta)


def main(argv=None):
    parser = training.base_parser(__doc__, str(training.ZOO_DIR), steps=8000, batch_size=512, lr=2e-3,
                                  warmup=200, chunk=1000, eval_every=2000)
    parser.add_argument("--data", choices=[*zoo.TOY2D, "all"], default="all")
    parser.add_argument("--num-train", type=int, default=100_000, help="training-set size")
    parser.add_argument("--width", type=int, default=128, help="residual width")
    parser.add_argument("--depth", type=int, default=4, help="residual blocks")
    parser.add_argument("--emb-dim", type=int, default=32, help="time-embedding width")
    parser.set_defaults(out=str(training.ZOO_DIR))
    args = training.parse(parser, argv)
    for name in zoo.TOY2D if args.data == "all" else [args.data]:
        train_one(name, args)


if __name__ == "__main__":
    main()
