"""Margin propagation (SingleProp, DoubleMargin): approximate ranges in one extra pass.

APPROXIMATIONS, NOT BOUNDS. These domains centre a symmetric margin at the nominal
activations (the network's values at the clean input) instead of at the midpoint of a
sound interval, so the ranges they give can miss reachable values. They are training
signals (regularisers); :func:`margins` returns :class:`MarginBounds`, which nothing in
jaxcert accepts as a certificate.

Each node carries its nominal value ``z`` and a radius ``r >= 0`` (and, for
DoubleMargin, a second margin ``d >= 0``). Affine nodes map ``z`` through the op and
radii through the op with ``|weight|`` (:func:`jaxcert.domains.interval.propagate_radius`,
the rule IBP uses for its half-gaps). Activations ``y = sigma(z)``:

SingleProp (``002_…`` Eq. 6), with the relaxation ``a_L z + b_L <= sigma <= a_U z + b_U``
of ``sigma`` on ``[z - r, z + r]`` (:func:`jaxcert.relaxations.relu_relaxation`)::

    r' = (a_U + a_L) / 2 * r + (b_U - b_L) / 2 + (a_U - a_L) / 2 * z

which for an unstable ReLU is Eq. 7 (Fast-Lin slopes: ``3r/4 + z/2 - z^2/(4r)``) or
Eq. 8 (zero lower slope: ``(z + r)/2``), and ``r`` (or 0) when stable. Activations
without a linear relaxation (sigmoid, tanh, max-pool) use the half-gap
``(sigma(z + r) - sigma(z - r)) / 2``. ``r`` starts at ``eps`` for an Linf ball.

DoubleMargin (``000_…`` §4.2; Eq. 7-9 are lost from our copy, so this is our
reconstruction from its prose). ``s`` (here ``r``) is IBP's half-gap recursion centred
at ``z`` instead of at the interval midpoint. ``v`` (here ``d``) is "propagated the same
way, with an additional term that uses a finite difference approximation of the second
derivative of sigma at z", obtained by "applying [a 2nd-order Taylor expansion] to the
second term" of IBP's reparameterised recursion. That second term is the drift of IBP's
midpoint, ``(sigma(m + h) + sigma(m - h)) / 2 - sigma(m) = h^2/2 sigma''(m) + O(h^4)``;
centred at ``z`` with the margin ``s`` it is ``s^2/2 sigma''(z)``. One rule serves every
activation, elementwise or not (ReLU, sigmoid, max-pool, max): the second difference of
the activation along its input margin, with a step that is the fraction ``gamma`` of
that margin::

    s' = (sigma(z + s) - sigma(z - s)) / 2
    v' = (sigma(z + v) - sigma(z - v)) / 2
         + |sigma(z + gamma s) - 2 sigma(z) + sigma(z - gamma s)| / (2 gamma^2)

with ``s0 = eps``, ``v0 = 0``, and the range ``[z - s - v, z + s + v]``. Why this step:

* Elementwise, the last term is ``s^2/2 |sigma''|`` estimated with the step ``gamma s``;
  as ``gamma -> 0`` it tends to the Taylor term the paper starts from, and for a ReLU
  (second derivative zero almost everywhere, the paper's reason for a finite
  difference) it is non-zero exactly on the neurons whose kink lies within ``gamma s``
  of ``z``.
* ``gamma`` is a fraction, so "gamma > 0 small" means the same in every layer and the
  rule commutes with rescaling: a ReLU network whose input and ``eps`` are multiplied by
  ``c > 0`` gets margins multiplied by ``c``. An absolute step (``sigma(z + gamma)``,
  our earlier reading) has the units of the pre-activations and breaks this.
* A max-pool is not elementwise, and its second difference along a uniform shift is
  zero; along the margin it is ``s^T H s / 2`` as for the elementwise case. At
  ``gamma = 1`` the term is the exact midpoint drift ``(sigma(z + s) + sigma(z - s))/2 -
  sigma(z)`` of a convex activation, IBP's own second term.

``gamma`` is ``DoubleMargin(gamma=...)`` (``method.gamma`` in a config; default 0.1,
a guess: 000's value is in its lost App. G). So ``v`` stays 0 on a network that is
linear around ``z`` (every finite difference vanishes), and ``s`` alone equals IBP's
half-gap whenever IBP's midpoints are the nominal values (e.g. no unstable neuron).
Variants: ``"double-margin-s"`` (``s`` only) and ``"ibp+v"`` (IBP's half-gaps replace
``s`` and the range is ``[l - v, u + v]``).

Methods are option objects (:class:`SingleProp`, :class:`DoubleMargin`), named in
:data:`MARGIN_METHODS`; the domain's rule table ``RULES`` is derived from the op
registry: affine ops move ``z`` and the margins, (leaky) ReLUs can take SingleProp's
relaxed radius, other activations (elementwise or pooling) the half-gap, and every
activation the one second-difference term above.

Other input sets (L2, L1, :class:`~jaxcert.sets.L0Ball`): the first layer's margins
(every pre-activation reached from the input by affine ops only) are set to exactly half
the range of values it takes over the set (DoubleMargin: "for general p norms the
second layer margins are modified so that s1 is exactly half the range"), computed by
backward passes, which are exact on an affine map.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

from jaxcert import ops
from jaxcert.domains import interval
from jaxcert.domains.intermediate import exact_affine_intervals, ibp_intervals
from jaxcert.graph import Graph, Node, Ref, trace
from jaxcert.options import Registry
from jaxcert.relaxations import relu_relaxation
from jaxcert.sets import InputSet

Array = jax.Array

__all__ = [
    "MARGIN_METHODS",
    "MarginMethod",
    "SingleProp",
    "DoubleMargin",
    "MarginBounds",
    "RULES",
    "margins",
    "propagate",
    "register_margin_method",
]


class MarginMethod:
    """Base of the margin-propagation methods (approximations, never certificates).

    Attributes read by the rules: ``relaxation`` (SingleProp: the lower ReLU slope of
    the relaxation it approximates; None for DoubleMargin), ``drift`` (carry
    DoubleMargin's second margin ``v``), ``ibp_radii`` (IBP's half-gaps replace ``s``),
    ``gamma`` (the second-order finite-difference step, a fraction of the margin).
    """

    relaxation: str | None = None
    drift: bool = False
    ibp_radii: bool = False
    gamma: float = 0.1


@dataclasses.dataclass(frozen=True)
class SingleProp(MarginMethod):
    """SingleProp's margin (``002_…`` Eq. 6-8) with the ReLU relaxation whose lower slope
    is ``relaxation``: ``"zero"`` (SingleProp-Zero), ``"fastlin"`` or ``"adaptive"``
    (CROWN's).

    Example:
      >>> fn = lambda x: jax.nn.relu(x)
      >>> m = margins(fn, jaxcert.LinfBall(jnp.array([[0.05]]), 0.1), SingleProp("zero"))
      >>> round(float(m.upper[0, 0] - m.nominal[0, 0]), 6)  # Eq. 8: (z + r) / 2
      0.075
    """

    relaxation: str = "zero"


@dataclasses.dataclass(frozen=True)
class DoubleMargin(MarginMethod):
    """DoubleMargin's ``s`` and ``v`` margins (``000_…`` §4.2, our reconstruction).

    ``drift=False`` keeps ``s`` alone (``"double-margin-s"``); ``ibp_radii=True`` replaces
    ``s`` by IBP's half-gaps and ranges ``[l - v, u + v]`` (``"ibp+v"``); ``gamma`` is the
    finite-difference step of the second-order term, as a fraction of the margin ``s``.

    Example:
      >>> fn = lambda x: jax.nn.relu(x)
      >>> m = margins(fn, jaxcert.LinfBall(jnp.array([[1.0]]), 0.1), DoubleMargin())
      >>> round(float(m.upper[0, 0]), 6)  # a stable ReLU: linear, no drift
      1.1
    """

    drift: bool = True
    ibp_radii: bool = False
    gamma: float = 0.1
    relaxation: ClassVar[None] = None  # type: ignore[misc]

    def __post_init__(self) -> None:
        if not self.gamma > 0:
            raise ValueError(f"gamma must be > 0, got {self.gamma}")


_REGISTRY: Registry[MarginMethod] = Registry("margin method", MarginMethod)
MARGIN_METHODS = _REGISTRY.defaults


def register_margin_method(name: str, method: MarginMethod, *, override: bool = False) -> None:
    """Makes ``name`` a margin method (for :func:`margins` and the training methods)."""
    _REGISTRY.register(name, method, override=override)


for _name, _method in (
    ("singleprop-zero", SingleProp("zero")),
    ("singleprop-fastlin", SingleProp("fastlin")),
    ("singleprop-crown", SingleProp("adaptive")),
    ("double-margin", DoubleMargin()),
    ("double-margin-s", DoubleMargin(drift=False)),
    ("ibp+v", DoubleMargin(ibp_radii=True)),
):
    register_margin_method(_name, _method)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class MarginBounds:
    """Approximate output ranges from a margin domain: NOT a certificate.

    Attributes:
      nominal: ``(batch, *out)`` the network at the clean input (its logits).
      lower, upper: ``(batch, *out)`` the approximate range.
      intermediate: with ``return_intermediate``, ``{activation name: (lower, upper)}``
        of the activations' inputs; else None.
    """

    nominal: Array
    lower: Array
    upper: Array
    intermediate: dict[str, tuple[Array, Array]] | None = None


# ---------------------------------------------------------------------- rules

# A node's nominal value, radius r and second margin d (None without drift).
State = tuple[Array, Array, Array | None]
Rule = Callable[
    [Node, Sequence[Any], Sequence[Any], Sequence[Any], Array | None, MarginMethod], State
]


def _half_gap(node: Node, z: Array, r: Array) -> Array:
    return (node.apply(z + r) - node.apply(z - r)) / 2


def _relaxed_radius(node: Node, z: Array, r: Array, slope: str) -> Array:
    """SingleProp Eq. 6: the radius after a (leaky) ReLU relaxed on ``[z - r, z + r]``."""
    k = node.params.get("slope", 0.0)

    # Recomputed in the gradient rather than stored (as the linear domain's ReLU step).
    @jax.checkpoint
    def radius(z: Array, r: Array) -> Array:
        relax = relu_relaxation(z - r, z + r, slope, k)
        a_sum = relax.upper_slope + relax.lower_slope
        a_diff = relax.upper_slope - relax.lower_slope
        return a_sum / 2 * r + (relax.upper_bias - relax.lower_bias) / 2 + a_diff / 2 * z

    return radius(z, r)


def _affine_rule(node, z_ops, r_ops, d_ops, ibp_r, method) -> State:
    z_new = node.apply(*z_ops)
    r_new = interval.propagate_radius(node, r_ops)
    d_new = interval.propagate_radius(node, d_ops) if method.drift else None
    return z_new, r_new, d_new


def _second_difference(node: Node, z: Array, s: Array, gamma: float) -> Array:
    """DoubleMargin's second-order term: ``|f(z + g s) - 2 f(z) + f(z - g s)| / (2 g^2)``.

    ``s^2/2 |f''(z)|`` for an elementwise ``f`` (``s^T H s / 2`` for a max) by a finite
    difference along the margin ``s`` with the relative step ``g = gamma``.
    """
    step = gamma * s
    second = node.apply(z + step) - 2 * node.apply(z) + node.apply(z - step)
    return jnp.abs(second) / (2 * gamma**2)


def _activation_rule(relaxed: bool = False) -> Rule:
    """The rule of an activation; ``relaxed``: it has a linear relaxation, whose radius
    SingleProp takes."""

    def rule(node, z_ops, r_ops, d_ops, ibp_r, method) -> State:
        (z_in,), (r_in,), (d_in,) = z_ops, r_ops, d_ops
        r_in = r_in if ibp_r is None else ibp_r
        if relaxed and method.relaxation is not None:
            r_new = _relaxed_radius(node, z_in, r_in, method.relaxation)
        else:
            r_new = _half_gap(node, z_in, r_in)
        d_new = None
        if method.drift:
            d_new = _half_gap(node, z_in, d_in) + _second_difference(node, z_in, r_in, method.gamma)
        return node.apply(z_in), r_new, d_new

    return rule


RULES: dict[str, Rule] = ops.rule_table(
    "margins",
    {
        "weighted": _affine_rule,
        "sum": _affine_rule,
        "structural": _affine_rule,
        "monotone": _activation_rule(),
    },
    overrides={
        "relu": _activation_rule(relaxed=True),
        "leaky_relu": _activation_rule(relaxed=True),
        "max_pool": _activation_rule(),
        "reduce_max": _activation_rule(),
    },
    unsupported={
        "even_convex": "the margin methods propagate through non-decreasing activations "
        "only (|z| and even powers are not)",
        "reciprocal": "the margin methods propagate through non-decreasing activations only",
        "rsqrt": "the margin methods propagate through non-decreasing activations only",
        "bilinear": "the margin methods propagate one bounded value per activation, not "
        "matrix products of two",
        "periodic": "the margin methods propagate through non-decreasing activations only",
        "product": "the margin methods propagate one bounded value per activation, not "
        "products of two",
        "maximum": "the margin methods propagate one bounded value per activation, not "
        "the max of two",
    },
)


def propagate(
    graph: Graph,
    input_set: InputSet,
    method: MarginMethod,
    *,
    chunk_size: int | None = None,
) -> tuple[list[Array], list[Array], list[Array] | None, list[interval.Interval] | None]:
    """Nominal values and margins of every node: ``(z, r, d or None, IBP intervals or None)``.

    ``d`` is DoubleMargin's second margin (None without drift); the IBP intervals are
    computed only for ``ibp_radii``.
    """
    x = input_set.nominal().astype(graph.nodes[0].dtype)
    first = exact_affine_intervals(graph, input_set, chunk_size)
    ibp = ibp_intervals(graph, input_set, exact=first) if method.ibp_radii else None
    exact = {index: (hi - lo) / 2 for index, (lo, hi) in first.items()}

    z: list[Any] = [x]
    r: list[Any] = [input_set.coordinate_radius().astype(x.dtype)]
    d: list[Any] = [jnp.zeros_like(x)]
    for node in graph.nodes[1:]:

        def operands(values: list[Any], node: Node = node) -> list[Any]:
            return [values[a.index] if isinstance(a, Ref) else a for a in node.args]

        ibp_r = None
        if ibp is not None and not ops.is_linear(node.op):
            lo, hi = ibp[node.inputs[0]]
            ibp_r = (hi - lo) / 2
        z_new, r_new, d_new = RULES[node.op](
            node, operands(z), operands(r), operands(d), ibp_r, method
        )
        z.append(z_new)
        r.append(exact.get(node.index, r_new))
        d.append(d_new)
    return z, r, (d if method.drift else None), ibp


def _range(
    method: MarginMethod,
    index: int,
    z: list[Array],
    r: list[Array],
    d: list[Array] | None,
    ibp: Any,
) -> tuple[Array, Array]:
    if method.ibp_radii:
        lo, hi = ibp[index]
        return lo - d[index], hi + d[index]  # type: ignore[index]
    width = r[index] + d[index] if d is not None else r[index]
    return z[index] - width, z[index] + width


def margins(
    fn: Callable[[Array], Array],
    input_set: InputSet,
    method: str | MarginMethod = SingleProp("zero"),
    *,
    return_intermediate: bool = False,
    chunk_size: int | None = None,
    **options: Any,
) -> MarginBounds:
    """Approximate output ranges of ``fn`` over ``input_set`` by margin propagation.

    One pass over the traced ``fn`` that computes the nominal output (use it as the
    logits: no separate forward pass is needed) and a margin. Not sound: see the
    module docstring; use :func:`jaxcert.bound` to certify.

    Args:
      fn: maps ``(batch, *x_shape)`` to ``(batch, *out)``; traced like
        :func:`jaxcert.bound`.
      input_set: the perturbation set; its :meth:`~jaxcert.sets.InputSet.nominal` point
        is the clean input.
      method: a name of :data:`MARGIN_METHODS` or a :class:`MarginMethod`.
      return_intermediate: also return the ranges at the activations' inputs.
      chunk_size: neurons per pass for the exact first layer of non-box sets.
      **options: the method's own options (e.g. ``gamma=`` for DoubleMargin); any
        other raises :class:`TypeError`.

    Returns:
      :class:`MarginBounds`.

    Example:
      >>> fn = lambda x: jax.nn.relu(x) @ jnp.array([[1.0], [-1.0]])
      >>> m = margins(fn, jaxcert.LinfBall(jnp.array([[0.05, 1.0]]), 0.1))
      >>> # the unstable first ReLU passes (0.05 + 0.1) / 2, the stable second 0.1
      >>> round(float(m.nominal[0, 0]), 6), round(float(m.upper[0, 0] - m.nominal[0, 0]), 6)
      (-0.95, 0.175)
    """
    resolved = _REGISTRY.resolve(method, **options)
    dtype = jnp.result_type(input_set.bounding_box()[0])
    graph = trace(fn, input_set.shape, dtype)
    z, r, d, ibp = propagate(graph, input_set, resolved, chunk_size=chunk_size)
    lower, upper = _range(resolved, graph.output, z, r, d, ibp)
    inter = None
    if return_intermediate:
        inter = {}
        for node in graph.activations:
            inter[node.name or f"node_{node.index}"] = _range(
                resolved, node.inputs[0], z, r, d, ibp
            )
    return MarginBounds(z[graph.output], lower, upper, inter)
