"""Backward bounds of convolutional neurons over their receptive fields only.

Full CROWN bounds every hidden neuron with its own backward pass. For a neuron of a
convolutional layer, the coefficients ``A`` of that pass are zero outside the neuron's
receptive field, yet a dense pass carries and convolves whole feature maps. Here each
row of ``A`` is a *patch*: ``(ph, pw, C)`` coefficients on a window of the node, the
window of target position ``(i, j)`` starting at ``(i, j) * stride - offset``. Going
back through a convolution of kernel ``k`` (dilation ``d``, stride ``s``, low padding
``p``) the window grows to ``(ph - 1) s + (k - 1) d + 1`` with stride ``stride * s``
and offset ``offset * s + p``, and the new patch is the transpose of the same
convolution without padding on the patch: one transposed convolution for all rows.
Positions that fall in the convolution's zero padding are masked to zero.
Activations and elementwise affine maps read their lines on the same windows.

``RULES`` is this domain's table over the op registry: a :class:`PatchRule` (when it
applies to a node, and its step) for convolutions, (leaky) ReLUs and elementwise
affine maps, an "unsupported" entry (with the reason) for every other op. The
result equals the dense pass up to float rounding;
:func:`jaxcert.domains.intermediate.identity_bounds` picks patches when the target's
whole ancestry is such a chain and the patches are smaller than the feature maps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp

from jaxcert import ops
from jaxcert.domains.backward import Context, bounds_in_chunks, transpose_merged
from jaxcert.graph import Graph, Node, Ref
from jaxcert.patch_rows import PatchRows, read_windows
from jaxcert.relaxations import monotone_relaxation, relu_relaxation
from jaxcert.sets import InputSet

Array = jax.Array
Interval = tuple[Array, Array]

__all__ = [
    "RULES",
    "PatchRule",
    "Window",
    "conv_chain",
    "windows_along",
    "prefers_patches",
    "lower_bounds",
    "identity_bounds",
]

_NHWC = (0, 3, 1, 2)


@dataclasses.dataclass(frozen=True)
class Window:
    """Where the patches of a node lie: target position ``i`` covers node rows
    ``i * stride - offset + [0, size)`` (per spatial axis)."""

    size: tuple[int, int]
    stride: tuple[int, int]
    offset: tuple[int, int]


def _kernel_size(node: Node) -> tuple[int, int]:
    """Dilated spatial kernel size of a convolution node."""
    rhs_spec = node.params["dimension_numbers"].rhs_spec
    w_shape = jnp.shape(node.args[1])
    dilation = node.params.get("rhs_dilation") or (1, 1)
    size = [(w_shape[rhs_spec[2 + a]] - 1) * dilation[a] + 1 for a in range(2)]
    return size[0], size[1]


def _is_patch_conv(node: Node) -> bool:
    p = node.params
    dims = p.get("dimension_numbers")
    return (
        node.bounded == (0,)
        and not isinstance(node.args[1], Ref)
        and dims is not None
        and tuple(dims.lhs_spec) == _NHWC
        and tuple(dims.out_spec) == _NHWC
        and all(d == 1 for d in (p.get("lhs_dilation") or (1, 1)))
        and p.get("batch_group_count", 1) == 1
        and not isinstance(p.get("padding"), str)
    )


def _nhwc_chain_link(node: Node, graph: Graph) -> bool:
    """One bounded operand, and rank-4 (NHWC) arrays on both sides."""
    return (
        len(node.inputs) == 1
        and len(node.shape) == 4
        and len(graph.nodes[node.inputs[0]].shape) == 4
    )


def _elementwise_applies(node: Node, graph: Graph) -> bool:
    # The bounded operand must not be broadcast (a divisor is constant: ops.OPS["div"]).
    return graph.nodes[node.inputs[0]].shape == node.shape


def conv_chain(graph: Graph, index: int) -> list[Node] | None:
    """The nodes from ``index`` back to (not including) the input, when every one of them
    has a single bounded operand and a patch rule and at least one is a convolution;
    else None."""
    chain = []
    node = graph.nodes[index]
    while node.index != 0:
        rule = RULES[node.op]
        if not isinstance(rule, PatchRule) or not _nhwc_chain_link(node, graph):
            return None
        if not rule.applies(node, graph):
            return None
        chain.append(node)
        node = graph.nodes[node.inputs[0]]
    if not any(_patch_rule(n).widens for n in chain):  # no convolution: nothing to gain
        return None
    return chain


def windows_along(chain: Sequence[Node]) -> list[Window]:
    """The window at the input of each chain node (``chain[0]`` is the target)."""
    window = Window((1, 1), (1, 1), (0, 0))
    out = []
    for node in chain:
        window = _patch_rule(node).grow(node, window)
        out.append(window)
    return out


def _same_window(node: Node, window: Window) -> Window:
    return window


def _conv_window(node: Node, window: Window) -> Window:
    """The window at a convolution's input from the window at its output."""
    k = _kernel_size(node)
    s = node.params["window_strides"]
    pad = node.params["padding"]
    return Window(
        size=(
            (window.size[0] - 1) * s[0] + k[0],
            (window.size[1] - 1) * s[1] + k[1],
        ),
        stride=(window.stride[0] * s[0], window.stride[1] * s[1]),
        offset=(window.offset[0] * s[0] + pad[0][0], window.offset[1] * s[1] + pad[1][0]),
    )


