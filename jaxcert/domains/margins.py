"""Margin propagation (SingleProp, DoubleMargin): approximate ranges in one extra pass.

APPROXIMATIONS, NOT BOUNDS. These domains centre a symmetric margin at the nominal
activations (the network's values at the clean input) instead of at the midpoint of a
sound interval, so the ranges they give can miss reachable values. They are training
signals (regularisers); :func:`margins` returns :class:`MarginBounds`, which nothing in
jaxcert accepts as a certificate.

Each node carries its nominal value ``z`` and a radius ``r >= 0`` (and, for
DoubleMargin, a second margin ``d >= 0``). Affine nodes map ``z`` through the op and
radii through the op with ``|weight|`` (:func:`jaxcert.domains.interval.propagate_radius`,
the rule IBP uses for its half-gaps). Activations ``y = sigma(z)``:

SingleProp (``002_…`` Eq. 6), with the relaxation ``a_L z + b_L <= sigma <= a_U z + b_U``
of ``sigma`` on ``[z - r, z + r]`` (:func:`jaxcert.relaxations.relu_relaxation`)::

    r' = (a_U + a_L) / 2 * r + (b_U - b_L) / 2 + (a_U - a_L) / 2 * z

which for an unstable ReLU is Eq. 7 (Fast-Lin slopes: ``3r/4 + z/2 - z^2/(4r)``) or
Eq. 8 (zero lower slope: ``(z + r)/2``), and ``r`` (or 0) when stable. Activations
without a linear relaxation (sigmoid, tanh, max-pool) use the half-gap
``(sigma(z + r) - sigma(z - r)) / 2``. ``r`` starts at ``eps`` for an Linf ball.

DoubleMargin (``000_…`` §4.2; Eq. 7-9 are lost from our copy, so this is our
reconstruction from its prose). ``s`` (here ``r``) is IBP's half-gap recursion centred
at ``z`` instead of at the interval midpoint; ``v`` (here ``d``) follows the drift of
that midpoint away from ``z``, to first order ``sigma'(z) d`` plus the second-order
term ``r^2/2 sigma''(z)``, whose second derivative is a finite difference with step
``gamma`` (a ReLU's is zero almost everywhere)::

    s' = (sigma(z + s) - sigma(z - s)) / 2
    v' = (sigma(z + v) - sigma(z - v)) / 2
         + s^2 / 2 * |sigma(z + gamma) - 2 sigma(z) + sigma(z - gamma)| / gamma^2

with ``s0 = eps``, ``v0 = 0``, and the range ``[z - s - v, z + s + v]``. So ``v`` stays 0
on a network that is linear around ``z`` (every finite difference vanishes), and
``s`` alone equals IBP's half-gap whenever IBP's midpoints are the nominal values
(e.g. no unstable neuron). For max-pool, whose second difference is not elementwise,
the second-order term is the exact midpoint drift ``(mp(z+s) + mp(z-s))/2 - mp(z)``.
Variants: ``"double-margin-s"`` (``s`` only) and ``"ibp+v"`` (IBP's half-gaps replace
``s`` and the range is ``[l - v, u + v]``).

Other input sets (L2, L1, :class:`~jaxcert.sets.L0Ball`): the first layer's margins
(every pre-activation reached from the input by affine ops only) are set to exactly half
the range of values it takes over the set (DoubleMargin: "for general p norms the
second layer margins are modified so that s1 is exactly half the range"), computed by
the linear domain, which is exact on an affine map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.domains import interval, linear
from jaxcert.errors import UnsupportedOperation
from jaxcert.graph import LINEAR_PRIMITIVES, Graph, Node, Ref, trace
from jaxcert.relaxations import relu_relaxation
from jaxcert.sets import Box, InputSet, LinfBall

Array = jax.Array

__all__ = [
    "MARGIN_METHODS",
    "MarginBounds",
    "margins",
    "propagate",
    "forward_values",
    "activation_fn",
    "center_of",
]

MARGIN_METHODS = (
    "singleprop-zero",
    "singleprop-fastlin",
    "singleprop-crown",
    "double-margin",
    "double-margin-s",
    "ibp+v",
)

# SingleProp variant -> lower ReLU slope of the relaxation it approximates.
_SINGLEPROP_SLOPE = {
    "singleprop-zero": "zero",
    "singleprop-fastlin": "fastlin",
    "singleprop-crown": "adaptive",
}


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MarginBounds:
    """Approximate output ranges from a margin domain: NOT a certificate.

    Attributes:
      nominal: ``(batch, *out)`` the network at the clean input (its logits).
      lower, upper: ``(batch, *out)`` the approximate range.
      intermediate: with ``return_intermediate``, ``{activation name: (lower, upper)}``
        of the activations' inputs; else None.
    """

    nominal: Array
    lower: Array
    upper: Array
    intermediate: dict[str, tuple[Array, Array]] | None = None


def center_of(input_set: InputSet) -> Array:
    """The clean input of a set: its centre (the middle of a box)."""
    if isinstance(input_set, Box):
        return (input_set.lower + input_set.upper) / 2
    center = getattr(input_set, "center", None)
    if center is None:
        raise TypeError(f"{type(input_set).__name__} has no center for margin propagation")
    return jnp.asarray(center)


def _initial_radius(input_set: InputSet, x: Array) -> Array:
    if isinstance(input_set, LinfBall):
        # The papers' v0 = eps * 1 (clipping is ignored, as they do).
        return jnp.broadcast_to(jnp.asarray(input_set.eps, x.dtype), x.shape)
    lo, hi = input_set.bounding_box()
    return (hi - lo) / 2


def _first_layer(graph: Graph) -> list[int]:
    """Pre-activation nodes that only affine ops separate from the input."""
    affine_from_input = {0}
    for node in graph.nodes[1:]:
        if node.op in LINEAR_PRIMITIVES and all(i in affine_from_input for i in node.inputs):
            affine_from_input.add(node.index)
    return [i for i in linear.preactivation_nodes(graph) if i in affine_from_input]


def activation_fn(node: Node) -> Callable[[Array], Array]:
    """The elementwise (or pooling) function of an activation node, on plain arrays."""
    if node.op == "relu":
        return jax.nn.relu
    if node.op == "leaky_relu":
        k = node.params["slope"]
        return lambda z: jnp.maximum(z, k * z)
    if node.op == "monotone":
        return node.fn  # type: ignore[return-value]
    if node.op in ("max_pool", "reduce_max"):
        return node.apply
    raise UnsupportedOperation(node.op, node.source, "no margin-propagation rule")


def _half_gap(sigma: Callable[[Array], Array], z: Array, r: Array) -> Array:
    return (sigma(z + r) - sigma(z - r)) / 2


def _relaxed_radius(node: Node, z: Array, r: Array, slope: str) -> Array:
    """SingleProp Eq. 6: the radius after a (leaky) ReLU relaxed on ``[z - r, z + r]``."""
    k = node.params.get("slope", 0.0)

    # Recomputed in the gradient rather than stored (as the linear domain's ReLU step).
    @jax.checkpoint
    def radius(z: Array, r: Array) -> Array:
        relax = relu_relaxation(z - r, z + r, slope, k)
        a_sum = relax.upper_slope + relax.lower_slope
        a_diff = relax.upper_slope - relax.lower_slope
        return a_sum / 2 * r + (relax.upper_bias - relax.lower_bias) / 2 + a_diff / 2 * z

    return radius(z, r)


def _second_order(node: Node, sigma: Callable[[Array], Array], z: Array, r: Array, gamma: float):
    """DoubleMargin's curvature term: ``r^2/2 |sigma''(z)|`` by finite differences."""
    if node.op in ("max_pool", "reduce_max"):
        # Not elementwise: the exact drift of the midpoint (>= 0: max is convex).
        return (sigma(z + r) + sigma(z - r)) / 2 - sigma(z)
    second = jnp.abs(sigma(z + gamma) - 2 * sigma(z) + sigma(z - gamma)) / gamma**2
    return r * r / 2 * second


