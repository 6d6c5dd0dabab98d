"""MCMC with BlackJAX's kernels: moves inside SMC samplers (``mala_move``, ``hmc_move``, ``nuts_move``,
``unadjusted_langevin_move``), applied by :func:`pp_diffusion.smc.energy` after resampling."""

from pp_diffusion.mcmc._moves import (
    Move as Move, apply_move as apply_move, hmc_move as hmc_move, mala_move as mala_move, nuts_move as nuts_move,
    unadjusted_langevin_move as unadjusted_langevin_move,
)
