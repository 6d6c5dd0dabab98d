"""Gradient guidance: DPS (the baseline)."""

from pp_diffusion.guidance._dps import dps as dps
