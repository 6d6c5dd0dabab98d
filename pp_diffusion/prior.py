"""`DiffusionPrior`: the reverse diffusion chain as a NumPyro distribution over x_0.

``numpyro.sample("x", DiffusionPrior(model, steps=100))`` makes a trained diffusion model the
prior of a latent variable. ``sample`` runs the reverse chain x_T -> x_0 in one ``lax.scan``
with particles on a batch axis; ``log_prob`` is available only where the model carries an exact
data density (the Gaussian mixture); otherwise conditioning goes through the samplers of
:mod:`pp_diffusion.smc`, :mod:`pp_diffusion.guidance` and friends, which never need it.

:meth:`DiffusionPrior.chain_program` shows the same chain as a NumPyro program with one sample
site per step (x_T, then the scanned site ``x`` with a leading step axis, then x_0).
"""

from __future__ import annotations

import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
from numpyro.contrib.control_flow import scan
from numpyro.distributions import constraints

from pp_diffusion.integrators import Integrator, ddim, integrate
from pp_diffusion.integrators._ddim import check_order, state_transition
from pp_diffusion.model import DiffusionModel
from pp_diffusion.phase_space import AugmentedModel, SplittingIntegrator
from pp_diffusion.phase_space import integrate as integrate_augmented
from pp_diffusion.phase_space import sscs, time_grid
from pp_diffusion.schedules import as_grid
from pp_diffusion.x0_variance import DenoisingVariance

__all__ = ["DiffusionPrior"]


def _count_nonfinite(bad):
    """Host side of :meth:`DiffusionPrior.sample`'s check: warn when draws are not finite; returns zeros
    (added to the draws, which keeps the callback in the compiled program)."""
    bad = np.asarray(bad)
    if bad.sum() > 0:
        warnings.warn(f"DiffusionPrior.sample: {int(bad.sum())} draw(s) are not finite (NaN or inf): the network "
                      "returned non-finite values", RuntimeWarning, stacklevel=2)
    return np.zeros(bad.shape, np.float32)


