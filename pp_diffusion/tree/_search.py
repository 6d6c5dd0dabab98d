"""Diffusion Tree Sampling and Search (Jain et al., 2025, arXiv 2506.20701) on fixed-shape arrays.

The target is the program's posterior p_theta(x_0) G(x_0), G the product of its observed sites and
factors (a reward tilt exp(lambda r) is ``numpyro.factor("r", lam * r(x))``), p_theta the prior's
stochastic reverse chain. The tree (:mod:`pp_diffusion.tree._tree`) branches at a few steps of the
chain. A **rollout** descends from the root; at each node n it first applies progressive widening
(expand a new child while ``|C(n)| < C N(n)^alpha``, N(n) counting this visit), else selects an existing
child:

- DTS: with probability proportional to exp(v(child)) (the children are prior draws, so the prior
  needs no extra factor);
- DTS*: the maximiser of v(child) + c_uct sqrt(log N(n) / N(child)).

An expansion runs the prior chain from n to x_0 (through the root's x_T ~ N(0, sigma_T^2 I) when n is
the root), adds the new path's nodes (one per level below n), sets the leaf's value to log G(x_0) and
the inner values by the soft backup. A rollout that reaches a leaf without expanding only counts
its visits.

**Batches.** ``batch_size`` rollouts are selected one after another from the same tree (each sees
the visit counts and reserved children of those before it, the values of the previous batch: the
delayed update of parallel MCTS), then their chains run together on a batch axis (one network call
per step for the batch) and their values are backed up at once. ``batch_size=1`` is the sequential
algorithm of the paper. The batch's chains all run every step of the chain, those that start lower
masked until their start, so the compute per batch is ``batch_size`` chains while the NFE counts the
steps actually taken (what the paper counts).

**Honest values** (the default of :func:`dts`): the search selects by one value and estimates with
another, computed from disjoint halves of the tree (:mod:`pp_diffusion.tree._tree`), which removes the
bias the paper's rule has at finite budgets.

**Draws** need no network call: DTS descends the finished tree with its selection rule, i.e. draws
leaves with the product of the normalised exp(v) along their path
(:func:`~pp_diffusion.tree._tree.leaf_log_probs`); DTS* is a search and returns its ``num_draws``
best leaves (highest log G), best first. The root's value is the log-evidence estimate.

The search is one ``jax.jit``: a ``lax.while_loop`` over batches whose count is an argument, so the
compilation does not depend on the number of rollouts. A batch costs O(batch x K x nodes) for the
selection and O(K x nodes) for the backup on top of its chains: linear in the tree's size.
"""

from __future__ import annotations

import hashlib
import json
import numbers
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from pp_diffusion.program import as_data, feynman_kac, inspect_program
from pp_diffusion.samplers import Sampler, SamplerOutput, _check_positive_int, draw_checks
from pp_diffusion.tree._tree import Tree, backup, empty_tree, leaf_log_probs, resize, tree_nbytes

__all__ = ["dts", "dts_star", "kernel", "TreeKernel", "TreeSettings"]

STAT_DIMS: dict = {}


class TreeSettings(NamedTuple):
    """The settings of a tree search (checked by :func:`dts` / :func:`dts_star`)."""

    kind: str  # "dts" or "dts_star"
    num_rollouts: int
    batch_size: int
    num_draws: int
    widening: float
    alpha: float
    branch_steps: tuple[int, ...] | None
    num_branchings: int
    c_uct: float
    selection_scale: float
    honest: bool
    capacity: int  # rollouts the arrays hold
    max_memory_gb: float


