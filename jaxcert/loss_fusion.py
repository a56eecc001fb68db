"""Loss fusion: one linear bound of the cross-entropy itself instead of one per margin.

The robust cross-entropy of CROWN-IBP bounds each margin ``z_y - z_j`` with its own
backward pass (``num_classes - 1`` specification rows) and then builds worst-case
logits. Loss fusion (as auto_LiRPA offers it) bounds the loss directly:

    CE(z, y) = log S,    S = sum_j exp(d_j),    d_j = z_j - z_y   (d_y = 0).

IBP gives each ``d_j`` an interval ``[a_j, b_j]``; on it ``exp`` lies below its chord
``exp(d) <= s_j d + t_j``. So ``S <= sum_j s_j d_j + sum_j t_j``, and
``sum_j s_j d_j = -(s^T C) z`` with ``C`` the margin specification: a single row,
whose bound costs one backward pass whatever the number of classes. Everything is
shifted by ``M = max_j b_j`` first so that no ``exp`` overflows (``log`` of the shifted
sum plus ``M`` is the same bound).

The result is a sound upper bound of the cross-entropy over the input set, and a
sound certificate: ``S < 2`` forces every ``d_j < 0`` (``S >= 1 + exp(max_j d_j)``).
It differs from the margin-wise robust cross-entropy (neither is always tighter);
with ``beta`` it mixes with IBP's bound of ``S`` as CROWN-IBP mixes margins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxcert.bound_methods import IBP, METHODS, CrownIBP, LinearMethod, Method, get_method
from jaxcert.bounds import TracedNetwork
from jaxcert.sets import InputSet
from jaxcert.specs import margin_spec

Array = jax.Array

__all__ = ["FusedLossBound", "LINEAR_METHODS", "fused_cross_entropy_bound"]

# The registered methods whose bound of the fused row is one backward pass.
LINEAR_METHODS = tuple(name for name, m in METHODS.items() if isinstance(m, LinearMethod))


class FusedLossBound(NamedTuple):
    """Per-example results of :func:`fused_cross_entropy_bound`.

    Attributes:
      upper: ``(batch,)`` upper bounds of the cross-entropy over the input set.
      verified: ``(batch,)`` bool, the label provably wins everywhere in the set.

    Example:
      >>> b = FusedLossBound(upper=jnp.array([0.3]), verified=jnp.array([True]))
      >>> float(jnp.mean(b.upper))  # the robust term of a training loss
      0.3...
    """

    upper: Array
    verified: Array


def _exp_chord(a: Array, b: Array) -> tuple[Array, Array]:
    """Slope and intercept of the chord of ``exp`` on ``[a, b]`` (``a <= b``).

    ``exp`` is convex, so the chord lies above it on the interval. The slope is
    written as ``exp(b) (1 - exp(-w)) / w`` (``w = b - a``): no overflow for wide
    intervals, accurate (``expm1``) for narrow ones; a point interval gets the tangent.
    """
    width = b - a
    narrow = width < 1e-6
    safe = jnp.where(narrow, 1.0, width)
    slope = jnp.exp(b) * jnp.where(narrow, 1.0, -jnp.expm1(-safe) / safe)
    return slope, jnp.exp(a) - slope * a


def fused_cross_entropy_bound(
    fn: Callable[[Array], Array],
    input_set: InputSet,
    y: Array,
    num_classes: int,
    method: str | Method = CrownIBP(),
    beta: float | Array = 1.0,
) -> FusedLossBound:
    """Upper bound of ``CE(fn(x'), y)`` over every ``x'`` in ``input_set``, fused.

    Args:
      fn: maps ``(batch, *x_shape)`` to ``(batch, num_classes)`` logits.
      input_set: a :mod:`jaxcert.sets` set with ``batch`` examples.
      y: ``(batch,)`` integer labels.
      num_classes: number of classes.
      method: the linear bound of the fused row: a :class:`~jaxcert.LinearMethod` or its
        name (:data:`LINEAR_METHODS`).
      beta: weight of the linear bound of ``S`` against IBP's (``0``: IBP's robust
        cross-entropy exactly; ``1``: the linear bound alone).

    Returns:
      :class:`FusedLossBound`; ``upper`` averaged over the batch is the training loss.

    Example:
      >>> import jaxcert
      >>> from jaxcert.loss_fusion import fused_cross_entropy_bound
      >>> fn = lambda x: x @ jnp.array([[1.0, -1.0]])
      >>> s = jaxcert.LinfBall(jnp.array([[1.0]]), 0.5)
      >>> b = fused_cross_entropy_bound(fn, s, jnp.array([0]), 2)
      >>> round(float(b.upper[0]), 4), bool(b.verified[0])  # CE at x = 0.5: log(1 + e^-1)
      (0.3133, True)
    """
    linear_method = get_method(method)
    if not isinstance(linear_method, LinearMethod):
        raise ValueError(
            f"loss fusion takes a linear method, one of {LINEAR_METHODS} or a LinearMethod; "
            f"got {method!r}"
        )
    spec = margin_spec(y, num_classes)
    net = TracedNetwork(fn, input_set)  # the row's bound reuses these IBP intervals
    margins = net.bound(IBP(), spec=spec, bound_upper=True)
    # d_j = -(z_y - z_j) lies in [-upper margin, -lower margin]; shift by M = max_j b_j
    # (and d_y = 0), a constant that cancels in M + log(S e^-M).
    shift = jax.lax.stop_gradient(jnp.maximum(jnp.max(-margins.lower, axis=-1), 0.0))
    a = -margins.upper - shift[:, None]
    b = -margins.lower - shift[:, None]
    label_term = jnp.exp(-shift)  # exp(d_y - M)
    ibp_sum = jnp.sum(jnp.exp(b), axis=-1) + label_term

    slope, intercept = _exp_chord(a, b)
    # sum_j slope_j d_j = -(slope^T C) z: the one row whose lower bound is needed.
    row = jnp.einsum("bj,bjk->bk", slope, spec)[:, None, :]
    lower = net.bound(linear_method, spec=row, bound_upper=False).lower[:, 0]
    linear_sum = -lower + jnp.sum(intercept - slope * shift[:, None], axis=-1) + label_term
    # S >= exp(d_y - M): clamping at it keeps rounding from leaving the domain of log.
    linear_sum = jnp.maximum(linear_sum, label_term)

    mixed = (1 - beta) * ibp_sum + beta * linear_sum
    upper = shift + jnp.log(mixed)
    tightest = shift + jnp.log(jnp.minimum(ibp_sum, linear_sum))
    verified = (tightest < jnp.log(2.0)) | jnp.all(margins.lower > 0, axis=-1)
    return FusedLossBound(upper, verified)
