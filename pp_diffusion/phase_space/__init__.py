"""Phase-space (augmented) diffusion: PSLD / CLD forward processes on z = [x; m], the exact
augmented Gaussian mixture, and splitting integrators for the reverse process (experimental).

An augmented state has shape ``(2, *event)``: ``z[0]`` the data coordinates, ``z[1]`` their momenta.

- :class:`PSLD` (``CLD()`` = Gamma 0): drift / diffusion matrices, the closed-form perturbation
  kernel ``kernel(t) -> (A_t, Sigma_t)`` (with a Van Loan reference), the stationary law
  N(0, diag(1, M)), ``perturb`` (training targets: eps and the kernel score -L^{-T} eps) and
  ``prior_sample``.
- :class:`AugmentedModel`: a trained eps-network on z (score -L_t^{-T} eps, denoiser E[x_0 | z_t]);
  ``DiffusionPrior(model, steps, integrator=sscs(model.sde))`` makes it a NumPyro prior over x_0.
- :class:`AugmentedGaussianMixture`: exact ``marginal_log_prob`` / ``score`` / ``denoise`` / ``sample``
  of z_t for Gaussian-mixture data.
- Integrators (``init(z_T)``, ``step(rng_key, state, score_fn, t, s)``), run by :func:`integrate`
  along a decreasing grid (:func:`time_grid`): stochastic :func:`euler_maruyama`, :func:`sscs`,
  :func:`oba`, :func:`reduced_oba`; deterministic :func:`pf_euler`, :func:`naive_symplectic_euler`,
  :func:`reduced_symplectic_euler`, :func:`naive_velocity_verlet`, :func:`reduced_velocity_verlet`,
  :func:`strang_euler`, :func:`strang_midpoint`; conjugate (B = lambda I, Phi by quadrature)
  :func:`conjugate_euler` and the hybrids :func:`conjugate_symplectic_euler` (deterministic) and
  :func:`conjugate_oba` (stochastic). Derivations are in the docstrings of ``_splitting`` and ``_conjugate``.

Example
-------
>>> import jax
>>> from pp_diffusion import GaussianMixture
>>> from pp_diffusion.phase_space import PSLD, AugmentedGaussianMixture, sscs, integrate, time_grid
>>> sde = PSLD()
>>> aug = AugmentedGaussianMixture(GaussianMixture([1.0], [[0.0, 0.0]], [0.5]), sde)
>>> z_T = sde.prior_sample(jax.random.PRNGKey(0), (2,))
>>> z_0, info = integrate(jax.random.PRNGKey(1), sscs(sde), aug.score, z_T, time_grid(20))
>>> z_0.shape, int(info.nfe.sum())
((2, 2), 20)
"""

from pp_diffusion.phase_space._mixture import (
    AugmentedGaussianMixture as AugmentedGaussianMixture,
)
from pp_diffusion.phase_space._conjugate import conjugate_euler as conjugate_euler
from pp_diffusion.phase_space._conjugate import conjugate_oba as conjugate_oba
from pp_diffusion.phase_space._conjugate import conjugate_symplectic_euler as conjugate_symplectic_euler
from pp_diffusion.phase_space._model import AugmentedModel as AugmentedModel
from pp_diffusion.phase_space._psld import CLD as CLD
from pp_diffusion.phase_space._psld import PSLD as PSLD
from pp_diffusion.phase_space._psld import PerturbedSample as PerturbedSample
from pp_diffusion.phase_space._splitting import (
    SplittingInfo as SplittingInfo,
)
from pp_diffusion.phase_space._splitting import (
    SplittingIntegrator as SplittingIntegrator,
)
from pp_diffusion.phase_space._splitting import (
    SplittingState as SplittingState,
)
from pp_diffusion.phase_space._splitting import (
    euler_maruyama as euler_maruyama,
)
from pp_diffusion.phase_space._splitting import (
    integrate as integrate,
)
from pp_diffusion.phase_space._splitting import (
    naive_symplectic_euler as naive_symplectic_euler,
)
from pp_diffusion.phase_space._splitting import (
    naive_velocity_verlet as naive_velocity_verlet,
)
from pp_diffusion.phase_space._splitting import (
    oba as oba,
)
from pp_diffusion.phase_space._splitting import (
    pf_euler as pf_euler,
)
from pp_diffusion.phase_space._splitting import (
    reduced_oba as reduced_oba,
)
from pp_diffusion.phase_space._splitting import (
    reduced_symplectic_euler as reduced_symplectic_euler,
)
from pp_diffusion.phase_space._splitting import (
    reduced_velocity_verlet as reduced_velocity_verlet,
)
from pp_diffusion.phase_space._splitting import (
    sscs as sscs,
)
from pp_diffusion.phase_space._splitting import (
    strang_euler as strang_euler,
)
from pp_diffusion.phase_space._splitting import (
    strang_midpoint as strang_midpoint,
)
from pp_diffusion.phase_space._splitting import (
    time_grid as time_grid,
)
