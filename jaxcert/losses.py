"""Losses from logits and from certified margin bounds."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import optax

from jaxcert.specs import worst_case_logits

Array = jax.Array

__all__ = [
    "cross_entropy",
    "robust_cross_entropy",
    "range_regularizer",
    "split_regularizer",
    "mixed_objective",
    "accuracy",
    "verified",
]


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


def range_regularizer(lower: Array, upper: Array, logits: Array, y: Array) -> Array:
    """SingleProp Eq. 4-5: how much a range of logits can raise the cross-entropy.

    ``CE(lower at y, upper elsewhere) - CE(logits)``, averaged over the batch. Non-negative
    when ``lower <= logits <= upper`` (cross-entropy increases with the other logits and
    decreases with the label's).

    Args:
      lower, upper: ``(batch, classes)`` a range of the logits (sound or approximate).
      logits: ``(batch, classes)`` the nominal logits.
      y: ``(batch,)`` labels.

    Example:
      >>> z = jnp.array([[1.0, 0.0]])
      >>> float(range_regularizer(z - 0.5, z + 0.5, z, jnp.array([0])))  # CE(0.5, 0.5) - CE(1, 0)
      0.3798...
    """
    onehot = jax.nn.one_hot(y, logits.shape[-1], dtype=bool)
    worst = jnp.where(onehot, lower, upper)
    return cross_entropy(worst, y) - cross_entropy(logits, y)


def split_regularizer(lower: Array, upper: Array, logits: Array, y: Array) -> Array:
    """DoubleMargin (``000_…`` Eq. 3 and the regulariser after it): the cross-entropy
    split into an increasing part ``L+(z) = log sum_j exp(z_j)`` and a decreasing part
    ``L-(z) = -z_y``, each taken at the end of the range that maximises it::

        R = L+(upper) + L-(lower) - CE(logits)

    averaged over the batch. ``CE(logits) + R`` bounds the cross-entropy of every logit
    vector in the range (monotonicity of the two parts). Looser than
    :func:`range_regularizer` (SingleProp's Eq. 4-5), which keeps the label's own logit
    at its lower end inside the sum: this is the form DoubleMargin and its IBP baseline
    train with.

    Example:
      >>> z = jnp.array([[1.0, 0.0]])
      >>> # log(e^1.5 + e^0.5) - 0.5 - log(1 + e^-1) = 1: the range's full width
      >>> round(float(split_regularizer(z - 0.5, z + 0.5, z, jnp.array([0]))), 6)
      1.0
    """
    label_lower = jnp.take_along_axis(lower, y[:, None], axis=-1)[:, 0]
    increasing = jax.nn.logsumexp(upper, axis=-1)
    return jnp.mean(increasing - label_lower) - cross_entropy(logits, y)


def accuracy(logits: Array, y: Array) -> Array:
    """Fraction of examples whose arg-max logit is the label."""
    return jnp.mean(jnp.argmax(logits, axis=-1) == y)


def verified(margin_lower: Array) -> Array:
    """Per example: every margin lower bound is positive (certified correct)."""
    return jnp.all(margin_lower > 0, axis=-1)


def mixed_objective(
    logits: Array,
    y: Array,
    robust: Array,
    kappa: Array | float,
    verified_mask: Array,
    penalty: Array | float = 0.0,
) -> tuple[Array, dict[str, Array]]:
    """``kappa * CE(logits) + (1 - kappa) * robust + penalty`` and its training metrics.

    Args:
      logits: ``(batch, classes)`` natural logits.
      y: ``(batch,)`` labels.
      robust: scalar, an upper bound of the cross-entropy over the input set.
      kappa: weight of the natural term.
      verified_mask: ``(batch,)`` bool, the examples the bound certifies.
      penalty: added as is (regularisers).

    Example:
      >>> loss, m = mixed_objective(jnp.zeros((1, 2)), jnp.array([0]), 1.0, 0.5, jnp.array([True]))
      >>> round(float(loss), 4), float(m["verified_acc"])  # (log 2 + 1) / 2
      (0.8466, 1.0)
    """
    natural = cross_entropy(logits, y)
    loss = kappa * natural + (1 - kappa) * robust + penalty
    metrics = {
        "loss": loss,
        "natural_loss": natural,
        "robust_loss": robust,
        "clean_acc": accuracy(logits, y),
        "verified_acc": jnp.mean(verified_mask),
    }
    return loss, metrics
