"""The search tree as fixed-shape arrays (in the manner of mctx's ``Tree``), and its soft values.

A tree over the reverse chain branches at ``K`` step indices b_0 = 0 < b_1 < ... < b_{K-1} of a
chain of S steps. Node levels: 0 is the root (the start of the chain: its children marginalise over
x_T), level l in 1..K-1 holds the integrator state after b_l steps, and level K holds the leaves,
x_0. Every node is a slot of preallocated arrays with a parent index; there is no children array
(at the root progressive widening admits thousands of children), so a node's children are found by
``parent == node``, an O(nodes) masked pass. Memory: O(nodes x d).

Soft values (Jain et al., 2025, the soft Bellman backup with lambda = 1, the tilt being part of the
program's log G): a leaf's value is log G(x_0); an inner node's is the log-MEAN-exp of its children's,

.. math::  v(n) = \\log \\frac{1}{|C(n)|} \\sum_{c \\in C(n)} e^{v(c)},

unweighted because the children are i.i.d. draws of the prior kernel from n (weighting by visits,
or a log-sum-exp, biases it). The root's value estimates log E_p[G(x_0)] = log Z. Values are
recomputed level by level from the leaves after each batch of rollouts (:func:`backup`): K segment
reductions over the node arrays, linear in the tree's size, exact and independent of the order in
which the batch's rollouts arrived.

**Honest values** (``honest=True``; sample splitting in the manner of honest trees, Wager & Athey
2018). When the search picks children by their values, how many children a node gets depends on
the values of the children it already has: the log-mean-exp above is then an average stopped at a
time that depends on what it averages, and it is biased low (a child whose first leaf came out low
is not revisited, one whose first leaf came out high is, and regresses). An honest tree keeps an
*estimation tree* (``group`` 0): the root's children, and, below them, every other child of an
estimation node in the order they were made (the first, third, ...), with everything under them
made by their first rollout; the other children of estimation nodes, and all their descendants, are
*selection* nodes (``group`` 1). Three values:

.. math::  v(n) = \\log \\frac{1}{|E(n)|} \\sum_{c \\in E(n)} e^{v(c)}, \\qquad
           f(n) = \\log \\frac{1}{|C(n)|} \\sum_{c \\in C(n)} e^{f(c)}, \\qquad
           s(n) = \\log \\frac{1}{|S(n)|} \\sum_{c \\in S(n)} e^{f(c)}

(E(n), S(n): the estimation and selection children; leaves v = f = log G). The estimate, the draws
and the evidence use v on the estimation tree. The search selects an estimation node by s (NaN
until it has a selection child: it then borrows the log-mean-exp of its siblings'), a selection
node by f, the paper's value. So no decision ever reads the subtree of an estimation node's
estimation children: given x_n, the number of estimation children of n is independent of what they
hold, and every exp(v(n)) is an unbiased estimate of E[G | x_n]. The price: the estimate rests on the
estimation tree, about half of the children at each branching below the root.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = ["Tree", "empty_tree", "backup", "leaf_log_probs", "resize", "tree_nbytes"]


class Tree(NamedTuple):
    """A search tree of ``capacity`` node slots (leading axis of every node array).

    state
        The integrator state of each node (``IntegratorState``: x and, for multistep chains, the
        previous predictions), for levels 1..K; unused at the root.
    parent
        Index of each node's parent (-1 for the root and free slots).
    level
        0 (root) .. K (leaf, x_0); -1 for a free slot.
    visits
        N(n): how many rollouts have passed through the node.
    num_children
        The number of children, ``|C(n)|``.
    value
        The soft value v(n) (log G units); log G(x_0) at a leaf, -inf where G is 0 or NaN (on an
        honest tree: v on the estimation tree, f off it).
    num_nodes
        Slots in use (nodes are written in order: slots ``>= num_nodes`` are free).
    num_rollouts
        Rollouts made so far (the key of the next batch is ``fold_in(key, num_rollouts)``).
    key
        The search's PRNG key data (``jax.random.key_data``), fixed at ``init``.
    nfe
        Network evaluations spent so far (the steps of the rollouts, each from its expanded node).
    nan_leaves
        Leaves whose log G was NaN (their value is -inf; the search goes on).
    group
        0 for a node of the estimation tree (every node of a tree that is not honest), 1 for a
        selection node.
    select_value
        The value the search selects by: s(n) on the estimation tree, f(n) off it (= ``value`` unless
        the tree is honest; NaN where an estimation node has no selection child yet).
    signature
        SHA-256 of the search's settings, model, grid and observations, as 8 uint32 words: a tree
        grows only under the search that made it.
    """

    state: NamedTuple
    parent: jax.Array
    level: jax.Array
    visits: jax.Array
    num_children: jax.Array
    value: jax.Array
    num_nodes: jax.Array
    num_rollouts: jax.Array
    key: jax.Array
    nfe: jax.Array
    nan_leaves: jax.Array
    signature: jax.Array
    group: jax.Array
    select_value: jax.Array

    @property
    def capacity(self) -> int:
        return self.parent.shape[-1]


def empty_tree(state_example, capacity: int, key_data, signature) -> Tree:
    """A tree of ``capacity`` slots holding only the root (slot 0)."""
    state = jax.tree.map(lambda a: jnp.zeros((capacity, *jnp.shape(a)), jnp.result_type(a)), state_example)
    slots = jnp.arange(capacity)
    return Tree(
        state=state,
        parent=jnp.full((capacity,), -1, jnp.int32),
        level=jnp.where(slots == 0, 0, -1).astype(jnp.int32),
        visits=jnp.zeros((capacity,), jnp.int32),
        num_children=jnp.zeros((capacity,), jnp.int32),
        value=jnp.zeros((capacity,), jnp.float32),
        num_nodes=jnp.ones((), jnp.int32),
        num_rollouts=jnp.zeros((), jnp.int32),
        key=jnp.asarray(key_data, jnp.uint32),
        nfe=jnp.zeros((), jnp.int32),
        nan_leaves=jnp.zeros((), jnp.int32),
        signature=jnp.asarray(signature, jnp.uint32),
        group=jnp.zeros((capacity,), jnp.int8),
        select_value=jnp.zeros((capacity,), jnp.float32),
    )


def _segment_logsumexp(values, segments, num_segments):
    """log sum exp(values) per segment (-inf for an empty one, or one whose values are all -inf)."""
    top = jax.ops.segment_max(values, segments, num_segments, indices_are_sorted=False)
    safe = jnp.where(jnp.isfinite(top), top, 0.0)
    total = jax.ops.segment_sum(jnp.exp(values - safe[segments.clip(0, num_segments - 1)]), segments, num_segments)
    return jnp.where(jnp.isfinite(top), safe + jnp.log(total), -jnp.inf)


def _child_lse(tree: Tree, child_level: int, values=None, group: int | None = None):
    """log sum_c exp values(c) over each node's children at ``child_level`` (those of ``group``, or all),
    and how many there are (both per slot, at the parent's index)."""
    capacity = tree.capacity
    values = tree.value if values is None else values
    is_child = tree.level == child_level
    if group is not None:
        is_child = is_child & (tree.group == group)
    segments = jnp.where(is_child, tree.parent, capacity)  # out of range: dropped
    lse = _segment_logsumexp(jnp.where(is_child, values, -jnp.inf), segments, capacity)
    count = jax.ops.segment_sum(is_child.astype(jnp.int32), segments, capacity)
    return lse, count


def _child_mean(tree: Tree, child_level: int, values=None, group: int | None = None):
    """log (1/|C(n)|) sum_c exp values(c) over each node's children (as :func:`_child_lse`; -inf where
    there are none), and how many there are."""
    lse, count = _child_lse(tree, child_level, values, group)
    return lse - jnp.log(jnp.maximum(count, 1).astype(jnp.float32)), count


def backup(tree: Tree, depth: int, honest: bool = False) -> Tree:
    """Every inner node's soft value from its children, from level ``depth - 1`` up to the root (and, for
    an honest tree, its selection value; see the module docstring)."""
    value = tree.value  # v, over the estimation children (all of them unless honest)
    full = tree.value  # f, over all children
    select = tree.select_value
    for level in range(depth - 1, -1, -1):
        inner = tree.level == level
        mean, count = _child_mean(tree._replace(value=value), level + 1, group=0)
        value = jnp.where(inner & (count > 0), mean, value)
        if honest:
            mean, count = _child_mean(tree, level + 1, full)
            full = jnp.where(inner & (count > 0), mean, full)
            mean, count = _child_mean(tree, level + 1, full, group=1)
            select = jnp.where(inner, jnp.where(tree.group == 0, jnp.where(count > 0, mean, jnp.nan), full), select)
    if not honest:
        return tree._replace(value=value, select_value=value)
    return tree._replace(value=jnp.where(tree.group == 0, value, full),
                         select_value=jnp.where(tree.level == depth, tree.value, select))


def leaf_log_probs(tree: Tree, depth: int):
    """log P(leaf) of a descent from the root that picks each estimation child with probability
    proportional to exp(v(child)) (DTS's draws), for every slot (-inf off the leaves and below selection
    children): the product along the path of exp(v(c)) / sum_siblings exp(v), from K passes down the
    levels. A node whose estimation children are all -inf passes its mass to them uniformly."""
    log_p = jnp.where(tree.level == 0, 0.0, -jnp.inf)
    for level in range(1, depth + 1):
        is_node = (tree.level == level) & (tree.group == 0)
        parent = jnp.where(is_node, tree.parent, 0)
        lse, count = _child_lse(tree, level, group=0)
        lse, count = lse[parent], count[parent]
        local = jnp.where(jnp.isfinite(lse), tree.value - lse, -jnp.log(jnp.maximum(count, 1).astype(jnp.float32)))
        log_p = jnp.where(is_node, log_p[parent] + local, log_p)
    return jnp.where((tree.level == depth) & (tree.group == 0), log_p, -jnp.inf)


def resize(tree: Tree, capacity: int) -> Tree:
    """The tree with ``capacity`` slots (more than it has: free slots appended)."""
    extra = capacity - tree.capacity
    if extra < 0:
        raise ValueError(f"capacity must be at least the tree's {tree.capacity} slots, got {capacity}")
    if extra == 0:
        return tree
    pad = lambda a, fill: jnp.concatenate([a, jnp.full((extra, *a.shape[1:]), fill, a.dtype)])
    return tree._replace(
        state=jax.tree.map(lambda a: pad(a, 0), tree.state), parent=pad(tree.parent, -1),
        level=pad(tree.level, -1), visits=pad(tree.visits, 0), num_children=pad(tree.num_children, 0),
        value=pad(tree.value, 0.0), group=pad(tree.group, 0), select_value=pad(tree.select_value, 0.0))


def tree_nbytes(state_example, capacity: int) -> int:
    """Bytes of a tree of ``capacity`` slots: its states, six 4-byte scalars and a byte per node."""
    per_node = sum(jnp.size(a) * jnp.result_type(a).itemsize for a in jax.tree.leaves(state_example))
    return int(capacity * (per_node + 6 * 4 + 1))
