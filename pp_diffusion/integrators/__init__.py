"""Reverse-time integrators as pure ``init`` / ``step`` kernels (model passed to ``step``).

``integrate(rng_key, integrator, model, x_T, times)`` runs one in a single ``lax.scan``.
"""

from pp_diffusion.integrators._base import (
    Integrator as Integrator,
    IntegratorInfo as IntegratorInfo,
    IntegratorState as IntegratorState,
    integrate as integrate,
)
from pp_diffusion.integrators._ddim import ddim as ddim, ddpm as ddpm, transition as ddim_transition
from pp_diffusion.integrators._dpm_solver import dpm_solver_pp as dpm_solver_pp
from pp_diffusion.integrators._unipc import unipc as unipc
from pp_diffusion.integrators._conjugate import lambda_ddim as lambda_ddim
from pp_diffusion.integrators._deis import deis as deis
from pp_diffusion.integrators._edm import edm_euler as edm_euler, edm_heun as edm_heun
