"""Noise schedules and time grids.

A schedule is the pair of functions alpha(t), sigma(t) on continuous time t in [0, 1], with

.. math::  x_t = \\alpha_t x_0 + \\sigma_t \\varepsilon, \\qquad
           \\lambda_t = \\log(\\alpha_t^2 / \\sigma_t^2)

(the log signal-to-noise ratio, decreasing in t). t = 0 is clean data; t = 1 is the noisiest
level the schedule uses. Every schedule is a small immutable Equinox module whose fields are its
hyper-parameters, so it can be closed over or passed through ``jax.jit``.

Time grids return decreasing arrays of times ``[t_N = 1, ..., t_0 = 0]`` of length ``steps + 1``;
a sampler takes ``steps`` transitions along them.
"""

from __future__ import annotations

import inspect

import abc
from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import ArrayLike

__all__ = [
    "Schedule",
    "VPLinear",
    "VPCosine",
    "DiscreteVP",
    "VE",
    "EDM",
    "RectifiedFlow",
    "ddpm_linear",
    "uniform_t",
    "uniform_log_snr",
    "karras",
    "as_grid",
]


class Schedule(eqx.Module):
    """Base class: subclasses define :meth:`alpha` and :meth:`sigma` for t in [0, 1]."""

    @abc.abstractmethod
    def alpha(self, t: ArrayLike) -> jnp.ndarray: ...

    @abc.abstractmethod
    def sigma(self, t: ArrayLike) -> jnp.ndarray: ...

    def log_snr(self, t: ArrayLike) -> jnp.ndarray:
        """lambda_t = log(alpha_t^2 / sigma_t^2); +inf at clean data."""
        return 2.0 * (jnp.log(self.alpha(t)) - jnp.log(self.sigma(t)))

    @property
    def variance_preserving(self) -> bool:
        return False


class _VP(Schedule):
    """Variance preserving: sigma_t = sqrt(1 - alpha_t^2), defined by log alpha_t."""

    @abc.abstractmethod
    def log_alpha(self, t: ArrayLike) -> jnp.ndarray: ...

    def alpha(self, t):
        return jnp.exp(self.log_alpha(t))

    def sigma(self, t):
        # sqrt(1 - alpha^2) = sqrt(-expm1(2 log alpha)): accurate near t = 0.
        return jnp.sqrt(-jnp.expm1(2.0 * self.log_alpha(t)))

    @property
    def variance_preserving(self) -> bool:
        return True


