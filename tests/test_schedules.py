"""Schedules and time grids: identities, endpoints, the discrete DDPM schedule, grids, errors."""

import jax.numpy as jnp
import numpy as np
import pytest

from pp_diffusion import schedules as S

SCHEDULES = {
    "vp_linear": S.VPLinear(),
    "vp_cosine": S.VPCosine(),
    "ddpm_linear": S.ddpm_linear(),
    "ve": S.VE(),
    "edm": S.EDM(),
    "rectified_flow": S.RectifiedFlow(),
}
VP_NAMES = ["vp_linear", "vp_cosine", "ddpm_linear"]
GRIDS = {"uniform_t": S.uniform_t, "uniform_log_snr": S.uniform_log_snr, "karras": S.karras}

T_INTERIOR = np.linspace(0.0, 1.0, 401)[1:]  # (0, 1]


@pytest.fixture(params=list(SCHEDULES), ids=list(SCHEDULES))
def schedule(request):
    return SCHEDULES[request.param]


# --------------------------------------------------------------------------- identities and endpoints

@pytest.mark.parametrize("name", VP_NAMES)
def test_vp_alpha_sq_plus_sigma_sq_is_one(name):
    sch = SCHEDULES[name]
    t = jnp.linspace(0.0, 1.0, 257)
    a, s = np.asarray(sch.alpha(t)), np.asarray(sch.sigma(t))
    np.testing.assert_allclose(a**2 + s**2, 1.0, atol=2e-6)
    assert sch.variance_preserving


@pytest.mark.parametrize("name", ["ve", "edm", "rectified_flow"])
def test_non_vp_flag(name):
    assert not SCHEDULES[name].variance_preserving


def test_log_snr_matches_alpha_sigma(schedule):
    t = jnp.asarray(T_INTERIOR)
    a, s = np.asarray(schedule.alpha(t), np.float64), np.asarray(schedule.sigma(t), np.float64)
    expected = np.log(a**2 / s**2)
    np.testing.assert_allclose(np.asarray(schedule.log_snr(t)), expected, rtol=1e-4, atol=1e-3)


def test_log_snr_strictly_decreasing(schedule):
    lam = np.asarray(schedule.log_snr(jnp.asarray(T_INTERIOR)))
    assert np.all(np.isfinite(lam))
    assert np.all(np.diff(lam) < 0)
    # and t = 0 is clean data: infinite log-SNR
    assert np.asarray(schedule.log_snr(0.0)) == np.inf


def test_endpoint_clean_data(schedule):
    # every schedule here reaches clean data at t = 0: sigma(0) = 0 and alpha(0) = 1
    assert float(schedule.sigma(0.0)) == 0.0
    assert float(schedule.alpha(0.0)) == pytest.approx(1.0, abs=1e-7)


def test_endpoint_noisy(schedule):
    # t = 1 is much noisier than data: the SNR there is small
    assert float(schedule.log_snr(1.0)) < -4.0


def test_vp_linear_matches_integral_of_beta():
    sch = S.VPLinear(beta_min=0.1, beta_max=20.0)
    for t in [0.05, 0.3, 0.7, 1.0]:
        s = np.linspace(0.0, t, 20001)
        beta = 0.1 + s * (20.0 - 0.1)
        integral = np.trapezoid(beta, s)
        assert float(sch.alpha(t)) == pytest.approx(np.exp(-0.5 * integral), rel=1e-5)


def test_vp_cosine_matches_formula():
    sch = S.VPCosine(s=0.008, t_max=0.9946)
    t = np.linspace(0.0, 1.0, 11)
    f = lambda u: np.cos((u + 0.008) / 1.008 * np.pi / 2) ** 2
    expected = f(t * 0.9946) / f(0.0)
    np.testing.assert_allclose(np.asarray(sch.alpha(jnp.asarray(t))) ** 2, expected, rtol=1e-4, atol=1e-7)


