"""The tracer: a JAX function's jaxpr flattened into raw graph nodes.

``trace_raw(fn, shape, dtype, keep_calls)`` runs ``jax.make_jaxpr`` on a batched input
and walks the result:

* every equation whose operands are all constants (parameters, batch-norm statistics,
  ``rsqrt(var + eps)``...) is evaluated on the spot ("folded");
* every call primitive (``jit``, ``custom_jvp_call``, ``custom_vjp_call``,
  ``closed_call``, ``remat``, ...) is inlined; sub-jaxprs are found generically (any
  parameter that is a ``Jaxpr``/``ClosedJaxpr``), so a renamed call primitive still
  works. Calls named in ``keep_calls`` that map one bounded operand elementwise become
  a single ``"call"`` node instead (``params["name"]``, ``fn``), for the recognition
  passes (:mod:`jaxcert.graph.passes`) to turn into activations;
* every other equation with a bounded operand becomes a node named after its primitive,
  whatever the primitive: the passes decide what is supported.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from typing import Any

import jax
import jax.extend.core as jcore

from jaxcert.graph.ir import Graph, GraphBuilder, Node, Ref
from jaxcert.graph.source import has_user_frame

Array = jax.Array

__all__ = ["trace_raw"]

# Call-like primitives whose single sub-jaxpr must not be inlined (loops, branches).
_CONTROL_FLOW = frozenset({"scan", "while", "cond", "custom_linear_solve", "for", "pmap"})


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


def bind_params(eqn: Any) -> tuple[list[Any], dict[str, Any]]:
    """``(subfuns, params)`` to re-bind an equation (JAX < 0.8 also returned subfuns)."""
    got = eqn.primitive.get_bind_params(eqn.params)
    if isinstance(got, tuple) and len(got) == 2 and isinstance(got[1], dict):
        return list(got[0]), got[1]
    return [], dict(got)


def _eval_eqn(eqn: Any, invals: Sequence[Any]) -> list[Any]:
    """Evaluates an equation on concrete (or outer-traced) operands, as eval_jaxpr does."""
    subfuns, params = bind_params(eqn)
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


class _Walker:
    """Walks a jaxpr (recursively), folding constants and emitting raw nodes."""

    def __init__(self, builder: GraphBuilder, keep_calls: Collection[str]):
        self.builder = builder
        self.keep_calls = keep_calls

    def run(
        self, jaxpr: Any, consts: Sequence[Any], args: Sequence[Any], call_site: Any = None
    ) -> list[Any]:
        """Walks ``jaxpr``; ``call_site`` is the source of the call being inlined: its
        equations are attributed to it when their own traceback holds no user frame (the
        insides of a library function such as ``jnp.take``)."""
        env: dict[Any, Any] = {}

        def read(v: Any) -> Any:
            return v.val if isinstance(v, jcore.Literal) else env[v]

        for var, val in zip(jaxpr.constvars, consts, strict=True):
            env[var] = val
        for var, val in zip(jaxpr.invars, args, strict=True):
            env[var] = val
        for eqn in jaxpr.eqns:
            if call_site is not None and not has_user_frame(eqn.source_info):
                eqn = eqn.replace(source_info=call_site)
            outvals = self.equation(eqn, [read(v) for v in eqn.invars])
            for var, val in zip(eqn.outvars, outvals, strict=True):
                if not isinstance(var, jcore.DropVar):
                    env[var] = val
        return [read(v) for v in jaxpr.outvars]

    def equation(self, eqn: Any, invals: list[Any]) -> list[Any]:
        if not any(isinstance(v, Ref) for v in invals):
            return _eval_eqn(eqn, invals)
        sub = _subjaxpr(eqn)
        if sub is not None:
            kept = self.kept_call(sub, invals, eqn)
            if kept is not None:
                return [kept]
            site = eqn.source_info if has_user_frame(eqn.source_info) else None
            if isinstance(sub, jcore.ClosedJaxpr):
                return self.run(sub.jaxpr, sub.consts, invals, site)
            return self.run(sub, [], invals, site)
        _, params = bind_params(eqn)
        refs = [
            self.builder.emit(
                eqn.primitive.name,
                invals,
                var.aval.shape,
                var.aval.dtype,
                eqn.source_info,
                eqn.primitive,
                params,
                output_index=i if eqn.primitive.multiple_results else None,
            )
            for i, var in enumerate(eqn.outvars)
        ]
        return refs

    def kept_call(self, sub: Any, invals: list[Any], eqn: Any) -> Ref | None:
        """A ``"call"`` node for a named elementwise call of one bounded operand."""
        name = eqn.params.get("name", "")
        bounded = [i for i, v in enumerate(invals) if isinstance(v, Ref)]
        if name not in self.keep_calls or len(bounded) != 1 or len(eqn.outvars) != 1:
            return None
        x = invals[bounded[0]]
        node = self.builder.node(x)
        if tuple(eqn.outvars[0].aval.shape) != node.shape:
            return None
        return self.builder.emit(
            "call",
            [x],
            node.shape,
            node.dtype,
            eqn.source_info,
            params={"name": name},
            fn=_call_fn(sub, invals, bounded[0]),
        )


def trace_raw(
    fn: Callable[[Array], Array], shape: Sequence[int], dtype: Any, keep_calls: Collection[str]
) -> Graph:
    """Traces ``fn`` on an input of ``shape`` into a raw :class:`Graph` (no checks).

    Example:
      >>> g = trace_raw(lambda x: jnp.sin(x) * 2.0, (1, 3), jnp.float32, keep_calls=())
      >>> [n.op for n in g.nodes]
      ['input', 'sin', 'mul']
    """
    shape = tuple(int(d) for d in shape)
    closed = jax.make_jaxpr(fn)(jax.ShapeDtypeStruct(shape, dtype))
    if len(closed.jaxpr.outvars) != 1:
        raise ValueError(f"fn must return one array, got {len(closed.jaxpr.outvars)} outputs")
    builder = GraphBuilder(Node(index=0, op="input", args=(), shape=shape, dtype=dtype))
    (out,) = _Walker(builder, keep_calls).run(closed.jaxpr, closed.consts, [Ref(0)])
    if not isinstance(out, Ref):
        raise ValueError("fn's output does not depend on its input: there is nothing to bound")
    return builder.graph(out)
