"""A small CIFAR-sized ResNet built only from ops the bound engine handles.

Conv, eval-mode BatchNorm (an affine map with constant scale and shift), ReLU, residual add,
average pooling and Dense: no max-pooling, no dropout.
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxcert.models.normalize import normalize


def _batch_norm(train: bool, momentum: float) -> nn.BatchNorm:
    # PyTorch's defaults (momentum 0.1 there = 0.9 here, eps 1e-5), as in the papers' code.
    return nn.BatchNorm(use_running_average=not train, momentum=momentum, epsilon=1e-5)


class ResidualBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, then ReLU.

    The shortcut is the identity when shapes agree, else a 1x1 conv (with ``stride``) + BN.
    (batch, H, W, C_in) -> (batch, ceil(H/stride), ceil(W/stride), features).
    """

    features: int
    stride: int = 1
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        strides = (self.stride, self.stride)
        # Symmetric padding 1 (not "SAME", which pads a stride-2 conv asymmetrically).
        y = nn.Conv(self.features, (3, 3), strides=strides, padding=1, use_bias=False)(x)
        y = nn.relu(_batch_norm(train, self.bn_momentum)(y))
        y = nn.Conv(self.features, (3, 3), padding=1, use_bias=False)(y)
        y = _batch_norm(train, self.bn_momentum)(y)
        shortcut = x
        if self.stride != 1 or x.shape[-1] != self.features:
            shortcut = nn.Conv(self.features, (1, 1), strides=strides, use_bias=False)(x)
            shortcut = _batch_norm(train, self.bn_momentum)(shortcut)
        return nn.relu(y + shortcut)


class ResNetSmall(nn.Module):
    """Stem conv3x3(16)-BN-ReLU, residual blocks, global average pool, Dense(num_classes).

    With the default ``widths=(16, 32, 64)``, ``strides=(1, 2, 2)``: 32x32 -> 32 -> 16 -> 8,
    avg-pool over 8x8, about 78k parameters on CIFAR-10.
    Input (batch, H, W, C) in [0, 1]; output (batch, num_classes) logits.
    Call with ``train=True`` and ``mutable=["batch_stats"]`` to use and update batch
    statistics; the default ``train=False`` uses running averages (the certifiable form).
    ``bn_momentum`` is the running averages' momentum; training clones the model with
    momentum 0 to read the clean batch's own statistics (see :mod:`jaxcert.train`).
    """

    num_classes: int = 10
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    widths: tuple[int, ...] = (16, 32, 64)
    strides: tuple[int, ...] = (1, 2, 2)
    bn_momentum: float = 0.9

    @nn.compact
    def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
        """Logits of shape (batch, num_classes)."""
        if x.ndim != 4:
            raise ValueError(f"ResNetSmall expects NHWC input (batch, H, W, C), got {x.shape}")
        if len(self.widths) != len(self.strides):
            raise ValueError(f"widths {self.widths} and strides {self.strides} differ in length")
        x = normalize(x, self.mean, self.std)
        x = nn.Conv(self.widths[0], (3, 3), padding=1, use_bias=False)(x)
        x = nn.relu(_batch_norm(train, self.bn_momentum)(x))
        for width, stride in zip(self.widths, self.strides, strict=True):
            x = ResidualBlock(width, stride, self.bn_momentum)(x, train)
        # Global average pooling as an avg_pool over the whole map: a linear op the engine knows.
        x = nn.avg_pool(x, window_shape=x.shape[1:3])
        x = x.reshape((x.shape[0], -1))
        return nn.Dense(self.num_classes)(x)
