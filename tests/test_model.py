"""DiffusionModel: the five parameterizations of the exact mixture agree with each other and with
the mixture's closed forms; energy gradients; a user network; constructor errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pp_diffusion import DiffusionModel, GaussianMixture
from pp_diffusion import parameterization as P
from pp_diffusion import schedules as S

KINDS = ["eps", "x0", "v", "score", "energy"]
SCHEDULES = {
    "vp_linear": S.VPLinear(),
    "ddpm_linear": S.ddpm_linear(),
    "ve": S.VE(),
    "rectified_flow": S.RectifiedFlow(),
}
TIMES = [0.05, 0.3, 0.7, 1.0]


@pytest.fixture(scope="module")
def mixture():
    rng = np.random.default_rng(0)
    covs = []
    for _ in range(3):
        m = rng.normal(size=(3, 3))
        covs.append(m @ m.T / 3 + 0.1 * np.eye(3))
    return GaussianMixture([0.5, 0.3, 0.2], rng.normal(scale=2.0, size=(3, 3)), np.stack(covs))


def _everything(model, x, t):
    """denoise, eps, score, energy and grad energy, batched over rows of x and their times t."""
    one = lambda v, tt: (model.denoise(v, tt), model.eps(v, tt), model.score(v, tt), model.energy(v, tt),
                         jax.grad(model.energy)(v, tt))
    return jax.vmap(one)(x, t)


def _exact(gm, schedule, x, t):
    def one(v, tt):
        a, s = schedule.alpha(tt), schedule.sigma(tt)
        return gm.denoise(v, a, s), gm.score(v, a, s), gm.marginal_log_prob(v, a, s)

    return jax.vmap(one)(x, t)


def _close(actual, expected, rel=1e-4, extra=0.0, msg=""):
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    scale = max(1.0, float(np.max(np.abs(expected))))
    np.testing.assert_allclose(actual, expected, rtol=rel, atol=rel * scale + extra, err_msg=msg)


@pytest.mark.parametrize("sched_name", list(SCHEDULES))
def test_parameterizations_agree_with_the_closed_forms(mixture, sched_name):
    schedule = SCHEDULES[sched_name]
    n = 8  # points per time, drawn from the noisy marginal p_t
    xs = [mixture.sample(jax.random.key(i), n, schedule.alpha(t), schedule.sigma(t)) for i, t in enumerate(TIMES)]
    x = jnp.concatenate(xs)
    tv = jnp.repeat(jnp.asarray(TIMES, jnp.float32), n)
    den_ref, score_ref, logp_ref = _exact(mixture, schedule, x, tv)
    outputs = {k: _everything(mixture.diffusion_model(schedule, k), x, tv) for k in KINDS}
    for i, t in enumerate(TIMES):
        rows = slice(i * n, (i + 1) * n)
        alpha, sigma = float(schedule.alpha(t)), float(schedule.sigma(t))
        xi = np.asarray(x[rows], np.float64)
        eps_ref = -sigma * np.asarray(score_ref[rows])
        # Converting between predictions cancels x against alpha x0 or sigma eps: float32 round-off
        # of x, u = a few ulp of |x|, is amplified by 1/alpha (x0), 1/sigma (eps), 1/sigma^2 (score).
        u = 4 * np.finfo(np.float32).eps * float(np.max(np.abs(xi)))
        for kind, out in outputs.items():
            den, eps, score, energy, grad_energy = (np.asarray(o[rows], np.float64) for o in out)
            ctx = f"{sched_name}, t={t}, parameterization={kind}"
            _close(den, den_ref[rows], extra=u / alpha, msg=f"denoise, {ctx}")
            _close(eps, eps_ref, extra=u / sigma, msg=f"eps, {ctx}")
            _close(score, score_ref[rows], extra=u / sigma**2, msg=f"score, {ctx}")
            # energy is -log p_t, both from the energy network and from the exact data distribution
            _close(energy, -np.asarray(logp_ref[rows]), msg=f"energy, {ctx}")
            # and its gradient is minus the score
            _close(grad_energy, -score, extra=u / sigma**2, msg=f"grad energy, {ctx}")
            # the three quantities are tied by the parameterization identities
            _close(den, (xi - sigma * eps) / alpha, extra=u / alpha, msg=f"x0 vs eps, {ctx}")
            _close(score, -eps / sigma, extra=u / sigma**2, msg=f"score vs eps, {ctx}")


def test_models_carry_their_metadata(mixture):
    sched = S.VPLinear()
    model = mixture.diffusion_model(sched, "v", name="mix")
    assert model.parameterization == "v"
    assert model.event_shape == (3,)
    assert model.schedule is sched
    assert model.data_distribution is mixture
    assert model.name == "mix"
    assert mixture.diffusion_model(sched).parameterization == "x0"


def test_exact_network_outputs_are_the_named_prediction(mixture):
    """The wrapped network itself returns eps / x0 / v / score / energy as named."""
    sched = S.VPCosine()
    t = 0.4
    alpha, sigma = float(sched.alpha(t)), float(sched.sigma(t))
    x = mixture.sample(jax.random.key(3), 1, alpha, sigma)[0]
    x0 = np.asarray(mixture.denoise(x, alpha, sigma), np.float64)
    xn = np.asarray(x, np.float64)
    eps = (xn - alpha * x0) / sigma
    expected = {"x0": x0, "eps": eps, "v": alpha * eps - sigma * x0, "score": -eps / sigma,
                "energy": -float(mixture.marginal_log_prob(x, alpha, sigma))}
    for kind in KINDS:
        out = mixture.diffusion_model(sched, kind).network(x, t)
        _close(out, expected[kind])


# --------------------------------------------------------------------------- a user network

def _linear_net(x, t):
    w = jnp.array([[1.0, 0.5], [-0.3, 2.0]])
    return (1.0 + t) * (w @ x) + jnp.array([0.1, -0.2])


@pytest.mark.parametrize("kind", ["eps", "x0", "v", "score"])
def test_user_network_conversions(kind):
    sched = S.VPLinear()
    model = DiffusionModel(_linear_net, kind, sched, 2)
    assert model.event_shape == (2,)
    x, t = jnp.array([0.7, -1.2]), 0.35
    alpha, sigma = float(sched.alpha(t)), float(sched.sigma(t))
    out = np.asarray(_linear_net(x, t), np.float64)
    xn = np.asarray(x, np.float64)
    if kind == "x0":
        x0 = out
    elif kind == "eps":
        x0 = (xn - sigma * out) / alpha
    elif kind == "v":
        x0 = (alpha * xn - sigma * out) / (alpha**2 + sigma**2)
    else:
        x0 = (xn + sigma**2 * out) / alpha
    eps = (xn - alpha * x0) / sigma
    _close(model.denoise(x, t), x0)
    _close(model.eps(x, t), eps)
    _close(model.score(x, t), -eps / sigma)
    # to_x0 / from_x0 agree with the model
    _close(P.from_x0(kind, model.denoise(x, t), x, alpha, sigma), out)
    # no energy without an energy network or an exact distribution
    with pytest.raises(ValueError, match="energy"):
        model.energy(x, t)


def test_user_energy_network_is_a_gaussian():
    """E(x, t) = |x|^2 / (2 (alpha^2 + sigma^2)) is the exact energy of N(0, I) data."""
    sched = S.RectifiedFlow()

    def energy(x, t):
        return 0.5 * jnp.sum(x**2) / (sched.alpha(t) ** 2 + sched.sigma(t) ** 2)

    model = DiffusionModel(energy, "energy", sched, (2,))
    gm = GaussianMixture([1.0], [[0.0, 0.0]])
    x, t = jnp.array([0.9, -0.4]), 0.6
    alpha, sigma = sched.alpha(t), sched.sigma(t)
    _close(model.score(x, t), gm.score(x, alpha, sigma))
    _close(model.denoise(x, t), gm.denoise(x, alpha, sigma))
    _close(model.denoise(x, t), alpha * x / (alpha**2 + sigma**2))
    _close(model.eps(x, t), -sigma * gm.score(x, alpha, sigma))
    _close(model.energy(x, t), energy(x, t))


def test_model_is_jittable_and_vmappable():
    model = DiffusionModel(_linear_net, "eps", S.VE(), (2,))
    x = jax.random.normal(jax.random.key(0), (5, 2))
    batched = jax.jit(jax.vmap(model.denoise, in_axes=(0, None)))(x, 0.5)
    single = jnp.stack([model.denoise(v, 0.5) for v in x])
    _close(batched, single, rel=1e-5)


# --------------------------------------------------------------------------- constructor errors

def test_network_must_be_callable():
    with pytest.raises(TypeError, match="network"):
        DiffusionModel(jnp.ones(2), "eps", S.VPLinear(), (2,))


@pytest.mark.parametrize("kind", ["noise", "EPS", "", None])
def test_bad_parameterization(kind):
    with pytest.raises(ValueError, match="parameterization"):
        DiffusionModel(_linear_net, kind, S.VPLinear(), (2,))


@pytest.mark.parametrize("shape", [(), 0, -2, (2, 0), (2.0,), (2, -1), "ab"])
def test_bad_event_shape(shape):
    with pytest.raises(ValueError, match="event_shape"):
        DiffusionModel(_linear_net, "eps", S.VPLinear(), shape)


@pytest.mark.parametrize("schedule", [None, "vp", lambda t: t, S.VPLinear])
def test_schedule_must_be_a_schedule(schedule):
    with pytest.raises(TypeError, match="schedule"):
        DiffusionModel(_linear_net, "eps", schedule, (2,))


def test_event_shape_normalised():
    assert DiffusionModel(_linear_net, "x0", S.EDM(), 4).event_shape == (4,)
    assert DiffusionModel(_linear_net, "x0", S.EDM(), [2, 3]).event_shape == (2, 3)


# --------------------------------------------------------------------------- data_range and t_start


def test_data_range_clips_the_denoiser_and_keeps_eps_consistent():
    import pp_diffusion as ppd

    sched = ppd.schedules.VPCosine()
    # an eps "network" that is off by a constant: xhat_0 overshoots the data range at high noise
    network = lambda x, t: x / sched.sigma(t) * 0.0 + 0.3
    raw = ppd.DiffusionModel(network, "eps", sched, (5,))
    clipped = ppd.DiffusionModel(network, "eps", sched, (5,), data_range=(-1.0, 1.0))
    x = jnp.linspace(-2.0, 2.0, 5)
    for t in (0.2, 0.9, 1.0):
        alpha, sigma = sched.alpha(t), sched.sigma(t)
        expected = jnp.clip((x - sigma * 0.3) / alpha, -1.0, 1.0)
        np.testing.assert_allclose(clipped.denoise(x, t), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(raw.denoise(x, t), (x - sigma * 0.3) / alpha, rtol=1e-5)
        # x_t = alpha xhat_0 + sigma eps holds for the clipped prediction, and score = -eps / sigma
        np.testing.assert_allclose(alpha * clipped.denoise(x, t) + sigma * clipped.eps(x, t), x, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(clipped.score(x, t), -clipped.eps(x, t) / sigma, rtol=1e-5)
    assert float(jnp.max(jnp.abs(raw.denoise(x, 1.0)))) > 10.0  # the clip did something


@pytest.mark.parametrize("bad", [(1.0, -1.0), (0.0, 0.0), "ab", 3.0])
def test_data_range_errors(bad):
    import pp_diffusion as ppd

    with pytest.raises(ValueError, match="data_range"):
        ppd.DiffusionModel(lambda x, t: x, "eps", ppd.schedules.VPLinear(), (2,), data_range=bad)


@pytest.mark.parametrize("bad", [0.0, 1.5, -0.1])
def test_t_start_errors(bad):
    import pp_diffusion as ppd

    with pytest.raises(ValueError, match="t_start"):
        ppd.DiffusionModel(lambda x, t: x, "eps", ppd.schedules.VPLinear(), (2,), t_start=bad)


@pytest.mark.parametrize("grid", [None, "uniform_log_snr", "karras"])
def test_prior_grids_start_at_the_models_t_start(grid):
    import pp_diffusion as ppd

    sched = ppd.schedules.VPCosine()
    model = ppd.DiffusionModel(lambda x, t: x, "eps", sched, (2,), t_start=0.9)
    prior = ppd.DiffusionPrior(model, steps=12, grid=None if grid is None else getattr(ppd.schedules, grid))
    times = np.asarray(prior.times)
    assert times[0] == pytest.approx(0.9) and times[-1] == 0.0 and times.size == 13
    assert np.all(np.diff(times) < 0)
    # the initial noise has the standard deviation of the marginal at t_start
    x_T = prior.initial_noise(jax.random.key(0), 20_000)
    assert float(jnp.std(x_T)) == pytest.approx(float(sched.sigma(0.9)), rel=0.02)
    # an explicit grid is used as given
    explicit = ppd.DiffusionPrior(model, steps=2, grid=[1.0, 0.5, 0.0])
    np.testing.assert_allclose(explicit.times, [1.0, 0.5, 0.0])
