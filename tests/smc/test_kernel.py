"""SMC samplers as BlackJAX-style kernels: ``ppd.smc.kernel(sampler, program, **data)`` gives
``init`` / ``step`` / ``output`` over an ``SMCState`` (BlackJAX's three fields and the run's records),
and stepping by hand is the run ``infer`` makes."""

import blackjax.smc.base as smc_base
import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import pp_diffusion as ppd

MIXTURE = ppd.GaussianMixture(np.ones(4), 4.0 * np.array([[1, 1], [1, -1], [-1, 1], [-1, -1]]))
PRIOR = ppd.DiffusionPrior(MIXTURE.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=20)
A = np.array([[1.0, 0.5]])
Y = np.array([2.0])


def program(y=None):
    x = numpyro.sample("x", PRIOR)
    numpyro.sample("y", dist.Normal(ppd.operators.Dense(A)(x), 0.5), obs=y)


def _by_hand(sampler, key, move=None, stop=None):
    kern = ppd.smc.kernel(sampler, program, y=Y)
    chain_key = jax.random.split(key, 1)[0]  # infer's key for chain 0 of num_chains=1
    k_init, k_run, k_out = jax.random.split(chain_key, 3)
    state = jax.jit(kern.init)(k_init)
    step = jax.jit(kern.step)
    infos = []
    for i, k in enumerate(jax.random.split(k_run, kern.num_steps)):
        if stop is not None and i == stop:
            break
        state, info = step(k, state)
        infos.append(info)
        if move is not None:
            state = move(state)
    return kern, state, infos, k_out


# twisted stands for bootstrap and FK steering (the same moves); mcgdiff has its own setup and evidence offset
@pytest.mark.parametrize("make", [lambda: ppd.smc.twisted(300), lambda: ppd.smc.mcgdiff(300)], ids=["twisted", "mcgdiff"])
def test_stepping_by_hand_with_a_no_op_move_is_infer(make):
    sampler, key = make(), jax.random.key(3)
    identity = lambda state: state._replace(particles=jax.tree.map(lambda a: a + 0, state.particles))
    kern, state, infos, k_out = _by_hand(sampler, key, move=identity)
    out = jax.jit(kern.output)(k_out, state, infos)
    idata = ppd.infer(program, sampler, key, y=Y)
    np.testing.assert_allclose(out.posterior["x"], idata.posterior["x"].values[0], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(out.run_stats["log_marginal_likelihood"],
                               idata.diagnostics["log_marginal_likelihood"].values[0], rtol=1e-5)
    np.testing.assert_allclose(out.run_stats["ess"], idata.diagnostics["ess"].values[0], rtol=1e-4)
    # and the estimate is the right one: the exact evidence of this observation (20 steps: within 0.3)
    assert abs(float(state.log_evidence) - MIXTURE.log_evidence(A, Y, 0.25)) < 0.3


def test_state_is_a_superset_of_blackjax_smc_state():
    kern, state, infos, _ = _by_hand(ppd.smc.twisted(200), jax.random.key(0), stop=5)
    assert state.index == 5 and len(infos) == 5
    blackjax_state = smc_base.SMCState(*state[:3])
    assert blackjax_state.particles is state.particles and blackjax_state.weights is state.weights
    np.testing.assert_allclose(float(jnp.sum(state.weights)), 1.0, rtol=1e-5)
    # ancestors index the previous particles; on a step that did not resample they are the identity
    for info, anc in [(infos[-1], state.ancestors)]:
        if not bool(info.resampled):
            np.testing.assert_array_equal(anc, np.arange(200))
    assert state.particles.x.shape == (200, 2) and kern.num_steps == PRIOR.steps
    # the running log-evidence is the sum of the steps' increments (the initial weights' included)
    k_init = jax.random.split(jax.random.split(jax.random.key(0), 1)[0], 3)[0]
    init_state = kern.init(k_init)
    total = float(init_state.log_evidence) + sum(float(i.log_evidence_increment) for i in infos)
    np.testing.assert_allclose(float(state.log_evidence), total, rtol=1e-5, atol=1e-5)


def test_a_move_between_steps_changes_the_run():
    """A move is applied to what the next step moves: jittering x changes the draws (the no-op does not)."""
    jitter = lambda state: state._replace(particles=state.particles._replace(x=state.particles.x + 0.5))
    kern, state, infos, k_out = _by_hand(ppd.smc.bootstrap(200), jax.random.key(1), move=jitter, stop=10)
    _, plain, _, _ = _by_hand(ppd.smc.bootstrap(200), jax.random.key(1), stop=10)
    assert not np.allclose(state.particles.x, plain.particles.x)


def test_kernel_refuses_a_sampler_without_one():
    with pytest.raises(TypeError, match="not an SMC sampler"):
        ppd.smc.kernel(ppd.iid(10), program, y=Y)
    with pytest.raises(TypeError, match="Sampler"):
        ppd.smc.kernel("twisted", program, y=Y)
