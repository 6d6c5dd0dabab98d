"""Feynman–Kac SMC over the reverse diffusion chain, on ``blackjax.smc.base.step``.

Particles move backward along the prior's time grid t_N = 1 > ... > t_0 = 0. A method supplies
``init_particle(x_T)`` (an unevaluated particle) and ``move(rng_key, particle, t, s, index, final)``
(``index`` counts steps from 0, and is -1 for the evaluation of the initial particle at t = s = t_N;
``final`` is a Python bool, true for the last step into clean data): the move proposes x_s ~ q(. | x_t)
and returns the incremental log-weight

.. math::  \\log w = \\log h_s(x_s) + \\log p_\\theta(x_s \\mid x_t) - \\log h_t(x_t) - \\log q(x_s \\mid x_t),

with h_0 = G, so the product of the mean weights estimates Z = E_{p_theta}[G(x_0)] = p(y)
(unbiased, because the weights of steps that do not resample are carried forward). The
initial weights are h_N(x_N).

The last transition, x_t1 -> x_0, is deterministic in the DDIM-family chain (x_0 = xhat_0(x_t1)).
Under linear-Gaussian observations the weighted samplers replace it by the Gaussian
N(xhat_0(x_t1), r_t1^2 I), r_t1^2 = v sigma_t1^2 / (alpha_t1^2 v + sigma_t1^2) (Var[x_0 | x_t1] for
data of variance v; ``FeynmanKacModel.final_var``), and draw x_0 from its product with the
likelihood: otherwise an observation more precise than the chain's last noise level (sigma_y
below r_t1 times the singular values of A) leaves a single particle with weight and an evidence
estimate off by thousands of nats.

A sampler is an :class:`SMCKernel`: ``init`` / ``step`` / ``output`` over an :class:`SMCState`, whose
first three fields are BlackJAX's ``smc.base.SMCState`` (made by ``smc.base.init``); the ESS is
``blackjax.smc.ess``, resampling ``blackjax.smc.resampling``, the tempering exponent's root
``blackjax.smc.solver.dichotomy``. The loop around ``smc.base.step`` is this module's own, not
``blackjax.smc.tempered`` / ``adaptive_tempered``: those temper one static log-likelihood with MCMC
moves, while here the potential changes with the time step (a twist h_t on the reverse chain), the
move is the reverse kernel itself and adaptive resampling carries weights across steps that skip it.
BlackJAX's ``smc.tuning`` adapts MCMC kernels' parameters from the particles; no move here has any yet.

Each step is one ``blackjax.smc.base.step(update_fn, weight_fn, resample_fn)``. BlackJAX's step
always resamples; adaptive resampling (ESS below ``ess_threshold * N``, or every
``resample_every`` steps) is expressed through its own hooks: the resampling function is the
identity on steps that skip resampling, and the particles carry their log-weights
log(N w), which ``weight_fn`` adds to the increment (and ``update_fn`` resets after a
resampling). BlackJAX's ``normalizing_constant`` is then exactly the log-evidence increment
log sum_i w_i exp(incr_i).

Adaptive tempering (programs with ``tempered`` twists, :mod:`pp_diffusion.twists`): the twist is
log h_t = fixed_t + lambda_t lookahead_t with lookahead_t = log G_T(xhat_0(x_t)), lambda_N = 0, and
after each move the step picks lambda_s in [lambda_t, 1] (:func:`next_lambda`) so that the
conditional ESS (Zhou, Johansen & Aston 2016), CESS = N (sum_i W_i w_i)^2 / sum_i W_i w_i^2 with W
the current normalised weights and w incremental weights, stays at ``target_ess * N``, both for the
step's own increments and for the prospective increment to a draw of x_0 given x_s; BlackJAX's
``smc.solver.dichotomy`` solves for each. The step into clean data uses G itself (lambda = 1). The
exponents are in ``SMCInfo.lam``.

Numerical trouble is reported, not hidden: a NaN increment becomes -inf (BlackJAX's MALA
convention) and is counted in ``SMCInfo.num_nan``; if every weight is zero the run is marked
``degenerate`` and its draws are NaN. A run whose ESS falls below ``max(2, LOW_ESS_FRACTION * N)``
at any step (``min_ess``: after any reweighting, the initial one included) is marked ``low_ess``:
resampling restores the final ESS, but the draws descend from a few particles and the evidence
estimate is unreliable (``infer`` warns about both flags).
"""

