"""Fully connected ReLU network ("MLP 2x100" with the default widths)."""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxcert.models.normalize import normalize


class MLP(nn.Module):
    """Flatten - [Dense(w) - ReLU for w in features] - Dense(num_classes).

    Input: (batch, H, W, C) pixel-space image (or any (batch, ..., C)); it is normalised per
    channel, then flattened. Output: (batch, num_classes) logits.
    """

    num_classes: int = 10
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    features: tuple[int, ...] = (100, 100)

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of shape (batch, num_classes); ``train`` is unused."""
        del train  # uniform call signature across the zoo
        x = normalize(x, self.mean, self.std)
        x = x.reshape((x.shape[0], -1))
        for width in self.features:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)
