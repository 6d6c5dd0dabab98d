"""The exact problem the SMC tests share: a three-component 2-D Gaussian mixture under the discrete
DDPM schedule, observed through a dense linear operator with Gaussian noise."""

import numpy as np
import numpyro
import numpyro.distributions as dist

import pp_diffusion as ppd

GMM = ppd.GaussianMixture(np.ones(3), np.array([[-2.0, 0.0], [2.0, 1.0], [0.0, -2.5]]), np.array([0.3, 0.5, 0.4]))

# d = 3 with two observations of unequal noise through a non-diagonal A: MCGdiff pins the two observed
# SVD directions at different times and leaves the third free
FREE_GMM = ppd.GaussianMixture([1.0, 2.0, 1.5], np.array([[-2.0, 0.0, 1.0], [2.0, 1.0, -1.0], [0.0, -2.0, 0.0]]),
                               np.array([0.4, 0.6, 0.5]))
FREE_A = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, -0.5]])
FREE_NOISE = np.array([0.4, 0.6])
FREE_Y = np.array([0.5, 0.8])


def dense_program(A, sigma, steps: int = 100, model=None):
    """x ~ DiffusionPrior(model, steps); y ~ Normal(A x, sigma). ``model``: GMM's exact eps model by default."""
    model = GMM.diffusion_model(ppd.schedules.ddpm_linear(), "eps") if model is None else model
    prior = ppd.DiffusionPrior(model, steps=steps)
    op = ppd.operators.Dense(A)

    def program(y=None):
        x = numpyro.sample("x", prior)
        numpyro.sample("y", dist.Normal(op(x), sigma), obs=y)

    return program


def moments(mixture):
    """(mean, per-coordinate variance) of a Gaussian mixture, in float64."""
    w = np.asarray(mixture.weights, np.float64)
    mu = np.asarray(mixture.means, np.float64)
    var = np.diagonal(np.asarray(mixture.covariances(), np.float64), axis1=1, axis2=2)
    mean = w @ mu
    return mean, w @ (var + mu**2) - mean**2