class VPLinear(_VP):
    """VP-SDE with a linear beta(t) = beta_min + t (beta_max - beta_min) (Song et al., 2021)."""

    beta_min: float = 0.1
    beta_max: float = 20.0

    def __check_init__(self):
        if not (0 <= self.beta_min < self.beta_max):
            raise ValueError(
                f"VPLinear needs 0 <= beta_min < beta_max, got beta_min={self.beta_min}, "
                f"beta_max={self.beta_max}"
            )

    def log_alpha(self, t):
        t = jnp.asarray(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min


class VPCosine(_VP):
    """Cosine schedule (Nichol & Dhariwal, 2021): alpha_t = cos((t + s)/(1 + s) pi/2) / cos(s/(1+s) pi/2).

    ``t_max`` < 1 keeps sigma_1 / alpha_1 finite (the improved-DDPM clipping).
    """

    s: float = 0.008
    t_max: float = 0.9946

    def log_alpha(self, t):
        # log(cos(u + b) / cos(b)) with u = a t t_max, b = a s, a = pi / (2 (1 + s)). Written with
        # cos(u + b) - cos(b) = -2 sin(u/2 + b) sin(u/2) and log1p: the difference of two logs of
        # numbers near 1 loses all float32 precision near t = 0 (log-SNR not monotone there).
        a = jnp.pi / (2 * (1 + self.s))
        u = jnp.asarray(t) * self.t_max * a
        b = self.s * a
        return jnp.log1p(-2.0 * jnp.sin(0.5 * u + b) * jnp.sin(0.5 * u) / jnp.cos(b))


class DiscreteVP(_VP):
    """A discrete-time DDPM schedule, ``alphas_cumprod[n] = prod_{i <= n} (1 - beta_i)``.

    Continuous time follows the DPM-Solver convention: step n (0-based) sits at t = (n + 1) / N,
    and t = 0 is clean data; log alpha is interpolated linearly in between. So t = 1 is the
    noisiest step (n = N - 1, "t = 999" for N = 1000) and a uniform-t grid of 10 steps visits
    n = 999, 899, ..., 99 and then clean data.

    Build it from the betas (``DiscreteVP(betas)``) or, as most published checkpoints store the
    schedule, from the cumulative products (:meth:`from_alphas_cumprod`). The log alphas are
    computed in float64 and stored in JAX's default float dtype: float32, or float64 when
    ``jax.config.update("jax_enable_x64", True)`` was called before building the schedule.
    """

    log_alphas: jnp.ndarray  # shape (N + 1,), log alpha at t = 0, 1/N, ..., 1

    def __init__(self, betas: ArrayLike):
        betas = np.asarray(betas, dtype=np.float64)
        if betas.ndim != 1 or betas.size < 2 or np.any((betas <= 0) | (betas >= 1)):
            raise ValueError(
                f"betas must be a 1-D array of at least 2 values in (0, 1), got shape {betas.shape}"
            )
        self.log_alphas = _log_alphas(0.5 * np.cumsum(np.log1p(-betas)))

    @classmethod
    def from_alphas_cumprod(cls, alphas_cumprod: ArrayLike) -> "DiscreteVP":
        """The schedule with ``alpha_{(n + 1) / N}^2 = alphas_cumprod[n]``, n = 0, ..., N - 1.

        ``alphas_cumprod`` (the array published DDPM-family checkpoints store, often under that
        name) must be 1-D with at least 2 entries, finite, in (0, 1] and non-increasing. With
        ``alphas_cumprod = cumprod(1 - betas)`` this is ``DiscreteVP(betas)``, to the last bit
        for :func:`ddpm_linear`.
        """
        try:
            a = np.asarray(alphas_cumprod, dtype=np.float64)
        except (TypeError, ValueError):
            raise ValueError(f"alphas_cumprod must be a 1-D array of numbers, got {type(alphas_cumprod).__name__}") \
                from None
        if a.ndim != 1 or a.size < 2:
            raise ValueError(f"alphas_cumprod must be a 1-D array of at least 2 values, got shape {a.shape}")
        if not np.all(np.isfinite(a)):
            raise ValueError(f"alphas_cumprod must be finite; entries {np.flatnonzero(~np.isfinite(a))[:5].tolist()} "
                             "are not")
        bad = np.flatnonzero((a <= 0) | (a > 1))
        if bad.size:
            raise ValueError(f"alphas_cumprod must lie in (0, 1]; entry {bad[0]} is {float(a[bad[0]])!r}")
        rising = np.flatnonzero(np.diff(a) > 0)
        if rising.size:
            n = rising[0]
            raise ValueError(f"alphas_cumprod must be non-increasing (noise grows with the step); entry {n + 1} "
                             f"({float(a[n + 1])!r}) exceeds entry {n} ({float(a[n])!r})")
        return cls._from_log_alphas(_log_alphas(0.5 * np.log(a)))

    @classmethod
    def _from_log_alphas(cls, log_alphas: ArrayLike) -> "DiscreteVP":
        """The schedule whose :attr:`log_alphas` field is ``log_alphas`` as given (length N + 1,
        starting at 0); the reader of saved models uses it to restore the field to the bit."""
        schedule = object.__new__(cls)
        object.__setattr__(schedule, "log_alphas", jnp.asarray(log_alphas))
        return schedule

    @property
    def alphas_cumprod(self) -> jnp.ndarray:
        """alpha_t^2 at the N training steps t = 1/N, ..., 1 (the schedule's ``alphas_cumprod``)."""
        return jnp.exp(2.0 * self.log_alphas[1:])

    @property
    def num_train_steps(self) -> int:
        return self.log_alphas.shape[0] - 1

    def log_alpha(self, t):
        n = self.num_train_steps
        grid = jnp.linspace(0.0, 1.0, n + 1)
        return jnp.interp(jnp.asarray(t), grid, self.log_alphas)


def _log_alphas(log_alpha: np.ndarray) -> jnp.ndarray:
    """``[0, log_alpha...]`` (float64 NumPy) as an array of JAX's default float dtype."""
    return jnp.asarray(np.concatenate([[0.0], log_alpha]))


def ddpm_linear(num_steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> DiscreteVP:
    """The standard linear DDPM schedule (Ho et al., 2020): beta from 1e-4 to 0.02 over 1,000 steps."""
    if num_steps < 2:
        raise ValueError(f"num_steps must be >= 2, got {num_steps}")
    return DiscreteVP(np.linspace(beta_start, beta_end, num_steps))


class VE(Schedule):
    """Variance exploding (Song et al., 2021): alpha = 1, sigma_t = sigma_min (sigma_max/sigma_min)^t.

    Data is reached at t = 0 only up to sigma_min; samplers end with a final denoising step.
    """

    sigma_min: float = 0.01
    sigma_max: float = 50.0

    def __check_init__(self):
        if not (0 < self.sigma_min < self.sigma_max):
            raise ValueError(
                f"VE needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}"
            )

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.float32))

    def sigma(self, t):
        t = jnp.asarray(t)
        return jnp.where(
            t > 0, self.sigma_min * (self.sigma_max / self.sigma_min) ** t, 0.0
        )


