"""A plain feed-forward CNN: convolutions, flatten, dense layers, ReLU between all of them.

Every paper architecture in the zoo except the ResNet and the MLP is one of these; a concrete
model only lists its layers (the ``convs`` and ``hidden`` class attributes), so the layer
list in the code reads like the one in the paper.
"""

from __future__ import annotations

from typing import ClassVar, NamedTuple

import flax.linen as nn
import jax

from jaxcert.models.normalize import normalize

Padding = int | str


class ConvSpec(NamedTuple):
    """One convolution: ``features`` output channels, ``kernel`` x ``kernel``, ``stride``.

    ``padding`` is Flax's: an int ``p`` pads ``p`` on every side (PyTorch's ``padding=p``),
    ``"VALID"`` pads nothing. ``"SAME"`` is avoided on purpose: for an even input and a
    stride-2 conv it pads (0, 1), unlike the PyTorch reference models.
    """

    features: int
    kernel: int
    stride: int = 1
    padding: Padding = "VALID"


class ConvNet(nn.Module):
    """Conv-ReLU layers, flatten, Dense-ReLU layers, Dense logits.

    Input: (batch, H, W, C) float in pixel space [0, 1]. Output: (batch, num_classes) logits.
    Subclasses set the class attributes ``convs`` and ``hidden`` (widths of the hidden dense
    layers); they are not constructor fields, so a registry name always means one architecture.
    """

    num_classes: int = 10
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    convs: ClassVar[tuple[ConvSpec, ...]] = ()
    hidden: ClassVar[tuple[int, ...]] = ()

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of shape (batch, num_classes); ``train`` is unused (no BN, no dropout)."""
        del train  # accepted so every zoo model has the same call signature
        if x.ndim != 4:
            raise ValueError(
                f"{type(self).__name__} expects NHWC input (batch, H, W, C), got shape {x.shape}"
            )
        x = normalize(x, self.mean, self.std)
        for spec in self.convs:
            conv = nn.Conv(
                spec.features,
                (spec.kernel, spec.kernel),
                strides=(spec.stride, spec.stride),
                padding=spec.padding,
            )
            x = nn.relu(conv(x))
        x = x.reshape((x.shape[0], -1))
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)
