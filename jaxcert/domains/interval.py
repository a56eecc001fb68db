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

import math
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

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


def periodic_range(node: Node, lower: Array, upper: Array) -> Interval:
    """The range of ``sin(z + phase)`` (a ``periodic`` node: sin or cos) on ``[l, u]``:
    1 where the interval holds a crest, -1 where it holds a trough, else the endpoints'
    values; widened by a few float32 rounding errors of the shifted argument."""
    phase = node.params["phase"]
    w_lo, w_hi = lower + phase, upper + phase
    period = 2 * math.pi
    crest = jnp.ceil((w_lo - math.pi / 2) / period) * period + math.pi / 2 <= w_hi
    trough = jnp.ceil((w_lo + math.pi / 2) / period) * period - math.pi / 2 <= w_hi
    f_lo, f_hi = node.apply(lower), node.apply(upper)
    slack = 8 * jnp.finfo(lower.dtype).eps * (1 + jnp.maximum(jnp.abs(w_lo), jnp.abs(w_hi)))
    low = jnp.where(trough, -1.0, jnp.minimum(f_lo, f_hi) - slack)
    high = jnp.where(crest, 1.0, jnp.maximum(f_lo, f_hi) + slack)
    return jnp.maximum(low, -1.0), jnp.minimum(high, 1.0)


def _periodic_rule(node: Node, operands: Sequence[Any]) -> Interval:
    return periodic_range(node, *operands[0])


def _even_convex_rule(node: Node, operands: Sequence[Any]) -> Interval:
    return even_convex_range(node, *operands[0])


def _product_rule(node: Node, operands: Sequence[Any]) -> Interval:
    # The extremes of x * y over a box are at its corners.
    (lx, ux), (ly, uy) = operands
    corners = jnp.stack([lx * ly, lx * uy, ux * ly, ux * uy])
    return jnp.min(corners, axis=0), jnp.max(corners, axis=0)


def _reciprocal_rule(node: Node, operands: Sequence[Any]) -> Interval:
    # Decreasing on each side of its pole; unbounded where the interval holds 0.
    lo, hi = operands[0]
    pole = (lo <= 0) & (hi >= 0)
    safe_lo, safe_hi = jnp.where(pole, 1, lo), jnp.where(pole, 1, hi)
    return jnp.where(pole, -jnp.inf, 1 / safe_hi), jnp.where(pole, jnp.inf, 1 / safe_lo)


def _rsqrt_rule(node: Node, operands: Sequence[Any]) -> Interval:
    # Decreasing on z > 0 (undefined below, infinite at 0).
    lo, hi = operands[0]
    lower = jnp.where(hi > 0, lax.rsqrt(jnp.where(hi > 0, hi, 1)), 0)
    return lower, jnp.where(lo > 0, lax.rsqrt(jnp.where(lo > 0, lo, 1)), jnp.inf)


def _bilinear_rule(node: Node, operands: Sequence[Any]) -> Interval:
    """A matrix product of two intervals in midpoint-radius form: ``x y - c_x c_y =
    c_x d_y + d_x c_y + d_x d_y`` with ``|d| <= r``, so the radius is
    ``|c_x| r_y + r_x |c_y| + r_x r_y`` through the same product."""
    (lx, ux), (ly, uy) = operands
    cx, rx, cy, ry = (lx + ux) / 2, (ux - lx) / 2, (ly + uy) / 2, (uy - ly) / 2
    center = node.apply(cx, cy)
    radius = node.apply(jnp.abs(cx), ry) + node.apply(rx, jnp.abs(cy)) + node.apply(rx, ry)
    return center - radius, center + radius


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
        "reciprocal": _reciprocal_rule,
        "periodic": _periodic_rule,
        "rsqrt": _rsqrt_rule,
        "bilinear": _bilinear_rule,
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
