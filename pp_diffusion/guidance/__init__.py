"""Guidance: DPS (the gradient-guidance baseline) and classifier-free guidance of class-conditional models."""

from pp_diffusion.guidance._cfg import classifier_free as classifier_free
from pp_diffusion.guidance._dps import dps as dps
