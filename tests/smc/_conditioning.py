"""Every kind of conditioning a NumPyro program can write, with its exact answer on the Gaussian mixture.

Each :class:`Problem` is a program over the mixture prior and a reference: the exact log Z = log
E_p[G(x_0)] and exact posterior draws, from closed forms (linear-Gaussian posteriors, linear tilts,
the mixture's own Bayes classifier over groups of components, halfspace masses), from 2-D quadrature
(nonlinear observations) or from importance sampling of 10^6 exact prior draws (Student-t). The
reverse chain has 100 DDPM steps of the exact denoiser, so even a perfect sampler of p_theta(x_0) G
is off the exact posterior by the chain's own bias (measured where each tolerance is set).
"""

from __future__ import annotations

import functools
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro import handlers
from scipy.special import logsumexp

import pp_diffusion as ppd

from ._problems import GMM

STEPS = 100

# d = 8: four well-separated components with unequal weights and anisotropic diagonal covariances
_rng = np.random.default_rng(8)
GMM8 = ppd.GaussianMixture([1.0, 2.0, 1.5, 0.5], 2.5 * _rng.normal(size=(4, 8)), 0.2 + 0.6 * _rng.random((4, 8)))


class Problem(NamedTuple):
    name: str
    program: Callable  # program(y=None)
    y: object  # the observation passed as y (None: the program observes nothing from y)
    log_z: float
    sample: Callable  # (rng_key, n) -> exact posterior draws (n, d)


@functools.cache
def _prior(d):
    gmm = GMM if d == 2 else GMM8
    return ppd.DiffusionPrior(gmm.diffusion_model(ppd.schedules.ddpm_linear(), "eps"), steps=STEPS)


def _mixture_sampler(mixture):
    return lambda key, n: np.asarray(mixture.sample(key, n), np.float64)


def _resampler(points, log_w):
    """Exact-in-the-limit draws from a weighted sample (importance sampling or quadrature cells)."""
    w = np.exp(log_w - log_w.max())
    w /= w.sum()

    def sample(key, n):
        idx = np.random.default_rng(int(jax.random.randint(key, (), 0, 2**31 - 1))).choice(len(w), n, p=w)
        return points[idx]

    return sample


def _quadrature(gmm, log_lik, half_width=7.0, n=721):
    """log Z and posterior draws of p(x) exp(log_lik(x)) on an n x n grid in d = 2 (draws jittered
    uniformly within their cell)."""
    g = np.linspace(-half_width, half_width, n)
    h = g[1] - g[0]
    xx = np.stack(np.meshgrid(g, g, indexing="ij"), -1).reshape(-1, 2)
    log_p = np.asarray(jax.jit(jax.vmap(lambda v: gmm.marginal_log_prob(v, 1.0, 0.0)))(jnp.asarray(xx, jnp.float32)),
                       np.float64)
    log_w = log_p + log_lik(xx)
    log_z = float(logsumexp(log_w) + 2 * np.log(h))
    cells = _resampler(xx, log_w)

    def sample(key, num):
        base = cells(key, num)
        jitter = np.random.default_rng(int(jax.random.randint(jax.random.fold_in(key, 1), (), 0, 2**31 - 1)))
        return base + h * (jitter.random(base.shape) - 0.5)

    return log_z, sample


def _program(d, body):
    prior = _prior(d)

    def program(y=None):
        x = numpyro.sample("x", prior)
        body(x, y)

    return program


def linear_reward(d, lam=None):
    """The tilt exp(lam a . x). In d = 8, lam = 1 (at 1.5 the 100-step chain's own log Z is 0.15-0.2 nat
    low: the tilt weighs the tails, where the chain under-disperses)."""
    gmm = GMM if d == 2 else GMM8
    lam = (1.5 if d == 2 else 1.0) if lam is None else lam
    a = np.linspace(1.0, -0.5, d)
    tilted, log_z = gmm.tilt(a, lam)
    program = _program(d, lambda x, y: numpyro.factor("reward", lam * jnp.dot(jnp.asarray(a, jnp.float32), x)))
    return Problem("linear_reward", program, None, log_z, _mixture_sampler(tilted))