from __future__ import annotations

from typing import Callable, NamedTuple

import blackjax.smc.base as smc_base
import blackjax.smc.ess as smc_ess
import blackjax.smc.solver as smc_solver
import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from pp_diffusion import _progress
from pp_diffusion.program import FeynmanKacModel, as_data, feynman_kac, inspect_program
from pp_diffusion.samplers import Sampler, SamplerOutput, _check_positive_int, draw_checks

__all__ = ["Particle", "SMCInfo", "SMCState", "SMCKernel", "run_smc", "gaussian_log_ratio", "fk_sampler",
           "LOW_ESS_FRACTION"]

LOW_ESS_FRACTION = 0.01


class Particle(NamedTuple):
    """One particle (vmapped to a batch in the sampler).

    x
        The current x_t.
    x0_hat
        Its Tweedie estimate E[x_0 | x_t] (cached: the next transition needs it).
    log_h
        The twist log h_t(x_t) (path-dependent for FK steering's max / sum potentials).
    grad_log_h
        grad_x log h_t(x_t) when the method's proposal uses it, else zeros.
    aux
        A running statistic of the path (FK steering's max / sum), or a method's own bookkeeping
        (MCGdiff: the part of log h_t the next weight divides out), else zero; between a tempered
        move and :func:`run_smc`'s choice of lambda, the previous step's path statistic.
    log_w
        The carried log-weight log(N w) of steps that did not resample.
    incr
        This step's incremental log-weight.
    x0_prev
        The previous step's x0 prediction (the ancestor's ``x0_hat``), which the second-order
        kernel of a ``DiffusionPrior(..., order=2)`` extrapolates from: :func:`run_smc` sets it
        (``carry_x0_prev``), so moves need not; None at order 1.
    lookahead
        Under adaptive tempering, log G_T(xhat_0(x_t)) of the tempered sites (the twist adds
        ``lam`` times it); zero otherwise.
    lam
        The tempering exponent lambda_t of the particle's twist (one value for all particles).
    lookahead_x0
        Under adaptive tempering, log G_T at one draw of x_0 ~ N(xhat_0(x_t), r_t^2 I): where the
        particle may still end, for the choice of lambda.
    origin
        The index of the initial particle this one descends from (resampling copies it), for
        ``num_lineages``.
    """

    x: jax.Array
    x0_hat: jax.Array
    log_h: jax.Array
    grad_log_h: jax.Array
    aux: jax.Array
    log_w: jax.Array
    incr: jax.Array
    x0_prev: jax.Array | None = None
    lookahead: jax.Array = jnp.zeros(())
    lam: jax.Array = jnp.ones(())
    lookahead_x0: jax.Array = jnp.zeros(())
    origin: jax.Array = jnp.zeros((), jnp.int32)


class SMCInfo(NamedTuple):
    """Per-step diagnostics: ESS after reweighting, whether the step resampled first, the
    log-evidence increment, the number of NaN increments mapped to -inf, and the tempering exponent
    lambda of the step's twist (1 without tempering). With MCMC moves (:func:`smc_step_fn`'s
    ``mcmc``): their mean acceptance rate at the step (NaN where none ran), the step size used and the
    gradient evaluations per particle they cost (0 where none ran); NaN, NaN and 0 without moves."""

    ess: jax.Array
    resampled: jax.Array
    log_evidence_increment: jax.Array
    num_nan: jax.Array
    lam: jax.Array
    acceptance_rate: jax.Array = jnp.full((), jnp.nan)
    step_size: jax.Array = jnp.full((), jnp.nan)
    move_evaluations: jax.Array = jnp.zeros(())


def tempered_value(lam, lookahead):
    """lam * lookahead, with 0 * (-inf) = 0: at lambda = 0 a hard constraint's look-ahead is not yet felt."""
    return jnp.where(lam > 0, lam * lookahead, 0.0)


