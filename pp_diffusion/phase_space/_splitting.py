"""Reverse-time integrators for phase-space (PSLD / CLD) models: Euler-Maruyama, probability-flow
Euler, SSCS, symplectic Euler / velocity Verlet (naive and reduced) and OBA (naive and reduced).

Every integrator is a pure ``init`` / ``step`` pair over a :class:`SplittingState`; ``step(rng_key,
state, score_fn, t, s)`` moves the augmented state z = [x; m] (shape ``(2, *event)``) from time t to
the earlier time s = t - h, calling ``score_fn(z, t) -> grad_z log p_t(z)`` (e.g.
:meth:`AugmentedGaussianMixture.score`). :func:`integrate` runs one along a time grid in one
``lax.scan``.

Derivation
----------
Write b = beta / 2, tau for reverse time (dtau = -dt) and the forward SDE dz = F z dt + G dW. The
reverse SDE and the probability-flow (PF) ODE, in reverse time, are

    dz = (-F z + G G^T s) dtau + G dW,        dz/dtau = -F z + (1/2) G G^T s.

Score residual. Let r = s + Sigma_inf^{-1} z, which is identically zero when the augmented data law
is the stationary one N(0, Sigma_inf) (all marginals are then stationary). Using the Lyapunov
identity G G^T = -(F Sigma_inf + Sigma_inf F^T), the SDE's linear part is

    -F - G G^T Sigma_inf^{-1} = Sigma_inf F^T Sigma_inf^{-1} =: F~ = b [[-Gamma, -1/M], [1, -nu]],

an OU process with diffusion G and the same stationary law (F~ Sigma_inf + Sigma_inf F~^T + G G^T = 0),
so its transition over h is exact: z -> E z + N(0, Sigma_inf - E Sigma_inf E^T), E = exp(F~ h).
The reverse SDE is this OU plus the residual drift G G^T r.

- **SSCS** (symmetric splitting, Dockhorn et al. 2022): exact OU over h/2, then
  z <- z + h G G^T r(z, t - h/2) (one score call), then exact OU over h/2. With r = 0 it is the
  exact OU transition over h, so for stationary data the endpoint law is exactly N(0, Sigma_inf) at
  any step size (tested).
- **Euler-Maruyama**: z <- z + h(-F z + G G^T s(z, t)) + sqrt(h) G xi.
- **PF-ODE Euler**: z <- z + h(-F z + (1/2) G G^T s(z, t)).

Deterministic splittings of the PF-ODE. Per coordinate, with s = (s_x, s_m),

    v_x(x, m) = b(Gamma x - m / M) + b Gamma s_x,      v_m(x, m) = b(x + nu m) + b M nu s_m.

Split the PF-ODE into the x-flow (m frozen) and the m-flow (x frozen), each stepped by Euler:

- **naive symplectic Euler** (2 NFE): x' = x + h v_x(x, m; s(x, m, t)); m' = m + h v_m(x', m; s(x', m, t)).
- **reduced symplectic Euler** (1 NFE): one score S = s(x, m, t) for both updates (the linear parts
  still use the new x'): x' = x + h v_x(x, m; S); m' = m + h v_m(x', m; S).
- **naive velocity Verlet** (3 NFE, m-x-m Strang composition): m_half = m + (h/2) v_m(x, m; s(x, m, t));
  x' = x + h v_x(x, m_half; s(x, m_half, t - h/2)); m' = m_half + (h/2) v_m(x', m_half; s(x', m_half, s)).
- **reduced velocity Verlet** (1 NFE after the first step): the same composition, but the score at
  the start of a step is the one evaluated at (x', m_half) in the previous step (carried in the
  state), and the middle update reuses the start score. Reusing a score from an O(h)-nearby point
  keeps consistency (first order).

- **Strang, exponential** (``strang_euler``, 1 NFE; ``strang_midpoint``, 2 NFE): the PF-ODE's linear
  part is L = -(F + (1/2) G G^T Sigma_inf^{-1}) = (F~ - F) / 2 = b [[0, -1/M], [1, 0]], a harmonic
  rotation with frequency b / sqrt(M), solved exactly; the residual (1/2) G G^T r(z, t - h/2) is
  stepped by Euler or by the explicit midpoint rule between two exact half-rotations. Time enters
  only through the residual, frozen at the mid-step (Strang with t advanced by the linear flows),
  so the midpoint version is second order; both are exact when r = 0.

Because the m-flow is not separable (v_m depends on m through nu m and s_m), its Euler sub-steps
make every one of these compositions first order in general (the Strang composition's second order
needs each sub-flow solved to second order); this is what the order test measures.

Stochastic splittings (OBA). Separate the reverse SDE's friction-and-noise (O), momentum kick (B)
and position drift (A). The reverse SDEs dz = [-F z + (1/2) G G^T s + (1/2) D s] dtau + D^{1/2} dW
have the same marginals for every PSD D; take D = diag(eta^2, beta M nu), eta^2 >= 0 the
position-noise rate (the exact reverse SDE has eta^2 = beta Gamma; eta^2 = 0 makes the position
update noise-free). Substituting s = -Sigma_inf^{-1} z + r (and b Gamma = beta Gamma / 2):

    dx = [-(eta^2/2) x - b m / M + (1/2)(beta Gamma + eta^2) r_x] dtau + eta dW_x,
    dm = [-b nu m + b x + beta M nu r_m] dtau + sqrt(beta M nu) dW_m.

- O (exact scalar OUs, stationary variances 1 and M): x <- e^{-eta^2 h/2} x + sqrt(1 - e^{-eta^2 h}) xi_x,
  m <- e^{-b nu h} m + sqrt(M (1 - e^{-2 b nu h})) xi_m.
- B: m <- m + h (b x + beta M nu r_m).        A: x <- x + h (-b m / M + (1/2)(beta Gamma + eta^2) r_x).
- **OBA** (2 NFE): O, then B with r at the state after O, then A with r re-evaluated after B
  (scores at time s, the end of the step).
- **reduced OBA** (1 NFE): O, then B and A both with the one residual evaluated after O.

References: Dockhorn, Vahdat & Kreis (2022), "Score-based generative modeling with critically-damped
Langevin diffusion"; Pandey, Rudolph & Mandt (2024), "Efficient integrators for diffusion generative
models" (their naive / reduced splittings are described there in words; the updates above are
derived here and may differ from theirs in where the score is evaluated).
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from pp_diffusion.phase_space._psld import PSLD

__all__ = [
    "SplittingInfo",
    "SplittingIntegrator",
    "SplittingState",
    "euler_maruyama",
    "integrate",
    "naive_symplectic_euler",
    "naive_velocity_verlet",
    "oba",
    "pf_euler",
    "reduced_oba",
    "reduced_symplectic_euler",
    "reduced_velocity_verlet",
    "sscs",
    "strang_euler",
    "strang_midpoint",
    "time_grid",
]


class SplittingState(NamedTuple):
    """State of an augmented-model integrator.

    z
        ``(2, *event)`` the current augmented state [x; m].
    score
        ``(2, *event)`` a carried score (used only by :func:`reduced_velocity_verlet`; zeros otherwise).
    count
        Number of steps taken.
    """

    z: jax.Array
    score: jax.Array
    count: jax.Array


class SplittingInfo(NamedTuple):
    """Per-step diagnostics: ``nfe``, the score evaluations made in this step."""

    nfe: jax.Array


class SplittingIntegrator(NamedTuple):
    """An integrator for augmented models (``init(z_T)``, ``step(rng_key, state, score_fn, t, s)``).

    ``nfe_per_step`` is the number of score calls per step, ``first_step_extra_nfe`` the calls the
    first step makes beyond it (reduced velocity Verlet: 1); ``stochastic`` says whether the step
    draws noise.
    """

    init: Callable
    step: Callable
    nfe_per_step: int
    name: str
    stochastic: bool
    first_step_extra_nfe: int = 0


def _init(z_T) -> SplittingState:
    z_T = jnp.asarray(z_T)
    if z_T.ndim < 1 or z_T.shape[0] != 2:
        raise ValueError(f"z_T must have shape (2, *event) (stacked [x; m]), got {jnp.shape(z_T)}")
    return SplittingState(z=z_T, score=jnp.zeros_like(z_T), count=jnp.zeros((), jnp.int32))


def _check_sde(sde):
    if not isinstance(sde, PSLD):
        raise TypeError(f"sde must be a PSLD (or CLD), got {type(sde).__name__}")


def _mat(M, z):
    """Apply a 2 x 2 matrix to the leading axis of z."""
    return jnp.tensordot(M.astype(z.dtype), z, axes=1)


def _col(v, z):
    """A (2,) vector broadcast against z's leading axis."""
    return jnp.asarray(v, z.dtype).reshape((2,) + (1,) * (z.ndim - 1))