def quadratic_reward(d, sigma=None):
    """A Gaussian likelihood written as a factor: the tracer cannot see it is linear-Gaussian. In d = 8,
    sigma = 1 (with sigma = 0.5 the 100-step chain's own log Z, sampled with the exact Gaussian twist, is
    0.9 nat low, and the tempered look-ahead's 2 nats: README, conditioning)."""
    gmm = GMM if d == 2 else GMM8
    sigma = (0.5 if d == 2 else 1.0) if sigma is None else sigma
    y = np.linspace(1.0, 0.5, d)
    program = _program(d, lambda x, y: numpyro.factor("lik", jnp.sum(dist.Normal(x, sigma).log_prob(y))))
    return Problem("quadratic_reward", program, y, gmm.log_evidence(np.eye(d), y, sigma**2),
                   _mixture_sampler(gmm.posterior(np.eye(d), y, sigma**2)))


def classifier(d):
    """The mixture's own Bayes classifier over groups of components, observed as a Categorical."""
    gmm = GMM if d == 2 else GMM8
    groups = np.array([0, 1, 1]) if d == 2 else np.array([0, 1, 0, 1])
    conditioned, log_z = gmm.condition_on_group(groups, 1)
    program = _program(d, lambda x, y: numpyro.sample("c", dist.Categorical(logits=gmm.group_log_posterior(x, groups)),
                                                      obs=y))
    return Problem("classifier", program, np.int32(1), log_z, _mixture_sampler(conditioned))


def hard_constraint(d):
    """G = 1[a . x > b]: a factor of -inf outside a halfspace of prior mass about 0.4."""
    gmm = GMM if d == 2 else GMM8
    a = np.ones(d) / np.sqrt(d)
    b = 0.5 if d == 2 else 0.8
    log_z = gmm.halfspace_log_mass(a, b)
    a32 = jnp.asarray(a, jnp.float32)
    program = _program(d, lambda x, y: numpyro.factor("inside", jnp.where(jnp.dot(a32, x) > b, 0.0, -jnp.inf)))

    def sample(key, n):  # rejection from exact prior draws
        out = []
        while sum(len(o) for o in out) < n:
            key, sub = jax.random.split(key)
            draws = np.asarray(gmm.sample(sub, 4 * n), np.float64)
            out.append(draws[draws @ a > b])
        return np.concatenate(out)[:n]

    return Problem("hard_constraint", program, None, log_z, sample)


