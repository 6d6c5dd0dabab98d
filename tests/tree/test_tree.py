"""Tree sampling: the tree's arrays and values are what the algorithm says, a search resumed from a saved
tree equals the uninterrupted one bit for bit, and bad input is refused before compiling. On the 2-D
mixture with a Gaussian likelihood (closed-form posterior and log Z)."""

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest
from scipy.special import logsumexp

import pp_diffusion as ppd

from smc import _conditioning as C  # tests/ is on the path
from smc._problems import GMM

SIGMA = 0.5
Y = np.array([1.0, 0.5], np.float32)
PRIOR = ppd.DiffusionPrior(GMM.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=20)


def program(y=None):
    x = numpyro.sample("x", PRIOR)
    numpyro.sample("y", dist.Normal(x, SIGMA).to_event(1), obs=y)


LOG_Z = GMM.log_evidence(np.eye(2), Y, SIGMA**2)


def _chain_log_z():
    """log E[G] under the 20-step chain itself (the tree's target is the chain's law tilted by G), from
    200,000 chain draws: the exact mixture's log Z is 0.2 nat off at 20 steps."""
    x = np.asarray(PRIOR.sample(jax.random.key(123), (200_000,)), np.float64)
    log_g = -0.5 * np.sum((x - Y) ** 2, 1) / SIGMA**2 - np.log(2 * np.pi * SIGMA**2)
    return float(logsumexp(log_g) - np.log(len(x)))


def _grown(sampler, rollouts, key=0, y=Y):
    kern = ppd.tree.kernel(sampler, program, y=y)
    return kern, kern.grow(kern.init(jax.random.key(key)), rollouts)


@pytest.fixture(scope="module")
def grown():
    """The paper's estimator (every child counts in its parent's value)."""
    return _grown(ppd.tree.dts(400, batch_size=8, honest=False), 400)


@pytest.fixture(scope="module")
def grown_honest():
    return _grown(ppd.tree.dts(400, batch_size=8), 400)


def _lme(values):
    return logsumexp(values) - np.log(len(values))


def test_tree_arrays_hold_the_algorithm(grown):
    """Every node's parent is one level up, child counts and visits add up (the root was visited by every
    rollout, a parent at least as often as its children together less their own first visits), and each
    inner value is the log-MEAN-exp of its children's (recomputed here with NumPy)."""
    kern, tree = grown
    n = int(tree.num_nodes)
    level, parent = np.asarray(tree.level)[:n], np.asarray(tree.parent)[:n]
    visits, kids, value = np.asarray(tree.visits)[:n], np.asarray(tree.num_children)[:n], np.asarray(tree.value)[:n]
    assert np.all(level[n:] if n < tree.capacity else True)
    assert level[0] == 0 and visits[0] == 400 and int(tree.num_rollouts) == 400
    assert np.all(level[1:] == level[parent[1:]] + 1)
    counts = np.bincount(parent[1:], minlength=n)
    np.testing.assert_array_equal(counts, kids)
    for node in np.flatnonzero(level < kern.depth):
        children = np.flatnonzero(parent == node)
        expected = logsumexp(value[children]) - np.log(len(children))
        np.testing.assert_allclose(value[node], expected, rtol=1e-5, atol=1e-5)
    assert np.all(np.asarray(tree.level)[n:] == -1)
    # widening: no node has reached C N^alpha children
    assert np.all(kids[level < kern.depth] <= np.ceil(2.0 * visits[level < kern.depth] ** 0.8))


