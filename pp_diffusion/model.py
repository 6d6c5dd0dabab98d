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
    data_range
        Optional ``(low, high)`` bounds of the data (e.g. ``(-1, 1)`` for images scaled to that
        range). When set, :meth:`denoise` clips xhat_0 to it, as DDPM's sampler does
        (``clip_denoised``), and :meth:`eps` and :meth:`score` are derived from the clipped xhat_0,
        so every integrator and sampler sees one consistent prediction. At high noise the
        eps-parameterised xhat_0 = (x_t - sigma_t eps) / alpha_t amplifies the network's error by
        1 / alpha_t (about 100 at the end of a cosine schedule); clipping keeps it, and the
        gradients of look-ahead twists through it, bounded.
    t_start
        The time the reverse chain starts from by default (:class:`~pp_diffusion.DiffusionPrior`'s
        grids run from ``t_start`` to 0, from x_T ~ N(0, sigma_{t_start}^2 I)). 1 by default. A
        trained eps-network's xhat_0 is unreliable in the last few per cent of a cosine schedule
        (error x 1 / alpha_t); there a look-ahead twist G(xhat_0(x_t)) is noise and collapses SMC
        weights. Starting at t_start < 1 replaces p_{t_start} by N(0, sigma^2 I), which costs at
        most alpha^2 E||x_0||^2 / (2 sigma^2) nats of KL at t_start (0.17 nats per image for the
        digits at 0.95, where alpha = 0.086).

    Notes
    -----
    Samplers count one network function evaluation (NFE) per call of :meth:`denoise`; for an
    energy network each such call is a forward and a backward pass. A network that evaluates an
    underlying network several times per call (classifier-free guidance: two) says so with an
    integer attribute ``evaluations_per_call``, and the counts are multiplied by :attr:`nfe_per_call`.

    Computations run in JAX's default precision, float32; for float64 call
    ``jax.config.update("jax_enable_x64", True)`` before building the network and the schedule.
    :func:`pp_diffusion.save_model` and :func:`pp_diffusion.load_model` store and restore a model
    over an Equinox network, keeping its weights' dtype.

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
    data_range: tuple[float, float] | None = eqx.field(static=True, default=None)
    t_start: float = eqx.field(static=True, default=1.0)

    def __init__(self, network, parameterization, schedule, event_shape, data_distribution=None, name="model",
                 data_var=1.0, data_range=None, t_start=1.0):
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
        if data_range is not None:
            try:
                low, high = (float(v) for v in data_range)
            except (TypeError, ValueError):
                raise ValueError(f"data_range must be None or a pair (low, high) of numbers, got {data_range!r}") from None
            if not low < high:
                raise ValueError(f"data_range must have low < high, got {data_range!r}")
            data_range = (low, high)
        self.data_range = data_range
        if not 0.0 < float(t_start) <= 1.0:
            raise ValueError(f"t_start must lie in (0, 1], got {t_start!r}")
        self.t_start = float(t_start)

    @property
    def nfe_per_call(self) -> int:
        """Network evaluations behind one call of :meth:`denoise` (the network's
        ``evaluations_per_call``, default 1)."""
        return int(getattr(self.network, "evaluations_per_call", 1))

    def _coefficients(self, t):
        return self.schedule.alpha(t), self.schedule.sigma(t)

    def score(self, x, t):
        """grad_x log p_t(x) (from the clipped xhat_0 when ``data_range`` is set)."""
        if self.data_range is not None:
            return param.score_from_eps(self.eps(x, t), self.schedule.sigma(t))
        return self._raw_score(x, t)

    def _raw_score(self, x, t):
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
            x0 = param.tweedie(x, self._raw_score(x, t), alpha, sigma)
        else:
            x0 = param.to_x0(self.parameterization, self.network(x, t), x, alpha, sigma)
        if self.data_range is not None:
            x0 = jnp.clip(x0, *self.data_range)
        return x0

    def eps(self, x, t):
        """The noise prediction eps(x_t) = (x_t - alpha xhat_0) / sigma."""
        alpha, sigma = self._coefficients(t)
        if self.data_range is not None:
            return (x - alpha * self.denoise(x, t)) / sigma
        if self.parameterization == "eps":
            return self.network(x, t)
        if self.parameterization == "v":
            return param.eps_from_v(x, self.network(x, t), alpha, sigma)
        if self.parameterization in ("score", "energy"):
            return param.eps_from_score(self.score(x, t), sigma)
        return param.eps_from_x0(x, self.network(x, t), alpha, sigma)

    @property
    def has_energy(self) -> bool:
        """Whether :meth:`energy` is defined: an energy network, or an exact data distribution with
        noisy marginals (``marginal_log_prob``, e.g. :class:`~pp_diffusion.GaussianMixture`)."""
        return self.parameterization == "energy" or hasattr(self.data_distribution, "marginal_log_prob")

    def check_energy(self, argument: str = "model") -> None:
        """Raise a ``ValueError`` naming ``argument`` unless :attr:`has_energy`."""
        if not self.has_energy:
            raise ValueError(
                f"{argument}: model {self.name!r} has no energy: its network predicts {self.parameterization!r} and "
                "it carries no exact data density. Energy samplers need E_t(x) itself, not only its gradient. "
                "Use an exact model (e.g. pp_diffusion.GaussianMixture(...).diffusion_model(schedule)), or a "
                "distilled energy network (parameterization='energy', e.g. pp_diffusion.zoo.load('digits_energy'), "
                "trained by models/digits_energy/train.py from a score model)"
            )

    def energy(self, x, t):
        """E_t(x), with grad_x E_t = -grad_x log p_t: the network's output for an energy network;
        -log p_t(x) (normalised) for an exact data distribution. An energy network defines E_t only up
        to a constant in x at each t. Raises ``ValueError`` for a model without one
        (:meth:`check_energy`)."""
        if self.parameterization == "energy":
            return jnp.sum(self.network(x, t))
        self.check_energy()
        return -self.data_distribution.marginal_log_prob(x, self.schedule.alpha(t), self.schedule.sigma(t))

    def energy_and_score(self, x, t):
        """``(E_t(x), -grad_x E_t(x))`` in one forward and one backward pass. The score here is the
        energy's own, unclipped even when ``data_range`` is set (energy samplers need the pair to agree)."""
        value, grad = jax.value_and_grad(lambda y: self.energy(y, t))(x)
        return value, -grad