def _constants(sde: PSLD, dtype):
    inf = sde.stationary_covariance(dtype)
    F, Q = sde.drift_matrix(dtype), sde.diffusion_gram(dtype)
    return F, Q, inf, -(F + Q @ jnp.linalg.inv(inf))


def _residual_from_score(sde, z, score):
    """r = s + Sigma_inf^{-1} z, the score residual (zero for stationary data)."""
    return score + z / _col([1.0, sde.mass], z)


def _residual(score_fn, sde, z, t):
    return _residual_from_score(sde, z, score_fn(z, t))


def _info(n):
    return SplittingInfo(nfe=jnp.asarray(n, jnp.int32))


def _advance(state, z, score=None):
    return SplittingState(z=z, score=state.score if score is None else score, count=state.count + 1)


# ---------------------------------------------------------------------- simple schemes
def euler_maruyama(sde: PSLD) -> SplittingIntegrator:
    """Euler-Maruyama on the reverse SDE (1 NFE per step)."""
    _check_sde(sde)

    def step(rng_key, state, score_fn, t, s):
        z = state.z
        F, Q, _, _ = _constants(sde, z.dtype)
        h = t - s
        G = sde.diffusion_matrix(z.dtype)
        noise = _mat(G, jax.random.normal(rng_key, z.shape, z.dtype))
        z = z + h * (-_mat(F, z) + _mat(Q, score_fn(z, t))) + jnp.sqrt(h) * noise
        return _advance(state, z), _info(1)

    return SplittingIntegrator(_init, step, 1, "euler_maruyama", True)


