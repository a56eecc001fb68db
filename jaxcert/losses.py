"""Losses from logits and from certified margin bounds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxcert.specs import worst_case_logits

Array = jax.Array

__all__ = ["cross_entropy", "robust_cross_entropy", "accuracy", "verified"]


def cross_entropy(logits: Array, y: Array) -> Array:
    """Mean softmax cross-entropy of ``(batch, classes)`` logits against integer labels.

    Example:
      >>> float(cross_entropy(jnp.array([[0.0, 0.0]]), jnp.array([1])))  # log 2
      0.6931...
    """
    return jnp.mean(optax.softmax_cross_entropy_with_integer_labels(logits, y))


def robust_cross_entropy(margin_lower: Array, y: Array, num_classes: int) -> Array:
    """Cross-entropy of the worst-case logits built from margin lower bounds.

    An upper bound of the cross-entropy over the whole input set (CROWN-IBP §3, thesis
    §3.1): the logits are ``-m_j`` at ``j != y`` and 0 at ``y``.

    Args:
      margin_lower: ``(batch, num_classes - 1)`` lower bounds of ``z_y - z_j``, rows in
        the order of :func:`jaxcert.margin_spec`.
      y: ``(batch,)`` labels.
    """
    return cross_entropy(worst_case_logits(margin_lower, y, num_classes), y)


def accuracy(logits: Array, y: Array) -> Array:
    """Fraction of examples whose arg-max logit is the label."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == y)


def verified(margin_lower: Array) -> Array:
    """Per example: every margin lower bound is positive (certified correct)."""
    return jnp.all(margin_lower > 0, axis=-1)