def prefers_patches(graph: Graph, chain: Sequence[Node]) -> bool:
    """Whether the patches hold fewer numbers than the feature maps they stand for."""
    windows = windows_along(chain)
    patch = dense = 0
    for node, window in zip(chain, windows, strict=True):
        shape = graph.nodes[node.inputs[0]].shape
        patch += window.size[0] * window.size[1] * shape[3]
        dense += math.prod(shape[1:])
    return patch < dense


def _positions(rows: Array, window: Window, axis: int) -> Array:
    """Node rows (or columns) covered by the windows of target positions ``rows``: (R, size)."""
    start = rows * window.stride[axis] - window.offset[axis]
    return start[:, None] + jnp.arange(window.size[axis])


def _in_range(pi: Array, pj: Array, shape: Sequence[int], dtype) -> Array:
    """1 where a window position lies inside the (B, H, W, C) node: (1, R, ph, pw, 1)."""
    ok_i = (pi >= 0) & (pi < shape[1])
    ok_j = (pj >= 0) & (pj < shape[2])
    return (ok_i[:, :, None] & ok_j[:, None, :]).astype(dtype)[None, :, :, :, None]


def _sum_patch(x: Array) -> Array:
    """Sums (B, R, ph, pw, C) over the patch: (B, R)."""
    return jnp.sum(x, axis=(2, 3, 4))


# A transposed convolution on patches of a few pixels runs far below the CPU's matmul
# speed (a batch of tiny images). Up to this many times the convolution's multiplies,
# the step is one matmul with the transpose's matrix instead.
_MATMUL_FLOP_RATIO = 4


def _conv_step(
    node: Node, A: Array, ctx: Context, in_shape: Sequence[int], window: Window, pi, pj
) -> tuple[Array, None]:
    """Patches at a convolution's output to patches at its input (no padding: the
    padding is the window offset; positions in it are masked)."""
    batch, n_rows = A.shape[:2]
    params = {**node.params, "padding": ((0, 0), (0, 0))}

    def conv(x: Array, w: Array) -> Array:
        return node.primitive.bind(x, w, **params)

    # Per row and channel pair: the matmul multiplies (ph pw) x (ph' pw'), the
    # convolution (ph pw) x (kh kw).
    if math.prod(window.size) <= _MATMUL_FLOP_RATIO * math.prod(_kernel_size(node)):
        n_out = math.prod(A.shape[2:])
        lhs = jnp.zeros((1, *window.size, in_shape[3]), A.dtype)
        _, transpose = jax.vjp(lambda x: conv(x, node.args[1]), lhs)
        eye = jnp.eye(n_out, dtype=A.dtype).reshape(n_out, 1, *A.shape[2:])
        (matrix,) = jax.vmap(transpose)(eye)
        A_in = A.reshape(batch * n_rows, n_out) @ matrix.reshape(n_out, -1)
    else:
        flat_A = A.reshape(batch * n_rows, *A.shape[2:])
        A_in = transpose_merged(conv, flat_A, node.args[1], (*window.size, in_shape[3]))
    A_in = A_in.reshape(batch, n_rows, *window.size, in_shape[3])
    return A_in * _in_range(pi, pj, in_shape, A.dtype), None


def _relu_step(node: Node, A: Array, ctx: Context, in_shape, window, pi: Array, pj: Array):
    (z,) = node.inputs
    lo, hi = ctx.interval(z)
    relax = relu_relaxation(lo, hi, ctx.lower_slope(node), node.params.get("slope", 0.0))
    lower_slope, upper_slope, upper_bias = (
        read_windows(jnp.broadcast_to(v, node.shape), pi, pj)
        for v in (relax.lower_slope, relax.upper_slope, relax.upper_bias)
    )
    A_pos, A_neg = jnp.maximum(A, 0), jnp.minimum(A, 0)
    # The lower line of a ReLU passes through the origin: no lower bias.
    return A_pos * lower_slope + A_neg * upper_slope, _sum_patch(A_neg * upper_bias)


def _monotone_step(node: Node, A: Array, ctx: Context, in_shape, window, pi: Array, pj: Array):
    (z,) = node.inputs
    lo, hi = ctx.interval(z)
    assert node.fn is not None
    relax = monotone_relaxation(node.params["function"], node.fn, lo, hi)
    lower_slope, lower_bias, upper_slope, upper_bias = (
        read_windows(jnp.broadcast_to(v, node.shape), pi, pj) for v in relax
    )
    A_pos, A_neg = jnp.maximum(A, 0), jnp.minimum(A, 0)
    bias = _sum_patch(A_pos * lower_bias + A_neg * upper_bias)
    return A_pos * lower_slope + A_neg * upper_slope, bias


