"""Training methods: each a pure loss function built from a name.

A method maker takes ``(apply_fn, num_classes, config)`` and returns
``loss_fn(params, x, y, hparams, rng) -> (loss, metrics)`` where ``hparams`` holds the
scheduled scalars (``eps``, ``kappa``, ``beta``, ``lam``) for the step. New methods
plug in with :func:`register` without touching the training loop.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

Array = jax.Array
LossFn = Callable[[Any, Array, Array, dict[str, Array], Array], tuple[Array, dict[str, Array]]]
MethodMaker = Callable[..., LossFn]

_REGISTRY: dict[str, MethodMaker] = {}


def register(name: str) -> Callable[[MethodMaker], MethodMaker]:
    """Decorator registering a method maker under ``name``."""

    def wrap(maker: MethodMaker) -> MethodMaker:
        if name in _REGISTRY:
            raise ValueError(f"method {name!r} is already registered")
        _REGISTRY[name] = maker
        return maker

    return wrap


def config_value(config: Any, key: str, default: Any) -> Any:
    """``config[key]`` when the method's config section has it, else ``default``."""
    return config.get(key, default) if hasattr(config, "get") else default


def available() -> list[str]:
    """Names of the registered methods."""
    return sorted(_REGISTRY)


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
    if name not in _REGISTRY:
        raise ValueError(f"unknown method {name!r}; available: {available()}")
    loss_fn = _REGISTRY[name](apply_fn, num_classes, config)
    rs_weight = float(config_value(config, "rs_weight", 0.0))
    l1_weight = float(config_value(config, "l1_weight", 0.0))
    if rs_weight > 0 or l1_weight > 0:
        from jaxcert.methods.penalties import with_penalties

        init = getattr(loss_fn, "init_method_state", None)
        loss_fn = with_penalties(loss_fn, apply_fn, config, rs_weight, l1_weight)
        if init is not None:
            loss_fn.init_method_state = init  # type: ignore[attr-defined]
    return loss_fn


# Register the built-in methods.
from jaxcert.methods import (  # noqa: E402, F401
    adversarial,
    certified,
    lipschitz_margin,
    natural,
    regularized,
)
