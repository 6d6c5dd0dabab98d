"""The exact augmented mixture: score = grad log p, denoiser, and marginals against Monte Carlo."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from pp_diffusion import GaussianMixture
from pp_diffusion.phase_space import PSLD, AugmentedGaussianMixture

ROT = np.array([[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
MIXTURES = {
    "isotropic": GaussianMixture([0.3, 0.7], [[-2.0, 0.5], [1.5, -1.0]], [0.3, 0.8]),
    "full": GaussianMixture([0.4, 0.6], [[-2.0, 0.5], [1.5, -1.0]],
                            np.stack([ROT @ np.diag([0.2, 1.0]) @ ROT.T, np.diag([0.5, 0.1])])),
}


@pytest.mark.parametrize("kind", sorted(MIXTURES))
def test_score_and_denoiser_against_autodiff(kind):
    with jax.enable_x64(True):
        aug = AugmentedGaussianMixture(MIXTURES[kind], PSLD())
        z = jnp.asarray([[0.3, -0.8], [0.5, 0.2]], jnp.float64)
        for t in (0.02, 0.2, 0.7):
            t = jnp.float64(t)
            np.testing.assert_allclose(aug.score(z, t), jax.grad(aug.marginal_log_prob)(z, t), rtol=1e-5, atol=1e-8)
            # Tweedie for the augmented process: E[x_0 | z] solves a_t E[x_0|z] = z + Sigma_t s(z) in the x/m
            # components jointly; check the x-row with the kernel's linear-Gaussian identity instead:
            # E[z - a x_0 | z] = -Sigma_t s(z)  =>  a E[x_0 | z] = z + Sigma_t s(z).
            A, S = aug.sde.kernel(t)
            lhs = A[:, 0][:, None] * aug.denoise(z, t)[None]
            np.testing.assert_allclose(lhs, z + S @ aug.score(z, t), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("kind", sorted(MIXTURES))
def test_marginal_against_monte_carlo_forward_sde(kind):
    """Simulate the forward SDE (Euler-Maruyama) from mixture data and compare moments and the density."""
    mix = MIXTURES[kind]
    sde = PSLD()
    aug = AugmentedGaussianMixture(mix, sde)
    n, t_end, n_steps = 20_000, 0.1, 300
    k0, k1, k2 = jax.random.split(jax.random.PRNGKey(3), 3)
    x0 = mix.sample(k0, n).T  # (d, n)
    m0 = jnp.sqrt(sde.m0_var_scale * sde.mass) * jax.random.normal(k1, x0.shape)
    F, G, h = sde.drift_matrix(), sde.diffusion_matrix(), t_end / n_steps

    def body(z, k):  # z (2, d, n)
        return z + h * jnp.einsum("ij,jdn->idn", F, z) + jnp.sqrt(h) * jnp.einsum(
            "ij,jdn->idn", G, jax.random.normal(k, z.shape)), None

    z, _ = jax.lax.scan(body, jnp.stack([x0, m0]), jax.random.split(k2, n_steps))
    z = np.asarray(z, np.float64).reshape(4, n)  # rows x1, x2, m1, m2
    exact = np.asarray(aug.sample(jax.random.PRNGKey(9), n, t_end), np.float64).reshape(n, 4).T
    se = np.sqrt(np.var(exact, axis=1) / n)
    np.testing.assert_array_less(np.abs(z.mean(1) - exact.mean(1)), 6 * np.sqrt(2) * se + 0.01)
    cov_mc, cov_ex = np.cov(z), np.cov(exact)
    assert np.max(np.abs(cov_mc - cov_ex)) < 0.04 * np.max(np.abs(cov_ex))
    # The density: mean log p_t under the MC draws equals minus the entropy estimated by exact draws.
    logp = jax.jit(jax.vmap(aug.marginal_log_prob, in_axes=(0, None)))
    lp_mc = np.asarray(logp(jnp.asarray(z.T.reshape(n, 2, 2), jnp.float32), t_end))
    lp_ex = np.asarray(logp(jnp.asarray(exact.T.reshape(n, 2, 2), jnp.float32), t_end))
    se_lp = np.sqrt(np.var(lp_ex) / n * 2)
    assert abs(lp_mc.mean() - lp_ex.mean()) < 5 * se_lp + 0.01


def test_bad_input():
    with pytest.raises(TypeError, match="mixture"):
        AugmentedGaussianMixture("x", PSLD())
    with pytest.raises(TypeError, match="sde"):
        AugmentedGaussianMixture(MIXTURES["isotropic"], "x")
    aug = AugmentedGaussianMixture(MIXTURES["isotropic"], PSLD())
    with pytest.raises(ValueError, match="z must have shape"):
        aug.score(jnp.zeros((2,)), 0.5)