def test_honest_tree_keeps_its_estimation_tree_apart(grown_honest):
    """An honest tree (the default): the root's children are estimation nodes (group 0); an inner
    estimation node's children alternate in the order they were made, estimation at even places and
    selection (group 1) at odd ones; a selection node's children are selection nodes. Recomputed with
    NumPy: an estimation node's value is the log-mean-exp of its estimation children's, a selection
    node's that of all its children's (f), and the selection value of an inner estimation node the
    log-mean-exp of its selection children's f (NaN without one); no draw leaves the estimation tree."""
    kern, tree = grown_honest
    n = int(tree.num_nodes)
    level, parent, group = (np.asarray(a)[:n] for a in (tree.level, tree.parent, tree.group))
    value, select = np.asarray(tree.value)[:n], np.asarray(tree.select_value)[:n]
    assert np.all(group[level == 1] == 0)
    counts = {"estimation with selection children": 0, "selection": 0}
    for node in np.flatnonzero(level < kern.depth):
        children = np.flatnonzero(parent == node)  # in the order they were made
        if group[node] == 1:
            assert np.all(group[children] == 1)
            np.testing.assert_allclose(value[node], _lme(value[children]), rtol=1e-5, atol=1e-5)
            np.testing.assert_allclose(select[node], value[node], rtol=1e-6)
            counts["selection"] += 1
            continue
        if level[node] > 0:
            np.testing.assert_array_equal(group[children], np.arange(len(children)) % 2)
        np.testing.assert_allclose(value[node], _lme(value[children[group[children] == 0]]), rtol=1e-5, atol=1e-5)
        sel = children[group[children] == 1]
        if level[node] > 0 and len(sel):
            np.testing.assert_allclose(select[node], _lme(value[sel]), rtol=1e-5, atol=1e-5)
            counts["estimation with selection children"] += 1
        elif level[node] > 0:
            assert np.isnan(select[node])
    assert min(counts.values()) > 10, counts  # both kinds are there to check
    _, info = kern.draw(jax.random.key(2), tree, 5000)
    node = np.asarray(info["leaf"])
    for _ in range(kern.depth):
        assert np.all(group[node] == 0)
        node = parent[node]
    assert np.all(node == 0)


def test_alpha_one_is_importance_sampling():
    """alpha = 1 with C = 2 expands a new root child on every rollout: the leaves are i.i.d. chain draws
    and the root's value is log mean G over them (checked to float tolerance), an estimate of log Z whose
    error (against the chain's own log Z) over 4 keys at 1,024 rollouts stays below 0.15 nat."""
    errors, chain_log_z = [], _chain_log_z()
    assert abs(chain_log_z - LOG_Z) < 0.4
    kern = ppd.tree.kernel(ppd.tree.dts(1024, batch_size=128, alpha=1.0), program, y=Y)
    for key in range(4):
        tree = kern.grow(kern.init(jax.random.key(key)), 1024)
        leaves = np.asarray(tree.level) == kern.depth
        assert leaves.sum() == 1024
        log_g = np.asarray(tree.value)[leaves]
        np.testing.assert_allclose(float(tree.value[0]), logsumexp(log_g) - np.log(1024), atol=1e-4)
        errors.append(float(tree.value[0]) - chain_log_z)
    assert np.max(np.abs(errors)) < 0.15, errors


def test_draws_follow_the_descent_probabilities(grown):
    """The draws pick each leaf with the product of exp(v) / sum_siblings exp(v) along its path: the
    empirical frequencies of 100,000 draws over the root's children match those probabilities
    (chi-square, p > 1e-4; a draw that ignored the values fails by far)."""
    from scipy import stats

    kern, tree = grown
    n = int(tree.num_nodes)
    _, info = kern.draw(jax.random.key(3), tree, 100_000)
    parent, level, value = (np.asarray(a)[:n] for a in (tree.parent, tree.level, tree.value))
    root_kids = np.flatnonzero(level == 1)
    probs = np.exp(value[root_kids].astype(np.float64) - logsumexp(value[root_kids].astype(np.float64)))
    probs /= probs.sum()
    # the root child of each drawn leaf
    node = np.asarray(info["leaf"])
    for _ in range(kern.depth - 1):
        node = parent[node]
    counts = np.array([(node == c).sum() for c in root_kids])
    big = probs * 100_000 > 20
    expected = np.append(probs[big] * 100_000, probs[~big].sum() * 100_000)
    observed = np.append(counts[big], counts[~big].sum())
    assert stats.chisquare(observed, expected).pvalue > 1e-4
    uniform = np.full(len(root_kids), 1 / len(root_kids))
    wrong = np.append(uniform[big] * 100_000, uniform[~big].sum() * 100_000)
    assert stats.chisquare(observed, wrong * observed.sum() / wrong.sum()).pvalue < 1e-6


