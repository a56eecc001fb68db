"""Input sets: the regions a bound holds over.

Every set is batched: its ``center`` (or ``lower``/``upper``) has shape
``(batch, *x_shape)``. Each set answers what the bound domains ask of it -- its
bounding box, the exact range of a linear function ``A x + b`` over itself (dense or on
receptive-field patches), its clean input, an L2 ball that encloses it -- so no domain
branches on a set's type. Sets are pytrees, so they pass through
``jit``/``vmap``/``grad``.

Validation: with concrete arrays a bad set (negative or non-finite eps, lower >
upper) raises ``ValueError`` at construction. Under a trace the values are not
known, so the set instead poisons its bounds with NaN, which training stops on:
never a silently wrong bound.
"""

from __future__ import annotations

import abc
import dataclasses
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxcert.patch_rows import PatchRows

Array = jax.Array

__all__ = ["InputSet", "Box", "LinfBall", "L2Ball", "L1Ball", "L0Ball", "NORM_BALLS", "norm_ball"]

# Bounds are certificates: no reduced-precision (TF32) matmuls when concretising.
_HIGHEST = lax.Precision.HIGHEST


def _concrete(x: Any) -> np.ndarray | None:
    """The value of ``x`` as NumPy, or None when it is an abstract tracer."""
    try:
        return np.asarray(x)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        return None


def _arraylike(*xs: Any) -> bool:
    """True for real values (pytree utilities sometimes rebuild sets from placeholders)."""
    return all(isinstance(x, (jax.Array, np.ndarray, np.generic, int, float)) for x in xs)


def _arrays_from_sequences(obj: Any, *names: str) -> None:
    """Array fields given as lists or tuples of numbers become arrays, so that they are
    validated like arrays (``LinfBall(x, [-0.3])`` must not skip the checks)."""
    for name in names:
        value = getattr(obj, name)
        if isinstance(value, (list, tuple)):
            object.__setattr__(obj, name, jnp.asarray(value))


def _check_finite(x: Any, what: str) -> None:
    value = _concrete(x)
    if value is not None and not np.all(np.isfinite(value)):
        bad = int(np.sum(~np.isfinite(value)))
        raise ValueError(f"{what} must be finite; it has {bad} NaN or infinite entries")


