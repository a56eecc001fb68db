"""Architectures of the thesis (Sungyoon Lee, Seoul National University).

* App. C.1 (experiments of Sec. 3.3, "Loss landscape matters"): Small, Small*, Medium, Large,
  Large*, written there as Conv(c_in, c_out, kernel, stride) and FC(d_in, d_out), "all layers
  followed by ReLU activation except for the last layer and the flatten layer".
* App. B.3.3 (experiments of Sec. 3.2, BCP): 4C3F, 6C2F, 8C2F, written as C(c, k, s) or
  C(c, k, s, p) "if it uses the padding p != 0", and F(c); ReLU after every layer but the last.

App. C.1 gives no padding. We use padding 1 on every conv of the C.1 models because that is
what the authors' released PyTorch code for Sec. 3.3 does (its Small has a hard-coded 7200 =
15*15*32 flatten, i.e. padding 1 on 32x32 input; its Medium is the 4C3F network with padding 1;
its Large/Large* pad every 3x3 conv by 1), and because B.3.3 lists the Medium layers with
padding 1 as 4C3F. For the VALID-padded Gowal et al. originals use ``dm_small``/``dm_medium``.

The B.3.3 models follow the text exactly; the parameter counts of Table 3.2 (4C3F: 1,974,762
on MNIST, 2,466,858 on CIFAR-10; 6C2F: 2,250,378; 8C2F: 4,342,984 with 200 classes) confirm
the padding, including the unpadded 4x4 stride-2 convs of 8C2F.
"""

from __future__ import annotations

from jaxcert.models.convnet import ConvNet, ConvSpec


class ThesisSmall(ConvNet):
    """Small (thesis App. C.1): Conv(.,16,4,2) - Conv(16,32,4,1) - Flatten - FC(.,100) - FC(100,c).

    Padding 1 on both convs (not stated in C.1; taken from the authors' code, see module doc).
    Shapes: 28x28 -> 14 -> 13, flatten 13*13*32 = 5408; 32x32 -> 16 -> 15, flatten 7200.
    """

    convs = (ConvSpec(16, 4, 2, 1), ConvSpec(32, 4, 1, 1))
    hidden = (100,)


class ThesisSmallStar(ConvNet):
    """Small* (thesis App. C.1): Conv(.,16,4,2) - Conv(16,32,4,2) - Flatten - FC(.,100) - FC(100,c).

    Padding 1 on both convs (not stated in C.1; the authors' code builds this shape with padding
    1). Shapes: 28x28 -> 14 -> 7, flatten 1568; 32x32 -> 16 -> 8, flatten 2048.
    """

    convs = (ConvSpec(16, 4, 2, 1), ConvSpec(32, 4, 2, 1))
    hidden = (100,)


class ThesisMedium(ConvNet):
    """Medium (thesis App. C.1).

    Conv(.,32,3,1) - Conv(32,32,4,2) - Conv(32,64,3,1) - Conv(64,64,4,2) - Flatten -
    FC(.,512) - FC(512,512) - FC(512,c). Padding 1 on every conv (not stated in C.1; the
    authors' code trains this as its padded 4-layer CNN), which makes it the same network as
    4C3F of App. B.3.3. Shapes: HxW -> H/2 -> H/4, flatten (H//4)*(W//4)*64.
    """

    convs = (
        ConvSpec(32, 3, 1, 1),
        ConvSpec(32, 4, 2, 1),
        ConvSpec(64, 3, 1, 1),
        ConvSpec(64, 4, 2, 1),
    )
    hidden = (512, 512)


class ThesisLarge(ConvNet):
    """Large (thesis App. C.1).

    Conv(.,64,3,1) - Conv(64,64,3,1) - Conv(64,128,3,2) - Conv(128,128,3,1) -
    Conv(128,128,3,1) - Flatten - FC(.,512) - FC(512,c). Padding 1 on every conv, as in the
    authors' (and the CROWN-IBP) code, so it equals ``dm_large``. Flatten (H//2)*(W//2)*128.
    """

    convs = (
        ConvSpec(64, 3, 1, 1),
        ConvSpec(64, 3, 1, 1),
        ConvSpec(128, 3, 2, 1),
        ConvSpec(128, 3, 1, 1),
        ConvSpec(128, 3, 1, 1),
    )
    hidden = (512,)


class ThesisLargeStar(ConvNet):
    """Large* (thesis App. C.1).

    Conv(.,64,3,1) - Conv(64,128,3,2) - Conv(128,128,3,1) - Conv(128,128,3,1) - Flatten -
    FC(.,512) - FC(512,c). Padding 1 on every conv (as for Large). Flatten (H//2)*(W//2)*128.
    """

    convs = (
        ConvSpec(64, 3, 1, 1),
        ConvSpec(128, 3, 2, 1),
        ConvSpec(128, 3, 1, 1),
        ConvSpec(128, 3, 1, 1),
    )
    hidden = (512,)


class CNN4C3F(ConvNet):
    """4C3F (thesis App. B.3.3; the network of Wong et al. 2018, "Scaling provable defenses").

    C(32,3,1,1) - C(32,4,2,1) - C(64,3,1,1) - C(64,4,2,1) - F(512) - F(512) - F(c).
    Flatten (H//4)*(W//4)*64: 3136 on MNIST, 4096 on CIFAR-10. Parameters (Table 3.2):
    1,974,762 on MNIST, 2,466,858 on CIFAR-10.
    """

    convs = (
        ConvSpec(32, 3, 1, 1),
        ConvSpec(32, 4, 2, 1),
        ConvSpec(64, 3, 1, 1),
        ConvSpec(64, 4, 2, 1),
    )
    hidden = (512, 512)


class CNN6C2F(ConvNet):
    """6C2F (thesis App. B.3.3).

    C(32,3,1,1) - C(32,3,1,1) - C(32,4,2,1) - C(64,3,1,1) - C(64,3,1,1) - C(64,4,2,1) -
    F(512) - F(c). Flatten 8*8*64 = 4096 on CIFAR-10; 2,250,378 parameters (Table 3.2).
    """

    convs = (
        ConvSpec(32, 3, 1, 1),
        ConvSpec(32, 3, 1, 1),
        ConvSpec(32, 4, 2, 1),
        ConvSpec(64, 3, 1, 1),
        ConvSpec(64, 3, 1, 1),
        ConvSpec(64, 4, 2, 1),
    )
    hidden = (512,)


class CNN8C2F(ConvNet):
    """8C2F (thesis App. B.3.3, for Tiny ImageNet, 64x64x3 and F(200) logits).

    C(64,3,1,1) - C(64,3,1,1) - C(64,4,2) - C(128,3,1,1) - C(128,3,1,1) - C(128,4,2) -
    C(256,3,1,1) - C(256,4,2) - F(256) - F(c). The 4x4 stride-2 convs are unpadded (no p in
    the text): 64 -> 31 -> 14 -> 6, flatten 6*6*256 = 9216; with ``num_classes=200`` this has
    4,342,984 parameters, as in Table 3.2.
    """

    convs = (
        ConvSpec(64, 3, 1, 1),
        ConvSpec(64, 3, 1, 1),
        ConvSpec(64, 4, 2),
        ConvSpec(128, 3, 1, 1),
        ConvSpec(128, 3, 1, 1),
        ConvSpec(128, 4, 2),
        ConvSpec(256, 3, 1, 1),
        ConvSpec(256, 4, 2),
    )
    hidden = (256,)