def test_ve_and_edm_ranges():
    ve = S.VE(sigma_min=0.01, sigma_max=50.0)
    assert float(ve.sigma(1.0)) == pytest.approx(50.0, rel=1e-5)
    assert float(ve.sigma(1e-6)) == pytest.approx(0.01, rel=1e-4)
    assert float(ve.sigma(0.5)) == pytest.approx(np.sqrt(0.01 * 50.0), rel=1e-5)
    edm = S.EDM(sigma_min=0.002, sigma_max=80.0, rho=7.0)
    assert float(edm.sigma(1.0)) == pytest.approx(80.0, rel=1e-5)
    assert float(edm.sigma(1e-7)) == pytest.approx(0.002, rel=1e-3)
    t = 0.3
    expected = (0.002 ** (1 / 7) + t * (80.0 ** (1 / 7) - 0.002 ** (1 / 7))) ** 7
    assert float(edm.sigma(t)) == pytest.approx(expected, rel=1e-5)


def test_rectified_flow_formula():
    rf = S.RectifiedFlow(t_max=0.999)
    t = jnp.array([0.0, 0.25, 1.0])
    np.testing.assert_allclose(np.asarray(rf.alpha(t)), 1 - np.array([0.0, 0.25, 1.0]) * 0.999, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(rf.sigma(t)), np.array([0.0, 0.25, 1.0]) * 0.999, rtol=1e-6)


# --------------------------------------------------------------------------- the discrete DDPM schedule

def test_ddpm_linear_reproduces_alphas_cumprod():
    n_steps = 1000
    betas = np.linspace(1e-4, 0.02, n_steps)
    alphas_cumprod = np.cumprod(1.0 - betas)
    sch = S.ddpm_linear()
    assert sch.num_train_steps == n_steps
    t = (np.arange(n_steps) + 1) / n_steps
    a2 = np.asarray(sch.alpha(jnp.asarray(t, jnp.float32)), np.float64) ** 2
    np.testing.assert_allclose(a2, alphas_cumprod, rtol=1e-4)
    s2 = np.asarray(sch.sigma(jnp.asarray(t, jnp.float32)), np.float64) ** 2
    np.testing.assert_allclose(s2, 1.0 - alphas_cumprod, rtol=1e-4, atol=1e-7)
    # the docstring's example: a uniform-t grid of 10 steps visits n = 999, 899, ..., 99, then data
    grid = np.asarray(S.uniform_t(sch, 10))
    n = np.round(grid[:-1] * n_steps - 1).astype(int)
    np.testing.assert_array_equal(n, np.arange(999, 0, -100))
    np.testing.assert_allclose(np.asarray(sch.alpha(jnp.asarray(grid[:-1]))) ** 2, alphas_cumprod[n], rtol=1e-4)


def test_discrete_vp_interpolates_log_alpha_linearly():
    betas = np.array([0.1, 0.2, 0.3])
    sch = S.DiscreteVP(betas)
    la = 0.5 * np.concatenate([[0.0], np.cumsum(np.log1p(-betas))])
    t_mid = np.array([0.5, 1.5, 2.5]) / 3
    expected = 0.5 * (la[:-1] + la[1:])
    np.testing.assert_allclose(np.asarray(sch.log_alpha(jnp.asarray(t_mid))), expected, rtol=1e-5)


@pytest.mark.parametrize("betas", [[0.1], [[0.1, 0.2]], [0.0, 0.1], [0.1, 1.0], [-0.1, 0.2]])
def test_discrete_vp_bad_betas(betas):
    with pytest.raises(ValueError, match="betas"):
        S.DiscreteVP(betas)


def test_ddpm_linear_bad_num_steps():
    with pytest.raises(ValueError, match="num_steps"):
        S.ddpm_linear(num_steps=1)


# --------------------------------------------------------------------------- constructors

@pytest.mark.parametrize(
    "make",
    [
        lambda: S.VPLinear(beta_min=2.0, beta_max=1.0),
        lambda: S.VPLinear(beta_min=-0.1, beta_max=1.0),
        lambda: S.VPLinear(beta_min=1.0, beta_max=1.0),
        lambda: S.VE(sigma_min=0.0, sigma_max=1.0),
        lambda: S.VE(sigma_min=2.0, sigma_max=1.0),
        lambda: S.EDM(sigma_min=1.0, sigma_max=0.5),
        lambda: S.EDM(rho=0.0),
    ],
)
def test_bad_constructor_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_bad_constructor_message_names_arguments():
    with pytest.raises(ValueError, match="beta_min"):
        S.VPLinear(beta_min=2, beta_max=1)
    with pytest.raises(ValueError, match="sigma_min"):
        S.VE(sigma_min=5.0, sigma_max=1.0)


