"""Potentials: the log-potential log G(x_0) that conditions the prior, and its twisting functions.

A :class:`Potential` is a small value with two pure functions:

- ``log_g(x0)``: the terminal log-potential, so the target is p_theta(x_0) G(x_0);
- ``log_h(x_t, x0_hat, t, alpha, sigma)``: the twist log h_t(x_t) ~ log E[G(x_0) | x_t] used at
  intermediate steps, given the Tweedie estimate x0_hat = E[x_0 | x_t].

Twists are approximations; Feynman–Kac samplers correct them with weights, so they change
variance, never the target. Atoms (:func:`likelihood`, :func:`linear_gaussian`,
:func:`classifier`, :func:`reward`, :func:`factor`) combine with :func:`sum`, :func:`scale`
(temperature / tilt) and :func:`anneal`, like optax transformations. The tracer of
:mod:`pp_diffusion.program` builds the potential of a NumPyro program from these.
"""

from __future__ import annotations

import builtins
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pp_diffusion.x0_variance import conditioning_x0_var

__all__ = [
    "Potential",
    "tweedie_lookahead",
    "likelihood",
    "linear_gaussian",
    "LinearGaussian",
    "classifier",
    "reward",
    "factor",
    "zero",
    "sum",
    "scale",
    "anneal",
]


class Potential(NamedTuple):
    """log G(x_0) and its twist log h_t(x_t); all act on one unbatched sample.

    ``lookahead(x0_hat)``, when given, is the part of log G whose twist an SMC sampler tempers
    adaptively: the twist is then ``log_h(...) + lambda_t * lookahead(x0_hat)`` with lambda_t chosen
    per step (:mod:`pp_diffusion.twists`).
    """

    log_g: Callable
    log_h: Callable
    lookahead: Callable | None = None


def tweedie_lookahead(log_g: Callable) -> Potential:
    """The potential with twist log h_t(x_t) = log G(xhat_0(x_t)) (Wu et al., 2023; Chung et al., 2023)."""
    return Potential(log_g, lambda x_t, x0_hat, t, alpha, sigma: log_g(x0_hat))


def likelihood(distribution_fn: Callable, y) -> Potential:
    """log G(x0) = log p(y | x0) for ``distribution_fn(x0)`` any NumPyro distribution, summed over y."""
    y = jnp.asarray(y)
    return tweedie_lookahead(lambda x0: jnp.sum(distribution_fn(x0).log_prob(y)))


def factor(log_fn: Callable) -> Potential:
    """A user log-factor log G(x0) = log_fn(x0) (as ``numpyro.factor``)."""
    return tweedie_lookahead(lambda x0: jnp.sum(log_fn(x0)))


def reward(reward_fn: Callable, lam: float = 1.0) -> Potential:
    """The reward tilt G(x0) = exp(lam * r(x0)) (FK steering, SVDD)."""
    return tweedie_lookahead(lambda x0: lam * jnp.sum(reward_fn(x0)))


def classifier(logits_fn: Callable, label: int, noisy_logits_fn: Callable | None = None) -> Potential:
    """log p(c = label | x0) from a clean classifier's logits; the twist uses ``noisy_logits_fn(x_t, t)``
    (a noise-conditional classifier p(c | x_t, t)) when given, else the Tweedie look-ahead."""
    log_g = lambda x0: jax.nn.log_softmax(logits_fn(x0))[label]
    if noisy_logits_fn is None:
        return tweedie_lookahead(log_g)
    return Potential(log_g, lambda x_t, x0_hat, t, alpha, sigma: jax.nn.log_softmax(noisy_logits_fn(x_t, t))[label])


