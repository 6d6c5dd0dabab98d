"""Train the ``digits_energy`` zoo model: an energy-parameterised diffusion model distilled from the
``digits`` eps-prediction model.

    python models/digits_energy/train.py                 # the shipped checkpoint (seed 0)
    python models/digits_energy/train.py --no-progress --steps 50 --out /tmp/digits_energy   # a quick try

Network: :class:`pp_diffusion.networks.EnergyUNet`, E(x, t) = ||x - f(x, t)||^2 / (2 sigma_t^2) with
f = x - sigma_t u(x, t), i.e. E = ||u(x, t)||^2 / 2 with u a U-Net of the teacher's architecture;
the score is -grad_x E = -J_u^T u. ``--init teacher`` (the default) starts u from the teacher's
(EMA) weights; ``--init scratch`` from a fresh initialisation.

Objective (Thornton et al., 2025, Eq. 7/9: the conservative projection of the teacher's score):
``E_t E_{x_t} || sigma_t (-grad_x E(x_t, t)) - sigma_t s_teacher(x_t, t) ||^2`` (mean over pixels),
t ~ U(0, 1) (``--t-sampling uniform``; ``square``: t = u^2 with u ~ U(0, 1), density 1 / (2 sqrt(t)),
which puts 22% of the draws below t = 0.05 and 45% below t = 0.2 instead of 5% and 20%: the same
objective reweighted by 1 / (2 sqrt(t)), with less gradient noise at low t than weighting uniform
draws), x_t = alpha_t x_0 + sigma_t eps with x_0 from the digits TRAINING split
(``ppd.zoo.digits_data()``) and the teacher's score s_teacher = -eps_teacher / sigma_t (its raw
network output, no clipping of xhat_0). The sigma_t^2 weighting makes the residual one in eps units
at every noise level, of the scale of the teacher's own eps loss. Each step differentiates a
gradient (a second backward pass) and runs the teacher forward. Optax AdamW with warm-up and cosine
decay, gradient clipping at norm 1, EMA of the weights (what is saved): the loop of
``models/training.py``, shared with the teacher's script.

For a class-conditional teacher (``--teacher digits_conditional``, see
``models/digits_conditional_energy/train.py``) the energy is class-conditional too: each image's label
is replaced by the null class with the teacher's label-dropout probability, and the energy of label
c is fitted to the teacher's score of label c.

Recorded in ``model.json`` next to the weights: the train and test distillation losses (EMA
network, stratified (t, eps) draws from a fixed key, uniform in t whatever ``--t-sampling``, so that
the figures of runs with different samplings compare) and the relative gap
||-grad E - s_teacher|| / ||s_teacher|| on noised test images at t in 0.05, ..., 0.95.

Output (default ``pp_diffusion/_zoo/digits_energy/``): ``weights.eqx`` and ``model.json``
(parameterization ``"energy"``; schedule, event shape, ``data_var``, ``data_range``, ``t_start`` and
data copied from the teacher's card).
"""

from __future__ import annotations

import functools
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import pp_diffusion as ppd
from pp_diffusion import zoo
from pp_diffusion.networks import EnergyUNet, num_parameters

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import training  # noqa: E402  (models/training.py: the loop, losses and writer every zoo script shares)

GAP_TIMES = (0.05, 0.2, 0.4, 0.6, 0.8, 0.95)

# --t-sampling: the training times t as a function of u ~ U(0, 1), and their description
T_SAMPLINGS = {
    "uniform": (lambda u: u, "t ~ U(0, 1)"),
    "square": (lambda u: u ** 2, "t = u^2, u ~ U(0, 1) (density 1 / (2 sqrt(t)))"),
}


