"""Time grids optimised for one model: gradient descent on the grid of a deterministic integrator.

Used by ``benchmarks/integrators.py --optimised-grids`` (table (a)). The grid keeps the default
grid's endpoints (t = t_start, the noisiest time, and t = 0, clean data) and places the interior
times by a cumulative softmax of free logits: with w = softmax(theta), theta in R^steps,

    t_0 = t_start,  t_k = t_start * (1 - (w_1 + ... + w_k))  (k = 1 .. steps - 1),  t_steps = 0,

so every parameter vector gives a strictly decreasing grid, theta = 0 is the uniform-t grid (the
table's default), and the increments are positive and scale-free (theta are log-increments).
``optimise_grid`` minimises the mean squared error of ``integrate``'s endpoints to given reference
endpoints (the exact probability-flow ODE endpoints of a training draw of x_T) with optax's Adam,
differentiating through the whole ``lax.scan`` of the integrator (float32), and returns the grid
with the lowest training loss seen. The caller then holds that grid fixed and evaluates it on a
different draw.
"""

from __future__ import annotations

import time

import numpy as np


def grid_from_logits(theta, t_start: float = 1.0):
    """The strictly decreasing grid ``[t_start, ..., 0]`` (``len(theta) + 1`` times) of the logits ``theta``."""
    import jax
    import jax.numpy as jnp

    w = jax.nn.softmax(theta)
    interior = t_start * (1.0 - jnp.cumsum(w)[:-1])
    return jnp.concatenate([jnp.full((1,), t_start, interior.dtype), interior, jnp.zeros((1,), interior.dtype)])


def _finite_history(integrator):
    """``integrator`` with the unused history slots of its initial state set to distinct finite lambdas.

    The multistep integrators compute every candidate order on every step and select one with
    ``jnp.where``; on the first steps the unselected higher-order candidates divide by ratios of
    the all-zero initial lambda history (zero, or a singular order-condition matrix), which is
    harmless forwards but makes the reverse-mode gradient NaN (0 x inf through ``where``): UniPC-3
    at 10 and more steps. Slots that are never selected do not change the endpoints (checked in
    :func:`optimise_grid`), only keep those branches finite.
    """
    import jax.numpy as jnp

    def init(x):
        state = integrator.init(x)
        if not hasattr(state, "lambda_history") or state.lambda_history.shape[0] == 0:
            return state
        lam = state.lambda_history
        return state._replace(lambda_history=-100.0 * (1.0 + jnp.arange(lam.shape[0], dtype=lam.dtype)))

    return integrator._replace(init=init)


def optimise_grid(integrator, model, x_T, x_ref, steps: int, *, iterations: int = 150,
                  learning_rate: float = 0.05, t_start: float = 1.0, batch: int | None = 256,
                  eval_every: int = 25, seed: int = 0):
    """Adam on the grid logits to minimise mean((integrate(x_T; grid) - x_ref)^2) over a training draw.

    x_T, x_ref
        ``(n, d)`` training starts and their reference endpoints (float32 is used throughout).
    batch
        Minibatch size per iteration, drawn without replacement from the n training samples (None
        or >= n: the whole draw every iteration).
    eval_every
        The full training loss is computed every ``eval_every`` iterations (and at the start and
        end); the grid with the lowest of these is returned.
    Returns ``(times, info)``: the grid (a float32 NumPy array of ``steps + 1`` decreasing times)
    and a dict with the training MSE of the default (uniform-t) grid, the best MSE, the iteration
    it was reached at, the number of iterations whose gradient had non-finite entries (zeroed),
    whether the finite-history copy was used, and wall seconds (compilation included).
    """
    import jax
    import jax.numpy as jnp
    import optax

    from pp_diffusion.integrators import integrate

    x_T = jnp.asarray(x_T, jnp.float32)
    x_ref = jnp.asarray(x_ref, jnp.float32)
    n = x_T.shape[0]
    batch = n if batch is None else min(int(batch), n)
    key = jax.random.key(seed)  # unused by deterministic integrators, but integrate takes one

    # The gradient is taken through a copy of the integrator whose unused initial history is finite
    # (see _finite_history); it must give the same endpoints as the integrator itself.
    fit_integrator = _finite_history(integrator)
    run = lambda integ, times, xs: jax.vmap(lambda x: integrate(key, integ, model, x, times)[0])(xs)
    probe = grid_from_logits(jnp.zeros((steps,), jnp.float32), t_start)
    same = jnp.array_equal(run(integrator, probe, x_T[:64]), run(fit_integrator, probe, x_T[:64]))
    if not bool(same):
        fit_integrator = integrator

    def loss_fn(theta, xs, refs):
        x0 = run(fit_integrator, grid_from_logits(theta, t_start), xs)
        return jnp.mean((x0 - refs) ** 2)

    opt = optax.adam(optax.cosine_decay_schedule(learning_rate, iterations, alpha=0.1))

    @jax.jit
    def update(theta, opt_state, idx):
        grad = jax.grad(loss_fn)(theta, x_T[idx], x_ref[idx])
        bad = ~jnp.all(jnp.isfinite(grad))
        grad = jnp.where(jnp.isfinite(grad), grad, 0.0)
        updates, opt_state = opt.update(grad, opt_state, theta)
        return optax.apply_updates(theta, updates), opt_state, bad

    full_loss = jax.jit(lambda theta: loss_fn(theta, x_T, x_ref))

    t0 = time.perf_counter()
    theta = jnp.zeros((steps,), jnp.float32)  # the uniform-t grid
    opt_state = opt.init(theta)
    rng = np.random.default_rng(seed)
    loss0 = float(full_loss(theta))
    best_loss, best_theta, best_it, nonfinite = loss0, theta, 0, 0
    for it in range(1, iterations + 1):
        idx = jnp.asarray(rng.permutation(n)[:batch] if batch < n else np.arange(n))
        theta, opt_state, bad = update(theta, opt_state, idx)
        nonfinite += int(bad)
        if it % eval_every == 0 or it == iterations:
            loss = float(full_loss(theta))
            if loss < best_loss:
                best_loss, best_theta, best_it = loss, theta, it
    times = np.asarray(grid_from_logits(best_theta, t_start), np.float32)
    info = {"loss_default": loss0, "loss_best": best_loss, "best_iteration": best_it,
            "nonfinite_gradients": nonfinite, "finite_history": fit_integrator is not integrator,
            "seconds": time.perf_counter() - t0}
    return times, info
