"""Ensembles: the averaged logits of several models, bounded like any function.

DoubleMargin (App. H) certifies ensembles of models trained with its regulariser by
bounding the averaged logits. An ensemble is just another JAX function, so every bound
method applies to it unchanged; this module only builds it.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence

import jax

Array = jax.Array

__all__ = ["ensemble"]


def ensemble(
    fns: Sequence[Callable[[Array], Array]], weights: Sequence[float] | None = None
) -> Callable[[Array], Array]:
    """``x -> sum_i w_i fns[i](x)`` with weights summing to 1 (uniform by default).

    Example:
      >>> f = ensemble([lambda x: 2 * x, lambda x: 4 * x])
      >>> f(jnp.ones((1, 2)))
      Array([[3., 3.]], dtype=float32)
    """
    if not fns:
        raise ValueError("an ensemble needs at least one model")
    w = [1.0 / len(fns)] * len(fns) if weights is None else [float(v) for v in weights]
    if len(w) != len(fns) or any(v < 0 for v in w) or abs(sum(w) - 1) > 1e-6:
        raise ValueError(f"weights must be {len(fns)} non-negative numbers summing to 1, got {w}")

    def averaged(x: Array) -> Array:
        terms = [wi * f(x) for wi, f in zip(w, fns, strict=True)]
        return functools.reduce(operator.add, terms)

    return averaged
