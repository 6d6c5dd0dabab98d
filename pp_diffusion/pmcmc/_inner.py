"""The SMC run inside the particle-MCMC samplers: which samplers may run there, the program with its
globals set (:func:`~pp_diffusion.program.with_globals`), and one run at given global values."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from pp_diffusion.program import GLOBALS_ARG, ProgramInfo, inspect_program, with_globals
from pp_diffusion.samplers import Sampler

# samplers whose runs give an unbiased evidence estimate and trace through a global latent's value
# (MCGdiff precomputes its SVD coordinates on the host; DPS and SVDD carry no weights)
INNER = ("bootstrap", "twisted", "fk_steering")


def check_inner(smc) -> None:
    if not isinstance(smc, Sampler) or smc.name not in INNER:
        raise TypeError(f"smc must be one of pp_diffusion.smc.{', '.join(INNER)} (an SMC sampler with an unbiased "
                        f"evidence estimate), got {getattr(smc, 'name', type(smc).__name__)!r}")


def inner_settings(smc: Sampler) -> dict:
    return {"smc": smc.name, **{f"smc_{k}": v for k, v in smc.settings.items()}}


def conditioned_program(smc: Sampler, program, info: ProgramInfo, data, names, values):
    """``(program with the globals ``names`` set from data, its ProgramInfo read at ``values``)``; the
    SMC sampler's setup runs once there, so that it refuses what it cannot take before any long run. The
    structure is read from the program's concrete data (``info.data``), so ``data`` may be traced."""
    conditioned = with_globals(program, names)
    concrete = {**(info.data or data), GLOBALS_ARG: values}
    with jax.ensure_compile_time_eval():  # concrete even when the setup runs under jit (a batch of problems)
        inner_info = inspect_program(conditioned, concrete)
        smc.setup(conditioned, inner_info, concrete)
    return conditioned, inner_info


def run_at(smc: Sampler, rng_key, program, info, data, values):
    """One SMC run of ``program`` (from :func:`conditioned_program`) with the globals at (traced)
    ``values``: its SamplerOutput and the run's network evaluations and VJPs over all particles."""
    out = smc.run(rng_key, smc.setup(program, info, {**data, GLOBALS_ARG: values}))
    return out, jnp.sum(out.sample_stats["nfe"]), jnp.sum(out.sample_stats["vjp"])
