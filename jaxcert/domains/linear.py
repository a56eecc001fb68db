"""Backward linear bounds: the CROWN family (CROWN, Fast-Lin, CROWN-IBP, CAP-IBP).

A backward pass starts from a specification ``A`` at a node (``(batch, n_spec,
*node_shape[1:])``) and walks the graph in reverse, keeping the invariant

    A_target . y_target  >=  sum_n A_n . y_n + bias        (for every input in the set)

until only the input remains, where the input set concretises ``A_in x + bias``. Rules
map a node's ``A`` to its operands' ``A``:

* affine nodes: the transpose of the op, from ``jax.vjp`` vmapped over the spec axis
  (no hand-written transposed convolutions), plus ``A . op(0)`` for constant offsets;
* activations: the :mod:`jaxcert.relaxations` line picked by the sign of ``A``;
* max-pool: ``max(window) >= z[argmax of the lower bounds]`` below, ``max(u)`` above.

Only lower bounds are computed; an upper bound is minus the lower bound of ``-A``.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Collection, Sequence

import jax
import jax.numpy as jnp
from jax import lax

from jaxcert.domains import interval
from jaxcert.errors import UnsupportedOperation
from jaxcert.graph import LINEAR_PRIMITIVES, OFFSET_PRIMITIVES, Graph, Node, Ref
from jaxcert.relaxations import Relaxation, constant_relaxation, relu_relaxation
from jaxcert.sets import InputSet

Array = jax.Array
Interval = tuple[Array, Array]
SlopeChoice = str | Array

__all__ = [
    "Context",
    "RULES",
    "backward",
    "lower_bound",
    "crown_intervals",
    "identity_bounds",
    "concretize_interval",
    "conv_transpose",
    "transpose_merged",
    "backward_coefficients",
    "default_chunk_size",
    "bounds_in_chunks",
    "preactivation_nodes",
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


# (node, A, ctx) -> ([(input node index, A for it)], bias or None)
Rule = Callable[[Node, Array, Context], tuple[list[tuple[int, Array]], Array | None]]
RULES: dict[str, Rule] = {}


def _sum_rest(x: Array) -> Array:
    """Sums every axis after (batch, spec)."""
    return jnp.sum(x.reshape(x.shape[:2] + (-1,)), axis=-1)


def _affine_rule(
    node: Node, A: Array, ctx: Context
) -> tuple[list[tuple[int, Array]], Array | None]:
    refs = [a for a in node.args if isinstance(a, Ref)]
    zeros = [
        jnp.zeros(ctx.graph.nodes[r.index].shape, ctx.graph.nodes[r.index].dtype) for r in refs
    ]
    offset, transpose = jax.vjp(node.apply_bounded, *zeros)
    grads = jax.vmap(transpose, in_axes=1, out_axes=1)(A)
    bias = _sum_rest(A * offset[:, None]) if node.op in OFFSET_PRIMITIVES else None
    return [(r.index, g) for r, g in zip(refs, grads, strict=True)], bias


for _name in LINEAR_PRIMITIVES:
    RULES[_name] = _affine_rule


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
    dtype,
    chunk: int | None = None,
):
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

    def fwd(a: Array, w: Array):
        return transpose(a, w), (a, w)

    def bwd(res, g: Array):
        a, w = res
        g_a = jnp.concatenate(_chunked(lambda g: conv(g, w), chunk, g))
        g_w = sum(_chunked(lambda g, a: kernel_grad_slice(g, a, w), chunk, g, a))
        return g_a, g_w

    transpose.defvjp(fwd, bwd)
    return transpose


def _conv_rule(node: Node, A: Array, ctx: Context) -> tuple[list[tuple[int, Array]], Array | None]:
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
    conv = lambda x, w: node.apply(x, w)  # noqa: E731
    flat_A = A.reshape(batch * n_spec, *A.shape[2:])
    A_in = transpose_merged(conv, flat_A, node.args[1], tuple(in_shape[1:]))
    return [(i, A_in.reshape(batch, n_spec, *in_shape[1:]))], None


def transpose_merged(
    conv: Callable[[Array, Array], Array], A: Array, w: Array, in_rest: tuple[int, ...]
) -> Array:
    """``L_w^T A`` for rows ``A`` (N, *out_rest) merged into the batch axis: (N, *in_rest),
    by :func:`conv_transpose` in slices of :func:`conv_batch_chunk` rows."""
    itemsize = jnp.dtype(A.dtype).itemsize
    per_example = itemsize * max(math.prod(in_rest), math.prod(A.shape[1:]))
    chunk = conv_batch_chunk(A.shape[0], per_example)
    return conv_transpose(conv, (A.shape[0], *in_rest), A.dtype, chunk)(A, w)


RULES["conv_general_dilated"] = _conv_rule


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
    return A * slope, _sum_rest(A * offset)


def _relu_rule(node: Node, A: Array, ctx: Context) -> tuple[list[tuple[int, Array]], Array]:
    (z,) = node.inputs
    lo, hi = ctx.intervals[z]
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


def _monotone_rule(node: Node, A: Array, ctx: Context) -> tuple[list[tuple[int, Array]], Array]:
    # Constant lines f(l) <= f(z) <= f(u): sound for any non-decreasing function.
    lo, hi = ctx.intervals[node.index]
    relax = constant_relaxation(lo, hi)
    _, bias = _relaxation_rule(relax, A)
    return [], bias


def _max_rule(node: Node, A: Array, ctx: Context) -> tuple[list[tuple[int, Array]], Array]:
    # Below: the max is at least the element that is largest at the lower bounds, a
    # linear selection whose transpose is the op's own VJP at that point (ties share
    # the cotangent, a convex combination, still below the max). Above: max(u).
    (z,) = node.inputs
    z_lo, _ = ctx.intervals[z]
    _, hi = ctx.intervals[node.index]
    A_pos, A_neg = jnp.maximum(A, 0), jnp.minimum(A, 0)
    _, select_t = jax.vjp(node.apply, z_lo)
    (A_z,) = jax.vmap(select_t, in_axes=1, out_axes=1)(A_pos)
    return [(z, A_z)], _sum_rest(A_neg * hi[:, None])


RULES["relu"] = _relu_rule
RULES["leaky_relu"] = _relu_rule
RULES["monotone"] = _monotone_rule
RULES["max_pool"] = _max_rule
RULES["reduce_max"] = _max_rule


def concretize_interval(A: Array, iv: Interval) -> Array:
    """Lower bound of ``A . y`` over the box ``iv`` (centre/radius form)."""
    lo, hi = iv
    center, radius = (hi + lo) / 2, (hi - lo) / 2
    return _sum_rest(A * center[:, None]) - _sum_rest(jnp.abs(A) * radius[:, None])


def backward_coefficients(
    ctx: Context,
    target: int,
    A: Array,
    stop: Collection[int] = (),
    keep: Collection[int] = (),
) -> tuple[Array | None, Array, dict[int, Array]]:
    """:func:`backward`, also returning ``A`` as it reached each node in ``keep``.

    The coefficients at an activation node say which relaxation line the bound uses
    there (lower line where positive, upper where negative): the tightness
    regularisers (:mod:`jaxcert.tightness`) read them.
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
            bias = bias + concretize_interval(A_node, ctx.intervals[node.index])
            continue
        rule = RULES.get(node.op)
        if rule is None:
            raise UnsupportedOperation(node.op, node.source, "no linear (CROWN) rule")
        contributions, node_bias = rule(node, A_node, ctx)
        if node_bias is not None:
            bias = bias + node_bias
        for index, A_in in contributions:
            pending[index] = pending[index] + A_in if index in pending else A_in
    return pending.get(0), bias, kept