def _check_eps(eps: Any, name: str = "eps") -> None:
    value = _concrete(eps)
    if value is None:
        return
    if not np.all(np.isfinite(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    if np.any(value < 0):
        raise ValueError(f"{name} must be >= 0, got min {value.min()}")


def _check_clip(clip: tuple[Any, Any] | None) -> None:
    if clip is None:
        return
    if len(clip) != 2:
        raise ValueError(f"clip must be a (low, high) pair, got {clip!r}")
    low, high = (_concrete(c) for c in clip)
    if any(v is not None and np.any(np.isnan(v)) for v in (low, high)):
        raise ValueError(f"clip must not be NaN, got {clip!r}")
    if low is not None and high is not None and np.any(low > high):
        raise ValueError(f"clip low must be <= high, got {clip!r}")


def _flat(a: Array, lead: int) -> Array:
    """Flattens every axis after the first ``lead`` ones."""
    return a.reshape(a.shape[:lead] + (-1,))


def _box_concretize(
    A: Array, bias: Array | None, lower: Array, upper: Array
) -> tuple[Array, Array]:
    """Exact min/max of ``A x + bias`` over the box ``[lower, upper]``.

    Centre/radius form (the form IBP and CROWN implementations use):
    ``A mid -/+ |A| rad``.
    """
    A2 = _flat(A, 2)
    mid = _flat((upper + lower) / 2, 1)
    rad = _flat((upper - lower) / 2, 1)
    center = jnp.einsum("bsi,bi->bs", A2, mid, precision=_HIGHEST)
    deviation = jnp.einsum("bsi,bi->bs", jnp.abs(A2), rad, precision=_HIGHEST)
    if bias is not None:
        center = center + bias
    return center - deviation, center + deviation


def _box_concretize_patches(
    rows: PatchRows, bias: Array | None, lower: Array, upper: Array
) -> tuple[Array, Array]:
    """:func:`_box_concretize` for rows that live on windows of the input."""
    center = rows.dot((upper + lower) / 2)
    if bias is not None:
        center = bias + center
    deviation = rows.abs_dot((upper - lower) / 2)
    return center - deviation, center + deviation


def _poison(valid: Array | bool, lower: Array, upper: Array) -> tuple[Array, Array]:
    """The box, or NaN where ``valid`` is False (only matters under a trace)."""
    if valid is True:
        return lower, upper
    return jnp.where(valid, lower, jnp.nan), jnp.where(valid, upper, jnp.nan)


class InputSet(abc.ABC):
    """A batched set of inputs ``{x' : x' in S_b}`` for each example ``b``.

    Example (every set answers the same questions):
      >>> s = LinfBall(jnp.zeros((1, 2)), 0.5)
      >>> s.shape, s.concretize(jnp.array([[[1.0, 1.0]]]))[0]
      ((1, 2), Array([[-1.]], dtype=float32))
    """

    @property
    @abc.abstractmethod
    def shape(self) -> tuple[int, ...]:
        """``(batch, *x_shape)``."""

    @abc.abstractmethod
    def bounding_box(self) -> tuple[Array, Array]:
        """Tightest box containing the set: ``(lower, upper)``, each ``(batch, *x_shape)``."""

    @abc.abstractmethod
    def concretize(self, A: Array, bias: Array | None = None) -> tuple[Array, Array]:
        """Exact ``(min, max)`` of ``A x + bias`` over the set.

        Args:
          A: ``(batch, n_spec, *x_shape)`` linear coefficients per example.
          bias: optional ``(batch, n_spec)`` offsets.

        Returns:
          ``(lower, upper)``, each ``(batch, n_spec)``.
        """

    @abc.abstractmethod
    def sample(self, key: Array, num: int) -> Array:
        """``num`` random points of the set: ``(num, batch, *x_shape)``."""

    @abc.abstractmethod
    def nominal(self) -> Array:
        """The clean input the set is built around: a ball's centre, a box's middle.

        Margin propagation and BCP propagate their nominal values from it.
        """

    @abc.abstractmethod
    def enclosing_l2_ball(self) -> tuple[Array, Array]:
        """An L2 ball containing the set, around :meth:`nominal`: ``(center, radius)``,
        ``(batch, *x_shape)`` and ``(batch,)`` (BCP propagates it)."""

    @property
    def is_box(self) -> bool:
        """Whether the set is its own bounding box (then IBP's input bounds are exact)."""
        return False

    def coordinate_radius(self) -> Array:
        """Per-coordinate radius around :meth:`nominal` that margin propagation starts
        from: half the width of the bounding box (an Linf ball: its ``eps``).

        Example:
          >>> Box(jnp.zeros((1, 2)), jnp.array([[1.0, 3.0]])).coordinate_radius()
          Array([[0.5, 1.5]], dtype=float32)
        """
        lo, hi = self.bounding_box()
        return (hi - lo) / 2

    def concretize_patches(self, rows: PatchRows, bias: Array | None = None) -> tuple[Array, Array]:
        """:meth:`concretize` for coefficient rows that vanish outside a window of the
        (NHWC) input each: ``(lower, upper)``, each ``(batch, n_rows)``.

        The default writes the rows out densely; box-shaped sets read only the windows.
        """
        return self.concretize(rows.dense(self.shape), bias)

    def minimizer(self, A: Array) -> Array:
        """A point of the set where ``A x`` is smallest, per specification row.

        Args:
          A: ``(batch, n_spec, *x_shape)``.

        Returns:
          ``(batch, n_spec, *x_shape)``: row ``s`` of example ``b`` attains the lower
          value of :meth:`concretize` for ``A[b, s]``. The tightness regularisers read
          it (the relaxation's optimal input perturbation).
        """
        raise NotImplementedError(
            f"{type(self).__name__} has no exact minimiser of a linear function"
        )

    def _check_A(self, A: Array) -> None:
        if A.ndim < 2 or A.shape[0] != self.shape[0] or A.shape[2:] != self.shape[1:]:
            raise ValueError(
                f"A must have shape (batch, n_spec, *x_shape) = ({self.shape[0]}, n_spec, "
                f"{', '.join(map(str, self.shape[1:]))}), got {A.shape}"
            )


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class Box(InputSet):
    """The box ``lower <= x' <= upper`` (elementwise).

    Example:
      >>> s = Box(jnp.zeros((1, 2)), jnp.ones((1, 2)))
      >>> s.concretize(jnp.array([[[1.0, -1.0]]]))
      (Array([[-1.]], dtype=float32), Array([[1.]], dtype=float32))
    """

    lower: Array
    upper: Array

    def __post_init__(self) -> None:
        _arrays_from_sequences(self, "lower", "upper")
        if not _arraylike(self.lower, self.upper):
            return
        if jnp.shape(self.lower) != jnp.shape(self.upper):
            raise ValueError(
                f"Box lower and upper must have the same shape, got "
                f"{jnp.shape(self.lower)} and {jnp.shape(self.upper)}"
            )
        lo, hi = _concrete(self.lower), _concrete(self.upper)
        if lo is not None and hi is not None:
            if not (np.all(np.isfinite(lo)) and np.all(np.isfinite(hi))):
                raise ValueError("Box bounds must be finite")
            if np.any(lo > hi):
                raise ValueError(
                    f"Box lower > upper at {int(np.sum(lo > hi))} entries "
                    f"(max excess {float(np.max(lo - hi)):.3g})"
                )

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.lower))

    def _valid(self) -> Array | bool:
        if _concrete(self.lower) is not None and _concrete(self.upper) is not None:
            return True
        return jnp.all(self.lower <= self.upper)

    def bounding_box(self) -> tuple[Array, Array]:
        return _poison(self._valid(), jnp.asarray(self.lower), jnp.asarray(self.upper))

    def concretize(self, A: Array, bias: Array | None = None) -> tuple[Array, Array]:
        self._check_A(A)
        lo, hi = self.bounding_box()
        return _box_concretize(A, bias, lo, hi)

    def sample(self, key: Array, num: int) -> Array:
        lo, hi = self.bounding_box()
        u = jax.random.uniform(key, (num, *self.shape), dtype=lo.dtype)
        return lo + u * (hi - lo)

    def vertices(self, key: Array, num: int) -> Array:
        """``num`` random corners of the box: ``(num, batch, *x_shape)``."""
        lo, hi = self.bounding_box()
        pick = jax.random.bernoulli(key, 0.5, (num, *self.shape))
        return jnp.where(pick, hi, lo)

    def minimizer(self, A: Array) -> Array:
        self._check_A(A)
        lo, hi = self.bounding_box()
        lo, hi = lo[:, None], hi[:, None]
        # Where A is 0 any point is a minimiser: take the middle (sign(0) = 0).
        return jnp.where(A > 0, lo, jnp.where(A < 0, hi, (lo + hi) / 2))

    @property
    def is_box(self) -> bool:
        return True

    def nominal(self) -> Array:
        return (jnp.asarray(self.lower) + jnp.asarray(self.upper)) / 2

    def enclosing_l2_ball(self) -> tuple[Array, Array]:
        lo, hi = self.bounding_box()
        half = _flat((hi - lo) / 2, 1)
        return (lo + hi) / 2, jnp.sqrt(jnp.sum(half * half, axis=-1))

    def concretize_patches(self, rows: PatchRows, bias: Array | None = None) -> tuple[Array, Array]:
        return _box_concretize_patches(rows, bias, *self.bounding_box())


