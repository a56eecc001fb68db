"""Tracing a JAX function into a small DAG of bound-able operations.

``trace(fn, shape, dtype)`` runs ``jax.make_jaxpr`` on a batched input and flattens
the result into a list of :class:`Node` in topological order:

* every call primitive (``jit``/``pjit``, ``custom_jvp_call``, ``custom_vjp_call``,
  ``closed_call``, ``remat``, ...) is inlined; sub-jaxprs are found generically (any
  parameter that is a ``Jaxpr``/``ClosedJaxpr``), so a renamed call primitive still works;
* an equation whose operands are all constants (parameters, batch-norm statistics,
  ``rsqrt(var + eps)``...) is evaluated on the spot ("folded");
* activations are recognised as the user wrote them (``jax.nn.relu``,
  ``jax.nn.leaky_relu``, ``max(x, c)``, ``min(x, c)``, ``clamp``, monotone functions);
* linear primitives are checked to have their bounded operand(s) where a linear map
  allows it, so ``x * x`` is refused instead of silently mis-bounded.

Anything else raises :class:`~jaxcert.errors.UnsupportedOperation` with the primitive
and the user's source line.

Bounded values are ``Ref(i)`` (node ``i``); constants are concrete arrays or tracers of
an enclosing transformation (closed-over parameters under ``jax.grad``), so gradients
flow through the bounds.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.extend.core as jcore
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxcert.errors import UnsupportedOperation

Array = jax.Array

__all__ = ["Ref", "Node", "Graph", "trace", "ACTIVATION_OPS", "LINEAR_PRIMITIVES"]


@dataclasses.dataclass(frozen=True)
class Ref:
    """A reference to the bounded value computed by node ``index``."""

    index: int


# Linear primitives and where their bounded operands may be. "any": every operand may
# be bounded (sums, concatenations); "one": exactly one operand is bounded, the others
# are constants (products); a tuple: only these positions may be bounded.
LINEAR_PRIMITIVES: dict[str, str | tuple[int, ...]] = {
    # Weighted maps: the constant operand is a weight (IBP uses its absolute value).
    "dot_general": "one",
    "conv_general_dilated": "one",
    "mul": "one",
    "div": (0,),
    # Sums: several operands may be bounded (residual connections).
    "add": "any",
    "add_any": "any",
    "sub": "any",
    "neg": (0,),
    # Structural maps with non-negative coefficients.
    "concatenate": "any",
    "stack": "any",
    "split": (0,),
    "select_n": "cases",
    "pad": (0,),
    "reshape": (0,),
    "broadcast_in_dim": (0,),
    "transpose": (0,),
    "squeeze": (0,),
    "expand_dims": (0,),
    "reduce_sum": (0,),
    "reduce_window_sum": (0,),
    "cumsum": (0,),
    "slice": (0,),
    "dynamic_slice": (0,),
    "dynamic_update_slice": (0, 1),
    "gather": (0,),
    "rev": (0,),
    "copy": (0,),
    "copy_p": (0,),
    "convert_element_type": (0,),
    "sharding_constraint": (0,),
    "optimization_barrier": (0,),
}

# Linear primitives whose constant operands can add an offset (affine, not linear).
OFFSET_PRIMITIVES = frozenset(
    {"add", "add_any", "sub", "concatenate", "select_n", "pad", "dynamic_update_slice"}
)

# Elementwise non-decreasing primitives: interval endpoints map to endpoints.
MONOTONE_PRIMITIVES = frozenset(
    {
        "logistic",
        "tanh",
        "exp",
        "expm1",
        "log",
        "log1p",
        "sqrt",
        "cbrt",
        "erf",
        "atan",
        "asinh",
        "sinh",
    }
)

# ``jax.nn`` functions that are elementwise non-decreasing, recognised by their jit name.
MONOTONE_CALLS = frozenset(
    {
        "softplus",
        "sigmoid",
        "log_sigmoid",
        "elu",
        "celu",
        "selu",
        "soft_sign",
        "hard_tanh",
        "squareplus",
    }
)
# (relu6 and hard_sigmoid are left to inline: they lower to max/min with constants,
# which become ReLUs with proper linear relaxations.)

# Non-linear node kinds the domains relax.
ACTIVATION_OPS = frozenset({"relu", "leaky_relu", "monotone", "max_pool", "reduce_max"})

# Call-like primitives whose single sub-jaxpr must not be inlined (loops, branches).
_CONTROL_FLOW = frozenset({"scan", "while", "cond", "custom_linear_solve", "for", "pmap"})

_LIBRARY_DIRS = tuple(
    os.sep + name + os.sep for name in ("jax", "jaxlib", "flax", "optax", "chex", "contextlib")
)
_ENGINE_DIR = os.path.dirname(os.path.abspath(__file__))


def _is_user_frame(filename: str) -> bool:
    if filename.startswith(_ENGINE_DIR) and os.sep + "models" + os.sep not in filename:
        return False
    return not any(d in filename for d in _LIBRARY_DIRS) and not filename.startswith("<frozen")


def source_line(source_info: Any) -> str:
    """``file:line (function)`` of the innermost user frame that created an equation."""
    traceback = getattr(source_info, "traceback", None)
    frames = list(traceback.frames) if traceback is not None else []
    for frame in frames:
        if _is_user_frame(frame.file_name):
            return f"{frame.file_name}:{frame.line_num} ({frame.function_name})"
    if frames:
        frame = frames[-1]
        return f"{frame.file_name}:{frame.line_num} ({frame.function_name})"
    return "<unknown source>"


@dataclasses.dataclass(eq=False)
class Node:
    """One operation of the traced function.

    Attributes:
      index: position in :attr:`Graph.nodes` (topological order).
      op: the rule key: a primitive name, or ``"input"``, ``"relu"``, ``"leaky_relu"``
        (``params["slope"]``), ``"monotone"`` (``fn``), ``"max_pool"``, ``"reduce_max"``.
      args: operands: :class:`Ref` for bounded values, arrays for constants.
      shape: output shape ``(batch, *rest)``.
      dtype: output dtype.
      primitive: the JAX primitive to evaluate the op (None for synthetic ops).
      params: the primitive's bind parameters (or the synthetic op's parameters).
      fn: for ``"monotone"`` nodes, the elementwise non-decreasing function.
      name: a readable name for activation nodes (``"relu_0"``), else ``""``.
      source_info: where the user created this op (see :attr:`source`).
      output_index: for a multiple-result primitive (``split``), which result.
    """

    index: int
    op: str
    args: tuple[Any, ...]
    shape: tuple[int, ...]
    dtype: Any
    primitive: Any = None
    params: dict[str, Any] = dataclasses.field(default_factory=dict)
    fn: Callable[[Array], Array] | None = None
    name: str = ""
    source_info: Any = None
    output_index: int | None = None

    @property
    def source(self) -> str:
        return source_line(self.source_info)

    @property
    def bounded(self) -> tuple[int, ...]:
        """Positions of the bounded operands."""
        return tuple(i for i, a in enumerate(self.args) if isinstance(a, Ref))

    @property
    def inputs(self) -> tuple[int, ...]:
        """Indices of the nodes this node reads."""
        return tuple(a.index for a in self.args if isinstance(a, Ref))

    def apply(self, *args: Array) -> Array:
        """Evaluates the op with every operand given as an array (in ``args`` order)."""
        if self.fn is not None:
            return self.fn(args[0])
        out = self.primitive.bind(*args, **self.params)
        return out if self.output_index is None else out[self.output_index]

    def apply_bounded(self, *bounded: Array) -> Array:
        """Evaluates the op with its constants in place and ``bounded`` for the Refs."""
        it = iter(bounded)
        return self.apply(*(next(it) if isinstance(a, Ref) else a for a in self.args))


@dataclasses.dataclass(eq=False)
class Graph:
    """The traced function: ``nodes[0]`` is the input; ``nodes[output]`` the output."""

    nodes: list[Node]
    output: int

    @property
    def activations(self) -> list[Node]:
        """The non-linear nodes, in topological order."""
        return [n for n in self.nodes if n.op in ACTIVATION_OPS]

    def consumers(self) -> dict[int, list[int]]:
        """Map from node index to the indices of the nodes that read it."""
        out: dict[int, list[int]] = {n.index: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.index)
        return out


def _subjaxpr(eqn: Any) -> Any | None:
    """The one sub-jaxpr an inlinable call equation carries, or None."""
    if eqn.primitive.name in _CONTROL_FLOW:
        return None
    subs = [p for p in eqn.params.values() if isinstance(p, (jcore.Jaxpr, jcore.ClosedJaxpr))]
    if len(subs) != 1:
        return None
    sub = subs[0]
    jaxpr = sub.jaxpr if isinstance(sub, jcore.ClosedJaxpr) else sub
    if len(jaxpr.invars) != len(eqn.invars) or len(jaxpr.outvars) != len(eqn.outvars):
        return None
    return sub


def _bind_params(eqn: Any) -> tuple[list[Any], dict[str, Any]]:
    """``(subfuns, params)`` to re-bind an equation (JAX < 0.8 also returned subfuns)."""
    got = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict):
        return list(got[0]), got[1]
    return [], dict(got)


def _eval_eqn(eqn: Any, invals: Sequence[Any]) -> list[Any]:
    """Evaluates an equation on concrete (or outer-traced) operands, as eval_jaxpr does."""
    subfuns, params = _bind_params(eqn)
    with eqn.ctx.manager:
        out = eqn.primitive.bind(*subfuns, *invals, **params)
    return list(out) if eqn.primitive.multiple_results else [out]


def _call_fn(sub: Any, args: Sequence[Any], position: int) -> Callable[[Array], Array]:
    """``z -> sub(*args with z at position)``: a sub-jaxpr as a one-input function."""
    closed = sub if isinstance(sub, jcore.ClosedJaxpr) else jcore.ClosedJaxpr(sub, ())
    run = jcore.jaxpr_as_fun(closed)

    def fn(z: Array) -> Array:
        full = list(args)
        full[position] = z
        return run(*full)[0]

    return fn


_HIGHEST = (lax.Precision.HIGHEST, lax.Precision.HIGHEST)


class _Builder:
    """Walks a jaxpr (recursively), folding constants and emitting nodes."""

    def __init__(self, batch: int):
        self.nodes: list[Node] = []
        self.batch = batch
        self.counts: dict[str, int] = {}

    # -- emitting ---------------------------------------------------------------------
    def emit(
        self,
        op: str,
        args: Sequence[Any],
        shape: Sequence[int],
        dtype: Any,
        source_info: Any,
        primitive: Any = None,
        params: dict[str, Any] | None = None,
        fn: Callable[[Array], Array] | None = None,
        name_hint: str = "",
        output_index: int | None = None,
    ) -> Ref:
        shape = tuple(int(d) for d in shape)
        if not shape or shape[0] != self.batch:
            raise UnsupportedOperation(
                primitive.name if primitive is not None else op,
                source_line(source_info),
                f"its bounded result has shape {shape}, without the leading batch axis of "
                f"size {self.batch}; jaxcert bounds functions that treat examples "
                "independently",
            )
        name = ""
        if op in ACTIVATION_OPS:
            hint = name_hint or op
            name = f"{hint}_{self.counts.get(hint, 0)}"
            self.counts[hint] = self.counts.get(hint, 0) + 1
        node = Node(
            index=len(self.nodes),
            op=op,
            args=tuple(args),
            shape=shape,
            dtype=dtype,
            primitive=primitive,
            params=dict(params or {}),
            fn=fn,
            name=name,
            source_info=source_info,
            output_index=output_index,
        )
        self.nodes.append(node)
        return Ref(node.index)

    def emit_prim(self, prim: Any, args: Sequence[Any], source_info: Any, **params: Any) -> Ref:
        """Emits a linear primitive, working out its output shape abstractly."""
        avals = [
            jax.ShapeDtypeStruct(self.nodes[a.index].shape, self.nodes[a.index].dtype)
            if isinstance(a, Ref)
            else a
            for a in args
        ]
        dynamic = [i for i, a in enumerate(avals) if isinstance(a, jax.ShapeDtypeStruct)]

        def run(*xs: Any) -> Any:
            full = list(avals)
            for i, x in zip(dynamic, xs, strict=True):
                full[i] = x
            return prim.bind(*full, **params)

        out = jax.eval_shape(run, *(avals[i] for i in dynamic))
        return self.emit(prim.name, args, out.shape, out.dtype, source_info, prim, params)

    def shape_of(self, x: Any) -> tuple[int, ...]:
        return self.nodes[x.index].shape if isinstance(x, Ref) else tuple(jnp.shape(x))

    # -- rewriting activations ----------------------------------------------------------
    def relu(self, x: Ref, source_info: Any, slope: Any = 0.0) -> Ref:
        node = self.nodes[x.index]
        if _is_zero(slope):
            return self.emit("relu", [x], node.shape, node.dtype, source_info)
        params = {"slope": jnp.broadcast_to(jnp.asarray(slope, node.dtype), node.shape[1:])}
        return self.emit("leaky_relu", [x], node.shape, node.dtype, source_info, params=params)

    def max_const(self, x: Ref, c: Any, source_info: Any) -> Ref:
        """``max(x, c) = relu(x - c) + c``."""
        node = self.nodes[x.index]
        c = jnp.broadcast_to(jnp.asarray(c, node.dtype), node.shape)
        if _is_zero(c):
            return self.relu(x, source_info)
        shifted = self.emit_prim(lax.sub_p, [x, c], source_info)
        return self.emit_prim(lax.add_p, [self.relu(shifted, source_info), c], source_info)

    def min_const(self, x: Ref, c: Any, source_info: Any) -> Ref:
        """``min(x, c) = x - relu(x - c)``."""
        node = self.nodes[x.index]
        c = jnp.broadcast_to(jnp.asarray(c, node.dtype), node.shape)
        shifted = x if _is_zero(c) else self.emit_prim(lax.sub_p, [x, c], source_info)
        return self.emit_prim(lax.sub_p, [x, self.relu(shifted, source_info)], source_info)

    # -- walking ------------------------------------------------------------------------
    def run(self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Any]) -> list[Any]:
        env: dict[Any, Any] = {}

        def read(v: Any) -> Any:
            return v.val if isinstance(v, jcore.Literal) else env[v]

        for var, val in zip(jaxpr.constvars, consts, strict=True):
            env[var] = val
        for var, val in zip(jaxpr.invars, args, strict=True):
            env[var] = val
        for eqn in jaxpr.eqns:
            invals = [read(v) for v in eqn.invars]
            outvals = self.equation(eqn, invals)
            for var, val in zip(eqn.outvars, outvals, strict=True):
                if not isinstance(var, jcore.DropVar):
                    env[var] = val
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn: Any, invals: list[Any]) -> list[Any]:
        if not any(isinstance(v, Ref) for v in invals):
            return _eval_eqn(eqn, invals)
        sub = _subjaxpr(eqn)
        if sub is not None:
            call_name = eqn.params.get("name", "")
            named = self.named_call(call_name, sub, invals, eqn)
            if named is not None:
                return [named]
            if isinstance(sub, jcore.ClosedJaxpr):
                return self.run(sub.jaxpr, sub.consts, invals)
            return self.run(sub, [], invals)
        if eqn.primitive.multiple_results:
            return self.multiple_results(eqn, invals)
        return [self.primitive(eqn, invals)]

    def multiple_results(self, eqn: Any, invals: list[Any]) -> list[Ref]:
        """A linear primitive with several results (``split``): one node per result."""
        name = eqn.primitive.name
        if name not in LINEAR_PRIMITIVES:
            raise UnsupportedOperation(
                name, source_line(eqn.source_info), "no bound rule for this primitive"
            )
        bounded = [i for i, v in enumerate(invals) if isinstance(v, Ref)]
        self.check_linear(name, bounded, invals, eqn.source_info)
        _, params = _bind_params(eqn)
        return [
            self.emit(
                name,
                invals,
                var.aval.shape,
                var.aval.dtype,
                eqn.source_info,
                eqn.primitive,
                params,
                output_index=i,
            )
            for i, var in enumerate(eqn.outvars)
        ]

    def named_call(self, call_name: str, sub: Any, invals: list[Any], eqn: Any) -> Ref | None:
        """Recognises ``jax.nn`` activations by name; None to inline the call instead."""
        bounded = [i for i, v in enumerate(invals) if isinstance(v, Ref)]
        if len(bounded) != 1 or len(eqn.outvars) != 1:
            return None
        x = invals[bounded[0]]
        node = self.nodes[x.index]
        if tuple(eqn.outvars[0].aval.shape) != node.shape:
            return None
        if call_name == "relu":
            return self.relu(x, eqn.source_info)
        if call_name == "leaky_relu":
            fn = _call_fn(sub, invals, bounded[0])
            slope = -fn(-jnp.ones(node.shape, node.dtype))[0]
            if _is_concrete(slope) and not np.all((np.asarray(slope) >= 0) & (slope <= 1)):
                raise UnsupportedOperation(
                    "leaky_relu",
                    source_line(eqn.source_info),
                    "negative_slope must lie in [0, 1] (the function is then convex)",
                )
            return self.relu(x, eqn.source_info, slope)
        if call_name in MONOTONE_CALLS:
            fn = _call_fn(sub, invals, bounded[0])
            return self.emit(
                "monotone",
                [x],
                node.shape,
                node.dtype,
                eqn.source_info,
                fn=fn,
                name_hint=call_name,
            )
        return None

    def primitive(self, eqn: Any, invals: list[Any]) -> Ref:
        name = eqn.primitive.name
        src = eqn.source_info
        bounded = [i for i, v in enumerate(invals) if isinstance(v, Ref)]
        out_aval = eqn.outvars[0].aval
        _, params = _bind_params(eqn)

        if name in ("max", "min"):
            if len(bounded) == 2:
                raise UnsupportedOperation(
                    name, source_line(src), f"{name} of two bounded values has no rule"
                )
            x, c = invals[bounded[0]], invals[1 - bounded[0]]
            return self.max_const(x, c, src) if name == "max" else self.min_const(x, c, src)
        if name == "clamp":
            lo, x, hi = invals
            if bounded != [1]:
                raise UnsupportedOperation(name, source_line(src), "clamp limits must be constants")
            return self.min_const(self.max_const(x, lo, src), hi, src)
        if name in MONOTONE_PRIMITIVES:
            x = invals[0]
            node = self.nodes[x.index]
            prim = eqn.primitive

            def fn(z: Array, prim: Any = prim, params: dict[str, Any] = params) -> Array:
                return prim.bind(z, **params)

            return self.emit("monotone", [x], node.shape, node.dtype, src, fn=fn, name_hint=name)
        if name in ("reduce_window_max", "reduce_max"):
            if bounded != [0] or len(invals) != 1:
                raise UnsupportedOperation(name, source_line(src), "expected one bounded operand")
            op = "max_pool" if name == "reduce_window_max" else "reduce_max"
            return self.emit(op, invals, out_aval.shape, out_aval.dtype, src, eqn.primitive, params)
        if name in LINEAR_PRIMITIVES:
            self.check_linear(name, bounded, invals, src)
            if name in ("dot_general", "conv_general_dilated") and params.get("precision") is None:
                # TF32 matmuls on GPUs can break soundness: bound in full precision.
                params = {**params, "precision": _HIGHEST}
            if name == "convert_element_type" and not jnp.issubdtype(
                params["new_dtype"], jnp.floating
            ):
                raise UnsupportedOperation(
                    name, source_line(src), "conversion of a bounded value to a non-float type"
                )
            return self.emit(
                name, invals, out_aval.shape, out_aval.dtype, src, eqn.primitive, params
            )
        raise UnsupportedOperation(
            name,
            source_line(src),
            "no bound rule for this primitive with a bounded (input-dependent) operand",
        )

    def check_linear(self, name: str, bounded: list[int], invals: list[Any], src: Any) -> None:
        allowed = LINEAR_PRIMITIVES[name]
        if allowed == "any":
            return
        if allowed == "one":
            if len(bounded) > 1:
                raise UnsupportedOperation(
                    name,
                    source_line(src),
                    "product of two bounded values (both operands depend on the input); "
                    "only products with constants are linear",
                )
            return
        if allowed == "cases":
            if 0 in bounded:
                raise UnsupportedOperation(
                    name, source_line(src), "the selector depends on the input (a comparison)"
                )
            return
        bad = [i for i in bounded if i not in allowed]
        if bad:
            raise UnsupportedOperation(
                name,
                source_line(src),
                f"operand {bad[0]} depends on the input, where only a constant is linear",
            )


def _is_concrete(x: Any) -> bool:
    try:
        np.asarray(x)
        return True
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return False


def _is_zero(c: Any) -> bool:
    return _is_concrete(c) and bool(np.all(np.asarray(c) == 0))


def trace(fn: Callable[[Array], Array], shape: Sequence[int], dtype: Any) -> Graph:
    """Traces ``fn`` on an input of ``shape`` (``(batch, ...)``) into a :class:`Graph`.

    Example:
      >>> g = trace(lambda x: jax.nn.relu(x @ jnp.ones((3, 2))), (4, 3), jnp.float32)
      >>> [n.op for n in g.nodes]
      ['input', 'dot_general', 'relu']
    """
    shape = tuple(int(d) for d in shape)
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"the input must have a floating dtype, got {dtype}")
    closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(shape, dtype))
    if len(closed.jaxpr.outvars) != 1:
        raise ValueError(f"fn must return one array, got {len(closed.jaxpr.outvars)} outputs")
    builder = _Builder(batch=shape[0])
    builder.nodes.append(Node(index=0, op="input", args=(), shape=shape, dtype=dtype))
    (out,) = builder.run(closed.jaxpr, closed.consts, [Ref(0)])
    if not isinstance(out, Ref):
        raise ValueError("fn's output does not depend on its input: there is nothing to bound")
    return Graph(nodes=builder.nodes, output=out.index)