class LinearGaussian(NamedTuple):
    """y = A x_0 + N(0, diag(noise_var)) over flattened x_0, with A's SVD after whitening.

    ``u, s, vt`` decompose the whitened operator diag(noise_var)^(-1/2) A = U diag(s) Vt and
    ``y_white`` is the whitened observation; ``log_det_noise`` = sum log noise_var; ``u_perp``
    is an orthonormal basis of the complement of range(U) (no columns when A has full row rank);
    ``log_const`` is added to every log-likelihood (a ``handlers.scale`` w on a Normal is the Normal
    of variance sigma^2 / w plus a constant).
    """

    A: jax.Array
    y: jax.Array
    noise_var: jax.Array
    u: jax.Array
    s: jax.Array
    vt: jax.Array
    y_white: jax.Array
    log_det_noise: jax.Array
    u_perp: jax.Array
    log_const: jax.Array = jnp.zeros(())

    @classmethod
    def build(cls, A, y, noise_var, log_const: float = 0.0) -> "LinearGaussian":
        A = np.atleast_2d(np.asarray(A, dtype=np.float64))
        y = np.atleast_1d(np.asarray(y, dtype=np.float64))
        var = np.broadcast_to(np.asarray(noise_var, dtype=np.float64), y.shape)
        if A.shape[0] != y.shape[0] or y.ndim != 1:
            raise ValueError(f"y must have shape ({A.shape[0]},) to match A {A.shape}, got {y.shape}")
        if np.any(var <= 0):
            raise ValueError("noise variances must be positive")
        w = 1.0 / np.sqrt(var)
        u_full, s, vt = np.linalg.svd(w[:, None] * A, full_matrices=True)
        rank = int(np.sum(s > s.max(initial=0.0) * max(A.shape) * np.finfo(np.float64).eps)) if s.size else 0
        u, s, vt, u_perp = u_full[:, :rank], s[:rank], vt[:rank], u_full[:, rank:]
        f32 = lambda a: jnp.asarray(a, dtype=jnp.float32)
        return cls(f32(A), f32(y), f32(var), f32(u), f32(s), f32(vt), f32(w * y), f32(np.sum(np.log(var))),
                   f32(u_perp), f32(log_const))

    @classmethod
    def build_traced(cls, A, y, noise_var, log_const, rank: int) -> "LinearGaussian":
        """:meth:`build` for traced ``A`` and ``noise_var`` (jnp's SVD, float32), with the ``rank`` read
        where the structure was concrete: the observation when a global latent (a noise scale, an
        operator's gain) sets A or the noise, and the rank does not change with it."""
        A = jnp.atleast_2d(jnp.asarray(A, jnp.float32))
        y = jnp.atleast_1d(jnp.asarray(y, jnp.float32))
        var = jnp.broadcast_to(jnp.asarray(noise_var, jnp.float32), y.shape)
        w = 1.0 / jnp.sqrt(var)
        u_full, s, vt = jnp.linalg.svd(w[:, None] * A, full_matrices=True)
        return cls(A, y, var, u_full[:, :rank], s[:rank], vt[:rank], w * y, jnp.sum(jnp.log(var)),
                   u_full[:, rank:], jnp.asarray(log_const, jnp.float32))

    def log_likelihood(self, x0, extra_var=0.0):
        """log N(y; A x0, diag(noise_var) + extra_var A A^T) for flattened x0 (extra_var a scalar)."""
        white = self.y_white - (self.A @ x0) / jnp.sqrt(self.noise_var)
        resid = self.u.T @ white
        var = 1.0 + extra_var * self.s**2
        dy = self.y.shape[0]
        # components of the whitened residual outside range(U) have unit variance; projected, not
        # |white|^2 - |resid|^2, which cancels catastrophically in float32 when noise_var is tiny
        outside = jnp.sum((self.u_perp.T @ white) ** 2)
        log_lik = -0.5 * (jnp.sum(resid**2 / var + jnp.log(var)) + outside + self.log_det_noise + dy * jnp.log(2 * jnp.pi))
        return log_lik + self.log_const

    def condition(self, rng_key, mean, var):
        """A draw of x_0 from N(mean, var I) N(y; A x_0, diag(noise_var)) (normalised) and the log of
        its normaliser, log N(y; A mean, diag(noise_var) + var A A^T), for flattened ``mean`` and a
        scalar ``var`` >= 0.

        In the coordinates xbar = Vt x_0 the product is Gaussian coordinate by coordinate, with
        variance var / (1 + var s_i^2) and mean (xbar_i + var s_i (U^T y_white)_i) / (1 + var s_i^2);
        the directions outside range(Vt^T) keep N(mean, var).
        """
        z = jax.random.normal(rng_key, mean.shape, mean.dtype)
        z_obs = jax.random.normal(jax.random.fold_in(rng_key, 1), self.s.shape, mean.dtype)
        denom = 1.0 + var * self.s**2
        # the shift of xbar from Vt mean, from the whitened residual (no cancellation when var s^2 >> 1)
        resid = self.u.T @ self.y_white - self.s * (self.vt @ mean)
        shift = var * self.s * resid / denom + jnp.sqrt(var / denom) * z_obs
        x = mean + jnp.sqrt(var) * (z - self.vt.T @ (self.vt @ z)) + self.vt.T @ shift
        return x, self.log_likelihood(mean, var)