def next_lambda(moved: Particle, lam_prev, tempered: Callable, target_ess: float):
    """The exponent lambda_s of a step's tempered twist (module docstring): the smaller of

    - the largest lambda in [lambda_t, 1] whose incremental weights keep the conditional ESS at
      ``target_ess`` (adaptive-tempered SMC's rule), and
    - the largest whose *prospective* increment, lambda log G(x~_0) - lambda_t log G(xhat_0(x_s)) with
      x~_0 ~ N(xhat_0(x_s), r_s^2 I) (``lookahead_x0``), keeps it there: a twist the particles could
      carry to where they will end.

    The first alone lets lambda reach 1 at once, as the look-ahead is flat at high noise (every xhat_0
    near the data mean), and the particles collapse later, when xhat_0 commits; the second holds it
    back while x_0 is uncertain (for a Gaussian likelihood of variance s^2 it tracks the exact
    s^2 / (s^2 + r_t^2)) and lets it rise as r_t falls.
    """
    prospective = choose_lambda(
        moved.log_w, lambda lam: tempered_value(lam, moved.lookahead_x0) - tempered_value(lam_prev, moved.lookahead),
        lam_prev, target_ess)
    incremental = choose_lambda(moved.log_w, lambda lam: tempered(moved, lam).incr, lam_prev, target_ess)
    return jnp.minimum(prospective, incremental)


def choose_lambda(log_w, incr_at: Callable, lam_min, target_ess: float):
    """The largest lambda in [lam_min, 1] whose increments ``incr_at(lambda)`` keep the conditional ESS
    N (sum W_i w_i)^2 / sum W_i w_i^2 >= target_ess * N (W = softmax(log_w)); lam_min when none does.

    Bisection by ``blackjax.smc.solver.dichotomy`` on log CESS - log(target_ess N), decreasing in lambda
    for the look-ahead increments it is used with."""
    log_W = log_w - logsumexp(log_w)

    def excess(lam):
        incr = incr_at(lam)
        incr = jnp.where(jnp.isnan(incr), -jnp.inf, incr)
        log_cess = 2 * logsumexp(log_W + incr) - logsumexp(log_W + 2 * incr)
        return jnp.where(jnp.isnan(log_cess), -jnp.inf, log_cess - jnp.log(target_ess))

    lam = smc_solver.dichotomy(excess, lam_min, jnp.ones_like(lam_min), eps=1e-3, max_iter=30)
    return jnp.where(jnp.isnan(lam), lam_min, lam)


def gaussian_log_ratio(noise, shift, std):
    """log N(x; m_p, std^2 I) - log N(x; m_q, std^2 I) for x = m_q + std * noise and shift = m_q - m_p,

    .. math::  -\\frac{noise \\cdot shift}{std} - \\frac{\\lVert shift \\rVert^2}{2\\, std^2},

    computed from the noise and the shift, never from x: the difference of two squared distances
    of order |x|^2 / std^2 loses its digits in float32 when |x| is large and std small. Zero when
    std = 0 (no proposal noise: then q = p).
    """
    safe = jnp.where(std > 0, std, 1.0)
    d = -jnp.sum(noise * shift) / safe - jnp.sum(shift**2) / (2 * safe**2)
    return jnp.where(std > 0, d, 0.0)


def _identity_resampling(rng_key, weights, num_samples):
    del rng_key, weights
    return jnp.arange(num_samples)


class SMCState(NamedTuple):
    """The state of an SMC run over the reverse chain: BlackJAX's ``smc.base.SMCState`` (its first
    three fields, same names and meaning) and the run's own records.

    particles
        The :class:`Particle` batch (leading axis: particle); ``particles.x`` is x_t.
    weights
        Normalised weights, shape ``(N,)``.
    update_parameters
        BlackJAX's update parameters: ``{"resample": whether the last step resampled}``.
    log_evidence
        The running estimate of log Z (the sum of BlackJAX's log-likelihood increments).
    min_ess
        The smallest ESS after any reweighting so far (the initial one included).
    index
        The index of the next step: -1 for the unevaluated state of :meth:`SMCKernel.skeleton`, 0
        after :meth:`SMCKernel.init`, ``num_steps`` when the particles are clean data.
    ancestors
        ``ancestors[i]``: the particle of the previous step that particle i was moved from (BlackJAX's
        ``SMCInfo.ancestors``; the identity on steps that did not resample).
    """

    particles: Particle
    weights: jax.Array
    update_parameters: dict
    log_evidence: jax.Array
    min_ess: jax.Array
    index: jax.Array
    ancestors: jax.Array


