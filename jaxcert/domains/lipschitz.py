"""BCP: ball + box constraint propagation for L2 sets (thesis §3.2, App. B).

Every node carries two sound outer bounds of its values over the input set:

* a ball ``B2(z, rho)`` around the nominal value ``z``, its radius multiplied by each
  layer's Lipschitz constant (ReLU, leaky ReLU and max-pool are 1-Lipschitz; residual
  sums add radii, concatenations add them in quadrature);
* a box ``[lo, hi]``: the intersection of interval arithmetic on the previous box
  (Eq. 3.2.7) with the box circumscribing the image of the previous ball (Eq. 3.2.6:
  ``z' +/- rho ||W_i||_2`` for an affine op, ``sigma(z) +/- L_sigma rho`` for an
  activation). The thesis' Eq. 3.2.8 prints max/min the other way round; the
  intersection is what its text and Figure 3.1 describe, and what is sound and tight.

The output specification is then minimised over ``ball ∩ box`` at the last layer that
feeds it affinely (Eq. 3.2.10-3.2.11) by the thesis' iterative solver
(:func:`ball_box_minimum`). Where the output is not an affine function of a single
node, each node's box is used instead (still sound).

Lipschitz constants of weighted layers (dense, convolution) come either from the power
iteration (an *estimate*, from below: training, thesis B.2.2) or from
:func:`certified_lipschitz` (an upper bound: the exact spectral norm of the layer's
matrix where it is small enough to build, else ``sqrt(||A||_1 ||A||_inf)``), which is
what certificates use. Other linear ops (reshapes, pads, sums over axes, per-channel
scalings) always use ``sqrt(||A||_1 ||A||_inf)``, exact for them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcert import ops
from jaxcert.domains import interval, linear
from jaxcert.domains.backward import Context, concretize_interval, slope_chooser
from jaxcert.errors import UnsupportedOperation
from jaxcert.graph import Graph, Node, Ref, trace
from jaxcert.sets import InputSet

Array = jax.Array

__all__ = [
    "WEIGHTED_OPS",
    "unit_graph",
    "certified_lipschitz",
    "power_iteration",
    "bcp_lower",
    "ball_box_minimum",
    "check_supported",
    "RULES",
]

# Linear ops whose constant is a weight matrix: their spectral norm is estimated (power
# iteration) or certified; other linear ops get 1 (they only move entries) or a bound.
WEIGHTED_OPS = tuple(op.name for op in ops.graph_ops() if op.lipschitz == "spectral")
# Dense matrices up to this many entries are built to get their exact spectral norm.
_MAX_EXACT_ENTRIES = 1 << 24


def unit_graph(fn: Callable[[Array], Array], input_set: InputSet) -> Graph:
    """``fn`` traced on one example: the per-example linear maps, whatever the batch."""
    dtype = jnp.result_type(input_set.bounding_box()[0])
    try:
        return trace(fn, (1, *input_set.shape[1:]), dtype)
    # The batched trace succeeded, so a failure here is particular to a batch of 1: a
    # reshape to a fixed batch size, an axis of size 1 that JAX squeezes away.
    except (TypeError, ValueError, UnsupportedOperation) as err:
        raise ValueError(
            "BCP and LMT trace fn on one example to bound its layers' Lipschitz "
            f"constants, and fn fails on a batch of 1 ({err}); make fn independent of the "
            "batch size, or pass lipschitz= constants"
        ) from err


def _single_operand(node: Node) -> bool:
    return ops.is_linear(node.op) and len(node.bounded) == 1


def _linear_part(node: Node) -> Callable[[Array], Array]:
    """``x -> op(x) - op(0)``: the op's linear map on its bounded operand."""
    (i,) = node.bounded

    def f(x: Array) -> Array:
        args = [x if k == i else a for k, a in enumerate(node.args)]
        zero = [jnp.zeros_like(x) if k == i else a for k, a in enumerate(node.args)]
        return node.apply(*args) - node.apply(*zero)

    return f


