"""DPS, diffusion posterior sampling (Chung et al., ICLR 2023): the gradient-guidance baseline.

Each particle follows the prior's DDIM(eta) kernel with the score replaced by
score + scale * grad_{x_t} log G(xhat_0(x_t)), i.e. the kernel mean shifted by
scale * k_t * grad log G(xhat_0(x_t)) with k_t the coefficient of the score in the mean (the same
proposal as twisted SMC with the plain Tweedie look-ahead twist), and no weights: particles are
i.i.d. and the result is biased, because p(y | x_t) is not G(xhat_0(x_t)). For y ~ N(A x, s^2 I),
grad log G = -grad ||y - A xhat_0||^2 / (2 s^2), so the paper's step zeta grad ||y - A xhat_0||^2
is scale = 2 s^2 zeta / k_t; its normalisation zeta_t = zeta' / ||y - A xhat_0|| is per particle
(never over the batch, which makes results depend on the batch size). No evidence estimate.
"""

from __future__ import annotations

import blackjax.smc.resampling as resampling_lib

from pp_diffusion import potentials
from pp_diffusion.samplers import Sampler
from pp_diffusion.smc import _base
from pp_diffusion.smc._twisted import chain_moves

__all__ = ["dps"]


def dps(scale: float = 1.0, num_samples: int = 1000) -> Sampler:
    """DPS with guidance ``scale`` (1: the plain conditional-score substitution)."""
    if not float(scale) >= 0:
        raise ValueError(f"scale must be non-negative, got {scale!r}")

    def moves(fk):
        plain = fk._replace(potential=potentials.tweedie_lookahead(fk.log_g))
        return chain_moves(plain, guided=True, guidance_scale=float(scale), weighted=False)

    return _base.fk_sampler(
        "dps", moves, num_particles=num_samples, nfe_per_step=1, vjp_per_step=1,
        resampling=resampling_lib.systematic, ess_threshold=0.0, weighted=False,
        extra_settings={"scale": float(scale)},
    )