class SMCKernel(NamedTuple):
    """An SMC sampler on one program, as BlackJAX's algorithms are: pure functions over a state.

    ``init(rng_key) -> SMCState`` draws x_N ~ N(0, I) for every particle and weighs it by h_N;
    ``step(rng_key, state) -> (SMCState, SMCInfo)`` moves every particle one step down the time grid
    (resampling first when the ESS asks for it) and reweights; after ``num_steps`` steps the particles
    are clean data x_0 and ``output(rng_key, state, infos)`` gives the run's equally weighted draws and
    diagnostics (a :class:`~pp_diffusion.samplers.SamplerOutput`; ``infos``: the steps' ``SMCInfo``,
    stacked or as a list). ``skeleton(rng_key)`` is the state before init's evaluation (index -1):
    ``init(k) == step(init_key(k), skeleton(k))[0]``.

    ``infer`` runs exactly this: for chain c, ``k_init, k_run, k_out = jax.random.split(
    jax.random.split(rng_key, num_chains)[c], 3)``, then ``init(k_init)``, ``step`` with the keys
    ``jax.random.split(k_run, num_steps)`` in a ``lax.scan``, and ``output(k_out, ...)``. Between steps a
    user may stop, inspect or change the state: a move that changes ``particles.x`` must leave the
    current target p_t(x) h_t(x) invariant and refresh the particle's cached ``x0_hat`` and ``log_h``.
    """

    init: Callable
    step: Callable
    output: Callable
    num_steps: int
    skeleton: Callable


def init_key(rng_key):
    """The key of :meth:`SMCKernel.init`'s evaluation step (its proposal draws are unused)."""
    return jax.random.fold_in(rng_key, 1)