# --------------------------------------------------------------------------- grids

@pytest.mark.parametrize("grid_name", list(GRIDS))
@pytest.mark.parametrize("steps", [1, 10])
def test_grid_shape_and_order(schedule, grid_name, steps):
    g = np.asarray(GRIDS[grid_name](schedule, steps))
    assert g.shape == (steps + 1,)
    assert g[0] == 1.0
    assert g[-1] == 0.0
    assert np.all(np.diff(g) < 0)
    # the grid passes as_grid's checks (log-SNR increasing along it) and comes back unchanged
    np.testing.assert_array_equal(np.asarray(S.as_grid(schedule, steps, g)), g)


def test_uniform_t_is_uniform(schedule):
    np.testing.assert_allclose(np.asarray(S.uniform_t(schedule, 8)), np.linspace(1, 0, 9), atol=1e-7)


@pytest.mark.parametrize("steps", [10])
def test_uniform_log_snr_is_uniform_in_log_snr(schedule, steps):
    t_min = 1e-3
    g = S.uniform_log_snr(schedule, steps, t_min=t_min)
    lam = np.asarray(schedule.log_snr(g[:-1]), np.float64)
    expected = np.linspace(float(schedule.log_snr(1.0)), float(schedule.log_snr(t_min)), steps)
    span = abs(expected[-1] - expected[0])
    np.testing.assert_allclose(lam, expected, atol=2e-4 * span)
    d = np.diff(lam)
    np.testing.assert_allclose(d, d.mean(), rtol=2e-3)
    assert float(g[-2]) == pytest.approx(t_min, rel=1e-3)
    assert float(g[-1]) == 0.0


@pytest.mark.parametrize("steps", [10])
def test_karras_grid_follows_rho_interpolation(schedule, steps):
    rho, t_min = 7.0, 1e-3
    g = S.karras(schedule, steps, rho=rho, t_min=t_min)
    ratio = np.exp(-0.5 * np.asarray(schedule.log_snr(g[:-1]), np.float64))  # sigma / alpha
    lo = np.exp(-0.5 * float(schedule.log_snr(t_min))) ** (1 / rho)
    hi = np.exp(-0.5 * float(schedule.log_snr(1.0))) ** (1 / rho)
    expected = (hi + np.linspace(0, 1, steps) * (lo - hi)) ** rho
    np.testing.assert_allclose(ratio, expected, rtol=2e-3)


def test_karras_on_edm_is_uniform_in_t():
    # EDM's sigma^(1/rho) is affine in t, so the Karras grid with the same rho is uniform in t.
    g = np.asarray(S.karras(S.EDM(rho=7.0), 10, rho=7.0, t_min=0.01))
    np.testing.assert_allclose(g[:-1], np.linspace(1.0, 0.01, 10), atol=1e-4)


def test_uniform_log_snr_on_ve_is_uniform_in_t():
    # VE's log-SNR is affine in t.
    g = np.asarray(S.uniform_log_snr(S.VE(), 10, t_min=0.02))
    np.testing.assert_allclose(g[:-1], np.linspace(1.0, 0.02, 10), atol=1e-4)


# --------------------------------------------------------------------------- as_grid

def test_as_grid_default_and_explicit():
    sch = S.VPLinear()
    np.testing.assert_array_equal(np.asarray(S.as_grid(sch, 5, None)), np.asarray(S.uniform_t(sch, 5)))
    times = [1.0, 0.6, 0.3, 0.1, 0.0]
    out = S.as_grid(sch, 4, times)
    assert out.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(out), times)