@dataclasses.dataclass(frozen=True)
class _Ball(InputSet):
    """Shared parts of the balls around a ``center`` of radius ``eps``, within ``clip``."""

    center: Array
    eps: ArrayLike
    clip: tuple[Any, Any] | None = None

    def __post_init__(self) -> None:
        _arrays_from_sequences(self, "center", "eps")
        if not _arraylike(self.center, self.eps):
            return
        _check_finite(self.center, "the center")
        _check_eps(self.eps)
        _check_clip(self.clip)
        self._check_eps_shape(jnp.shape(self.eps), jnp.shape(self.center))

    @abc.abstractmethod
    def _check_eps_shape(self, eps_shape: tuple[int, ...], shape: tuple[int, ...]) -> None:
        """Raises ValueError for an ``eps`` this ball cannot take."""

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.center))

    def nominal(self) -> Array:
        return jnp.asarray(self.center)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class LinfBall(_Ball):
    """``{x' : ||x' - center||_inf <= eps}``, intersected with ``clip`` when given.

    ``eps`` is a scalar or broadcastable to ``center`` (per example ``(batch, 1, ...)`` or
    per feature). ``clip=(low, high)`` intersects with the valid input range, e.g. pixels in
    ``[0, 1]``; the intersection is still a box, so concretisation stays exact.

    Example:
      >>> x = jnp.full((1, 3), 0.5)
      >>> LinfBall(x, 0.1, clip=(0.0, 1.0)).bounding_box()[0]
      Array([[0.4, 0.4, 0.4]], dtype=float32)
    """

    def _check_eps_shape(self, eps_shape: tuple[int, ...], shape: tuple[int, ...]) -> None:
        try:
            jnp.broadcast_shapes(eps_shape, shape)
        except ValueError as e:
            raise ValueError(
                f"eps of shape {eps_shape} does not broadcast to the center's shape {shape}"
            ) from e

    def bounding_box(self) -> tuple[Array, Array]:
        eps = jnp.asarray(self.eps, dtype=jnp.result_type(self.center))
        lo, hi = self.center - eps, self.center + eps
        if self.clip is not None:
            lo = jnp.clip(lo, self.clip[0], self.clip[1])
            hi = jnp.clip(hi, self.clip[0], self.clip[1])
        concrete = _concrete(eps) is not None and _concrete(self.center) is not None
        valid = True if concrete else jnp.all(jnp.isfinite(eps) & (eps >= 0))
        if not concrete:  # a NaN or infinite centre (clipped, inf would look like 1.0)
            valid = valid & jnp.all(jnp.isfinite(self.center))
        return _poison(valid, lo, hi)

    def concretize(self, A: Array, bias: Array | None = None) -> tuple[Array, Array]:
        self._check_A(A)
        lo, hi = self.bounding_box()
        return _box_concretize(A, bias, lo, hi)

    def sample(self, key: Array, num: int) -> Array:
        lo, hi = self.bounding_box()
        return Box(lo, hi).sample(key, num)

    def vertices(self, key: Array, num: int) -> Array:
        """``num`` random corners of the (clipped) box: ``(num, batch, *x_shape)``."""
        lo, hi = self.bounding_box()
        return Box(lo, hi).vertices(key, num)

    def minimizer(self, A: Array) -> Array:
        lo, hi = self.bounding_box()
        return Box(lo, hi).minimizer(A)

    @property
    def is_box(self) -> bool:
        return True

    def coordinate_radius(self) -> Array:
        # The margin papers start from v0 = eps * 1, ignoring the clip range.
        x = jnp.asarray(self.center)
        return jnp.broadcast_to(jnp.asarray(self.eps, x.dtype), x.shape)

    def enclosing_l2_ball(self) -> tuple[Array, Array]:
        x = jnp.asarray(self.center)
        batch, n = x.shape[0], math.prod(x.shape[1:])
        eps = jnp.asarray(self.eps, x.dtype)
        # eps broadcasts against the centre from the right: (batch, 1, ..., 1) is per
        # example, while e.g. (C,) is per channel, even when C equals the batch size.
        if eps.size == 1 or (eps.ndim == x.ndim and all(d == 1 for d in eps.shape[1:])):
            # One radius per example: the ball through the corners, eps sqrt(n).
            return x, jnp.broadcast_to(eps.reshape(-1), (batch,)) * math.sqrt(n)
        half = _flat(jnp.broadcast_to(eps, x.shape), 1)
        return x, jnp.sqrt(jnp.sum(half * half, axis=-1))

    def concretize_patches(self, rows: PatchRows, bias: Array | None = None) -> tuple[Array, Array]:
        return _box_concretize_patches(rows, bias, *self.bounding_box())


