"""Linear relaxations of activations, as data.

A relaxation of ``y = f(z)`` on ``l <= z <= u`` is two lines per neuron,

    lower_slope * z + lower_bias  <=  f(z)  <=  upper_slope * z + upper_bias,

valid for every ``z`` in ``[l, u]``. The backward (CROWN-family) domain picks the
lower line where a coefficient is positive and the upper line where it is negative.

Besides the ReLU family, :func:`curved_relaxation` relaxes smooth activations by their
curvature (:data:`CURVATURE`), with CROWN's rules for general activations (Zhang et al.,
2018, Sec. 3.2): on a convex piece the chord lies above and tangents below; on an
S-shaped function (convex below 0, concave above: sigmoid, tanh, ...) over an interval
around 0, the chord where it stays on the right side, else the tangent that passes
through the far endpoint, found by bisection.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

Array = jax.Array

__all__ = [
    "Relaxation",
    "LOWER_SLOPE_RULES",
    "CURVATURE",
    "relu_relaxation",
    "constant_relaxation",
    "curved_relaxation",
    "CLIPS",
    "clip_relaxation",
    "monotone_relaxation",
]

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


# The curvature of each elementwise non-decreasing function the engine relaxes with
# lines (by its op-registry name): "convex", "concave", "s" (convex on z <= 0, concave
# on z >= 0) or "inverse-s" (concave, then convex). The others (elu, celu, selu, whose
# curvature depends on their parameters) keep constant lines.
CURVATURE: dict[str, str] = {
    **dict.fromkeys(("exp", "expm1", "softplus", "squareplus"), "convex"),
    **dict.fromkeys(("log", "log1p", "sqrt", "log_sigmoid"), "concave"),
    **dict.fromkeys(
        ("logistic", "sigmoid", "tanh", "erf", "atan", "asinh", "soft_sign", "cbrt"), "s"
    ),
    "sinh": "inverse-s",
    "odd_pow": "inverse-s",  # z ** 3, z ** 5, ...
}

_BISECTION_STEPS = 30  # the tangent points; soundness does not depend on convergence


def _tangent(fn: Callable[[Array], Array], d: Array) -> tuple[Array, Array]:
    """The tangent line of ``fn`` at ``d``: ``(slope, bias)``."""
    value, slope = jax.jvp(fn, (d,), (jnp.ones_like(d),))
    return slope, value - slope * d


def _chord(f_lower: Array, f_upper: Array, lower: Array, upper: Array) -> tuple[Array, Array]:
    gap = upper - lower
    slope = (f_upper - f_lower) / jnp.where(gap > 0, gap, 1)
    return slope, f_lower - slope * lower


def _convex_lines(fn: Callable[[Array], Array], lower: Array, upper: Array) -> Relaxation:
    """A convex piece: the tangent at the midpoint below, the chord above."""
    below = _tangent(fn, (lower + upper) / 2)
    above = _chord(fn(lower), fn(upper), lower, upper)
    return Relaxation(*below, *above)


def _s_lines(fn: Callable[[Array], Array], lower: Array, upper: Array) -> Relaxation:
    """Convex on ``z <= 0``, concave on ``z >= 0`` (assumes ``l < 0 < u`` where it matters;
    the one-sided cases are handled by the caller)."""
    f_l, f_u = fn(lower), fn(upper)
    chord = _chord(f_l, f_u, lower, upper)
    slope_l, slope_u = (_tangent(fn, b)[0] for b in (lower, upper))

    # Above: the chord is above f iff f'(u) >= its slope (the gap chord - f is concave
    # on [l, 0] and convex on [0, u], zero at both ends). Otherwise the tangent at the
    # d in [0, u] whose line passes through (l, f(l)): t_d(l) - f(l) increases with d
    # on the concave side, so bisection keeps the end where it is >= 0 (a sound line).
    def above_l(d: Array) -> Array:
        slope, bias = _tangent(fn, d)
        return slope * lower + bias - f_l

    # Below, mirrored: the tangent at d in [l, 0] passing under (u, f(u)).
    def below_u(d: Array) -> Array:
        slope, bias = _tangent(fn, d)
        return slope * upper + bias - f_u

    def bisect(_: int, brackets: tuple[Array, ...]) -> tuple[Array, ...]:
        a_lo, a_hi, b_lo, b_hi = brackets
        a_mid, b_mid = (a_lo + a_hi) / 2, (b_lo + b_hi) / 2
        a_ok = above_l(a_mid) >= 0  # sound: move the upper end down to it
        b_ok = below_u(b_mid) <= 0  # sound: move the lower end up to it
        return (
            jnp.where(a_ok, a_lo, a_mid),
            jnp.where(a_ok, a_mid, a_hi),
            jnp.where(b_ok, b_mid, b_lo),
            jnp.where(b_ok, b_hi, b_mid),
        )

    zero = jnp.zeros_like(lower)
    start = (zero, jnp.maximum(upper, 0), jnp.minimum(lower, 0), zero)
    _, d_above, d_below, _ = jax.lax.fori_loop(0, _BISECTION_STEPS, bisect, start)
    tangent_above, tangent_below = _tangent(fn, d_above), _tangent(fn, d_below)
    chord_above, chord_below = slope_u >= chord[0], slope_l >= chord[0]
    pick = lambda use_chord, tangent: tuple(  # noqa: E731
        jnp.where(use_chord, c, t) for c, t in zip(chord, tangent, strict=True)
    )
    return Relaxation(*pick(chord_below, tangent_below), *pick(chord_above, tangent_above))


def _negated(relax: Relaxation) -> Relaxation:
    """Lines of ``-f`` from lines of ``f``: the lower and upper lines swap and negate."""
    ls, lb, us, ub = relax
    return Relaxation(-us, -ub, -ls, -lb)


def curved_relaxation(
    curvature: str,
    fn: Callable[[Array], Array],
    lower: Array,
    upper: Array,
    value_range: tuple[Array, Array] | None = None,
) -> Relaxation:
    """Lines around a smooth ``fn`` on ``[l, u]`` by its ``curvature``.

    ``"convex"``: the tangent at the midpoint below, the chord above; ``"concave"``: the
    mirror. ``"s"`` (convex on ``z <= 0``, concave on ``z >= 0``): the convex or concave
    rule when ``[l, u]`` lies on one side, else CROWN's rule (the chord where it is
    valid, otherwise the tangent through the far endpoint). ``"inverse-s"``: the mirror.
    Each side falls back to its constant line (``f(l) <= f(z)``, ``f(z) <= f(u)``) where
    that encloses less area with ``f``, where the interval is (nearly) a point, and where
    a line would not be finite (``log`` at ``l <= 0``, ``exp`` overflowing).

    Args:
      curvature: one of the values of :data:`CURVATURE`.
      fn: the elementwise function (differentiable by ``jax.jvp``).
      lower, upper: its input bounds, same shape.
      value_range: the range of ``fn`` on ``[l, u]``, the constant lines; default
        ``(f(l), f(u))``, right for a non-decreasing ``fn`` only.

    Returns:
      The :class:`Relaxation`, each field shaped like ``lower``.

    Example:
      >>> r = curved_relaxation("convex", jnp.exp, jnp.array([0.0]), jnp.array([2.0]))
      >>> r.lower_slope, r.upper_slope  # tangent at 1; chord (e^2 - 1) / 2
      (Array([2.7182817], dtype=float32), Array([3.194528], dtype=float32))
    """
    if curvature not in ("convex", "concave", "s", "inverse-s"):
        raise ValueError(f"unknown curvature {curvature!r}")
    if not isinstance(lower, jax.core.Tracer):
        # Eagerly, dozens of small ops would each dispatch (and the loop compile anew):
        # one compiled program per function instead.
        return _curved_jit(curvature, fn, lower, upper, value_range)
    return _curved(curvature, fn, lower, upper, value_range)


def _curved(
    curvature: str,
    fn: Callable[[Array], Array],
    lower: Array,
    upper: Array,
    value_range: tuple[Array, Array] | None,
) -> Relaxation:
    flipped = curvature in ("concave", "inverse-s")
    # A concave f is -(a convex function); an inverse-S f is -(an S-shaped one).
    g = (lambda z: -fn(z)) if flipped else fn
    if curvature in ("convex", "concave"):
        relax = _convex_lines(g, lower, upper)
    else:
        relax = _s_lines(g, lower, upper)
        convex_side = _convex_lines(g, lower, upper)
        concave_side = _negated(_convex_lines(lambda z: -g(z), lower, upper))
        relax = Relaxation(
            *(
                jnp.where(upper <= 0, cv, jnp.where(lower >= 0, cc, s))
                for cv, cc, s in zip(convex_side, concave_side, relax, strict=True)
            )
        )
    if flipped:
        relax = _negated(relax)
    f_l, f_u = (fn(lower), fn(upper)) if value_range is None else value_range
    value_scale = jnp.maximum(jnp.abs(f_l), jnp.abs(f_u))
    input_scale = jnp.maximum(jnp.abs(lower), jnp.abs(upper))
    # Each side keeps its line where the line encloses less area with f than the
    # constant f(l) or f(u) does (its value at the midpoint is on the constant's inner
    # side): over a wide interval a tangent through a far endpoint can be looser than
    # the constant. Constant lines also where the interval is a point to rounding or a
    # line is not finite.
    mid = (lower + upper) / 2
    point = upper - lower <= 1e-6 * jnp.maximum(1, input_scale)
    finite = functools.reduce(jnp.logical_and, [jnp.isfinite(v) for v in relax])
    usable = finite & ~point
    keep_lower = usable & (relax.lower_slope * mid + relax.lower_bias >= f_l)
    keep_upper = usable & (relax.upper_slope * mid + relax.upper_bias <= f_u)
    zero = jnp.zeros_like(lower)
    lower_slope = jnp.where(keep_lower, relax.lower_slope, zero)
    upper_slope = jnp.where(keep_upper, relax.upper_slope, zero)

    # Each line is moved outwards by a few rounding errors of the values it is made of
    # (f's values, and its input: softplus or squareplus lose digits to cancellation at
    # large |z|; float tanh is not monotone to the last bit), so that float arithmetic
    # cannot put it on the wrong side of the f that the network computes.
    def margin(slope: Array) -> Array:
        return 8 * jnp.finfo(lower.dtype).eps * (value_scale + (1 + jnp.abs(slope)) * input_scale)

    return Relaxation(
        lower_slope,
        jnp.where(keep_lower, relax.lower_bias, f_l) - margin(lower_slope),
        upper_slope,
        jnp.where(keep_upper, relax.upper_bias, f_u) + margin(upper_slope),
    )


_curved_jit = jax.jit(_curved, static_argnums=(0, 1))


# The activations that clip their input to ``[a, b]`` (piecewise linear: relaxed by
# :func:`clip_relaxation`, exactly where the interval lies in one piece). The limits
# are read off the function as ``f(-inf)`` and ``f(+inf)``.
CLIPS = frozenset({"hard_tanh", "clip", "relu6"})


def _clip_upper(lower: Array, upper: Array, a: Array, b: Array) -> tuple[Array, Array]:
    """The upper line ``(slope, bias)`` of ``clip(z, a, b)`` on ``[l, u]``.

    Where ``l < a`` the function is convex up to ``b``: the chord from ``(l, a)`` to
    ``(c, f(c))``, ``c = min(u, b)``, lies above it on ``[l, c]`` and, rising, above the
    flat ``b`` after ``c``. Where ``l >= a`` it is concave: the identity lies above it.
    Either line is kept only where it is below the constant ``f(u)`` at the midpoint:
    every candidate lies above ``f``, so that is where it encloses less area (ties go
    to the constant, as the adaptive ReLU rule has it).
    """
    f_u = jnp.clip(upper, a, b)
    c = jnp.minimum(upper, b)
    gap = c - lower
    chord_slope = jnp.where(gap > 0, (jnp.clip(c, a, b) - a) / jnp.where(gap > 0, gap, 1), 0)
    chord_bias = a - chord_slope * lower
    convex = lower < a
    slope = jnp.where(convex, chord_slope, 1)
    bias = jnp.where(convex, chord_bias, 0)
    keep = (slope * (lower + upper) / 2 + bias < f_u) & jnp.isfinite(bias)
    return jnp.where(keep, slope, 0), jnp.where(keep, bias, f_u)


def clip_relaxation(lower: Array, upper: Array, a: Array, b: Array) -> Relaxation:
    """Lines around ``clip(z, a, b)`` (``a <= b``, either may be infinite) on ``[l, u]``.

    Exact where ``[l, u]`` lies in one linear piece (the constant ``a`` or ``b``, or the
    identity). Across a corner, each side takes the line through the far end's corner
    (above: from ``(l, a)`` to ``(min(u, b), f(min(u, b)))``; below, mirrored) or the
    identity, unless the constant at that side's end of the range encloses less. The
    lower lines are the upper ones of ``-clip(-z, -b, -a)``, which is the same function.

    Example:
      >>> r = clip_relaxation(jnp.array([-3.0, -0.5]), jnp.array([0.5, 3.0]), -1.0, 1.0)
      >>> r.upper_slope  # the chord from (-3, -1) to (0.5, 0.5); the constant 1
      Array([0.42857143, 0.        ], dtype=float32)
      >>> r.lower_slope  # the constant -1; the chord from (-0.5, -0.5) to (3, 1)
      Array([0.        , 0.42857143], dtype=float32)
    """
    a = jnp.broadcast_to(jnp.asarray(a, lower.dtype), lower.shape)
    b = jnp.broadcast_to(jnp.asarray(b, lower.dtype), lower.shape)
    upper_slope, upper_bias = _clip_upper(lower, upper, a, b)
    mirror_slope, mirror_bias = _clip_upper(-upper, -lower, -b, -a)
    # Outward by a few rounding errors of the numbers each line is made of.
    value_scale = jnp.maximum(jnp.abs(jnp.clip(lower, a, b)), jnp.abs(jnp.clip(upper, a, b)))
    input_scale = jnp.maximum(jnp.abs(lower), jnp.abs(upper))

    def margin(slope: Array) -> Array:
        return 8 * jnp.finfo(lower.dtype).eps * (value_scale + (1 + jnp.abs(slope)) * input_scale)

    return Relaxation(
        mirror_slope,
        -mirror_bias - margin(mirror_slope),
        upper_slope,
        upper_bias + margin(upper_slope),
    )


def monotone_relaxation(
    function: str, fn: Callable[[Array], Array], lower: Array, upper: Array
) -> Relaxation:
    """Lines around the non-decreasing activation ``fn`` (op-registry name ``function``)
    on ``[l, u]``: :func:`clip_relaxation` for :data:`CLIPS`, :func:`curved_relaxation`
    by :data:`CURVATURE`, else the constant lines ``f(l) <= f(z) <= f(u)``.

    Example:
      >>> lo, hi = jnp.array([-0.5]), jnp.array([0.5])
      >>> r = monotone_relaxation("hard_tanh", jax.nn.hard_tanh, lo, hi)
      >>> r.lower_slope, r.upper_slope  # inside one piece: the identity
      (Array([1.], dtype=float32), Array([1.], dtype=float32))
    """
    if function in CLIPS:
        a, b = (fn(jnp.full(lower.shape, v, lower.dtype)) for v in (-jnp.inf, jnp.inf))
        return clip_relaxation(lower, upper, a, b)
    curvature = CURVATURE.get(function)
    if curvature is None:
        return constant_relaxation(fn(lower), fn(upper))
    return curved_relaxation(curvature, fn, lower, upper)
