"""Particle guidance on the digits: in-group diversity against quality, classes covered, and cost.

    python benchmarks/diversity.py            # the tables in docs/benchmarks.md and docs/diversity_pareto.png
    python benchmarks/diversity.py --quick    # a smoke run of every part (1.5 min on 2 idle cores, 2.5 shared)
    python benchmarks/diversity.py --classes 3 7 --scales 2 --pixel-strengths 30 100 --feature-strengths 3 --no-b

Particle guidance (``pp_diffusion.guidance.particle``, Corso et al., ICLR 2024) draws a group of n
samples jointly: the members repel each other through the RBF kernel (median bandwidth) on x_t
("pixel") or on the clean classifier's penultimate features of xhat_0 ("feature", one VJP through
the network per step), while sigma_t / alpha_t >= ``--active-above``. Strength 0 is i.i.d. sampling
with the same chain. Every variant runs with the same keys (the same x_T and the same DDPM noise for
a group), so a variant and i.i.d. are compared group by group (paired).

(a) Diversity against quality, zoo model ``digits_conditional`` with classifier-free guidance at each
    w of ``--scales`` (``ppd.guidance.classifier_free(model, label=c, scale=w)``, ``--steps`` DDPM steps
    from t = 0.95; 25 by default, half the other digits benchmarks' 50, for time: the default run takes
    8 minutes on 2 idle cores, 14 when they are shared): for each class of ``--classes``, ``--groups``
    groups of n = ``--n`` draws, i.i.d. and pixel / feature PG at each strength of
    ``--pixel-strengths`` / ``--feature-strengths``.
    Per group, the in-group diversity: the mean pairwise distance (MPD) of the members' classifier
    features (and, beside it, of their pixels) and the Vendi score of the features with the RBF kernel
    exp(-|a - b|^2 / h), h the median squared distance between the class's test-image features (the
    cosine kernel saturates here: the features have norm ~8 and spread ~1 within a class, so its Vendi
    score is ~1.03 for every group).
    Per class, the quality: the Frechet distance in the classifier's features between the class's
    pooled draws (groups x n) and its ~36 test images (both sets small: compare rows with one another,
    not with other tables), and the accuracy (fraction the clean classifier assigns to the class).
    Medians over classes (FD, accuracy) or over all groups (diversity) with the interquartile range,
    and the paired ratios to i.i.d. (per class for FD, per group for diversity) as the median with a
    bootstrap 90% interval. Target: at equal quality (the Frechet distance within 5% of i.i.d.'s at
    the same w, read both ways: the median over classes of the paired ratio <= 1.05 and the median
    Frechet distance <= 1.05 x i.i.d.'s) some strength's diversity is strictly higher than i.i.d.'s
    (the 90% intervals of both the MPD and the Vendi ratios above 1); printed as PASS / FAIL per
    method and w, with the strength where quality starts to fall (the smallest of the sweep at which
    either reading exceeds 1.05).
(b) Classes covered, zoo model ``digits`` (unconditional): the number of distinct classifier labels in
    groups of ``--cover-sizes`` draws, for i.i.d. (groups cut from the same ``--cover-draws`` draws) and
    pixel / feature PG at ``--cover-pixel-strength`` / ``--cover-feature-strength``, beside the exact i.i.d.
    expectation sum_k 1 - (1 - p_k)^n with p_k the label frequencies of the i.i.d. draws; with the
    Frechet distance of all draws pooled to the 360 test images.
(c) Cost: NFE and VJPs per draw of each variant (the sampler's ``sample_stats``, which ``ppd.infer``
    returns as ``dt.sample_stats.nfe`` / ``vjp``), the steady-state wall and CPU time per group and the
    compile time; and the repulsion kernel alone (gradient of sum_{i<j} k(z_i, z_j), O(n^2 d) per step) beside
    one network evaluation of the group.

The runs call the sampler's ``setup`` and ``run`` (what ``ppd.infer`` vmaps over chains) under one
``jax.jit`` per variant, vmapped over the classes, with the class and w traced: ``ppd.infer`` keys its
compilation on the program's value, so every class and w would compile anew (~30 s each here).
A group is one chain of ``ppd.infer(program, sampler, key, num_chains=G)``.

``--png`` (default docs/diversity_pareto.png) draws (a): Frechet distance (x, lower is better) against
feature MPD (y), one curve per method over its strengths from the i.i.d. point, one panel per w.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import numpyro

import pp_diffusion as ppd
from pp_diffusion.guidance._repulsion import joint_potential
from pp_diffusion.program import inspect_program

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))
from _tables import print_table  # noqa: E402

QUALITY_TOLERANCE = 1.05  # "equal quality": the Frechet distance within 5% of i.i.d.'s
METHODS = ("iid", "pixel", "feature")


# --------------------------------------------------------------------------- metrics


def _metric(name):
    return getattr(ppd.metrics, name, None)


def mean_pairwise_distance(groups):
    fn = _metric("mean_pairwise_distance")
    if fn is not None:
        return fn(groups)
    z = np.asarray(groups, np.float64).reshape(len(groups), np.shape(groups)[1], -1)
    i, j = np.triu_indices(z.shape[1], k=1)
    return np.linalg.norm(z[:, i] - z[:, j], axis=-1).mean(axis=1)


def vendi_score(groups, bandwidth):
    """The Vendi score of each group with the RBF kernel exp(-|a - b|^2 / bandwidth)."""
    fn = _metric("vendi_score")
    if fn is not None:
        return fn(groups, kernel="rbf", bandwidth=bandwidth)
    z = np.asarray(groups, np.float64).reshape(len(groups), np.shape(groups)[1], -1)
    K = np.exp(-np.sum((z[:, :, None] - z[:, None, :]) ** 2, axis=-1) / bandwidth)
    lam = np.clip(np.linalg.eigvalsh(K / z.shape[1]), 0, None)
    return np.exp(-np.sum(np.where(lam > 0, lam * np.log(np.where(lam > 0, lam, 1)), 0), axis=1))


def median_sq_distance(z):
    """The median squared distance between the rows of ``z`` (the Vendi kernel's bandwidth)."""
    z = np.asarray(z, np.float64)
    i, j = np.triu_indices(len(z), k=1)
    return float(np.median(np.sum((z[i] - z[j]) ** 2, axis=-1)))


def modes_covered(labels):
    fn = _metric("modes_covered")
    if fn is not None:
        return fn(labels)
    return np.asarray([len(set(row)) for row in np.asarray(labels)])


def expected_modes_covered(p, n):
    return float(np.sum(1.0 - (1.0 - np.asarray(p, np.float64)) ** n))


def median_iqr(values, fmt="{:.2f}"):
    v = np.asarray(values, float).reshape(-1)
    v = v[np.isfinite(v)]
    if not len(v):
        return "nan"
    q1, q2, q3 = np.quantile(v, [0.25, 0.5, 0.75])
    return f"{fmt.format(q2)} [{fmt.format(q1)}, {fmt.format(q3)}]"


def bootstrap_median(values, rng, level=0.9, reps=2000):
    """The median of ``values`` and a percentile bootstrap interval for it."""
    v = np.asarray(values, float).reshape(-1)
    v = v[np.isfinite(v)]
    if not len(v):
        return np.nan, np.nan, np.nan
    meds = np.median(v[rng.integers(0, len(v), (reps, len(v)))], axis=1)
    lo, hi = np.quantile(meds, [(1 - level) / 2, (1 + level) / 2])
    return float(np.median(v)), float(lo), float(hi)


def fmt_ci(ci):
    m, lo, hi = ci
    return f"{m:.3f} [{lo:.3f}, {hi:.3f}]"


# --------------------------------------------------------------------------- runs


def make_sampler(method, strength, n, classifier, active_above):
    if method == "iid":
        strength = 0.0
    features = classifier.features if method == "feature" else None
    return ppd.guidance.particle(n, float(strength), features=features, active_above=active_above)


def group_runner(model, sampler, steps, guided):
    """A compiled-on-first-use ``run(labels (C,), w, keys (C, G)) -> (x (C, G, n, 8, 8), nfe, vjp)``:
    ``G`` groups of each class; with ``guided`` False, the labels and w are unused."""

    def one_class(label, w, keys):
        m = ppd.guidance.classifier_free(model, label=label, scale=w) if guided else model
        prior = ppd.DiffusionPrior(m, steps=steps)

        def program():
            numpyro.sample("x", prior)

        context = sampler.setup(program, inspect_program(program, {}), {})
        out = jax.vmap(lambda k: sampler.run(k, context))(keys)
        return out.posterior["x"], out.sample_stats["nfe"], out.sample_stats["vjp"]

    return jax.jit(jax.vmap(one_class, in_axes=(0, None, 0)))


class Timed:
    """A runner compiled on its first call (the compile time kept apart), then timed per call: wall
    time (``calls``) and this process's CPU time over all threads (``cpu``, less sensitive to other
    jobs on a shared machine)."""

    def __init__(self, fn):
        self.fn, self.compiled, self.compile_seconds, self.calls, self.cpu = fn, None, 0.0, [], []

    def __call__(self, *args):
        if self.compiled is None:
            t0 = time.perf_counter()
            self.compiled = self.fn.lower(*args).compile()
            self.compile_seconds = time.perf_counter() - t0
        t0, c0 = time.perf_counter(), time.process_time()
        out = jax.block_until_ready(self.compiled(*args))
        self.calls.append(time.perf_counter() - t0)
        self.cpu.append(time.process_time() - c0)
        return out


def group_keys(seed, classes, groups, salt=0):
    """(C, G) keys: the same for every variant and w (paired comparisons)."""
    base = jax.random.fold_in(jax.random.key(seed), salt)
    return jnp.stack([jax.random.split(jax.random.fold_in(base, int(c)), groups) for c in classes])


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- (a)


def variants(args):
    out = [("iid", 0.0)]
    out += [("pixel", float(s)) for s in args.pixel_strengths]
    out += [("feature", float(s)) for s in args.feature_strengths]
    return out


def part_a(args, clf, features_fn, classify_fn, data, costs):
    model = ppd.zoo.load("digits_conditional")
    classes = list(args.classes)
    labels = jnp.asarray(classes, jnp.int32)
    keys = group_keys(args.seed, classes, args.groups)
    test = {c: np.asarray(features_fn(jnp.asarray(data.x_test[data.y_test == c]))) for c in classes}
    bandwidth = np.asarray([median_sq_distance(test[c]) for c in classes])
    results = {}  # (w, method, strength) -> dict of arrays
    for method, strength in variants(args):
        run = Timed(group_runner(model, make_sampler(method, strength, args.n, clf, args.active_above),
                                 args.steps, guided=True))
        for w in args.scales:
            x, nfe, vjp = run(labels, jnp.float32(w), keys)
            x = np.asarray(x, np.float64)  # (C, G, n, 8, 8)
            C, G, n = x.shape[:3]
            feats = np.asarray(features_fn(jnp.asarray(x.reshape(-1, 8, 8), jnp.float32))).reshape(C, G, n, -1)
            pred = np.asarray(jnp.argmax(classify_fn(jnp.asarray(x.reshape(-1, 8, 8), jnp.float32)), -1))
            pred = pred.reshape(C, G, n)
            finite = np.all(np.isfinite(x.reshape(C, G, n, -1)), axis=-1)
            fd, acc = [], []
            for ci, c in enumerate(classes):
                pooled = feats[ci][finite[ci]]
                fd.append(ppd.metrics.frechet_distance(pooled, test[c]) if len(pooled) > 1 else np.nan)
                acc.append(float(np.mean(pred[ci] == c)))
            results[(w, method, strength)] = {
                "fd": np.asarray(fd), "acc": np.asarray(acc),
                "mpd": mean_pairwise_distance(feats.reshape(C * G, n, -1)).reshape(C, G),
                "vendi": np.stack([vendi_score(feats[ci], bandwidth[ci]) for ci in range(C)]),
                "pix": mean_pairwise_distance(x.reshape(C * G, n, -1)).reshape(C, G),
                "nonfinite": int(np.sum(~finite))}
            log(f"(a) {method} strength {strength:g} w {w:g}: {run.calls[-1]:.1f} s "
                f"(compile {run.compile_seconds:.1f} s)")
        costs.append({"part": "a", "model": "digits_conditional+cfg", "method": method, "strength": strength,
                      "n": args.n, "nfe": int(np.asarray(nfe).reshape(-1)[0]),
                      "vjp": int(np.asarray(vjp).reshape(-1)[0]),
                      "per_group": np.median(run.calls) / (len(classes) * args.groups),
                      "cpu_per_group": np.median(run.cpu) / (len(classes) * args.groups),
                      "compile": run.compile_seconds})
    return results


def report_a(args, results):
    rng = np.random.default_rng(args.seed)
    verdicts, falls = {}, {}
    for w in args.scales:
        base = results[(w, "iid", 0.0)]
        rows = []
        summary = {}
        for method, strength in variants(args):
            r = results[(w, method, strength)]
            fd_ratio = bootstrap_median(r["fd"] / base["fd"], rng)
            mpd_ratio = bootstrap_median(r["mpd"] / base["mpd"], rng)
            vendi_ratio = bootstrap_median(r["vendi"] / base["vendi"], rng)
            summary[(method, strength)] = (fd_ratio, mpd_ratio, vendi_ratio)
            rows.append([method, f"{strength:g}", median_iqr(r["fd"]), fmt_ci(fd_ratio), median_iqr(r["acc"], "{:.3f}"),
                         median_iqr(r["mpd"]), fmt_ci(mpd_ratio), median_iqr(r["vendi"]), fmt_ci(vendi_ratio),
                         median_iqr(r["pix"]), r["nonfinite"]])
        print(f"\n(a) w = {w:g}: {len(args.classes)} classes x {args.groups} groups of {args.n}; "
              "median [IQR] over classes (Frechet, accuracy) or groups (diversity); ratios to i.i.d. paired "
              "(per class / per group): median [bootstrap 90%]")
        print_table(["method", "strength", "Frechet", "Frechet / iid", "accuracy", "feature MPD", "MPD / iid",
                     "Vendi", "Vendi / iid", "pixel MPD", "non-finite"], rows)
        for method in ("pixel", "feature"):
            strengths = [s for m, s in variants(args) if m == method]
            if not strengths:
                continue

            def same_quality(s, method=method, w=w, base=base, summary=summary):
                paired = summary[(method, s)][0][0]
                pooled = np.median(results[(w, method, s)]["fd"]) / np.median(base["fd"])
                return paired <= QUALITY_TOLERANCE and pooled <= QUALITY_TOLERANCE

            equal = [s for s in strengths if same_quality(s)]
            better = [s for s in equal if summary[(method, s)][1][1] > 1 and summary[(method, s)][2][1] > 1]
            fall = next((s for s in sorted(strengths) if not same_quality(s)), None)
            verdicts[(w, method)] = (better, equal, summary)
            falls[(w, method)] = fall
            if better:
                best = max(better, key=lambda s: summary[(method, s)][1][0])
                _, mpd_r, vendi_r = summary[(method, best)]
                pooled = np.median(results[(w, method, best)]["fd"]) / np.median(base["fd"])
                detail = (f"PASS: at strength {best:g} Frechet / iid {summary[(method, best)][0][0]:.3f} paired, "
                          f"{pooled:.3f} of the medians, "
                          f"MPD x{mpd_r[0]:.3f} [{mpd_r[1]:.3f}, {mpd_r[2]:.3f}], "
                          f"Vendi x{vendi_r[0]:.3f} [{vendi_r[1]:.3f}, {vendi_r[2]:.3f}]")
            elif equal:
                detail = (f"FAIL: at equal quality (strengths {', '.join(f'{s:g}' for s in equal)}) the diversity "
                          "is not above i.i.d.'s with 90% confidence")
            else:
                detail = "FAIL: no strength of the sweep keeps the Frechet distance within 5% of i.i.d."
            fall_txt = f"{fall:g}" if fall is not None else f"none up to {max(strengths):g}"
            print(f"target w = {w:g}, {method} PG: {detail}; quality falls (Frechet > 1.05 x iid, either reading) from "
                  f"strength {fall_txt}")
    overall = all(any(verdicts[(w, m)][0] for m in ("pixel", "feature") if (w, m) in verdicts) for w in args.scales)
    per_method = {m: all(verdicts[(w, m)][0] for w in args.scales if (w, m) in verdicts)
                  for m in ("pixel", "feature") if any((w, m) in verdicts for w in args.scales)}
    print(f"\nTARGET (at every w, some PG strength has Frechet within 5% of i.i.d. and both diversities higher, "
          f"90% intervals above 1): {'PASS' if overall else 'FAIL'}  "
          + "; ".join(f"{m} PG alone: {'PASS' if ok else 'FAIL'}" for m, ok in per_method.items()))
    return overall


def plot_a(args, results, path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, axes = plt.subplots(1, len(args.scales), figsize=(max(4.6 * len(args.scales), 6.0), 4.2), squeeze=False)
    styles = {"pixel": ("tab:blue", "o-"), "feature": ("tab:orange", "s-")}
    for ax, w in zip(axes[0], args.scales):
        base = results[(w, "iid", 0.0)]
        x0, y0 = np.median(base["fd"]), np.median(base["mpd"])
        ax.axvspan(x0, x0 * QUALITY_TOLERANCE, color="0.9", label="Frechet within 5% of i.i.d.")
        for method in ("pixel", "feature"):
            strengths = sorted(s for m, s in variants(args) if m == method)
            if not strengths:
                continue
            xs = [x0] + [np.median(results[(w, method, s)]["fd"]) for s in strengths]
            ys = [y0] + [np.median(results[(w, method, s)]["mpd"]) for s in strengths]
            color, style = styles[method]
            ax.plot(xs, ys, style, color=color, label=f"{method} PG")
            for s, xv, yv in zip(strengths, xs[1:], ys[1:]):
                ax.annotate(f"{s:g}", (xv, yv), textcoords="offset points", xytext=(4, 4), fontsize=8, color=color)
        ax.plot([x0], [y0], "k*", markersize=12, label="i.i.d.")
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.xaxis.set_minor_formatter(matplotlib.ticker.FormatStrFormatter("%g"))
        ax.tick_params(axis="x", which="minor", labelsize=7)
        ax.set_title(f"classifier-free w = {w:g}")
        ax.set_xlabel("Frechet distance (log scale; lower is better)")
        ax.set_ylabel(f"in-group diversity: feature MPD (n = {args.n})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"Particle guidance, digits_conditional: medians over {len(args.classes)} classes x "
                 f"{args.groups} groups, {args.steps} DDPM steps", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    shown = Path(path).resolve()
    print(f"\nPareto plot written to {shown.relative_to(ROOT) if shown.is_relative_to(ROOT) else shown}")


# --------------------------------------------------------------------------- (b)


def part_b(args, clf, features_fn, classify_fn, data, costs):
    model = ppd.zoo.load("digits")
    test_all = np.asarray(features_fn(jnp.asarray(data.x_test)))
    dummy = jnp.zeros((1,), jnp.int32)
    rows = []
    setups = [("iid", 0.0, max(args.cover_sizes))]
    cover = [(m, s) for m, s in (("pixel", args.cover_pixel_strength), ("feature", args.cover_feature_strength))
             if m in args.cover_methods]
    setups += [(m, s, n) for m, s in cover for n in args.cover_sizes]
    draws_by = {}
    for method, strength, n in setups:
        groups = args.cover_draws // n
        run = Timed(group_runner(model, make_sampler(method, strength, n, clf, args.active_above), args.steps,
                                 guided=False))
        x, nfe, vjp = run(dummy, jnp.float32(0.0), group_keys(args.seed, [0], groups, salt=1 + n))
        x = np.asarray(x[0], np.float64)  # (groups, n, 8, 8)
        flat = jnp.asarray(x.reshape(-1, 8, 8), jnp.float32)
        labels = np.asarray(jnp.argmax(classify_fn(flat), -1))
        feats = np.asarray(features_fn(flat))
        draws_by[(method, n)] = (labels, feats)
        log(f"(b) {method} strength {strength:g} n {n}: {run.calls[-1]:.1f} s (compile {run.compile_seconds:.1f} s)")
        costs.append({"part": "b", "model": "digits", "method": method, "strength": strength, "n": n,
                      "nfe": int(np.asarray(nfe).reshape(-1)[0]), "vjp": int(np.asarray(vjp).reshape(-1)[0]),
                      "per_group": run.calls[-1] / groups, "cpu_per_group": run.cpu[-1] / groups,
                      "compile": run.compile_seconds})
    iid_labels = draws_by[("iid", max(args.cover_sizes))][0]
    p = np.bincount(iid_labels, minlength=10) / len(iid_labels)
    for n in args.cover_sizes:
        expected = expected_modes_covered(p, n)
        for method, strength in [("iid", 0.0), *cover]:
            labels, feats = draws_by[("iid", max(args.cover_sizes))] if method == "iid" else draws_by[(method, n)]
            groups = len(labels) // n
            lab = labels[: groups * n].reshape(groups, n)
            covered = modes_covered(lab)
            se = np.std(covered, ddof=1) / np.sqrt(groups) if groups > 1 else np.nan
            fd = ppd.metrics.frechet_distance(feats, test_all)
            mpd = mean_pairwise_distance(feats[: groups * n].reshape(groups, n, -1))
            rows.append([method, f"{strength:g}", n, groups, f"{np.mean(covered):.2f} +- {se:.2f}",
                         f"{expected:.2f}", f"{np.mean(covered) - expected:+.2f}", f"{np.median(mpd):.2f}",
                         f"{fd:.2f}"])
    print(f"\n(b) classes covered, unconditional digits, {args.steps} DDPM steps, {args.cover_draws} draws per "
          f"variant and group size (i.i.d. groups of every size cut from the same draws); label frequencies of "
          f"the i.i.d. draws: {' '.join(f'{v:.3f}' for v in p)}")
    print_table(["method", "strength", "n", "groups", "classes covered (mean +- se)", "iid expectation",
                 "difference", "feature MPD", "Frechet (all, vs 360 test)"], rows)


# --------------------------------------------------------------------------- (c)


def report_costs(args, costs):
    rows = [[c["part"], c["method"], f"{c['strength']:g}", c["n"], c["nfe"], c["vjp"], f"{c['per_group']:.2f}",
             f"{c['cpu_per_group']:.2f}", f"{c['cpu_per_group'] / c['n']:.3f}", f"{c['compile']:.1f}"] for c in costs]
    print(f"\n(c) cost per draw (sample_stats: nfe, vjp; classifier-free guidance counts 2 per call) and time per "
          f"group of n (steady state, median over the calls of (a)'s w; wall time, and CPU time of this process "
          f"over both cores; {args.steps} steps)")
    print_table(["part", "method", "strength", "n", "NFE / draw", "VJP / draw", "wall s / group", "CPU s / group",
                 "CPU s / draw", "compile s"], rows)

    model = ppd.zoo.load("digits")
    t = jnp.float32(0.5)
    rows = []
    for n in sorted({args.n, *args.cover_sizes}):
        z = jax.random.normal(jax.random.key(n), (n, 64))
        x = jax.random.normal(jax.random.key(n + 1), (n, 8, 8))
        kernel = jax.jit(jax.grad(lambda z: joint_potential(z)[0]))
        net = jax.jit(jax.vmap(lambda x: model.denoise(x, t)))
        out = []
        for fn, arg in ((kernel, z), (net, x)):
            jax.block_until_ready(fn(arg))
            reps = 200
            t0 = time.perf_counter()
            for _ in range(reps):
                r = fn(arg)
            jax.block_until_ready(r)
            out.append((time.perf_counter() - t0) / reps)
        rows.append([n, 64, f"{1e6 * out[0]:.0f}", f"{1e6 * out[1]:.0f}", f"{out[0] / out[1]:.3f}"])
    print("\n(c) one step's repulsion kernel alone (gradient of sum_{i<j} exp(-|z_i - z_j|^2 / h), median "
          "bandwidth, d = 64: pixels or classifier features) against one network evaluation of the group")
    print_table(["n", "d", "kernel gradient us", "network (group) us", "ratio"], rows)


# --------------------------------------------------------------------------- main


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--classes", type=int, nargs="+", default=list(range(10)))
    parser.add_argument("--scales", type=float, nargs="+", default=[1.0, 2.0, 4.0],
                        help="classifier-free guidance weights w")
    parser.add_argument("--n", type=int, default=8, help="group size in (a)")
    parser.add_argument("--groups", type=int, default=4, help="groups per class in (a)")
    parser.add_argument("--steps", type=int, default=25, help="DDPM steps")
    parser.add_argument("--pixel-strengths", type=float, nargs="*", default=[3.0, 10.0, 30.0, 100.0])
    parser.add_argument("--feature-strengths", type=float, nargs="*", default=[0.3, 1.0, 3.0, 10.0])
    parser.add_argument("--active-above", type=float, default=1.0,
                        help="the repulsion acts while sigma_t / alpha_t >= this")
    parser.add_argument("--cover-sizes", type=int, nargs="+", default=[8, 16], help="group sizes in (b)")
    parser.add_argument("--cover-draws", type=int, default=768, help="draws per variant and group size in (b)")
    parser.add_argument("--cover-pixel-strength", type=float, default=30.0)
    parser.add_argument("--cover-feature-strength", type=float, default=3.0)
    parser.add_argument("--cover-methods", nargs="+", default=["pixel", "feature"], choices=["pixel", "feature"],
                        help="the PG variants of (b) (i.i.d. always)")
    parser.add_argument("--no-b", action="store_true", help="skip part (b)")
    parser.add_argument("--png", default=str(ROOT / "docs" / "diversity_pareto.png"),
                        help="where to draw (a)'s Pareto plot ('' for none)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: classes 3 7, w 2, 2 groups, 10 steps, one strength per method, "
                             "(b) with groups of 8 and pixel PG only (explicit options are overridden)")
    args = parser.parse_args(argv)
    if args.quick:
        args.classes, args.scales, args.groups, args.steps = [3, 7], [2.0], 2, 10
        args.pixel_strengths, args.feature_strengths = [30.0], [3.0]
        args.cover_sizes, args.cover_draws, args.cover_methods = [8], 64, ["pixel"]
        if args.png == parser.get_default("png"):
            args.png = "/tmp/diversity_pareto_quick.png"
    if args.n < 2 or args.groups < 2 or min(args.cover_sizes) < 2 or args.steps < 2:
        parser.error("--n, --groups, --cover-sizes must be >= 2 and --steps >= 2")

    start = time.perf_counter()
    print(("command: python benchmarks/diversity.py " + " ".join(sys.argv[1:] if argv is None else argv)).rstrip())
    print(f"settings: classes {args.classes}, w {args.scales}, n {args.n}, {args.groups} groups per class, "
          f"{args.steps} DDPM steps, pixel strengths {args.pixel_strengths}, feature strengths "
          f"{args.feature_strengths}, active_above {args.active_above:g}, RBF kernel with the median bandwidth; "
          f"(b): groups of {args.cover_sizes}, {args.cover_draws} draws, strengths pixel {args.cover_pixel_strength:g} "
          f"/ feature {args.cover_feature_strength:g}; seed {args.seed}; {jax.device_count()} {jax.default_backend()} "
          f"device(s)")
    clf = ppd.zoo.load_classifier()
    data = ppd.zoo.digits_data()
    features_fn = jax.jit(jax.vmap(clf.features))
    classify_fn = jax.jit(jax.vmap(clf))
    costs = []
    results = part_a(args, clf, features_fn, classify_fn, data, costs)
    report_a(args, results)
    if args.png:
        plot_a(args, results, args.png)
    if not args.no_b:
        part_b(args, clf, features_fn, classify_fn, data, costs)
    report_costs(args, costs)
    print(f"\ntotal wall time {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
