"""Guidance: DPS (the gradient-guidance baseline), classifier-free guidance of class-conditional models, and
particle guidance (diverse groups of draws)."""

from pp_diffusion.guidance._cfg import classifier_free as classifier_free
from pp_diffusion.guidance._dps import dps as dps
from pp_diffusion.guidance._particle import particle as particle