def backward(
    ctx: Context, target: int, A: Array, stop: Collection[int] = ()
) -> tuple[Array | None, Array]:
    """Propagates ``A`` at node ``target`` back to the input.

    Args:
      ctx: the graph, intervals and slope choices.
      target: the node the specification is on.
      A: ``(batch, n_spec, *shape[1:])`` of the target node.
      stop: nodes where the pass stops and concretises over the node's interval
        instead (IBP's elision of the last affine layers uses every activation).

    Returns:
      ``(A_in, bias)``: ``A . y_target >= A_in . x + bias`` for all inputs of the set;
      ``A_in`` is None when the input is not reached.
    """
    A_in, bias, _ = backward_coefficients(ctx, target, A, stop)
    return A_in, bias


def lower_bound(
    ctx: Context, input_set: InputSet, target: int, A: Array, stop: Collection[int] = ()
) -> Array:
    """Lower bound of ``A . y_target`` over the input set: ``(batch, n_spec)``."""
    A_in, bias = backward(ctx, target, A, stop)
    if A_in is None:
        return bias
    return input_set.concretize(A_in, bias)[0]


def preactivation_nodes(graph: Graph) -> list[int]:
    """Indices of the nodes whose bounds the activations' relaxations read, in order."""
    seen: dict[int, None] = {}
    for node in graph.activations:
        seen.setdefault(node.inputs[0], None)
    return list(seen)


