"""Tightness indicators of linear relaxation bounds ("Improved Training of Certifiably
Robust Models", ``001_…`` Eq. 2-4 and Proposition 1).

A CROWN-family lower bound ``p*_C`` of a margin ``c_t . f`` is the minimum of a linear
function ``A_in . x + bias`` over the input set, attained at ``x*`` (the relaxed
problem's optimal input perturbation, :meth:`jaxcert.sets.InputSet.minimizer`).
Passing ``x*`` through the real network gives two indicators of how loose the bound is:

* ``d = c_t . f(x*) - p*_C >= 0``: the real margin at ``x*`` minus the bound (a real
  value above a lower bound, so never negative; 0 when no neuron is unstable, where
  the bound is exact);
* ``r``: over the unstable ReLUs, the distance of the real pre-activation at ``x*``
  from "the closest optimal solution of Fast-Lin" (§4.2): where the bound uses the lower
  line (the backward coefficient is positive; intercept 0), Fast-Lin's only solution on
  that line that a ReLU network can produce is the kink, so the distance is ``|x|``;
  where it uses the upper line (negative coefficient; the chord), the solutions are its
  ends, so ``min(|x - l|, |x - u|)``. ``r = 0`` at every neuron means the bound is
  attained (Proposition 1). The paper uses these Fast-Lin conditions for CROWN too, as a
  sufficient condition ("which also serves as a sufficient condition for CROWN"), and so
  do we: under CROWN a lower slope of 0 or 1 is also tight on a half-line (``x <= 0`` or
  ``x >= 0``), where ``r`` can be positive while ``d`` is 0. The paper's Eq. 3 is lost
  from our copy; we sum the absolute distances.

``x*`` is treated as a constant (``stop_gradient``), as the paper computes it first and
then evaluates the network there.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.bound_methods import METHODS, CrownIBP, LinearMethod, Method, get_method
from jaxcert.bounds import TracedNetwork
from jaxcert.domains import linear
from jaxcert.graph import evaluate
from jaxcert.sets import InputSet

Array = jax.Array

__all__ = ["Tightness", "tightness", "TIGHTNESS_METHODS"]

# The methods whose bound is one backward pass with fixed slopes: those with d and r.
TIGHTNESS_METHODS = tuple(name for name, m in METHODS.items() if isinstance(m, LinearMethod))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Tightness:
    """Per example and specification row, each ``(batch, n_spec)``.

    Attributes:
      lower: the sound lower bound ``p*_C`` (what :func:`jaxcert.bound` returns).
      d: ``c_t . f(x*) - p*_C`` (>= 0).
      r: summed distance of the unstable pre-activations at ``x*`` from Fast-Lin's
        feasible optimal solutions on the relaxation lines used (>= 0).
    """

    lower: Array
    d: Array
    r: Array


def _distance_to_fastlin_solutions(pre: Array, lo: Array, hi: Array) -> tuple[Array, Array]:
    """Distances from Fast-Lin's feasible optimal solutions: on the lower line (the kink
    0) and on the upper line (the chord's ends ``lo`` and ``hi``)."""
    on_lower = jnp.abs(pre)
    on_upper = jnp.minimum(jnp.abs(pre - lo), jnp.abs(pre - hi))
    return on_lower, on_upper


def tightness(
    fn: Callable[[Array], Array],
    input_set: InputSet,
    spec: Array,
    method: str | Method = CrownIBP(),
    *,
    network: TracedNetwork | None = None,
    **options: Any,
) -> Tightness:
    """The lower bound of ``spec @ fn`` and its tightness indicators ``d`` and ``r``.

    Args:
      fn: the network, ``(batch, *x) -> (batch, n_out)``.
      input_set: an input set with a :meth:`~jaxcert.sets.InputSet.minimizer`
        (Box, LinfBall, L2/L1 balls without clip, L0Ball).
      spec: ``(batch, n_spec, n_out)``, e.g. :func:`jaxcert.margin_spec`.
      method: a :class:`~jaxcert.LinearMethod` or its name (:data:`TIGHTNESS_METHODS`:
        ``"crown-ibp"``, ``"cap-ibp"``, ``"crown"``, ``"fastlin"``); ``**options`` are its
        own (``chunk_size=`` for the intermediate bounds of ``"crown"``, ...).
      network: a :class:`~jaxcert.bounds.TracedNetwork` of this ``fn`` and this very
        ``input_set``, to reuse its trace and intervals (a training loss that also
        bounds IBP then differentiates one IBP pass, not two).

    Example:
      >>> fn = lambda x: jax.nn.relu(x) @ jnp.array([[1.0], [1.0]])
      >>> s = jaxcert.LinfBall(jnp.array([[0.0, 1.0]]), 0.5)
      >>> t = tightness(fn, s, jnp.ones((1, 1, 1)), "fastlin")
      >>> float(t.lower[0, 0]), float(t.d[0, 0]), float(t.r[0, 0])  # x* = (-0.5, 0.5)
      (0.25, 0.25, 0.5)
    """
    resolved = get_method(method, **options)
    if not isinstance(resolved, LinearMethod):
        raise ValueError(
            f"unknown method {method!r} for tightness: it needs a linear method, one of "
            f"{TIGHTNESS_METHODS} or a LinearMethod"
        )
    if network is None:
        network = TracedNetwork(fn, input_set)
    elif network.input_set is not input_set:
        raise ValueError("network must be a TracedNetwork of this same input_set object")
    resolved.check(network)
    graph = network.graph
    intervals = resolved.intermediate(network)
    A = network.spec_matrix(spec)
    relus = linear.relu_nodes(graph)
    ctx = resolved.context(network, intervals)
    A_in, bias, kept = linear.coefficients(ctx, graph.output, A, keep={n.index for n in relus})
    if A_in is None:  # the output does not depend on the input
        zeros = jnp.zeros_like(bias)
        return Tightness(bias, zeros, zeros)
    lower = input_set.concretize(A_in, bias)[0]
    x_star = jax.lax.stop_gradient(input_set.minimizer(A_in))  # (batch, n_spec, *x)
    values = jax.vmap(lambda x: evaluate(graph, x), in_axes=1, out_axes=1)(x_star)
    spec_rows = A.reshape(A.shape[:2] + (-1,))
    out = values[graph.output].reshape(spec_rows.shape)
    d = jnp.einsum("bto,bto->bt", spec_rows, out) - lower

    r = jnp.zeros_like(d)
    for node in relus:
        if node.index not in kept:
            continue
        coeff = kept[node.index]  # (batch, n_spec, *shape[1:])
        lo, hi = intervals[node.inputs[0]]  # type: ignore[misc]
        pre = values[node.inputs[0]]
        on_lower, on_upper = _distance_to_fastlin_solutions(pre, lo[:, None], hi[:, None])
        unstable = ((lo < 0) & (hi > 0))[:, None]
        dist = jnp.where(coeff > 0, on_lower, 0) + jnp.where(coeff < 0, on_upper, 0)
        dist = jnp.where(unstable, dist, 0)
        r = r + jnp.sum(dist.reshape(dist.shape[:2] + (-1,)), axis=-1)
    return Tightness(lower, d, r)