def smc_step_fn(*, times: jax.Array, move: Callable, resampling: Callable, ess_threshold: float,
                resample_every: int | None = None, weighted: bool = True, carry_x0_prev: bool = False,
                temper: Callable | None = None, target_ess: float = 0.5, mcmc: Callable | None = None,
                mcmc_every_step: bool = False) -> Callable:
    """``step(rng_key, state) -> (state, SMCInfo)``: one step of SMC along ``times`` (see
    :class:`SMCKernel`), the step with ``state.index == -1`` being the evaluation of the initial
    particles (x_s = x_T, t = s = t_N, no proposal), which gives the initial weights h_N(x_N).

    ``resample_every`` (when given) resamples on a fixed interval of steps, as FK steering does;
    otherwise the step resamples when the ESS is below ``ess_threshold * N``. ``weighted=False`` keeps
    uniform weights (for methods whose particles are never weighted). ``carry_x0_prev`` gives every
    moved particle its ancestor's ``x0_hat`` as ``x0_prev`` (the initial particles their own). The last
    step, into clean data, is a ``lax.cond`` branch calling ``move(..., final=True)``: one ``lax.scan``
    body holds the network and one BlackJAX step, whatever the method, so it is compiled once, in a time
    flat in the number of steps.

    ``temper(particle, lam) -> particle`` (adaptive tempering, see the module docstring) completes a
    particle that a non-final ``move`` left with its twist's parts apart: its ``log_h``, ``aux`` and
    ``incr`` at exponent ``lam``. The exponent of each step is chosen here, with the conditional ESS
    kept at ``target_ess`` (0 at the initial evaluation).

    ``mcmc(keys, particles, t, log_step) -> (particles, acceptance_rate, step_size, evaluations,
    new_log_step)`` (MCMC moves, :mod:`pp_diffusion.mcmc`) moves the particles at time t, leaving their
    current target invariant, after resampling (every step with ``mcmc_every_step``) and before the
    proposal to s. Its log step size is carried in ``update_parameters["log_step"]`` (set by
    :func:`skeleton_state`'s ``update_parameters``), so that it adapts across steps.
    """
    num_steps = times.shape[0] - 1
    tempered = jax.vmap(temper, in_axes=(0, None)) if temper is not None else None

    def step(rng_key, state: SMCState):
        index = state.index
        num = state.weights.shape[0]
        first, final = index < 0, index == num_steps - 1
        t = times[jnp.maximum(index, 0)]
        s = times[index + 1]
        ess_before = smc_ess.ess(jnp.log(state.weights))
        if resample_every is None:
            do_resample = ess_before < ess_threshold * num
        else:
            do_resample = (index % resample_every == 0) & (index > 0)
        do_resample = do_resample & ~first
        log_w = jnp.where(first, 0.0, jnp.log(num * state.weights))
        blackjax_state = smc_base.SMCState(
            state.particles._replace(log_w=log_w), state.weights, {**state.update_parameters, "resample": do_resample}
        )

        def resample_fn(key, weights, n):
            return jax.lax.cond(
                do_resample,
                lambda k, w: resampling(k, w, n),
                lambda k, w: _identity_resampling(k, w, n),
                key, weights,
            )

        def moved_by(keys, particles, last: bool):
            moved = jax.vmap(lambda k, p: move(k, p, t, s, index, last))(keys, particles)
            if tempered is not None and not last:
                lam = jnp.where(first, 0.0, next_lambda(moved, particles.lam[0], tempered, target_ess))
                moved = tempered(moved, lam)
            return moved

        def no_moves(keys, particles, log_step):
            return particles, jnp.full((), jnp.nan), jnp.full((), jnp.nan), jnp.zeros(()), log_step

        def update_fn(keys, particles, params):
            particles = particles._replace(
                log_w=jnp.where(params["resample"], 0.0, particles.log_w)
            )
            _, *move_info = no_moves(keys, particles, params.get("log_step", jnp.zeros(())))
            if mcmc is not None:  # the moves' own keys: the proposal's are those of a run without moves
                mcmc_keys = jax.vmap(lambda k: jax.random.fold_in(k, 2))(keys)
                apply = ~first & (params["resample"] | mcmc_every_step)
                run_mcmc = lambda k, p, ls: mcmc(k, p, t, ls)
                particles, *move_info = jax.lax.cond(apply, run_mcmc, no_moves, mcmc_keys, particles,
                                                     params["log_step"])
            moved = jax.lax.cond(final, lambda: moved_by(keys, particles, True),
                                 lambda: moved_by(keys, particles, False))
            moved = moved._replace(origin=particles.origin)
            if carry_x0_prev:
                moved = moved._replace(x0_prev=jnp.where(first, moved.x0_hat, particles.x0_hat))
            if not weighted:
                moved = moved._replace(incr=jnp.zeros_like(moved.incr))
            return moved, tuple(move_info)

        def weight_fn(particles):
            # a particle of weight zero stays there: its next increment may be +inf (a twist back from
            # -inf, e.g. a hard constraint), and -inf + inf is NaN, which would spoil every weight
            incr = jnp.where(jnp.isnan(particles.incr), -jnp.inf, particles.incr)
            log_w = particles.log_w + incr
            return jnp.where(jnp.isnan(log_w), -jnp.inf, log_w)

        new, info = smc_base.step(rng_key, blackjax_state, update_fn, weight_fn, resample_fn)
        num_nan = jnp.sum(jnp.isnan(new.particles.incr))
        ess = smc_ess.ess(jnp.log(new.weights))
        lam = jnp.where(final, 1.0, new.particles.lam[0]) if tempered is not None else jnp.ones(())
        acceptance, step_size, evaluations, log_step = info.update_info
        step_info = SMCInfo(ess, do_resample, info.log_likelihood_increment, num_nan, jnp.asarray(lam, jnp.float32),
                            acceptance, step_size, evaluations)
        _progress.tick(jnp.maximum(index, 0))
        params = dict(new.update_parameters)
        if "log_step" in params:
            params["log_step"] = log_step
        new_state = SMCState(
            new.particles, new.weights, params,
            state.log_evidence + info.log_likelihood_increment,
            jnp.minimum(state.min_ess, ess) if weighted else jnp.asarray(num, jnp.float32),
            index + 1, info.ancestors,
        )
        return new_state, step_info

    return step


def skeleton_state(x_T: jax.Array, init_particle: Callable, *, tempered: bool = False,
                   carry_x0_prev: bool = False, update_parameters: dict | None = None) -> SMCState:
    """The unevaluated initial state (index -1) of the ``(N, *event)`` particles ``x_T``:
    ``init_particle(x_T)`` (no network call: ``log_h`` 0) on every particle, uniform weights by
    ``blackjax.smc.base.init``; ``update_parameters`` adds to BlackJAX's (e.g. MCMC moves' ``log_step``)."""
    num = x_T.shape[0]
    particles = jax.vmap(init_particle)(x_T)._replace(origin=jnp.arange(num, dtype=jnp.int32))
    if tempered:
        particles = particles._replace(lam=jnp.zeros(num))
    if carry_x0_prev:  # a placeholder until the first step evaluates x0_hat
        particles = particles._replace(x0_prev=jnp.zeros_like(particles.x))
    base = smc_base.init(particles, {"resample": jnp.asarray(False), **(update_parameters or {})})
    return SMCState(base.particles, base.weights, base.update_parameters, jnp.zeros(()),
                    jnp.asarray(num, jnp.float32), jnp.asarray(-1, jnp.int32), jnp.arange(num, dtype=jnp.int32))