def default_chunk_size(graph: Graph, budget: int = 1 << 26) -> int:
    """Neurons per backward pass so that one ``A`` holds about ``budget`` numbers."""
    batch = graph.nodes[0].shape[0]
    widest = max(math.prod(n.shape[1:]) for n in graph.nodes)
    return max(1, budget // (2 * batch * widest))


# Up to this many neuron chunks per layer are unrolled; more run in one lax.map loop.
_MAX_UNROLLED_CHUNKS = 8


def bounds_in_chunks(
    run: Callable[[Array], tuple[Array, Array]], shape: Sequence[int], chunk_size: int
) -> Interval:
    """Runs ``run(rows) -> (lower, upper)``, each ``(batch, len(rows))``, over the flat
    neuron indices of a node of ``shape``, ``chunk_size`` at a time, and assembles the
    node's interval."""
    batch, n = shape[0], math.prod(shape[1:])
    if n <= chunk_size:
        lo, hi = run(jnp.arange(n))
        return lo.reshape(shape), hi.reshape(shape)
    n_chunks = -(-n // chunk_size)
    if n_chunks <= _MAX_UNROLLED_CHUNKS:
        # A few chunks: unrolled, as XLA's CPU backend runs big loop bodies ~5x slower.
        parts = [run(jnp.arange(i, min(i + chunk_size, n))) for i in range(0, n, chunk_size)]
        lo = jnp.concatenate([p[0] for p in parts], axis=1)
        hi = jnp.concatenate([p[1] for p in parts], axis=1)
    else:
        # Rows past n repeat the last neuron (valid indices for every pass); cut off.
        rows = jnp.minimum(jnp.arange(n_chunks * chunk_size), n - 1)
        lo, hi = lax.map(run, rows.reshape(n_chunks, chunk_size))
        lo = jnp.moveaxis(lo, 0, 1).reshape(batch, -1)[:, :n]
        hi = jnp.moveaxis(hi, 0, 1).reshape(batch, -1)[:, :n]
    return lo.reshape(shape), hi.reshape(shape)


def identity_bounds(
    ctx: Context, input_set: InputSet, index: int, chunk_size: int | None = None
) -> Interval:
    """Bounds of every neuron of node ``index`` by backward passes, ``chunk_size`` at a time.

    The identity specification is never built whole: each chunk of neurons gets its
    one-hot rows (with their negations, for the upper bounds), and many chunks run in
    one XLA loop. A node whose ancestry is a chain of convolutions, activations and
    elementwise affine maps is bounded with patches (:mod:`jaxcert.domains.patches`):
    the same numbers, computed on receptive fields instead of whole feature maps.
    ``chunk_size`` defaults to :func:`default_chunk_size` (dense) or
    :func:`jaxcert.domains.patches.default_chunk_size`.
    """
    from jaxcert.domains import patches  # builds on this module

    chain = patches.conv_chain(ctx.graph, index)
    if chain is not None and patches.prefers_patches(ctx.graph, chain):
        return patches.identity_bounds(ctx, input_set, chain, chunk_size)

    node = ctx.graph.nodes[index]
    batch, rest = node.shape[0], node.shape[1:]
    n = math.prod(rest)

    def run(rows: Array) -> tuple[Array, Array]:
        eye = jax.nn.one_hot(rows, n, dtype=node.dtype).reshape((1, rows.shape[0], *rest))
        eye = jnp.broadcast_to(eye, (batch, *eye.shape[1:]))
        both = lower_bound(ctx, input_set, index, jnp.concatenate([eye, -eye], axis=1))
        m = rows.shape[0]
        return both[:, :m], -both[:, m:]

    return bounds_in_chunks(run, node.shape, chunk_size or default_chunk_size(ctx.graph))


def crown_intervals(
    graph: Graph,
    input_set: InputSet,
    lower_slope: Callable[[Node], SlopeChoice],
    *,
    intersect_ibp: bool = True,
    chunk_size: int | None = None,
) -> list[Interval]:
    """Per-node intervals where every pre-activation bound comes from its own backward pass.

    Full CROWN (``lower_slope`` adaptive) or Fast-Lin (``"fastlin"``). Nodes between
    activations get IBP intervals from the refined bounds; with ``intersect_ibp`` each
    backward bound is also intersected with IBP's (tighter, still sound: a neuron that
    either proves stable is stable).
    """
    targets = set(preactivation_nodes(graph))
    intervals: list[Interval | None] = [input_set.bounding_box()]
    ctx = Context(graph, intervals, lower_slope)
    for node in graph.nodes[1:]:
        iv = interval.propagate_node(node, intervals)
        if node.index in targets:
            lo, hi = identity_bounds(ctx, input_set, node.index, chunk_size)
            if intersect_ibp:
                lo, hi = jnp.maximum(lo, iv[0]), jnp.minimum(hi, iv[1])
            iv = (lo, hi)
        intervals.append(iv)
    return intervals  # type: ignore[return-value]


def activation_stops(graph: Graph) -> frozenset[int]:
    """The nodes IBP's elision stops at: every non-affine node (and the input)."""
    return frozenset(n.index for n in graph.nodes if n.op not in LINEAR_PRIMITIVES) - {0}


def slope_chooser(
    default: str, overrides: dict[str, Array] | None = None
) -> Callable[[Node], SlopeChoice]:
    """Lower-slope choice per node: ``overrides[node.name]`` if given, else ``default``."""
    overrides = overrides or {}

    def choose(node: Node) -> SlopeChoice:
        return overrides.get(node.name, default)

    return choose


def relu_nodes(graph: Graph) -> list[Node]:
    """The (leaky) ReLU nodes: those with a lower slope to choose."""
    return [n for n in graph.nodes if n.op in ("relu", "leaky_relu")]
