"""Tracing a JAX function into a small DAG of bound-able operations.

Three layers: the IR (:mod:`jaxcert.graph.ir`: ``Ref``, ``Node``, ``Graph``), the tracer
(:mod:`jaxcert.graph.trace`: jaxpr walk, inlining, constant folding, source lines) and
the recognition passes (:mod:`jaxcert.graph.passes`: activations, max/min/clamp ->
ReLU, checks), composed by :func:`trace`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.graph import passes
from jaxcert.graph.ir import Graph, Node, Ref, evaluate
from jaxcert.graph.source import source_line
from jaxcert.graph.trace import trace_raw

__all__ = ["Ref", "Node", "Graph", "trace", "evaluate", "source_line"]


def trace(fn: Callable[[jax.Array], jax.Array], shape: Sequence[int], dtype: Any) -> Graph:
    """Traces ``fn`` on an input of ``shape`` (``(batch, ...)``) into a :class:`Graph`.

    Any operation no domain bounds raises :class:`~jaxcert.errors.UnsupportedOperation`
    naming the primitive and the user's source line.

    Example:
      >>> g = trace(lambda x: jax.nn.relu(x @ jnp.ones((3, 2))), (4, 3), jnp.float32)
      >>> [n.op for n in g.nodes]
      ['input', 'dot_general', 'relu']
    """
    if not jnp.issubdtype(dtype, jnp.floating):
        raise ValueError(f"the input must have a floating dtype, got {dtype}")
    graph = trace_raw(fn, shape, dtype, keep_calls=passes.RECOGNISED_CALLS)
    for graph_pass in passes.PASSES:
        graph = graph_pass(graph)
    return graph