def _abs_map(node: Node) -> Callable[[Array], Array]:
    """The op with ``|weight|`` and zero offsets: ``|A|`` applied to a vector."""
    (i,) = node.bounded

    def f(x: Array) -> Array:
        return interval.propagate_radius(
            node, [x if k == i else a for k, a in enumerate(node.args)]
        )

    return f


def _holder_bound(node: Node, in_shape: tuple[int, ...], dtype: Any) -> Array:
    """``sqrt(||A||_1 ||A||_inf) >= ||A||_2`` from two passes of ``|A|``."""
    abs_map = _abs_map(node)
    ones_in = jnp.ones(in_shape, dtype)
    row_sums, transpose = jax.vjp(abs_map, ones_in)
    (col_sums,) = transpose(jnp.ones_like(row_sums))
    return _safe_sqrt(jnp.max(row_sums) * jnp.max(col_sums))


def _in_shape(graph: Graph, node: Node) -> tuple[int, ...]:
    (i,) = node.bounded
    return graph.nodes[node.args[i].index].shape


def _linear_nodes(graph: Graph):
    """``(node, bounded operand shape)`` of every single-operand linear node."""
    for node in graph.nodes[1:]:
        if _single_operand(node):
            yield node, _in_shape(graph, node)


def _unweighted_constant(node: Node, in_shape: tuple[int, ...]) -> Array:
    """1 for maps that only move entries; the Hölder bound for the rest."""
    if ops.OPS[node.op].lipschitz == "moves":
        return jnp.ones((), node.dtype)
    return _holder_bound(node, in_shape, node.dtype)


def certified_lipschitz(graph: Graph) -> dict[int, Array]:
    """Upper bounds of the L2 Lipschitz constant of every single-operand linear node.

    ``graph`` is a one-example trace (:func:`unit_graph`). Weighted layers whose matrix
    has at most 2^24 entries get their exact spectral norm (times ``1 + 1e-5`` for the
    SVD's rounding); every node also gets the Hölder bound, and the smaller is kept.
    """
    out: dict[int, Array] = {}
    for node, in_shape in _linear_nodes(graph):
        bound = _unweighted_constant(node, in_shape)
        n_in, n_out = math.prod(in_shape), math.prod(node.shape)
        spectral = ops.OPS[node.op].lipschitz == "spectral"
        if spectral and n_in * n_out <= _MAX_EXACT_ENTRIES:
            f = _linear_part(node)
            basis = jnp.eye(n_in, dtype=node.dtype).reshape((n_in, *in_shape))
            matrix = jax.vmap(f)(basis).reshape(n_in, n_out)
            exact = jnp.linalg.norm(matrix, ord=2) * (1 + 1e-5)
            bound = jnp.minimum(bound, exact)
        out[node.index] = bound
    return out


def power_iteration(
    graph: Graph, vectors: dict[str, Array] | None, key: Array, iters: int = 1
) -> tuple[dict[int, Array], dict[str, Array]]:
    """Power-iteration estimates of the weighted layers' spectral norms (thesis Alg. 2-3).

    Args:
      graph: a one-example trace (:func:`unit_graph`).
      vectors: the previous right singular vectors by node index (as strings), or None
        to start from random ones drawn from ``key``.
      iters: iterations (1 per training step as in the thesis).

    Returns:
      ``(constants, vectors)``: estimates (from below) for the weighted nodes, Hölder
      bounds for the other linear nodes, and the updated vectors to keep in the
      training state. The vectors are constants of the loss (``stop_gradient``); the
      estimate ``v . A u`` carries the gradient to the weights.
    """
    vectors = dict(vectors or {})
    out: dict[int, Array] = {}
    keys = jax.random.split(key, len(graph.nodes))
    for node, in_shape in _linear_nodes(graph):
        k = keys[node.index]
        if node.op not in WEIGHTED_OPS:
            out[node.index] = _unweighted_constant(node, in_shape)
            continue
        f = _linear_part(node)
        name = str(node.index)
        u = vectors.get(name)
        if u is None:
            u = jax.random.normal(k, in_shape, node.dtype)
        u = lax.stop_gradient(u / jnp.linalg.norm(u))
        for _ in range(iters):
            w, transpose = jax.vjp(f, u)
            v = w / jnp.maximum(jnp.linalg.norm(w), 1e-12)
            (u_next,) = transpose(v)
            u = lax.stop_gradient(u_next / jnp.maximum(jnp.linalg.norm(u_next), 1e-12))
        w = f(u)
        v = lax.stop_gradient(w / jnp.maximum(jnp.linalg.norm(w), 1e-12))
        out[node.index] = jnp.sum(v * w)
        vectors[name] = u
    return out, vectors


