"""MCMC moves leave their target invariant: run each move alone from exact draws of a known 2-D mixture and
test that the distribution has not moved (a chi-square test on binned projections, which a move with a wrong
Metropolis–Hastings correction fails)."""

import operator

import blackjax
import blackjax.mcmc.diffusions as diffusions
import blackjax.mcmc.proposal as proposal
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from blackjax.mcmc.mala import MALAInfo, MALAState
from scipy import stats

import pp_diffusion as ppd
from pp_diffusion.mcmc._moves import Move, MoveState, _iterate, apply_move

TARGET = ppd.GaussianMixture([0.3, 0.7], [[-1.5, 0.0], [1.0, 0.8]], [[0.6, 0.3], [0.4, 0.9]])
NUM = 20_000
DIRECTIONS = np.array([[1.0, 0.0], [0.0, 1.0], [0.7071, 0.7071], [0.7071, -0.7071]])


def _wrong_mala(step_size: float) -> Move:
    """MALA whose MH ratio assumes proposal variance eps while it draws with 2 eps (the pitfall of a public
    reference implementation): not invariant."""

    def transition_energy(state, new_state, step_size):
        theta = state.position - new_state.position - step_size * new_state.logdensity_grad
        return -new_state.logdensity + 0.5 / step_size * jax.tree.reduce(operator.add, jnp.sum(theta**2))

    ratio = proposal.compute_asymmetric_acceptance_ratio(transition_energy)

    def step(rng_key, state, logdensity_fn, step_size):
        k1, k2 = jax.random.split(rng_key)
        new = MALAState(*diffusions.overdamped_langevin(jax.value_and_grad(logdensity_fn))(k1, state, step_size))
        accepted, (do, p, _) = proposal.static_binomial_sampling(k2, ratio(state, new, step_size=step_size), state, new)
        return accepted, MALAInfo(p, do)

    return Move("wrong_mala", _iterate(MALAState, step, lambda info: jnp.asarray(1.0)), 10, step_size, None, 1.0, 1.0,
                True)


def _moved(move: Move, step_size: float, key=jax.random.key(0)):
    log_p = lambda x: TARGET.marginal_log_prob(x, 1.0, 0.0)
    x0 = TARGET.sample(jax.random.key(1), NUM)

    def one(k, x):
        end, acc, _ = apply_move(move, k, MoveState(x, *jax.value_and_grad(log_p)(x)), log_p, step_size)
        return end.position, acc

    x, acc = jax.jit(jax.vmap(one))(jax.random.split(key, NUM), x0)
    return np.asarray(x0), np.asarray(x), float(jnp.mean(acc))


def _min_p_value(x):
    """The smallest chi-square p-value over 4 projections, 20 bins each with equal exact probability (bin edges
    from 200,000 exact draws)."""
    ref = np.asarray(TARGET.sample(jax.random.key(2), 200_000))
    p_values = []
    for u in DIRECTIONS:
        edges = np.quantile(ref @ u, np.linspace(0, 1, 21)[1:-1])
        counts = np.bincount(np.searchsorted(edges, x @ u), minlength=20)
        p_values.append(stats.chisquare(counts).pvalue)
    return min(p_values)


MOVES = {
    "mala": (lambda: ppd.mcmc.mala_move(10, target_acceptance=None), 0.3),
    "hmc": (lambda: ppd.mcmc.hmc_move(3, num_integration_steps=5, target_acceptance=None), 0.4),
    "nuts": (lambda: ppd.mcmc.nuts_move(3, max_num_doublings=5, target_acceptance=None), 0.4),
}


@pytest.mark.parametrize("name", sorted(MOVES))
def test_moves_leave_the_target_invariant(name):
    """The draws move (most of them change by a large step) and their law stays the target's."""
    make, step = MOVES[name]
    x0, x, acc = _moved(make(), step)
    assert 0.3 < acc <= 1.0
    assert np.median(np.linalg.norm(x - x0, axis=1)) > 0.5
    assert _min_p_value(x) > 1e-3 / 4  # Bonferroni over the 4 projections at 0.1%


def test_a_wrong_mh_correction_is_detected():
    """The same test rejects MALA with the proposal variance wrong in its MH ratio, and unadjusted Langevin at
    a large step: they are not invariant."""
    _, x, _ = _moved(_wrong_mala(0.3), 0.3)
    assert _min_p_value(x) < 1e-6
    _, x, _ = _moved(ppd.mcmc.unadjusted_langevin_move(10, step_size=0.3), 0.3)
    assert _min_p_value(x) < 1e-6


def test_move_arguments_are_checked():
    with pytest.raises(ValueError, match="step_size must be a positive number"):
        ppd.mcmc.mala_move(step_size=0.0)
    with pytest.raises(ValueError, match="step_size must be a positive number"):
        ppd.mcmc.hmc_move(step_size=-1.0)
    with pytest.raises(ValueError, match="num_steps must be a positive integer"):
        ppd.mcmc.nuts_move(0)
    with pytest.raises(ValueError, match="target_acceptance must lie in"):
        ppd.mcmc.mala_move(target_acceptance=1.5)
    with pytest.raises(ValueError, match="num_integration_steps"):
        ppd.mcmc.hmc_move(num_integration_steps=0)
