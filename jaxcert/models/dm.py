"""DM-small / DM-medium / DM-large of Gowal et al. (2018), "On the effectiveness of interval
bound propagation", as used in the CROWN-IBP paper (Zhang et al., 2020).

Layer notation below: conv KxK/F stride S = F output channels. ReLU follows every layer but
the last.
"""

from __future__ import annotations

from jaxcert.models.convnet import ConvNet, ConvSpec


class DMSmall(ConvNet):
    """DM-small, VALID padding (as in the IBP paper's TensorFlow models).

    conv 4x4/16 stride 2 - conv 4x4/32 stride 1 - FC 100 - FC num_classes.
    Shapes on 28x28x1: 13x13x16 -> 10x10x32 -> flatten 3200 -> 100 -> num_classes.
    On 32x32x3: 15x15x16 -> 12x12x32 -> 4608 -> 100 -> num_classes.
    """

    convs = (ConvSpec(16, 4, 2), ConvSpec(32, 4, 1))
    hidden = (100,)


class DMMedium(ConvNet):
    """DM-medium, VALID padding.

    conv 3x3/32 s1 - conv 4x4/32 s2 - conv 3x3/64 s1 - conv 4x4/64 s2 - FC 512 - FC 512 - FC.
    Shapes on 28x28x1: 26 -> 12 -> 10 -> 4, flatten 4*4*64 = 1024.
    On 32x32x3: 30 -> 14 -> 12 -> 5, flatten 5*5*64 = 1600.
    """

    convs = (
        ConvSpec(32, 3, 1),
        ConvSpec(32, 4, 2),
        ConvSpec(64, 3, 1),
        ConvSpec(64, 4, 2),
    )
    hidden = (512, 512)


class DMLarge(ConvNet):
    """DM-large as in the CROWN-IBP code: padding 1 on each side of every 3x3 conv.

    conv 3x3/64 s1 - conv 3x3/64 s1 - conv 3x3/128 s2 - conv 3x3/128 s1 - conv 3x3/128 s1 -
    FC 512 - FC num_classes. Only the stride-2 conv halves the size: on HxW input the flatten
    has (H//2)*(W//2)*128 features (16*16*128 on CIFAR, 14*14*128 on MNIST). The padding is
    symmetric (1, 1); Flax "SAME" would pad a stride-2 conv (0, 1) and change the function.
    """

    convs = (
        ConvSpec(64, 3, 1, 1),
        ConvSpec(64, 3, 1, 1),
        ConvSpec(128, 3, 2, 1),
        ConvSpec(128, 3, 1, 1),
        ConvSpec(128, 3, 1, 1),
    )
    hidden = (512,)