class TreeKernel(NamedTuple):
    """A tree search on one program, to run by hand (``pp_diffusion.tree.kernel``).

    init
        ``init(rng_key) -> Tree``: the root alone, with the search's key.
    grow
        ``grow(tree, num_rollouts) -> Tree``: that many more rollouts (a multiple of the batch size);
        a tree too small for them gets more slots first.
    draw
        ``draw(rng_key, tree, num_draws) -> (posterior, sample_stats)`` without network calls.
    output
        ``output(rng_key, tree) -> SamplerOutput`` (what :func:`pp_diffusion.infer` converts).
    depth
        K, the number of branching levels (leaves are at level K).
    branch_steps
        The step indices b_0 = 0 < ... < b_{K-1} at which nodes branch.
    signature
        The search's signature (``Tree.signature`` of its trees).
    """

    init: Callable
    grow: Callable
    draw: Callable
    output: Callable
    depth: int
    branch_steps: tuple[int, ...]
    signature: np.ndarray


def _choose(rng_key, mask, logits):
    """An index where ``mask`` holds, with probability proportional to exp(logits) (uniform when every
    logit there is -inf): one uniform and an inverse CDF over the node arrays, not a Gumbel per slot."""
    logits = jnp.where(mask, logits, -jnp.inf)
    logits = jnp.where(jnp.any(jnp.isfinite(logits)), logits, jnp.where(mask, 0.0, -jnp.inf))
    cdf = jnp.cumsum(jnp.exp(logits - jnp.max(logits)))
    u = jax.random.uniform(rng_key) * cdf[-1]
    return jnp.minimum(jnp.searchsorted(cdf, u, side="right"), mask.shape[0] - 1).astype(jnp.int32)


