"""Natural (clean) training: cross-entropy of the logits."""

from __future__ import annotations

from typing import Any

from jaxcert.losses import accuracy, cross_entropy
from jaxcert.methods.registry import register


@register("natural")
def make_natural(apply_fn, num_classes: int, config: Any):
    """``CE(f(x), y)``."""
    del num_classes, config

    def loss_fn(params, x, y, hparams, rng):
        del hparams, rng
        logits = apply_fn(params, x)
        loss = cross_entropy(logits, y)
        return loss, {"loss": loss, "clean_acc": accuracy(logits, y)}

    return loss_fn