def _safe_sqrt(x: Array) -> Array:
    """``sqrt(max(x, 0))`` with a zero (not NaN) gradient at 0."""
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), 0)


def _norm(x: Array, keepdims: bool = True) -> Array:
    return _safe_sqrt(jnp.sum(x * x, axis=-1, keepdims=keepdims))


def _ball_minimizer(c: Array, z: Array, rho: Array) -> Array:
    norm = _norm(c)
    return z - rho * jnp.where(norm > 0, c / jnp.where(norm > 0, norm, 1), 0)


def _solver_step(
    p: Array, clipped: Array, z: Array, rho: Array, lo: Array, hi: Array
) -> tuple[Array, Array, Array]:
    """One round of Eq. 3.2.12: clip what left the box, stretch the rest to the sphere."""
    out = (p < lo) | (p > hi)
    clipped = clipped | out
    p_box = jnp.clip(p, lo, hi)
    used = jnp.sum(jnp.where(clipped, (p_box - z) ** 2, 0), axis=-1, keepdims=True)
    free = jnp.sum(jnp.where(clipped, 0, (p - z) ** 2), axis=-1, keepdims=True)
    room = _safe_sqrt(rho**2 - used)
    eta = jnp.where(free > 0, room / jnp.where(free > 0, _safe_sqrt(free), 1), 1)
    return jnp.where(clipped, p_box, z + eta * (p - z)), clipped, jnp.any(out)


def _clipped_set(c: Array, z: Array, rho: Array, lo: Array, hi: Array) -> Array:
    """The coordinates clipped when the rounds stop changing (at most ``n`` rounds)."""
    n = c.shape[-1]

    def cond(state):
        _, _, changed, count = state
        return changed & (count <= n)

    def body(state):
        p, clipped, _, count = state
        p, clipped, changed = _solver_step(p, clipped, z, rho, lo, hi)
        return p, clipped, changed, count + 1

    init = (_ball_minimizer(c, z, rho), jnp.zeros(c.shape, bool), jnp.array(True), 0)
    return lax.while_loop(cond, body, init)[1]


def _dual_value(c: Array, z: Array, rho: Array, lo: Array, hi: Array, t: Array) -> Array:
    """A lower bound of ``min c . p`` over ball ∩ box for any step ``t > 0`` (weak duality).

    With the ball's multiplier ``lambda = 1 / t``, the Lagrangian
    ``c . p + (||p - z||^2 - rho^2) / (2 t)`` is separable over the box, minimised by
    ``p = clip(z - t c, lo, hi)``: its value never exceeds the constrained minimum, and
    equals it at the optimal ``t`` (the problem is convex and ``z`` lies in the box). For
    ``t = inf`` (no free coordinate) it is the box's minimum, the ball dropped; for
    ``t = 0`` (``rho = 0``) the value at ``z``, the only point.
    """
    usable = jnp.isfinite(t) & (t > 0)
    t_safe = jnp.where(usable, t, 1.0)  # (the other branches never divide by t)
    p = jnp.clip(z - t_safe * c, lo, hi)
    lagrangian = jnp.sum(c * p, axis=-1, keepdims=True) + (
        jnp.sum((p - z) ** 2, axis=-1, keepdims=True) - rho**2
    ) / (2 * t_safe)
    box_minimum = jnp.sum(c * jnp.where(c > 0, lo, hi), axis=-1, keepdims=True)
    at_center = jnp.sum(c * z, axis=-1, keepdims=True)  # t = 0: a ball of radius 0
    value = jnp.where(usable, lagrangian, jnp.where(t > 0, box_minimum, at_center))
    return value[..., 0]


