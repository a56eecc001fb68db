"""The op registry: every operation the engine bounds, declared once.

Each entry says what the abstract domains need to know about an operation, so that a
domain's rule table is *derived* from these properties (as JAX derives its transpose
tables from ``ad.deflinear``) and adding an operation is one entry here plus the rules
that differ:

* ``kind``: ``"weighted"`` (linear in the bounded operand, the constant operand is a
  weight: ``dot_general``, ``conv_general_dilated``, ``mul``, ``div``), ``"sum"`` (the
  bounded operands are added: ``add``, ``sub``, ``neg``), ``"structural"`` (entries are
  moved, copied or summed with coefficient 1: reshapes, slices, pads, reductions),
  ``"activation"`` (a non-linear node the engine relaxes: ``relu``, ``max_pool``, ...)
  or ``"monotone"`` (an elementwise non-decreasing function that the recognition pass
  turns into a ``"monotone"`` activation node; never a node itself);
* ``operands``: which operands may be bounded: ``"any"``, ``"one"`` (exactly one, the
  others constant), ``"cases"`` (any but the first, a selector), or a tuple of positions;
* ``offset``: constant operands can add an offset (the op is affine, not linear);
* ``monotone``: elementwise (or window-wise) non-decreasing: interval endpoints map to
  endpoints;
* ``lipschitz``: the L2 Lipschitz constant the BCP domain uses: ``"spectral"`` (from the
  weight: power iteration or a certified spectral norm), ``"moves"`` (entries are only
  moved, dropped or sign-flipped: 1), ``"holder"`` (``sqrt(||A||_1 ||A||_inf)``), a number,
  a function of the node (``max_pool``), or None (no constant known);
* ``disjoint``: several bounded operands fill disjoint parts of the output
  (``concatenate``): their ball radii add in quadrature, not linearly;
* ``impl``: how to evaluate a synthetic op (one that is not a JAX primitive);
* ``call``: for ``"monotone"`` entries, recognised as a ``jax.nn`` function by the name
  of its jit (``softplus``) rather than as a primitive (``tanh``).

Example:
  >>> OPS["conv_general_dilated"].kind, OPS["add"].offset, OPS["relu"].monotone
  ('weighted', True, True)
  >>> sorted(op.name for op in graph_ops() if op.kind == "activation")[:6]
  ['bilinear', 'even_convex', 'leaky_relu', 'max_pool', 'maximum', 'monotone']
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
from jax import lax

from jaxcert.errors import UnsupportedOperation

Array = jax.Array
Kind = Literal["weighted", "sum", "structural", "activation", "monotone"]
Operands = Literal["any", "one", "cases"] | tuple[int, ...]
# (node, operand shapes) -> why the node mixes examples along the batch axis, or None.
BatchRule = Callable[[Any, list[tuple[int, ...]]], str | None]
LipschitzRule = (
    Literal["spectral", "moves", "holder"] | float | Callable[[Any], float | None] | None
)

__all__ = [
    "Op",
    "OPS",
    "LINEAR_KINDS",
    "Unsupported",
    "graph_ops",
    "is_linear",
    "rule_table",
    "deflinear",
    "defactivation",
    "defmonotone",
]

LINEAR_KINDS = frozenset({"weighted", "sum", "structural"})


@dataclasses.dataclass(frozen=True)
class Op:
    """What the engine knows about one operation (see the module docstring)."""

    name: str
    kind: Kind
    operands: Operands = (0,)
    offset: bool = False
    monotone: bool = False
    lipschitz: LipschitzRule = "holder"
    disjoint: bool = False
    impl: Callable[..., Array] | None = None
    call: bool = False
    batch: BatchRule | None = None


OPS: dict[str, Op] = {}


def _register(op: Op) -> Op:
    if op.name in OPS:
        raise ValueError(f"op {op.name!r} is already registered")
    OPS[op.name] = op
    return op


def deflinear(
    name: str,
    kind: Kind,
    operands: Operands = (0,),
    *,
    offset: bool = False,
    lipschitz: LipschitzRule = "holder",
    disjoint: bool = False,
    batch: BatchRule | None = None,
) -> Op:
    """Registers a linear (or affine) JAX primitive."""
    if kind not in LINEAR_KINDS:
        raise ValueError(f"a linear op's kind is one of {sorted(LINEAR_KINDS)}, got {kind!r}")
    monotone = kind == "structural"  # non-negative coefficients: endpoints map to endpoints
    return _register(
        Op(name, kind, operands, offset, monotone, lipschitz, disjoint, impl=None, batch=batch)
    )


def defactivation(
    name: str,
    impl: Callable[..., Array] | None,
    *,
    lipschitz: LipschitzRule,
    monotone: bool = True,
    batch: BatchRule | None = None,
) -> Op:
    """Registers a non-linear graph node; ``impl(node, *operands)`` evaluates a synthetic
    one (None: the node keeps the JAX primitive it was traced from)."""
    return _register(
        Op(name, "activation", (0,), False, monotone, lipschitz, False, impl, batch=batch)
    )


def defmonotone(name: str, *, lipschitz: float | None = None, call: bool = False) -> Op:
    """Registers an elementwise non-decreasing function with its global Lipschitz
    constant, if it has one: a primitive such as ``tanh``, or (``call=True``) a ``jax.nn``
    function such as ``softplus``, recognised by the name of its jit."""
    return _register(Op(name, "monotone", (0,), False, True, lipschitz, False, None, call))


def graph_ops() -> Iterator[Op]:
    """The ops that appear as nodes of a traced graph: linear ops and activations."""
    return (op for op in OPS.values() if op.kind != "monotone")


def is_linear(name: str) -> bool:
    """Whether ``name`` is a registered linear (affine) op."""
    op = OPS.get(name)
    return op is not None and op.kind in LINEAR_KINDS


@dataclasses.dataclass(frozen=True)
class Unsupported:
    """A rule-table entry saying why a domain has no rule for an op; calling it raises
    :class:`~jaxcert.errors.UnsupportedOperation` naming the node's source line."""

    domain: str
    reason: str

    def __call__(self, node: Any, *args: Any, **kwargs: Any) -> Any:
        raise UnsupportedOperation(node.op, node.source, f"{self.domain}: {self.reason}")


