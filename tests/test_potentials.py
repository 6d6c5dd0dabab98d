"""Potentials: atoms against hand-computed values, combinators against their expansions (the way optax
tests its transformations: a combinator equals the expression it stands for), and the
variance-corrected linear-Gaussian twist against scipy and the closed-form p(y | x_t) of Gaussian data.
"""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from scipy import stats

from pp_diffusion import operators, potentials

D = 3


def _points(seed=0, n=4):
    """(x_t, x0_hat, t, alpha, sigma) tuples at a few noise levels."""
    rng = np.random.default_rng(seed)
    out = []
    for t, alpha in zip(np.linspace(0.1, 0.9, n), np.linspace(0.95, 0.3, n)):
        sigma = float(np.sqrt(1 - alpha**2))
        out.append((jnp.asarray(rng.normal(size=D), jnp.float32), jnp.asarray(rng.normal(size=D), jnp.float32),
                    float(t), float(alpha), sigma))
    return out


def _atoms():
    y = jnp.array([0.3, -1.2])
    A = jnp.array([[1.0, 0.5, 0.0], [0.0, -1.0, 2.0]])
    lik = potentials.likelihood(lambda x0: dist.Normal(A @ x0, 0.7), y)
    rew = potentials.reward(lambda x0: -jnp.sum((x0 - 1.0) ** 2), lam=2.5)
    noisy = potentials.classifier(
        lambda x0: jnp.array([x0[0], x0[1] - x0[2], 0.5]), 1,
        noisy_logits_fn=lambda xt, t: jnp.array([xt[0] * t, -xt[2], 1.0]),
    )
    return lik, rew, noisy


def test_atoms_match_hand_computed_values():
    x0 = jnp.array([0.4, -0.2, 1.5])
    y = np.array([0.3, -1.2])
    A = np.array([[1.0, 0.5, 0.0], [0.0, -1.0, 2.0]])
    lik, rew, clf = _atoms()
    expected_lik = stats.norm(A @ np.asarray(x0), 0.7).logpdf(y).sum()
    assert float(lik.log_g(x0)) == pytest.approx(expected_lik, rel=1e-5)
    assert float(rew.log_g(x0)) == pytest.approx(-2.5 * float(jnp.sum((x0 - 1.0) ** 2)), rel=1e-6)
    logits = np.array([0.4, -0.2 - 1.5, 0.5])
    assert float(clf.log_g(x0)) == pytest.approx(logits[1] - np.log(np.exp(logits).sum()), rel=1e-5)
    fac = potentials.factor(lambda x0: jnp.array([x0[0], -x0[2] ** 2]))
    assert float(fac.log_g(x0)) == pytest.approx(0.4 - 1.5**2, rel=1e-6)  # summed like numpyro.factor
    assert float(potentials.zero().log_g(x0)) == 0.0


def test_tweedie_twists_evaluate_the_potential_at_x0_hat():
    lik, rew, _ = _atoms()
    fac = potentials.factor(lambda x0: jnp.sin(x0).sum())
    for x_t, x0_hat, t, a, s in _points():
        for p in (lik, rew, fac):
            assert float(p.log_h(x_t, x0_hat, t, a, s)) == pytest.approx(float(p.log_g(x0_hat)), rel=1e-6)


def test_classifier_twist_uses_the_noisy_classifier():
    _, _, clf = _atoms()
    plain = potentials.classifier(lambda x0: jnp.array([x0[0], x0[1] - x0[2], 0.5]), 1)
    for x_t, x0_hat, t, a, s in _points():
        noisy_logits = np.array([float(x_t[0]) * t, -float(x_t[2]), 1.0])
        expected = noisy_logits[1] - np.log(np.exp(noisy_logits).sum())
        assert float(clf.log_h(x_t, x0_hat, t, a, s)) == pytest.approx(expected, rel=1e-5)
        # without a noisy classifier: the clean one at the Tweedie estimate
        assert float(plain.log_h(x_t, x0_hat, t, a, s)) == pytest.approx(float(plain.log_g(x0_hat)), rel=1e-6)