def _check_settings(kind, num_rollouts, batch_size, num_draws, widening, alpha, branch_steps, num_branchings,
                    c_uct, capacity, max_memory_gb, selection_scale=1.0, honest=False) -> TreeSettings:
    num_rollouts = _check_positive_int(num_rollouts, "num_rollouts")
    batch_size = _check_positive_int(batch_size, "batch_size")
    if num_rollouts % batch_size:
        raise ValueError(f"num_rollouts ({num_rollouts}) must be a multiple of batch_size ({batch_size})")
    default_draws = 1 if kind == "dts_star" else num_rollouts
    num_draws = default_draws if num_draws is None else _check_positive_int(num_draws, "num_draws")
    if kind == "dts_star" and num_draws > num_rollouts:
        raise ValueError(f"num_draws ({num_draws}) must not exceed num_rollouts ({num_rollouts}): DTS* returns its "
                         "best leaves, one per rollout at most")
    if isinstance(widening, bool) or not isinstance(widening, numbers.Real) or not float(widening) > 0:
        raise ValueError(f"widening (the C of |children| < C N^alpha) must be positive, got {widening!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0 < float(alpha) <= 1:
        raise ValueError(f"alpha (the exponent of progressive widening) must lie in (0, 1], got {alpha!r}")
    if branch_steps is not None:
        steps = np.asarray(branch_steps)
        if steps.ndim != 1 or len(steps) == 0 or not np.issubdtype(steps.dtype, np.integer):
            raise ValueError(f"branch_steps must be a sequence of step indices, got {branch_steps!r}")
        if steps[0] != 0 or np.any(np.diff(steps) <= 0):
            raise ValueError(f"branch_steps must start at 0 (the root) and increase strictly, got {list(steps)}")
        branch_steps = tuple(int(s) for s in steps)
        num_branchings = len(branch_steps)
    num_branchings = _check_positive_int(num_branchings, "num_branchings")
    if isinstance(c_uct, bool) or not isinstance(c_uct, numbers.Real) or not float(c_uct) >= 0:
        raise ValueError(f"c_uct must be a non-negative number, got {c_uct!r}")
    if isinstance(selection_scale, bool) or not isinstance(selection_scale, numbers.Real) or not float(selection_scale) >= 0:
        raise ValueError(f"selection_scale must be a non-negative number, got {selection_scale!r}")
    if not isinstance(honest, bool):
        raise ValueError(f"honest must be True or False, got {honest!r}")
    capacity = num_rollouts if capacity is None else _check_positive_int(capacity, "capacity")
    if capacity < num_rollouts:
        raise ValueError(f"capacity ({capacity} rollouts) must be at least num_rollouts ({num_rollouts})")
    if not float(max_memory_gb) > 0:
        raise ValueError(f"max_memory_gb must be positive, got {max_memory_gb!r}")
    return TreeSettings(kind, num_rollouts, batch_size, num_draws, float(widening), float(alpha), branch_steps,
                        num_branchings, float(c_uct), float(selection_scale), honest, capacity,
                        float(max_memory_gb))


def _branch_steps(settings: TreeSettings, steps: int) -> tuple[int, ...]:
    """The branching step indices on a chain of ``steps`` steps (default: ``num_branchings`` evenly spaced)."""
    if settings.branch_steps is None:
        if settings.num_branchings > steps:
            raise ValueError(f"num_branchings ({settings.num_branchings}) exceeds the chain's {steps} steps")
        return tuple(int(s) for s in np.round(np.linspace(0, steps, settings.num_branchings + 1)[:-1]))
    if settings.branch_steps[-1] >= steps:
        raise ValueError(f"branch_steps {list(settings.branch_steps)} lie outside the chain: a step index must be "
                         f"below its {steps} steps")
    return settings.branch_steps


def _signature(settings: TreeSettings, fk, branch_steps, probe_values) -> np.ndarray:
    """8 uint32 words of the SHA-256 of what a tree's values depend on."""
    prior = fk.prior
    record = {
        "kind": settings.kind, "widening": settings.widening, "alpha": settings.alpha, "c_uct": settings.c_uct,
        "selection_scale": settings.selection_scale, "honest": settings.honest,
        "branch_steps": list(branch_steps), "model": prior.model.name, "event_shape": list(prior.event_shape),
        "times": np.asarray(prior.times, np.float64).round(7).tolist(), "integrator": prior.integrator.name,
        "log_g_at_probes": [float(np.round(v, 4)) for v in probe_values],
    }
    digest = hashlib.sha256(json.dumps(record, sort_keys=True).encode()).digest()
    return np.frombuffer(digest, np.uint32).copy()


def _probe_values(fk) -> list[float]:
    """log G at four fixed points (the program's observations and factors, as numbers), for the signature."""
    probes = jax.random.normal(jax.random.key(20250626), (4, *fk.prior.event_shape))
    return [float(v) for v in np.asarray(jax.vmap(fk.log_g)(probes))]


def build(settings: TreeSettings, fk, *, signature=None) -> TreeKernel:
    """The :class:`TreeKernel` of ``settings`` on the Feynman–Kac model ``fk``."""
    prior = fk.prior
    model, integrator, times = prior.model, prior.integrator, prior.times
    steps = prior.steps
    branch = _branch_steps(settings, steps)
    depth = len(branch)
    stops = np.array([*branch, steps], np.int32)  # stops[l]: steps taken before level l (l = 0: the root)
    batch = settings.batch_size
    star = settings.kind == "dts_star"
    honest = settings.honest
    nfe_per_step = integrator.nfe_per_step * model.nfe_per_call
    state_example = integrator.init(jnp.zeros(prior.event_shape, jnp.float32))
    slots = lambda rollouts: 1 + rollouts * depth
    signature = np.zeros(8, np.uint32) if signature is None else signature

    def check_memory(capacity_slots):
        need = tree_nbytes(state_example, capacity_slots)
        if need > settings.max_memory_gb * 2**30:
            raise ValueError(
                f"a tree for {(capacity_slots - 1) // depth} rollouts has {capacity_slots} node slots and would take "
                f"{need / 2**30:.2f} GiB, above max_memory_gb={settings.max_memory_gb:g}: use fewer rollouts or "
                "branchings, or raise max_memory_gb")

    check_memory(slots(settings.capacity))

    def init(rng_key) -> Tree:
        return empty_tree(state_example, slots(settings.capacity), jax.random.key_data(rng_key), signature)

    # --- selection: one rollout's descent, updating visits and reserving its new path ---
    def select(tree: Tree, key):
        capacity = tree.capacity
        node = jnp.zeros((), jnp.int32)
        done = jnp.zeros((), bool)
        start_node, start_level = node, jnp.full((), depth, jnp.int32)
        start_rank = jnp.zeros((), jnp.int32)  # the new child's place among its parent's children
        visits, num_children = tree.visits, tree.num_children
        for level in range(depth):
            active = ~done
            visits = visits.at[node].add(active.astype(jnp.int32))
            n = visits[node].astype(jnp.float32)
            mine = (tree.parent == node) & (tree.level == level + 1)  # evaluated children
            widen = num_children[node].astype(jnp.float32) < settings.widening * n ** settings.alpha
            expand = active & (widen | ~jnp.any(mine))
            if star:
                bonus = settings.c_uct * jnp.sqrt(jnp.log(n) / jnp.maximum(visits, 1).astype(jnp.float32))
                score = jnp.where(mine, jnp.where(jnp.isfinite(tree.value), tree.value, -1e30) + bonus, -jnp.inf)
                child = jnp.argmax(score).astype(jnp.int32)
            elif honest:
                # a child with no selection value yet borrows the log-mean-exp of its siblings'
                known = mine & ~jnp.isnan(tree.select_value)
                s = jnp.where(known, tree.select_value, -jnp.inf)
                borrowed = jax.nn.logsumexp(s) - jnp.log(jnp.maximum(jnp.sum(known), 1))
                s = jnp.where(jnp.isnan(tree.select_value), borrowed, s)
                child = _choose(jax.random.fold_in(key, level), mine, settings.selection_scale * s)
            else:
                child = _choose(jax.random.fold_in(key, level), mine, settings.selection_scale * tree.value)
            start_node = jnp.where(expand, node, start_node)
            start_level = jnp.where(expand, level, start_level)
            start_rank = jnp.where(expand, num_children[node], start_rank)
            num_children = num_children.at[node].add(expand.astype(jnp.int32))
            done = done | expand
            node = jnp.where(done, node, child)
        visits = visits.at[node].add((~done).astype(jnp.int32))  # a leaf reached without expanding
        new = jnp.where(done, depth - start_level, 0).astype(jnp.int32)
        base = tree.num_nodes
        del capacity
        plan = (start_node, start_level, done, base, start_rank)
        return tree._replace(visits=visits, num_children=num_children, num_nodes=base + new), plan

    # --- the chains of a batch, each from its expanded node to x_0 ---
    def rollout(key, tree: Tree, start_node, start_level, expand):
        start_step = jnp.asarray(stops)[start_level]
        x_T = prior.initial_std * jax.random.normal(jax.random.fold_in(key, steps), prior.event_shape)
        from_node = jax.tree.map(lambda a: a[start_node], tree.state)
        state = jax.tree.map(lambda a, b: jnp.where(start_level == 0, a, b), integrator.init(x_T), from_node)
        buffer = jax.tree.map(lambda a: jnp.zeros((depth, *a.shape), a.dtype), state)
        record_at = jnp.asarray(stops[1:])  # level m = 1..K is recorded after stops[m] steps

        def body(carry, i):
            state, buffer = carry
            moved, _ = integrator.step(jax.random.fold_in(key, i), state, model, times[i], times[i + 1])
            active = expand & (i >= start_step)
            state = jax.tree.map(lambda a, b: jnp.where(active, a, b), moved, state)
            hit = record_at == i + 1

            def rec(buf, s):
                mask = hit.reshape((depth,) + (1,) * s.ndim)
                return jnp.where(mask, s[None], buf)

            return (state, jax.tree.map(rec, buffer, state)), None

        (_, buffer), _ = jax.lax.scan(body, (state, buffer), jnp.arange(steps))
        x0 = buffer.x[depth - 1]
        log_g = fk.log_g(x0)
        return buffer, log_g

    def insert(tree: Tree, plans, buffers, log_gs) -> Tree:
        start_node, start_level, expand, base, start_rank = plans
        capacity = tree.capacity
        levels = jnp.arange(1, depth + 1)  # (K,)
        offset = levels[None, :] - start_level[:, None] - 1  # (B, K)
        valid = expand[:, None] & (offset >= 0)
        ids = jnp.where(valid, base[:, None] + offset, capacity)
        parents = jnp.where(offset == 0, start_node[:, None], base[:, None] + offset - 1)
        nan = jnp.isnan(log_gs)
        leaf_value = jnp.where(nan, -jnp.inf, log_gs)
        value = jnp.where(levels[None, :] == depth, leaf_value[:, None], 0.0)
        # honest trees: a new path is off the estimation tree when it starts off it, or as an odd child
        # (second, fourth, ...) of an inner estimation node; all its nodes share its first node's group
        odd = (start_level > 0) & (start_rank % 2 == 1)
        off = (tree.group[start_node] == 1) | odd
        group = jnp.broadcast_to((off & honest)[:, None], ids.shape).astype(jnp.int8)
        flat = lambda a: a.reshape((a.shape[0] * a.shape[1], *a.shape[2:]))
        ids_f = flat(ids)
        put = lambda arr, new: arr.at[ids_f].set(flat(new).astype(arr.dtype), mode="drop")
        state = jax.tree.map(put, tree.state, buffers)
        return tree._replace(
            state=state,
            parent=put(tree.parent, parents),
            level=put(tree.level, jnp.broadcast_to(levels, ids.shape)),
            visits=put(tree.visits, jnp.ones(ids.shape, jnp.int32)),
            num_children=put(tree.num_children, jnp.broadcast_to(levels < depth, ids.shape).astype(jnp.int32)),
            value=put(tree.value, value),
            nan_leaves=tree.nan_leaves + jnp.sum(nan & expand).astype(jnp.int32),
            group=put(tree.group, group),
        )

    def one_batch(tree: Tree) -> Tree:
        key = jax.random.fold_in(jax.random.wrap_key_data(tree.key), tree.num_rollouts)
        k_select, k_roll = jax.random.split(key)
        tree, plans = jax.lax.scan(select, tree, jax.random.split(k_select, batch))
        keys = jax.random.split(k_roll, batch)
        buffers, log_gs = jax.vmap(rollout, in_axes=(0, None, 0, 0, 0))(keys, tree, *plans[:3])
        tree = insert(tree, plans, buffers, log_gs)
        start_step = jnp.asarray(stops)[plans[1]]
        nfe = jnp.sum(jnp.where(plans[2], steps - start_step, 0)) * nfe_per_step
        tree = backup(tree, depth, honest)
        return tree._replace(num_rollouts=tree.num_rollouts + batch, nfe=tree.nfe + nfe.astype(jnp.int32))

    def grow_traced(tree: Tree, num_batches) -> Tree:
        return jax.lax.fori_loop(0, num_batches, lambda _, t: one_batch(t), tree)

    grow_jit = jax.jit(grow_traced)

    def grow(tree: Tree, num_rollouts: int) -> Tree:
        num_rollouts = _check_positive_int(num_rollouts, "num_rollouts")
        if num_rollouts % batch:
            raise ValueError(f"num_rollouts ({num_rollouts}) must be a multiple of the batch size ({batch})")
        if not isinstance(tree, Tree):
            raise TypeError(f"tree must be a pp_diffusion.tree.Tree (from init, grow or load), got {type(tree).__name__}")
        if not np.array_equal(np.asarray(tree.signature), signature):
            raise ValueError("tree was made by a different search (other settings, model, time grid, observations or "
                             "factors): grow it with the kernel of the search that made it")
        need = int(tree.num_nodes) + num_rollouts * depth
        if need > tree.capacity:
            check_memory(need)
            tree = resize(tree, need)
        return grow_jit(tree, num_rollouts // batch)

    def draw(rng_key, tree: Tree, num_draws: int):
        if star:
            rank = jnp.where(tree.level == depth, jnp.where(jnp.isfinite(tree.value), tree.value, -1e30), -jnp.inf)
            _, leaves = jax.lax.top_k(rank, num_draws)
        else:
            log_p = leaf_log_probs(tree, depth)
            cdf = jnp.cumsum(jnp.exp(log_p - jnp.max(log_p)))
            u = jax.random.uniform(rng_key, (num_draws,)) * cdf[-1]
            leaves = jnp.minimum(jnp.searchsorted(cdf, u, side="right"), tree.capacity - 1)
        leaves = leaves.astype(jnp.int32)
        draws = tree.state.x[leaves]
        per_draw = (tree.nfe // num_draws).astype(jnp.int32)
        stats = {"nfe": jnp.full((num_draws,), per_draw), "leaf": leaves, "log_g": tree.value[leaves]}
        k_sites = jax.random.fold_in(rng_key, 1)
        posterior = {fk.site: draws, **jax.vmap(fk.deterministic)(jax.random.split(k_sites, num_draws), draws)}
        return posterior, stats

    def output(rng_key, tree: Tree) -> SamplerOutput:
        posterior, stats = draw(rng_key, tree, settings.num_draws)
        leaves = jnp.sort(stats["leaf"])
        distinct = 1 + jnp.sum(leaves[1:] != leaves[:-1])
        root = tree.value[0]
        run_stats = {
            "log_marginal_likelihood": root,
            "num_nodes": tree.num_nodes,
            "num_rollouts": tree.num_rollouts,
            "depth": jnp.asarray(depth, jnp.int32),
            "nfe": tree.nfe,
            "distinct_leaves": distinct.astype(jnp.int32),
            "nan_leaves": tree.nan_leaves,
            "max_log_g": jnp.max(jnp.where(tree.level == depth, tree.value, -jnp.inf)),
            "degenerate": ~jnp.isfinite(root),
            **draw_checks(model, posterior[fk.site]),
        }
        return SamplerOutput(posterior, stats, run_stats)

    kern = TreeKernel(init, grow, draw, output, depth, branch, signature)
    return kern, grow_traced


def _sampler(settings: TreeSettings) -> Sampler:
    def setup(program, info, data):
        return feynman_kac(program, info, data)

    def run(rng_key, fk) -> SamplerOutput:
        kern, grow_traced = build(settings, fk)
        k_tree, k_draw = jax.random.split(rng_key)
        tree = grow_traced(kern.init(k_tree), settings.num_rollouts // settings.batch_size)
        return kern.output(k_draw, tree)

    names = ("num_rollouts", "batch_size", "num_draws", "widening", "alpha", "num_branchings", "capacity")
    shown = {name: getattr(settings, name) for name in names}
    shown["branch_steps"] = "even" if settings.branch_steps is None else list(settings.branch_steps)
    if settings.kind == "dts_star":
        shown["c_uct"] = settings.c_uct
    else:
        shown["selection_scale"] = settings.selection_scale
        shown["honest"] = settings.honest
    sampler = Sampler(settings.kind, shown, setup, run, STAT_DIMS, twists=lambda sites: {k: "none" for k in sites})
    return sampler._replace(tree=settings)


def dts(num_rollouts: int, *, batch_size: int = 1, num_draws: int | None = None, widening: float = 2.0,
        alpha: float = 0.8, num_branchings: int = 5, branch_steps=None, selection_scale: float = 1.0,
        honest: bool = True, capacity: int | None = None, max_memory_gb: float = 4.0) -> Sampler:
    """Diffusion Tree Sampling: ``num_rollouts`` rollouts, then ``num_draws`` (default ``num_rollouts``)
    draws of the posterior by descending the tree with probability proportional to exp(v).

    ``widening`` and ``alpha``: progressive widening ``|children| < widening N^alpha``. Nodes branch at
    ``num_branchings`` evenly spaced steps of the chain (100 steps, 5: steps 0, 20, 40, 60, 80), or at
    the step indices ``branch_steps`` (starting at 0). ``batch_size`` rollouts are selected from the
    same tree before their chains run together. ``capacity`` (default ``num_rollouts``): rollouts the
    preallocated arrays hold (a tree grown past it is enlarged); a tree above ``max_memory_gb`` is
    refused before compiling. Asymptotically exact as the rollouts grow (Jain et al., 2025).

    ``honest`` (default): the search selects by values computed from one half of each node's children
    and the estimate, the draws and the evidence use the other half (:mod:`pp_diffusion.tree._tree`,
    "Honest values"). With ``honest=False`` every child feeds both, as in the paper: a child whose first
    leaf came out high is revisited and pulled back toward its mean, one whose first leaf came out low
    is not, so the values are biased low at finite budgets (an optional-stopping bias: 1.3 nat on the
    Gaussian likelihood of docs/samplers.md at 4,096 rollouts, not shrinking by 16,384).
    ``selection_scale`` tau: a rollout picks a child with probability proportional to exp(tau v)
    (1: the paper's rule; 0: uniform, a search that ignores the values; the draws always use exp(v)).
    """
    return _sampler(_check_settings("dts", num_rollouts, batch_size, num_draws, widening, alpha, branch_steps,
                                    num_branchings, 0.0, capacity, max_memory_gb, selection_scale, honest))


def dts_star(num_rollouts: int, *, c_uct: float = 1.0, batch_size: int = 1, num_draws: int = 1,
             widening: float = 2.0, alpha: float = 0.5, num_branchings: int = 5, branch_steps=None,
             capacity: int | None = None, max_memory_gb: float = 4.0) -> Sampler:
    """Diffusion Tree Search (DTS*): the selection maximises v + ``c_uct`` sqrt(log N(parent) / N(child)),
    a search for high log G under the prior; its draws are the ``num_draws`` best leaves found, best
    first (not posterior draws). ``alpha`` defaults to 0.5, not DTS's 0.8: with 0.8 a node visited
    fewer than 32 times widens on every visit, so most rollouts start a new chain near the root and the
    search is little more than best-of-N (on the linear tilt of docs/samplers.md it finds less than
    best-of-N at equal NFE; with 0.5, more). Other settings as :func:`dts`."""
    return _sampler(_check_settings("dts_star", num_rollouts, batch_size, num_draws, widening, alpha,
                                    branch_steps, num_branchings, c_uct, capacity, max_memory_gb))


def kernel(sampler: Sampler, program: Callable, **data) -> TreeKernel:
    """The :class:`TreeKernel` of a tree sampler on ``program(**data)``: an anytime, resumable search.

    >>> kern = ppd.tree.kernel(ppd.tree.dts(1000), program, y=y)
    >>> tree = kern.grow(kern.init(jax.random.key(0)), 500)
    >>> ppd.tree.save(tree, "search.npz")
    >>> tree = kern.grow(ppd.tree.load("search.npz"), 500)   # = 1,000 rollouts in one go
    >>> posterior, stats = kern.draw(jax.random.key(1), tree, 100)
    """
    if not isinstance(sampler, Sampler) or getattr(sampler, "tree", None) is None:
        raise TypeError("sampler must be a tree sampler, pp_diffusion.tree.dts(...) or dts_star(...), got "
                        f"{getattr(sampler, 'name', type(sampler).__name__)!r}")
    data = as_data(data)
    info = inspect_program(program, data)
    fk = feynman_kac(program, info, data)
    settings = sampler.tree
    signature = _signature(settings, fk, _branch_steps(settings, fk.prior.steps), _probe_values(fk))
    return build(settings, fk, signature=signature)[0]
