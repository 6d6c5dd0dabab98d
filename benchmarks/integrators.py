"""Integrator accuracy, framework overhead and compile time of pp_diffusion on the exact Gaussian mixture.

Run ``python benchmarks/integrators.py`` (``--quick`` for a smaller run, ``--help`` for options).
It prints three plain-text tables:

(a) Accuracy of the deterministic integrators (DDIM, DPM-Solver++ 2M/3M in both third-order forms
    with and without lower-order final steps, UniPC-2/3, lambda-DDIM swept over lam and at orders
    2/3, EDM Heun at ceil(NFE / 2) steps, DEIS-2/3; and, when the optional ``peer`` extra is
    installed, diffusers' DPM-Solver++ 2M/3M and UniPC-2/3 run on the same x_T) against the
    exact probability-flow ODE endpoint from the same starting noise (RMSE, and the share of
    samples that end near a different mixture component than the exact endpoint), and of every integrator
    (DDPM included) against exact mixture samples in sliced 1-Wasserstein distance, in d = 2 and
    d = 64 on 25 unit-variance components with means 8 (i, j), i, j in -2..2 (in d = 64 the pair
    repeated: (8i, 8j, 8i, 8j, ...)); the schedule is the discrete linear DDPM schedule and the
    network is the mixture's exact noise prediction, so every error is the integrator's own.
    The reference ODE, du/ds = -s * score(u; s) in u = x / alpha and s = sigma / alpha, is
    solved with diffrax's Dopri8 in float64 (in a subprocess with JAX_ENABLE_X64=1, so that the
    samplers themselves keep running in float32) at rtol = atol = 1e-10, and checked against a
    second solve at 1e-8.
(b) Framework overhead: ``pp_diffusion.infer(program, pp_diffusion.iid(n), key)`` on a program
    with one ``DiffusionPrior`` site (DDPM chain, 100 steps) against a hand-written jitted
    ``lax.scan`` over the same DDPM transitions with the same model.
(c) Compile time of the sampling run for 100 and 1,000 steps.
(d)-(f) Phase-space diffusion (``benchmarks/_phase_space.py``): (d) the splitting and conjugate
    integrators on the exact augmented (PSLD) mixture, deterministic RMSE and stochastic sliced
    distance against NFE; (e) the digits' Frechet distance against NFE, VP ``digits`` with its best
    integrators and ``digits_psld`` with the splitting ones; (f) overhead of infer against a
    hand-written scan and compile time, for lambda-DDIM and SSCS.
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _phase_space import add_options, table_d, table_e, table_f  # noqa: E402
from _tables import print_table  # noqa: E402

# No peer figures are quoted from other runs: figures measured on another draw of x_T are not
# comparable (draw-to-draw noise of the RMSE at n = 2,000 is about 0.055). The peer (diffusers) is
# run in table (a) on the same x_T when it is installed: pip install -e ".[peer]".
PEER_INSTALL = 'pip install -e ".[peer]"'
LAMBDAS = (-0.5, -0.2, -0.1, 0.1, 0.2)
# --optimised-grids: short option name -> (row name in table (a), short label for the optimised rows)
GRID_INTEGRATORS = {
    "unipc2": ("UniPC-2", "UniPC-2"),
    "unipc3": ("UniPC-3 [default: lower-order final]", "UniPC-3"),
    "dpm2m": ("DPM-Solver++(2M)", "DPM-Solver++(2M)"),
    "dpm3m": ("DPM-Solver++(3M) [default: reference, lower-order final]", "DPM-Solver++(3M)"),
}
GOAL = {5: 2.0, 10: 0.45, 20: 0.18}  # RMSE targets on d = 64 at NFE 5 / 10 / 20


def mixture_means(d: int) -> np.ndarray:
    ij = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], dtype=float) * 8.0
    if d % 2:
        raise ValueError(f"d must be even, got {d}")
    return np.tile(ij, (1, d // 2))


# --------------------------------------------------------------------------- reference ODE (subprocess)

def reference_main(inp: str, out: str) -> None:
    """Solve the probability-flow ODE in float64 for every x_T in ``inp``; write the endpoints to ``out``."""
    import jax

    jax.config.update("jax_enable_x64", True)
    import diffrax
    import jax.numpy as jnp

    from pp_diffusion import GaussianMixture

    data = dict(np.load(inp))
    results = {}
    # tags: "<d>" for an evaluation draw, "<d>-train" for a training draw of --optimised-grids (no check solve)
    for tag in [k.split("_", 1)[1] for k in data if k.startswith("xT_")]:
        d = int(tag.split("-")[0])
        g = GaussianMixture(np.ones(25), mixture_means(d))
        x_T = jnp.asarray(data[f"xT_{tag}"], jnp.float64)
        alpha_1, s_1 = float(data[f"alpha1_{tag}"]), float(data[f"s1_{tag}"])

        def field(s, u, args):
            return jax.vmap(lambda v: -s * g.score(v, 1.0, s))(u)

        def solve(tol):
            t0 = time.perf_counter()
            sol = diffrax.diffeqsolve(
                diffrax.ODETerm(field), diffrax.Dopri8(), t0=s_1, t1=0.0, dt0=None, y0=x_T / alpha_1,
                stepsize_controller=diffrax.PIDController(rtol=jnp.asarray(tol), atol=jnp.asarray(tol)),
                max_steps=200_000,
            )
            y = np.asarray(sol.ys[-1])
            return y, int(sol.stats["num_steps"]), time.perf_counter() - t0

        ref, steps, secs = solve(1e-10)
        check, steps_c, secs_c = (ref, 0, 0.0) if tag.endswith("-train") else solve(1e-8)
        results[f"ref_{tag}"] = ref
        results[f"check_{tag}"] = check
        results[f"info_{tag}"] = np.array([steps, secs, steps_c, secs_c])
    np.savez(out, **results)


def exact_ode_endpoints(x_T_by_d: dict, alpha_1: float, s_1: float):
    with tempfile.TemporaryDirectory() as tmp:
        inp, out = os.path.join(tmp, "in.npz"), os.path.join(tmp, "out.npz")
        arrays = {}
        for d, x in x_T_by_d.items():
            arrays[f"xT_{d}"] = np.asarray(x)
            arrays[f"alpha1_{d}"] = np.asarray(alpha_1)
            arrays[f"s1_{d}"] = np.asarray(s_1)
        np.savez(inp, **arrays)
        env = dict(os.environ, JAX_ENABLE_X64="1")
        subprocess.run([sys.executable, os.path.abspath(__file__), "--_reference", inp, out], check=True, env=env)
        res = dict(np.load(out))
    return {d: (res[f"ref_{d}"], res[f"check_{d}"], res[f"info_{d}"]) for d in x_T_by_d}


# --------------------------------------------------------------------------- helpers

def timed(fn, repeats):
    """Median wall time of ``repeats`` calls of ``fn`` (its result blocked on)."""
    import jax

    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times


class CompileMonitor:
    """Sums JAX's own compile-time events (tracing, lowering, XLA compilation) while active."""

    EVENTS = {
        "/jax/core/compile/jaxpr_trace_duration": "trace",
        "/jax/core/compile/jaxpr_to_mlir_module_duration": "lower",
        "/jax/core/compile/backend_compile_duration": "xla",
    }

    def __init__(self):
        import jax

        self.totals = None
        jax.monitoring.register_event_duration_secs_listener(self._listen)

    def _listen(self, event, duration, **kwargs):
        if self.totals is not None and event in self.EVENTS:
            key = self.EVENTS[event]
            self.totals[key] += duration
            if key == "xla":
                self.totals["n_xla"] += 1
                self.totals["xla_by_fun"].append((kwargs.get("fun_name", "?"), duration))

    def __enter__(self):
        self.totals = {"trace": 0.0, "lower": 0.0, "xla": 0.0, "n_xla": 0, "xla_by_fun": []}
        return self

    def __exit__(self, *exc):
        self.result, self.totals = self.totals, None

    @property
    def compile_seconds(self):
        return self.result["trace"] + self.result["lower"] + self.result["xla"]


