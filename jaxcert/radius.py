"""The largest radius a verifier certifies, per example, by vectorised bisection.

CNN-Cert, Fast-Lin and DoubleMargin (``000_…``) report "certified lower bounds on the
minimum distortion": for each example, the largest ``eps`` at which a sound verifier
proves every margin positive over the ball. :func:`certified_radius` finds it by
bisection on all examples at once -- each step bounds the whole batch with one radius
per example, inside one ``lax.fori_loop`` -- so it compiles to one XLA program with no
Python loop over examples or steps.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxcert.bound_methods import CrownIBP, Method, get_method
from jaxcert.bounds import bound
from jaxcert.sets import norm_ball
from jaxcert.specs import margin_spec

Array = jax.Array

__all__ = ["certified_radius"]


def certified_radius(
    fn: Callable[[Array], Array],
    x: Array,
    y: Array,
    method: str | Method = CrownIBP(),
    *,
    num_classes: int | None = None,
    norm: str = "linf",
    lo: float = 0.0,
    hi: float = 1.0,
    tol: float = 1e-3,
    clip: tuple[float, float] | None = None,
    **options: Any,
) -> Array:
    """Per example, the largest radius in ``[lo, hi]`` at which ``method`` certifies
    ``fn``'s prediction ``y`` (to within ``tol``).

    Bisection keeps, per example, a radius that is certified (the lower end) and one
    that is not (the upper end), so the result is always certified; the radius ``tol``
    above it was not, unless the result is ``hi``. An example not certified at ``lo``
    (e.g. misclassified when ``lo = 0``) gets 0. The search assumes that a smaller ball
    certifies whenever a larger one does, which holds for IBP and, in practice, for the
    linear-relaxation methods.

    Args:
      fn: ``(batch, *x) -> (batch, num_classes)`` logits.
      x: ``(batch, *x)`` inputs; y: ``(batch,)`` labels.
      method: a name of :data:`jaxcert.METHODS` or a method object; ``**options`` are its
        own (``key=`` for one that draws random numbers).
      num_classes: default: ``fn``'s output width.
      norm: ``"linf"``, ``"l2"`` or ``"l1"``.
      lo, hi: the search interval; tol: its resolution.
      clip: the valid input range, e.g. ``(0, 1)`` for pixels.

    Returns:
      ``(batch,)`` certified radii.

    Example:
      >>> fn = lambda x: x @ jnp.array([[1.0, -1.0]])  # margin 2 x: certified while eps < x
      >>> r = certified_radius(fn, jnp.array([[0.25], [0.5]]), jnp.array([0, 0]), tol=1e-4)
      >>> [round(float(v), 3) for v in r]
      [0.25, 0.5]
    """
    resolved = get_method(method, **options)
    if not 0 <= lo < hi < math.inf or not tol > 0:
        raise ValueError(f"need 0 <= lo < hi < inf and tol > 0, got lo={lo}, hi={hi}, tol={tol}")
    x = jnp.asarray(x)
    batch = x.shape[0]
    if num_classes is None:
        num_classes = int(jax.eval_shape(fn, x).shape[-1])
    spec = margin_spec(y, num_classes)
    per_example = (batch,) + (1,) * (x.ndim - 1) if norm == "linf" else (batch,)

    def certified(radius: Array) -> Array:
        s = norm_ball(norm, x, radius.reshape(per_example), clip)
        lower = bound(fn, s, resolved, spec=spec, bound_upper=False).lower
        return jnp.all(lower > 0, axis=-1)

    low = jnp.full((batch,), lo, x.dtype)
    high = jnp.full((batch,), hi, x.dtype)
    at_low, at_high = certified(low), certified(high)
    low = jnp.where(at_high, high, low)

    def step(_: Any, carry: tuple[Array, Array]) -> tuple[Array, Array]:
        low, high = carry
        mid = (low + high) / 2
        ok = certified(mid)
        return jnp.where(ok, mid, low), jnp.where(ok, high, mid)

    steps = max(0, math.ceil(math.log2((hi - lo) / tol)))
    low, _ = jax.lax.fori_loop(0, steps, step, (low, high))
    return jnp.where(at_low, low, 0.0)