def _step_of(c: Array, z: Array, rho: Array, lo: Array, hi: Array, clipped: Array) -> Array:
    """The step ``t`` of ``p = z - t c`` on the free coordinates that puts ``p`` on the
    sphere, the ``clipped`` ones sitting on the box side facing ``-c`` (Prop. 3.2.1's form);
    ``inf`` when no coordinate is free."""
    side = jnp.where(c > 0, lo, hi)
    used = jnp.sum(jnp.where(clipped, (side - z) ** 2, 0), axis=-1, keepdims=True)
    c_norm = _norm(jnp.where(clipped, 0, c))
    room = _safe_sqrt(rho**2 - used)
    return jnp.where(c_norm > 0, room / jnp.where(c_norm > 0, c_norm, 1), jnp.inf)


def ball_box_minimum(
    c: Array, z: Array, rho: Array, lo: Array, hi: Array, iters: int | None = None
) -> Array:
    """``min c . p`` over ``||p - z||_2 <= rho`` and ``lo <= p <= hi`` (thesis Eq. 3.2.11),
    or a lower bound of it.

    The thesis' iterative solver: start at the ball's minimiser ``z - rho c / ||c||``,
    then repeatedly clip the coordinates that leave the box and stretch the others back
    onto the sphere (Eq. 3.2.12). Clipped coordinates stay clipped, so it ends after at
    most ``n`` rounds with the clipped set of the optimum (Proposition 3.2.1: the
    minimiser has the form ``clip(z - t c)``), whose value is computed in closed form.
    ``iters=None`` runs to convergence (certificates). Training may cap the rounds (10 on
    MNIST, 1 on CIFAR in the thesis); a capped solver's point can be feasible but not
    optimal, whose value is *above* the minimum -- not a bound -- so the capped form
    returns the dual value (:func:`_dual_value`) at the step ``t`` of the partial clipped
    set instead: never above the minimum, equal to it once the set is complete.

    Args:
      c: ``(..., n)`` objective; z: ``(..., n)`` the ball's centre (inside the box);
      rho: ``(...)`` radius; lo, hi: ``(..., n)`` the box.
      iters: rounds of the solver (None: to convergence).

    Returns:
      ``(...)`` the minimum (``iters=None``) or a lower bound of it.

    Example:
      >>> c, z = jnp.array([1.0, 1.0]), jnp.zeros(2)
      >>> lo, hi = -jnp.array([0.1, 5.0]), jnp.ones(2) * 5
      >>> float(ball_box_minimum(c, z, jnp.array(1.0), lo, hi))
      -1.0949...
      >>> float(ball_box_minimum(c, z, jnp.array(1.0), lo, hi, iters=1))  # the same, here
      -1.0949...
    """
    rho = rho[..., None]
    sg = lax.stop_gradient
    if iters is None:
        # Find which coordinates end clipped with the loop (not differentiable), then
        # the optimum in closed form from that set (differentiable): clipped
        # coordinates sit on the box side facing -c, the others move along -c until
        # the sphere.
        clipped = _clipped_set(sg(c), sg(z), sg(rho), sg(lo), sg(hi))
        side = jnp.where(c > 0, lo, hi)
        t = _step_of(c, z, rho, lo, hi, clipped)
        p = jnp.where(clipped, side, z - jnp.where(jnp.isfinite(t), t, 0.0) * c)
        # Feasible by construction up to rounding: clip what rounding pushed out.
        return jnp.sum(c * jnp.clip(p, lo, hi), axis=-1)
    p, clipped = _ball_minimizer(c, z, rho), jnp.zeros(c.shape, bool)
    for _ in range(iters):
        p, clipped, _ = _solver_step(p, clipped, z, rho, lo, hi)
    # Any step gives a sound value: the rounds only choose a good one (a constant).
    t = sg(_step_of(c, z, rho, lo, hi, sg(clipped)))
    return _dual_value(c, z, rho, lo, hi, t)