def _elementwise_step(node: Node, A: Array, ctx: Context, in_shape, window, pi, pj):
    zeros = jnp.zeros(node.shape, node.dtype)
    offset = node.apply_bounded(zeros)
    scale = node.apply_bounded(jnp.ones(node.shape, node.dtype)) - offset
    A_in = A * read_windows(scale, pi, pj)
    if ops.OPS[node.op].offset:
        return A_in, _sum_patch(A * read_windows(offset, pi, pj))
    return A_in, None


@dataclasses.dataclass(frozen=True)
class PatchRule:
    """How a patch pass goes back through one op.

    Attributes:
      applies: ``(node, graph) -> bool``: whether this node's parameters allow it.
      grow: ``(node, window at the output) -> window at the input``.
      step: ``(node, A, ctx, input shape, window, rows, cols) -> (A at the input, bias
        or None)`` for patches ``A`` (B, R, ph, pw, C) on the input window.
      widens: the window grows through the op (a convolution).
    """

    applies: Callable[[Node, Graph], bool]
    grow: Callable[[Node, Window], Window]
    step: Callable[..., tuple[Array, Array | None]]
    widens: bool = False


_ELEMENTWISE = PatchRule(_elementwise_applies, _same_window, _elementwise_step)
_RELU = PatchRule(lambda node, graph: True, _same_window, _relu_step)

RULES: dict[str, PatchRule | ops.Unsupported] = ops.rule_table(
    "patches",
    {},
    overrides={
        "conv_general_dilated": PatchRule(
            lambda node, graph: _is_patch_conv(node), _conv_window, _conv_step, widens=True
        ),
        "relu": _RELU,
        "leaky_relu": _RELU,
        "monotone": PatchRule(lambda node, graph: True, _same_window, _monotone_step),
        **{name: _ELEMENTWISE for name in ("add", "sub", "mul", "div", "neg")},
    },
    default_reason=(
        "patch passes go through convolutions, (leaky) ReLUs, monotone activations and "
        "elementwise affine maps only; neurons behind this op are bounded by dense passes"
    ),
)


def _patch_rule(node: Node) -> PatchRule:
    """The patch rule of a node of a chain (:func:`conv_chain` admits only those)."""
    rule = RULES[node.op]
    assert isinstance(rule, PatchRule)
    return rule


def lower_bounds(
    ctx: Context,
    input_set: InputSet,
    chain: Sequence[Node],
    rows_i: Array,
    rows_j: Array,
    A: Array,
) -> Array:
    """Lower bounds of ``A . y_target`` for patches ``A`` (B, R, 1, 1, C_target) at
    target positions ``(rows_i, rows_j)`` (R each): (B, R)."""
    graph = ctx.graph
    bias = jnp.zeros(A.shape[:2], A.dtype)
    for node, window in zip(chain, windows_along(chain), strict=True):
        in_shape = graph.nodes[node.inputs[0]].shape
        pi = _positions(rows_i, window, 0)
        pj = _positions(rows_j, window, 1)
        A, step_bias = _patch_rule(node).step(node, A, ctx, in_shape, window, pi, pj)
        if step_bias is not None:
            bias = bias + step_bias
    # pi, pj now hold the windows on the input (the last chain node reads it).
    return input_set.concretize_patches(PatchRows(A, pi, pj), bias)[0]


def default_chunk_size(graph: Graph, chain: Sequence[Node], budget: int = 1 << 26) -> int:
    """Neurons per pass so that one patch tensor holds about ``budget`` numbers."""
    batch = graph.nodes[0].shape[0]
    widest = max(
        w.size[0] * w.size[1] * max(graph.nodes[n.inputs[0]].shape[3], n.shape[3])
        for n, w in zip(chain, windows_along(chain), strict=True)
    )
    return max(1, budget // (2 * batch * widest))


def identity_bounds(
    ctx: Context,
    input_set: InputSet,
    chain: Sequence[Node],
    chunk_size: int | None = None,
) -> Interval:
    """Bounds of every neuron of ``chain[0]`` (an NHWC node), lower and upper, by patch
    passes of ``chunk_size`` neurons (default: :func:`default_chunk_size`)."""
    node = chain[0]
    _, _, width, channels = node.shape

    def run(rows: Array) -> tuple[Array, Array]:
        i, j, c = rows // (width * channels), (rows // channels) % width, rows % channels
        eye = jax.nn.one_hot(c, channels, dtype=node.dtype)[None, :, None, None, :]
        eye = jnp.broadcast_to(eye, (node.shape[0], *eye.shape[1:]))
        both = lower_bounds(
            ctx,
            input_set,
            chain,
            jnp.concatenate([i, i]),
            jnp.concatenate([j, j]),
            jnp.concatenate([eye, -eye], axis=1),
        )
        m = rows.shape[0]
        return both[:, :m], -both[:, m:]

    chunk = chunk_size or default_chunk_size(ctx.graph, chain)
    return bounds_in_chunks(run, node.shape, chunk)