def test_sum_equals_the_sum_of_its_terms():
    lik, rew, clf = _atoms()
    total = potentials.sum(lik, rew, clf)
    for x_t, x0_hat, t, a, s in _points():
        assert float(total.log_g(x_t)) == pytest.approx(
            float(lik.log_g(x_t) + rew.log_g(x_t) + clf.log_g(x_t)), rel=1e-6)
        assert float(total.log_h(x_t, x0_hat, t, a, s)) == pytest.approx(
            float(sum(p.log_h(x_t, x0_hat, t, a, s) for p in (lik, rew, clf))), rel=1e-6)
    empty = potentials.sum()
    assert float(empty.log_g(jnp.ones(D))) == 0.0
    assert float(empty.log_h(jnp.ones(D), jnp.ones(D), 0.5, 0.7, 0.7)) == 0.0


def test_scale_multiplies_potential_and_twist():
    _, rew, clf = _atoms()
    for c in (0.0, 0.3, -2.0):
        scaled = potentials.scale(potentials.sum(rew, clf), c)
        for x_t, x0_hat, t, a, s in _points():
            assert float(scaled.log_g(x0_hat)) == pytest.approx(c * float(rew.log_g(x0_hat) + clf.log_g(x0_hat)), abs=1e-5)
            assert float(scaled.log_h(x_t, x0_hat, t, a, s)) == pytest.approx(
                c * float(rew.log_h(x_t, x0_hat, t, a, s) + clf.log_h(x_t, x0_hat, t, a, s)), abs=1e-5)


def test_anneal_tempers_the_twist_only():
    lik, _, clf = _atoms()
    w = lambda t: jnp.clip(1.0 - t, 0.0, 1.0) ** 2
    annealed = potentials.anneal(potentials.sum(lik, clf), w)
    for x_t, x0_hat, t, a, s in _points():
        assert float(annealed.log_g(x0_hat)) == pytest.approx(float(lik.log_g(x0_hat) + clf.log_g(x0_hat)), rel=1e-6)
        raw = float(lik.log_h(x_t, x0_hat, t, a, s) + clf.log_h(x_t, x0_hat, t, a, s))
        assert float(annealed.log_h(x_t, x0_hat, t, a, s)) == pytest.approx((1 - t) ** 2 * raw, rel=1e-5)
    # weight 1 at t = 0 keeps the twist equal to the potential's own twist
    x_t, x0_hat, _, a, s = _points()[0]
    assert float(annealed.log_h(x_t, x0_hat, 0.0, a, s)) == pytest.approx(
        float(lik.log_h(x_t, x0_hat, 0.0, a, s) + clf.log_h(x_t, x0_hat, 0.0, a, s)), rel=1e-6)


def test_combinators_compose_under_jit_and_grad():
    lik, rew, _ = _atoms()
    p = potentials.scale(potentials.sum(lik, potentials.anneal(rew, lambda t: 1 - t)), 0.5)
    x0 = jnp.array([0.1, 0.2, -0.3])
    g = jax.jit(jax.grad(p.log_g))(x0)
    g_ref = 0.5 * (jax.grad(lik.log_g)(x0) + jax.grad(rew.log_g)(x0))
    np.testing.assert_allclose(np.asarray(g), np.asarray(g_ref), rtol=1e-5)


# ---------------------------------------------------------------------------- linear-Gaussian

def _lg_cases():
    rng = np.random.default_rng(1)
    return {
        "wide": (rng.normal(size=(2, 4)), rng.normal(size=2), 0.3),
        "tall": (rng.normal(size=(5, 3)), rng.normal(size=5), np.array([0.1, 0.5, 0.2, 1.0, 0.05])),
        "rank_deficient": (np.array([[1.0, 2.0, 0.0], [2.0, 4.0, 0.0], [0.0, 0.0, 1.0]]), rng.normal(size=3), 0.2),
        "tiny_noise": (rng.normal(size=(2, 3)), rng.normal(size=2), 1e-4),
    }


@pytest.mark.parametrize("case", sorted(_lg_cases()))
def test_linear_gaussian_log_g_equals_scipy(case):
    A, y, var = _lg_cases()[case]
    p = potentials.linear_gaussian(A, y, var)
    cov = np.diag(np.broadcast_to(var, y.shape))
    rng = np.random.default_rng(2)
    for _ in range(3):
        x0 = rng.normal(size=A.shape[1])
        if case == "tiny_noise":  # keep the residual O(1) so float32 has something to resolve
            x0 = np.linalg.lstsq(A, y, rcond=None)[0] + 0.01 * x0
        expected = stats.multivariate_normal(A @ x0, cov).logpdf(y)
        got = float(p.log_g(jnp.asarray(x0, jnp.float32)))
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-3)


