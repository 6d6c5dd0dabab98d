"""`DiffusionModel`: a trained (or exact) denoiser with its parameterization, schedule and event shape."""

from __future__ import annotations

from typing import Any, Callable

import equinox as eqx
import jax
import jax.numpy as jnp

from pp_diffusion import parameterization as param
from pp_diffusion.schedules import Schedule

__all__ = ["DiffusionModel"]


class DiffusionModel(eqx.Module):
    """A denoising network wrapped once with everything a sampler needs.

    Parameters
    ----------
    network
        ``network(x, t)`` on a single, unbatched ``x`` of shape ``event_shape`` and a scalar time
        ``t`` in [0, 1]; returns the prediction named by ``parameterization`` (an array of
        ``event_shape``, or a scalar energy). An Equinox module or any JAX-traceable callable.
    parameterization
        ``"eps"``, ``"x0"``, ``"v"``, ``"score"`` or ``"energy"`` (``E(x, t)`` with score ``-grad E``).
    schedule
        The :class:`~pp_diffusion.schedules.Schedule` the network was trained with.
    event_shape
        Shape of one sample x_0.
    data_distribution
        Optional exact distribution of x_0 (it has ``log_prob``), e.g. a
        :class:`~pp_diffusion.GaussianMixture`; gives :class:`DiffusionPrior` an exact ``log_prob``.
    name
        A label used in results.
    data_var
        The average per-coordinate variance of x_0 under the data distribution. Conditioning
        samplers use it for the variance of x_0 given x_t in Gaussian twists
        (:func:`pp_diffusion.potentials.linear_gaussian`).

    Notes
    -----
    Samplers count one network function evaluation (NFE) per call of :meth:`denoise`; for an
    energy network each such call is a forward and a backward pass. A network that evaluates an
    underlying network several times per call (classifier-free guidance: two) says so with an
    integer attribute ``evaluations_per_call``, and the counts are multiplied by :attr:`nfe_per_call`.

    Examples
    --------
    >>> import jax.numpy as jnp
    >>> from pp_diffusion import DiffusionModel, schedules
    >>> model = DiffusionModel(lambda x, t: jnp.zeros_like(x), "eps", schedules.VPLinear(), (2,))
    >>> model.denoise(jnp.ones(2), 0.5).shape
    (2,)
    """

    network: Callable
    parameterization: str = eqx.field(static=True)
    schedule: Schedule
    event_shape: tuple[int, ...] = eqx.field(static=True)
    data_distribution: Any = None
    name: str = eqx.field(static=True, default="model")
    data_var: float = eqx.field(static=True, default=1.0)

    def __init__(self, network, parameterization, schedule, event_shape, data_distribution=None, name="model",
                 data_var=1.0):
        if not callable(network):
            raise TypeError(f"network must be callable as network(x, t), got {type(network).__name__}")
        if not isinstance(schedule, Schedule):
            raise TypeError(
                f"schedule must be a pp_diffusion.schedules.Schedule, got {type(schedule).__name__}"
            )
        shape = (event_shape,) if isinstance(event_shape, int) else tuple(event_shape)
        if not shape or any((not isinstance(n, int)) or n < 1 for n in shape):
            raise ValueError(f"event_shape must be a non-empty tuple of positive ints, got {event_shape!r}")
        self.network = network
        self.parameterization = param.check_parameterization(parameterization)
        self.schedule = schedule
        self.event_shape = shape
        self.data_distribution = data_distribution
        self.name = name
        if not float(data_var) >= 0:
            raise ValueError(f"data_var must be non-negative, got {data_var!r}")
        self.data_var = float(data_var)

    @property
    def nfe_per_call(self) -> int:
        """Network evaluations behind one call of :meth:`denoise` (the network's
        ``evaluations_per_call``, default 1)."""
        return int(getattr(self.network, "evaluations_per_call", 1))

    def _coefficients(self, t):
        return self.schedule.alpha(t), self.schedule.sigma(t)

    def score(self, x, t):
        """grad_x log p_t(x)."""
        if self.parameterization == "energy":
            return -jax.grad(lambda y: jnp.sum(self.network(y, t)))(x)
        if self.parameterization == "score":
            return self.network(x, t)
        alpha, sigma = self._coefficients(t)
        return param.score_from_eps(self.eps(x, t), sigma)

    def denoise(self, x, t):
        """The Tweedie estimate xhat_0(x_t) = E[x_0 | x_t]."""
        alpha, sigma = self._coefficients(t)
        if self.parameterization in ("score", "energy"):
            return param.tweedie(x, self.score(x, t), alpha, sigma)
        return param.to_x0(self.parameterization, self.network(x, t), x, alpha, sigma)

    def eps(self, x, t):
        """The noise prediction eps(x_t) = (x_t - alpha xhat_0) / sigma."""
        alpha, sigma = self._coefficients(t)
        if self.parameterization == "eps":
            return self.network(x, t)
        if self.parameterization == "v":
            return param.eps_from_v(x, self.network(x, t), alpha, sigma)
        if self.parameterization in ("score", "energy"):
            return param.eps_from_score(self.score(x, t), sigma)
        return param.eps_from_x0(x, self.network(x, t), alpha, sigma)

    def energy(self, x, t):
        """E(x, t) with grad_x E = -score; needs an energy network or an exact data distribution."""
        if self.parameterization == "energy":
            return jnp.sum(self.network(x, t))
        marginal = getattr(self.data_distribution, "marginal_log_prob", None)
        if marginal is None:
            raise ValueError(
                f"model {self.name!r} has no energy: its parameterization is {self.parameterization!r} "
                "and it has no exact data distribution"
            )
        return -marginal(x, self.schedule.alpha(t), self.schedule.sigma(t))