def pf_euler(sde: PSLD) -> SplittingIntegrator:
    """Euler on the probability-flow ODE (1 NFE per step, deterministic)."""
    _check_sde(sde)

    def step(rng_key, state, score_fn, t, s):
        del rng_key
        z = state.z
        F, Q, _, _ = _constants(sde, z.dtype)
        z = z + (t - s) * (-_mat(F, z) + 0.5 * _mat(Q, score_fn(z, t)))
        return _advance(state, z), _info(1)

    return SplittingIntegrator(_init, step, 1, "pf_euler", False)


def sscs(sde: PSLD) -> SplittingIntegrator:
    """Symmetric splitting CLD sampler: exact OU half-step, residual score step, exact OU half-step (1 NFE)."""
    _check_sde(sde)

    def ou(key, z, h):
        _, _, inf, Ft = _constants(sde, z.dtype)
        # F~ = Sigma_inf F^T Sigma_inf^{-1} is similar to F^T: the same repeated eigenvalue, so
        # exp(F~ h) = e^{lambda h} (I + (F~ - lambda I) h) exactly (critical damping).
        N = Ft - sde.eigenvalue * jnp.eye(2, dtype=z.dtype)
        E = jnp.exp(sde.eigenvalue * h) * (jnp.eye(2, dtype=z.dtype) + N * h)
        cov = inf - E @ inf @ E.T
        L = jnp.linalg.cholesky(0.5 * (cov + cov.T) + 1e-30 * jnp.eye(2, dtype=z.dtype))
        return _mat(E, z) + _mat(L, jax.random.normal(key, z.shape, z.dtype))

    def step(rng_key, state, score_fn, t, s):
        k0, k1 = jax.random.split(rng_key)
        z = state.z
        _, Q, _, _ = _constants(sde, z.dtype)
        h = t - s
        z = ou(k0, z, h / 2)
        z = z + h * _mat(Q, _residual(score_fn, sde, z, t - h / 2))
        z = ou(k1, z, h / 2)
        return _advance(state, z), _info(1)

    return SplittingIntegrator(_init, step, 1, "sscs", True)