class DiffusionPrior(dist.Distribution):
    """The distribution of x_0 under the reverse chain of a diffusion model.

    Parameters
    ----------
    model
        A :class:`~pp_diffusion.DiffusionModel`, or a phase-space
        :class:`~pp_diffusion.phase_space.AugmentedModel` (then the chain runs on z = [x; m] with a
        splitting ``integrator``, by default :func:`~pp_diffusion.phase_space.sscs`, from
        z_T ~ N(0, Sigma_inf) to ``model.t_min``, and the draws are x_0 = z[0]: the momentum is
        marginalised; ``grid`` may be ``None``, the quadratic grid ``phase_space.time_grid(steps,
        power=2)``, or an explicit array; the conditioning samplers refuse such a prior, see
        ``docs/samplers.md``).
    steps
        Number of reverse transitions (network evaluations per sample for one-step integrators).
    grid
        The time grid: ``None`` (uniform in t), a grid function such as
        :func:`pp_diffusion.schedules.uniform_log_snr`, or an explicit decreasing array of
        ``steps + 1`` times from 1 to 0.
    eta
        Stochasticity of the DDIM-family transitions (1: DDPM ancestral, the default; 0:
        deterministic DDIM). Conditioning samplers use these Gaussian kernels.
    integrator
        Optional :class:`~pp_diffusion.integrators.Integrator` (e.g. ``integrators.unipc()``)
        used by :meth:`sample` instead of DDIM(eta); give either this or ``eta``.
    x0_var
        Optional :class:`~pp_diffusion.DenoisingVariance` (from :func:`pp_diffusion.denoising_variance`):
        the analytic reverse variance. Each DDIM-family transition adds the uncertainty of x_0
        left at x_t to its variance, and the conditioning samplers use it as r_t^2, Var[x_0 | x_t]
        (their linear-Gaussian twist and last step). Default None: DDPM's kernel, r_t^2 from the
        model's ``data_var``. With eta = 0 it makes the chain stochastic (Analytic-DDIM).
    order
        1 (default): the DDIM-family mean uses xhat_0(x_t). 2: it uses the multistep extrapolation
        through the previous step's prediction (SDE-DPM-Solver++(2M) at eta = 1, DPM-Solver++(2M) at
        eta = 0; Lu et al., 2022): same cost and variance, a second-order mean. The conditioning
        samplers use the same kernel (its particles carry their previous prediction).

    Notes
    -----
    The chain starts from x_T ~ N(0, sigma_1^2 I), the standard Gaussian approximation of the
    noisiest marginal (exact in the limit alpha_1 -> 0).
    """

    arg_constraints = {}
    pytree_data_fields = ("model", "times", "x0_var")
    pytree_aux_fields = ("integrator", "eta", "steps", "order")

    def __init__(self, model: DiffusionModel, steps: int = 100, *, grid=None, eta: float | None = None,
                 integrator: Integrator | None = None, x0_var: DenoisingVariance | None = None, order: int = 1,
                 validate_args=None):
        if isinstance(model, AugmentedModel):
            self._init_augmented(model, steps, grid, eta, integrator, x0_var, order, validate_args)
            return
        if not isinstance(model, DiffusionModel):
            raise TypeError(f"model must be a pp_diffusion.DiffusionModel (or a phase_space.AugmentedModel), "
                            f"got {type(model).__name__}")
        if isinstance(integrator, SplittingIntegrator):
            raise TypeError(f"integrator {integrator.name!r} is a phase-space splitting integrator: it needs a "
                            "phase_space.AugmentedModel, and model is a DiffusionModel")
        if integrator is not None and eta is not None:
            raise ValueError("give either eta (for the DDIM-family chain) or integrator, not both")
        if integrator is not None and not isinstance(integrator, Integrator):
            raise TypeError(f"integrator must be a pp_diffusion.integrators.Integrator, got {type(integrator).__name__}")
        if x0_var is not None and not isinstance(x0_var, DenoisingVariance):
            raise TypeError(f"x0_var must be a pp_diffusion.DenoisingVariance (from pp_diffusion.denoising_variance), "
                            f"got {type(x0_var).__name__}")
        if x0_var is not None and integrator is not None:
            raise ValueError("x0_var sets the variance of the DDIM-family kernel: give eta, not integrator")
        order = check_order(order)
        if order != 1 and integrator is not None:
            raise ValueError("order sets the mean of the DDIM-family kernel: give eta, not integrator")
        self.model = model
        self.x0_var = x0_var
        self.times = as_grid(model.schedule, steps, grid, model.t_start)
        self.steps = int(steps)
        self.order = order
        self.eta = None if integrator is not None else (1.0 if eta is None else float(eta))
        self.integrator = integrator if integrator is not None else ddim(self.eta, x0_var, order)
        super().__init__(batch_shape=(), event_shape=model.event_shape, validate_args=validate_args)

    def _init_augmented(self, model, steps, grid, eta, integrator, x0_var, order, validate_args):
        if eta is not None or x0_var is not None or order != 1:
            raise ValueError("eta, x0_var and order set the VP DDIM-family kernel; a phase-space model's chain "
                             "is set by integrator= (a pp_diffusion.phase_space splitting integrator)")
        if integrator is None:
            integrator = sscs(model.sde)
        if not isinstance(integrator, SplittingIntegrator):
            raise TypeError(f"model {model.name!r} is an augmented (phase-space) model: integrator must be a "
                            f"pp_diffusion.phase_space splitting integrator (e.g. phase_space.sscs(model.sde)), "
                            f"got {getattr(integrator, 'name', type(integrator).__name__)!r}")
        if grid is None:  # steps shrinking toward t_min, where the augmented marginals change fastest
            times = time_grid(steps, t_min=model.t_min, power=2.0)
        elif callable(grid):
            raise TypeError("grid for a phase-space model must be None or an explicit decreasing array of "
                            "steps + 1 times (e.g. phase_space.time_grid(steps, power=2))")
        else:
            times = jnp.asarray(grid)
            if times.shape != (int(steps) + 1,) or not bool(jnp.all(jnp.diff(times) < 0)):
                raise ValueError(f"grid must be a decreasing array of steps + 1 = {int(steps) + 1} times, "
                                 f"got shape {times.shape}")
        self.model, self.x0_var, self.times, self.steps, self.order = model, None, times, int(steps), 1
        self.eta, self.integrator = None, integrator
        super().__init__(batch_shape=(), event_shape=model.event_shape, validate_args=validate_args)

    @property
    def augmented(self) -> bool:
        """Whether the chain runs on phase-space states z = [x; m] (a :class:`~pp_diffusion.phase_space.AugmentedModel`)."""
        return isinstance(self.model, AugmentedModel)

    @constraints.dependent_property(is_discrete=False)
    def support(self):
        return constraints.independent(constraints.real, len(self.event_shape))

    @property
    def nfe(self) -> int:
        """Network evaluations per sample."""
        extra = getattr(self.integrator, "first_step_extra_nfe", 0)  # reduced velocity Verlet's first score
        return (self.steps * self.integrator.nfe_per_step + extra) * self.model.nfe_per_call

    @property
    def initial_std(self):
        """The standard deviation of x_T: sigma at the grid's first time."""
        return self.model.schedule.sigma(self.times[0])

    def initial_noise(self, rng_key, num_samples: int):
        """x_T ~ N(0, initial_std^2 I), shape ``(num_samples, *event_shape)``; for a phase-space prior the
        chain's start z_T ~ N(0, Sigma_inf), shape ``(num_samples, 2, *event_shape)``."""
        if self.augmented:
            return self.model.prior_sample(rng_key, (num_samples,))
        return self.initial_std * jax.random.normal(rng_key, (num_samples, *self.event_shape))

    def sample(self, key, sample_shape=()):
        num = math.prod(sample_shape)
        k_init, k_chain = jax.random.split(key)
        keys = jax.random.split(k_chain, num)
        if self.augmented:
            z_T = self.initial_noise(k_init, num)
            run = lambda k, z: integrate_augmented(k, self.integrator, self.model.score, z, self.times)[0][0]
            x_0 = jax.vmap(run)(keys, z_T)
        else:
            x_T = self.initial_noise(k_init, num)
            run = lambda k, x: integrate(k, self.integrator, self.model, x, self.times)[0]
            x_0 = jax.vmap(run)(keys, x_T)
        # numpyro.infer.Predictive returns what this gives: say so when it is garbage (one host call per
        # batch, also under vmap)
        bad = jnp.sum(~jnp.isfinite(x_0)).astype(jnp.int32)
        zero = jax.pure_callback(_count_nonfinite, jax.ShapeDtypeStruct((), jnp.float32), bad,
                                 vmap_method="expand_dims")
        return (x_0 + zero.astype(x_0.dtype)).reshape(tuple(sample_shape) + self.event_shape)

    def log_prob(self, value):
        data = getattr(self.model, "data_distribution", None)
        if data is None or not hasattr(data, "log_prob"):
            raise NotImplementedError(
                f"DiffusionPrior.log_prob needs an exact data density, and model {self.model.name!r} has "
                "none. Condition with a sampler that never evaluates it instead: pp_diffusion.infer with "
                "pp_diffusion.smc (bootstrap, twisted, fk_steering, svdd, mcgdiff) or pp_diffusion.guidance.dps."
            )
        flat = jnp.reshape(value, jnp.shape(value)[: jnp.ndim(value) - len(self.event_shape)] + (-1,))
        return data.log_prob(flat)

    def chain_program(self):
        """The reverse chain as a NumPyro program: sample sites ``x_T``, ``x`` (stacked over the
        first ``steps - 1`` transitions by ``numpyro.contrib.control_flow.scan``) and ``x_0``.

        DDIM-family chains have Gaussian sites (``Delta`` when eta = 0, and for x_0 unless the
        prior has ``x0_var``); other integrators show their deterministic steps as ``Delta`` sites.
        """
        if self.augmented:
            raise NotImplementedError("chain_program shows the VP chain's sites; a phase-space prior's chain runs on "
                                      "z = [x; m] (use sample)")
        event_dims = len(self.event_shape)
        model, times, eta, integrator, x0_var = self.model, self.times, self.eta, self.integrator, self.x0_var

        def kernel(state, t, s):
            if eta is not None:  # the Gaussian kernel, and the state advanced but for x
                mean, std, _, advanced = state_transition(model, state, t, s, eta, x0_var)
                return mean, std, advanced
            state, _ = integrator.step(numpyro.prng_key(), state, model, t, s)
            return state, None, None

        def program():
            sigma_T = self.initial_std
            x_T = numpyro.sample("x_T", dist.Normal(jnp.zeros(self.event_shape), sigma_T).to_event(event_dims))

            def body(state, ts):
                t, s = ts
                out, std, advanced = kernel(state, t, s)
                if eta is not None and (eta > 0 or x0_var is not None):
                    x = numpyro.sample("x", dist.Normal(out, std).to_event(event_dims))
                else:
                    x = numpyro.sample("x", dist.Delta(out if eta is not None else out.x, event_dim=event_dims))
                new = advanced._replace(x=x) if eta is not None else out._replace(x=x)
                return new, x

            state, _ = scan(body, integrator.init(x_T), (times[:-2], times[1:-1]))
            last, std, _ = kernel(state, times[-2], times[-1])
            if x0_var is not None:  # the analytic variance makes the last step Gaussian: N(xhat_0, Gamma_t1)
                return numpyro.sample("x_0", dist.Normal(last, std).to_event(event_dims))
            return numpyro.sample("x_0", dist.Delta(last if eta is not None else last.x, event_dim=event_dims))

        return program