def run_smc(rng_key, state: SMCState, step: Callable, num_steps: int):
    """``(final state, stacked SMCInfo of the steps)``: ``state`` (the skeleton) evaluated and moved
    ``num_steps`` steps by ``step`` in one ``lax.scan`` (:class:`SMCKernel`'s key convention: the
    evaluation uses :func:`init_key` of ``rng_key[0]``, the steps ``rng_key[1]``'s split)."""
    k_init, k_run = rng_key
    keys = jnp.concatenate([init_key(k_init)[None], jax.random.split(k_run, num_steps)])
    state, infos = jax.lax.scan(lambda state, key: step(key, state), state, keys)
    return state, jax.tree.map(lambda a: a[1:], infos)


def _stacked(infos) -> SMCInfo:
    if isinstance(infos, (list, tuple)) and not isinstance(infos, SMCInfo):
        return jax.tree.map(lambda *a: jnp.stack(a), *infos)
    return infos


def smc_output(rng_key, state: SMCState, infos, *, resampling, nfe: int, vjp: int, weighted: bool = True,
               tempered: bool = False, site_log_probs: Callable | None = None, log_z_offset=0.0,
               moves: bool = False, move_cost: int = 1):
    """Equally weighted draws (a final resampling of the weighted particles) and the diagnostics
    of one run, as ``(draws, sample_stats, run_stats, particles)``.

    The draws stay in the resampling's order (copies of one particle adjacent, as BlackJAX's schemes
    return them), so ArviZ's autocorrelation-based ESS of a chain sees the copies instead of
    counting them as independent draws; ``sample_stats["particle"]`` is the final particle each draw
    copies, ``num_distinct`` the number of distinct particles among them, ``num_lineages`` the number
    of initial particles they descend from (resampling along the run makes later particles share
    ancestors: path degeneracy) and ``final_ess`` the Kish ESS of the weights they were drawn with.
    With MCMC moves (``moves``) the run records their acceptance rate and step size per step, and the
    draws' ``nfe`` and ``vjp`` add the moves' gradient evaluations per particle (each costing
    ``move_cost`` evaluations and VJPs: one per energy model of a composition).
    ``site_log_probs`` (x_0 -> one log-probability per observed site) gives ``site_nonfinite``, the
    number of final particles at which each site is NaN or infinite. ``particles`` is the final
    weighted particle system: ``x``, ``log_weight`` (normalised) and ``origin``.
    """
    infos = _stacked(infos)
    num = state.weights.shape[0]
    log_z = state.log_evidence + log_z_offset
    log_weights = jnp.log(state.weights)
    degenerate = ~jnp.all(jnp.isfinite(state.weights)) | ~jnp.isfinite(log_z)
    safe_weights = jnp.where(degenerate, jnp.full_like(state.weights, 1.0 / num), state.weights)
    k_resample, _ = jax.random.split(rng_key)
    idx = resampling(k_resample, safe_weights, num)
    draws = state.particles.x[idx]
    # unweighted methods (DPS) can diverge without any weight noticing: flag non-finite draws too
    degenerate = degenerate | ~jnp.all(jnp.isfinite(draws))
    draws = jnp.where(degenerate, jnp.nan, draws)
    extra = jnp.round(jnp.sum(infos.move_evaluations) * move_cost).astype(jnp.int32) if moves else 0
    sample_stats = {
        "nfe": jnp.full((num,), nfe, jnp.int32) + extra,
        "vjp": jnp.full((num,), vjp, jnp.int32) + extra,
        "particle": idx.astype(jnp.int32),
    }
    min_ess = state.min_ess
    run_stats = {
        "log_marginal_likelihood": jnp.where(degenerate, -jnp.inf, log_z) if weighted else jnp.full((), jnp.nan),
        "ess": infos.ess,
        "resampled": infos.resampled,
        "num_nan": infos.num_nan,
        "degenerate": degenerate,
        "final_ess": infos.ess[-1],
        "min_ess": min_ess,
        "num_distinct": jnp.sum(jnp.bincount(idx, length=num) > 0),
        "num_lineages": jnp.sum(jnp.bincount(state.particles.origin[idx], length=num) > 0),
        "low_ess": ~degenerate & (min_ess < max(2.0, LOW_ESS_FRACTION * num)),
    }
    if tempered:
        run_stats["lam"] = infos.lam
    if moves:
        run_stats["acceptance_rate"] = infos.acceptance_rate
        run_stats["step_size"] = infos.step_size
    if site_log_probs is not None:
        per_site = jax.vmap(site_log_probs)(state.particles.x)
        if per_site.shape[1]:
            run_stats["site_nonfinite"] = jnp.sum(~jnp.isfinite(per_site), axis=0)
    particles = {"x": state.particles.x, "log_weight": log_weights, "origin": state.particles.origin}
    return draws, sample_stats, run_stats, particles