# ---------------------------------------------------------------------- deterministic splittings
def _pf_components(sde):
    b, g, nu, M = sde.beta / 2, sde.gamma, sde._nu, sde.mass

    def v_x(x, m, s_x):
        return b * (g * x - m / M) + b * g * s_x

    def v_m(x, m, s_m):
        return b * (x + nu * m) + b * M * nu * s_m

    return v_x, v_m


def _xm(z):
    return z[0], z[1]


def _symplectic_euler(sde: PSLD, fresh: bool) -> SplittingIntegrator:
    """x-then-m symplectic Euler on the PF-ODE; ``fresh``: a new score for the m-update (2 NFE per step),
    else the step's one score for both (1 NFE)."""
    _check_sde(sde)
    v_x, v_m = _pf_components(sde)
    nfe = 2 if fresh else 1

    def step(rng_key, state, score_fn, t, s):
        del rng_key
        x, m = _xm(state.z)
        h = t - s
        S = score_fn(state.z, t)
        x = x + h * v_x(x, m, S[0])
        S_m = score_fn(jnp.stack([x, m]), t)[1] if fresh else S[1]
        m = m + h * v_m(x, m, S_m)
        return _advance(state, jnp.stack([x, m])), _info(nfe)

    name = "naive_symplectic_euler" if fresh else "reduced_symplectic_euler"
    return SplittingIntegrator(_init, step, nfe, name, False)


def naive_symplectic_euler(sde: PSLD) -> SplittingIntegrator:
    """x-then-m symplectic Euler on the PF-ODE, a fresh score for each update (2 NFE per step)."""
    return _symplectic_euler(sde, fresh=True)


def reduced_symplectic_euler(sde: PSLD) -> SplittingIntegrator:
    """x-then-m symplectic Euler on the PF-ODE with one score per step (1 NFE)."""
    return _symplectic_euler(sde, fresh=False)


def naive_velocity_verlet(sde: PSLD) -> SplittingIntegrator:
    """m-x-m (Strang) composition of Euler sub-flows on the PF-ODE, a fresh score per sub-step (3 NFE)."""
    _check_sde(sde)
    v_x, v_m = _pf_components(sde)

    def step(rng_key, state, score_fn, t, s):
        del rng_key
        x, m = _xm(state.z)
        h = t - s
        m = m + 0.5 * h * v_m(x, m, score_fn(state.z, t)[1])
        x = x + h * v_x(x, m, score_fn(jnp.stack([x, m]), t - h / 2)[0])
        m = m + 0.5 * h * v_m(x, m, score_fn(jnp.stack([x, m]), s)[1])
        return _advance(state, jnp.stack([x, m])), _info(3)

    return SplittingIntegrator(_init, step, 3, "naive_velocity_verlet", False)


