"""The training-method registry: names -> makers of pure loss functions.

A method maker takes ``(apply_fn, num_classes, config)`` and returns
``loss_fn(params, x, y, hparams, rng) -> (loss, metrics)`` where ``hparams`` holds the
scheduled scalars (``eps``, ``kappa``, ``beta``, ``lam``) for the step. Methods plug in
by name with :func:`register`, or as a family that names many at once
(:func:`register_family`: every bound method of :data:`jaxcert.METHODS` trains with the
mixed CROWN-IBP objective, every margin method as a regulariser), without touching the
training loop.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from typing import Any, Protocol

import jax

from jaxcert.methods.options import config_value
from jaxcert.methods.penalties import with_penalties

Array = jax.Array
LossFn = Callable[[Any, Array, Array, dict[str, Any], Array], tuple[Array, dict[str, Any]]]
MethodMaker = Callable[..., LossFn]

__all__ = [
    "register",
    "register_family",
    "available",
    "make_loss",
    "supported_norms",
    "MethodFamily",
]


class MethodFamily(Protocol):
    """Many training methods at once, e.g. one per registered bound method."""

    def names(self) -> Iterable[str]:
        """The names this family makes methods for (read at each lookup)."""
        ...

    def maker(self, name: str) -> MethodMaker:
        """The maker of method ``name`` (one of :meth:`names`)."""
        ...

    norms: tuple[str, ...]


@dataclasses.dataclass(frozen=True)
class _Entry:
    maker: MethodMaker
    norms: tuple[str, ...]


_REGISTRY: dict[str, _Entry] = {}
_FAMILIES: list[MethodFamily] = []


def register(
    name: str, *, norms: tuple[str, ...] = ("linf",), override_family: bool = False
) -> Callable[[MethodMaker], MethodMaker]:
    """Decorator registering a method maker under ``name``; ``norms`` are the threat
    models (``method.norm``) it trains on. A name is registered once; with
    ``override_family`` it replaces the method a family makes under that name."""

    def wrap(maker: MethodMaker) -> MethodMaker:
        if name in _REGISTRY or (_entry(name) is not None and not override_family):
            raise ValueError(f"method {name!r} is already registered")
        _REGISTRY[name] = _Entry(maker, tuple(norms))
        return maker

    return wrap


def register_family(family: MethodFamily) -> None:
    """Adds a family of methods; names registered one by one take precedence."""
    _FAMILIES.append(family)


def _entry(name: str) -> _Entry | None:
    if name in _REGISTRY:
        return _REGISTRY[name]
    for family in _FAMILIES:
        if name in family.names():
            return _Entry(family.maker(name), family.norms)
    return None


def available() -> list[str]:
    """Names of the registered methods."""
    names = set(_REGISTRY)
    for family in _FAMILIES:
        names.update(family.names())
    return sorted(names)


def supported_norms(name: str) -> tuple[str, ...]:
    """The threat models (``method.norm`` values) method ``name`` trains on."""
    entry = _entry(name)
    if entry is None:
        raise ValueError(f"unknown method {name!r}; available: {available()}")
    return entry.norms


def make_loss(name: str, apply_fn: Callable[..., Array], num_classes: int, config: Any) -> LossFn:
    """The loss function of method ``name``.

    Args:
      name: a registered method (see :func:`available`).
      apply_fn: ``apply_fn(params, x) -> logits`` of the model.
      num_classes: number of classes.
      config: the method's config section (``ml_collections.ConfigDict`` or mapping).
        ``rs_weight`` / ``l1_weight`` > 0 add the ReLU-stability / L1 penalties of
        :mod:`jaxcert.methods.penalties` to any method.
    """
    entry = _entry(name)
    if entry is None:
        raise ValueError(f"unknown method {name!r}; available: {available()}")
    loss_fn = entry.maker(apply_fn, num_classes, config)
    rs_weight = float(config_value(config, "rs_weight", 0.0))
    l1_weight = float(config_value(config, "l1_weight", 0.0))
    if rs_weight > 0 or l1_weight > 0:
        init = getattr(loss_fn, "init_method_state", None)
        loss_fn = with_penalties(loss_fn, apply_fn, config, rs_weight, l1_weight)
        if init is not None:
            loss_fn.init_method_state = init
    return loss_fn