@pytest.mark.parametrize("grid", [None, S.uniform_t, S.karras, [1.0, 0.0], [1.0]])
@pytest.mark.parametrize("steps", [0, -3])
def test_as_grid_nonpositive_steps(grid, steps):
    with pytest.raises(ValueError, match="steps"):
        S.as_grid(S.VPLinear(), steps, grid)


@pytest.mark.parametrize("grid", [None, S.uniform_log_snr, [1.0, 0.5, 0.0]])
@pytest.mark.parametrize("steps", [2.0, 2.5, "2", True])
def test_as_grid_non_integer_steps(grid, steps):
    with pytest.raises(ValueError, match="steps"):
        S.as_grid(S.VPLinear(), steps, grid)


def test_grid_functions_reject_bad_steps():
    for fn in GRIDS.values():
        for steps in [0, 1.5]:
            with pytest.raises(ValueError, match="steps"):
                fn(S.VPLinear(), steps)


def test_as_grid_accepts_numpy_integer_steps():
    assert S.as_grid(S.VPLinear(), np.int64(3), None).shape == (4,)


@pytest.mark.parametrize("times", [[1.0, 0.5, 0.0], [1.0, 0.75, 0.5, 0.25, 0.0], [[1.0, 0.5], [0.2, 0.0]]])
def test_as_grid_wrong_length(times):
    with pytest.raises(ValueError, match="grid"):
        S.as_grid(S.VPLinear(), 3, times)


@pytest.mark.parametrize("times", [[1.0, 0.5, 0.5, 0.0], [0.0, 0.3, 0.6, 1.0], [1.0, 0.2, 0.4, 0.0]])
def test_as_grid_not_decreasing(times):
    with pytest.raises(ValueError, match="grid"):
        S.as_grid(S.VPLinear(), 3, times)


@pytest.mark.parametrize("times", [[1.5, 0.5, 0.2, 0.0], [1.0, 0.5, 0.2, -0.1]])
def test_as_grid_outside_unit_interval(times):
    with pytest.raises(ValueError, match="grid"):
        S.as_grid(S.VPLinear(), 3, times)


def test_as_grid_grid_function_of_wrong_length():
    with pytest.raises(ValueError, match="grid"):
        S.as_grid(S.VPLinear(), 4, lambda sch, steps: jnp.linspace(1.0, 0.0, steps))


class _Bumpy(S.Schedule):
    """alpha = 1, sigma rising to t = 0.5 and then falling: log-SNR not monotone."""

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.float32))

    def sigma(self, t):
        t = jnp.asarray(t)
        return jnp.where(t > 0, 0.1 + jnp.sin(jnp.pi * t), 0.0)


def test_as_grid_non_monotone_schedule():
    sch = _Bumpy()
    # fine on a grid that stays on the increasing branch...
    S.as_grid(sch, 2, [0.4, 0.2, 0.0])
    # ...rejected on a grid that crosses the bump
    with pytest.raises(ValueError, match="schedule _Bumpy") as err:
        S.as_grid(sch, 4, None)
    assert "log-SNR" in str(err.value)


def test_log_snr_strictly_decreasing_near_clean_data(schedule):
    # float32 accuracy near t = 0, where samplers end (t_min = 1e-3 by default, and below)
    t = jnp.asarray(np.geomspace(1e-6, 1e-2, 60), jnp.float32)  # consecutive ratio 1.17
    lam = np.asarray(schedule.log_snr(t))
    assert np.all(np.isfinite(lam))
    assert np.all(np.diff(lam) < 0)


def test_vp_cosine_accurate_near_clean_data():
    sch = S.VPCosine()
    t = np.geomspace(1e-6, 1.0, 200).astype(np.float32)
    a = np.pi / 2 / 1.008
    u = t.astype(np.float64) * 0.9946 * a
    log_alpha = np.log(np.cos(u + 0.008 * a) / np.cos(0.008 * a))
    lam = 2 * log_alpha - np.log(-np.expm1(2 * log_alpha))
    np.testing.assert_allclose(np.asarray(sch.log_alpha(jnp.asarray(t))), log_alpha, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(sch.log_snr(jnp.asarray(t))), lam, rtol=1e-5, atol=1e-4)
