"""Ensembles: the averaged logits of several models, bounded like any function.

DoubleMargin (``000_…`` §4.3, App. H-I) extends its regulariser "to ensembles of models
trained with our regularizer" and certifies the averaged logits. An ensemble is just
another JAX function, so every bound method applies to it unchanged; this module builds
it (:func:`ensemble`) and lays out a trained ensemble's members
(:func:`ensemble_members`): with ``train.ensemble_members = N`` the command line trains
``N`` members, each an ordinary run with its own seed in ``workdir/member_<i>``, and
``--mode=certify`` bounds their average.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

Array = jax.Array

__all__ = ["ensemble", "ensemble_members"]


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


def ensemble_members(config: Any, workdir: str | Path) -> list[tuple[Any, Path]]:
    """The ``(config, workdir)`` of each member of the run ``config`` in ``workdir``.

    One member (``train.ensemble_members == 1``) is the run itself. ``N > 1`` members are
    runs in ``workdir/member_0`` ... ``member_<N-1>`` whose configs differ only in the
    seed (``seed + i``: their own initialisation and data order) and train one model
    each.

    Example:
      >>> from jaxcert.config import default_config
      >>> c = default_config()
      >>> c.train.ensemble_members = 2
      >>> [(m.seed, str(d)) for m, d in ensemble_members(c, "w")]
      [(0, 'w/member_0'), (1, 'w/member_1')]
    """
    count = int(config.train.ensemble_members)
    if count == 1:
        return [(config, Path(workdir))]
    members = []
    for i in range(count):
        member = config.copy_and_resolve_references()
        member.seed = config.seed + i
        member.train.ensemble_members = 1
        members.append((member, Path(workdir) / f"member_{i}"))
    return members
