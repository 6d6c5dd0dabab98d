"""`AugmentedModel`: a network trained on a phase-space (PSLD / CLD) process, with its score and denoiser.

The network predicts the standard-normal draw eps of the perturbation kernel z_t = A_t [x_0; 0] +
L_t eps (Sigma_t = L_t L_t^T, :meth:`PSLD.perturb`), so the score is

    s(z, t) = -L_t^{-T} eps_theta(z, t),

and the posterior mean of x_0 follows from Tweedie's formula for the kernel's linear mean: with a_t
the first column of A_t, E[a_t x_0 | z] = z + Sigma_t s(z, t) holds row by row, and the
generalised-least-squares combination of the two rows is

    E[x_0 | z_t = z] = (a_t^T Sigma_t^{-1} a_t)^{-1} a_t^T (Sigma_t^{-1} z + s(z, t)),

exact when s is the true score (both rows then agree) and the weighted projection otherwise.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from pp_diffusion.phase_space._psld import PSLD, eps_to_score

__all__ = ["AugmentedModel"]


class AugmentedModel(eqx.Module):
    """An eps-prediction network on augmented states z = [x; m] of shape ``(2, *event_shape)``.

    Parameters
    ----------
    network
        ``network(z, t)`` on one unbatched z of shape ``(2, *event_shape)`` and a scalar t in [0, 1],
        returning the kernel's eps (the same shape).
    sde
        The :class:`PSLD` (or CLD) process it was trained on.
    event_shape
        Shape of one data point x_0.
    name
        A label used in results.
    data_range
        Optional ``(low, high)`` bounds of the data; :meth:`denoise` clips to them.
    data_var
        The average per-coordinate variance of x_0 (recorded for the model card; 1 by default).
    t_min
        The last time of the reverse chain's default grids (the kernel is singular at t = 0).
    """

    network: Callable
    sde: PSLD
    event_shape: tuple[int, ...] = eqx.field(static=True)
    name: str = eqx.field(static=True)
    data_range: tuple[float, float] | None = eqx.field(static=True)
    data_var: float = eqx.field(static=True)
    t_min: float = eqx.field(static=True)

    def __init__(self, network, sde: PSLD, event_shape, *, name: str = "augmented", data_range=None,
                 data_var: float = 1.0, t_min: float = 1e-3):
        if not callable(network):
            raise TypeError(f"network must be callable as network(z, t), got {type(network).__name__}")
        if not isinstance(sde, PSLD):
            raise TypeError(f"sde must be a PSLD (or CLD), got {type(sde).__name__}")
        self.network, self.sde = network, sde
        self.event_shape = tuple(int(n) for n in event_shape)
        self.name = str(name)
        self.data_range = None if data_range is None else (float(data_range[0]), float(data_range[1]))
        self.data_var = float(data_var)
        if not 0 < float(t_min) < 1:
            raise ValueError(f"t_min must be in (0, 1) (the kernel is singular at t = 0), got {t_min!r}")
        self.t_min = float(t_min)

    @property
    def nfe_per_call(self) -> int:
        """Network evaluations per score call (1)."""
        return 1

    @property
    def state_shape(self) -> tuple[int, ...]:
        """``(2, *event_shape)``, the shape of one augmented state."""
        return (2, *self.event_shape)

    def eps(self, z, t):
        """The network's eps prediction at (z, t)."""
        return self.network(z, t)

    def _score(self, z, t):
        C, _ = eps_to_score(self.sde, t, z.dtype)
        return -jnp.tensordot(C, self.eps(z, t), axes=1), C

    def score(self, z, t):
        """s(z, t) = -L_t^{-T} eps_theta(z, t), shape ``(2, *event_shape)``."""
        return self._score(jnp.asarray(z), t)[0]

    def score_and_denoise(self, z, t):
        """``(s(z, t), E[x_0 | z_t = z])`` from one network evaluation: the score and the
        generalised-least-squares Tweedie estimate (module docstring)."""
        z = jnp.asarray(z)
        score, C = self._score(z, t)
        a = self.sde.mean_matrix(jnp.asarray(t, z.dtype))[:, 0]
        P = C @ C.T  # Sigma_t^{-1} = L^{-T} L^{-1}
        x0 = jnp.tensordot(a / (a @ P @ a), jnp.tensordot(P, z, axes=1) + score, axes=1)
        return score, (x0 if self.data_range is None else jnp.clip(x0, *self.data_range))

    def denoise(self, z, t):
        """E[x_0 | z_t = z] by the generalised-least-squares Tweedie formula, shape ``event_shape``."""
        return self.score_and_denoise(z, t)[1]

    def x0_var(self, t, data_var=None):
        """Var[x_0 | z_t] per coordinate for data x_0 ~ N(0, v I) (v = ``data_var``, the model's by
        default): z_t | x_0 ~ N(a_t x_0, Sigma_t) row by row, so the posterior precision is
        1 / v + a_t^T Sigma_t^{-1} a_t. The conditioning samplers' r_t^2 (their Gaussian twists)."""
        v = self.data_var if data_var is None else data_var
        dtype = jnp.result_type(t, float)
        a = self.sde.mean_matrix(jnp.asarray(t, dtype))[:, 0]
        C, _ = eps_to_score(self.sde, t, dtype)
        return 1.0 / (1.0 / v + jnp.sum((C.T @ a) ** 2))

    def prior_sample(self, rng_key, sample_shape=()):
        """Draws of the reverse chain's start N(0, Sigma_inf), shape ``(*sample_shape, 2, *event_shape)``."""
        sample_shape = tuple(sample_shape)
        keys = jax.random.split(rng_key, math.prod(sample_shape))
        draws = jax.vmap(lambda k: self.sde.prior_sample(k, self.event_shape))(keys)
        return draws.reshape(sample_shape + self.state_shape)
