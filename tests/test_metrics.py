"""sliced_wasserstein against exact one-dimensional Wasserstein distances."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from pp_diffusion.metrics import (
    frechet_distance,
    gaussian_frechet_distance,
    nearest_neighbour_distance,
)
from pp_diffusion.metrics import sliced_wasserstein as _sliced_wasserstein

KEY = jax.random.key(0)
# jitted: one compilation per input shape instead of one per primitive of jnp.quantile
sliced_wasserstein = jax.jit(_sliced_wasserstein, static_argnames=("num_directions", "p"))


def _normal(seed, n, d, shift=0.0):
    return np.random.default_rng(seed).normal(size=(n, d)).astype(np.float32) + np.float32(shift)


@pytest.mark.parametrize("p", [1, 2])
def test_zero_for_identical_sets(p):
    x = _normal(0, 500, 3)
    assert float(sliced_wasserstein(KEY, x, x, num_directions=100, p=p)) == 0.0
    # and for the same set in another order
    perm = np.random.default_rng(1).permutation(500)
    assert float(sliced_wasserstein(KEY, x, x[perm], num_directions=100, p=p)) == pytest.approx(0.0, abs=1e-6)


@pytest.mark.parametrize("p", [1, 2])
def test_symmetric(p):
    x, y = _normal(2, 400, 2), _normal(3, 250, 2, shift=0.7)
    a = float(sliced_wasserstein(KEY, x, y, num_directions=100, p=p))
    b = float(sliced_wasserstein(KEY, y, x, num_directions=100, p=p))
    assert a > 0.1
    assert a == pytest.approx(b, rel=1e-6)


@pytest.mark.parametrize("delta", [-1.5, 0.3, 2.0])
@pytest.mark.parametrize("p", [1, 2])
def test_exact_shift_in_1d(delta, p):
    """In 1-D, x and x + delta have W_p = |delta| exactly (every projection is +-1)."""
    x = _normal(4, 1000, 1)
    got = float(sliced_wasserstein(KEY, x, x + np.float32(delta), num_directions=16, p=p))
    assert got == pytest.approx(abs(delta), rel=1e-5)


@pytest.mark.parametrize("delta", [0.5, 1.0, 3.0])
def test_shifted_gaussians_in_1d(delta):
    """Independent draws of N(0, 1) and N(delta, 1): W1 = |delta| up to sampling error."""
    n = 4000
    x, y = _normal(5, n, 1), _normal(6, n, 1, shift=delta)
    got = float(sliced_wasserstein(KEY, x, y, num_directions=16))
    # the W1 between two empirical samples of 4000 Gaussians is about 0.02; 0.1 is > 5 sd
    assert got == pytest.approx(delta, abs=0.1)


def test_matches_scipy_wasserstein_for_unequal_sizes_in_1d():
    x, y = _normal(7, 300, 1), _normal(8, 500, 1, shift=0.4) * 1.5
    exact = stats.wasserstein_distance(x[:, 0], y[:, 0])
    got = float(sliced_wasserstein(KEY, x, y, num_directions=8))
    # the quantile grid of max(n, m) levels is a midpoint rule: error <= total variation / levels
    span = float(max(x.max(), y.max()) - min(x.min(), y.min()))
    assert abs(got - exact) <= 2 * span / 500
    assert abs(got - exact) < 0.02


def test_p2_of_a_scaled_sample_in_1d():
    """y = c x is monotone, so W2(x, c x)^2 = mean((c - 1)^2 x^2) exactly."""
    x = _normal(9, 800, 1)
    c = 1.7
    expected = abs(c - 1) * np.sqrt(np.mean(x.astype(np.float64) ** 2))
    got = float(sliced_wasserstein(KEY, x, np.float32(c) * x, num_directions=4, p=2))
    assert got == pytest.approx(expected, rel=1e-5)


def test_shift_in_2d_averages_over_directions():
    """x and x + delta in 2-D: SW1 = |delta| E|cos(phi)| = 2 |delta| / pi over uniform directions."""
    x = _normal(10, 300, 2)
    delta = np.array([1.2, -0.9], np.float32)
    got = float(sliced_wasserstein(KEY, x, x + delta, num_directions=2000))
    norm = float(np.linalg.norm(delta))
    sd = np.sqrt(0.5 - 4 / np.pi**2) * norm / np.sqrt(2000)  # sd of the directional average
    assert got == pytest.approx(2 * norm / np.pi, abs=5 * sd)


def test_grows_with_the_shift():
    x = _normal(11, 500, 2)
    values = [float(sliced_wasserstein(KEY, x, _normal(12, 500, 2, shift=s), num_directions=200))
              for s in [0.0, 0.5, 1.0, 2.0, 4.0]]
    assert np.all(np.diff(values) > 0)
    assert values[0] < 0.1


def test_flattens_event_dimensions():
    x, y = _normal(13, 200, 4), _normal(14, 300, 4, shift=0.5)
    a = sliced_wasserstein(KEY, x, y, num_directions=100)
    b = sliced_wasserstein(KEY, x.reshape(200, 2, 2), jnp.asarray(y).reshape(300, 2, 2), num_directions=100)
    assert float(a) == pytest.approx(float(b), rel=1e-6)


def test_dimension_mismatch():
    with pytest.raises(ValueError, match="dimension"):
        _sliced_wasserstein(KEY, _normal(0, 10, 2), _normal(1, 10, 3))


# --------------------------------------------------------------------------- Frechet distance


def test_gaussian_frechet_distance_commuting_covariances():
    """Diagonal covariances commute: the distance is |mu_a - mu_b|^2 + sum (sqrt(a_i) - sqrt(b_i))^2."""
    rng = np.random.default_rng(0)
    d = 6
    mu_a, mu_b = rng.normal(size=d), rng.normal(size=d)
    a, b = rng.uniform(0.1, 3.0, size=d), rng.uniform(0.1, 3.0, size=d)
    exact = np.sum((mu_a - mu_b) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert gaussian_frechet_distance(mu_a, np.diag(a), mu_b, np.diag(b)) == pytest.approx(exact, rel=1e-10)
    # the same after a common rotation (commuting, not diagonal), and symmetric
    q, _ = np.linalg.qr(rng.normal(size=(d, d)))
    ca, cb = q @ np.diag(a) @ q.T, q @ np.diag(b) @ q.T
    assert gaussian_frechet_distance(q @ mu_a, ca, q @ mu_b, cb) == pytest.approx(exact, rel=1e-9)
    assert gaussian_frechet_distance(q @ mu_b, cb, q @ mu_a, ca) == pytest.approx(exact, rel=1e-9)
    assert gaussian_frechet_distance(mu_a, ca, mu_a, ca) == pytest.approx(0.0, abs=1e-9)


def test_gaussian_frechet_distance_non_commuting_and_singular():
    """Against the 2x2 closed form Tr sqrt(M) = sqrt(Tr M + 2 sqrt(det M)) with M = Ca Cb, and a
    rank-one covariance (W2 between a point mass and a Gaussian = |mu|^2 + Tr C)."""
    ca = np.array([[2.0, 0.7], [0.7, 1.0]])
    cb = np.array([[0.5, -0.3], [-0.3, 1.5]])
    m = ca @ cb
    trace_root = np.sqrt(np.trace(m) + 2 * np.sqrt(np.linalg.det(m)))
    exact = np.trace(ca) + np.trace(cb) - 2 * trace_root
    assert gaussian_frechet_distance(np.zeros(2), ca, np.zeros(2), cb) == pytest.approx(exact, rel=1e-10)
    mu = np.array([1.0, -2.0])
    assert gaussian_frechet_distance(mu, np.zeros((2, 2)), np.zeros(2), cb) == pytest.approx(5.0 + 2.0, rel=1e-10)
    v = np.array([[1.0], [2.0]])
    rank_one = v @ v.T  # N(0, v v^T) vs N(0, c v v^T): W2^2 = (1 - sqrt(c))^2 |v|^2
    assert gaussian_frechet_distance(np.zeros(2), rank_one, np.zeros(2), 4 * rank_one) == pytest.approx(5.0, rel=1e-8)


def test_frechet_distance_of_samples():
    rng = np.random.default_rng(1)
    d, n = 4, 200_000
    a = rng.normal(size=(n, d)) * np.sqrt([1.0, 2.0, 0.5, 1.0])
    b = rng.normal(size=(n, d)) * np.sqrt([1.0, 0.5, 0.5, 3.0]) + [0.5, 0.0, 0.0, -0.5]
    exact = 0.5 + (np.sqrt(2) - np.sqrt(0.5)) ** 2 + (1 - np.sqrt(3)) ** 2
    assert frechet_distance(a, b) == pytest.approx(exact, abs=0.01)
    # exactly the Gaussian formula at the sample moments (np.cov: the n - 1 normaliser)
    small_a, small_b = a[:50].reshape(50, 2, 2), b[:70]
    moments = lambda x: (x.reshape(len(x), -1).mean(0), np.cov(x.reshape(len(x), -1), rowvar=False))
    expected = gaussian_frechet_distance(*moments(small_a), *moments(small_b))
    assert frechet_distance(small_a, small_b) == pytest.approx(expected, rel=1e-12)
    assert frechet_distance(a[:1000], a[:1000]) == pytest.approx(0.0, abs=1e-8)
    with pytest.raises(ValueError, match="same dimension"):
        frechet_distance(a, b[:, :3])
    with pytest.raises(ValueError, match="at least 2 rows"):
        frechet_distance(a[:1], b)


def test_nearest_neighbour_distance_matches_brute_force():
    rng = np.random.default_rng(2)
    samples, reference = rng.normal(size=(37, 3, 5)), rng.normal(size=(53, 15))
    brute = np.sqrt(((samples.reshape(37, 1, 15) - reference[None]) ** 2).sum(-1)).min(1)
    for chunk_size in (1, 100, 53 * 7, 1 << 22):  # one sample per block, several, all at once
        np.testing.assert_allclose(nearest_neighbour_distance(samples, reference, chunk_size), brute, rtol=1e-10)
    # a sample that is a reference row is at distance 0
    assert nearest_neighbour_distance(reference[[4]], reference)[0] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="same dimension"):
        nearest_neighbour_distance(samples, reference[:, :4])
    with pytest.raises(ValueError, match="chunk_size"):
        nearest_neighbour_distance(samples, reference, 0)


def test_eager_call_sorts_on_the_host_and_agrees_with_the_jitted_metric():
    """Eagerly the projections are sorted by NumPy, under jit by XLA: the same value (to float32
    rounding of the mean), here on sets of different sizes."""
    x, y = _normal(11, 3000, 5), _normal(12, 2000, 5, shift=0.4)
    eager = float(_sliced_wasserstein(KEY, x, y, num_directions=200))
    jitted = float(sliced_wasserstein(KEY, x, y, num_directions=200))
    assert eager > 0.2
    assert eager == pytest.approx(jitted, rel=1e-5)


# --------------------------------------------------------------------------- PSNR and interval coverage


def test_psnr_against_the_definition():
    from pp_diffusion.metrics import psnr

    truth = np.zeros((3, 4, 4))
    estimate = truth + np.array([0.1, 0.2, 0.4])[:, None, None]  # MSE 0.01, 0.04, 0.16
    np.testing.assert_allclose(psnr(estimate, truth, axis=(-2, -1)), 10 * np.log10(4 / np.array([0.01, 0.04, 0.16])))
    assert psnr(estimate, truth) == pytest.approx(10 * np.log10(4 / 0.07))  # all pixels at once
    assert psnr(estimate[0], truth[0], data_range=1.0) == pytest.approx(20.0)


def test_interval_coverage_of_a_calibrated_and_a_too_narrow_posterior():
    from pp_diffusion.metrics import interval_coverage

    rng = np.random.default_rng(0)
    truth = rng.normal(size=(2000,))
    draws = rng.normal(size=(4000, 2000))  # the truth is a draw of the same N(0, 1): calibrated
    assert interval_coverage(draws, truth) == pytest.approx(0.9, abs=0.02)
    assert interval_coverage(draws, truth, level=0.5) == pytest.approx(0.5, abs=0.03)
    # draws half as wide: P(|z| < 1.645 / 2) = 0.59
    assert interval_coverage(0.5 * draws, truth) == pytest.approx(0.59, abs=0.03)
    # the draws' axis can be any axis
    assert interval_coverage(draws.T, truth, axis=1) == interval_coverage(draws, truth)


# --------------------------------------------------------------------------- diversity within groups


def _entropy_exp(eigenvalues):
    lam = np.asarray(eigenvalues, dtype=np.float64)
    lam = lam[lam > 0]
    return float(np.exp(-np.sum(lam * np.log(lam))))


def test_mean_pairwise_distance_by_hand():
    from pp_diffusion.metrics import mean_pairwise_distance

    line = [[0.0, 0.0], [1.0, 0.0], [3.0, 0.0]]  # distances 1, 3, 2: mean 2
    triangle = [[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]]  # distances 3, 4, 5: mean 4
    got = mean_pairwise_distance(np.array([line, triangle]))
    assert got.shape == (2,)
    np.testing.assert_allclose(got, [2.0, 4.0], rtol=1e-12)
    # vectors as one event axis of length 1, and event axes flattened
    assert mean_pairwise_distance(np.array([0.0, 1.0, 3.0])[None, :, None])[0] == pytest.approx(2.0, rel=1e-12)
    assert mean_pairwise_distance(np.array(triangle).reshape(1, 3, 2, 1))[0] == pytest.approx(4.0, rel=1e-12)
    # identical samples are at distance exactly 0
    assert mean_pairwise_distance(np.full((1, 4, 3), 0.7))[0] == 0.0


def test_vendi_score_of_identical_orthogonal_and_far_apart_samples():
    from pp_diffusion.metrics import vendi_score

    rng = np.random.default_rng(0)
    row = rng.normal(size=6)
    identical = np.tile(row, (5, 1))[None]
    assert vendi_score(identical)[0] == pytest.approx(1.0, abs=1e-6)
    assert vendi_score(identical, kernel="rbf", bandwidth=1.0)[0] == pytest.approx(1.0, abs=1e-6)
    # 5 mutually orthogonal vectors of different lengths in 7-D (cosine ignores the length)
    q, _ = np.linalg.qr(rng.normal(size=(7, 7)))
    orthogonal = (q[:5] * rng.uniform(0.5, 3.0, size=(5, 1)))[None]
    assert vendi_score(orthogonal)[0] == pytest.approx(5.0, abs=1e-6)
    # rbf: 4 points 100 apart with bandwidth 1 give K = I
    far = (100.0 * np.arange(4.0))[None, :, None]
    assert vendi_score(far, kernel="rbf", bandwidth=1.0)[0] == pytest.approx(4.0, abs=1e-6)
    # several groups at once, each its own value
    nearly_orthogonal = identical + 1e3 * np.eye(5, 6)[None]
    scores = vendi_score(np.concatenate([identical, nearly_orthogonal]))
    assert scores.shape == (2,)
    assert scores[0] == pytest.approx(1.0, abs=1e-6)
    assert 4.0 < scores[1] < 5.0


@pytest.mark.parametrize("angle", [0.3, 1.0, 2.5])
def test_vendi_score_of_two_points_against_the_formula(angle):
    """Two points with similarity c: K / 2 has the eigenvalues (1 +- c) / 2."""
    from pp_diffusion.metrics import vendi_score

    c = np.cos(angle)
    pair = np.array([[[2.0, 0.0], [np.cos(angle), np.sin(angle)]]])
    expected = _entropy_exp([(1 + c) / 2, (1 - c) / 2])
    assert vendi_score(pair)[0] == pytest.approx(expected, rel=1e-10)
    # rbf: c = exp(-|a - b|^2 / h)
    h = 1.7
    c = np.exp(-np.sum((pair[0, 0] - pair[0, 1]) ** 2) / h)
    expected = _entropy_exp([(1 + c) / 2, (1 - c) / 2])
    assert vendi_score(pair, kernel="rbf", bandwidth=h)[0] == pytest.approx(expected, rel=1e-10)
    # the same through a callable kernel
    rbf = lambda a, b: np.exp(-np.sum((a - b) ** 2) / h)
    assert vendi_score(pair, kernel=rbf)[0] == pytest.approx(expected, rel=1e-10)


def test_vendi_score_callable_kernel_matches_the_built_in_ones():
    from pp_diffusion.metrics import vendi_score

    z = np.random.default_rng(1).normal(size=(3, 6, 2, 2))
    cosine = lambda a, b: a @ b / np.sqrt((a @ a) * (b @ b))
    np.testing.assert_allclose(vendi_score(z, kernel=cosine), vendi_score(z), rtol=1e-10)
    values = vendi_score(z, kernel="rbf", bandwidth=2.0)
    assert np.all((values > 1.0) & (values < 6.0))


def test_expected_modes_covered_exact_value():
    from pp_diffusion.metrics import expected_modes_covered

    assert expected_modes_covered(np.ones(10), 10) == pytest.approx(6.5132, abs=1e-3)
    assert expected_modes_covered(np.ones(10), 10) == pytest.approx(10 * (1 - 0.9**10), rel=1e-12)
    assert expected_modes_covered([3.0, 1.0], 1) == pytest.approx(1.0, rel=1e-12)
    assert expected_modes_covered([3.0, 1.0, 0.0], 2) == pytest.approx(2 - 0.25**2 - 0.75**2, rel=1e-12)


def test_expected_modes_covered_against_monte_carlo():
    from pp_diffusion.metrics import expected_modes_covered, modes_covered

    rng = np.random.default_rng(2)
    weights = np.array([0.35, 0.2, 0.15, 0.1, 0.08, 0.06, 0.04, 0.02])
    n, groups = 8, 20_000
    labels = rng.choice(len(weights), size=(groups, n), p=weights)
    counts = modes_covered(labels, num_modes=len(weights))
    assert counts.shape == (groups,)
    np.testing.assert_array_equal(counts[:200], [len(set(row)) for row in labels[:200]])
    se = counts.std(ddof=1) / np.sqrt(groups)
    # unnormalised weights: normalised inside
    assert abs(counts.mean() - expected_modes_covered(weights * 7.0, n)) < 4 * se


def test_modes_covered_by_hand():
    from pp_diffusion.metrics import modes_covered

    labels = np.array([[0, 0, 0, 0], [3, 1, 3, 2], [0, 1, 2, 3]])
    np.testing.assert_array_equal(modes_covered(labels), [1, 3, 4])
    np.testing.assert_array_equal(modes_covered(labels, num_modes=4), [1, 3, 4])


def test_mixture_labels_near_the_means():
    from pp_diffusion import GaussianMixture
    from pp_diffusion.metrics import mixture_labels, modes_covered

    means = np.array([[-10.0, 0.0], [10.0, 0.0], [0.0, 10.0]])
    gm = GaussianMixture([0.2, 0.5, 0.3], means, [1.0, 0.5, 2.0])
    rng = np.random.default_rng(3)
    order = np.array([[2, 0, 1], [1, 1, 0]])
    x = means[order] + 0.5 * rng.normal(size=order.shape + (2,))
    labels = mixture_labels(gm, x)
    assert labels.shape == (2, 3)
    assert np.issubdtype(labels.dtype, np.integer)
    np.testing.assert_array_equal(labels, order)
    np.testing.assert_array_equal(modes_covered(labels), [3, 2])
    # one sample of shape (d,) gives a 0-d label
    assert int(mixture_labels(gm, means[1])) == 1
    # the exact draws' labels follow the weights
    draws = np.asarray(gm.sample(jax.random.key(4), 4000))
    frequencies = np.bincount(mixture_labels(gm, draws), minlength=3) / 4000
    np.testing.assert_allclose(frequencies, [0.2, 0.5, 0.3], atol=0.03)


def test_marginal_distortion_of_exact_and_shifted_draws():
    from pp_diffusion.metrics import marginal_distortion

    rng = np.random.default_rng(5)
    d = 3
    exact = rng.normal(size=(4000, d)).astype(np.float32)
    groups = exact[:2000].reshape(200, 10, d)
    same = marginal_distortion(KEY, groups, exact[2000:])
    assert 0.0 < same < 0.1
    # pooling is the plain reshape
    assert same == pytest.approx(float(_sliced_wasserstein(KEY, exact[:2000], exact[2000:], num_directions=1000)),
                                 rel=1e-6)
    # a shift of length 1: SW1 = E|theta_1| = 1/2 over uniform directions in 3-D
    shift = np.ones(d, np.float32) / np.sqrt(d)
    moved = marginal_distortion(KEY, groups + shift, exact[2000:])
    assert moved > 5 * same
    assert moved == pytest.approx(0.5, abs=0.1)
    # event axes flattened on both sides
    flat = marginal_distortion(KEY, groups.reshape(200, 10, d, 1), exact[2000:].reshape(2000, d, 1))
    assert flat == pytest.approx(same, rel=1e-6)


def test_diversity_metrics_reject_bad_input():
    from pp_diffusion import GaussianMixture
    from pp_diffusion.metrics import (
        expected_modes_covered,
        marginal_distortion,
        mean_pairwise_distance,
        mixture_labels,
        modes_covered,
        vendi_score,
    )

    z = np.random.default_rng(6).normal(size=(2, 4, 3))
    for fn in (mean_pairwise_distance, vendi_score):
        with pytest.raises(ValueError, match=r"groups must hold .* n >= 2"):
            fn(z[:, :1])
        with pytest.raises(ValueError, match=r"pass groups\[None\]"):
            fn(z[0])
    with pytest.raises(ValueError, match="positive bandwidth"):
        vendi_score(z, kernel="rbf")
    with pytest.raises(ValueError, match="positive bandwidth"):
        vendi_score(z, kernel="rbf", bandwidth=-1.0)
    with pytest.raises(ValueError, match="bandwidth is only used"):
        vendi_score(z, bandwidth=1.0)
    with pytest.raises(ValueError, match="kernel must be"):
        vendi_score(z, kernel="laplace")
    with pytest.raises(ValueError, match=r"k\(a, a\) = 1"):
        vendi_score(z, kernel=lambda a, b: 2.0)
    with pytest.raises(ValueError, match="zero row"):
        vendi_score(np.zeros((1, 3, 2)))
    with pytest.raises(ValueError, match="weights"):
        expected_modes_covered([0.5, -0.1, 0.6], 3)
    with pytest.raises(ValueError, match="weights"):
        expected_modes_covered([0.0, 0.0], 3)
    with pytest.raises(ValueError, match="n must be"):
        expected_modes_covered([1.0, 1.0], -1)
    with pytest.raises(ValueError, match="labels must be an integer array"):
        modes_covered(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="labels must be an integer array"):
        modes_covered(np.zeros(3, dtype=int))
    with pytest.raises(ValueError, match=r"\[0, num_modes\)"):
        modes_covered(np.array([[0, 4]]), num_modes=4)
    gm = GaussianMixture([1.0, 1.0], [[0.0, 0.0], [1.0, 1.0]])
    with pytest.raises(ValueError, match=r"x must have shape \(\.\.\., 2\)"):
        mixture_labels(gm, np.zeros((5, 3)))
    with pytest.raises(ValueError, match="same dimension"):
        marginal_distortion(KEY, z, np.zeros((10, 2)))
    with pytest.raises(ValueError, match=r"pass groups\[None\]"):
        marginal_distortion(KEY, z[0], np.zeros((10, 3)))