def forward_values(graph: Graph, x: Array) -> list[Array]:
    """The value of every node of ``graph`` at the input ``x`` (a nominal forward pass)."""
    values: list[Any] = [x]
    for node in graph.nodes[1:]:
        if node.op in LINEAR_PRIMITIVES:
            values.append(
                node.apply(*(values[a.index] if isinstance(a, Ref) else a for a in node.args))
            )
        else:
            values.append(activation_fn(node)(values[node.inputs[0]]))
    return values


def propagate(
    graph: Graph,
    input_set: InputSet,
    method: str = "singleprop-zero",
    *,
    gamma: float = 0.1,
    chunk_size: int | None = None,
) -> tuple[list[Array], list[Array], list[Array] | None, list[interval.Interval] | None]:
    """Nominal values and margins of every node: ``(z, r, d or None, IBP intervals or None)``.

    ``d`` is DoubleMargin's second margin (None for SingleProp and ``double-margin-s``);
    the IBP intervals are computed for ``"ibp+v"`` only.
    """
    if method not in MARGIN_METHODS:
        raise ValueError(f"unknown margin method {method!r}; expected one of {MARGIN_METHODS}")
    if not gamma > 0:
        raise ValueError(f"gamma must be > 0, got {gamma}")
    x = center_of(input_set).astype(graph.nodes[0].dtype)
    ibp = interval.propagate(graph, *input_set.bounding_box()) if method == "ibp+v" else None
    exact: dict[int, Array] = {}
    if not isinstance(input_set, (LinfBall, Box)):
        ctx = linear.Context(graph, [None] * len(graph.nodes), linear.slope_chooser("adaptive"))
        for index in _first_layer(graph):
            lo, hi = linear.identity_bounds(ctx, input_set, index, chunk_size)
            exact[index] = (hi - lo) / 2
    with_drift = method in ("double-margin", "ibp+v")
    slope = _SINGLEPROP_SLOPE.get(method)

    z: list[Any] = [x]
    r: list[Any] = [_initial_radius(input_set, x)]
    d: list[Any] = [jnp.zeros_like(x)]
    for node in graph.nodes[1:]:
        if node.op in LINEAR_PRIMITIVES:

            def operands(values: list[Any], node: Node = node) -> list[Any]:
                return [values[a.index] if isinstance(a, Ref) else a for a in node.args]

            z_new = node.apply(*operands(z))
            r_new = interval.propagate_radius(node, operands(r))
            d_new = interval.propagate_radius(node, operands(d)) if with_drift else None
        else:
            sigma = activation_fn(node)
            (i,) = node.inputs
            z_in, d_in = z[i], d[i]
            r_in = (ibp[i][1] - ibp[i][0]) / 2 if ibp is not None else r[i]
            z_new = sigma(z_in)
            if slope is not None and node.op in ("relu", "leaky_relu"):
                r_new = _relaxed_radius(node, z_in, r_in, slope)
            else:
                r_new = _half_gap(sigma, z_in, r_in)
            d_new = None
            if with_drift:
                d_new = _half_gap(sigma, z_in, d_in) + _second_order(node, sigma, z_in, r_in, gamma)
        if node.index in exact:
            r_new = exact[node.index]
        z.append(z_new)
        r.append(r_new)
        d.append(d_new)
    return z, r, (d if with_drift else None), ibp