STAT_DIMS = {
    "ess": ("step",),
    "resampled": ("step",),
    "num_nan": ("step",),
    "lam": ("step",),
    "acceptance_rate": ("step",),
    "step_size": ("step",),
    "site_nonfinite": ("site",),
}


def fk_sampler(name: str, moves: Callable, *, num_particles: int, nfe_per_step: int, vjp_per_step: int,
               resampling: Callable, ess_threshold: float, resample_every: int | None = None,
               data_var: float | None = None, weighted: bool = True,
               extra_settings: dict | None = None, twist_names: Callable = dict,
               setup: Callable | None = None, log_z_offset: Callable | None = None,
               mcmc: Callable | None = None, mcmc_every_step: bool = False, augmented: bool = False) -> Sampler:
    """A :class:`~pp_diffusion.Sampler` whose :class:`SMCKernel` moves particles with ``moves(context)
    -> (init_particle, move[, temper])``.

    ``context`` is what ``setup(program, info, data)`` returns: by default the program's
    :class:`~pp_diffusion.program.FeynmanKacModel`; a method with its own setup returns a tuple whose
    first item is that model (``log_z_offset(context)``, when given, is added to the log-evidence).
    ``nfe_per_step`` / ``vjp_per_step`` count network evaluations and VJPs per particle for each
    step after the first evaluation at t_N (which costs one of each kind the method uses); the
    step into clean data reuses the cached x0 prediction and costs none. ``weighted=False`` is
    for methods whose particles carry no weights (DPS, SVDD): uniform weights, NaN log-evidence.
    ``twist_names`` maps the program's ``{site: twist kind}`` to what the method uses (the DataTree's
    ``twists`` attribute). ``vjp_per_step`` may be a function of the context. ``mcmc(context) -> (mcmc,
    initial log step, cost per evaluation)`` adds MCMC moves (:func:`smc_step_fn`'s ``mcmc``).
    ``augmented`` accepts phase-space priors (the default setup's ``feynman_kac(augmented=True)``):
    ``moves`` then moves z = [x; m], the draws are x = z[0] and the cost is
    :func:`~pp_diffusion.smc._augmented.augmented_cost`'s.
    """
    num_particles = _check_positive_int(num_particles, "num_particles")
    if not callable(resampling):
        raise TypeError(
            "resampling must be a function (rng_key, weights, num_samples) -> indices, e.g. "
            f"pp_diffusion.smc.resampling.systematic; got {resampling!r}"
        )
    if not 0.0 <= float(ess_threshold) <= 1.0:
        raise ValueError(f"ess_threshold must lie in [0, 1], got {ess_threshold}")
    if resample_every is not None:
        resample_every = _check_positive_int(resample_every, "resample_every")
    if data_var is not None and not float(data_var) > 0:
        raise ValueError(f"data_var must be positive, got {data_var!r}")
    settings = dict(num_particles=num_particles, resampling=getattr(resampling, "__name__", repr(resampling)),
                    ess_threshold=ess_threshold, resample_every=str(resample_every), **(extra_settings or {}))

    def default_setup(program, info, data):
        return feynman_kac(program, info, data, data_var=data_var, augmented=augmented)

    def kernel(context) -> SMCKernel:
        fk = context if isinstance(context, FeynmanKacModel) else context[0]
        init_particle, move, *rest = moves(context)
        temper = rest[0] if rest else None
        carry = fk.prior.order == 2
        mcmc_fn, log_step0, move_cost = mcmc(context) if mcmc is not None else (None, None, 1)
        step = smc_step_fn(times=fk.prior.times, move=move, resampling=resampling, ess_threshold=ess_threshold,
                           resample_every=resample_every, weighted=weighted, carry_x0_prev=carry, temper=temper,
                           target_ess=fk.target_ess or 0.5, mcmc=mcmc_fn, mcmc_every_step=mcmc_every_step)
        steps = fk.prior.steps
        per_call = fk.prior.model.nfe_per_call  # e.g. 2 under classifier-free guidance
        nfe = (1 + nfe_per_step * (steps - 1)) * per_call
        vjps = vjp_per_step(context) if callable(vjp_per_step) else vjp_per_step
        vjp = 0 if vjps == 0 else (1 + vjps * (steps - 1)) * per_call
        if getattr(fk.prior, "augmented", False):
            from pp_diffusion.smc._augmented import augmented_cost

            nfe, vjp = augmented_cost(fk, weighted=weighted)
        extra_params = None if mcmc_fn is None else {"log_step": jnp.asarray(log_step0, jnp.float32)}
        offset = 0.0 if log_z_offset is None else log_z_offset(context)

        def skeleton(rng_key):
            x_T = fk.prior.initial_noise(rng_key, num_particles)
            return skeleton_state(x_T, init_particle, tempered=temper is not None, carry_x0_prev=carry,
                                  update_parameters=extra_params)

        def init(rng_key):
            return step(init_key(rng_key), skeleton(rng_key))[0]

        def output(rng_key, state, infos) -> SamplerOutput:
            if getattr(fk.prior, "augmented", False):  # x = z[0]: the momenta are marginalised
                state = state._replace(particles=state.particles._replace(x=state.particles.x[:, 0]))
            draws, sample_stats, run_stats, particles = smc_output(
                rng_key, state, infos, resampling=resampling, nfe=nfe, vjp=vjp, weighted=weighted,
                tempered=temper is not None, site_log_probs=fk.site_log_probs, log_z_offset=offset,
                moves=mcmc_fn is not None, move_cost=move_cost)
            run_stats.update(draw_checks(fk.prior.model, state.particles.x))
            k_sites = jax.random.fold_in(rng_key, 1)
            posterior = {fk.site: draws,
                         **jax.vmap(fk.deterministic)(jax.random.split(k_sites, num_particles), draws)}
            return SamplerOutput(posterior, sample_stats, run_stats, particles)

        return SMCKernel(init, step, output, steps, skeleton)

    def run(rng_key, context) -> SamplerOutput:
        k_init, k_run, k_out = jax.random.split(rng_key, 3)
        kern = kernel(context)
        state, infos = run_smc((k_init, k_run), kern.skeleton(k_init), kern.step, kern.num_steps)
        return kern.output(k_out, state, infos)

    return Sampler(name, settings, setup or default_setup, run, STAT_DIMS, twists=twist_names, kernel=kernel)


