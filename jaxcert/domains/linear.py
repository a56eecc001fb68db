"""Dense backward rules: the CROWN family (CROWN, Fast-Lin, CROWN-IBP, CAP-IBP).

The rule table of the backward core (:mod:`jaxcert.domains.backward`) for
coefficients ``A`` over whole feature maps, derived from the op registry:

* affine ops: the transpose of the op, from ``jax.vjp`` vmapped over the spec axis
  (no hand-written transposed convolutions), plus ``A . op(0)`` for ops that add an
  offset; convolutions merge the spec axis into the batch for one transposed
  convolution;
* (leaky) ReLU: the :mod:`jaxcert.relaxations` line picked by the sign of ``A``;
* other non-decreasing activations: tangent and chord lines by their curvature
  (:func:`jaxcert.relaxations.curved_relaxation`: sigmoid, tanh, exp, log, ...), and
  the constant lines ``f(l) <= f(z) <= f(u)`` for those of unknown curvature;
* ``|z|`` and even powers: a tangent below, the chord above;
* products of two bounded values: McCormick's planes; their max: ``y + relu(x - y)``;
* max-pool: ``max(window) >= z[argmax of the lower bounds]`` below, ``max(u)`` above.

Only lower bounds are computed; an upper bound is minus the lower bound of ``-A``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Collection

import jax
import jax.numpy as jnp
from jax import lax

from jaxcert import ops
from jaxcert.domains import interval
from jaxcert.domains.backward import (
    BackwardRule,
    Context,
    backward_coefficients,
    sum_rest,
    transpose_merged,
)
from jaxcert.graph import Graph, Node, Ref
from jaxcert.relaxations import (
    CLIPS,
    CURVATURE,
    Relaxation,
    constant_relaxation,
    curved_relaxation,
    monotone_relaxation,
    relu_relaxation,
)
from jaxcert.sets import InputSet

Array = jax.Array
Contributions = tuple[list[tuple[int, Array]], Array | None]

__all__ = ["RULES", "SLOPED_OPS", "relu_nodes", "coefficients", "lower_bound", "activation_stops"]


def _affine_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    refs = [a for a in node.args if isinstance(a, Ref)]
    zeros = [
        jnp.zeros(ctx.graph.nodes[r.index].shape, ctx.graph.nodes[r.index].dtype) for r in refs
    ]
    offset, transpose = jax.vjp(node.apply_bounded, *zeros)
    grads = jax.vmap(transpose, in_axes=1, out_axes=1)(A)
    bias = sum_rest(A * offset[:, None]) if ops.OPS[node.op].offset else None
    return [(r.index, g) for r, g in zip(refs, grads, strict=True)], bias


def _conv_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    """A convolution of a bounded input by a constant kernel: the spec axis is merged
    into the batch (convolutions take any batch), one transposed convolution for all."""
    if (
        node.bounded != (0,)
        or isinstance(node.args[1], Ref)
        or node.params.get("batch_group_count", 1) != 1  # groups split the batch axis
    ):
        return _affine_rule(node, A, ctx)
    (i,) = node.inputs
    in_shape = ctx.graph.nodes[i].shape
    batch, n_spec = A.shape[:2]
    flat_A = A.reshape(batch * n_spec, *A.shape[2:])
    A_in = transpose_merged(node.apply, flat_A, node.args[1], tuple(in_shape[1:]))
    return [(i, A_in.reshape(batch, n_spec, *in_shape[1:]))], None


def _relaxation_rule(
    relax: Relaxation, A: Array, skip_lower_bias: bool = False
) -> tuple[Array, Array]:
    """``A`` through ``y = f(z)``: the lower line where ``A > 0``, the upper where ``A < 0``."""
    positive = A > 0
    slope = jnp.where(positive, relax.lower_slope[:, None], relax.upper_slope[:, None])
    if skip_lower_bias:
        offset = jnp.where(positive, 0, relax.upper_bias[:, None])
    else:
        offset = jnp.where(positive, relax.lower_bias[:, None], relax.upper_bias[:, None])
    return A * slope, sum_rest(A * offset)


def _relu_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    (z,) = node.inputs
    lo, hi = ctx.interval(z)
    k = node.params.get("slope", 0.0)
    choice = ctx.lower_slope(node)

    # Recomputed in the gradient: storing the lines and their derivatives would keep
    # several activation-sized arrays per layer alive (DM-medium CROWN-IBP with loss
    # fusion: 186 -> 157 MB of temporaries per step, at no measurable cost in time).
    @jax.checkpoint
    def step(A: Array, lo: Array, hi: Array) -> tuple[Array, Array]:
        relax = relu_relaxation(lo, hi, choice, k)
        return _relaxation_rule(relax, A, skip_lower_bias=True)

    A_z, bias = step(A, lo, hi)
    return [(z, A_z)], bias


def _monotone_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    (z,) = node.inputs
    lo, hi = ctx.interval(z)
    function = node.params["function"]
    if function not in CLIPS and function not in CURVATURE:
        # Constant lines f(l) <= f(z) <= f(u): sound for any non-decreasing function.
        _, bias = _relaxation_rule(constant_relaxation(node.apply(lo), node.apply(hi)), A)
        return [], bias
    assert node.fn is not None  # monotone nodes carry their function
    A_z, bias = _relaxation_rule(monotone_relaxation(function, node.fn, lo, hi), A)
    return [(z, A_z)], bias


def _even_convex_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    # |z| and z ** 2k: convex, so a tangent below and the chord above, with the true
    # range (minimum at 0) as the constant lines.
    (z,) = node.inputs
    lo, hi = ctx.interval(z)
    assert node.fn is not None
    value_range = interval.even_convex_range(node, lo, hi)
    relax = curved_relaxation("convex", node.fn, lo, hi, value_range)
    A_z, bias = _relaxation_rule(relax, A)
    return [(z, A_z)], bias


def _product_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    """``z = x y`` by McCormick's planes (as auto_LiRPA picks them): below,
    ``z >= l_y x + l_x y - l_x l_y``; above, ``z <= u_y x + l_x y - l_x u_y``. Each is
    ``(x - l_x)(y - l_y) >= 0`` or ``(x - l_x)(u_y - y) >= 0`` rearranged."""
    x, y = node.inputs
    (lx, _), (ly, uy) = ctx.interval(x), ctx.interval(y)
    A_pos, A_neg = jnp.maximum(A, 0), jnp.minimum(A, 0)
    A_x = A_pos * ly[:, None] + A_neg * uy[:, None]
    A_y = A * lx[:, None]
    bias = -sum_rest(A_pos * (lx * ly)[:, None] + A_neg * (lx * uy)[:, None])
    return [(x, A_x), (y, A_y)], bias


def _maximum_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    """``max(x, y) = y + relu(x - y)``, with the ReLU lines on ``x - y``'s interval
    ``[l_x - u_y, u_x - l_y]``: exact (``x`` or ``y``) where the intervals do not overlap."""
    x, y = node.inputs
    (lx, ux), (ly, uy) = ctx.interval(x), ctx.interval(y)
    relax = relu_relaxation(lx - uy, ux - ly, "adaptive")
    A_d, bias = _relaxation_rule(relax, A, skip_lower_bias=True)
    return [(x, A_d), (y, A - A_d)], bias


def _inverse(z: Array) -> Array:
    return 1 / z


def _pole_lines(fn: Callable[[Array], Array], lo: Array, hi: Array, two_sided: bool) -> Relaxation:
    """Lines of a function decreasing on each side of a pole at 0 (``1 / z``; ``1 / sqrt z``
    on ``z > 0`` only): convex for ``z > 0``, concave for ``z < 0`` (``two_sided``), and
    the unbounded lines ``-inf <= f <= inf`` across the pole."""
    positive, negative = lo > 0, (hi < 0) & two_sided
    plo, phi = jnp.where(positive, lo, 1), jnp.where(positive, hi, 2)
    right = curved_relaxation("convex", fn, plo, phi, value_range=(fn(phi), fn(plo)))
    nlo, nhi = jnp.where(negative, lo, -2), jnp.where(negative, hi, -1)
    left = curved_relaxation("concave", fn, nlo, nhi, value_range=(fn(nhi), fn(nlo)))
    zero, inf = jnp.zeros_like(lo), jnp.full_like(lo, jnp.inf)
    # Below the pole (one-sided functions): at least f(u) where defined, else nothing.
    floor = jnp.where(hi > 0, fn(jnp.where(hi > 0, hi, 1)), -inf) if not two_sided else -inf
    across = Relaxation(zero, floor, zero, inf)
    return Relaxation(
        *(
            jnp.where(positive, r, jnp.where(negative, c, a))
            for r, c, a in zip(right, left, across, strict=True)
        )
    )


def _pole_rule(fn: Callable[[Array], Array], two_sided: bool) -> BackwardRule:
    def rule(node: Node, A: Array, ctx: Context) -> Contributions:
        (z,) = node.inputs
        lo, hi = ctx.interval(z)
        relax = _pole_lines(fn, lo, hi, two_sided)
        positive = A > 0
        slope = jnp.where(positive, relax.lower_slope[:, None], relax.upper_slope[:, None])
        offset = jnp.where(positive, relax.lower_bias[:, None], relax.upper_bias[:, None])
        # An infinite line with a zero coefficient contributes nothing (not 0 * inf).
        return [(z, A * slope)], sum_rest(jnp.where(A == 0, 0, A * offset))

    return rule


def _periodic_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    """sin / cos: convex or concave lines (by curvature) where ``[l, u]`` lies between two
    consecutive zeros of ``sin(z + phase)`` (concave where it is positive), else the
    constant lines of its range."""
    (z,) = node.inputs
    lo, hi = ctx.interval(z)
    assert node.fn is not None
    value_range = interval.periodic_range(node, lo, hi)
    phase = node.params["phase"]
    half = jnp.floor((lo + phase) / math.pi)
    one_piece = hi + phase <= (half + 1) * math.pi
    concave = jnp.mod(half, 2) == 0
    # Each curvature's lines where it applies (a safe stand-in interval elsewhere).
    stand_in = (jnp.where(one_piece, lo, 0.0), jnp.where(one_piece, hi, 1.0))
    cave = curved_relaxation("concave", node.fn, *stand_in, value_range=value_range)
    vex = curved_relaxation("convex", node.fn, *stand_in, value_range=value_range)
    zero = jnp.zeros_like(lo)
    flat = Relaxation(zero, value_range[0], zero, value_range[1])
    relax = Relaxation(
        *(
            jnp.where(one_piece, jnp.where(concave, c, v), f)
            for c, v, f in zip(cave, vex, flat, strict=True)
        )
    )
    A_z, bias = _relaxation_rule(relax, A)
    return [(z, A_z)], bias


def _bilinear_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    """A matrix product ``z = D(x, y)`` of two bounded values by McCormick's planes on
    every term ``x_k y_k`` (as :func:`_product_rule` picks them), summed by ``D`` itself:
    ``D(x, l_y) + D(l_x, y) - D(l_x, l_y) <= z <= D(x, u_y) + D(l_x, y) - D(l_x, u_y)``."""
    x, y = node.inputs
    (lx, _), (ly, uy) = ctx.interval(x), ctx.interval(y)
    A_pos, A_neg = jnp.maximum(A, 0), jnp.minimum(A, 0)

    def through_x(rows: Array, other: Array) -> Array:
        _, transpose = jax.vjp(lambda v: node.apply(v, other), lx)
        return jax.vmap(lambda g: transpose(g)[0], in_axes=1, out_axes=1)(rows)

    _, transpose_y = jax.vjp(lambda v: node.apply(lx, v), ly)
    A_x = through_x(A_pos, ly) + through_x(A_neg, uy)
    A_y = jax.vmap(lambda g: transpose_y(g)[0], in_axes=1, out_axes=1)(A)
    bias = -sum_rest(A_pos * node.apply(lx, ly)[:, None] + A_neg * node.apply(lx, uy)[:, None])
    return [(x, A_x), (y, A_y)], bias


def _max_rule(node: Node, A: Array, ctx: Context) -> Contributions:
    # Below: the max is at least the element that is largest at the lower bounds, a
    # linear selection whose transpose is the op's own VJP at that point (ties share
    # the cotangent, a convex combination, still below the max). Above: max(u).
    (z,) = node.inputs
    z_lo, _ = ctx.interval(z)
    _, hi = ctx.interval(node.index)
    A_pos, A_neg = jnp.maximum(A, 0), jnp.minimum(A, 0)
    _, select_t = jax.vjp(node.apply, z_lo)
    (A_z,) = jax.vmap(select_t, in_axes=1, out_axes=1)(A_pos)
    return [(z, A_z)], sum_rest(A_neg * hi[:, None])


RULES: dict[str, BackwardRule] = ops.rule_table(
    "linear",
    {
        "weighted": _affine_rule,
        "sum": _affine_rule,
        "structural": _affine_rule,
        "monotone": _monotone_rule,
    },
    overrides={
        "conv_general_dilated": _conv_rule,
        "relu": _relu_rule,
        "leaky_relu": _relu_rule,
        "max_pool": _max_rule,
        "reduce_max": _max_rule,
        "even_convex": _even_convex_rule,
        "product": _product_rule,
        "maximum": _maximum_rule,
        "reciprocal": _pole_rule(_inverse, two_sided=True),
        "rsqrt": _pole_rule(lax.rsqrt, two_sided=False),
        "bilinear": _bilinear_rule,
        "periodic": _periodic_rule,
    },
)


# The ops whose rule relaxes with a lower slope to choose ((leaky) ReLUs).
SLOPED_OPS = frozenset(name for name, rule in RULES.items() if rule is _relu_rule)


def relu_nodes(graph: Graph) -> list[Node]:
    """The nodes with a lower slope to choose (the (leaky) ReLUs), in order."""
    return [n for n in graph.nodes if n.op in SLOPED_OPS]


# ``coefficients(ctx, target, A, stop=(), keep=())``: the backward core's
# :func:`~jaxcert.domains.backward.backward_coefficients` with the dense rules.
coefficients = functools.partial(backward_coefficients, RULES)


def lower_bound(
    ctx: Context, input_set: InputSet, target: int, A: Array, stop: Collection[int] = ()
) -> Array:
    """Lower bound of ``A . y_target`` over the input set: ``(batch, n_spec)``.

    Example:
      >>> from jaxcert.domains.backward import slope_chooser
      >>> from jaxcert.graph import trace
      >>> g = trace(lambda x: 2.0 * x, (1, 1), jnp.float32)
      >>> ctx = Context(g, [None] * 2, slope_chooser("adaptive"))
      >>> box = jaxcert.Box(jnp.zeros((1, 1)), jnp.ones((1, 1)))
      >>> lower_bound(ctx, box, 1, -jnp.ones((1, 1, 1)))
      Array([[-2.]], dtype=float32)
    """
    A_in, bias, _ = coefficients(ctx, target, A, stop)
    if A_in is None:
        return bias
    return input_set.concretize(A_in, bias)[0]


def activation_stops(graph: Graph) -> frozenset[int]:
    """The nodes IBP's elision stops at: every non-affine node (and the input)."""
    return frozenset(n.index for n in graph.nodes if not ops.is_linear(n.op)) - {0}
