"""Priors made of energies: products of experts, low temperature and the exact guided target.

Each diffusion prior with an energy E_t (a trained energy network, or an exact data density with
E_t = -log p_t) defines a path of unnormalised densities. A combination with exponents beta_k

.. math::  \\gamma_t(x) = \\exp\\Big(-\\sum_k \\beta_k E^k_t(x)\\Big), \\qquad t \\in [0, 1],

is a path of *targets* whose end gamma_0 is the distribution the user asks for:

- :func:`product` (beta_k = 1): p_a(x) p_b(x) / Z, a product of experts ("a AND b");
- :func:`temper` (beta): p(x)^beta / Z, low temperature for beta > 1;
- :func:`guided` (1 - w, w): p(x)^(1 - w) p(x | c)^w / Z, the target classifier-free guidance
  only approximates.

The prior returned is a :class:`EnergyPrior`: a :class:`~pp_diffusion.DiffusionPrior` whose model
is the energy sum (parameterization ``"energy"``, score -sum_k beta_k grad E^k_t), usable as the
diffusion site of any program. Only :func:`pp_diffusion.smc.energy` samples gamma_0 (it weights
the reverse chain of the summed score against the path gamma_t, Thornton et al., 2025, after Du et
al., 2023). ``EnergyPrior.sample`` (and so ``numpyro.infer.Predictive`` and the ``iid`` sampler) runs
that chain unweighted, which samples a different law (summing scores is not the score of the
product at t > 0): it is kept as the heuristic to compare against, and the other SMC samplers
refuse an :class:`EnergyPrior`.
"""

from __future__ import annotations

import numbers

import equinox as eqx
import jax.numpy as jnp
import numpy as np

from pp_diffusion.model import DiffusionModel
from pp_diffusion.prior import DiffusionPrior

__all__ = ["EnergyPrior", "EnergySum", "product", "compose", "temper", "guided"]


def has_exact_energy(model: DiffusionModel) -> bool:
    """Whether ``model.energy`` is an exact log density down to t = 0 (an exact data distribution, not an energy
    network, which is undefined at sigma = 0)."""
    return model.parameterization != "energy" and hasattr(model.data_distribution, "log_prob")


class EnergySum(eqx.Module):
    """The network of a composed model: ``network(x, t) = sum_k betas[k] * models[k].energy(x, t)``."""

    models: tuple
    betas: tuple = eqx.field(static=True)

    @property
    def evaluations_per_call(self) -> int:  # read by DiffusionModel.nfe_per_call
        return sum(m.nfe_per_call for m in self.models)

    @property
    def clean_energy(self) -> bool:
        """Whether every component has an exact data density, so that E_0 (t = 0) is finite."""
        return all(has_exact_energy(m) for m in self.models)

    def __call__(self, x, t):
        return sum(b * m.energy(x, t) for m, b in zip(self.models, self.betas))


class EnergyPrior(DiffusionPrior):
    """A :class:`~pp_diffusion.DiffusionPrior` over the energy sum of :class:`EnergySum`, made by
    :func:`product`, :func:`temper` or :func:`guided` (module docstring). ``components`` is the tuple of
    ``(model, beta)``."""

    @property
    def components(self) -> tuple:
        net = self.model.network
        return tuple(zip(net.models, net.betas))

    @property
    def initial_std(self):
        """sigma_T / sqrt(B), B = sum_k beta_k: where every p^k_T is about N(0, sigma_T^2 I), gamma_T is about
        N(0, sigma_T^2 / B I), so the chain (and :func:`pp_diffusion.smc.energy`'s weights) start there. From
        N(0, sigma_T^2 I) instead, the initial weights of p^2 in d = 64 would have a log-variance of d / 2 = 32."""
        return self.model.schedule.sigma(self.times[0]) / np.sqrt(sum(self.model.network.betas))

    def log_prob(self, value):
        raise NotImplementedError(
            "an EnergyPrior's density gamma_0 is known only up to its normaliser: sample it with "
            "pp_diffusion.smc.energy, which also estimates that normaliser")


def _prior(value, argument: str) -> DiffusionPrior:
    if isinstance(value, EnergyPrior):
        return value
    if not isinstance(value, DiffusionPrior):
        raise TypeError(f"{argument} must be a pp_diffusion.DiffusionPrior, got {type(value).__name__}")
    value.model.check_energy(argument)
    if value.eta is None or value.eta <= 0:
        raise ValueError(f"{argument}: energy priors need the stochastic DDIM-family chain (eta > 0, e.g. "
                         f"DiffusionPrior(model, eta=1.0)), got eta={value.eta}")
    if value.order != 1 or value.x0_var is not None:
        raise ValueError(f"{argument}: energy priors use the first-order DDPM-family kernel: build it without "
                         "order=2 and without x0_var")
    return value


