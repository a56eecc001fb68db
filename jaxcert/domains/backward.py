"""The backward core the linear (dense) and patch domains build on.

A backward pass starts from a specification ``A`` at a node (``(batch, n_spec,
*node_shape[1:])``) and walks the graph in reverse, keeping the invariant

    A_target . y_target  >=  sum_n A_n . y_n + bias        (for every input in the set)

until only the input remains. A domain supplies the rule table that maps a node's
``A`` to its operands' ``A`` (:mod:`jaxcert.domains.linear` for dense coefficients);
this module holds what every backward domain shares: the :class:`Context` a pass
reads, the loop itself, the choice of lower slopes, chunking of many passes, and the
transposed convolutions.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from jaxcert.graph import Graph, Node

Array = jax.Array
Interval = tuple[Array, Array]
SlopeChoice = str | Array
# (node, A, ctx) -> ([(input node index, A for it)], bias or None)
BackwardRule = Callable[[Node, Array, "Context"], tuple[list[tuple[int, Array]], Array | None]]

__all__ = [
    "Context",
    "BackwardRule",
    "backward_coefficients",
    "concretize_interval",
    "sum_rest",
    "slope_chooser",
    "preactivation_nodes",
    "default_chunk_size",
    "bounds_in_chunks",
    "lower_bounds_in_chunks",
    "CPU_CONV_CHUNK_BYTES",
    "conv_batch_chunk",
    "conv_transpose",
    "transpose_merged",
]


@dataclasses.dataclass(frozen=True)
class Context:
    """What a backward pass reads besides ``A``.

    Attributes:
      graph: the traced function.
      intervals: per node, its interval (activation inputs must be present; the
        pre-activation bounds the relaxations use).
      lower_slope: per activation node, the lower-slope rule or array.
    """

    graph: Graph
    intervals: Sequence[Interval | None]
    lower_slope: Callable[[Node], SlopeChoice]

    def interval(self, index: int) -> Interval:
        """The interval of node ``index`` (which the pass needs to be there)."""
        iv = self.intervals[index]
        if iv is None:
            raise ValueError(f"node {index} has no interval in this context")
        return iv


def sum_rest(x: Array) -> Array:
    """Sums every axis after (batch, spec)."""
    return jnp.sum(x.reshape(x.shape[:2] + (-1,)), axis=-1)


def concretize_interval(A: Array, iv: Interval) -> Array:
    """Lower bound of ``A . y`` over the box ``iv`` (centre/radius form)."""
    lo, hi = iv
    center, radius = (hi + lo) / 2, (hi - lo) / 2
    return sum_rest(A * center[:, None]) - sum_rest(jnp.abs(A) * radius[:, None])


def backward_coefficients(
    rules: Mapping[str, BackwardRule],
    ctx: Context,
    target: int,
    A: Array,
    stop: Collection[int] = (),
    keep: Collection[int] = (),
) -> tuple[Array | None, Array, dict[int, Array]]:
    """Propagates ``A`` at node ``target`` back to the input with ``rules``.

    Args:
      rules: the domain's table ``{op: rule}``.
      ctx: the graph, intervals and slope choices.
      target: the node the specification is on.
      A: ``(batch, n_spec, *shape[1:])`` of the target node.
      stop: nodes where the pass stops and concretises over the node's interval
        instead (IBP's elision of the last affine layers uses every activation).
      keep: nodes whose ``A`` (as it reached them) is also returned. The coefficients
        at an activation say which relaxation line the bound uses there (lower line
        where positive, upper where negative): the tightness regularisers read them.

    Returns:
      ``(A_in, bias, kept)``: ``A . y_target >= A_in . x + bias`` for all inputs of the
      set (``A_in`` is None when the input is not reached), and ``{node: A}`` for
      ``keep``.
    """
    graph = ctx.graph
    pending: dict[int, Array] = {target: A}
    kept: dict[int, Array] = {}
    bias = jnp.zeros(A.shape[:2], A.dtype)
    for node in reversed(graph.nodes[1 : target + 1]):
        A_node = pending.pop(node.index, None)
        if A_node is None:
            continue
        if node.index in keep:
            kept[node.index] = A_node
        if node.index in stop:
            bias = bias + concretize_interval(A_node, ctx.interval(node.index))
            continue
        contributions, node_bias = rules[node.op](node, A_node, ctx)
        if node_bias is not None:
            bias = bias + node_bias
        for index, A_in in contributions:
            pending[index] = pending[index] + A_in if index in pending else A_in
    return pending.get(0), bias, kept


# ------------------------------------------------------------------ lower slopes


def slope_chooser(
    default: str, overrides: Mapping[str, Array] | None = None
) -> Callable[[Node], SlopeChoice]:
    """Lower-slope choice per node: ``overrides[node.name]`` if given, else ``default``."""
    overrides = dict(overrides or {})

    def choose(node: Node) -> SlopeChoice:
        return overrides.get(node.name, default)

    return choose


def preactivation_nodes(graph: Graph) -> list[int]:
    """Indices of the nodes whose bounds the activations' relaxations read, in order."""
    seen: dict[int, None] = {}
    for node in graph.activations:
        for index in node.inputs:  # both factors of a product
            seen.setdefault(index, None)
    return list(seen)


# ---------------------------------------------------------------------- chunking


def default_chunk_size(graph: Graph, budget: int = 1 << 26) -> int:
    """Neurons per backward pass so that one ``A`` holds about ``budget`` numbers."""
    batch = graph.nodes[0].shape[0]
    widest = max(math.prod(n.shape[1:]) for n in graph.nodes)
    return max(1, budget // (2 * batch * widest))


# Up to this many chunks are unrolled; more run in one lax.map loop.
_MAX_UNROLLED_CHUNKS = 8


def _map_chunks(run: Callable[[Array], Any], n: int, chunk_size: int) -> Any:
    """``run(indices)`` over ``range(n)``, ``chunk_size`` indices at a time, its results
    (``(batch, len(indices))`` arrays, or tuples of them) joined along axis 1.

    A few chunks are unrolled (XLA's CPU backend runs big loop bodies ~5x slower); more
    run in one ``lax.map`` loop, whose last chunk repeats the last index (cut off)."""
    n_chunks = -(-n // chunk_size)
    if n_chunks <= _MAX_UNROLLED_CHUNKS:
        parts = [run(jnp.arange(i, min(i + chunk_size, n))) for i in range(0, n, chunk_size)]
        return jax.tree.map(lambda *xs: jnp.concatenate(xs, axis=1), *parts)
    rows = jnp.minimum(jnp.arange(n_chunks * chunk_size), n - 1)
    stacked = lax.map(run, rows.reshape(n_chunks, chunk_size))
    # (n_chunks, batch, chunk) -> (batch, n)
    return jax.tree.map(lambda s: jnp.moveaxis(s, 0, 1).reshape(s.shape[1], -1)[:, :n], stacked)


def bounds_in_chunks(
    run: Callable[[Array], tuple[Array, Array]], shape: Sequence[int], chunk_size: int
) -> Interval:
    """Runs ``run(rows) -> (lower, upper)``, each ``(batch, len(rows))``, over the flat
    neuron indices of a node of ``shape``, ``chunk_size`` at a time, and assembles the
    node's interval."""
    n = math.prod(shape[1:])
    lo, hi = run(jnp.arange(n)) if n <= chunk_size else _map_chunks(run, n, chunk_size)
    return lo.reshape(shape), hi.reshape(shape)


def lower_bounds_in_chunks(
    run: Callable[[Array], Array], A: Array, chunk_size: int | None
) -> Array:
    """``run(A_rows) -> (batch, rows)`` lower bounds over the specification rows of ``A``
    (``(batch, n_spec, ...)``), at most ``chunk_size`` rows per pass (None: all at once)."""
    n = A.shape[1]
    if chunk_size is None or n <= chunk_size:
        return run(A)
    return _map_chunks(lambda rows: run(jnp.take(A, rows, axis=1)), n, chunk_size)


# -------------------------------------------------------- transposed convolutions

# XLA's CPU convolutions (YNNPACK) slow down several-fold per example once one call's
# operands pass a few MB (DM-small's second conv: 0.07 ms/example up to 250 examples,
# 0.2-0.4 ms/example at 900); CROWN's spec-merged batches are that big, so on a CPU the
# transposes and their gradients run on slices of the batch of about this many bytes
# (DM-small CROWN-IBP gradient: 357 -> 167 ms; DM-large: 2.2x faster), in at most
# _MAX_CONV_CHUNKS unrolled calls so that compile time stays bounded. With YNNPACK's
# fusions off (jaxcert.xla_options) the slices still pay: CROWN-IBP step 207 -> 180 ms
# on DM-small, 1390 -> 990 ms on DM-medium.
CPU_CONV_CHUNK_BYTES = 1 << 21
_MAX_CONV_CHUNKS = 32


def conv_batch_chunk(n: int, bytes_per_example: int, platform: str | None = None) -> int:
    """Examples per convolution call for a batch of ``n``: all of them except on a CPU."""
    if (platform or jax.default_backend()) != "cpu":
        return n
    chunk = max(1, CPU_CONV_CHUNK_BYTES // max(1, bytes_per_example), -(-n // _MAX_CONV_CHUNKS))
    return min(n, chunk)


def _chunked(fn: Callable[..., Array], chunk: int, *arrays: Array) -> list[Array]:
    """``fn`` on consecutive slices of ``chunk`` rows of ``arrays`` (a static unroll)."""
    n = arrays[0].shape[0]
    return [fn(*(a[i : i + chunk] for a in arrays)) for i in range(0, n, chunk)]


def conv_transpose(
    conv: Callable[[Array, Array], Array],
    lhs_shape: tuple[int, ...],
    dtype: Any,
    chunk: int | None = None,
) -> Callable[[Array, Array], Array]:
    """``(a, w) -> L_w^T a`` for the convolution ``L_w x = conv(x, w)``, with a hand-written
    VJP. Autodiff of the transpose would differentiate a full-padded convolution with
    respect to its kernel, which XLA's CPU backend runs ~7x slower than the ordinary
    kernel gradient of ``conv(g, w)`` that the identity
    ``<g, L_w^T a> = <conv(g, w), a>`` gives. Each convolution runs on slices of
    ``chunk`` examples (default: the whole batch in one call).

    Example:
      >>> conv = lambda x, w: lax.conv_general_dilated(x, w, (1,), "VALID")
      >>> t = conv_transpose(conv, (1, 1, 3), jnp.float32)  # (batch, channels, width)
      >>> t(jnp.ones((1, 1, 2)), jnp.ones((1, 1, 2)))  # each input's number of windows
      Array([[[1., 2., 1.]]], dtype=float32)
    """
    chunk = chunk or lhs_shape[0]

    def transpose_slice(a: Array, w: Array) -> Array:
        shape = (a.shape[0], *lhs_shape[1:])
        _, vjp = jax.vjp(lambda x: conv(x, w), jnp.zeros(shape, dtype))
        return vjp(a)[0]

    def kernel_grad_slice(g: Array, a: Array, w: Array) -> Array:
        _, vjp_w = jax.vjp(lambda k: conv(g, k), w)
        return vjp_w(a)[0]

    @jax.custom_vjp
    def transpose(a: Array, w: Array) -> Array:
        return jnp.concatenate(_chunked(lambda a: transpose_slice(a, w), chunk, a))

    def fwd(a: Array, w: Array) -> tuple[Array, tuple[Array, Array]]:
        return transpose(a, w), (a, w)

    def bwd(res: tuple[Array, Array], g: Array) -> tuple[Array, Array]:
        a, w = res
        g_a = jnp.concatenate(_chunked(lambda g: conv(g, w), chunk, g))
        g_w = sum(_chunked(lambda g, a: kernel_grad_slice(g, a, w), chunk, g, a))
        return g_a, g_w  # type: ignore[return-value]

    transpose.defvjp(fwd, bwd)
    return transpose


def transpose_merged(
    conv: Callable[[Array, Array], Array], A: Array, w: Array, in_rest: tuple[int, ...]
) -> Array:
    """``L_w^T A`` for rows ``A`` (N, *out_rest) merged into the batch axis: (N, *in_rest),
    by :func:`conv_transpose` in slices of :func:`conv_batch_chunk` rows."""
    itemsize = jnp.dtype(A.dtype).itemsize
    per_example = itemsize * max(math.prod(in_rest), math.prod(A.shape[1:]))
    chunk = conv_batch_chunk(A.shape[0], per_example)
    return conv_transpose(conv, (A.shape[0], *in_rest), A.dtype, chunk)(A, w)
