"""The conjugate machinery for phase-space models: the transform A_t = e^{lam t} exp(-F t) against
``expm``, and the quadrature Phi_s - Phi_t = -int_s^t (1/2) A_u G G^T C_u du against scipy's
adaptive quadrature (float64), including the step into t_min where C_u grows like u^{-1/2}. Orders
of accuracy are in test_splitting.py, the stochastic hybrid in test_splitting_stochastic.py."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.scipy.linalg import expm

from pp_diffusion.phase_space import PSLD
from pp_diffusion.phase_space._conjugate import phi_increment, transform
from pp_diffusion.phase_space._psld import eps_to_score

SDE = PSLD()


@pytest.mark.parametrize("lam", [0.0, -0.5, 0.7])
def test_transform_is_the_matrix_exponential(lam):
    with jax.enable_x64(True):
        for t in (0.0, 0.01, 0.3, 1.0):
            ref = expm((lam * jnp.eye(2) - SDE.drift_matrix(jnp.float64)) * t)
            np.testing.assert_allclose(transform(SDE, lam, t, jnp.float64), ref, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("rotate", [True, False])
@pytest.mark.parametrize("lam", [0.0, -0.5, 0.7])
@pytest.mark.parametrize("t, s", [(1.0, 0.9), (0.3, 0.1), (0.05, 1e-3), (0.011, 1e-3)])
def test_phi_increment_against_adaptive_quadrature(lam, t, s, rotate):
    from scipy.integrate import solve_ivp

    from pp_diffusion.phase_space._conjugate import _rotation, flow_rate

    with jax.enable_x64(True):
        Q = np.asarray(SDE.diffusion_gram(jnp.float64))
        parts = jax.jit(lambda u: (transform(SDE, lam, u, jnp.float64), eps_to_score(SDE, u, jnp.float64)[0],
                                   flow_rate(SDE, u, jnp.float64)))

        def rhs(u, y):  # y = [theta_u - theta_t, vec(int_t^u (1/2) A Q C O du)]
            A, C, w = (np.asarray(v) for v in parts(u))
            O = np.asarray(_rotation(jnp.asarray(y[0]))) if rotate else np.eye(2)
            return np.concatenate([[w], (0.5 * A @ Q @ C @ O).ravel()])

        sol = solve_ivp(rhs, (t, s), np.zeros(5), method="DOP853", rtol=1e-11, atol=1e-12)
        ref = sol.y[1:, -1].reshape(2, 2)  # int_t^s = -int_s^t: Phi_s - Phi_t
        got = np.asarray(phi_increment(SDE, lam, t, s, jnp.float64, rotate))
        np.testing.assert_allclose(got, ref, rtol=1e-5, atol=1e-7 * np.abs(ref).max())


def test_flow_frame_solves_the_linear_pf_flow():
    """R_u = L_u O(theta_u) solves dR/du = M_u R, M_u = F + (1/2) G G^T Sigma_u^{-1}, exactly when
    dL/du + omega_u L_u J = M_u L_u (J the rotation generator; dO/du O^T = omega J): checked with dL/du
    by central differences, and theta's quadrature against scipy's."""
    from scipy.integrate import quad

    from pp_diffusion.phase_space._conjugate import flow_rate, theta_increment

    with jax.enable_x64(True):
        F, Q = SDE.drift_matrix(jnp.float64), SDE.diffusion_gram(jnp.float64)
        J = jnp.asarray([[0.0, -1.0], [1.0, 0.0]])
        L = lambda u: jnp.linalg.cholesky(SDE.covariance(jnp.float64(u)))
        for u in (0.004, 0.05, 0.3, 0.9):
            du = 1e-5 * u
            lhs = (L(u + du) - L(u - du)) / (2 * du) + flow_rate(SDE, u, jnp.float64) * L(u) @ J
            rhs = (F + 0.5 * Q @ jnp.linalg.inv(SDE.covariance(jnp.float64(u)))) @ L(u)
            np.testing.assert_allclose(lhs, rhs, rtol=1e-6, atol=1e-8 * float(jnp.abs(rhs).max()))
        for t, u in ((0.5, 0.004), (0.05, 1e-3), (1.0, 0.9)):
            ref = quad(lambda x: float(flow_rate(SDE, x, jnp.float64)), t, u, epsabs=0, epsrel=1e-11, limit=200)[0]
            # 8 nodes in sqrt(u): 1.4e-4 relative over [0.004, 0.5], far longer than a step
            np.testing.assert_allclose(float(theta_increment(SDE, t, u, jnp.float64)), ref, rtol=3e-4)


def test_conjugate_euler_is_exact_for_point_mass_data():
    """x_0 = mu (a point mass; m_0 ~ N(0, 0.04 M)): eps in the flow frame is constant along the PF-ODE,
    so lambda = 0 conjugate Euler is exact at any step size (the analogue of DDIM); the Cholesky frame is not."""
    from pp_diffusion import GaussianMixture
    from pp_diffusion.phase_space import AugmentedGaussianMixture, conjugate_euler, integrate

    with jax.enable_x64(True):
        mu = jnp.asarray([0.7, -0.4])
        aug = AugmentedGaussianMixture(GaussianMixture([1.0], [mu], [1e-12]), SDE)
        z_T = jnp.asarray([[0.3, -1.1], [0.6, 0.2]])
        t_max, t_min = 1.0, 1e-3
        # the exact PF-ODE flow of N(a_t mu, Sigma_t): z_s = a_s mu + R_s R_t^{-1} (z_t - a_t mu), theta by scipy
        from scipy.integrate import quad

        from pp_diffusion.phase_space._conjugate import _rotation, flow_rate

        theta = quad(lambda x: float(flow_rate(SDE, x, jnp.float64)), t_max, t_min, epsabs=0, epsrel=1e-12, limit=400)[0]
        L = lambda u: jnp.linalg.cholesky(SDE.covariance(jnp.float64(u)))
        a = lambda u: SDE.mean_matrix(jnp.float64(u))[:, 0][:, None]
        exact = a(t_min) * mu + L(t_min) @ _rotation(jnp.asarray(theta)) @ jnp.linalg.solve(L(t_max), z_T - a(t_max) * mu)
        # exact up to the quadrature: 2.4e-4 on three huge steps, 3e-6 on ten
        for times, tol in ((jnp.asarray([1.0, 0.3, 0.05, 1e-3]), 1e-3), (jnp.linspace(t_max, t_min, 11), 2e-5)):
            got = integrate(jax.random.PRNGKey(0), conjugate_euler(SDE), aug.score, z_T, times)[0]
            np.testing.assert_allclose(got, exact, atol=tol)
        cholesky = integrate(jax.random.PRNGKey(0), conjugate_euler(SDE, rotate=False), aug.score, z_T, times)[0]
        assert float(jnp.abs(cholesky - exact).max()) > 0.05
