"""The phase-space parts of ``benchmarks/integrators.py``: tables (d) augmented mixture, (e) digits
Frechet distance against NFE, (f) overhead and compile time of one conjugate and one splitting integrator.

(d) The exact augmented mixture (:class:`pp_diffusion.phase_space.AugmentedGaussianMixture`) of the
    25-component grid of table (a) scaled by 1/8 (means (i, j), i, j in -2..2, component standard
    deviation 1/8; in d = 64 the pair repeated), under PSLD (beta 8, Gamma 0.01, nu 4.01, initial
    momentum variance 0.04 M), from z_T ~ N(0, Sigma_inf) at t = 1 to t_min = 1e-3.
    Deterministic schemes: RMSE of x at t_min to the exact PF-ODE endpoint from the same z_T
    (diffrax Dopri8 in float64, rtol = atol = 1e-9), on the uniform grid and on the quadratic grid
    (``time_grid(steps, power=2)``). Stochastic schemes: sliced 1-Wasserstein distance of z_{t_min}
    to exact draws of the augmented marginal, with the exact-vs-exact floor.
(e) The digits: Frechet distance in the clean digits classifier's features (as
    ``models/digits/quality.py``) between draws and the 360 test images, against NFE, for the VP
    ``digits`` model with its best integrators and for ``digits_psld`` with the splitting and
    conjugate integrators (quadratic grid).
(f) Overhead: ``pp_diffusion.infer(program, iid(n))`` against a hand-written jitted ``lax.scan`` of the
    same updates for lambda-DDIM (VP, d = 64 mixture) and SSCS (augmented d = 64 mixture), and their
    compile time at 100 and 1,000 steps.
"""

from __future__ import annotations

import statistics
import time

import numpy as np

from _tables import print_table

T_MIN = 1e-3


