"""Feynman–Kac SMC samplers over the reverse diffusion chain, built on ``blackjax.smc.base``.

Each function returns a :class:`~pp_diffusion.Sampler` for :func:`pp_diffusion.infer`.
Resampling schemes are BlackJAX's own (``resampling.systematic``, ``stratified``,
``multinomial``, ``residual``).
"""

from blackjax.smc import resampling as resampling

from pp_diffusion.smc._base import (
    Particle as Particle, SMCInfo as SMCInfo, SMCKernel as SMCKernel, SMCState as SMCState, kernel as kernel,
)
from pp_diffusion.smc._twisted import bootstrap as bootstrap, fk_steering as fk_steering, twisted as twisted
from pp_diffusion.smc._mcgdiff import mcgdiff as mcgdiff
from pp_diffusion.smc._svdd import svdd as svdd
from pp_diffusion.smc._energy import energy as energy
from pp_diffusion.smc._repulsive import repulsive as repulsive