def check_supported(graph: Graph) -> None:
    """Raises :class:`UnsupportedOperation` for a node BCP has no rule or Lipschitz
    constant for (before any constant is computed)."""
    for node in graph.nodes[1:]:
        rule = RULES[node.op]
        if isinstance(rule, ops.Unsupported):
            rule(node)
        if not ops.is_linear(node.op):
            _activation_lipschitz(node)


def _activation_lipschitz(node: Node) -> float:
    """The registry's Lipschitz constant of an activation node (a number, or computed
    from the node's parameters)."""
    rule = ops.OPS[node.op].lipschitz
    value = rule(node) if callable(rule) else rule
    if not isinstance(value, float):
        what = node.params.get("function", node.op)
        raise UnsupportedOperation(
            node.op, node.source, f"no Lipschitz constant for BCP ({what} has no global one)"
        )
    return value


def _row_norms(node: Node, in_shape: tuple[int, ...], dtype: Any) -> Array:
    """``||A_i||_2`` for every output ``i`` of a single-operand linear node."""
    (i,) = node.bounded
    squared = []
    for k, a in enumerate(node.args):
        if k == i:
            squared.append(jnp.ones(in_shape, dtype))
        elif ops.OPS[node.op].kind == "weighted":
            squared.append(a * a)
        else:
            squared.append(a)
    return _safe_sqrt(interval.propagate_radius(node, squared))


def _per_example(rho: Array, like: Array) -> Array:
    return rho.reshape((-1,) + (1,) * (like.ndim - 1))


# (node, nominal operands, radii of the bounded operands, constants, graph)
#   -> (nominal value, ball radius (batch,), box half-width around the nominal value)
Rule = Callable[[Node, list[Any], list[Array], dict[int, Array], Graph], tuple[Array, Array, Array]]


def _linear_rule(node, z_ops, radii, constants, graph) -> tuple[Array, Array, Array]:
    z_new = node.apply(*z_ops)
    if len(radii) == 1:
        (r,) = radii
        r_new = constants[node.index] * r
        in_shape = graph.nodes[node.inputs[0]].shape
        return z_new, r_new, _row_norms(node, in_shape, node.dtype) * _per_example(r, z_new)
    if ops.OPS[node.op].disjoint:  # e.g. concatenation: radii add in quadrature
        r_new = _safe_sqrt(sum(r * r for r in radii))
    else:  # sums and other multi-operand maps: triangle inequality
        r_new = sum(radii)
    return z_new, r_new, _per_example(r_new, z_new)


def _activation_rule(node, z_ops, radii, constants, graph) -> tuple[Array, Array, Array]:
    z_new = node.apply(*z_ops)
    r_new = _activation_lipschitz(node) * radii[0]
    return z_new, r_new, _per_example(r_new, z_new)


RULES: dict[str, Rule] = ops.rule_table(
    "lipschitz",
    {
        "weighted": _linear_rule,
        "sum": _linear_rule,
        "structural": _linear_rule,
        "activation": _activation_rule,
    },
    unsupported={
        "reciprocal": "1 / z has a pole at 0: no global Lipschitz constant",
        "rsqrt": "1 / sqrt(z) has a pole at 0: no global Lipschitz constant",
        "bilinear": "a matrix product of two bounded values has no global Lipschitz constant",
        "product": "a product of two bounded values has no global Lipschitz constant",
        "maximum": "the ball rule takes one bounded operand; the max of two has two",
    },
)


