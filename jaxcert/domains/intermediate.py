"""Intermediate bounds by backward passes: every neuron of a node, dense or on patches.

Full CROWN and Fast-Lin bound each pre-activation neuron with its own backward pass.
:func:`identity_bounds` runs those passes for a node, ``chunk_size`` neurons at a time,
choosing the patch domain (:mod:`jaxcert.domains.patches`) when the node's whole
ancestry is a chain of convolutions, activations and elementwise affine maps whose
patches are smaller than the feature maps, and dense passes
(:mod:`jaxcert.domains.linear`) otherwise; :func:`crown_intervals` does it for every
pre-activation node of a graph.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from jaxcert.domains import interval, linear, patches
from jaxcert.domains.backward import (
    Context,
    Interval,
    SlopeChoice,
    bounds_in_chunks,
    default_chunk_size,
    preactivation_nodes,
)
from jaxcert.graph import Graph, Node
from jaxcert.sets import InputSet

Array = jax.Array

__all__ = ["identity_bounds", "crown_intervals"]


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
    chunk_size: int | None = None,
) -> list[Interval]:
    """Per-node intervals where every pre-activation bound comes from its own backward pass.

    Full CROWN (``lower_slope`` adaptive) or Fast-Lin (``"fastlin"``). Nodes between
    activations get IBP intervals from the refined bounds; with ``intersect_ibp`` each
    backward bound is also intersected with IBP's (tighter, still sound: a neuron that
    either proves stable is stable).
    """
    targets = set(preactivation_nodes(graph))
    intervals: list[Interval | None] = [input_set.bounding_box()]
    ctx = Context(graph, intervals, lower_slope)
    for node in graph.nodes[1:]:
        iv = interval.propagate_node(node, intervals)
        if node.index in targets:
            lo, hi = identity_bounds(ctx, input_set, node.index, chunk_size)
            if intersect_ibp:
                lo, hi = jnp.maximum(lo, iv[0]), jnp.minimum(hi, iv[1])
            iv = (lo, hi)
        intervals.append(iv)
    return intervals  # type: ignore[return-value]
