"""The exact problem the SMC tests share: a three-component 2-D Gaussian mixture under the discrete
DDPM schedule, observed through a dense linear operator with Gaussian noise."""

import numpy as np
import numpyro
import numpyro.distributions as dist

import pp_diffusion as ppd

GMM = ppd.GaussianMixture(np.ones(3), np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]]), np.array([0.3, 0.5, 0.4]))


def dense_program(A, sigma: float, steps: int = 100):
    """x ~ DiffusionPrior(GMM's exact eps model, steps); y ~ Normal(A x, sigma)."""
    prior = ppd.DiffusionPrior(GMM.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=steps)
    op = ppd.operators.Dense(A)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(op(x), sigma), obs=y)

    return program
