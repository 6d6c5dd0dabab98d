"""What the phase-space test files share."""

import jax

from pp_diffusion.phase_space import integrate


def run(integrator, score_fn, z_T, times, key):
    """Integrate a batch (leading axis) of starting states, one key each."""
    keys = jax.random.split(key, z_T.shape[0])
    return jax.jit(jax.vmap(lambda k, z: integrate(k, integrator, score_fn, z, times)[0]))(keys, z_T)