def rule_table(
    domain: str,
    by_kind: Mapping[str, Any],
    overrides: Mapping[str, Any] | None = None,
    unsupported: Mapping[str, str] | None = None,
    default_reason: str = "no rule for this operation",
) -> dict[str, Any]:
    """A domain's rule table over every graph op: ``overrides[name]``, else
    ``by_kind[op.kind]`` (``"monotone"`` there stands for the non-decreasing activations
    without an override), else an :class:`Unsupported` entry with ``unsupported[name]``
    or ``default_reason``.

    Example:
      >>> table = rule_table("demo", {"sum": "add-rule"}, overrides={"relu": "relu-rule"})
      >>> table["sub"], table["relu"], type(table["dot_general"]).__name__
      ('add-rule', 'relu-rule', 'Unsupported')
    """
    overrides, unsupported = dict(overrides or {}), dict(unsupported or {})
    unknown = (set(overrides) | set(unsupported)) - set(OPS)
    if unknown:
        raise ValueError(f"{domain}: rules for unregistered ops {sorted(unknown)}")
    table: dict[str, Any] = {}
    for op in graph_ops():
        rule = overrides.get(op.name)
        if rule is None and op.name not in unsupported:
            rule = by_kind.get(op.kind)
            if rule is None and op.kind == "activation" and op.monotone:
                rule = by_kind.get("monotone")
        table[op.name] = (
            rule
            if rule is not None
            else Unsupported(domain, unsupported.get(op.name, default_reason))
        )
    return table


# ---------------------------------------------------------- batch independence