def _batch_eps(eps: ArrayLike, batch: int, dtype: Any) -> Array:
    """An L2/L1 radius as ``(batch, 1)`` from a scalar or ``(batch,)``."""
    eps = jnp.asarray(eps, dtype=dtype)
    return jnp.broadcast_to(eps.reshape(-1), (batch,))[:, None] if eps.ndim else eps


@dataclasses.dataclass(frozen=True)
class _NormBall(_Ball):
    """Shared parts of the L2 and L1 balls (radius ``eps``: scalar or ``(batch,)``)."""

    def _check_eps_shape(self, eps_shape: tuple[int, ...], shape: tuple[int, ...]) -> None:
        if eps_shape not in ((), (shape[0],)):
            raise ValueError(
                f"{type(self).__name__} eps must be a scalar or have shape (batch,) = "
                f"({shape[0]},), got {eps_shape}"
            )

    def _eps_column(self) -> Array:
        eps = _batch_eps(self.eps, self.shape[0], jnp.result_type(self.center))
        if _concrete(eps) is None:
            eps = jnp.where(jnp.isfinite(eps) & (eps >= 0), eps, jnp.nan)
        return eps

    def bounding_box(self) -> tuple[Array, Array]:
        # Both balls fit in the Linf ball of the same radius, and that box is tight.
        eps = self._eps_column().reshape((-1,) + (1,) * (len(self.shape) - 1))
        return LinfBall(self.center, eps, self.clip).bounding_box()

    def enclosing_l2_ball(self) -> tuple[Array, Array]:
        # An L1 ball lies in the L2 ball of the same radius.
        eps = jnp.broadcast_to(self._eps_column().reshape(-1), (self.shape[0],))
        return jnp.asarray(self.center), eps

    @abc.abstractmethod
    def _dual_norm(self, A_flat: Array) -> Array:
        """``||A_s||_*`` per row: ``(batch, n_spec, n) -> (batch, n_spec)``."""

    def concretize(self, A: Array, bias: Array | None = None) -> tuple[Array, Array]:
        self._check_A(A)
        A2 = _flat(A, 2)
        center = jnp.einsum("bsi,bi->bs", A2, _flat(self.center, 1), precision=_HIGHEST)
        if bias is not None:
            center = center + bias
        deviation = self._eps_column() * self._dual_norm(A2)
        lower, upper = center - deviation, center + deviation
        if self.clip is not None:
            # Ball ∩ box is not a ball: the best of the two sound bounds, not exact.
            box_lower, box_upper = _box_concretize(A, bias, *self.bounding_box())
            lower, upper = jnp.maximum(lower, box_lower), jnp.minimum(upper, box_upper)
        return lower, upper

    def _eps_per_row(self) -> Array:
        """The radius as ``(batch, 1, 1)``, to scale ``(batch, n_spec, n)`` steps."""
        return jnp.broadcast_to(self._eps_column(), (self.shape[0], 1))[:, :, None]

    def _unclipped(self) -> None:
        if self.clip is not None:
            raise NotImplementedError(
                f"{type(self).__name__} with clip has no exact minimiser (ball ∩ box); "
                "use it without clip"
            )

    def _clip(self, x: Array) -> Array:
        # Clipping moves every coordinate towards a center inside the clip box, so it
        # never leaves the ball.
        return x if self.clip is None else jnp.clip(x, self.clip[0], self.clip[1])


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class L2Ball(_NormBall):
    """``{x' : ||x' - center||_2 <= eps}`` per example, optionally intersected with ``clip``.

    Concretisation uses the dual norm: ``A c -/+ eps ||A||_2`` (exact without clip).

    Example:
      >>> s = L2Ball(jnp.zeros((1, 2)), 1.0)
      >>> s.concretize(jnp.array([[[3.0, 4.0]]]))
      (Array([[-5.]], dtype=float32), Array([[5.]], dtype=float32))
    """

    def minimizer(self, A: Array) -> Array:
        self._check_A(A)
        self._unclipped()
        A2 = _flat(A, 2)
        norm = self._dual_norm(A2)[..., None]
        direction = jnp.where(norm > 0, A2 / jnp.where(norm > 0, norm, 1), 0)
        step = -self._eps_per_row() * direction
        return self.center[:, None] + step.reshape(A.shape)

    def _dual_norm(self, A_flat: Array) -> Array:
        # Double `where`: exact, with a finite gradient at an all-zero row.
        squares = jnp.sum(A_flat * A_flat, axis=-1)
        positive = squares > 0
        return jnp.where(positive, jnp.sqrt(jnp.where(positive, squares, 1)), 0)

    def sample(self, key: Array, num: int) -> Array:
        kdir, krad = jax.random.split(key)
        n = int(np.prod(self.shape[1:]))
        direction = jax.random.normal(kdir, (num, self.shape[0], n), self.center.dtype)
        direction = direction / jnp.linalg.norm(direction, axis=-1, keepdims=True)
        radius = jax.random.uniform(krad, (num, self.shape[0], 1), self.center.dtype) ** (1 / n)
        step = direction * radius * self._eps_column()
        return self._clip(self.center + step.reshape((num, *self.shape)))


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class L1Ball(_NormBall):
    """``{x' : ||x' - center||_1 <= eps}`` per example, optionally intersected with ``clip``.

    Concretisation uses the dual norm: ``A c -/+ eps ||A||_inf`` (exact without clip).

    Example:
      >>> s = L1Ball(jnp.zeros((1, 2)), 1.0)
      >>> s.concretize(jnp.array([[[3.0, -4.0]]]))
      (Array([[-4.]], dtype=float32), Array([[4.]], dtype=float32))
    """

    def _dual_norm(self, A_flat: Array) -> Array:
        return jnp.max(jnp.abs(A_flat), axis=-1)

    def minimizer(self, A: Array) -> Array:
        self._check_A(A)
        self._unclipped()
        A2 = _flat(A, 2)
        # All the budget on one coordinate of largest |A|, against its sign.
        top = jax.nn.one_hot(jnp.argmax(jnp.abs(A2), axis=-1), A2.shape[-1], dtype=A2.dtype)
        step = -self._eps_per_row() * top * jnp.sign(A2)
        return self.center[:, None] + step.reshape(A.shape)

    def sample(self, key: Array, num: int) -> Array:
        # Uniform in the L1 ball: exponential magnitudes normalised by one extra
        # exponential, with random signs.
        kexp, ksign = jax.random.split(key)
        n = int(np.prod(self.shape[1:]))
        e = jax.random.exponential(kexp, (num, self.shape[0], n + 1), self.center.dtype)
        mags = e[..., :n] / jnp.sum(e, axis=-1, keepdims=True)
        signs = jax.random.rademacher(ksign, mags.shape, self.center.dtype)
        step = signs * mags * self._eps_column()
        return self._clip(self.center + step.reshape((num, *self.shape)))