def reduced_velocity_verlet(sde: PSLD) -> SplittingIntegrator:
    """m-x-m composition with one score per step: the start score is carried from the previous
    step's evaluation at (x', m_half) (evaluated afresh on the first step only)."""
    _check_sde(sde)
    v_x, v_m = _pf_components(sde)

    def step(rng_key, state, score_fn, t, s):
        del rng_key
        z = state.z
        x, m = _xm(z)
        h = t - s
        first = state.count == 0
        S = jax.lax.cond(first, lambda: score_fn(z, t), lambda: state.score)
        m = m + 0.5 * h * v_m(x, m, S[1])
        x = x + h * v_x(x, m, S[0])
        S_new = score_fn(jnp.stack([x, m]), s)
        m = m + 0.5 * h * v_m(x, m, S_new[1])
        return _advance(state, jnp.stack([x, m]), S_new), _info(1 + first.astype(jnp.int32))

    return SplittingIntegrator(_init, step, 1, "reduced_velocity_verlet", False, first_step_extra_nfe=1)


def _harmonic(sde, z, h):
    """exp(L h) z for the PF-ODE's linear part L = -(F + (1/2) G G^T Sigma_inf^{-1}) = b [[0, -1/M], [1, 0]]:
    a rotation with frequency omega = b / sqrt(M), preserving N(0, Sigma_inf)."""
    b, M = sde.beta / 2, sde.mass
    c, sn = jnp.cos(b / jnp.sqrt(M) * h), jnp.sin(b / jnp.sqrt(M) * h)
    E = jnp.asarray([[c, -sn / jnp.sqrt(M)], [jnp.sqrt(M) * sn, c]], dtype=z.dtype)
    return _mat(E, z)


def _strang(sde, midpoint):
    _check_sde(sde)

    def step(rng_key, state, score_fn, t, s):
        del rng_key
        z = state.z
        Q = sde.diffusion_gram(z.dtype)
        h = t - s
        tm = t - h / 2
        N = lambda y: 0.5 * _mat(Q, _residual(score_fn, sde, y, tm))
        z = _harmonic(sde, z, h / 2)
        z = z + h * N(z + 0.5 * h * N(z)) if midpoint else z + h * N(z)
        z = _harmonic(sde, z, h / 2)
        return _advance(state, z), _info(2 if midpoint else 1)

    name = "strang_midpoint" if midpoint else "strang_euler"
    return SplittingIntegrator(_init, step, 2 if midpoint else 1, name, False)


def strang_euler(sde: PSLD) -> SplittingIntegrator:
    """PF-ODE: exact linear half-step, Euler residual step, exact linear half-step (1 NFE; the
    deterministic counterpart of SSCS, exact for stationary data)."""
    return _strang(sde, midpoint=False)


def strang_midpoint(sde: PSLD) -> SplittingIntegrator:
    """PF-ODE: exact linear half-step, explicit-midpoint residual step, exact linear half-step (2 NFE, second order)."""
    return _strang(sde, midpoint=True)


# ---------------------------------------------------------------------- stochastic splittings
def _position_noise(sde, position_noise):
    if position_noise is None:
        return sde.beta * sde.gamma
    try:
        eta2 = float(position_noise)
    except (TypeError, ValueError):
        raise TypeError(f"position_noise must be a number >= 0, got {position_noise!r}") from None
    if not eta2 >= 0:
        raise ValueError(f"position_noise must be >= 0 (the position diffusion rate eta^2), got {position_noise!r}")
    return eta2


def _o_step(sde, eta2, rng_key, z, h):
    """The O step over h: the exact scalar OUs x <- e^{-eta^2 h/2} x + sqrt(1 - e^{-eta^2 h}) xi_x,
    m <- e^{-b nu h} m + sqrt(M (1 - e^{-2 b nu h})) xi_m (stationary variances 1 and M)."""
    kx, km = jax.random.split(rng_key)
    x, m = _xm(z)
    dx, dm = jnp.exp(-eta2 * h / 2), jnp.exp(-sde.beta / 2 * sde.nu * h)
    x = dx * x + jnp.sqrt(1 - dx**2) * jax.random.normal(kx, x.shape, x.dtype)
    m = dm * m + jnp.sqrt(sde.mass * (1 - dm**2)) * jax.random.normal(km, m.shape, m.dtype)
    return jnp.stack([x, m])