class EDM(Schedule):
    """EDM (Karras et al., 2022): alpha = 1, sigma(t) the rho-interpolation between sigma_min and sigma_max.

    sigma(t) = (sigma_min^(1/rho) + t (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho for t > 0 and
    sigma(0) = 0, so a uniform-t grid is the Karras grid.
    """

    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0

    def __check_init__(self):
        if not (0 < self.sigma_min < self.sigma_max) or self.rho <= 0:
            raise ValueError(
                f"EDM needs 0 < sigma_min < sigma_max and rho > 0, got "
                f"{self.sigma_min}, {self.sigma_max}, {self.rho}"
            )

    def alpha(self, t):
        return jnp.ones_like(jnp.asarray(t, dtype=jnp.float32))

    def sigma(self, t):
        t = jnp.asarray(t)
        lo, hi = self.sigma_min ** (1 / self.rho), self.sigma_max ** (1 / self.rho)
        return jnp.where(t > 0, (lo + t * (hi - lo)) ** self.rho, 0.0)


class RectifiedFlow(Schedule):
    """Rectified flow / flow matching (Liu et al., 2023): alpha_t = 1 - t, sigma_t = t.

    ``t_max`` < 1 keeps the log-SNR finite at the start of sampling.
    """

    t_max: float = 0.999

    def alpha(self, t):
        return 1.0 - jnp.asarray(t) * self.t_max

    def sigma(self, t):
        return jnp.asarray(t) * self.t_max


# --------------------------------------------------------------------------- time grids

def _check_steps(steps) -> int:
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    return int(steps)


def uniform_t(schedule: Schedule, steps: int, t_start: float = 1.0) -> jnp.ndarray:
    """``steps + 1`` times uniform in t from ``t_start`` to 0."""
    steps = _check_steps(steps)
    return jnp.linspace(t_start, 0.0, steps + 1)