def test_linear_gaussian_accepts_an_operator_and_image_shaped_x():
    mask = np.array([[True, False, True], [False, True, True]])
    op = operators.Inpaint(mask)
    x0 = np.random.default_rng(3).normal(size=(2, 3))
    y = np.array([0.5, -0.5, 1.0, 0.0])
    p = potentials.linear_gaussian(op, y, 0.25)
    expected = stats.norm(x0[mask], 0.5).logpdf(y).sum()
    assert float(p.log_g(jnp.asarray(x0, jnp.float32))) == pytest.approx(expected, rel=1e-5)


@pytest.mark.parametrize("case", sorted(_lg_cases()))
def test_linear_gaussian_twist_tends_to_log_g_as_sigma_vanishes(case):
    A, y, var = _lg_cases()[case]
    p = potentials.linear_gaussian(A, y, var, data_var=2.0)
    x0 = jnp.asarray(np.linalg.lstsq(A, y, rcond=None)[0] + 0.1, jnp.float32)
    target = float(p.log_g(x0))
    gaps = []
    # r_t^2 = Var[x_0 | x_t] ~ sigma^2 must fall below the noise variance (1e-4 in one case)
    for sigma in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
        alpha = float(np.sqrt(1 - sigma**2))
        gaps.append(abs(float(p.log_h(x0, x0, 0.0, alpha, sigma)) - target))
    assert gaps[-1] < 1e-3 * (1 + abs(target)) + 1e-3
    assert all(a >= b for a, b in zip(gaps, gaps[1:]))


@pytest.mark.parametrize("alpha,sigma", [(0.99, 0.14), (0.8, 0.6), (0.3, 0.954), (1.0, 2.0)])
@pytest.mark.parametrize("case", ["wide", "tall"])
def test_linear_gaussian_twist_is_exact_for_gaussian_data(case, alpha, sigma):
    """For x_0 ~ N(0, v I), x_t = alpha x_0 + sigma eps and y = A x_0 + N(0, S): (x_t, y) is jointly
    Gaussian, so p(y | x_t) is the Schur-complement Gaussian. The twist, fed the exact Tweedie
    estimate E[x_0 | x_t], must equal it."""
    A, y, var = _lg_cases()[case]
    v = 1.7
    dy, d = A.shape
    S = np.diag(np.broadcast_to(var, (dy,)).astype(np.float64))
    p = potentials.linear_gaussian(A, y, var, data_var=v)
    cov_tt = (alpha**2 * v + sigma**2) * np.eye(d)
    cov_yt = alpha * v * A  # Cov[y, x_t]
    cov_yy = v * A @ A.T + S
    rng = np.random.default_rng(4)
    for _ in range(3):
        x_t = rng.normal(size=d) * np.sqrt(alpha**2 * v + sigma**2)
        mean = cov_yt @ np.linalg.solve(cov_tt, x_t)
        cov = cov_yy - cov_yt @ np.linalg.solve(cov_tt, cov_yt.T)
        expected = stats.multivariate_normal(mean, cov).logpdf(y)
        x0_hat = alpha * v / (alpha**2 * v + sigma**2) * x_t
        got = float(p.log_h(jnp.asarray(x_t, jnp.float32), jnp.asarray(x0_hat, jnp.float32), 0.5, alpha, sigma))
        assert got == pytest.approx(expected, rel=1e-4, abs=1e-4)


def test_linear_gaussian_twist_stays_finite_where_the_plain_lookahead_is_extreme():
    # sigma_y tiny and x0_hat far from the data: the plain look-ahead is ~ -1e9, the corrected
    # twist at high noise is a broad Gaussian
    A, y = np.eye(2), np.array([0.5, -0.5])
    p = potentials.linear_gaussian(A, y, 1e-8)
    x0_hat = jnp.array([3.0, 3.0])
    plain = float(p.log_g(x0_hat))
    twist = float(p.log_h(x0_hat, x0_hat, 0.9, 0.1, float(np.sqrt(0.99))))
    assert plain < -1e8
    assert np.isfinite(twist) and twist > -20


def test_linear_gaussian_build_errors():
    with pytest.raises(ValueError, match="positive"):
        potentials.LinearGaussian.build(np.eye(2), np.zeros(2), np.array([0.1, 0.0]))
    with pytest.raises(ValueError, match="shape"):
        potentials.LinearGaussian.build(np.eye(2), np.zeros(3), 0.1)
