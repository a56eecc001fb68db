"""Graph -> graph passes that turn a raw trace into the ops the domains bound.

Each rewriting pass is a table ``{op: rule}`` applied by :func:`rewrite`; a rule gets
the builder of the new graph, the old node and its operands (already rewritten) and
returns the new value. In order (:data:`PASSES`):

1. :func:`check_known`: every node is a registered op (:mod:`jaxcert.ops`) or something
   a later pass rewrites; anything else raises
   :class:`~jaxcert.errors.UnsupportedOperation` with the primitive and the user's line;
2. :data:`RECOGNISE_CALLS`: ``jax.nn.relu``, ``jax.nn.leaky_relu`` and the monotone
   ``jax.nn`` functions, recognised by name, become activation nodes;
3. :data:`REWRITE_MAX_MIN`: ``max(x, c) = relu(x - c) + c``, ``min(x, c) = c - relu(c - x)``
   and ``clamp`` (both), so they get proper linear relaxations; the max of two bounded
   values becomes a ``maximum`` node, their min ``-maximum(-x, -y)``;
4. :data:`RECOGNISE_MONOTONE`: monotone primitives (``tanh``, ``exp``, odd powers, ...),
   ``abs`` and even powers (``even_convex``), products of two bounded values
   (``product``) and ``reduce_window_max``/``reduce_max`` become activation nodes;
5. :data:`BATCH_FIRST`, :data:`FUSE_TRANSPOSES`, :func:`prune_dead`: a ``dot_general``
   that moves the batch axis (``x @ w`` with a batched 3-D ``w``, ``w @ x``) keeps it in
   front (a ``batch_first_dot`` node) and is followed by a transpose that restores the
   primitive's layout; consecutive transposes become one, so ``jnp.matmul``'s own
   transpose cancels it; unread nodes are dropped;
6. :func:`check_linear`: operands bounded only where the op is linear in them (``x * x``
   is refused), results keep the batch axis and a float type, and matrix products and
   convolutions are bound in full precision (TF32 can break soundness);
7. :func:`name_activations`: ``relu_0``, ``relu_1``, ``tanh_0``, ...
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcert import ops
from jaxcert.errors import UnsupportedOperation
from jaxcert.graph.ir import Graph, GraphBuilder, Node, Ref
from jaxcert.graph.source import source_line

__all__ = [
    "PASSES",
    "RECOGNISED_CALLS",
    "rewrite",
    "check_known",
    "check_linear",
    "name_activations",
    "prune_dead",
    "BATCH_FIRST",
    "FUSE_TRANSPOSES",
    "RECOGNISE_CALLS",
    "REWRITE_MAX_MIN",
    "RECOGNISE_MONOTONE",
]

RewriteRule = Callable[[GraphBuilder, Node, tuple[Any, ...]], Ref]
Pass = Callable[[Graph], Graph]

_HIGHEST = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)


def rewrite(graph: Graph, rules: Mapping[str, RewriteRule]) -> Graph:
    """``graph`` with each node whose op has a rule replaced by what the rule emits
    (other nodes are copied), renumbered in topological order.

    Example:
      >>> from jaxcert.graph.trace import trace_raw
      >>> g = trace_raw(lambda x: -x, (1, 2), jnp.float32, ())
      >>> double = lambda b, node, args: b.emit_prim(lax.mul_p, [args[0], 2.0], None)
      >>> [n.op for n in rewrite(g, {"neg": double}).nodes]
      ['input', 'mul']
    """
    builder = GraphBuilder(graph.nodes[0])
    refs: dict[int, Ref] = {0: Ref(0)}
    for node in graph.nodes[1:]:
        args = tuple(refs[a.index] if isinstance(a, Ref) else a for a in node.args)
        rule = rules.get(node.op)
        refs[node.index] = rule(builder, node, args) if rule else builder.copy(node, args)
    return builder.graph(refs[graph.output])


def _table_pass(rules: Mapping[str, RewriteRule]) -> Pass:
    return lambda graph: rewrite(graph, rules)


# ------------------------------------------------------------------ helpers


def _is_concrete(x: Any) -> bool:
    try:
        np.asarray(x)
        return True
    except Exception:  # an abstract tracer (ConcretizationTypeError and relatives)
        return False


def _is_zero(c: Any) -> bool:
    return _is_concrete(c) and bool(np.all(np.asarray(c) == 0))


def _relu(b: GraphBuilder, x: Ref, source_info: Any, slope: Any = 0.0) -> Ref:
    node = b.node(x)
    if _is_zero(slope):
        return b.emit("relu", [x], node.shape, node.dtype, source_info)
    params = {"slope": jnp.broadcast_to(jnp.asarray(slope, node.dtype), node.shape[1:])}
    return b.emit("leaky_relu", [x], node.shape, node.dtype, source_info, params=params)


def _infinite_limit(b: GraphBuilder, x: Ref, c: Any, sign: float, source_info: Any) -> bool:
    """Whether ``c`` is ``sign * inf`` everywhere (``max(x, -inf) = x``, as softmax has
    it); a constant infinite in some entries only has no ReLU form."""
    if not _is_concrete(c):
        return False
    values = np.asarray(c)
    if np.all(values == sign * np.inf):
        return True
    if np.any(np.isinf(values)):
        raise UnsupportedOperation(
            "max" if sign < 0 else "min",
            source_line(source_info),
            "a limit that is infinite in some entries only",
        )
    return False


def _max_const(b: GraphBuilder, x: Ref, c: Any, source_info: Any) -> Ref:
    """``max(x, c) = relu(x - c) + c``."""
    node = b.node(x)
    if _infinite_limit(b, x, c, -1.0, source_info):
        return x
    c = jnp.broadcast_to(jnp.asarray(c, node.dtype), node.shape)
    if _is_zero(c):
        return _relu(b, x, source_info)
    shifted = b.emit_prim(lax.sub_p, [x, c], source_info)
    return b.emit_prim(lax.add_p, [_relu(b, shifted, source_info), c], source_info)


def _min_const(b: GraphBuilder, x: Ref, c: Any, source_info: Any) -> Ref:
    """``min(x, c) = c - relu(c - x)``: ``x`` occurs once, so that IBP is exact (the form
    ``x - relu(x - c)`` subtracts two copies of ``x`` whose errors do not cancel)."""
    node = b.node(x)
    if _infinite_limit(b, x, c, 1.0, source_info):
        return x
    c = jnp.broadcast_to(jnp.asarray(c, node.dtype), node.shape)
    if _is_zero(c):
        negated = b.emit_prim(lax.neg_p, [x], source_info)
        return b.emit_prim(lax.neg_p, [_relu(b, negated, source_info)], source_info)
    shifted = b.emit_prim(lax.sub_p, [c, x], source_info)
    return b.emit_prim(lax.sub_p, [c, _relu(b, shifted, source_info)], source_info)


def _monotone(b: GraphBuilder, x: Ref, node: Node, function: str, fn: Any) -> Ref:
    return b.emit(
        "monotone",
        [x],
        node.shape,
        node.dtype,
        node.source_info,
        params={"function": function},
        fn=fn,
    )


# --------------------------------------------------------- 1. known operations


def check_known(graph: Graph) -> Graph:
    """Raises :class:`UnsupportedOperation` at the first node no pass or domain knows."""
    for node in graph.nodes[1:]:
        op = ops.OPS.get(node.op)
        if node.op not in _REWRITTEN and (op is None or op.kind == "monotone"):
            raise UnsupportedOperation(
                node.op,
                node.source,
                "no bound rule for this primitive with a bounded (input-dependent) operand",
            )
    return graph


# ------------------------------------------------------- 2. named jax.nn calls


def _relu_call(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    return _relu(b, args[0], node.source_info)


def _leaky_relu_call(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    assert node.fn is not None
    slope = -node.fn(-jnp.ones(node.shape, node.dtype))[0]
    if _is_concrete(slope) and not np.all((np.asarray(slope) >= 0) & (np.asarray(slope) <= 1)):
        raise UnsupportedOperation(
            "leaky_relu",
            node.source,
            "negative_slope must lie in [0, 1] (the function is then convex)",
        )
    return _relu(b, args[0], node.source_info, slope)


def _monotone_call(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    name = node.params["name"]
    return _monotone(b, args[0], node, name, node.fn)


def _clip_call(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    """``jnp.clip``: one ``clip`` node if both limits are finite constants; with one
    limit, the ReLU form of ``max(x, a)`` or ``min(x, b)`` (a ReLU the slope optimisers
    see)."""
    assert node.fn is not None
    a, c = (node.fn(jnp.full(node.shape, v, node.dtype)) for v in (-jnp.inf, jnp.inf))
    if not (_is_concrete(a) and _is_concrete(c)):
        return _monotone(b, args[0], node, "clip", node.fn)
    if np.all(np.isinf(np.asarray(a))):
        return _min_const(b, args[0], c, node.source_info)
    if np.all(np.isinf(np.asarray(c))):
        return _max_const(b, args[0], a, node.source_info)
    return _monotone(b, args[0], node, "clip", node.fn)


_CALL_RULES: dict[str, RewriteRule] = {
    "relu": _relu_call,
    "leaky_relu": _leaky_relu_call,
    **{op.name: _monotone_call for op in ops.OPS.values() if op.kind == "monotone" and op.call},
    "clip": _clip_call,
}
RECOGNISED_CALLS = frozenset(_CALL_RULES)


def _call(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    return _CALL_RULES[node.params["name"]](b, node, args)


RECOGNISE_CALLS: dict[str, RewriteRule] = {"call": _call}


# ------------------------------------------------------ 3. max / min / clamp


def _maximum(b: GraphBuilder, node: Node, x: Ref, y: Ref) -> Ref:
    return b.emit("maximum", [x, y], node.shape, node.dtype, node.source_info)


def _max(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    if len(node.bounded) == 2:  # maxout: a node of its own (exact IBP, relu's lines)
        return _maximum(b, node, *args)
    x, c = args[node.bounded[0]], args[1 - node.bounded[0]]
    return _max_const(b, x, c, node.source_info)


def _min(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    if len(node.bounded) == 2:  # min(x, y) = -max(-x, -y)
        src = node.source_info
        neg = [b.emit_prim(lax.neg_p, [a], src) for a in args]
        return b.emit_prim(lax.neg_p, [_maximum(b, node, *neg)], src)
    x, c = args[node.bounded[0]], args[1 - node.bounded[0]]
    return _min_const(b, x, c, node.source_info)


def _clamp(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    lo, x, hi = args
    if node.bounded != (1,):
        raise UnsupportedOperation(node.op, node.source, "clamp limits must be constants")
    src = node.source_info
    return _min_const(b, _max_const(b, x, lo, src), hi, src)


REWRITE_MAX_MIN: dict[str, RewriteRule] = {"max": _max, "min": _min, "clamp": _clamp}


# ------------------------------------------------ 4. monotone primitives, max


def _monotone_primitive(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    prim, params = node.primitive, node.params

    def fn(z: Any, prim: Any = prim, params: dict[str, Any] = params) -> Any:
        return prim.bind(z, **params)

    return _monotone(b, args[0], node, node.op, fn)


def _max_reduction(op: str) -> RewriteRule:
    def rule(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
        if node.bounded != (0,) or len(args) != 1:
            raise UnsupportedOperation(node.op, node.source, "expected one bounded operand")
        return b.copy(node, args, op=op)

    return rule


def _abs(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    return _even_convex(b, args[0], node, "abs", lax.abs)


def _even_convex(b: GraphBuilder, x: Ref, node: Node, function: str, fn: Any) -> Ref:
    params = {"function": function}
    return b.emit(
        "even_convex", [x], node.shape, node.dtype, node.source_info, params=params, fn=fn
    )


def _integer_pow(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    """``z ** k``: even ``k`` is convex and smallest at 0, odd ``k >= 3`` is monotone,
    negative ``k`` the reciprocal of ``z ** |k|``."""
    k = int(node.params["y"])
    if k == 1:
        return args[0]
    if k == 0:
        raise UnsupportedOperation("integer_pow", node.source, "z ** 0 is constant: no rule")
    if k < 0:  # 1 / z ** |k|
        inner = args[0] if k == -1 else _integer_power(b, args[0], node, -k)
        return _reciprocal(b, inner, node.source_info)
    return _integer_power(b, args[0], node, k)


def _integer_power(b: GraphBuilder, x: Ref, node: Node, k: int) -> Ref:
    def fn(z: Any, k: int = k) -> Any:
        return lax.integer_pow(z, k)

    if k % 2 == 0:
        return _even_convex(b, x, node, "integer_pow", fn)
    return _monotone(b, x, node, "odd_pow", fn)


def _to_shape(b: GraphBuilder, x: Ref, shape: tuple[int, ...], source_info: Any) -> Ref:
    """``x`` broadcast to ``shape`` (same rank, size-1 axes stretched) if it differs."""
    if b.node(x).shape == shape:
        return x
    dims = tuple(range(len(shape)))
    return b.emit_prim(
        lax.broadcast_in_dim_p,
        [x],
        source_info,
        shape=shape,
        broadcast_dimensions=dims,
        sharding=None,
    )


def _product(b: GraphBuilder, node: Node, x: Ref, y: Ref) -> Ref:
    """``x * y`` of two bounded values, both broadcast to the product's shape first (the
    product's rules pair equal-shaped operands)."""
    x, y = (_to_shape(b, v, node.shape, node.source_info) for v in (x, y))
    return b.emit("product", [x, y], node.shape, node.dtype, node.source_info)


