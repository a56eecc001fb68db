"""Interval bound propagation (IBP): a forward domain of ``(lower, upper)`` boxes.

``RULES`` maps a node's op to ``rule(node, operands) -> (lower, upper)`` where each
operand is an ``(lower, upper)`` pair for a bounded input or the constant array itself.
It is derived from the op registry (:mod:`jaxcert.ops`): affine operations go through
centre/radius form (the centre through the op itself, the radius through the same op
with its weight replaced by ``|weight|``); non-decreasing activations map endpoints to
endpoints; ``|z|`` and even powers take their minimum at 0 where the interval holds it; a product
of two bounded values takes the extremes over the corners.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert import ops
from jaxcert.graph import Graph, Node, Ref

Array = jax.Array
Interval = tuple[Array, Array]
Rule = Callable[[Node, Sequence[Any]], Interval]

__all__ = [
    "RULES",
    "Interval",
    "propagate",
    "propagate_node",
    "propagate_radius",
    "even_convex_range",
]


def _center_radius(iv: Interval) -> tuple[Array, Array]:
    lo, hi = iv
    return (hi + lo) / 2, (hi - lo) / 2


def propagate_radius(node: Node, operands: Sequence[Any]) -> Array:
    """The radius of an affine node's output from its operands' radii.

    ``operands`` holds a radius (``>= 0``, shaped like the operand) for each bounded
    argument and the constant itself otherwise. Weighted ops apply ``|weight|`` to the
    radii, sums add them, and structural maps move them with float constants taken as
    offsets (radius 0) and integer constants (indices) kept. Shared by IBP and the
    margin domains (:mod:`jaxcert.domains.margins`), which centre the same radii at the
    nominal activations instead of the interval midpoints.
    """
    kind = ops.OPS[node.op].kind
    if kind == "sum":
        radius: Array | float = 0.0
        for arg, r in zip(node.args, operands, strict=True):
            if isinstance(arg, Ref):
                radius = radius + r
        return jnp.broadcast_to(radius, node.shape).astype(node.dtype)
    constant_radius = jnp.abs if kind == "weighted" else _offset_radius
    return node.apply(
        *(
            r if isinstance(arg, Ref) else constant_radius(r)
            for arg, r in zip(node.args, operands, strict=True)
        )
    )


def _affine_rule(node: Node, operands: Sequence[Any]) -> Interval:
    """Centre through the op, radius through :func:`propagate_radius`."""
    centers, radii = [], []
    for arg, x in zip(node.args, operands, strict=True):
        if isinstance(arg, Ref):
            c, r = _center_radius(x)
            centers.append(c)
            radii.append(r)
        else:
            centers.append(x)
            radii.append(x)
    c, r = node.apply(*centers), propagate_radius(node, radii)
    return c - r, c + r


def _offset_radius(x: Any) -> Any:
    # Non-negative structural maps: float constants are offsets (radius 0); integer and
    # boolean constants are indices or selectors, kept as they are.
    return jnp.zeros_like(x) if jnp.issubdtype(jnp.result_type(x), jnp.floating) else x


def _endpoint_rule(node: Node, operands: Sequence[Any]) -> Interval:
    """A non-decreasing activation maps the endpoints."""
    lo, hi = operands[0]
    return node.apply(lo), node.apply(hi)


def even_convex_range(node: Node, lower: Array, upper: Array) -> Interval:
    """The range of an even convex function (``|z|``, ``z ** 2k``) on ``[l, u]``: its
    value at the point nearest 0 up to the larger of its values at the endpoints."""
    nearest_zero = jnp.clip(jnp.zeros_like(lower), lower, upper)
    return node.apply(nearest_zero), jnp.maximum(node.apply(lower), node.apply(upper))


def _even_convex_rule(node: Node, operands: Sequence[Any]) -> Interval:
    return even_convex_range(node, *operands[0])


def _product_rule(node: Node, operands: Sequence[Any]) -> Interval:
    # The extremes of x * y over a box are at its corners.
    (lx, ux), (ly, uy) = operands
    corners = jnp.stack([lx * ly, lx * uy, ux * ly, ux * uy])
    return jnp.min(corners, axis=0), jnp.max(corners, axis=0)


def _maximum_rule(node: Node, operands: Sequence[Any]) -> Interval:
    (lx, ux), (ly, uy) = operands
    return jnp.maximum(lx, ly), jnp.maximum(ux, uy)


RULES: dict[str, Rule] = ops.rule_table(
    "interval",
    {
        "weighted": _affine_rule,
        "sum": _affine_rule,
        "structural": _affine_rule,
        "monotone": _endpoint_rule,
    },
    overrides={
        "even_convex": _even_convex_rule,
        "product": _product_rule,
        "maximum": _maximum_rule,
    },
)


def propagate_node(node: Node, intervals: Sequence[Interval | None]) -> Interval:
    """The interval of ``node`` from the intervals of the nodes before it."""
    rule = RULES[node.op]
    operands = [intervals[a.index] if isinstance(a, Ref) else a for a in node.args]
    return rule(node, operands)


def propagate(graph: Graph, lower: Array, upper: Array) -> list[Interval]:
    """Intervals of every node of ``graph`` given the input box ``[lower, upper]``.

    Example:
      >>> from jaxcert.graph import trace
      >>> g = trace(lambda x: 2.0 * x - 1.0, (1, 2), jnp.float32)
      >>> propagate(g, jnp.zeros((1, 2)), jnp.ones((1, 2)))[-1][1]
      Array([[1., 1.]], dtype=float32)
    """
    intervals: list[Interval | None] = [(lower, upper)]
    for node in graph.nodes[1:]:
        intervals.append(propagate_node(node, intervals))
    return intervals  # type: ignore[return-value]
