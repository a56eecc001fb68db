"""Linear relaxations of activations, as data.

A relaxation of ``y = f(z)`` on ``l <= z <= u`` is two lines per neuron,

    lower_slope * z + lower_bias  <=  f(z)  <=  upper_slope * z + upper_bias,

valid for every ``z`` in ``[l, u]``. The backward (CROWN-family) domain picks the
lower line where a coefficient is positive and the upper line where it is negative.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = ["Relaxation", "LOWER_SLOPE_RULES", "relu_relaxation", "constant_relaxation"]

# Named choices of the lower ReLU slope of unstable neurons (l < 0 < u):
# (lower, upper, upper line's slope, k) -> slope.
_LowerSlope = Callable[[Array, Array, Array, Array], Array]
_LOWER_SLOPES: dict[str, _LowerSlope] = {
    "adaptive": lambda lower, upper, upper_slope, k: jnp.where(upper > -lower, 1, k),
    "fastlin": lambda lower, upper, upper_slope, k: upper_slope,
    "zero": lambda lower, upper, upper_slope, k: jnp.broadcast_to(k, lower.shape),
    "one": lambda lower, upper, upper_slope, k: jnp.ones_like(lower),
}
LOWER_SLOPE_RULES = tuple(_LOWER_SLOPES)


class Relaxation(NamedTuple):
    """Lower and upper lines of an activation, elementwise over the neurons."""

    lower_slope: Array
    lower_bias: Array
    upper_slope: Array
    upper_bias: Array


def relu_relaxation(
    lower: Array,
    upper: Array,
    lower_slope: str | Array = "adaptive",
    negative_slope: float | Array = 0.0,
) -> Relaxation:
    """The CROWN-family relaxation of ``max(z, k z)`` (ReLU for ``k = 0``) on ``[l, u]``.

    Stable neurons are exact (slope 1 when ``l >= 0``, ``k`` when ``u <= 0``). For an
    unstable neuron the upper line passes through ``(l, k l)`` and ``(u, u)``; the lower
    line passes through the origin with slope

    * ``"adaptive"`` (CROWN): 1 if ``u > -l`` else ``k``;
    * ``"fastlin"`` (Fast-Lin, CAP): the upper slope ``(u - k l) / (u - l)``;
    * ``"zero"`` / ``"one"``: ``k`` / 1;
    * an array ``a`` in ``[0, 1]`` (broadcastable to ``lower``): ``k + a (1 - k)``.

    Args:
      lower, upper: pre-activation bounds, same shape.
      lower_slope: the rule or array above.
      negative_slope: ``k`` in ``[0, 1]`` (leaky ReLU), scalar or broadcastable.

    Returns:
      The :class:`Relaxation`, each field shaped like ``lower``.

    Example:
      >>> r = relu_relaxation(jnp.array([-1.0]), jnp.array([3.0]))
      >>> r.upper_slope, r.upper_bias, r.lower_slope
      (Array([0.75], dtype=float32), Array([0.75], dtype=float32), Array([1.], dtype=float32))
    """
    k = jnp.asarray(negative_slope, lower.dtype)
    # Clamping l <= 0 <= u makes one formula exact for stable neurons too: it gives
    # slope 1 and bias 0 when l >= 0, slope k and bias 0 when u <= 0.
    l_neg = jnp.minimum(lower, 0)
    u_pos = jnp.maximum(upper, 0)
    gap = u_pos - l_neg
    safe_gap = jnp.where(gap > 0, gap, 1)
    upper_slope = jnp.where(gap > 0, (u_pos - k * l_neg) / safe_gap, k)
    upper_bias = l_neg * (k - upper_slope)

    if isinstance(lower_slope, str):
        if lower_slope not in _LOWER_SLOPES:
            raise ValueError(
                f"unknown lower slope rule {lower_slope!r}; expected one of "
                f"{LOWER_SLOPE_RULES} or an array in [0, 1]"
            )
        unstable_slope = _LOWER_SLOPES[lower_slope](lower, upper, upper_slope, k)
    else:
        a = jnp.clip(jnp.asarray(lower_slope, lower.dtype), 0, 1)
        unstable_slope = k + a * (1 - k)
    active = lower >= 0
    inactive = upper <= 0
    slope = jnp.where(active, 1, jnp.where(inactive, k, unstable_slope)).astype(lower.dtype)
    return Relaxation(slope, jnp.zeros_like(lower), upper_slope, upper_bias)


def constant_relaxation(f_lower: Array, f_upper: Array) -> Relaxation:
    """Constant lines ``f(l) <= f(z) <= f(u)`` of a non-decreasing function.

    Sound for any monotone activation (sigmoid, tanh, softplus, ...) and for max-pool's
    upper side, at the price of cutting the backward pass there.
    """
    zeros = jnp.zeros_like(f_lower)
    return Relaxation(zeros, f_lower, zeros, f_upper)