def _number(value, argument: str, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(float(value)):
        raise ValueError(f"{argument} must be a finite real number, got {value!r}")
    if positive and not float(value) > 0:
        raise ValueError(f"{argument} must be positive, got {value!r}")
    return float(value)


def _combine(priors: list[tuple[DiffusionPrior, float, str]], name: str) -> EnergyPrior:
    """The :class:`EnergyPrior` of sum_k beta_k E^k over ``(prior, beta, argument)`` triples, which must share
    event shape, schedule, time grid and eta (that of the first)."""
    first, _, first_arg = priors[0]
    models, betas = [], []
    for prior, beta, arg in priors:
        if isinstance(prior, EnergyPrior):  # flatten: temper(product(a, b), 2) = exp(-2 E_a - 2 E_b)
            models += [m for m, _ in prior.components]
            betas += [beta * b for _, b in prior.components]
        else:
            models.append(prior.model)
            betas.append(beta)
        model = prior.model
        if model.event_shape != first.model.event_shape:
            raise ValueError(f"{arg} has event shape {model.event_shape}, {first_arg} has {first.model.event_shape}: "
                             "composed priors must share it")
        if type(model.schedule) is not type(first.model.schedule) or not eqx.tree_equal(model.schedule,
                                                                                        first.model.schedule):
            raise ValueError(f"{arg} has schedule {model.schedule!r}, {first_arg} has {first.model.schedule!r}: "
                             "composed priors must share one schedule")
        if prior.times.shape != first.times.shape or not np.allclose(np.asarray(prior.times),
                                                                       np.asarray(first.times)):
            raise ValueError(f"{arg} and {first_arg} have different time grids ({prior.steps} and {first.steps} "
                             "steps): build them with the same steps and grid")
        if prior.eta != first.eta:
            raise ValueError(f"{arg} has eta={prior.eta}, {first_arg} eta={first.eta}: composed priors share eta")
    if not sum(betas) > 0:
        raise ValueError(f"the exponents must have a positive sum (gamma_t must be normalisable at high noise), got "
                         f"{[float(b) for b in betas]}")
    network = EnergySum(tuple(models), tuple(float(b) for b in betas))
    combined = DiffusionModel(network, "energy", first.model.schedule, first.model.event_shape, name=name,
                              data_var=first.model.data_var, t_start=first.model.t_start)
    return EnergyPrior(combined, first.steps, grid=first.times, eta=first.eta)


def product(*priors: DiffusionPrior) -> EnergyPrior:
    """The product of experts p_1(x) p_2(x) ... / Z: gamma_t = exp(-sum_k E^k_t).

    Each prior needs an energy (:meth:`~pp_diffusion.DiffusionModel.check_energy`); all share event
    shape, schedule, time grid and eta. For exponents other than 1 (e.g. "class a AND class b" of a
    class-conditional model, p(x | a) p(x | b) / p(x)) use :func:`compose`.
    """
    if len(priors) < 2:
        raise ValueError(f"product needs at least two priors, got {len(priors)}")
    return compose(*priors)


def compose(*priors: DiffusionPrior, betas=None) -> EnergyPrior:
    """gamma_t = exp(-sum_k betas[k] E^k_t) for any real exponents (default all 1), e.g. ``betas=(1, 1, -1)``
    for p(x | a) p(x | b) / p(x). The user is responsible for gamma_0 being normalisable."""
    if not priors:
        raise ValueError("compose needs at least one prior")
    betas = (1.0,) * len(priors) if betas is None else tuple(betas)
    if len(betas) != len(priors):
        raise ValueError(f"betas must have one exponent per prior ({len(priors)}), got {len(betas)}")
    checked = [(_prior(p, f"priors[{i}]"), _number(b, f"betas[{i}]"), f"priors[{i}]")
               for i, (p, b) in enumerate(zip(priors, betas))]
    names = [p.model.name for p, _, _ in checked]
    label = " * ".join(n if b == 1 else f"{n}^{b:g}" for n, (_, b, _) in zip(names, checked))
    return _combine(checked, label)


def temper(prior: DiffusionPrior, beta: float) -> EnergyPrior:
    """p(x)^beta / Z (beta > 0; beta > 1 sharpens, "low temperature"): gamma_t = exp(-beta E_t).

    Not the heuristic of multiplying the score by beta along the chain, which ``EnergyPrior.sample``
    runs and which samples a different law (Du et al., 2023)."""
    beta = _number(beta, "beta", positive=True)
    return _combine([(_prior(prior, "prior"), beta, "prior")], f"{prior.model.name}^{beta:g}")


def guided(unconditional: DiffusionPrior, conditional: DiffusionPrior, w: float) -> EnergyPrior:
    """p(x)^(1 - w) p(x | c)^w / Z (w >= 0): the target of classifier-free guidance with weight w,
    gamma_t = exp(-(1 - w) E^u_t - w E^c_t). Classifier-free guidance combines the *scores* the same
    way at every t, which matches gamma_t only at t = 0 and so samples a different law."""
    w = _number(w, "w")
    if w < 0:
        raise ValueError(f"w must be non-negative, got {w!r}")
    u, c = _prior(unconditional, "unconditional"), _prior(conditional, "conditional")
    return _combine([(u, 1.0 - w, "unconditional"), (c, w, "conditional")],
                    f"guided({unconditional.model.name}, {conditional.model.name}, w={w:g})")
