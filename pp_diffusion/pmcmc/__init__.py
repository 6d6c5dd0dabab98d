"""Particle MCMC: programs with global latents (a noise scale, an operator's gain) beside the
diffusion site, sampled jointly with it; a conditioning SMC sampler runs inside every iteration.

- :func:`pmmh`: particle marginal Metropolis–Hastings (a random walk on the globals, accepted by the SMC
  evidence estimate).
"""

from pp_diffusion.pmcmc._pmmh import pmmh as pmmh
