"""Conversions between what a denoising network predicts: eps, x0, v, score or an energy.

With x_t = alpha x_0 + sigma eps, the predictions are linked by

.. math::
    \\hat x_0 = (x_t - \\sigma \\hat\\varepsilon)/\\alpha, \\qquad
    \\nabla \\log p_t(x_t) = -\\hat\\varepsilon / \\sigma, \\qquad
    v = \\alpha \\varepsilon - \\sigma x_0 \\ \\text{(Salimans & Ho, 2022)},

and an energy network E(x, t) has score -grad_x E. The x0 prediction is the Tweedie estimate
E[x_0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha (Efron, 2011). The v formulas below
hold for any schedule (they do not assume alpha^2 + sigma^2 = 1).
"""

from __future__ import annotations

from typing import Literal

import jax.numpy as jnp

__all__ = [
    "PARAMETERIZATIONS",
    "Parameterization",
    "check_parameterization",
    "x0_from_eps",
    "eps_from_x0",
    "x0_from_v",
    "eps_from_v",
    "v_from_x0_eps",
    "score_from_eps",
    "eps_from_score",
    "tweedie",
    "to_x0",
    "from_x0",
]

Parameterization = Literal["eps", "x0", "v", "score", "energy"]
PARAMETERIZATIONS = ("eps", "x0", "v", "score", "energy")


def check_parameterization(kind: str) -> str:
    if kind not in PARAMETERIZATIONS:
        raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {kind!r}")
    return kind


def x0_from_eps(x, eps, alpha, sigma):
    return (x - sigma * eps) / alpha


def eps_from_x0(x, x0, alpha, sigma):
    return (x - alpha * x0) / sigma


def x0_from_v(x, v, alpha, sigma):
    return (alpha * x - sigma * v) / (alpha**2 + sigma**2)


def eps_from_v(x, v, alpha, sigma):
    return (sigma * x + alpha * v) / (alpha**2 + sigma**2)


def v_from_x0_eps(x0, eps, alpha, sigma):
    return alpha * eps - sigma * x0


def score_from_eps(eps, sigma):
    return -eps / sigma


def eps_from_score(score, sigma):
    return -sigma * score


def tweedie(x, score, alpha, sigma):
    """E[x_0 | x_t] = (x_t + sigma^2 grad log p_t(x_t)) / alpha."""
    return (x + sigma**2 * score) / alpha


def to_x0(kind: str, output, x, alpha, sigma):
    """The x0 prediction from a network output of the given kind ("energy" outputs are scores here:
    the caller differentiates the energy first)."""
    if kind == "x0":
        return output
    if kind == "eps":
        return x0_from_eps(x, output, alpha, sigma)
    if kind == "v":
        return x0_from_v(x, output, alpha, sigma)
    if kind in ("score", "energy"):
        return tweedie(x, output, alpha, sigma)
    raise ValueError(f"parameterization must be one of {PARAMETERIZATIONS}, got {kind!r}")


def from_x0(kind: str, x0, x, alpha, sigma):
    """The prediction of the given kind that corresponds to the x0 prediction ``x0`` (inverse of :func:`to_x0`)."""
    eps = eps_from_x0(x, x0, alpha, sigma)
    if kind == "x0":
        return x0
    if kind == "eps":
        return eps
    if kind == "v":
        return v_from_x0_eps(x0, eps, alpha, sigma)
    if kind == "score":
        return score_from_eps(eps, sigma)
    raise ValueError(f"from_x0 converts to 'eps', 'x0', 'v' or 'score', got {kind!r}")
