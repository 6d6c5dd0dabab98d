"""The exact Gaussian mixture, the project's ground truth: every closed form checked independently.

Independent references: jax.grad and finite differences of the log-density, scipy's multivariate
normal, self-normalised importance sampling (SNIS) from prior draws made here with numpy (not with
``GaussianMixture.sample``), information-form Gaussian conditioning, and quadrature on a 2-D grid.
Monte Carlo comparisons use a tolerance of 5 estimated standard errors (fixed seeds).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats
from scipy.special import logsumexp

from pp_diffusion import GaussianMixture


def _spd(rng, d, floor=0.2):
    m = rng.normal(size=(d, d))
    return m @ m.T / d + floor * np.eye(d)


def _make(kind, d=3, k=3, seed=0):
    """(mixture, weights, means, dense covariances) with covariances of the given kind."""
    rng = np.random.default_rng(seed)
    w = rng.uniform(0.5, 2.0, size=k)
    mu = rng.normal(scale=2.0, size=(k, d))
    if kind == "iso":
        cov = rng.uniform(0.3, 1.5, size=k)
        dense = cov[:, None, None] * np.eye(d)
    elif kind == "diag":
        cov = rng.uniform(0.2, 2.0, size=(k, d))
        dense = np.stack([np.diag(c) for c in cov])
    elif kind == "full":
        cov = np.stack([_spd(rng, d) for _ in range(k)])
        dense = cov
    else:
        raise AssertionError(kind)
    return GaussianMixture(w, mu, cov), w / w.sum(), mu, dense


KINDS = ["iso", "diag", "full"]
NOISE_LEVELS = [(1.0, 0.0), (0.9, 0.3), (0.6, 0.8), (0.1, 0.995), (1.0, 4.0), (0.5, 0.5)]


# Batched over x and jitted with (alpha, sigma) as traced arguments: one compilation per mixture
# structure (diagonal or rotated), reused across noise levels; this keeps the file fast.
_logp = jax.jit(jax.vmap(lambda gm, x, a, s: gm.marginal_log_prob(x, a, s), in_axes=(None, 0, None, None)))
_grad_logp = jax.jit(jax.vmap(jax.grad(lambda x, gm, a, s: gm.marginal_log_prob(x, a, s)), in_axes=(0, None, None, None)))
_score = jax.jit(jax.vmap(lambda gm, x, a, s: gm.score(x, a, s), in_axes=(None, 0, None, None)))
_denoise = jax.jit(jax.vmap(lambda gm, x, a, s: gm.denoise(x, a, s), in_axes=(None, 0, None, None)))
_sample = jax.jit(lambda gm, key, a, s: gm.sample(key, 20_000, a, s))


def _scipy_log_marginal(x, w, mu, cov, alpha, sigma):
    d = mu.shape[1]
    return logsumexp(
        [np.log(wk) + stats.multivariate_normal(alpha * m, alpha**2 * c + sigma**2 * np.eye(d)).logpdf(x)
         for wk, m, c in zip(w, mu, cov)],
        axis=0,
    )


def _prior_draws(rng, w, mu, cov, n):
    """x0 ~ the mixture, with component labels; numpy only (independent of GaussianMixture.sample)."""
    comp = rng.choice(len(w), size=n, p=w)
    z = rng.normal(size=(n, mu.shape[1]))
    # eigen square root: works for singular covariances too
    roots = []
    for c in cov:
        vals, vecs = np.linalg.eigh(c)
        roots.append(vecs * np.sqrt(np.clip(vals, 0, None)))
    roots = np.stack(roots)
    return mu[comp] + np.einsum("nij,nj->ni", roots[comp], z), comp


def _snis(values, logw):
    """Self-normalised IS estimate of E[values] and its delta-method standard error."""
    wn = np.exp(logw - logw.max())
    wn /= wn.sum()
    est = np.tensordot(wn, values, axes=1)
    resid = values - est
    se = np.sqrt(np.tensordot(wn**2, resid**2, axes=1))
    return est, se


def _gauss_loglik(y, pred, noise_cov):
    """log N(y; pred_i, noise_cov) for pred of shape (n, dy)."""
    return stats.multivariate_normal(np.zeros(len(y)), noise_cov).logpdf(y - pred)


# --------------------------------------------------------------------------- construction

@pytest.mark.parametrize("kind", KINDS)
def test_stores_what_it_was_given(kind):
    gm, w, mu, cov = _make(kind)
    assert gm.num_components == 3 and gm.dim == 3
    np.testing.assert_allclose(np.asarray(gm.weights), w, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gm.means), mu, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(gm.covariances()), cov, rtol=1e-5, atol=1e-6)
    assert (gm.eigvecs is None) == (kind != "full")


def test_default_covariance_is_identity():
    gm = GaussianMixture([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]])
    np.testing.assert_allclose(np.asarray(gm.covariances()), np.stack([np.eye(2)] * 2))
    np.testing.assert_allclose(np.asarray(gm.weights), [0.5, 0.5], rtol=1e-6)


# --------------------------------------------------------------------------- noisy marginals

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha,sigma", NOISE_LEVELS)
def test_marginal_log_prob_matches_scipy(kind, alpha, sigma):
    gm, w, mu, cov = _make(kind)
    rng = np.random.default_rng(1)
    x = alpha * mu[rng.integers(0, 3, size=8)] + rng.normal(scale=1.5, size=(8, 3))
    got = np.asarray(_logp(gm, jnp.asarray(x, jnp.float32), alpha, sigma))
    expected = _scipy_log_marginal(x, w, mu, cov, alpha, sigma)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_log_prob_is_the_clean_density_and_batches(kind):
    gm, w, mu, cov = _make(kind)
    x = np.random.default_rng(2).normal(scale=2.0, size=(2, 4, 3))
    expected = _scipy_log_marginal(x.reshape(-1, 3), w, mu, cov, 1.0, 0.0).reshape(2, 4)
    got = np.asarray(gm.log_prob(x))
    assert got.shape == (2, 4)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("kind", KINDS)
def test_responsibilities_match_scipy(kind):
    gm, w, mu, cov = _make(kind)
    alpha, sigma = 0.8, 0.6
    x = np.array([0.3, -1.0, 0.5])
    logs = np.array([np.log(wk) + stats.multivariate_normal(alpha * m, alpha**2 * c + sigma**2 * np.eye(3)).logpdf(x)
                     for wk, m, c in zip(w, mu, cov)])
    expected = np.exp(logs - logsumexp(logs))
    np.testing.assert_allclose(np.asarray(gm.responsibilities(x, alpha, sigma)), expected, rtol=1e-4, atol=1e-6)


def _points(gm, alpha, sigma, n=6, seed=3):
    return _sample(gm, jax.random.key(seed), alpha, sigma)[:n]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha,sigma", NOISE_LEVELS)
def test_score_is_grad_of_marginal_log_prob(kind, alpha, sigma):
    gm, *_ = _make(kind)
    x = _points(gm, alpha, sigma)
    score = _score(gm, x, alpha, sigma)
    grad = _grad_logp(x, gm, alpha, sigma)
    scale = float(jnp.max(jnp.abs(grad)))
    np.testing.assert_allclose(np.asarray(score), np.asarray(grad), rtol=1e-4, atol=1e-5 * scale)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.8, 0.6), (0.3, 0.95)])
def test_score_matches_central_finite_differences(kind, alpha, sigma):
    gm, *_ = _make(kind)
    x = np.asarray(_points(gm, alpha, sigma, n=4), np.float32)
    h = 1e-2
    steps = h * np.eye(3, dtype=np.float32)
    plus = np.asarray(_logp(gm, (x[:, None] + steps).reshape(-1, 3), alpha, sigma)).reshape(-1, 3)
    minus = np.asarray(_logp(gm, (x[:, None] - steps).reshape(-1, 3), alpha, sigma)).reshape(-1, 3)
    fd = (plus - minus) / (2 * h)
    score = np.asarray(_score(gm, x, alpha, sigma))
    np.testing.assert_allclose(score, fd, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha,sigma", [a for a in NOISE_LEVELS if a[1] > 0])
def test_denoiser_satisfies_tweedie(kind, alpha, sigma):
    gm, *_ = _make(kind)
    x = _points(gm, alpha, sigma)
    den = _denoise(gm, x, alpha, sigma)
    tweedie = (x + sigma**2 * _score(gm, x, alpha, sigma)) / alpha
    scale = float(jnp.max(jnp.abs(tweedie)))
    np.testing.assert_allclose(np.asarray(den), np.asarray(tweedie), rtol=1e-4, atol=2e-5 * scale)


@pytest.mark.parametrize("kind", KINDS)
def test_denoiser_at_the_extremes(kind):
    gm, w, mu, _ = _make(kind)
    x = jnp.array([0.4, -0.2, 1.0])
    # no noise: the data point itself
    np.testing.assert_allclose(np.asarray(gm.denoise(x, 1.0, 0.0)), np.asarray(x), rtol=1e-5, atol=1e-6)
    # no signal: the prior mean
    np.testing.assert_allclose(np.asarray(gm.denoise(x, 1e-6, 1.0)), w @ mu, rtol=1e-4, atol=1e-4)


def test_denoiser_matches_importance_sampling_2d():
    gm, w, mu, cov = _make("full", d=2, k=3, seed=4)
    rng = np.random.default_rng(5)
    x0, _ = _prior_draws(rng, w, mu, cov, 200_000)
    for alpha, sigma in [(0.8, 0.6), (0.5, 1.0)]:
        for xt in [np.array([0.5, -0.3]), alpha * mu[1] + np.array([0.4, 0.4])]:
            logw = -0.5 * np.sum((xt - alpha * x0) ** 2, axis=1) / sigma**2
            est, se = _snis(x0, logw)
            got = np.asarray(gm.denoise(jnp.asarray(xt, jnp.float32), alpha, sigma))
            assert np.all(se < 0.05)  # the check is informative
            np.testing.assert_array_less(np.abs(got - est), 5 * se + 1e-4)


# --------------------------------------------------------------------------- sampling

@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("alpha,sigma", [(1.0, 0.0), (0.6, 0.8)])
def test_sample_mean_and_covariance(kind, alpha, sigma):
    gm, w, mu, cov = _make(kind)
    n = 20_000
    x = np.asarray(_sample(gm, jax.random.key(7), alpha, sigma), np.float64)
    assert x.shape == (n, 3)
    m = w @ mu
    c = np.einsum("k,kij->ij", w, cov + np.einsum("ki,kj->kij", mu, mu)) - np.outer(m, m)
    mean_t, cov_t = alpha * m, alpha**2 * c + sigma**2 * np.eye(3)
    se_mean = np.sqrt(np.diag(cov_t) / n)
    np.testing.assert_array_less(np.abs(x.mean(0) - mean_t), 5 * se_mean)
    xc = x - mean_t
    prods = np.einsum("ni,nj->nij", xc, xc)
    se_cov = prods.std(0) / np.sqrt(n)
    np.testing.assert_array_less(np.abs(prods.mean(0) - cov_t), 5 * se_cov)


@pytest.mark.parametrize("kind", KINDS)
def test_covariance_is_the_law_of_total_variance_and_the_mean_variance_its_trace(kind):
    gm, w, mu, cov = _make(kind)
    m = w @ mu
    within = np.einsum("k,kij->ij", w, cov)
    between = np.einsum("k,ki,kj->ij", w, mu - m, mu - m)
    np.testing.assert_allclose(gm.covariance(), within + between, rtol=1e-5, atol=1e-6)
    assert np.trace(gm.covariance()) / 3 == pytest.approx(gm.mean_variance(), rel=1e-6)


def test_full_covariance_sampling_in_batches_is_the_per_draw_rotation():
    """d = 300: draws are rotated in batches of 4e6 // d^2 = 44 (a remainder batch included); each
    must equal mu_k + Q_k (std_k * z) computed draw by draw from the same component and noise."""
    rng = np.random.default_rng(3)
    d, k, n = 300, 3, 101
    q = np.linalg.qr(rng.normal(size=(k, d, d)))[0]
    vals = rng.uniform(0.5, 2.0, size=(k, d))
    cov = np.einsum("kij,kj,klj->kil", q, vals, q)
    gm = GaussianMixture(np.ones(k), rng.normal(size=(k, d)), cov)
    key = jax.random.key(9)
    x = np.asarray(gm.sample(key, n, 0.7, 0.4), np.float64)
    k_comp, k_noise = jax.random.split(key)
    comp = np.asarray(jax.random.categorical(k_comp, gm.log_weights, shape=(n,)))
    z = np.asarray(jax.random.normal(k_noise, (n, d)), np.float64)
    lam = np.asarray(gm.eigvals, np.float64)[comp]
    Q = np.asarray(gm.eigvecs, np.float64)[comp]
    expected = 0.7 * np.asarray(gm.means, np.float64)[comp] + np.einsum("nij,nj->ni", Q, np.sqrt(0.49 * lam + 0.16) * z)
    assert len(set(comp.tolist())) == k
    np.testing.assert_allclose(x, expected, atol=2e-4)


def test_sample_component_frequencies():
    # well separated components: the nearest mean identifies the component
    gm = GaussianMixture([0.6, 0.3, 0.1], [[-20.0, 0.0], [0.0, 20.0], [20.0, 0.0]], [0.5, 1.0, 2.0])
    n = 20_000
    x = np.asarray(gm.sample(jax.random.key(8), n))
    comp = np.argmin(np.linalg.norm(x[:, None] - np.asarray(gm.means)[None], axis=-1), axis=1)
    freq = np.bincount(comp, minlength=3) / n
    w = np.array([0.6, 0.3, 0.1])
    np.testing.assert_array_less(np.abs(freq - w), 5 * np.sqrt(w * (1 - w) / n))


# --------------------------------------------------------------------------- linear-Gaussian observations

def _info_form_posterior(mu, cov, A, y, noise):
    """Per-component posterior by information-form conditioning (needs non-singular covariances)."""
    noise_inv = np.linalg.inv(noise)
    means, covs = [], []
    for m, c in zip(mu, cov):
        prec = np.linalg.inv(c) + A.T @ noise_inv @ A
        pc = np.linalg.inv(prec)
        means.append(pc @ (np.linalg.solve(c, m) + A.T @ noise_inv @ y))
        covs.append(pc)
    return np.stack(means), np.stack(covs)


def _direct_log_evidence_terms(w, mu, cov, A, y, noise):
    return np.array([np.log(wk) + stats.multivariate_normal(A @ m, A @ c @ A.T + noise).logpdf(y)
                     for wk, m, c in zip(w, mu, cov)])


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("noise_form", ["scalar", "diag", "matrix"])
def test_posterior_matches_conditioning_formulas(kind, noise_form):
    gm, w, mu, cov = _make(kind, d=3, k=3, seed=9)
    rng = np.random.default_rng(10)
    A = rng.normal(size=(2, 3))
    y = rng.normal(size=2)
    noise = {"scalar": 0.3, "diag": np.array([0.2, 0.5]), "matrix": np.array([[0.4, 0.1], [0.1, 0.3]])}[noise_form]
    noise_mat = {"scalar": 0.3 * np.eye(2), "diag": np.diag([0.2, 0.5]), "matrix": noise}[noise_form]
    post = gm.posterior(A, y, noise)
    means, covs = _info_form_posterior(mu, cov, A, y, noise_mat)
    terms = _direct_log_evidence_terms(w, mu, cov, A, y, noise_mat)
    np.testing.assert_allclose(np.asarray(post.means), means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(post.covariances()), covs, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(post.weights), np.exp(terms - logsumexp(terms)), rtol=1e-4, atol=1e-6)
    assert gm.log_evidence(A, y, noise) == pytest.approx(logsumexp(terms), abs=1e-5)


def _obs_2d(seed=11):
    gm, w, mu, cov = _make("full", d=2, k=3, seed=seed)
    return gm, w, mu, cov


@pytest.mark.parametrize(
    "A,y,noise",
    [
        (np.array([[1.0, 0.5]]), np.array([0.8]), 0.5),
        (np.array([[1.0, 0.0], [0.3, -1.0]]), np.array([-1.0, 0.7]), np.array([[0.6, 0.2], [0.2, 0.4]])),
    ],
    ids=["1obs", "2obs"],
)
def test_posterior_and_evidence_match_importance_sampling_2d(A, y, noise):
    gm, w, mu, cov = _obs_2d()
    noise_mat = np.atleast_2d(noise) * (np.eye(len(y)) if np.ndim(noise) == 0 else 1.0)
    rng = np.random.default_rng(12)
    n = 200_000
    x0, comp = _prior_draws(rng, w, mu, cov, n)
    loglik = _gauss_loglik(y, x0 @ A.T, noise_mat)
    post = gm.posterior(A, y, noise)
    pw = np.asarray(post.weights)
    pm = np.asarray(post.means)
    pc = np.asarray(post.covariances())

    # component weights
    onehot = (comp[:, None] == np.arange(3)).astype(float)
    est_w, se_w = _snis(onehot, loglik)
    np.testing.assert_array_less(np.abs(pw - est_w), 5 * se_w + 1e-4)
    # posterior mean
    mean = pw @ pm
    est_m, se_m = _snis(x0, loglik)
    assert np.all(se_m < 0.02)
    np.testing.assert_array_less(np.abs(mean - est_m), 5 * se_m + 1e-4)
    # posterior second moment
    second = np.einsum("k,kij->ij", pw, pc + np.einsum("ki,kj->kij", pm, pm))
    est_s, se_s = _snis(np.einsum("ni,nj->nij", x0, x0), loglik)
    np.testing.assert_array_less(np.abs(second - est_s), 5 * se_s + 1e-4)

    # evidence: log of the Monte Carlo mean of the likelihood over prior draws
    lik = np.exp(loglik)
    rel_se = lik.std() / (lik.mean() * np.sqrt(n))
    assert rel_se < 0.02
    assert gm.log_evidence(A, y, noise) == pytest.approx(np.log(lik.mean()), abs=5 * rel_se)


@pytest.mark.parametrize(
    "A,y,noise",
    [
        (np.array([[1.0, 0.5]]), np.array([0.8]), 0.5),
        (np.array([[1.0, 0.0], [0.3, -1.0]]), np.array([-1.0, 0.7]), np.array([[0.6, 0.2], [0.2, 0.4]])),
        (np.array([[0.0, 2.0]]), np.array([9.0]), 0.05),  # y far in the tail
    ],
    ids=["1obs", "2obs", "tail"],
)
def test_log_evidence_matches_quadrature_2d(A, y, noise):
    """p(y) = int N(y; A x, noise) p0(x) dx by a Riemann sum on a fine grid (spectrally accurate here)."""
    gm, w, mu, cov = _obs_2d()
    noise_mat = np.atleast_2d(noise) * (np.eye(len(y)) if np.ndim(noise) == 0 else 1.0)
    lo, hi = mu.min(0) - 9.0, mu.max(0) + 9.0
    g0, g1 = np.linspace(lo[0], hi[0], 501), np.linspace(lo[1], hi[1], 501)
    xx = np.stack(np.meshgrid(g0, g1, indexing="ij"), axis=-1).reshape(-1, 2)
    log_prior = _scipy_log_marginal(xx, w, mu, cov, 1.0, 0.0)
    log_integrand = log_prior + _gauss_loglik(y, xx @ A.T, noise_mat)
    cell = (g0[1] - g0[0]) * (g1[1] - g1[0])
    quad = logsumexp(log_integrand) + np.log(cell)
    assert gm.log_evidence(A, y, noise) == pytest.approx(quad, abs=1e-4)


def test_posterior_of_singular_component():
    # component 0 lives on the line mu0 + span(u); component 1 is full rank
    u = np.array([1.0, 0.8])
    s2 = 2.0
    cov0 = s2 * np.outer(u, u)
    cov1 = np.array([[1.0, 0.3], [0.3, 0.5]])
    w = np.array([0.4, 0.6])
    mu = np.array([[0.0, 1.0], [2.0, -1.0]])
    gm = GaussianMixture(w, mu, np.stack([cov0, cov1]))
    np.testing.assert_allclose(np.asarray(gm.covariances())[0], cov0, atol=1e-5)
    A = np.array([[0.0, 1.0]])
    y = np.array([0.5])
    noise = 0.1
    post = gm.posterior(A, y, noise)
    pm, pc, pw = np.asarray(post.means), np.asarray(post.covariances()), np.asarray(post.weights)
    assert np.all(np.isfinite(pm)) and np.all(np.isfinite(pc))

    # component 0 by hand: x = mu0 + a u, a ~ N(0, s2); y = A mu0 + a (A u) + N(0, noise)
    g = float((A @ u)[0])
    post_var_a = 1.0 / (1.0 / s2 + g**2 / noise)
    post_mean_a = post_var_a * g * float((y - A @ mu[0])[0]) / noise
    np.testing.assert_allclose(pm[0], mu[0] + post_mean_a * u, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(pc[0], post_var_a * np.outer(u, u), rtol=1e-4, atol=1e-5)
    normal = np.array([-u[1], u[0]])
    np.testing.assert_allclose(pc[0] @ normal, 0.0, atol=1e-5)  # still singular along the normal

    # weights and evidence: the component marginal likelihoods N(y; A mu_k, A C_k A^T + noise)
    terms = _direct_log_evidence_terms(w, mu, np.stack([cov0, cov1]), A, y, noise * np.eye(1))
    np.testing.assert_allclose(pw, np.exp(terms - logsumexp(terms)), rtol=1e-4)
    assert gm.log_evidence(A, y, noise) == pytest.approx(logsumexp(terms), abs=1e-5)

    # against importance sampling from prior draws
    rng = np.random.default_rng(13)
    x0, comp = _prior_draws(rng, w, mu, np.stack([cov0, cov1]), 100_000)
    loglik = _gauss_loglik(y, x0 @ A.T, noise * np.eye(1))
    est_m, se_m = _snis(x0, loglik)
    np.testing.assert_array_less(np.abs(pw @ pm - est_m), 5 * se_m + 1e-4)
    est_w, se_w = _snis((comp[:, None] == np.arange(2)).astype(float), loglik)
    np.testing.assert_array_less(np.abs(pw - est_w), 5 * se_w + 1e-4)

    # exact posterior draws of the singular component alone stay on its line (to float32 round-off)
    post0 = GaussianMixture([1.0], mu[:1], cov0[None]).posterior(A, y, noise)
    np.testing.assert_allclose(np.asarray(post0.means)[0], pm[0], rtol=1e-5, atol=1e-6)
    assert float(jnp.min(post0.eigvals)) < 1e-10
    draws = np.asarray(post0.sample(jax.random.key(14), 2000), np.float64)
    np.testing.assert_allclose((draws - pm[0]) @ normal, 0.0, atol=1e-5)
    coef = (draws - pm[0]) @ u / (u @ u)
    assert abs(coef.mean()) < 5 * np.sqrt(post_var_a / 2000)
    assert abs(coef.var() / post_var_a - 1) < 5 * np.sqrt(2 / 2000)


def test_posterior_with_one_dimensional_A_and_scalar_y():
    gm, w, mu, cov = _obs_2d()
    a = np.array([1.0, 0.5])
    p1 = gm.posterior(a, 0.8, 0.5)
    p2 = gm.posterior(a[None, :], np.array([0.8]), 0.5)
    np.testing.assert_allclose(np.asarray(p1.means), np.asarray(p2.means))
    assert gm.log_evidence(a, 0.8, 0.5) == gm.log_evidence(a[None, :], [0.8], 0.5)


# --------------------------------------------------------------------------- errors

def test_observation_shape_errors():
    gm, *_ = _obs_2d()
    A = np.array([[1.0, 0.5]])
    with pytest.raises(ValueError, match="y must have shape"):
        gm.posterior(A, np.array([0.1, 0.2]), 0.5)
    with pytest.raises(ValueError, match="y must have shape"):
        gm.log_evidence(np.eye(2), np.array([0.1]), 0.5)
    with pytest.raises(ValueError, match="A must have shape"):
        gm.posterior(np.ones((1, 3)), np.array([0.1]), 0.5)
    with pytest.raises(ValueError, match="A must have shape"):
        gm.log_evidence(np.ones(3), 0.1, 0.5)
    with pytest.raises(ValueError, match="noise_cov must be"):
        gm.posterior(A, np.array([0.1]), np.ones((2, 2)))
    with pytest.raises(ValueError, match="noise_cov must be"):
        gm.log_evidence(np.eye(2), np.zeros(2), np.ones(3))


@pytest.mark.parametrize(
    "weights,means,covs,match",
    [
        ([1.0, 1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], None, "weights"),
        ([1.0], [[0.0, 0.0], [1.0, 1.0]], None, "weights"),
        ([1.0, -0.5], [[0.0, 0.0], [1.0, 1.0]], None, "weights"),
        ([0.0, 0.0], [[0.0, 0.0], [1.0, 1.0]], None, "weights"),
        ([1.0, 1.0], [0.0, 1.0], None, "means"),
        ([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], [1.0, 1.0, 1.0], "covariances must have shape"),
        ([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], np.ones((2, 3, 3)), "covariances must have shape"),
        ([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], [[[1.0, 0.5], [0.0, 1.0]]] * 2, "symmetric"),
        ([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], [[[1.0, 0.0], [0.0, -1.0]]] * 2, "positive semi-definite"),
        ([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], [[[1.0, 2.0], [2.0, 1.0]]] * 2, "positive semi-definite"),
        ([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], [[1.0, 1.0], [1.0, -0.1]], "positive semi-definite"),
        ([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]], [1.0, -2.0], "positive semi-definite"),
    ],
)
def test_constructor_errors(weights, means, covs, match):
    with pytest.raises(ValueError, match=match):
        GaussianMixture(weights, means, covs)


def test_psd_singular_covariance_accepted():
    # exactly singular PSD matrices (eigenvalues 0 up to round-off) are fine
    v = np.array([0.3, -1.7, 2.2])
    gm = GaussianMixture([1.0], [[0.0, 0.0, 0.0]], [np.outer(v, v)])
    assert float(jnp.min(gm.eigvals)) >= 0.0
    np.testing.assert_allclose(np.asarray(gm.covariances())[0], np.outer(v, v), atol=1e-5)
