"""Intermediate bounds by backward passes: every neuron of a node, dense or on patches.

Full CROWN and Fast-Lin bound each pre-activation neuron with its own backward pass.
:func:`identity_bounds` runs those passes for a node, ``chunk_size`` neurons at a time,
choosing the patch domain (:mod:`jaxcert.domains.patches`) when the node's whole
ancestry is a chain of convolutions, activations and elementwise affine maps whose
patches are smaller than the feature maps, and dense passes
(:mod:`jaxcert.domains.linear`) otherwise; :func:`crown_intervals` does it for every
pre-activation node of a graph. :func:`ibp_intervals` is IBP from an input set: from
its bounding box, except that the first affine layers over a norm ball are bounded
exactly by the same passes (their rows' dual norms).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcert import ops
from jaxcert.domains import interval, linear, patches
from jaxcert.domains.backward import (
    Context,
    Interval,
    SlopeChoice,
    bounds_in_chunks,
    default_chunk_size,
    preactivation_nodes,
    slope_chooser,
)
from jaxcert.graph import Graph, Node
from jaxcert.sets import InputSet

Array = jax.Array

__all__ = [
    "identity_bounds",
    "crown_intervals",
    "screenable_nodes",
    "ibp_intervals",
    "exact_affine_intervals",
    "weighted_affine_prefix",
]


def _dense_identity_bounds(
    ctx: Context, input_set: InputSet, index: int, chunk_size: int
) -> Interval:
    node = ctx.graph.nodes[index]
    batch, rest = node.shape[0], node.shape[1:]
    n = math.prod(rest)

    def run(rows: Array) -> tuple[Array, Array]:
        eye = jax.nn.one_hot(rows, n, dtype=node.dtype).reshape((1, rows.shape[0], *rest))
        eye = jnp.broadcast_to(eye, (batch, *eye.shape[1:]))
        both = linear.lower_bound(ctx, input_set, index, jnp.concatenate([eye, -eye], axis=1))
        m = rows.shape[0]
        return both[:, :m], -both[:, m:]

    return bounds_in_chunks(run, node.shape, chunk_size)


def identity_bounds(
    ctx: Context, input_set: InputSet, index: int, chunk_size: int | None = None
) -> Interval:
    """Bounds of every neuron of node ``index`` by backward passes, ``chunk_size`` at a time.

    The identity specification is never built whole: each chunk of neurons gets its
    one-hot rows (with their negations, for the upper bounds), and many chunks run in
    one XLA loop. ``chunk_size`` defaults to
    :func:`jaxcert.domains.backward.default_chunk_size` (dense) or
    :func:`jaxcert.domains.patches.default_chunk_size`.

    Example:
      >>> from jaxcert.domains.backward import slope_chooser
      >>> from jaxcert.graph import trace
      >>> g = trace(lambda x: x @ jnp.array([[1.0, 2.0]]) - 0.5, (1, 1), jnp.float32)
      >>> ctx = Context(g, [None] * 3, slope_chooser("adaptive"))
      >>> identity_bounds(ctx, jaxcert.Box(jnp.zeros((1, 1)), jnp.ones((1, 1))), 2)
      (Array([[-0.5, -0.5]], dtype=float32), Array([[0.5, 1.5]], dtype=float32))
    """
    chain = patches.conv_chain(ctx.graph, index)
    if chain is not None and patches.prefers_patches(ctx.graph, chain):
        return patches.identity_bounds(ctx, input_set, chain, chunk_size)
    return _dense_identity_bounds(
        ctx, input_set, index, chunk_size or default_chunk_size(ctx.graph)
    )


def crown_intervals(
    graph: Graph,
    input_set: InputSet,
    lower_slope: Callable[[Node], SlopeChoice],
    *,
    intersect_ibp: bool = True,
    screen_ibp: bool = False,
    chunk_size: int | None = None,
) -> list[Interval]:
    """Per-node intervals where every pre-activation bound comes from its own backward pass.

    Full CROWN (``lower_slope`` adaptive) or Fast-Lin (``"fastlin"``). Nodes between
    activations get IBP intervals from the refined bounds; with ``intersect_ibp`` each
    backward bound is also intersected with IBP's (tighter, still sound: a neuron that
    either proves stable is stable). With ``screen_ibp``, a ReLU input neuron that IBP
    (from the refined bounds of the node before) already proves stable keeps IBP's
    bounds, as auto_LiRPA's sparse intermediate bounds do: its relaxation is exact
    whatever its bounds, so only the unstable neurons' backward bounds are used (the
    final bounds differ from the intersected chain's where the adaptive slopes flip).

    Example:
      >>> from jaxcert.domains.backward import slope_chooser
      >>> fn = lambda x: jax.nn.relu(x @ jnp.array([[1.0, 1.0], [1.0, -1.0]]))
      >>> g = jaxcert.graph.trace(fn, (1, 2), jnp.float32)
      >>> s = jaxcert.LinfBall(jnp.array([[1.0, 0.0]]), 0.5)
      >>> crown_intervals(g, s, slope_chooser("adaptive"))[-2]  # the ReLU's input
      (Array([[0., 0.]], dtype=float32), Array([[2., 2.]], dtype=float32))
    """
    targets = set(preactivation_nodes(graph))
    screened = screenable_nodes(graph) if screen_ibp else set()
    intervals: list[Interval | None] = [input_set.bounding_box()]
    ctx = Context(graph, intervals, lower_slope)
    for node in graph.nodes[1:]:
        iv = interval.propagate_node(node, intervals)
        if node.index in targets:
            lo, hi = identity_bounds(ctx, input_set, node.index, chunk_size)
            if node.index in screened:
                # Every neuron still gets its pass: skipping the stable ones needs a
                # conditional, which XLA's CPU backend ran 3x slower than the whole
                # pass (BENCHMARKS.md).
                stable = (iv[0] >= 0) | (iv[1] <= 0)
                lo, hi = jnp.where(stable, iv[0], lo), jnp.where(stable, iv[1], hi)
            if intersect_ibp:
                lo, hi = jnp.maximum(lo, iv[0]), jnp.minimum(hi, iv[1])
            iv = (lo, hi)
        intervals.append(iv)
    return intervals  # type: ignore[return-value]


# Activations whose relaxation is exact (the identity or a line through 0) for an input
# interval on one side of 0, whatever the interval.
_KINKED_AT_ZERO = frozenset({"relu", "leaky_relu"})


def screenable_nodes(graph: Graph) -> set[int]:
    """The pre-activation nodes read by no activation but ReLU-like ones (kinked at 0): a
    neuron of theirs with an interval on one side of 0 is relaxed exactly, so where IBP
    proves it stable its backward bound is not needed (it is still computed: see
    :func:`crown_intervals`).

    Example:
      >>> fn = lambda x: jax.nn.relu(x) + jax.nn.sigmoid(2.0 * x)
      >>> sorted(screenable_nodes(jaxcert.graph.trace(fn, (1, 2), jnp.float32)))
      [0]
    """
    readers: dict[int, set[str]] = {}
    for node in graph.activations:
        for index in node.inputs:
            readers.setdefault(index, set()).add(node.op)
    return {
        index
        for index in preactivation_nodes(graph)
        if readers.get(index, set()) <= _KINKED_AT_ZERO
    }


def weighted_affine_prefix(graph: Graph) -> list[int]:
    """The nodes that are affine functions of the input through at least one weighted op
    (a dense layer, a convolution, a scaling), in order: where IBP from the bounding box
    of a norm ball is loose and the ball's own concretisation is exact.

    Example:
      >>> from jaxcert.graph import trace
      >>> g = trace(lambda x: jax.nn.relu(x.reshape(1, 2) @ jnp.ones((2, 3))), (1, 2), jnp.float32)
      >>> [g.nodes[i].op for i in weighted_affine_prefix(g)]
      ['dot_general']
    """
    affine, weighted = {0}, set()
    for node in graph.nodes[1:]:
        if ops.is_linear(node.op) and all(i in affine for i in node.inputs):
            affine.add(node.index)
            if ops.OPS[node.op].kind == "weighted" or any(i in weighted for i in node.inputs):
                weighted.add(node.index)
    return sorted(weighted)


def exact_affine_intervals(
    graph: Graph, input_set: InputSet, chunk_size: int | None = None
) -> dict[int, Interval]:
    """The set's exact interval of every node of :func:`weighted_affine_prefix` that a
    node outside it reads (an activation, or a sum with a non-affine branch such as a
    residual shortcut), or that is the output: ``{node index: (lower, upper)}``.

    Each row's concretisation over the set (dual norms; L0 by top-k; a clipped ball's
    better of ball and box), by the backward passes of :func:`identity_bounds`. Empty
    for a box, whose bounding box IBP already propagates exactly through affine layers.
    """
    if input_set.is_box:
        return {}
    prefix = weighted_affine_prefix(graph)
    inside = set(prefix)
    frontier = {graph.output} & inside
    for node in graph.nodes:
        if node.index not in inside:
            frontier.update(i for i in node.inputs if i in inside)
    # The affine prefix has no activation: the passes read no interval and no slope.
    ctx = Context(graph, [None] * len(graph.nodes), slope_chooser("adaptive"))
    return {
        index: identity_bounds(ctx, input_set, index, chunk_size)
        for index in prefix
        if index in frontier
    }


def ibp_intervals(
    graph: Graph,
    input_set: InputSet,
    chunk_size: int | None = None,
    *,
    exact: dict[int, Interval] | None = None,
) -> list[Interval]:
    """IBP's interval of every node, starting from the input set itself.

    IBP propagates the set's bounding box. For a box (an Linf ball) that is exact
    through the first affine layer; for an L2, L1 or L0 ball it is not (one dense layer
    over an L2 ball: ``eps ||W_i||_1`` instead of ``eps ||W_i||_2``). So the nodes of
    :func:`exact_affine_intervals` take the set's exact interval, intersected with the
    box's; the nodes after them are IBP as usual. ``exact``: those intervals, if the
    caller has them already.

    Example:
      >>> import jaxcert
      >>> fn = lambda x: x @ jnp.array([[3.0], [4.0]])
      >>> g = jaxcert.graph.trace(fn, (1, 2), jnp.float32)
      >>> ball = jaxcert.L2Ball(jnp.zeros((1, 2)), 1.0)
      >>> ibp_intervals(g, ball)[-1]  # the box would give [-7, 7]
      (Array([[-5.]], dtype=float32), Array([[5.]], dtype=float32))
    """
    if exact is None:
        exact = exact_affine_intervals(graph, input_set, chunk_size)
    intervals: list[Interval | None] = [input_set.bounding_box()]
    for node in graph.nodes[1:]:
        iv = interval.propagate_node(node, intervals)
        if node.index in exact:
            lo, hi = exact[node.index]
            iv = (jnp.maximum(lo, iv[0]), jnp.minimum(hi, iv[1]))
        intervals.append(iv)
    return intervals  # type: ignore[return-value]
