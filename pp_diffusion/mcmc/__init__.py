"""MCMC with BlackJAX's kernels.

- Gradient MCMC directly on the clean data x_0 (:func:`nuts`, :func:`mala`): samplers for
  :func:`pp_diffusion.infer` on programs whose prior has an exact density or a clean-data energy.
- Moves inside SMC samplers (:func:`mala_move`, :func:`hmc_move`, :func:`nuts_move`, and the unadjusted
  :func:`unadjusted_langevin_move`), applied by :func:`pp_diffusion.smc.energy` after resampling.
"""

from pp_diffusion.mcmc._moves import (
    Move as Move, MoveState as MoveState, apply_move as apply_move, hmc_move as hmc_move, mala_move as mala_move,
    nuts_move as nuts_move, unadjusted_langevin_move as unadjusted_langevin_move,
)
from pp_diffusion.mcmc._x0 import mala as mala, nuts as nuts
