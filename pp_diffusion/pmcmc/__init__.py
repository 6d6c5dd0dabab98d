"""Particle MCMC: programs with global latents (a noise scale, an operator's gain) beside the
diffusion site, sampled jointly with it; a conditioning SMC sampler runs inside every iteration.

- :func:`pmmh`: particle marginal Metropolis–Hastings (a random walk on the globals, accepted by the SMC
  evidence estimate).
- :func:`particle_gibbs`: conditional SMC with ancestor sampling for x given the globals, BlackJAX's NUTS or
  MALA for the globals given x.
- :func:`enumerate_globals`: discrete globals (a class label, a model index), each value weighted by its
  SMC evidence.
"""

from pp_diffusion.pmcmc._pmmh import pmmh as pmmh
from pp_diffusion.pmcmc._gibbs import particle_gibbs as particle_gibbs
from pp_diffusion.pmcmc._enumerate import enumerate_globals as enumerate_globals