def propagate(
    graph: Graph, input_set: InputSet, constants: dict[int, Array]
) -> tuple[list[Array], list[Array], list[tuple[Array, Array]]]:
    """Nominal values, ball radii ``(batch,)`` and boxes of every node."""
    x, rho0 = input_set.enclosing_l2_ball()
    z: list[Any] = [x]
    rho: list[Any] = [rho0]
    boxes: list[Any] = [input_set.bounding_box()]
    for node in graph.nodes[1:]:
        ia_lo, ia_hi = interval.propagate_node(node, boxes)
        z_ops = [z[a.index] if isinstance(a, Ref) else a for a in node.args]
        radii = [rho[a.index] for a in node.args if isinstance(a, Ref)]
        z_new, r_new, half = RULES[node.op](node, z_ops, radii, constants, graph)
        lo = jnp.maximum(ia_lo, z_new - half)
        hi = jnp.minimum(ia_hi, z_new + half)
        z.append(z_new)
        rho.append(r_new)
        boxes.append((lo, hi))
    return z, rho, boxes


def bcp_lower(
    graph: Graph,
    input_set: InputSet,
    A: Array,
    constants: dict[int, Array],
    solver_iters: int | None = None,
    use_box: bool = True,
) -> tuple[Array, list[tuple[Array, Array]]]:
    """Lower bounds of ``A . fn(x')`` over the set by BCP; also every node's box.

    Args:
      graph: the batched trace of ``fn``.
      A: ``(batch, n_spec, *out_shape[1:])`` specification at the output.
      constants: Lipschitz constants by node index (:func:`certified_lipschitz` for a
        certificate, :func:`power_iteration` in training).
      solver_iters: rounds of :func:`ball_box_minimum` (None: to convergence).
      use_box: False gives the ball alone at the last layer: the global Lipschitz
        margin of LMT (``c . z - rho ||c||``), the baseline BCP improves on.
    """
    z, rho, boxes = propagate(graph, input_set, constants)
    stops = linear.activation_stops(graph)
    # Walk the affine tail back from the output; stop at activations without
    # concretising (zero-width boxes), to read the coefficients A_p at each of them.
    zero_boxes = [
        (jnp.zeros_like(b[0]), jnp.zeros_like(b[0])) if n.index in stops else b
        for n, b in zip(graph.nodes, boxes, strict=True)
    ]
    ctx = Context(graph, zero_boxes, slope_chooser("adaptive"))
    A_in, bias, kept = linear.coefficients(ctx, graph.output, A, stop=stops, keep=stops)
    if A_in is None and len(kept) == 1:
        ((p, A_p),) = kept.items()
        batch, n_spec = A_p.shape[:2]
        c = A_p.reshape(batch, n_spec, -1)
        flat = lambda a: jnp.broadcast_to(a.reshape(batch, 1, -1), c.shape)  # noqa: E731
        lo, hi = boxes[p]
        if not use_box:
            value = jnp.sum(c * flat(z[p]), -1) - rho[p][:, None] * _norm(c, keepdims=False)
            return bias + value, boxes
        value = ball_box_minimum(
            c,
            flat(z[p]),
            jnp.broadcast_to(rho[p][:, None], (batch, n_spec)),
            flat(lo),
            flat(hi),
            solver_iters,
        )
        return bias + value, boxes
    # Several nodes (or the input) feed the output affinely: their boxes, soundly.
    lower = bias
    for index, A_node in kept.items():
        lower = lower + concretize_interval(A_node, boxes[index])
    if A_in is not None:
        lower = lower + input_set.concretize(A_in)[0]
    return lower, boxes