def _range(
    method: str, index: int, z: list[Array], r: list[Array], d: list[Array] | None, ibp: Any
) -> tuple[Array, Array]:
    if method == "ibp+v":
        lo, hi = ibp[index]
        return lo - d[index], hi + d[index]  # type: ignore[index]
    width = r[index] + d[index] if d is not None else r[index]
    return z[index] - width, z[index] + width


def margins(
    fn: Callable[[Array], Array],
    input_set: InputSet,
    method: str = "singleprop-zero",
    *,
    gamma: float = 0.1,
    return_intermediate: bool = False,
    chunk_size: int | None = None,
) -> MarginBounds:
    """Approximate output ranges of ``fn`` over ``input_set`` by margin propagation.

    One pass over the traced ``fn`` that computes the nominal output (use it as the
    logits: no separate forward pass is needed) and a margin. Not sound: see the
    module docstring; use :func:`jaxcert.bound` to certify.

    Args:
      fn: maps ``(batch, *x_shape)`` to ``(batch, *out)``; traced like
        :func:`jaxcert.bound`.
      input_set: the perturbation set; its centre is the clean input.
      method: one of :data:`MARGIN_METHODS`.
      gamma: DoubleMargin's finite-difference step.
      return_intermediate: also return the ranges at the activations' inputs.
      chunk_size: neurons per pass for the exact first layer of non-Linf sets.

    Returns:
      :class:`MarginBounds`.

    Example:
      >>> fn = lambda x: jax.nn.relu(x) @ jnp.array([[1.0], [-1.0]])
      >>> m = margins(fn, jaxcert.LinfBall(jnp.array([[0.05, 1.0]]), 0.1))
      >>> # the unstable first ReLU passes (0.05 + 0.1) / 2, the stable second 0.1
      >>> round(float(m.nominal[0, 0]), 6), round(float(m.upper[0, 0] - m.nominal[0, 0]), 6)
      (-0.95, 0.175)
    """
    dtype = jnp.result_type(input_set.bounding_box()[0])
    graph = trace(fn, input_set.shape, dtype)
    z, r, d, ibp = propagate(graph, input_set, method, gamma=gamma, chunk_size=chunk_size)
    lower, upper = _range(method, graph.output, z, r, d, ibp)
    inter = None
    if return_intermediate:
        inter = {}
        for node in graph.activations:
            inter[node.name or f"node_{node.index}"] = _range(method, node.inputs[0], z, r, d, ibp)
    return MarginBounds(z[graph.output], lower, upper, inter)