def _mul(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    """A product of two bounded values becomes a ``product`` node; others stay linear."""
    if len(node.bounded) < 2:
        return b.copy(node, args)
    return _product(b, node, *args)


# mul's bind parameters in this JAX version (``out_dtype`` since 0.9).
_MUL_PARAMS = dict(jax.make_jaxpr(lax.mul)(1.0, 1.0).eqns[0].params)


def _reciprocal(b: GraphBuilder, y: Ref, source_info: Any) -> Ref:
    node = b.node(y)
    return b.emit("reciprocal", [y], node.shape, node.dtype, source_info)


def _div(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    """``x / y`` with ``y`` bounded is ``x * (1 / y)``: a ``reciprocal`` node, then a
    product (``x`` bounded) or a scaling (``x`` constant)."""
    if 1 not in node.bounded:
        return b.copy(node, args)
    inverse = _reciprocal(b, args[1], node.source_info)
    if 0 in node.bounded:
        return _product(b, node, args[0], inverse)
    inverse = _to_shape(b, inverse, node.shape, node.source_info)
    return b.emit_prim(lax.mul_p, [args[0], inverse], node.source_info, **_MUL_PARAMS)


def _rsqrt(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    return b.emit("rsqrt", [args[0]], node.shape, node.dtype, node.source_info)


def _square(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    return _even_convex(b, args[0], node, "square", lax.square)


def _dot_general(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    """A matrix product of two bounded values becomes a ``bilinear`` node (in full
    precision); with one bounded operand it stays linear."""
    if len(node.bounded) < 2:
        return b.copy(node, args)
    params = _full_precision(node)
    return b.emit("bilinear", list(args), node.shape, node.dtype, node.source_info, params=params)


def _identity(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    # stop_gradient changes derivatives, not values: bounds go straight through (its
    # transpose would be zero, which the backward passes must not see).
    return args[0]


def _erfc(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    """``erfc(z) = 1 - erf(z)`` (decreasing): a monotone ``erf`` node, then an affine map.
    Exact GELU, ``z * erfc(-z / sqrt 2) / 2``, then bounds as a product."""

    def erf(z: Any) -> Any:
        return lax.erf(z)

    inner = _monotone(b, args[0], node, "erf", erf)
    one = jnp.ones(node.shape, node.dtype)
    return b.emit_prim(lax.sub_p, [one, inner], node.source_info)


def _periodic(phase: float) -> RewriteRule:
    """``sin`` (phase 0) and ``cos`` (phase pi / 2, ``cos z = sin(z + pi / 2)``)."""

    def rule(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
        prim, params = node.primitive, node.params

        def fn(z: Any, prim: Any = prim, params: dict[str, Any] = params) -> Any:
            return prim.bind(z, **params)

        params_out = {"phase": phase, "function": node.op}
        return b.emit(
            "periodic",
            [args[0]],
            node.shape,
            node.dtype,
            node.source_info,
            params=params_out,
            fn=fn,
        )

    return rule


RECOGNISE_MONOTONE: dict[str, RewriteRule] = {
    "sin": _periodic(0.0),
    "cos": _periodic(math.pi / 2),
    "abs": _abs,
    "erfc": _erfc,
    "mul": _mul,
    "div": _div,
    "rsqrt": _rsqrt,
    "square": _square,
    "dot_general": _dot_general,
    "stop_gradient": _identity,
    "integer_pow": _integer_pow,
    **{
        op.name: _monotone_primitive
        for op in ops.OPS.values()
        if op.kind == "monotone" and not op.call
    },
    "reduce_window_max": _max_reduction("max_pool"),
    "reduce_max": _max_reduction("reduce_max"),
}


# ------------------------------------------------- 5. the batch axis in front


def _dot_batch_axis(node: Node, shapes: list[tuple[int, ...]]) -> int | None:
    """Where a dot_general puts its one bounded operand's axis 0 (None: it sums over it).

    Its output axes are the batch axes, then the lhs's free axes, then the rhs's:
    ``(B, 4, 5, 4) @ (4, 4, 3)`` batches over the 4 and yields ``(4, B, 5, 3)``.
    """
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = node.params["dimension_numbers"]
    (side,) = node.bounded
    contract, batch = (lhs_contract, lhs_batch) if side == 0 else (rhs_contract, rhs_batch)
    if 0 in contract:
        return None
    if 0 in batch:
        return list(batch).index(0)
    lhs_free = len(shapes[0]) - len(lhs_contract) - len(lhs_batch)
    return len(lhs_batch) + (0 if side == 0 else lhs_free)


def _batch_first_dot(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    """A dot_general that moves the batch axis becomes a ``batch_first_dot`` (the axis
    kept in front) and a transpose to the primitive's layout, which the transpose that
    ``jnp.matmul`` emits after it cancels (:func:`_fuse_transposes`)."""
    new = dataclasses.replace(node, args=args)
    axis = _dot_batch_axis(new, _operand_shapes(b, new)) if len(new.bounded) == 1 else None
    if not axis:  # 0 (nothing to do) or None (refused later, by the batch rule)
        return b.copy(node, args)
    shape = node.shape
    moved = (shape[axis], *shape[:axis], *shape[axis + 1 :])
    params = {**node.params, "batch_axis": axis}
    first = b.emit("batch_first_dot", args, moved, node.dtype, node.source_info, params=params)
    back = (*range(1, axis + 1), 0, *range(axis + 1, len(shape)))
    return b.emit_prim(lax.transpose_p, [first], node.source_info, permutation=back)


def _fuse_transposes(b: GraphBuilder, node: Node, args: tuple[Any, ...]) -> Ref:
    """``transpose(transpose(x, p), q)`` is one transpose (none if the identity)."""
    (x,) = args
    inner = b.node(x)
    if inner.op != "transpose":
        return b.copy(node, args)
    perm = tuple(inner.params["permutation"][j] for j in node.params["permutation"])
    if perm == tuple(range(len(perm))):
        return inner.args[0]
    return b.emit_prim(lax.transpose_p, [inner.args[0]], node.source_info, permutation=perm)


def prune_dead(graph: Graph) -> Graph:
    """``graph`` without the nodes its output does not read (e.g. a transpose that
    :func:`_fuse_transposes` bypassed), so that no check refuses an unused node."""
    live = {graph.output}
    for node in reversed(graph.nodes):
        if node.index in live:
            live.update(node.inputs)
    builder = GraphBuilder(graph.nodes[0])
    refs: dict[int, Ref] = {0: Ref(0)}
    for node in graph.nodes[1:]:
        if node.index in live:
            args = tuple(refs[a.index] if isinstance(a, Ref) else a for a in node.args)
            refs[node.index] = builder.copy(node, args)
    return builder.graph(refs[graph.output])


BATCH_FIRST: dict[str, RewriteRule] = {"dot_general": _batch_first_dot}
FUSE_TRANSPOSES: dict[str, RewriteRule] = {"transpose": _fuse_transposes}


# --------------------------------------------------------- 6. linear checks


def _operands_error(node: Node, op: ops.Op) -> str | None:
    """Why ``node``'s bounded operands break the op's linearity, or None."""
    bounded = node.bounded
    if op.operands == "any":
        return None
    if op.operands == "one":
        if len(bounded) > 1:
            return (
                "product of two bounded values (both operands depend on the input); "
                "only products with constants are linear"
            )
        return None
    if op.operands == "cases":
        return "the selector depends on the input (a comparison)" if 0 in bounded else None
    bad = [i for i in bounded if i not in op.operands]
    if bad:
        return f"operand {bad[0]} depends on the input, where only a constant is linear"
    return None


def _full_precision(node: Node) -> dict[str, Any]:
    if "precision" in node.params and node.params["precision"] is None:
        return {**node.params, "precision": _HIGHEST}
    return node.params


def _operand_shapes(graph: GraphBuilder | Graph, node: Node) -> list[tuple[int, ...]]:
    return [
        graph.nodes[a.index].shape if isinstance(a, Ref) else tuple(jnp.shape(a)) for a in node.args
    ]


def check_linear(graph: Graph) -> Graph:
    """Checks every node's operands, dtype and batch axis; forces full precision.

    Examples must stay independent: each node's output row ``b`` may depend on row ``b``
    of its bounded operands only (the op registry's ``batch`` rules), since the engine
    bounds every example as if it were alone.
    """
    batch = graph.nodes[0].shape[0]
    builder = GraphBuilder(graph.nodes[0])
    for node in graph.nodes[1:]:
        op = ops.OPS[node.op]
        if op.kind in ops.LINEAR_KINDS:
            reason = _operands_error(node, op)
            if reason is not None:
                raise UnsupportedOperation(node.op, node.source, reason)
            if not jnp.issubdtype(node.dtype, jnp.floating):
                raise UnsupportedOperation(
                    node.op, node.source, "conversion of a bounded value to a non-float type"
                )
        if jnp.finfo(node.dtype).bits < 32:
            raise UnsupportedOperation(
                node.op,
                node.source,
                f"a bounded value in {jnp.dtype(node.dtype).name}: rounding that coarse can "
                "break soundness; compute in float32 (e.g. cast the parameters)",
            )
        mixing = op.batch(node, _operand_shapes(graph, node)) if op.batch and node.shape else None
        if mixing is not None:
            raise UnsupportedOperation(
                node.op,
                node.source,
                f"{mixing}, so examples would not be bounded independently; jaxcert bounds "
                "functions that treat examples independently",
            )
        if not node.shape or node.shape[0] != batch:
            raise UnsupportedOperation(
                node.op,
                node.source,
                f"its bounded result has shape {node.shape}, without the leading batch axis "
                f"of size {batch}; jaxcert bounds functions that treat examples independently",
            )
        builder.copy(node, node.args, params=_full_precision(node))
    return builder.graph(Ref(graph.output))


# --------------------------------------------------------------- 7. names


def name_activations(graph: Graph) -> Graph:
    """Names activation nodes ``<kind>_<k>`` in order (monotone ones by their function)."""
    counts: dict[str, int] = {}
    for node in graph.activations:
        hint = node.params.get("function", node.op)
        node.name = f"{hint}_{counts.get(hint, 0)}"
        counts[hint] = counts.get(hint, 0) + 1
    return graph


# Ops that exist only until one of the passes above rewrites them.
_REWRITTEN = frozenset({*RECOGNISE_CALLS, *REWRITE_MAX_MIN, *RECOGNISE_MONOTONE})

PASSES: tuple[Pass, ...] = (
    check_known,
    _table_pass(RECOGNISE_CALLS),
    _table_pass(REWRITE_MAX_MIN),
    _table_pass(RECOGNISE_MONOTONE),
    _table_pass(BATCH_FIRST),
    _table_pass(FUSE_TRANSPOSES),
    prune_dead,
    check_linear,
    name_activations,
)
