"""Flax (linen) model zoo for certified training and verification.

Every model maps a (batch, H, W, C) pixel-space image in [0, 1] to (batch, num_classes) logits,
normalises per channel inside itself when given ``mean``/``std``, and uses only ops the bound
engine supports. ``get_model("dm_large", num_classes=10)`` builds one by name.
"""

from __future__ import annotations

import flax.linen as nn

from jaxcert.models.convnet import ConvNet, ConvSpec
from jaxcert.models.dm import DMLarge, DMMedium, DMSmall
from jaxcert.models.mlp import MLP
from jaxcert.models.normalize import normalize
from jaxcert.models.resnet import ResidualBlock, ResNetSmall
from jaxcert.models.thesis import (
    CNN4C3F,
    CNN6C2F,
    CNN8C2F,
    ThesisLarge,
    ThesisLargeStar,
    ThesisMedium,
    ThesisSmall,
    ThesisSmallStar,
)

MODELS: dict[str, type[nn.Module]] = {
    "dm_small": DMSmall,
    "dm_medium": DMMedium,
    "dm_large": DMLarge,
    "small": ThesisSmall,
    "small_star": ThesisSmallStar,
    "medium": ThesisMedium,
    "large": ThesisLarge,
    "large_star": ThesisLargeStar,
    "cnn_4c3f": CNN4C3F,
    "cnn_6c2f": CNN6C2F,
    "cnn_8c2f": CNN8C2F,
    "mlp": MLP,
    "resnet_small": ResNetSmall,
}


def get_model(name: str, **kwargs) -> nn.Module:
    """Build the registry model ``name`` with constructor fields ``kwargs``.

    E.g. ``get_model("cnn_8c2f", num_classes=200, mean=(0.48, 0.45, 0.40), std=(...))``.
    Raises ValueError for an unknown name, listing the known ones.
    """
    try:
        cls = MODELS[name]
    except KeyError:
        known = ", ".join(sorted(MODELS))
        raise ValueError(f"unknown model {name!r}; known models: {known}") from None
    return cls(**kwargs)


__all__ = [
    "CNN4C3F",
    "CNN6C2F",
    "CNN8C2F",
    "MLP",
    "MODELS",
    "ConvNet",
    "ConvSpec",
    "DMLarge",
    "DMMedium",
    "DMSmall",
    "ResNetSmall",
    "ResidualBlock",
    "ThesisLarge",
    "ThesisLargeStar",
    "ThesisMedium",
    "ThesisSmall",
    "ThesisSmallStar",
    "get_model",
    "normalize",
]
