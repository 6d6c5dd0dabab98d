"""eps / x0 / v / score conversions: round trips for any (alpha, sigma), Tweedie, errors."""

import numpy as np
import pytest

from pp_diffusion import parameterization as P

# (alpha, sigma): variance preserving, variance exploding, rectified flow, and arbitrary pairs
COEFFS = [(0.8, 0.6), (1.0, 3.5), (0.3, 0.7), (1.7, 0.05), (0.02, 0.9999)]


def _draw(seed, alpha, sigma, d=5):
    rng = np.random.default_rng(seed)
    x0 = rng.normal(size=d)
    eps = rng.normal(size=d)
    return x0, eps, alpha * x0 + sigma * eps


@pytest.mark.parametrize("alpha,sigma", COEFFS)
def test_consistent_triplet(alpha, sigma):
    """From the true (x0, eps) behind x_t, every conversion recovers the other quantities."""
    x0, eps, x = _draw(0, alpha, sigma)
    v = alpha * eps - sigma * x0  # Salimans & Ho's definition, written out
    tol = dict(rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(P.x0_from_eps(x, eps, alpha, sigma), x0, **tol)
    np.testing.assert_allclose(P.eps_from_x0(x, x0, alpha, sigma), eps, **tol)
    np.testing.assert_allclose(P.v_from_x0_eps(x0, eps, alpha, sigma), v, **tol)
    np.testing.assert_allclose(P.x0_from_v(x, v, alpha, sigma), x0, **tol)
    np.testing.assert_allclose(P.eps_from_v(x, v, alpha, sigma), eps, **tol)
    np.testing.assert_allclose(P.score_from_eps(eps, sigma), -eps / sigma, **tol)
    np.testing.assert_allclose(P.eps_from_score(-eps / sigma, sigma), eps, **tol)


@pytest.mark.parametrize("alpha,sigma", COEFFS)
@pytest.mark.parametrize("kind", ["eps", "x0", "v", "score"])
def test_from_x0_inverts_to_x0(kind, alpha, sigma):
    rng = np.random.default_rng(1)
    x = rng.normal(size=(3, 4))
    x0_hat = rng.normal(size=(3, 4))  # any x0 prediction, not necessarily consistent with x
    out = P.from_x0(kind, x0_hat, x, alpha, sigma)
    np.testing.assert_allclose(P.to_x0(kind, out, x, alpha, sigma), x0_hat, rtol=1e-10, atol=1e-10)
    # and the other way: to_x0 then from_x0 gives back the network output
    y = rng.normal(size=(3, 4))
    np.testing.assert_allclose(P.from_x0(kind, P.to_x0(kind, y, x, alpha, sigma), x, alpha, sigma), y,
                               rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("alpha,sigma", COEFFS)
def test_round_trip_through_every_kind(alpha, sigma):
    """eps -> x0 -> v -> x0 -> score -> eps returns the starting eps."""
    rng = np.random.default_rng(2)
    x = rng.normal(size=6)
    eps = rng.normal(size=6)
    x0 = P.x0_from_eps(x, eps, alpha, sigma)
    v = P.from_x0("v", x0, x, alpha, sigma)
    x0_again = P.x0_from_v(x, v, alpha, sigma)
    score = P.from_x0("score", x0_again, x, alpha, sigma)
    eps_again = P.eps_from_score(score, sigma)
    np.testing.assert_allclose(eps_again, eps, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(P.eps_from_v(x, v, alpha, sigma), eps, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("alpha,sigma", COEFFS)
def test_tweedie_is_to_x0_of_the_score(alpha, sigma):
    rng = np.random.default_rng(3)
    x = rng.normal(size=5)
    score = rng.normal(size=5)
    expected = (x + sigma**2 * score) / alpha
    np.testing.assert_allclose(P.tweedie(x, score, alpha, sigma), expected, rtol=1e-12)
    np.testing.assert_allclose(P.to_x0("score", score, x, alpha, sigma), expected, rtol=1e-12)
    # an "energy" output reaching to_x0 is already a score
    np.testing.assert_allclose(P.to_x0("energy", score, x, alpha, sigma), expected, rtol=1e-12)
    # and Tweedie agrees with the eps route: score = -eps / sigma
    eps = P.eps_from_score(score, sigma)
    np.testing.assert_allclose(P.to_x0("eps", eps, x, alpha, sigma), expected, rtol=1e-10, atol=1e-12)


def test_tweedie_exact_for_a_gaussian():
    """x0 ~ N(m, s0^2): E[x0 | x_t] = m + alpha s0^2 (x - alpha m) / (alpha^2 s0^2 + sigma^2)."""
    m, s0, alpha, sigma = 0.7, 1.3, 0.6, 0.9
    x = np.linspace(-3, 3, 7)
    var = alpha**2 * s0**2 + sigma**2
    score = -(x - alpha * m) / var
    expected = m + alpha * s0**2 * (x - alpha * m) / var
    np.testing.assert_allclose(P.tweedie(x, score, alpha, sigma), expected, rtol=1e-12)


def test_works_with_jax_arrays_and_broadcasting():
    import jax.numpy as jnp

    x = jnp.ones((2, 3))
    alpha = jnp.array([[0.5], [0.9]])
    sigma = jnp.sqrt(1 - alpha**2)
    x0 = P.to_x0("v", jnp.zeros((2, 3)), x, alpha, sigma)
    np.testing.assert_allclose(np.asarray(x0), np.broadcast_to(np.asarray(alpha), (2, 3)), rtol=1e-6)


@pytest.mark.parametrize("kind", ["EPS", "noise", "", None, "x_0"])
def test_bad_kind(kind):
    with pytest.raises(ValueError, match="parameterization"):
        P.check_parameterization(kind)
    with pytest.raises(ValueError, match="parameterization"):
        P.to_x0(kind, 1.0, 1.0, 0.5, 0.5)
    with pytest.raises(ValueError, match="from_x0"):
        P.from_x0(kind, 1.0, 1.0, 0.5, 0.5)


def test_from_x0_rejects_energy():
    # an energy is not determined by an x0 prediction
    with pytest.raises(ValueError, match="energy"):
        P.from_x0("energy", 1.0, 1.0, 0.5, 0.5)


def test_check_parameterization_accepts_all():
    for kind in P.PARAMETERIZATIONS:
        assert P.check_parameterization(kind) == kind
    assert set(P.PARAMETERIZATIONS) == {"eps", "x0", "v", "score", "energy"}