def _top_k_sum(values: Array, k: int) -> Array:
    """Sum of the ``k`` largest entries along the last axis (all of them if fewer)."""
    if k >= values.shape[-1]:
        return jnp.sum(values, axis=-1)
    return jnp.sum(lax.top_k(values, k)[0], axis=-1)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class L0Ball(InputSet):
    """At most ``k`` entries of ``center`` changed, each to any value in ``clip``.

    The L0 threat model of DoubleMargin (its App. H): ``{x' : ||x' - center||_0 <= k,
    clip[0] <= x' <= clip[1]}``, counting entries of the flattened input (a pixel's
    channels count separately). Concretisation is exact: the largest change of ``A x``
    comes from the ``k`` entries with the largest gains
    ``max(A_i (high - x_i), A_i (low - x_i))``. The bounding box is the whole ``clip``
    box (any single entry may move), which is what IBP sees.

    Example:
      >>> s = L0Ball(jnp.array([[0.5, 0.5, 0.5]]), k=1)
      >>> s.concretize(jnp.array([[[1.0, -2.0, 0.5]]]))  # -0.25 -/+ moving the 2nd entry
      (Array([[-1.25]], dtype=float32), Array([[0.75]], dtype=float32))
    """

    center: Array
    k: int = dataclasses.field(metadata=dict(static=True))
    clip: tuple[Any, Any] = (0.0, 1.0)

    def __post_init__(self) -> None:
        _arrays_from_sequences(self, "center")
        if not _arraylike(self.center):
            return
        _check_finite(self.center, "the center")
        if self.clip is not None:
            _check_finite(jnp.asarray(self.clip, dtype=jnp.float32), "L0Ball's clip range")
        if not isinstance(self.k, (int, np.integer)) or isinstance(self.k, bool) or self.k < 0:
            raise ValueError(f"L0Ball k must be an int >= 0, got {self.k!r}")
        if self.clip is None:
            raise ValueError("L0Ball needs a clip range: an entry may take any value in it")
        _check_clip(self.clip)
        c, (low, high) = _concrete(self.center), (_concrete(v) for v in self.clip)
        if c is not None and low is not None and high is not None:
            if np.any(c < low) or np.any(c > high):
                raise ValueError(f"L0Ball center must lie inside clip={self.clip}")

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(jnp.shape(self.center))

    def bounding_box(self) -> tuple[Array, Array]:
        x = jnp.asarray(self.center)
        if self.k == 0:
            return x, x
        lo = jnp.broadcast_to(jnp.asarray(self.clip[0], x.dtype), x.shape)
        hi = jnp.broadcast_to(jnp.asarray(self.clip[1], x.dtype), x.shape)
        return lo, hi

    def _gains(self, A2: Array) -> tuple[Array, Array]:
        """Per entry: the largest increase and decrease of ``A x`` from moving it."""
        x = _flat(jnp.asarray(self.center), 1)[:, None]
        lo, hi = (_flat(jnp.broadcast_to(b, self.shape), 1)[:, None] for b in self.bounding_box())
        to_hi, to_lo = A2 * (hi - x), A2 * (lo - x)
        return jnp.maximum(to_hi, to_lo), -jnp.minimum(to_hi, to_lo)

    def concretize(self, A: Array, bias: Array | None = None) -> tuple[Array, Array]:
        self._check_A(A)
        A2 = _flat(A, 2)
        x = _flat(jnp.asarray(self.center), 1)
        center = jnp.einsum("bsi,bi->bs", A2, x, precision=_HIGHEST)
        if bias is not None:
            center = center + bias
        if self.k == 0:
            return center, center
        up, down = self._gains(A2)
        return center - _top_k_sum(down, self.k), center + _top_k_sum(up, self.k)

    def minimizer(self, A: Array) -> Array:
        self._check_A(A)
        A2 = _flat(A, 2)
        x = jnp.broadcast_to(_flat(jnp.asarray(self.center), 1)[:, None], A2.shape)
        if self.k == 0:
            return x.reshape(A.shape)
        lo, hi = (_flat(b, 1)[:, None] for b in self.bounding_box())
        _, down = self._gains(A2)
        # Move the k entries of largest decrease (ties broken by position).
        rank = jnp.argsort(jnp.argsort(-down, axis=-1), axis=-1)
        chosen = rank < self.k
        moved = jnp.where(A2 > 0, lo, hi)
        return jnp.where(chosen, moved, x).reshape(A.shape)

    def sample(self, key: Array, num: int) -> Array:
        return self._perturb(key, num, corners=False)

    def nominal(self) -> Array:
        return jnp.asarray(self.center)

    def enclosing_l2_ball(self) -> tuple[Array, Array]:
        # The k coordinates that can move furthest, each to its far end of the clip box.
        x = jnp.asarray(self.center)
        lo, hi = self.bounding_box()
        reach = _flat(jnp.maximum(hi - x, x - lo), 1)
        return x, jnp.sqrt(_top_k_sum(reach * reach, self.k))

    def vertices(self, key: Array, num: int) -> Array:
        """``num`` random points with ``k`` entries moved to an end of ``clip``."""
        return self._perturb(key, num, corners=True)

    def _perturb(self, key: Array, num: int, corners: bool) -> Array:
        kpos, kval = jax.random.split(key)
        x = jnp.broadcast_to(jnp.asarray(self.center), (num, *self.shape))
        flat = x.reshape(num, self.shape[0], -1)
        n = flat.shape[-1]
        rank = jnp.argsort(jax.random.uniform(kpos, flat.shape), axis=-1)
        chosen = jnp.argsort(rank, axis=-1) < min(self.k, n)
        lo, hi = (jnp.asarray(c, flat.dtype) for c in self.clip)
        if corners:
            values = jnp.where(jax.random.bernoulli(kval, 0.5, flat.shape), hi, lo)
        else:
            values = lo + jax.random.uniform(kval, flat.shape, flat.dtype) * (hi - lo)
        return jnp.where(chosen, values, flat).reshape(x.shape)


# The norm balls by the names configs and attacks use.
NORM_BALLS: dict[str, type[InputSet]] = {"linf": LinfBall, "l2": L2Ball, "l1": L1Ball}


def norm_ball(norm: str, center: Array, eps: Any, clip: tuple[Any, Any] | None = None) -> InputSet:
    """The ball of ``norm`` (a :data:`NORM_BALLS` name) around ``center``.

    Example:
      >>> type(norm_ball("l2", jnp.zeros((1, 2)), 0.5)).__name__
      'L2Ball'
    """
    if norm not in NORM_BALLS:
        raise ValueError(f"unknown norm {norm!r}; one of {tuple(NORM_BALLS)}")
    return NORM_BALLS[norm](center, eps, clip=clip)  # type: ignore[call-arg]