def _axes_exclude_batch(param: str, what: str) -> BatchRule:
    """A rule for ops whose ``param`` lists axes: the batch axis must not be one."""

    def rule(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
        axes = node.params[param]
        axes = (axes,) if isinstance(axes, int) else tuple(axes)
        return f"it {what} the batch axis" if 0 in axes else None

    return rule


def _window_keeps_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    p = node.params
    one = (
        p["window_dimensions"][0] == 1
        and p["window_strides"][0] == 1
        and tuple(p["padding"][0]) == (0, 0)
        and (p.get("base_dilation") or (1,))[0] == 1
    )
    return None if one else "its window spans several examples (the batch axis)"


def _transpose_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    return None if node.params["permutation"][0] == 0 else "it moves the batch axis"


def _reshape_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    dims = node.params.get("dimensions")
    if dims is not None and dims[0] != 0:
        return "it moves the batch axis"
    # Row-major: with the leading size kept, each example's entries stay in its row.
    return None if shapes[0][0] == node.shape[0] else "it merges or splits examples"


def _slice_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    p = node.params
    whole = p["start_indices"][0] == 0 and p["limit_indices"][0] == shapes[0][0]
    if not whole or (p.get("strides") or (1,))[0] != 1:
        return "it slices the batch axis"
    return None


def _dynamic_slice_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    # A full-size slice along the batch axis starts at 0 whatever the index (clamped).
    ok = node.params["slice_sizes"][0] == shapes[0][0]
    return None if ok else "it slices the batch axis"


def _pad_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    ok = tuple(node.params["padding_config"][0]) == (0, 0, 0)
    return None if ok else "it pads the batch axis"


def _broadcast_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    dims = node.params["broadcast_dimensions"]
    ok = bool(dims) and dims[0] == 0 and shapes[0][0] == node.shape[0]
    return None if ok else "it broadcasts across the batch axis"


def _concatenate_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    return "it concatenates along the batch axis" if node.params["dimension"] == 0 else None


def _tile_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    return "it tiles the batch axis" if node.params["reps"][0] != 1 else None


def _dot_general_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    """Output axis 0 must be the bounded operand's axis 0, neither contracted nor moved.

    dot_general's output axes are the batch axes, then the lhs's free axes, then the
    rhs's; e.g. ``(B, 4, 5, 4) @ (4, 4, 3)`` batches over the 4 and puts it first.
    """
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = node.params["dimension_numbers"]
    (side,) = node.bounded  # linear: exactly one bounded operand
    contract, batch = (lhs_contract, lhs_batch) if side == 0 else (rhs_contract, rhs_batch)
    if 0 in contract:
        return "it contracts (sums over) the batch axis"
    if batch:
        first = batch[0]
    elif side == 1 and len(shapes[0]) > len(lhs_contract):
        return "the constant's free axes come first: the batch axis moves"
    else:
        first = min(d for d in range(len(shapes[side])) if d not in contract)
    return None if first == 0 else "it moves the batch axis"


def _conv_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    if node.bounded != (0,):
        return "the kernel depends on the input"
    dims = node.params["dimension_numbers"]
    if dims.lhs_spec[0] != 0 or dims.out_spec[0] != 0:
        return "the batch axis is not the convolution's leading batch dimension"
    if node.params.get("batch_group_count", 1) != 1:
        return "batch groups mix examples"
    return None


def _gather_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    d = node.params["dimension_numbers"]
    if 0 in d.operand_batching_dims:  # e.g. take_along_axis: indices batched with x
        k = d.operand_batching_dims.index(0)
        ok = d.start_indices_batching_dims[k] == 0 and 0 not in d.offset_dims
        return None if ok else "it gathers across examples"
    if 0 in d.start_index_map or 0 in d.collapsed_slice_dims:
        return "it indexes the batch axis"
    whole = node.params["slice_sizes"][0] == shapes[0][0]
    return None if whole and d.offset_dims and d.offset_dims[0] == 0 else "it moves the batch axis"


# ----------------------------------------------------------------------- linear ops

# Weighted: the constant operand is a weight (interval radii go through |weight|).
deflinear("dot_general", "weighted", "one", lipschitz="spectral", batch=_dot_general_batch)
deflinear("conv_general_dilated", "weighted", "one", lipschitz="spectral", batch=_conv_batch)


def _batch_first_dot(node: Any, lhs: Array, rhs: Array) -> Array:
    params = {k: v for k, v in node.params.items() if k != "batch_axis"}
    return jnp.moveaxis(lax.dot_general(lhs, rhs, **params), node.params["batch_axis"], 0)


# A dot_general that puts its bounded operand's batch axis at ``params["batch_axis"]``
# (``x @ w`` with a batched ``w``, ``w @ x``), with that axis moved back to the front: the
# graph passes emit it, followed by a transpose that restores the primitive's layout.
_register(Op("batch_first_dot", "weighted", "one", lipschitz="spectral", impl=_batch_first_dot))
deflinear("mul", "weighted", "one")
deflinear("div", "weighted", (0,))
# Sums: several operands may be bounded (residual connections).
deflinear("add", "sum", "any", offset=True)
deflinear("add_any", "sum", "any", offset=True)
deflinear("sub", "sum", "any", offset=True)
deflinear("neg", "sum", (0,), lipschitz="moves")
# Structural maps with non-negative coefficients.
deflinear("concatenate", "structural", "any", offset=True, disjoint=True, batch=_concatenate_batch)
deflinear("stack", "structural", "any", disjoint=True)
deflinear("split", "structural", batch=_axes_exclude_batch("axis", "splits"))
deflinear("select_n", "structural", "cases", offset=True)
deflinear("pad", "structural", offset=True, lipschitz="moves", batch=_pad_batch)
deflinear("dynamic_update_slice", "structural", (0, 1), offset=True)
_STRUCTURAL_BATCH: dict[str, BatchRule | None] = {
    "reshape": _reshape_batch,
    "transpose": _transpose_batch,
    "squeeze": _axes_exclude_batch("dimensions", "squeezes"),
    "expand_dims": _axes_exclude_batch("dimensions", "inserts an axis before"),
    "rev": _axes_exclude_batch("dimensions", "reverses"),
    "slice": _slice_batch,
    "dynamic_slice": _dynamic_slice_batch,
}
for _name, _rule in _STRUCTURAL_BATCH.items():
    deflinear(_name, "structural", lipschitz="moves", batch=_rule)
for _name in ("copy", "copy_p", "convert_element_type", "sharding_constraint"):
    deflinear(_name, "structural", lipschitz="moves")
deflinear("optimization_barrier", "structural", lipschitz="moves")
deflinear("broadcast_in_dim", "structural", batch=_broadcast_batch)
deflinear("reduce_sum", "structural", batch=_axes_exclude_batch("axes", "sums over"))
deflinear("reduce_window_sum", "structural", batch=_window_keeps_batch)
deflinear("cumsum", "structural", batch=_axes_exclude_batch("axis", "sums along"))
deflinear("gather", "structural", batch=_gather_batch)
deflinear("tile", "structural", batch=_tile_batch)


# ---------------------------------------------------------------------- activations


def _max_pool_lipschitz(node: Any) -> float:
    # An input lies in at most prod(ceil(window / stride)) windows.
    dims, strides = node.params["window_dimensions"], node.params["window_strides"]
    return math.sqrt(math.prod(-(-d // s) for d, s in zip(dims, strides, strict=True)))


def _monotone_lipschitz(node: Any) -> float | None:
    rule = OPS[node.params["function"]].lipschitz
    return rule if isinstance(rule, float) else None


def _even_convex_lipschitz(node: Any) -> float | None:
    return 1.0 if node.params["function"] == "abs" else None  # x ** 2k has no global one


defactivation("relu", lambda node, z: jax.nn.relu(z), lipschitz=1.0)
# An even convex function, smallest at 0: |z| and z ** 2k (not monotone: IBP takes the
# minimum at 0 where the interval holds it).
defactivation(
    "even_convex", lambda node, z: node.fn(z), lipschitz=_even_convex_lipschitz, monotone=False
)
defactivation("leaky_relu", lambda node, z: jnp.maximum(z, node.params["slope"] * z), lipschitz=1.0)
defactivation("monotone", lambda node, z: node.fn(z), lipschitz=_monotone_lipschitz)
# The elementwise product of two bounded values (gating, x * x): the graph passes turn
# such a ``mul`` into this node; no global Lipschitz constant.
_register(Op("product", "activation", (0, 1), impl=lambda node, x, y: x * y, lipschitz=None))
# The elementwise max of two bounded values (maxout; min through negations).
_register(
    Op(
        "maximum",
        "activation",
        (0, 1),
        monotone=True,
        impl=lambda node, x, y: jnp.maximum(x, y),
        lipschitz=None,
    )
)
# 1 / z and 1 / sqrt(z): decreasing, with a pole at 0 (softmax's normalisation, layer
# norm); the graph passes make them from div, integer_pow and rsqrt.
_register(Op("reciprocal", "activation", (0,), impl=lambda node, z: 1 / z, lipschitz=None))
_register(Op("rsqrt", "activation", (0,), impl=lambda node, z: lax.rsqrt(z), lipschitz=None))


def _bilinear_batch(node: Any, shapes: list[tuple[int, ...]]) -> str | None:
    (lhs_contract, rhs_contract), (lhs_batch, rhs_batch) = node.params["dimension_numbers"]
    paired = bool(lhs_batch) and lhs_batch[0] == 0 and rhs_batch[0] == 0
    return None if paired else "it pairs each example with other examples (not batched)"


def _bilinear(node: Any, lhs: Array, rhs: Array) -> Array:
    return lax.dot_general(lhs, rhs, **node.params)


# A matrix product of two bounded values (attention scores, attention-weighted values),
# batched over the examples: a dot_general whose operands both depend on the input.
_register(
    Op("bilinear", "activation", (0, 1), impl=_bilinear, lipschitz=None, batch=_bilinear_batch)
)
# sin and cos (``params["phase"]``: the node is sin(z + phase), evaluated by its own
# primitive): neither monotone nor of one curvature, but of one curvature between
# consecutive zeros of sin(z + phase).
_register(Op("periodic", "activation", (0,), impl=lambda node, z: node.fn(z), lipschitz=1.0))
defactivation("max_pool", None, lipschitz=_max_pool_lipschitz, batch=_window_keeps_batch)
defactivation(
    "reduce_max", None, lipschitz=1.0, batch=_axes_exclude_batch("axes", "takes the max over")
)


# ------------------------------------------------------------ monotone functions

# Primitives, with their global Lipschitz constants where they have one.
defmonotone("logistic", lipschitz=0.25)
defmonotone("tanh", lipschitz=1.0)
defmonotone("erf", lipschitz=2 / math.sqrt(math.pi))
defmonotone("atan", lipschitz=1.0)
defmonotone("asinh", lipschitz=1.0)
defmonotone("sign")  # a step: non-decreasing, constant lines in the linear methods
for _name in ("exp", "expm1", "log", "log1p", "sqrt", "cbrt", "sinh"):
    defmonotone(_name)
# z ** k for odd k >= 3: the graph passes turn an ``integer_pow`` into this.
defmonotone("odd_pow")
# ``jax.nn`` functions, recognised by the name of their jit. (relu6 and hard_sigmoid are
# left to inline: they lower to max/min with constants, which become ReLUs with proper
# linear relaxations.) elu, celu and selu's constants depend on their alpha and scale.
defmonotone("sigmoid", lipschitz=0.25, call=True)
defmonotone("softplus", lipschitz=1.0, call=True)
defmonotone("log_sigmoid", lipschitz=1.0, call=True)
defmonotone("soft_sign", lipschitz=1.0, call=True)
defmonotone("hard_tanh", lipschitz=1.0, call=True)
# jnp.clip with both limits constant, and jax.nn.relu6: one node (the ReLU rewrite of each
# side would bound them as two nested activations).
defmonotone("clip", lipschitz=1.0, call=True)
defmonotone("relu6", lipschitz=1.0, call=True)
defmonotone("squareplus", lipschitz=1.0, call=True)
for _name in ("elu", "celu", "selu"):
    defmonotone(_name, call=True)
