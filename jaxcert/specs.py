"""Specifications: linear functions of the network output whose bounds certify."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

__all__ = ["margin_spec", "worst_case_logits"]


def margin_spec(y: Array, num_classes: int) -> Array:
    """The margin specification ``C`` of labels ``y``.

    Row ``j`` of example ``b`` is ``e_{y_b} - e_j`` for the classes ``j != y_b`` in
    increasing order, so ``C @ logits`` are the margins of the true class over the
    others; a positive lower bound on every margin certifies the prediction.

    Args:
      y: ``(batch,)`` integer labels in ``[0, num_classes)``.
      num_classes: number of classes (at least 2).

    Returns:
      ``(batch, num_classes - 1, num_classes)``.

    Example:
      >>> margin_spec(jnp.array([1]), 3)
      Array([[[-1.,  1.,  0.],
              [ 0.,  1., -1.]]], dtype=float32)
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    y = jnp.asarray(y)
    if y.ndim != 1 or not jnp.issubdtype(y.dtype, jnp.integer):
        raise ValueError(f"labels must be a (batch,) integer array, got {y.dtype}{y.shape}")
    try:
        values = np.asarray(y)
    except (jax.errors.ConcretizationTypeError, jax.errors.TracerArrayConversionError):
        values = None
    if values is not None and values.size and (values.min() < 0 or values.max() >= num_classes):
        raise ValueError(
            f"labels must lie in [0, {num_classes}), got min {values.min()} max {values.max()}"
        )
    # Others: for row j, the j-th class different from y (skip y by shifting past it).
    j = jnp.arange(num_classes - 1)[None, :]
    others = j + (j >= y[:, None])
    eye = jnp.eye(num_classes, dtype=jnp.float32)
    spec = eye[y][:, None, :] - eye[others]
    if values is None:  # under a trace: out-of-range labels poison the spec
        valid = (y >= 0) & (y < num_classes)
        spec = jnp.where(valid[:, None, None], spec, jnp.nan)
    return spec


def worst_case_logits(margin_lower: Array, y: Array, num_classes: int) -> Array:
    """Logits whose cross-entropy bounds the worst case over the input set.

    With ``m_j`` a lower bound of ``z_y - z_j`` (from :func:`margin_spec` rows), the
    logits ``-m_j`` at ``j != y`` and 0 at ``y`` (the "worst-translated logit") give a
    cross-entropy no smaller than that of any logits the network reaches in the set.

    Args:
      margin_lower: ``(batch, num_classes - 1)`` margin lower bounds.
      y: ``(batch,)`` labels.

    Returns:
      ``(batch, num_classes)``.

    Example:
      >>> worst_case_logits(jnp.array([[2.0, -1.0]]), jnp.array([1]), 3)
      Array([[-2.,  0.,  1.]], dtype=float32)
    """
    j = jnp.arange(num_classes - 1)[None, :]
    others = j + (j >= y[:, None])
    batch = jnp.arange(margin_lower.shape[0])[:, None]
    logits = jnp.zeros((margin_lower.shape[0], num_classes), margin_lower.dtype)
    return logits.at[batch, others].set(-margin_lower)
