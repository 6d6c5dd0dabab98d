"""pp_diffusion: probabilistic programming with diffusion-model priors."""