def kernel(sampler: Sampler, program: Callable, **data) -> SMCKernel:
    """The :class:`SMCKernel` of an SMC sampler (any of ``pp_diffusion.smc``, and DPS) on
    ``program(**data)``: its ``init`` / ``step`` / ``output``, to run by hand.

    >>> kern = ppd.smc.kernel(ppd.smc.twisted(1000), program, y=y)
    >>> k_init, k_run, k_out = jax.random.split(key, 3)
    >>> state = kern.init(k_init)
    >>> for k in jax.random.split(k_run, kern.num_steps):
    ...     state, info = kern.step(k, state)   # a move, a stopping rule, a plot may go here
    >>> out = kern.output(k_out, state, infos)   # infos: the steps' SMCInfo, as a list

    Wrap ``init`` and ``step`` in ``jax.jit`` for speed. With ``num_chains=1`` and the key
    ``jax.random.split(rng_key, 1)[0]`` this is the run :func:`pp_diffusion.infer` makes.
    """
    if not isinstance(sampler, Sampler):
        raise TypeError(f"sampler must be a pp_diffusion Sampler such as pp_diffusion.smc.twisted(1000), got "
                        f"{type(sampler).__name__}")
    if sampler.kernel is None:
        raise TypeError(f"sampler {sampler.name!r} is not an SMC sampler (it has no init/step kernel); use "
                        "pp_diffusion.smc.bootstrap, twisted, fk_steering, mcgdiff, svdd or guidance.dps")
    data = as_data(data)
    info = inspect_program(program, data)
    return sampler.kernel(sampler.setup(program, info, data))