def relative_gaps(energy, teacher, schedule, x0, key, times=GAP_TIMES, labels=None, seeds: int = 3) -> dict:
    """||-grad E - s_teacher|| / ||s_teacher|| over the batch ``x0`` noised to each t (norms over all
    pixels of all images; ``seeds`` noise draws pooled), with the teacher's raw score."""
    x0 = jnp.asarray(x0)

    @jax.jit
    def gap(t, eps):
        tt = jnp.full((x0.shape[0],), t)
        sigma = schedule.sigma(t)
        x_t = schedule.alpha(t) * x0 + sigma * eps
        target = -(jax.vmap(teacher)(x_t, tt) if labels is None else jax.vmap(teacher)(x_t, tt, labels)) / sigma
        diff = training.energy_score(energy, x_t, tt, labels) - target
        return jnp.sum(diff ** 2), jnp.sum(target ** 2)

    out = {}
    for t in times:
        num = den = 0.0
        for s in range(seeds):
            a, b = gap(jnp.float32(t), jax.random.normal(jax.random.fold_in(key, s), x0.shape))
            num, den = num + float(a), den + float(b)
        out[f"{t:g}"] = round(float(np.sqrt(num / den)), 4)
    return out


def train(args) -> None:
    start = time.perf_counter()
    load_at_start = os.getloadavg()
    data = zoo.digits_data()
    teacher_model = zoo.load(args.teacher)
    teacher_card = zoo.card(args.teacher)
    if teacher_card["parameterization"] != "eps":
        raise SystemExit(f"the teacher {args.teacher!r} must be an eps-prediction model")
    teacher = teacher_model.network
    schedule = teacher_model.schedule
    num_classes = getattr(teacher, "num_classes", None)
    label_dropout = teacher_card.get("conditioning", {}).get("label_dropout", 0.0)

    k_init, k_train, k_eval = jax.random.split(jax.random.key(args.seed), 3)
    spec = {"class": "EnergyUNet", "config": teacher.config()}
    network = zoo.build_network(spec, k_init)
    if args.init == "teacher":
        network = EnergyUNet.from_unet(teacher)
    n_params = num_parameters(network)
    x_train = jnp.asarray(data.x_train)
    y_train = jnp.asarray(data.y_train, jnp.int32)

    def batch_fn(key):
        k_idx, k_t, k_eps = jax.random.split(key, 3)
        idx = jax.random.randint(k_idx, (args.batch_size,), 0, x_train.shape[0])
        x0 = x_train[idx]
        t = T_SAMPLINGS[args.t_sampling][0](jax.random.uniform(k_t, (args.batch_size,)))
        eps = jax.random.normal(k_eps, x0.shape)
        if num_classes is None:
            return x0, t, eps, None
        drop = jax.random.uniform(jax.random.fold_in(key, 3), (args.batch_size,)) < label_dropout
        return x0, t, eps, jnp.where(drop, num_classes, y_train[idx])

    errors = functools.partial(training.distill_errors, teacher=teacher)

    def held_out(net, part, null=False):
        x, y = (data.x_test, data.y_test) if part == "test" else (data.x_train, data.y_train)
        labels = None if num_classes is None else (np.full_like(y, num_classes) if null else y)
        return training.evaluate(net, schedule, x, k_eval, draws=args.eval_draws, labels=labels, errors=errors)

    eval_fn = lambda net: {"ema_test_loss": round(held_out(net, "test"), 5)}
    loss_fn = lambda net, batch: training.distill_loss(net, schedule, *batch, teacher=teacher)
    network, history, train_seconds = training.fit(network, loss_fn, batch_fn, k_train, args, eval_fn,
                                                   desc=args.name)

    final = {part: held_out(network, part) for part in ("train", "test")}
    if num_classes is not None:
        final.update({f"{part}_null": held_out(network, part, null=True) for part in ("train", "test")})
    k_gap = jax.random.fold_in(k_eval, 1)
    null_test = None if num_classes is None else jnp.full(data.y_test.shape, num_classes, jnp.int32)
    gaps = relative_gaps(network, teacher, schedule, data.x_test, k_gap, labels=null_test)
    start_gaps = relative_gaps(EnergyUNet.from_unet(teacher), teacher, schedule, data.x_test, k_gap, labels=null_test)
    print(f"final EMA distillation loss: train {final['train']:.5f}, test {final['test']:.5f}; "
          f"{n_params:,} parameters; training {train_seconds / 60:.1f} min")
    print("relative gap ||-grad E - s_teacher|| / ||s_teacher|| on the test images, by t: "
          + ", ".join(f"{t}: {g:.3f}" for t, g in gaps.items())
          + "  (at the teacher-weights start: " + ", ".join(f"{g:.3f}" for g in start_gaps.values()) + ")")

    meta = {"name": args.name, "description": args.description, "network": spec, "num_parameters": n_params,
            "parameterization": "energy"}
    for key in ("schedule", "event_shape", "data_var", "data_range", "t_start"):
        meta[key] = teacher_card[key]
    if num_classes is not None:
        meta["conditioning"] = teacher_card["conditioning"]
    meta["data"] = teacher_card["data"]
    meta["teacher"] = {"name": args.teacher, "sha256": teacher_card["sha256"], "init": args.init}
    meta["evaluation"] = {
        "relative_gap": gaps, "relative_gap_at_start": start_gaps,
        "relative_gap_definition": "||-grad E - s_teacher|| / ||s_teacher|| (teacher's raw score, no clipping), "
                                   "norms pooled over the 360 test images and 3 noise draws per t"
                                   + ("" if num_classes is None else ", at the null class"),
    }
    record = training.run_record(args, args.script, start, load_at_start, train_seconds, history)
    losses = {"loss": "conservative-projection distillation, mean over pixels of "
                      "||sigma_t (-grad E(x_t, t)) - sigma_t s_teacher(x_t, t)||^2, "
                      f"{T_SAMPLINGS[args.t_sampling][1]}, training split",
              "eval": f"EMA network, {args.eval_draws} stratified (t, eps) draws per image (uniform in t), fixed key",
              "final_train_loss": round(final["train"], 5), "final_test_loss": round(final["test"], 5)}
    if num_classes is not None:
        losses["loss"] += f"; label replaced by the null class with probability {label_dropout:g}"
        losses["eval"] += "; final_*_loss at the true labels, final_*_loss_null at the null class"
        losses["final_train_loss_null"] = round(final["train_null"], 5)
        losses["final_test_loss_null"] = round(final["test_null"], 5)
    meta["training"] = {**record, **losses}
    training.save(args.out, network, meta)