def test_resumed_search_equals_the_uninterrupted_one(tmp_path):
    """2 x 250 rollouts with a save and a load in between give the tree of 500 rollouts on the same key,
    bit for bit, and the same draws."""
    sampler = ppd.tree.dts(500, batch_size=5)
    kern = ppd.tree.kernel(sampler, program, y=Y)
    whole = kern.grow(kern.init(jax.random.key(7)), 500)
    half = kern.grow(kern.init(jax.random.key(7)), 250)
    ppd.tree.save(half, tmp_path / "half.npz")
    resumed = kern.grow(ppd.tree.load(tmp_path / "half.npz"), 250)
    for a, b in zip(jax.tree.leaves(whole), jax.tree.leaves(resumed)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    da, _ = kern.draw(jax.random.key(1), whole, 64)
    db, _ = kern.draw(jax.random.key(1), resumed, 64)
    np.testing.assert_array_equal(np.asarray(da["x"]), np.asarray(db["x"]))


def test_saved_tree_refuses_corruption_and_another_search(tmp_path, grown):
    kern, tree = grown
    path = ppd.tree.save(tree, tmp_path / "t.npz")
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (tmp_path / "bad.npz").write_bytes(bytes(raw))
    with pytest.raises(ppd.tree.TreeFileError):
        ppd.tree.load(tmp_path / "bad.npz")
    (tmp_path / "short.npz").write_bytes(path.read_bytes()[:1000])
    with pytest.raises(ppd.tree.TreeFileError, match="corrupted or truncated"):
        ppd.tree.load(tmp_path / "short.npz")
    with pytest.raises(FileExistsError):
        ppd.tree.save(tree, path)
    other = ppd.tree.kernel(ppd.tree.dts(400, batch_size=8), program, y=Y + 1.0)  # another observation
    with pytest.raises(ValueError, match="different search"):
        other.grow(ppd.tree.load(path), 8)
    wider = ppd.tree.kernel(ppd.tree.dts(400, batch_size=8, widening=3.0), program, y=Y)
    with pytest.raises(ValueError, match="different search"):
        wider.grow(ppd.tree.load(path), 8)


def test_tree_grows_past_its_capacity(grown):
    """A tree grown beyond its preallocated rollouts gets more slots and goes on."""
    kern, tree = grown
    bigger = kern.grow(tree, 80)
    assert bigger.capacity > tree.capacity and int(bigger.num_rollouts) == 480
    assert int(bigger.visits[0]) == 480


def test_more_rollouts_compile_nothing_new(caplog):
    """The number of rollouts is an argument of the compiled search, not a constant: growing a tree by 16
    and then by 160 rollouts (within its capacity) compiles the search once."""
    import logging

    kern = ppd.tree.kernel(ppd.tree.dts(176, batch_size=8), program, y=Y)
    tree = kern.init(jax.random.key(5))
    with jax.log_compiles(), caplog.at_level(logging.WARNING):
        caplog.clear()
        tree = kern.grow(tree, 16)
        jax.block_until_ready(tree)
        first = [r.getMessage() for r in caplog.records if "grow_traced" in r.getMessage()]
        caplog.clear()
        tree = jax.block_until_ready(kern.grow(tree, 160))
        second = [r.getMessage() for r in caplog.records if "grow_traced" in r.getMessage()]
    assert len(first) >= 1 and second == [], (first, second)
    assert int(tree.num_rollouts) == 176


@pytest.mark.parametrize("kwargs,match", [
    (dict(num_rollouts=0), "num_rollouts"),
    (dict(num_rollouts=10, batch_size=3), "multiple of batch_size"),
    (dict(num_rollouts=10, widening=0.0), "widening"),
    (dict(num_rollouts=10, alpha=0.0), "alpha"),
    (dict(num_rollouts=10, alpha=1.5), "alpha"),
    (dict(num_rollouts=10, branch_steps=[5, 10]), "start at 0"),
    (dict(num_rollouts=10, branch_steps=[0, 10, 10]), "increase strictly"),
    (dict(num_rollouts=10, capacity=5), "capacity"),
])
def test_bad_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        ppd.tree.dts(**kwargs)


def test_bad_input_is_refused_before_compiling():
    with pytest.raises(ValueError, match="outside the chain"):
        ppd.infer(program, ppd.tree.dts(10, branch_steps=[0, 10, 25]), jax.random.key(0), y=Y)
    with pytest.raises(ValueError, match=r"GiB, above max_memory_gb"):
        ppd.tree.kernel(ppd.tree.dts(10**9, batch_size=1), program, y=Y)
    with pytest.raises(ValueError, match="num_draws"):
        ppd.tree.dts_star(10, num_draws=11)
    with pytest.raises(TypeError, match="tree sampler"):
        ppd.tree.kernel(ppd.smc.bootstrap(10), program, y=Y)


def test_nan_reward_is_flagged_and_the_search_goes_on():
    """A factor that is NaN on half the space: those leaves get value -inf, are counted, and the draws
    avoid them; infer warns."""
    def nan_program():
        x = numpyro.sample("x", PRIOR)
        numpyro.factor("r", jnp.where(x[0] > 0, -0.5 * jnp.sum(x**2), jnp.nan))

    with pytest.warns(RuntimeWarning, match="NaN"):
        idata = ppd.infer(nan_program, ppd.tree.dts(256, batch_size=16), jax.random.key(0), num_chains=2)
    assert np.all(idata.diagnostics["nan_leaves"].values > 20)
    assert np.all(idata.posterior["x"].values[..., 0] > 0)
    assert np.all(np.isfinite(idata.diagnostics["log_marginal_likelihood"].values))


def test_infer_returns_trees_as_chains():
    idata = ppd.infer(program, ppd.tree.dts(64, batch_size=8, num_draws=32), jax.random.key(0), num_chains=3, y=Y)
    assert idata.posterior["x"].shape == (3, 32, 2)
    for name in ("log_marginal_likelihood", "num_nodes", "depth", "nfe", "distinct_leaves"):
        assert idata.diagnostics[name].shape == (3,)
    assert np.all(idata.diagnostics["num_rollouts"].values == 64)
    assert idata.posterior.attrs["sampler"] == "dts"
    # NFE: every rollout's chain from its expanded node; at most 64 full chains
    assert np.all(idata.diagnostics["nfe"].values <= 64 * PRIOR.steps)
    assert np.all(idata.diagnostics["nfe"].values > 16 * PRIOR.steps)


def test_best_of_n_returns_the_best_candidates():
    """best_of_n's draws are its candidates' top log G, best first, and its estimate is log mean G."""
    idata = ppd.infer(program, ppd.tree.best_of_n(256, num_draws=4), jax.random.key(0), num_chains=2, y=Y)
    log_g = idata.sample_stats["log_g"].values
    assert np.all(np.diff(log_g, axis=1) <= 0)
    x = idata.posterior["x"].values
    expected = -0.5 * np.sum((x - Y) ** 2, -1) / SIGMA**2 - np.log(2 * np.pi * SIGMA**2)
    np.testing.assert_allclose(log_g, expected, rtol=1e-4, atol=1e-4)
    assert np.all(idata.diagnostics["max_log_g"].values == log_g[:, 0])
    assert np.all(np.abs(idata.diagnostics["log_marginal_likelihood"].values - LOG_Z) < 0.5)