def _oba(sde, position_noise, reduced):
    _check_sde(sde)
    eta2 = _position_noise(sde, position_noise)
    b, g, nu, M, beta = sde.beta / 2, sde.gamma, sde._nu, sde.mass, sde.beta

    def step(rng_key, state, score_fn, t, s):
        h = t - s
        x, m = _xm(_o_step(sde, eta2, rng_key, state.z, h))
        r = _residual(score_fn, sde, jnp.stack([x, m]), s)
        m = m + h * (b * x + beta * M * nu * r[1])
        if not reduced:
            r = _residual(score_fn, sde, jnp.stack([x, m]), s)
        x = x + h * (-b * m / M + 0.5 * (beta * g + eta2) * r[0])
        return _advance(state, jnp.stack([x, m])), _info(1 if reduced else 2)

    name = "reduced_oba" if reduced else "oba"
    return SplittingIntegrator(_init, step, 1 if reduced else 2, name, True)


def oba(sde: PSLD, position_noise: float | None = None) -> SplittingIntegrator:
    """O (exact OU), B (momentum kick), A (position drift), with a fresh residual for B and for A (2 NFE).

    ``position_noise`` is the position diffusion rate eta^2 >= 0 (``None``: beta Gamma, the exact reverse SDE)."""
    return _oba(sde, position_noise, reduced=False)


def reduced_oba(sde: PSLD, position_noise: float | None = None) -> SplittingIntegrator:
    """OBA with one residual evaluation (after O) shared by B and A (1 NFE); ``position_noise`` as in :func:`oba`."""
    return _oba(sde, position_noise, reduced=True)


# ---------------------------------------------------------------------- driver
def integrate(rng_key, integrator: SplittingIntegrator, score_fn, z_T, times):
    """Run ``integrator`` from ``z_T`` along the decreasing ``times`` in one ``lax.scan``.

    Returns ``(z_end, info)`` with ``info.nfe`` stacked over steps (``info.nfe.sum()`` is the total).
    """
    from pp_diffusion.model import DiffusionModel

    if isinstance(score_fn, DiffusionModel):
        raise TypeError(f"score_fn is a VP/VE DiffusionModel ({score_fn.name!r}); splitting integrator "
                        f"{integrator.name!r} needs the augmented score of a phase-space model, e.g. "
                        "AugmentedModel.score or AugmentedGaussianMixture.score")
    times = jnp.asarray(times)
    if times.ndim != 1 or times.shape[0] < 2:
        raise ValueError(f"times must be a 1-D grid of at least 2 times (steps >= 1), got shape {times.shape}")
    keys = jax.random.split(rng_key, times.shape[0] - 1)

    def body(state, inputs):
        key, t, s = inputs
        return integrator.step(key, state, score_fn, t, s)

    state, info = jax.lax.scan(body, integrator.init(z_T), (keys, times[:-1], times[1:]))
    return state.z, info


def time_grid(steps: int, t_max: float = 1.0, t_min: float = 1e-3, power: float = 1.0):
    """A decreasing grid of ``steps + 1`` times from ``t_max`` to ``t_min``,
    t_i = t_min + (t_max - t_min) (1 - i / steps)^power: uniform for ``power = 1``, steps that
    shrink toward t_min for ``power > 1`` (where the augmented marginals change fastest)."""
    try:
        steps_i = None if isinstance(steps, bool) else operator.index(steps)
    except TypeError:
        steps_i = None
    if steps_i is None or steps_i <= 0:
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    if not 0 <= t_min < t_max:
        raise ValueError(f"need 0 <= t_min < t_max, got t_min={t_min}, t_max={t_max}")
    if not float(power) > 0:
        raise ValueError(f"power must be > 0, got {power!r}")
    u = jnp.linspace(1.0, 0.0, steps_i + 1)
    return t_min + (t_max - t_min) * u ** float(power)
