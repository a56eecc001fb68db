"""Training methods: each a pure loss function built from a name.

A method maker takes ``(apply_fn, num_classes, config)`` and returns
``loss_fn(params, x, y, hparams, rng) -> (loss, metrics)`` where ``hparams`` holds the
scheduled scalars (``eps``, ``kappa``, ``beta``, ``lam``) for the step. New methods
plug in with :func:`register` (or :func:`jaxcert.register_method` for a bound method,
which then trains with the mixed CROWN-IBP objective) without touching the training
loop. See :mod:`jaxcert.methods.registry`.
"""

from __future__ import annotations

# Importing the method modules registers the built-in methods.
from jaxcert.methods import (  # noqa: F401
    adversarial,
    certified,
    expressive,
    lipschitz_margin,
    natural,
    regularized,
    sabr,
    trades,
)
from jaxcert.methods.options import clip_range, config_value
from jaxcert.methods.registry import (
    available,
    make_loss,
    register,
    register_family,
    supported_norms,
)

__all__ = [
    "available",
    "clip_range",
    "config_value",
    "make_loss",
    "register",
    "register_family",
    "supported_norms",
]