def _invert_log_snr(schedule: Schedule, lam: jnp.ndarray, iters: int = 60) -> jnp.ndarray:
    """t with log_snr(t) = lam by bisection (log-SNR decreases in t)."""
    lo = jnp.zeros_like(lam)
    hi = jnp.ones_like(lam)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = schedule.log_snr(mid) > lam  # still too clean: move right
        lo = jnp.where(above, mid, lo)
        hi = jnp.where(above, hi, mid)
    return 0.5 * (lo + hi)


def uniform_log_snr(schedule: Schedule, steps: int, t_min: float = 1e-3, t_start: float = 1.0) -> jnp.ndarray:
    """Times uniform in log-SNR between ``t_start`` and ``t_min``, then a final step to t = 0 (DPM-Solver's grid)."""
    steps = _check_steps(steps)
    if steps == 1:
        return jnp.array([t_start, 0.0])
    lam = jnp.linspace(schedule.log_snr(t_start), schedule.log_snr(t_min), steps)
    t = _invert_log_snr(schedule, lam).at[0].set(t_start)
    return jnp.concatenate([t, jnp.zeros(1)])


def karras(schedule: Schedule, steps: int, rho: float = 7.0, t_min: float = 1e-3,
           t_start: float = 1.0) -> jnp.ndarray:
    """Karras et al. (2022) grid: sigma/alpha interpolated in the 1/rho power from ``t_start`` to
    ``t_min``, then a final step to 0."""
    steps = _check_steps(steps)
    if steps == 1:
        return jnp.array([t_start, 0.0])
    s = lambda t: jnp.exp(-0.5 * schedule.log_snr(t))  # sigma / alpha
    lo, hi = s(t_min) ** (1 / rho), s(t_start) ** (1 / rho)
    ramp = jnp.linspace(0.0, 1.0, steps)
    lam = -2.0 * rho * jnp.log(hi + ramp * (lo - hi))
    t = _invert_log_snr(schedule, lam).at[0].set(t_start)
    return jnp.concatenate([t, jnp.zeros(1)])


Grid = Callable[[Schedule, int], jnp.ndarray]


def as_grid(schedule: Schedule, steps: int, grid: Grid | ArrayLike | None, t_start: float = 1.0) -> jnp.ndarray:
    """Resolve ``grid`` (a grid function, an explicit array of times, or None = uniform t) and check it.

    Grid functions that take a ``t_start`` keyword (the built-in ones) start there; an explicit
    array is used as given. Runs eagerly even inside a ``jax.jit`` trace (a prior may be built
    inside a program body).
    """
    with jax.ensure_compile_time_eval():
        return _as_grid(schedule, steps, grid, t_start)


def _takes_t_start(grid) -> bool:
    try:
        return "t_start" in inspect.signature(grid).parameters
    except (TypeError, ValueError):
        return False


def _as_grid(schedule, steps, grid, t_start):
    steps = _check_steps(steps)
    if grid is None:
        times = uniform_t(schedule, steps, t_start)
    elif callable(grid):
        times = grid(schedule, steps, t_start=t_start) if _takes_t_start(grid) else grid(schedule, steps)
    else:
        times = jnp.asarray(grid, dtype=jnp.float32)
    times = np.asarray(times)
    if times.ndim != 1 or times.size != steps + 1:
        raise ValueError(
            f"grid must give steps + 1 = {steps + 1} times, got an array of shape {times.shape}"
        )
    if not np.all(np.diff(times) < 0):
        raise ValueError(f"grid must be strictly decreasing from noise to data, got {times}")
    if times[0] > 1.0 or times[-1] < 0.0:
        raise ValueError(f"grid times must lie in [0, 1], got [{times[-1]}, {times[0]}]")
    log_snr = np.asarray(schedule.log_snr(jnp.asarray(times)))
    if np.any(np.isnan(log_snr)) or not np.all(np.diff(log_snr) > 0):
        raise ValueError(
            f"schedule {type(schedule).__name__} is not monotone on this grid: its log-SNR must "
            f"increase strictly from noise to data, got {log_snr}"
        )
    return jnp.asarray(times, dtype=jnp.float32)