def partial_mask(d, sigma=None):
    """Normal(x, sigma) under handlers.mask keeping the first half of the coordinates."""
    gmm = GMM if d == 2 else GMM8
    sigma = (0.5 if d == 2 else 0.7) if sigma is None else sigma
    y = np.linspace(1.0, -1.0, d)
    keep = np.arange(d) < max(1, d // 2)

    def body(x, y):
        with handlers.mask(mask=jnp.asarray(keep)):
            numpyro.sample("y", dist.Normal(x, sigma), obs=y)

    A = np.eye(d)[keep]
    return Problem("partial_mask", _program(d, body), y, gmm.log_evidence(A, y[keep], sigma**2),
                   _mixture_sampler(gmm.posterior(A, y[keep], sigma**2)))


def scaled(d, sigma=None, s=2.0):
    """handlers.scale(s) on Normal(x, sigma): G = N(y; x, sigma^2)^s = N(y; x, sigma^2 / s) c."""
    gmm = GMM if d == 2 else GMM8
    sigma = (0.7 if d == 2 else 1.4) if sigma is None else sigma
    y = np.linspace(0.5, 1.5, d)

    def body(x, y):
        with handlers.scale(scale=s):
            numpyro.sample("y", dist.Normal(x, sigma), obs=y)

    var = sigma**2 / s
    const = d * (-0.5 * s * np.log(2 * np.pi * sigma**2) + 0.5 * np.log(2 * np.pi * var))
    return Problem("scaled", _program(d, body), y, gmm.log_evidence(np.eye(d), y, var) + const,
                   _mixture_sampler(gmm.posterior(np.eye(d), y, var)))


@functools.cache
def _prior_draws(d, n=1_000_000):
    gmm = GMM if d == 2 else GMM8
    return np.asarray(gmm.sample(jax.random.key(12345 + d), n), np.float64)


def student_t(d, df=3.0, scale=None):
    """y ~ StudentT(df, x, scale): importance sampling of 10^6 exact prior draws as the reference."""
    from scipy import stats

    scale = (0.6 if d == 2 else 1.0) if scale is None else scale
    y = np.linspace(-1.0, 1.5, d)
    program = _program(d, lambda x, y: numpyro.sample("y", dist.StudentT(df, x, scale), obs=y))
    draws = _prior_draws(d)
    log_w = stats.t(df, draws, scale).logpdf(y).sum(axis=1)
    log_z = float(logsumexp(log_w) - np.log(len(log_w)))
    return Problem("student_t", program, y, log_z, _resampler(draws, log_w))


def tanh_observation(s=0.2):
    """y ~ Normal(tanh(x), s) in d = 2 (quadrature)."""
    y = np.array([0.3, 0.6])
    program = _program(2, lambda x, y: numpyro.sample("y", dist.Normal(jnp.tanh(x), s), obs=y))
    log_lik = lambda xx: np.sum(-0.5 * ((y - np.tanh(xx)) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi)), axis=1)
    log_z, sample = _quadrature(GMM, log_lik)
    return Problem("tanh", program, y, log_z, sample)


def square_observation(s=0.5):
    """The bimodal y ~ Normal(x^2, s) in d = 2 (quadrature): each coordinate's sign is unidentified."""
    y = np.array([1.5, 2.0])
    program = _program(2, lambda x, y: numpyro.sample("y", dist.Normal(x**2, s), obs=y))
    log_lik = lambda xx: np.sum(-0.5 * ((y - xx**2) / s) ** 2 - np.log(s * np.sqrt(2 * np.pi)), axis=1)
    log_z, sample = _quadrature(GMM, log_lik)
    return Problem("square", program, y, log_z, sample)


PROBLEMS_2D = {
    "linear_reward": lambda: linear_reward(2),
    "quadratic_reward": lambda: quadratic_reward(2),
    "classifier": lambda: classifier(2),
    "hard_constraint": lambda: hard_constraint(2),
    "partial_mask": lambda: partial_mask(2),
    "scaled": lambda: scaled(2),
    "student_t": lambda: student_t(2),
    "tanh": tanh_observation,
    "square": square_observation,
}

PROBLEMS_8D = {
    "linear_reward": lambda: linear_reward(8),
    "quadratic_reward": lambda: quadratic_reward(8),
    "classifier": lambda: classifier(8),
    "hard_constraint": lambda: hard_constraint(8),
    "partial_mask": lambda: partial_mask(8),
    "scaled": lambda: scaled(8),
    "student_t": lambda: student_t(8),
}


def run(problem: Problem, sampler, rng_key, num_chains=4):
    """``(log Z errors per chain, draws per chain (chains, N, d), DataTree)``."""
    data = {} if problem.y is None else {"y": problem.y}
    idata = ppd.infer(problem.program, sampler, rng_key, num_chains=num_chains, **data)
    log_z = np.asarray(idata.diagnostics["log_marginal_likelihood"].values, np.float64)
    draws = np.asarray(idata.posterior["x"].values, np.float64)
    return log_z - problem.log_z, draws, idata


def sliced(key, a, b):
    return float(ppd.metrics.sliced_wasserstein(key, jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)))