def linear_gaussian(A, y, noise_var, *, data_var: float = 1.0, x0_var=None) -> Potential:
    """G(x0) = N(y; A x0, diag(noise_var)), twisted by the variance-corrected look-ahead

    .. math::  h_t(x_t) = N\\big(y;\\ A\\hat x_0(x_t),\\ \\Sigma_y + r_t^2 A A^T\\big), \\qquad
               r_t^2 = \\frac{v\\,\\sigma_t^2}{\\alpha_t^2 v + \\sigma_t^2},

    where r_t^2 is Var[x_0 | x_t] when x_0 ~ N(0, v I) (v = ``data_var``; Song et al., 2023,
    "Pseudoinverse-guided diffusion models"). It is exact for Gaussian data of variance v, keeps
    the twist finite when sigma_y is tiny (the plain look-ahead's weights blow up there), and
    tends to G as t -> 0. With ``x0_var`` (a :class:`~pp_diffusion.DenoisingVariance`), r_t^2 is
    instead the model's measured denoising error Gamma_t. ``A`` is a matrix over flattened x0 or a
    :class:`~pp_diffusion.operators.LinearOperator`.
    """
    if hasattr(A, "matrix"):
        A = A.matrix()
    lg = LinearGaussian.build(A, y, noise_var)
    return linear_gaussian_potential(lg, data_var, x0_var)


def linear_gaussian_potential(lg: LinearGaussian, data_var: float = 1.0, x0_var=None) -> Potential:
    def log_g(x0):
        return lg.log_likelihood(jnp.reshape(x0, -1))

    def log_h(x_t, x0_hat, t, alpha, sigma):
        return lg.log_likelihood(jnp.reshape(x0_hat, -1), conditioning_x0_var(x0_var, data_var, t, alpha, sigma))

    return Potential(log_g, log_h)


def zero() -> Potential:
    """G = 1."""
    return Potential(lambda x0: jnp.zeros(()), lambda x_t, x0_hat, t, alpha, sigma: jnp.zeros(()))


def sum(*potentials: Potential) -> Potential:  # noqa: A001 - mirrors optax.chain-style naming
    """The product of potentials (a sum of log-potentials and of twists)."""
    if not potentials:
        return zero()
    parts = [p.lookahead for p in potentials if p.lookahead is not None]
    return Potential(
        lambda x0: builtins.sum(p.log_g(x0) for p in potentials),
        lambda *a: builtins.sum(p.log_h(*a) for p in potentials),
        (lambda x0: builtins.sum(f(x0) for f in parts)) if parts else None,
    )


def scale(potential: Potential, factor_: float) -> Potential:
    """G^c: a temperature or tilt ``factor_`` on both the potential and its twist."""
    look = potential.lookahead
    return Potential(lambda x0: factor_ * potential.log_g(x0), lambda *a: factor_ * potential.log_h(*a),
                     None if look is None else (lambda x0: factor_ * look(x0)))


def anneal(potential: Potential, weight_fn: Callable) -> Potential:
    """Twist tempered by ``weight_fn(t)`` in [0, 1] (weight 1 at t = 0 keeps the target; the final
    potential is untouched)."""
    if potential.lookahead is not None:
        raise ValueError("anneal fixes the twist's exponent, and this potential's is chosen adaptively: "
                         "use pp_diffusion.twists.tempered(schedule=...) on its site instead")
    return Potential(
        potential.log_g,
        lambda x_t, x0_hat, t, alpha, sigma: weight_fn(t) * potential.log_h(x_t, x0_hat, t, alpha, sigma),
    )
