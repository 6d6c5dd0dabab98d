"""PSLD / CLD forward process: closed-form kernel against Van Loan, expm and Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pp_diffusion.phase_space import CLD, PSLD


def _em_paths(sde, key, x0, t_end, n_paths, n_steps):
    """Euler-Maruyama of dz = F z dt + G dW from z_0 = [x0; m0], m0 ~ N(0, m0_var_scale M)."""
    F, G = sde.drift_matrix(), sde.diffusion_matrix()
    h = t_end / n_steps
    k0, k1 = jax.random.split(key)
    m0 = jnp.sqrt(sde.m0_var_scale * sde.mass) * jax.random.normal(k0, (n_paths,))
    z0 = jnp.stack([jnp.full((n_paths,), x0), m0])

    def body(z, k):
        return z + h * (F @ z) + jnp.sqrt(h) * (G @ jax.random.normal(k, z.shape)), None

    z, _ = jax.lax.scan(body, z0, jax.random.split(k1, n_steps))
    return np.asarray(z, np.float64)


@pytest.mark.parametrize("gamma", [0.01, 0.0])
def test_kernel_against_monte_carlo(gamma):
    sde = PSLD(gamma=gamma)
    x0, t, n = 1.5, 0.15, 40_000
    z = _em_paths(sde, jax.random.PRNGKey(0), x0, t, n, 600)
    A, S = map(np.asarray, sde.kernel(t))
    mean_mc, cov_mc = z.mean(axis=1), np.cov(z)
    mean_ex = A[:, 0] * x0
    # MC standard errors: mean sqrt(S_ii / n); covariance sqrt((S_ii S_jj + S_ij^2) / n).
    se_mean = np.sqrt(np.diag(S) / n)
    se_cov = np.sqrt((np.outer(np.diag(S), np.diag(S)) + S**2) / n)
    # 5 SE of MC error plus the O(h) Euler-Maruyama bias (|lambda| h ~ 2e-3 relative).
    assert np.all(np.abs(mean_mc - mean_ex) < 5 * se_mean + 3e-3 * np.abs(mean_ex))
    assert np.all(np.abs(cov_mc - S) < 5 * se_cov + 3e-3 * np.abs(S).max())


def test_closed_forms_agree_with_expm_and_van_loan():
    with jax.enable_x64(True):
        for gamma in (0.0, 0.01, 0.5):
            sde = PSLD(gamma=gamma)
            for t in (1e-3, 0.1, 0.5, 1.0):
                t = jnp.float64(t)
                np.testing.assert_allclose(sde.mean_matrix(t), sde.mean_matrix_expm(t), atol=1e-12)
                np.testing.assert_allclose(sde.covariance(t), sde.covariance_van_loan(t), atol=1e-11, rtol=1e-9)
            np.testing.assert_allclose(sde.covariance(jnp.float64(0.0)), sde.initial_covariance(), atol=1e-14)


def test_stationary_law():
    with jax.enable_x64(True):
        sde = PSLD()
        F, Q, S = sde.drift_matrix(), sde.diffusion_gram(), sde.stationary_covariance()
        np.testing.assert_allclose(F @ S + S @ F.T + Q, 0.0, atol=1e-12)
        np.testing.assert_allclose(sde.covariance(jnp.float64(5.0)), np.diag([1.0, sde.mass]), atol=1e-10)
        np.testing.assert_allclose(sde.mean_matrix(jnp.float64(5.0)), 0.0, atol=1e-10)
        assert sde.mass == pytest.approx(0.25)


def test_psld_to_cld_limit():
    with jax.enable_x64(True):
        cld = CLD()
        prev = np.inf
        for gamma in (1e-1, 1e-2, 1e-3, 1e-4):
            sde = PSLD(gamma=gamma, nu=4.0)
            err = max(
                float(np.max(np.abs(sde.covariance(jnp.float64(t)) - cld.covariance(jnp.float64(t))))
                      + np.max(np.abs(sde.mean_matrix(jnp.float64(t)) - cld.mean_matrix(jnp.float64(t)))))
                for t in (0.05, 0.3, 1.0)
            )
            assert err < prev / 5  # converges linearly in Gamma
            prev = err
        assert prev < 1e-4
        np.testing.assert_allclose(cld.diffusion_gram()[0, 0], 0.0)


def test_training_target_is_kernel_score():
    with jax.enable_x64(True):
        sde = PSLD()
        x0 = jnp.asarray([0.3, -1.0, 2.0])
        out = sde.perturb(jax.random.PRNGKey(1), x0, jnp.float64(0.3))
        np.testing.assert_allclose(out.score, sde.kernel_score(out.z_t, x0, jnp.float64(0.3)), rtol=1e-10)
        logp = lambda z: jax.scipy.stats.multivariate_normal.logpdf(
            z.T, (sde.mean_matrix(jnp.float64(0.3))[:, 0][:, None] * x0[None]).T, sde.covariance(jnp.float64(0.3))).sum()
        np.testing.assert_allclose(out.score, jax.grad(logp)(out.z_t), rtol=1e-9)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"beta": 0.0}, "beta"), ({"beta": -1.0}, "beta"), ({"gamma": -0.1}, "gamma"),
     ({"gamma": 1.0, "nu": 0.5}, "nu"), ({"gamma": 1.0, "nu": 1.0}, "nu"), ({"m0_var_scale": -1.0}, "m0_var_scale"),
     ({"beta": "x"}, "beta")],
)
def test_bad_input(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        PSLD(**kwargs)
