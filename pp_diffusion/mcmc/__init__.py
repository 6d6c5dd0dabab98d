"""MCMC with BlackJAX's kernels: gradient MCMC directly on the clean data x_0 (:func:`nuts`, :func:`mala`).

Each function returns a :class:`~pp_diffusion.Sampler` for :func:`pp_diffusion.infer`.
"""

from pp_diffusion.mcmc._x0 import mala as mala, nuts as nuts