# --------------------------------------------------------------------------- (a) accuracy

def table_a(args):
    import jax
    import jax.numpy as jnp
    from _grid_search import optimise_grid

    import pp_diffusion as ppd
    from pp_diffusion import schedules
    from pp_diffusion.integrators import ddim, ddpm, deis, dpm_solver_pp, edm_heun, integrate, lambda_ddim, unipc
    from pp_diffusion.metrics import sliced_wasserstein

    schedule = schedules.ddpm_linear()
    alpha_1, sigma_1 = float(schedule.alpha(1.0)), float(schedule.sigma(1.0))
    s_1 = sigma_1 / alpha_1
    n = args.samples
    # (name, factory(nfe) -> (integrator, steps), deterministic): every row spends at most NFE
    # network evaluations per sample; EDM Heun takes ceil(NFE / 2) steps (2 N - 1 evaluations).
    fixed = lambda make: (lambda nfe: (make(nfe), nfe))
    integrators = [
        ("DDIM", fixed(lambda n: ddim(0.0)), True),
        ("DPM-Solver++(2M)", fixed(lambda n: dpm_solver_pp(2, steps=n)), True),
        ("DPM-Solver++(3M) [default: reference, lower-order final]", fixed(lambda n: dpm_solver_pp(3, steps=n)), True),
        ("DPM-Solver++(3M) reference, no lower-order final",
         fixed(lambda n: dpm_solver_pp(3, third_order="reference", lower_order_final=False)), True),
        ("DPM-Solver++(3M) taylor (2 phi_3), lower-order final",
         fixed(lambda n: dpm_solver_pp(3, third_order="taylor", steps=n)), True),
        ("DPM-Solver++(3M) taylor, no lower-order final",
         fixed(lambda n: dpm_solver_pp(3, third_order="taylor", lower_order_final=False)), True),
        ("UniPC-2", fixed(lambda n: unipc(2, steps=n)), True),
        ("UniPC-3 [default: lower-order final]", fixed(lambda n: unipc(3, steps=n)), True),
        ("UniPC-3, no lower-order final", fixed(lambda n: unipc(3, lower_order_final=False)), True),
        *[(f"lambda-DDIM(lam={lam:g})", fixed(lambda n, lam=lam: lambda_ddim(lam)), True) for lam in LAMBDAS],
        ("lambda-DDIM-2 (lam=0)", fixed(lambda n: lambda_ddim(0.0, order=2)), True),
        ("lambda-DDIM-3 (lam=0)", fixed(lambda n: lambda_ddim(0.0, order=3)), True),
        ("EDM Heun (ceil(NFE/2) steps)", lambda n: (edm_heun(), (n + 1) // 2), True),
        ("DEIS-2 (tAB)", fixed(lambda n: deis(2)), True),
        ("DEIS-3 (tAB)", fixed(lambda n: deis(3)), True),
        ("DDPM", fixed(lambda n: ddpm()), False),
        ("SDE-DPM-Solver++(2M)", fixed(lambda n: ddim(1.0, order=2)), False),
    ]
    key = jax.random.key(args.seed)
    k_noise, k_chain, k_exact1, k_exact2, k_dirs = jax.random.split(key, 5)

    # --optimised-grids: a separate training draw of x_T (its own key, so independent of the evaluation draw)
    grid_nfes = [k for k in args.nfe if k in args.grid_nfe] if args.optimised_grids else []
    n_train = args.grid_train_samples or n
    k_train = jax.random.fold_in(key, 1)

    problems, x_T_by_d = {}, {}
    for d in args.dims:
        g = ppd.GaussianMixture(np.ones(25), mixture_means(d))
        model = g.diffusion_model(schedule, "eps")
        x_T = ppd.DiffusionPrior(model, steps=10).initial_noise(k_noise, n)  # N(0, sigma_1^2 I), float32
        problems[d] = (g, model, x_T)
        x_T_by_d[d] = x_T
        if grid_nfes:
            x_T_by_d[f"{d}-train"] = ppd.DiffusionPrior(model, steps=10).initial_noise(k_train, n_train)

    print(f"Solving the exact probability-flow ODE (diffrax Dopri8, float64) for d = {args.dims}"
          + (" (evaluation and training draws)" if grid_nfes else "") + " ...", flush=True)
    t0 = time.perf_counter()
    refs = exact_ode_endpoints(x_T_by_d, alpha_1, s_1)
    ref_secs = time.perf_counter() - t0

    print()
    print("=" * 100)
    print("(a) Integrator accuracy on the exact 25-component Gaussian mixture")
    print("=" * 100)
    print(f"    schedule: ddpm_linear() (1000 steps, beta 1e-4..0.02; t = 1 is step 999: alpha_1 = {alpha_1:.5g}, "
          f"sigma_1 = {sigma_1:.6f}, sigma_1/alpha_1 = {s_1:.2f});")
    print("    model: the mixture's exact eps prediction; grid: uniform in t (schedules.uniform_t);")
    print(f"    {n} samples, the same x_T ~ N(0, sigma_1^2 I) for every integrator and NFE (float32).")
    print("    RMSE = sqrt(mean over samples and coordinates of (x_0 - x_0^ODE)^2), x_0^ODE the exact")
    print("      probability-flow ODE endpoint from the same x_T: diffrax Dopri8 in float64, u = x/alpha,")
    print("      s = sigma/alpha, du/ds = -s * score(u; s) from s = sigma_1/alpha_1 to 0, rtol = atol = 1e-10.")
    print(f"    SW1 = sliced 1-Wasserstein distance (1,000 directions) to {n} exact mixture samples;")
    print("      floor = SW1 between two independent exact sample sets of the same size.")
    print("    DDPM and SDE-DPM-Solver++(2M) (integrators.ddim(1.0, order=2)) are stochastic: SW1 only.")
    print("    NFE = number of network evaluations per sample (= steps; EDM Heun: 2 N - 1 in N = ceil(NFE/2) steps).")
    print("    DPM-Solver++ and UniPC rows are built with steps=NFE, so lower_order_final applies (as in the peer).")
    print("    Row 'exact ODE endpoint from x_T': SW1 of the reference endpoints themselves, the best any ODE")
    print("      integrator can reach from x_T ~ N(0, sigma_1^2 I), which is only approximately p_1 (alpha_1 > 0).")
    print(f"    (reference ODE, both dimensions, including process start-up and compilation: {ref_secs:.1f} s)")
    if grid_nfes:
        print("    Rows '..., optimised grid' (--optimised-grids): the grid's steps - 1 interior times (endpoints fixed at")
        print("      t = 1 and t = 0, as the default grid) are t_k = 1 - (w_1 + ... + w_k), w = softmax(theta), fitted by")
        print(f"      optax Adam (lr {args.grid_lr:g}, cosine decay, {args.grid_iterations} iterations, minibatches of "
              f"{args.grid_batch}, float32) through")
        print("      integrate(...) to minimise the MSE to the exact ODE endpoints of a SEPARATE training draw of "
              f"{n_train} x_T")
        print("      (its own key and reference solve), from the uniform-t grid (theta = 0); the grid with the lowest")
        print("      full training MSE (checked every 25 iterations) is then held fixed and run on the evaluation draw.")

    dirs_key = k_dirs
    for d in args.dims:
        g, model, x_T = problems[d]
        ref, check, info = refs[d]
        exact1 = g.sample(k_exact1, n)
        exact2 = g.sample(k_exact2, n)
        floor = float(sliced_wasserstein(dirs_key, exact1, exact2, 1000))
        ref_err = float(np.sqrt(np.mean((ref - check) ** 2)))
        keys = jax.random.split(k_chain, n)
        rmse, rmse_se, switched, sw = {}, {}, {}, {}
        means = np.asarray(g.means, np.float64)
        nearest = lambda x: np.argmin(((x[:, None, :] - means[None]) ** 2).sum(-1), axis=1)
        ref_comp = nearest(ref)
        t_d = time.perf_counter()
        per_sample_err, switched_err = {}, {}
        def record(name, nfe, x0, deterministic=True):
            """The row's figures at this NFE: RMSE (with its standard error), basin changes, sliced W1."""
            if deterministic:
                per_sample = np.mean((x0 - ref) ** 2, axis=1)
                per_sample_err[name, nfe] = per_sample
                rmse[name, nfe] = float(np.sqrt(per_sample.mean()))
                # standard error of the RMSE over the n samples (delta method)
                rmse_se[name, nfe] = float(per_sample.std() / np.sqrt(n) / (2 * max(rmse[name, nfe], 1e-30)))
                moved = nearest(x0) != ref_comp
                switched[name, nfe] = 100.0 * float(np.mean(moved))
                switched_err[name, nfe] = float(per_sample[moved].sum())
            sw[name, nfe] = float(sliced_wasserstein(dirs_key, jnp.asarray(x0, jnp.float32), exact1, 1000))

        for name, factory, deterministic in integrators:
            for nfe in args.nfe:
                integ, steps = factory(nfe)
                times = schedules.as_grid(schedule, steps, schedules.uniform_t)
                run = jax.jit(jax.vmap(lambda k, x, integ=integ, times=times: integrate(k, integ, model, x, times)[0]))
                record(name, nfe, np.asarray(run(keys, x_T), dtype=np.float64), deterministic)
        t_d = time.perf_counter() - t_d
        # --optimised-grids: fit a grid per (integrator, NFE) on the training draw, then evaluate it here.
        opt_names, opt_grids, t_grid = [], {}, time.perf_counter()
        if grid_nfes:
            x_tr, (ref_tr, _, _) = x_T_by_d[f"{d}-train"], refs[f"{d}-train"]
            factories = {nm: f for nm, f, _ in integrators}
            for short in args.grid_integrators:
                base_name, label = GRID_INTEGRATORS[short]
                oname = f"{label}, optimised grid"
                opt_names.append(oname)
                for nfe in grid_nfes:
                    integ, steps = factories[base_name](nfe)
                    times, ginfo = optimise_grid(integ, model, x_tr, ref_tr, steps, iterations=args.grid_iterations,
                                                 learning_rate=args.grid_lr, batch=args.grid_batch, seed=args.seed)
                    opt_grids[oname, nfe] = (times, ginfo)
                    tt = jnp.asarray(times)
                    run = jax.jit(jax.vmap(lambda k, x, integ=integ, tt=tt: integrate(k, integ, model, x, tt)[0]))
                    record(oname, nfe, np.asarray(run(keys, x_T), dtype=np.float64))
        t_grid = time.perf_counter() - t_grid
        sw_ref = float(sliced_wasserstein(dirs_key, jnp.asarray(ref, jnp.float32), exact1, 1000))
        # Sanity check that the reference solves the ODE the integrators discretise: converge at many steps.
        times = schedules.as_grid(schedule, args.check_nfe, schedules.uniform_t)
        run = jax.jit(jax.vmap(lambda k, x: integrate(k, dpm_solver_pp(2), model, x, times)[0]))
        conv = float(np.sqrt(np.mean((np.asarray(run(keys, x_T), np.float64) - ref) ** 2)))

        print()
        print(f"--- d = {d}: reference ODE {int(info[0])} Dopri8 steps; its RMSE to a second solve at "
              f"rtol = atol = 1e-8 ({int(info[2])} steps): {ref_err:.1e}; "
              f"RMS of x_0^ODE per coordinate {np.sqrt(np.mean(ref ** 2)):.2f}")
        print(f"    convergence check: DPM-Solver++(2M) with NFE {args.check_nfe} is at RMSE {conv:.1e} from it")
        print()
        print(f"RMSE to the exact ODE endpoint, d = {d} (lower is better)")
        header = ["integrator"] + [f"NFE {k}" for k in args.nfe]
        cell = lambda key: f"{rmse[key]:.4f} ±{rmse_se[key]:.3f}" if key in rmse else "-"
        rows = [[name] + [cell((name, k)) for k in args.nfe] for name, _, det in integrators if det]
        lam_names = [f"lambda-DDIM(lam={lam:g})" for lam in LAMBDAS]
        best = {k: min(lam_names, key=lambda nm: rmse[nm, k]) for k in args.nfe}
        rows.append(["lambda-DDIM, best lam per NFE (selected on this draw)"]
                    + [f"{cell((best[k], k))} (lam={best[k].split('=')[1][:-1]})" for k in args.nfe])
        rows += [[oname] + [cell((oname, k)) for k in args.nfe] for oname in opt_names]
        peer = peer_runs(model, schedule, x_T, args.nfe)
        if peer is None:
            print(f"[peer rows skipped: diffusers (with torch) is not importable; install the extra with {PEER_INSTALL}]")
        else:
            version, peer_x0 = peer
            for pname in peer_x0:
                for k in args.nfe:
                    per_sample = np.mean((peer_x0[pname][k] - ref) ** 2, axis=1)
                    key_p = (f"peer: diffusers {version} {pname}", k)
                    per_sample_err[key_p] = per_sample
                    rmse[key_p] = float(np.sqrt(per_sample.mean()))
                    rmse_se[key_p] = float(per_sample.std() / np.sqrt(n) / (2 * max(rmse[key_p], 1e-30)))
                rows.append([f"peer: diffusers {version} {pname} (same x_T)"]
                            + [cell((f"peer: diffusers {version} {pname}", k)) for k in args.nfe])
        print_table(header, rows)
        print("(± one standard error over the samples (delta method). The best-lam row is selected on this same")
        print(" draw, so it is optimistically biased by up to about one standard error.)")
        if opt_names:
            print()
            print(f"Optimised grids, d = {d} (fitted on the training draw of {n_train}; times from t = 1 to 0; training "
                  "MSE of the uniform-t grid -> the fitted grid; fit wall time incl. compilation):")
            for (oname, k), (times, ginfo) in opt_grids.items():
                print(f"    {oname}, NFE {k}: [{', '.join(f'{t:.4f}' for t in times)}]")
                print(f"        training MSE {ginfo['loss_default']:.4f} -> {ginfo['loss_best']:.4f} (iteration "
                      f"{ginfo['best_iteration']}), {ginfo['seconds']:.1f} s"
                      + (f"; {ginfo['nonfinite_gradients']} iterations with non-finite gradients (zeroed)"
                         if ginfo["nonfinite_gradients"] else ""))
            print(f"    (all grid fits and their evaluation runs, d = {d}: {t_grid:.1f} s)")
        if d == 64 or opt_names:
            print()
            print(f"Goal (stated for d = 64; RMSE <= 2.0 at NFE 5, <= 0.45 at NFE 10, <= 0.18 at NFE 20), d = {d}, "
                  "same draw, best row:")
            fixed_names = {nm for nm, _, dt in integrators if dt}
            for k, target in GOAL.items():
                if k not in args.nfe:
                    continue
                parts = []
                for label, names in [("fixed grid", fixed_names), ("optimised grid", set(opt_names))]:
                    cands = [key for key in rmse if key[0] in names and key[1] == k]
                    if cands:
                        name_k = min(cands, key=lambda key: rmse[key])[0]
                        parts.append((rmse[name_k, k], f"{label}: {name_k} {cell((name_k, k))}"))
                verdict = "met" if min(r for r, _ in parts) <= target else "NOT met"
                print(f"    NFE {k} (target {target}): " + "; ".join(p for _, p in parts) + f" -> {verdict}")
        print()
        print(f"Where the squared error sits, d = {d}: share of the total squared error carried by the worst 1% and")
        print("5% of samples, and by the samples that end nearest another component than their exact endpoint")
        rows = []
        for name in ["DDIM", "DPM-Solver++(2M)", "DPM-Solver++(3M) [default: reference, lower-order final]",
                     "UniPC-2", "UniPC-3 [default: lower-order final]", *opt_names]:
            cells = []
            for k in args.nfe:
                if (name, k) not in per_sample_err:
                    cells.append("-")
                    continue
                e = np.sort(per_sample_err[name, k])[::-1]
                tot = max(e.sum(), 1e-30)
                cells.append(f"{100 * e[: max(1, n // 100)].sum() / tot:.0f}/{100 * e[: max(1, n // 20)].sum() / tot:.0f}"
                             f"/{100 * switched_err[name, k] / tot:.0f}")
            rows.append([name] + cells)
        print_table(header, rows)
        print("(cells: worst-1% / worst-5% / switched-component samples, % of the squared error)")
        print()
        print(f"Median over samples of the per-sample RMS error (sqrt of the mean over coordinates), d = {d}")
        rows = [[name] + [f"{np.sqrt(np.median(per_sample_err[name, k])):.4f}" for k in args.nfe]
                for name, _, det in integrators if det and ("3M" in name or "UniPC" in name)]
        print_table(header, rows)
        print()
        print(f"Samples ending nearest a different mixture component than their exact ODE endpoint, d = {d} (%)")
        rows = [[name] + [f"{switched[name, k]:.2f}" for k in args.nfe] for name, _, det in integrators if det]
        rows += [[oname] + [f"{switched[oname, k]:.2f}" if (oname, k) in switched else "-" for k in args.nfe]
                 for oname in opt_names]
        print_table(header, rows)
        print("(Such a sample is off by about |mu_i - mu_j|^2 / d >= 32 in squared error per coordinate, so these few")
        print(" samples near the basin boundaries make up most of the RMSE, and most of its sampling noise.)")
        print()
        print(f"Sliced W1 to exact mixture samples, d = {d} (exact-vs-exact floor at n = {n}: {floor:.4f})")
        rows = [[name] + [f"{sw[name, k]:.4f}" for k in args.nfe] for name, _, _ in integrators]
        rows += [[oname] + [f"{sw[oname, k]:.4f}" if (oname, k) in sw else "-" for k in args.nfe] for oname in opt_names]
        rows.append(["exact ODE endpoint from x_T"] + [f"{sw_ref:.4f}" for _ in args.nfe])
        rows.append(["exact vs exact (floor)"] + [f"{floor:.4f}" for _ in args.nfe])
        print_table(header, rows)
        print(f"(d = {d}: {len(integrators) * len(args.nfe) + 1} fixed-grid integrator runs incl. compilation, {t_d:.1f} s"
              + (f"; optimised grids: {len(opt_grids)} fits + runs, {t_grid:.1f} s" if opt_grids else "") + ")")


def peer_runs(model, schedule, x_T, nfes):
    """diffusers' DPMSolverMultistepScheduler (2M, 3M) and UniPCMultistepScheduler (UniPC-2) from the
    same x_T, with the mixture's exact eps as the "model", on the same discrete DDPM schedule
    (1000 steps, linear betas 1e-4..0.02) and the same time steps (t = 1 - k / NFE; the library's
    t = (n + 1) / 1000 for discrete step n, so steps 999, 999 - 1000 / NFE, ..., which is diffusers'
    "trailing" spacing), into clean data (final_sigmas_type="zero").
    Returns ``(version, {name: {nfe: x_0 (n, d) float64}})``, or None when diffusers or torch is
    not importable."""
    try:
        import diffusers
        import torch
    except ImportError:
        return None
    import jax

    eps = jax.jit(jax.vmap(model.eps, in_axes=(0, None)))
    n_train = 1000

    def make(kind, order):
        common = dict(num_train_timesteps=n_train, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                      prediction_type="epsilon", solver_order=order, timestep_spacing="trailing",
                      final_sigmas_type="zero", lower_order_final=True)
        if kind == "dpm":
            return diffusers.DPMSolverMultistepScheduler(algorithm_type="dpmsolver++", solver_type="midpoint", **common)
        return diffusers.UniPCMultistepScheduler(predict_x0=True, solver_type="bh2", **common)

    out = {}
    for pname, kind, order in [("DPM-Solver++(2M)", "dpm", 2), ("DPM-Solver++(3M)", "dpm", 3),
                               ("UniPC-2", "unipc", 2), ("UniPC-3", "unipc", 3)]:
        out[pname] = {}
        for nfe in nfes:
            sched = make(kind, order)
            sched.set_timesteps(nfe)
            x = torch.from_numpy(np.array(x_T, np.float32))
            for ts in sched.timesteps:
                t_cont = (float(ts) + 1.0) / n_train  # the library's t for discrete step ts
                e = torch.from_numpy(np.asarray(eps(jax.numpy.asarray(x.numpy()), t_cont), np.float32))
                x = sched.step(e, ts, x).prev_sample
            out[pname][nfe] = x.numpy().astype(np.float64)
    return diffusers.__version__, out


# --------------------------------------------------------------------------- (b), (c) overhead and compile

def setup_program(steps, d=64):
    import numpyro

    import pp_diffusion as ppd
    from pp_diffusion import schedules

    g = ppd.GaussianMixture(np.ones(25), mixture_means(d))
    model = g.diffusion_model(schedules.ddpm_linear(), "eps")
    prior = ppd.DiffusionPrior(model, steps=steps)  # default: DDPM chain (eta = 1), uniform-t grid

    def program():
        numpyro.sample("x", prior)

    return g, model, prior, program


def infer_jitted_run(program, sampler, key, num_chains=1):
    """The jitted function ``pp_diffusion.infer`` builds and calls, rebuilt here once so that it can be
    timed in steady state (infer itself makes a new one, and so recompiles, on every call)."""
    import jax

    from pp_diffusion.program import inspect_program

    info = inspect_program(program, {})
    keys = jax.random.split(key, num_chains)
    if hasattr(sampler, "setup"):  # Sampler.setup(program, info, data) -> context; run(key, context)
        context = sampler.setup(program, info, {})
        one = lambda k: sampler.run(k, context)
    else:  # the earlier interface: run(key, program, info, data)
        one = lambda k: sampler.run(k, program, info, {})
    run_all = jax.jit(lambda keys: jax.vmap(one)(keys))
    return run_all, keys


def handwritten_ddpm(model, steps, n):
    """An independent baseline: DDPM (DDIM with eta = 1) on a uniform-t grid, written directly with
    ``model.denoise``: x_T ~ N(0, sigma_1^2 I), then for each step t -> s
    x_s = alpha_s x0 + sqrt(sigma_s^2 - c^2) eps + c z,  c = sigma_s/sigma_t sqrt(sigma_t^2 - (alpha_t/alpha_s)^2 sigma_s^2)."""
    import jax
    import jax.numpy as jnp

    sched = model.schedule
    d = model.event_shape
    times = jnp.linspace(1.0, 0.0, steps + 1)
    denoise = jax.vmap(model.denoise, in_axes=(0, None))

    def body(x, inputs):
        key, t, s = inputs
        a_t, s_t, a_s, s_s = sched.alpha(t), sched.sigma(t), sched.alpha(s), sched.sigma(s)
        x0 = denoise(x, t)
        eps = (x - a_t * x0) / s_t
        c = s_s / s_t * jnp.sqrt(jnp.maximum(s_t**2 - (a_t / a_s) ** 2 * s_s**2, 0.0))
        mean = a_s * x0 + jnp.sqrt(jnp.maximum(s_s**2 - c**2, 0.0)) * eps
        return mean + c * jax.random.normal(key, x.shape, x.dtype), None

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        x = sched.sigma(1.0) * jax.random.normal(k0, (n, *d))
        x, _ = jax.lax.scan(body, x, (jax.random.split(k1, steps), times[:-1], times[1:]))
        return x

    return run


def table_b(args, monitor):
    import jax
    import numpyro

    import pp_diffusion as ppd
    from pp_diffusion.metrics import sliced_wasserstein

    n, steps, reps = args.overhead_samples, 100, args.repeats
    g, model, prior, program = setup_program(steps)
    sampler = ppd.iid(n)

    # 1. infer() end to end, called repeatedly with the same program and sampler.
    call_times, call_compiles = [], []
    for i in range(args.infer_calls):
        with monitor:
            t0 = time.perf_counter()
            idata = ppd.infer(program, sampler, jax.random.key(i))
            call_times.append(time.perf_counter() - t0)
        call_compiles.append(monitor.result)
    x_infer = np.asarray(idata.prior["x"]).reshape(n, -1)

    # 2. infer's jitted run in steady state.
    run_all, keys = infer_jitted_run(program, sampler, jax.random.key(0))
    with monitor:
        t0 = time.perf_counter()
        jax.block_until_ready(run_all(keys))
        first_infer = time.perf_counter() - t0
    infer_first_compile = monitor.compile_seconds

    # 3. the hand-written baseline.
    base = handwritten_ddpm(model, steps, n)
    with monitor:
        t0 = time.perf_counter()
        x_base = np.asarray(base(jax.random.key(0)))
        first_base = time.perf_counter() - t0
    base_first_compile = monitor.compile_seconds

    # 4. steady state: the two compiled runs timed alternately, so that load from other processes
    # hits both alike; wall and process CPU time (the latter is less sensitive to that load).
    def once(fn):
        w0, c0 = time.perf_counter(), time.process_time()
        jax.block_until_ready(fn())
        return time.perf_counter() - w0, time.process_time() - c0

    wall_i, wall_b, cpu_i, cpu_b = [], [], [], []
    with monitor:
        for _ in range(reps):
            w, c = once(lambda: base(jax.random.key(0)))
            wall_b.append(w)
            cpu_b.append(c)
            w, c = once(lambda: run_all(keys))
            wall_i.append(w)
            cpu_i.append(c)
    infer_recompiles = monitor.result["n_xla"]
    med = statistics.median
    t_infer, t_base = med(wall_i), med(wall_b)

    exact = g.sample(jax.random.key(123), n)
    exact2 = g.sample(jax.random.key(124), n)
    kd = jax.random.key(7)
    sw_infer = float(sliced_wasserstein(kd, x_infer, exact, 1000))
    sw_base = float(sliced_wasserstein(kd, x_base, exact, 1000))
    sw_floor = float(sliced_wasserstein(kd, exact2, exact, 1000))

    # 5. does a DiffusionPrior built inside the program (as users write it) work under infer?
    def program_inside():
        numpyro.sample("x", ppd.DiffusionPrior(model, steps=steps))

    try:
        ppd.infer(program_inside, ppd.iid(2), jax.random.key(0))
        inside = "works"
    except Exception as err:  # noqa: BLE001 - reported, not raised
        inside = f"FAILS with {type(err).__name__}: {str(err).splitlines()[0][:110]}"

    ratio = t_infer / t_base
    print()
    print("=" * 100)
    print("(b) Framework overhead: pp_diffusion.infer vs a hand-written jitted lax.scan")
    print("=" * 100)
    print(f"    program: x = numpyro.sample('x', DiffusionPrior(model, steps={steps})) (default DDPM chain, eta = 1,")
    print(f"    uniform-t grid), model = exact eps prediction of the d = 64 mixture; pp_diffusion.iid({n}), 1 chain.")
    print("    baseline: jax.jit of x_T ~ N(0, sigma_1^2 I) then lax.scan over the same 100 DDPM transitions on the")
    print("    (n, 64) batch, written with vmap(model.denoise) and the DDIM eta = 1 formulas (no pp_diffusion")
    print(f"    integrator code). Steady state: {reps} calls of each compiled run after a warm-up call, the two")
    print("    alternating; 'seconds' is the median wall time, the notes give the fastest call and the median")
    print("    process CPU time (all threads), which other processes on the machine disturb less.")
    print()
    rows = [
        ["hand-written jit(scan + vmap), steady state", f"{t_base:.3f}", "1.00",
         f"fastest {min(wall_b):.3f} s, CPU {med(cpu_b):.3f} s; first call {first_base:.2f} s, "
         f"of which compile {base_first_compile:.2f} s"],
        ["infer's jitted run (rebuilt once), steady state", f"{t_infer:.3f}", f"{ratio:.2f}",
         f"fastest {min(wall_i):.3f} s, CPU {med(cpu_i):.3f} s; first call {first_infer:.2f} s, "
         f"of which compile {infer_first_compile:.2f} s; {infer_recompiles} recompiles in the timed calls"],
    ]
    for i, (t, c) in enumerate(zip(call_times, call_compiles)):
        rows.append([f"pp_diffusion.infer(...) call {i + 1}, end to end", f"{t:.3f}", f"{t / t_base:.2f}",
                     f"compile inside it {c['trace'] + c['lower'] + c['xla']:.2f} s "
                     f"(trace {c['trace']:.2f}, lower {c['lower']:.2f}, XLA {c['xla']:.2f}; {c['n_xla']} XLA compiles)"])
    print_table(["run", "seconds", "ratio to baseline", "notes"], rows)
    print()
    verdict = "meets" if ratio <= 1.10 else "MISSES"
    print(f"Steady-state ratio infer-run / hand-written = {ratio:.3f} on median wall time (target <= 1.10: "
          f"{verdict}); {min(wall_i) / min(wall_b):.3f} on the fastest calls, {med(cpu_i) / med(cpu_b):.3f} on "
          "median CPU time.")
    later = call_compiles[1:]
    if later and all(c["n_xla"] > 0 for c in later):
        t_later = call_times[1:]
        span = (f"{t_later[0]:.2f} s" if len(t_later) == 1 else f"{min(t_later):.2f}-{max(t_later):.2f} s")
        print(f"But infer() recompiles on every call: repeated calls with the same program and sampler still take "
              f"{span} ({min(t_later) / t_base:.0f}x or more the baseline's steady state), almost all of it compilation.")
        print("XLA compilations inside the last infer() call (JAX's fun_name, seconds): "
              + ", ".join(f"{f} {s:.2f}" for f, s in later[-1]["xla_by_fun"]))
    elif later:
        print("Repeated infer() calls do not recompile.")
    print(f"Check that both compute the same distribution: SW1 to {n} exact samples, infer {sw_infer:.4f}, "
          f"hand-written {sw_base:.4f}, exact-vs-exact floor {sw_floor:.4f}.")
    print(f"DiffusionPrior constructed inside the program body under infer: {inside}")
    print("(so the program above builds its DiffusionPrior once, outside the program body, as in DESIGN.md.)")


def table_c(args, monitor):
    import jax

    import pp_diffusion as ppd

    n = args.overhead_samples
    rows = []
    for steps in args.compile_steps:
        g, model, prior, program = setup_program(steps)
        sampler = ppd.iid(n)
        # The jitted run alone: explicit trace + lower, then XLA compile.
        run_all, keys = infer_jitted_run(program, sampler, jax.random.key(0))
        t0 = time.perf_counter()
        lowered = run_all.lower(keys)
        t_lower = time.perf_counter() - t0
        t0 = time.perf_counter()
        compiled = lowered.compile()
        t_xla = time.perf_counter() - t0
        t_run = min(timed(lambda: compiled(keys), 2)[1])
        # A whole first infer() call with this program.
        with monitor:
            t0 = time.perf_counter()
            ppd.infer(program, sampler, jax.random.key(1))
            t_call = time.perf_counter() - t0
        c = monitor.result
        # The hand-written baseline's compile, for comparison.
        base = handwritten_ddpm(model, steps, n)
        t0 = time.perf_counter()
        base.lower(jax.random.key(0)).compile()
        t_base = time.perf_counter() - t0
        rows.append([
            str(steps), f"{t_lower:.2f}", f"{t_xla:.2f}", f"{t_lower + t_xla:.2f}",
            f"{c['trace'] + c['lower'] + c['xla']:.2f} ({c['n_xla']} XLA)", f"{t_call:.2f}", f"{t_run:.3f}", f"{t_base:.2f}",
        ])
    print()
    print("=" * 100)
    print("(c) Compile time of the sampling run (d = 64 mixture, DDPM chain, iid(%d), 1 chain)" % n)
    print("=" * 100)
    print("    trace+lower / XLA: infer's jitted run, traced and lowered (jit(...).lower) then compiled (.compile());")
    print("    compile in infer(): JAX's own compile-time events (trace + lower + XLA) during one infer() call;")
    print("      (it includes the compile of the chain that inspect_program runs eagerly, see (b));")
    print("    run: steady-state run of the compiled function; baseline: trace+lower+compile of the hand-written scan.")
    print()
    print_table(["steps", "trace+lower s", "XLA compile s", "total s", "compile in infer() s",
                 "infer() call s", "run s", "baseline compile s"], rows)
    totals = [float(r[3]) for r in rows]
    growth = totals[-1] / totals[0] if totals[0] > 0 else float("nan")
    ok = max(totals) < 10 and growth < 1.5
    print()
    print(f"Compile time grows by a factor {growth:.2f} from {args.compile_steps[0]} to {args.compile_steps[-1]} steps; "
          f"max {max(totals):.2f} s (target: no growth with steps, under 10 s: {'meets' if ok else 'MISSES'}).")


# --------------------------------------------------------------------------- main

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", type=int, default=2000, help="samples for table (a) (default 2000)")
    parser.add_argument("--nfe", type=int, nargs="+", default=[5, 10, 20, 50], help="NFE values for table (a)")
    parser.add_argument("--dims", type=int, nargs="+", default=[2, 64], help="dimensions for table (a)")
    parser.add_argument("--overhead-samples", type=int, default=1000, help="samples for tables (b), (c) (default 1000)")
    parser.add_argument("--compile-steps", type=int, nargs="+", default=[100, 1000], help="steps for table (c)")
    parser.add_argument("--repeats", type=int, default=20, help="timed repeats for steady-state times (default 20)")
    parser.add_argument("--infer-calls", type=int, default=3, help="end-to-end infer() calls timed in (b)")
    parser.add_argument("--check-nfe", type=int, default=250,
                        help="NFE of the DPM-Solver++(2M) convergence check against the reference in (a)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--optimised-grids", action="store_true",
                        help="table (a): also fit a time grid per integrator and NFE (Adam through integrate on a "
                             "separate training draw, benchmarks/_grid_search.py) and evaluate it held fixed; off by "
                             "default: it adds about 5-6 minutes to the full run on 2 CPU cores")
    parser.add_argument("--grid-integrators", nargs="+", default=["unipc2", "unipc3", "dpm2m"],
                        choices=sorted(GRID_INTEGRATORS), help="integrators given optimised grids (default: unipc2 "
                        "unipc3 dpm2m)")
    parser.add_argument("--grid-nfe", type=int, nargs="+", default=[5, 10, 20],
                        help="NFE values (of --nfe) given optimised grids (default 5 10 20)")
    parser.add_argument("--grid-train-samples", type=int, default=None,
                        help="size of the training draw for --optimised-grids (default: --samples)")
    parser.add_argument("--grid-iterations", type=int, default=150, help="Adam iterations per grid (default 150)")
    parser.add_argument("--grid-batch", type=int, default=256, help="minibatch per Adam iteration (default 256)")
    parser.add_argument("--grid-lr", type=float, default=0.05, help="Adam learning rate (default 0.05)")
    parser.add_argument("--tables", default="abcdef", help="which tables to print, e.g. 'a' or 'bc' (default abcdef)")
    add_options(parser)
    parser.add_argument("--quick", action="store_true",
                        help="smaller run: 500 samples, NFE 10 20, 6 repeats, 2 infer() calls; (d)-(f) 200 / 300 samples, NFE 10 20")
    parser.add_argument("--_reference", nargs=2, metavar=("IN", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args._reference:
        reference_main(*args._reference)
        return
    if args.quick:
        args.samples, args.nfe, args.repeats, args.infer_calls = 500, [10, 20], 6, 2
        args.aug_samples, args.aug_nfe, args.digits_samples, args.digits_nfe = 200, [10, 20], 300, [10, 20]

    import jax

    print("command: " + " ".join(shlex.quote(a) for a in [os.path.basename(sys.executable), *sys.argv]))
    print(f"jax {jax.__version__} on {jax.default_backend()} ({jax.device_count()} device(s), "
          f"{os.cpu_count()} CPU cores visible); float32 samplers; load average at start "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    t_start = time.perf_counter()
    monitor = CompileMonitor()
    if "a" in args.tables:
        table_a(args)
    if "b" in args.tables:
        table_b(args, monitor)
    if "c" in args.tables:
        table_c(args, monitor)
    if "d" in args.tables:
        table_d(args)
    if "e" in args.tables:
        table_e(args)
    if "f" in args.tables:
        table_f(args, infer_jitted_run)
    print()
    print(f"total wall time {time.perf_counter() - t_start:.0f} s; load average at end "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (timings are wall-clock: other processes on the "
          "machine inflate them)")


if __name__ == "__main__":
    main()
