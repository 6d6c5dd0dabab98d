"""Classifier-free guidance (Ho & Salimans, 2022): a class-conditional model made into one
:class:`~pp_diffusion.DiffusionModel` that samples the class ``label`` with guidance ``scale``.

With eps(x, t, c) the network at class c and eps(x, t, null) at the null class (the unconditional
model, trained by dropping labels),

.. math::  \\epsilon_w(x, t) = \\epsilon(x, t, \\varnothing) + w\\,(\\epsilon(x, t, c) - \\epsilon(x, t, \\varnothing)),

so ``scale`` w = 0 is the unconditional model, w = 1 the plain conditional one, and w > 1
sharpens the class (the paper's guidance weight is w - 1). The combination has weights 1 - w and
w, which sum to one, so it can be taken on the network's raw output for every parameterization:
x0, v and eps are affine in one another with the same coefficients at a given (x, t), and score and
energy are linear in eps.
"""

from __future__ import annotations

import dataclasses

from typing import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from pp_diffusion.model import DiffusionModel

__all__ = ["classifier_free", "ClassifierFreeNetwork"]


class ClassifierFreeNetwork(eqx.Module):
    """``network(x, t)`` = (1 - scale) net(x, t, null) + scale net(x, t, label), with both network
    calls made as one call batched over the two labels."""

    network: Callable
    label: jax.Array
    scale: jax.Array
    null_class: int = eqx.field(static=True)
    evaluations_per_call = 2  # read by DiffusionModel.nfe_per_call: samplers' NFE counts double

    def __call__(self, x, t):
        labels = jnp.stack([jnp.asarray(self.null_class, jnp.int32), self.label])
        null, cond = jax.vmap(lambda c: self.network(x, t, c))(labels)
        return null + self.scale * (cond - null)


def _is_concrete(x) -> bool:
    return not isinstance(x, jax.core.Tracer)


def classifier_free(model: DiffusionModel, label, scale: float = 1.0) -> DiffusionModel:
    """The class-conditional ``model`` guided towards class ``label`` with weight ``scale``.

    Parameters
    ----------
    model
        A :class:`~pp_diffusion.DiffusionModel` whose network is class-conditional: it has an
        integer attribute ``num_classes`` and is called as ``network(x, t, label)`` with labels
        0, ..., num_classes - 1, label ``num_classes`` being the null class, and ``network(x, t)``
        the null class (as :class:`pp_diffusion.networks.UNet` with ``num_classes`` set, e.g.
        ``zoo.load("digits_conditional")``).
    label
        The class, an integer scalar in [0, num_classes) (a traced value is accepted, unchecked).
    scale
        The guidance weight w in eps_null + w (eps_label - eps_null): 0 is unconditional, 1
        conditional, > 1 guided (any finite real; may be traced, e.g. vmapped over).

    Returns
    -------
    A :class:`~pp_diffusion.DiffusionModel` with the same parameterization, schedule, event shape
    and ``data_var``, usable by :class:`~pp_diffusion.DiffusionPrior` and every sampler.

    Notes
    -----
    Each call of the returned model's ``denoise``/``eps``/``score`` evaluates the network twice
    (one call batched over the null class and ``label``), and NFE counts say so:
    ``model.nfe_per_call`` is 2, so ``DiffusionPrior.nfe`` and the samplers' ``sample_stats.nfe``
    (and VJP counts) are twice those of the unguided model.
    """
    if not isinstance(model, DiffusionModel):
        raise TypeError(f"model must be a pp_diffusion.DiffusionModel, got {type(model).__name__}")
    num_classes = getattr(model.network, "num_classes", None)
    if num_classes is None:
        raise ValueError(
            f"classifier_free needs a class-conditional model, whose network has num_classes and is "
            f"called as network(x, t, label); model {model.name!r} has a {type(model.network).__name__} "
            "without class conditioning (e.g. use zoo.load('digits_conditional'))"
        )
    num_classes = int(num_classes)
    if _is_concrete(label):
        arr = np.asarray(label)
        if arr.shape != () or not np.issubdtype(arr.dtype, np.integer):
            raise ValueError(f"label must be an integer scalar in [0, {num_classes}), got {label!r}")
        if not 0 <= int(arr) < num_classes:
            raise ValueError(f"label must be in [0, {num_classes}) for model {model.name!r} "
                             f"(label {num_classes} is the null class: use the model itself), got {int(arr)}")
    elif jnp.shape(label) != () or not jnp.issubdtype(jnp.result_type(label), jnp.integer):
        raise ValueError(f"label must be an integer scalar, got a traced {jnp.result_type(label)} "
                         f"array of shape {jnp.shape(label)}")
    if _is_concrete(scale):
        arr = np.asarray(scale)
        if arr.shape != () or not np.isfinite(arr.astype(float)):
            raise ValueError(f"scale must be a finite real scalar, got {scale!r}")
    elif jnp.shape(scale) != ():
        raise ValueError(f"scale must be a scalar, got a traced array of shape {jnp.shape(scale)}")
    network = ClassifierFreeNetwork(model.network, jnp.asarray(label, jnp.int32),
                                    jnp.asarray(scale, jnp.float32), num_classes)
    # the other fields (schedule, data_var, data_range, t_start, ...) carry over; an exact data
    # density does not: it is not the guided model's
    return dataclasses.replace(model, network=network, name=f"{model.name}+cfg", data_distribution=None)
