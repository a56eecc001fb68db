"""The graph IR: a topologically ordered list of :class:`Node` over bounded values.

Bounded values are ``Ref(i)`` (the value of node ``i``); constants are concrete arrays
or tracers of an enclosing transformation (closed-over parameters under ``jax.grad``),
so gradients flow through the bounds. ``nodes[0]`` is the input.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import jax

from jaxcert import ops
from jaxcert.errors import UnsupportedOperation
from jaxcert.graph.source import source_line

Array = jax.Array

__all__ = ["Ref", "Node", "Graph", "GraphBuilder", "evaluate"]


@dataclasses.dataclass(frozen=True)
class Ref:
    """A reference to the bounded value computed by node ``index``."""

    index: int


@dataclasses.dataclass(eq=False)
class Node:
    """One operation of the traced function.

    Attributes:
      index: position in :attr:`Graph.nodes` (topological order).
      op: a :data:`jaxcert.ops.OPS` name (a primitive's, or a synthetic op such as
        ``"relu"``, ``"leaky_relu"`` (``params["slope"]``), ``"monotone"`` (``fn``,
        ``params["function"]``), ``"max_pool"``), or ``"input"``.
      args: operands: :class:`Ref` for bounded values, arrays for constants.
      shape: output shape ``(batch, *rest)``.
      dtype: output dtype.
      primitive: the JAX primitive that evaluates the op (None for synthetic ops).
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
        """Evaluates the op with every operand given as an array (in ``args`` order).

        Example:
          >>> node = Node(1, "relu", (Ref(0),), (1, 2), jnp.float32)
          >>> node.apply(jnp.array([[-1.0, 2.0]]))
          Array([[0., 2.]], dtype=float32)
        """
        if self.primitive is not None:
            out = self.primitive.bind(*args, **self.params)
            return out if self.output_index is None else out[self.output_index]
        op = ops.OPS.get(self.op)
        if op is None or op.impl is None:
            raise UnsupportedOperation(self.op, self.source, "no implementation to evaluate")
        return op.impl(self, *args)

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
        return [n for n in self.nodes if n.op in ops.OPS and ops.OPS[n.op].kind == "activation"]

    def consumers(self) -> dict[int, list[int]]:
        """Map from node index to the indices of the nodes that read it."""
        out: dict[int, list[int]] = {n.index: [] for n in self.nodes}
        for n in self.nodes:
            for i in n.inputs:
                out[i].append(n.index)
        return out


def evaluate(graph: Graph, x: Array) -> list[Array]:
    """The value of every node of ``graph`` at the input ``x`` (a nominal forward pass).

    Example:
      >>> from jaxcert.graph import trace
      >>> g = trace(lambda x: jax.nn.relu(x - 1.0), (1, 2), jnp.float32)
      >>> evaluate(g, jnp.array([[0.0, 3.0]]))[-1]
      Array([[0., 2.]], dtype=float32)
    """
    values: list[Array] = [x]
    for node in graph.nodes[1:]:
        values.append(
            node.apply(*(values[a.index] if isinstance(a, Ref) else a for a in node.args))
        )
    return values


class GraphBuilder:
    """Appends nodes in topological order; shared by the tracer and the rewrite passes."""

    def __init__(self, input_node: Node):
        self.nodes: list[Node] = [input_node]

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
        output_index: int | None = None,
    ) -> Ref:
        node = Node(
            index=len(self.nodes),
            op=op,
            args=tuple(args),
            shape=tuple(int(d) for d in shape),
            dtype=dtype,
            primitive=primitive,
            params=dict(params or {}),
            fn=fn,
            source_info=source_info,
            output_index=output_index,
        )
        self.nodes.append(node)
        return Ref(node.index)

    def copy(self, node: Node, args: Sequence[Any], **changes: Any) -> Ref:
        """Appends ``node`` with operands ``args`` (and any field ``changes``)."""
        new = dataclasses.replace(node, index=len(self.nodes), args=tuple(args), **changes)
        self.nodes.append(new)
        return Ref(new.index)

    def emit_prim(self, prim: Any, args: Sequence[Any], source_info: Any, **params: Any) -> Ref:
        """Emits a JAX primitive, working out its output shape abstractly."""
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

    def node(self, ref: Ref) -> Node:
        return self.nodes[ref.index]

    def graph(self, output: Ref) -> Graph:
        return Graph(nodes=self.nodes, output=output.index)