def make_parser(name: str = "digits_energy", teacher: str = "digits", doc: str = __doc__, *, steps: int = 1800,
                t_sampling: str = "uniform"):
    parser = training.base_parser(doc, str(training.ZOO_DIR / name), steps=steps, batch_size=128, lr=5e-4,
                                  warmup=100, chunk=25, eval_every=300)
    parser.add_argument("--teacher", default=teacher, help="the eps-prediction zoo model to distil")
    parser.add_argument("--init", choices=["teacher", "scratch"], default="teacher",
                        help="start the energy's U-Net from the teacher's weights or from scratch")
    parser.add_argument("--t-sampling", choices=sorted(T_SAMPLINGS), default=t_sampling,
                        help=f"training times: uniform (t ~ U(0, 1)) or square (t = u^2, more of them at low noise); "
                             f"default {t_sampling}")
    parser.add_argument("--eval-draws", type=int, default=8, help="(t, eps) draws per image in evaluations")
    parser.set_defaults(name=name, script=f"models/{name}/train.py",
                        description=f"Energy-parameterised diffusion model E(x, t) = ||u(x, t)||^2 / 2 distilled "
                                    f"from the {teacher!r} eps model (conservative projection of its score), "
                                    "scikit-learn 8x8 digits, pixels in [-1, 1].")
    return parser


def main(argv=None):
    train(training.parse(make_parser(), argv))


if __name__ == "__main__":
    main()