def _scaled_means(d):
    ij = np.array([(i, j) for i in range(-2, 3) for j in range(-2, 3)], dtype=float)
    return np.tile(ij, (1, d // 2))


def augmented_problem(d):
    import pp_diffusion as ppd
    from pp_diffusion.phase_space import PSLD, AugmentedGaussianMixture

    sde = PSLD()
    mix = ppd.GaussianMixture(np.ones(25), _scaled_means(d), np.full(25, 1 / 64))
    return sde, mix, AugmentedGaussianMixture(mix, sde)


def reference_endpoints(aug_d, z_T, t_min=T_MIN):
    """The exact PF-ODE endpoints at t_min, float64 Dopri8 (x64 enabled only inside)."""
    import diffrax
    import jax
    import jax.numpy as jnp

    with jax.enable_x64(True):
        sde, mix, aug = augmented_problem(aug_d)
        F, Q = sde.drift_matrix(jnp.float64), sde.diffusion_gram(jnp.float64)

        def field(t, z, args):
            return jax.vmap(lambda y: jnp.tensordot(F, y, axes=1) - 0.5 * jnp.tensordot(Q, aug.score(y, t), axes=1))(z)

        sol = diffrax.diffeqsolve(diffrax.ODETerm(field), diffrax.Dopri8(), 1.0, t_min, -1e-2,
                                  jnp.asarray(z_T, jnp.float64),
                                  stepsize_controller=diffrax.PIDController(rtol=1e-9, atol=1e-9),
                                  max_steps=100_000)
        return np.asarray(sol.ys[-1])


def _run_batch(integrator, score, z_T, times, key):
    import jax

    from pp_diffusion.phase_space import integrate

    keys = jax.random.split(key, z_T.shape[0])
    return np.asarray(jax.jit(jax.vmap(lambda k, z: integrate(k, integrator, score, z, times)[0]))(keys, z_T))


def deterministic_schemes(sde):
    from pp_diffusion import phase_space as ps

    return [
        ("PF-ODE Euler", ps.pf_euler(sde)),
        ("naive symplectic Euler", ps.naive_symplectic_euler(sde)),
        ("reduced symplectic Euler", ps.reduced_symplectic_euler(sde)),
        ("naive velocity Verlet", ps.naive_velocity_verlet(sde)),
        ("reduced velocity Verlet", ps.reduced_velocity_verlet(sde)),
        ("Strang, Euler residual", ps.strang_euler(sde)),
        ("Strang, midpoint residual", ps.strang_midpoint(sde)),
        ("conjugate Euler, lam 0", ps.conjugate_euler(sde)),
        ("conjugate Euler, lam 0.5", ps.conjugate_euler(sde, 0.5)),
        ("conjugate Euler, lam -0.5", ps.conjugate_euler(sde, -0.5)),
        ("conjugate symplectic Euler (hybrid)", ps.conjugate_symplectic_euler(sde)),
    ]


def stochastic_schemes(sde):
    from pp_diffusion import phase_space as ps

    return [
        ("Euler-Maruyama", ps.euler_maruyama(sde)),
        ("SSCS", ps.sscs(sde)),
        ("OBA", ps.oba(sde)),
        ("reduced OBA", ps.reduced_oba(sde)),
        ("reduced OBA, position noise 0", ps.reduced_oba(sde, position_noise=0.0)),
        ("conjugate OBA (hybrid)", ps.conjugate_oba(sde)),
    ]


def _steps_for(integrator, nfe):
    return max(1, (nfe - integrator.first_step_extra_nfe) // integrator.nfe_per_step)


def table_d(args):
    import jax

    from pp_diffusion.metrics import sliced_wasserstein
    from pp_diffusion.phase_space import time_grid

    n, nfes = args.aug_samples, args.aug_nfe
    print()
    print("=" * 100)
    print("(d) Augmented (PSLD) exact mixture: splitting and conjugate integrators, t = 1 -> 1e-3")
    print("=" * 100)
    print("    25 components at (i, j), i, j in -2..2, std 1/8 (d = 64: the pair repeated); PSLD beta 8, Gamma 0.01,")
    print(f"    nu 4.01, m0 variance 0.04 M; {n} starting points z_T ~ N(0, Sigma_inf), the same for every row.")
    print("    Deterministic: RMSE of x(t_min) to the float64 Dopri8 PF-ODE endpoint (per sample sqrt(mean over d),")
    print("    then root mean over samples), uniform grid | quadratic grid time_grid(steps, power=2).")
    print("    Stochastic: SW1 (1000 directions) of z(t_min) to exact draws; floor = exact vs exact.")
    for d in args.aug_dims:
        sde, mix, aug = augmented_problem(d)
        z_T = jax.vmap(lambda k: sde.prior_sample(k, (d,)))(jax.random.split(jax.random.key(args.seed + d), n))
        t0 = time.perf_counter()
        ref = reference_endpoints(d, z_T)[:, 0]
        t_ref = time.perf_counter() - t0
        rows = []
        for name, integ in deterministic_schemes(sde):
            cells = [name]
            for nfe in nfes:
                steps = _steps_for(integ, nfe)
                errs = []
                for power in (1.0, 2.0):
                    x = _run_batch(integ, aug.score, z_T, time_grid(steps, t_min=T_MIN, power=power),
                                   jax.random.key(1))[:, 0]
                    per = np.sqrt(np.mean((x - ref) ** 2, axis=1))
                    errs.append(float(np.sqrt(np.mean(per**2))))
                cells.append(f"{errs[0]:.3f} | {errs[1]:.3f}")
            rows.append(cells)
        print()
        print(f"d = {d}: deterministic, RMSE uniform | quadratic grid (reference solve {t_ref:.0f} s)")
        print_table(["integrator"] + [f"NFE {k}" for k in nfes], rows)
        exact = np.asarray(aug.sample(jax.random.key(11), n, T_MIN)).reshape(n, -1)
        exact2 = np.asarray(aug.sample(jax.random.key(12), n, T_MIN)).reshape(n, -1)
        kd = jax.random.key(7)
        floor = float(sliced_wasserstein(kd, exact2, exact, 1000))
        rows = []
        for name, integ in stochastic_schemes(sde):
            cells = [name]
            for nfe in nfes:
                steps = _steps_for(integ, nfe)
                sw = []
                for power in (1.0, 2.0):
                    z = _run_batch(integ, aug.score, z_T, time_grid(steps, t_min=T_MIN, power=power),
                                   jax.random.key(2)).reshape(n, -1)
                    sw.append(float(sliced_wasserstein(kd, z, exact, 1000)))
                cells.append(f"{sw[0]:.3f} | {sw[1]:.3f}")
            rows.append(cells)
        print()
        print(f"d = {d}: stochastic, SW1 uniform | quadratic grid (floor {floor:.3f})")
        print_table(["integrator"] + [f"NFE {k}" for k in nfes], rows)


# --------------------------------------------------------------------------- (e) digits


def _features(classifier, x, chunk=512):
    import equinox as eqx
    import jax
    import jax.numpy as jnp

    fn = eqx.filter_jit(lambda net, x: jax.vmap(net.features)(x))
    return np.concatenate([np.asarray(fn(classifier, jnp.asarray(x[i:i + chunk]))) for i in range(0, len(x), chunk)])


def table_e(args):
    import jax

    import pp_diffusion as ppd
    from pp_diffusion import integrators as vi
    from pp_diffusion import phase_space as ps
    from pp_diffusion.metrics import frechet_distance

    n, nfes = args.digits_samples, args.digits_nfe
    data = ppd.zoo.digits_data()
    classifier = ppd.zoo.load_classifier("digits_classifier")
    f_test = _features(classifier, data.x_test)
    f_train = _features(classifier, data.x_train[:n])
    vp, psld = ppd.zoo.load("digits"), ppd.zoo.load("digits_psld")
    sde = psld.sde

    def vp_prior(nfe, kind):
        if kind == "DDPM (eta 1)":
            return ppd.DiffusionPrior(vp, steps=nfe, eta=1.0)
        if kind == "DDIM":
            return ppd.DiffusionPrior(vp, steps=nfe, eta=0.0)
        return ppd.DiffusionPrior(vp, steps=nfe, integrator={"UniPC-2": vi.unipc(2, steps=nfe)}[kind])

    rows_vp = ["DDPM (eta 1)", "DDIM", "UniPC-2"]
    psld_rows = [("SSCS", ps.sscs(sde)), ("Euler-Maruyama", ps.euler_maruyama(sde)),
                 ("conjugate OBA (hybrid)", ps.conjugate_oba(sde)),
                 ("reduced symplectic Euler", ps.reduced_symplectic_euler(sde)),
                 ("Strang, midpoint residual", ps.strang_midpoint(sde)),
                 ("conjugate Euler, lam 0", ps.conjugate_euler(sde)),
                 ("conjugate symplectic Euler (hybrid)", ps.conjugate_symplectic_euler(sde))]

    def fd_of(prior, seed):
        x = np.asarray(jax.jit(lambda k: prior.sample(k, (n,)))(jax.random.key(seed)))
        if not np.all(np.isfinite(x)):
            return float("nan")
        return float(frechet_distance(_features(classifier, np.clip(x, -1, 1)), f_test))

    t0 = time.perf_counter()
    print()
    print("=" * 100)
    print(f"(e) Digits: Frechet distance to the 360 test images (clean-classifier features) of {n} draws, against NFE")
    print("=" * 100)
    print("    VP rows: the digits zoo model on its default grid (t_start 0.95); PSLD rows: digits_psld on the")
    print("    quadratic grid time_grid(steps, power=2) from t = 1 to 1e-3. Draws clipped to [-1, 1] before the")
    print(f"    features. Reference: {n} training images score {frechet_distance(f_train, f_test):.2f}. One seed "
          f"({args.seed}); rows printed as they finish.")
    header = ["model: integrator"] + [f"NFE {k}" for k in nfes]
    print("  ".join(f"{h:>40}" if i == 0 else f"{h:>8}" for i, h in enumerate(header)), flush=True)

    def show(cells):
        print("  ".join(f"{c:>40}" if i == 0 else f"{c:>8}" for i, c in enumerate(cells)), flush=True)

    for kind in rows_vp:
        show([f"digits (VP): {kind}"] + [f"{fd_of(vp_prior(nfe, kind), args.seed):.2f}" for nfe in nfes])
    for name, integ in psld_rows:
        cells = [f"digits_psld: {name}"]
        for nfe in nfes:
            steps = _steps_for(integ, nfe)
            prior = ppd.DiffusionPrior(psld, steps=steps, integrator=integ,
                                       grid=ps.time_grid(steps, t_min=psld.t_min, power=2.0))
            cells.append(f"{fd_of(prior, args.seed):.2f}")
        show(cells)
    print(f"(table (e) took {time.perf_counter() - t0:.0f} s)")


# --------------------------------------------------------------------------- (f) overhead


def _timed_pair(fn_a, fn_b, reps):
    import jax

    wa, wb = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn_a())
        wa.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        jax.block_until_ready(fn_b())
        wb.append(time.perf_counter() - t0)
    return statistics.median(wa), statistics.median(wb)


def handwritten_lambda_ddim(model, lam, steps, n):
    """lambda-DDIM written directly: Phi increments precomputed on the host (scipy quad), then
    x_s = A_s^{-1}((1 + lam (s - t)) A_t x + dPhi eps), A_t = e^{lam t} / alpha_t."""
    import jax
    import jax.numpy as jnp
    from scipy.integrate import quad

    sched = model.schedule
    times = np.linspace(1.0, 0.0, steps + 1)
    a = lambda t: float(sched.alpha(t))
    r = lambda t: float(sched.sigma(t)) / a(t)
    dphi = []
    for t, s in zip(times[:-1], times[1:]):
        integral = quad(lambda u: np.exp(lam * u) * r(u), s, t)[0]
        dphi.append(np.exp(lam * s) * r(s) - np.exp(lam * t) * r(t) + lam * integral)
    A = np.array([np.exp(lam * t) / a(t) for t in times])
    consts = (jnp.asarray(times[:-1], jnp.float32), jnp.asarray(times[1:], jnp.float32),
              jnp.asarray(A[:-1], jnp.float32), jnp.asarray(A[1:], jnp.float32), jnp.asarray(dphi, jnp.float32))
    eps_fn = jax.vmap(model.eps, in_axes=(0, None))

    def body(x, c):
        t, s, A_t, A_s, dp = c
        return ((1 + lam * (s - t)) * A_t * x + dp * eps_fn(x, t)) / A_s, None

    @jax.jit
    def run(key):
        x = sched.sigma(1.0) * jax.random.normal(key, (n, *model.event_shape))
        return jax.lax.scan(body, x, consts)[0]

    return run


def handwritten_sscs(aug, steps, n):
    """SSCS written directly with the exact augmented score (the 2 x 2 OU factors precomputed)."""
    import jax
    import jax.numpy as jnp
    from scipy.linalg import expm

    sde = aug.sde
    inf = np.diag([1.0, sde.mass])
    F, Q = np.asarray(sde.drift_matrix()), np.asarray(sde.diffusion_gram())
    Ft = -(F + Q @ np.linalg.inv(inf))
    times = np.linspace(1.0, T_MIN, steps + 1)
    h = times[0] - times[1]
    E = expm(Ft * h / 2)
    L = np.linalg.cholesky(inf - E @ inf @ E.T)
    E, L, Qj, inv_diag = (jnp.asarray(v, jnp.float32) for v in (E, L, Q, np.array([1.0, 1.0 / sde.mass])))
    score = jax.vmap(aug.score, in_axes=(0, None))

    def body(z, c):
        key, t = c
        k0, k1 = jax.random.split(key)
        z = jnp.einsum("ij,njd->nid", E, z) + jnp.einsum("ij,njd->nid", L, jax.random.normal(k0, z.shape))
        r = score(z, t - h / 2) + z * inv_diag[None, :, None]
        z = z + h * jnp.einsum("ij,njd->nid", Qj, r)
        z = jnp.einsum("ij,njd->nid", E, z) + jnp.einsum("ij,njd->nid", L, jax.random.normal(k1, z.shape))
        return z, None

    @jax.jit
    def run(key):
        k0, k1 = jax.random.split(key)
        z = jax.vmap(lambda k: sde.prior_sample(k, (aug.dim,)))(jax.random.split(k0, n))
        return jax.lax.scan(body, z, (jax.random.split(k1, steps), jnp.asarray(times[:-1], jnp.float32)))[0][:, 0]

    return run


def table_f(args, infer_jitted_run):
    import jax
    import numpyro

    import pp_diffusion as ppd
    from pp_diffusion import schedules

    n, reps = args.overhead_samples, args.repeats
    lam = -0.2

    def vp_setup(steps):
        g = ppd.GaussianMixture(np.ones(25), _scaled_means(64) * 8.0)
        model = g.diffusion_model(schedules.ddpm_linear(), "eps")
        prior = ppd.DiffusionPrior(model, steps=steps, grid=np.linspace(1.0, 0.0, steps + 1),
                                   integrator=ppd.integrators.lambda_ddim(lam))
        return model, prior

    def aug_setup(steps):
        _, _, aug = augmented_problem(64)
        prior = ppd.DiffusionPrior(aug.model(t_min=T_MIN), steps=steps, integrator=ppd.phase_space.sscs(aug.sde))
        return aug, prior

    def program_of(prior):
        def program():
            numpyro.sample("x", prior)
        return program

    rows, compile_rows = [], []
    cases = [("lambda-DDIM (lam -0.2), VP d = 64 mixture", vp_setup,
              lambda m, steps: handwritten_lambda_ddim(m, lam, steps, n)),
             ("SSCS, augmented d = 64 mixture", aug_setup, lambda a, steps: handwritten_sscs(a, steps, n))]
    for label, setup, hand in cases:
        obj, prior = setup(100)
        run_all, keys = infer_jitted_run(program_of(prior), ppd.iid(n), jax.random.key(0))
        base = hand(obj, 100)
        jax.block_until_ready(run_all(keys))
        jax.block_until_ready(base(jax.random.key(0)))
        t_infer, t_base = _timed_pair(lambda: run_all(keys), lambda: base(jax.random.key(0)), reps)
        ratio = t_infer / t_base
        rows.append([label, f"{t_base:.3f}", f"{t_infer:.3f}", f"{ratio:.2f}", "meets" if ratio <= 1.10 else "MISSES"])
        for steps in args.compile_steps:
            _, prior = setup(steps)
            run_all, keys = infer_jitted_run(program_of(prior), ppd.iid(n), jax.random.key(0))
            t0 = time.perf_counter()
            lowered = run_all.lower(keys)
            t_lower = time.perf_counter() - t0
            t0 = time.perf_counter()
            lowered.compile()
            compile_rows.append([label, str(steps), f"{t_lower:.2f}", f"{time.perf_counter() - t0:.2f}"])
    print()
    print("=" * 100)
    print(f"(f) Overhead and compile time: a conjugate and a splitting integrator through infer(iid({n}))")
    print("=" * 100)
    print("    baseline: a hand-written jitted lax.scan of the same updates (lambda-DDIM with its Phi increments")
    print("    precomputed on the host by scipy quad; SSCS with its OU factors precomputed), same model, same n.")
    print(f"    Median wall time of {reps} alternating calls after a warm-up, 100 steps.")
    print_table(["integrator", "hand-written s", "infer run s", "ratio", "target <= 1.10"], rows)
    print()
    print_table(["integrator", "steps", "trace+lower s", "XLA compile s"], compile_rows)


def add_options(parser):
    """The command-line options of tables (d)-(f) (shared with ``benchmarks/integrators.py``)."""
    parser.add_argument("--aug-samples", type=int, default=1000, help="starting points for table (d)")
    parser.add_argument("--aug-nfe", type=int, nargs="+", default=[10, 20, 50, 100], help="NFE values for table (d)")
    parser.add_argument("--aug-dims", type=int, nargs="+", default=[2, 64], help="dimensions for table (d)")
    parser.add_argument("--digits-samples", type=int, default=500, help="draws per row of table (e)")
    parser.add_argument("--digits-nfe", type=int, nargs="+", default=[10, 20, 50, 100], help="NFE values for table (e)")

