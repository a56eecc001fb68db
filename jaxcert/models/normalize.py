"""Per-channel input normalisation applied inside a model.

Keeping ``(x - mean) / std`` inside the model means callers bound the model on pixel-space
sets (``LinfBall(x, eps, clip=(0, 1))``) and eps keeps its usual meaning.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


def normalize(
    x: jax.Array,
    mean: tuple[float, ...] | None,
    std: tuple[float, ...] | None,
) -> jax.Array:
    """Return ``(x - mean) / std`` over the last (channel) axis, or ``x`` if both are None.

    Args:
      x: (batch, H, W, C) pixel-space input (any shape whose last axis is the channels).
      mean: C per-channel means, or None.
      std: C per-channel standard deviations (> 0), or None.

    Returns:
      An array of the shape of ``x``.
    """
    if mean is None and std is None:
        return x
    if mean is None or std is None:
        raise ValueError("normalisation needs both mean and std (or neither)")
    channels = x.shape[-1]
    if len(mean) != channels or len(std) != channels:
        raise ValueError(
            f"normalisation has {len(mean)} means and {len(std)} stds "
            f"for an input with {channels} channels (shape {x.shape})"
        )
    if any(s <= 0 for s in std):
        raise ValueError(f"normalisation std must be positive, got {std}")
    shift = jnp.asarray(mean, dtype=x.dtype)
    # Multiply by the reciprocal rather than divide: the traced graph then holds only sub/mul
    # by constants, the affine primitives every bound domain handles.
    scale = jnp.asarray(1.0 / np.asarray(std, dtype=np.float64), dtype=x.dtype)
    return (x - shift) * scale
