"""The reference networks the book compresses.

``LeNet300100`` and ``LeNet5`` are the two networks of Han et al.'s pruning and
Deep Compression papers (2015, 2016), so that our Fashion-MNIST results can sit
beside their published MNIST rows. Both take (N, 1, 28, 28) inputs and return
(N, 10) logits.

``DSCNN`` is the depthwise-separable CNN of Hello Edge (Zhang et al. 2017)
for keyword spotting, in its S(mall) and L(arge) sizes: chapter 8's student
and teacher. It takes (N, 1, frames, coefficients) MFCCs and returns (N, 12) logits.

``TutorialCNN`` is the small Keras CNN that many tutorials train on MNIST
(conv 32@3x3, pool, fc 128, fc 10); the book uses it to check a parameter
count (693,962) that circulates wrongly.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "LeNet300100",
    "LeNet5",
    "TutorialCNN",
    "MLP",
    "SmallCNN",
    "DSCNN",
    "MODELS",
    "create",
]


class LeNet300100(nn.Module):
    """Fully connected 784-300-100-10 with ReLU (LeCun et al. 1998): 266,610 parameters.

    >>> net = LeNet300100()
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> sum(p.numel() for p in net.parameters())
    266610
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 300)
        self.fc2 = nn.Linear(300, 100)
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (N, 784)
        x = torch.relu(self.fc1(x))  # (N, 300)
        x = torch.relu(self.fc2(x))  # (N, 100)
        return self.fc3(x)  # (N, 10)


class LeNet5(nn.Module):
    """The Caffe LeNet variant of Han et al.: 431,080 parameters.

    conv 20@5x5 -> max-pool 2 -> conv 50@5x5 -> max-pool 2 -> fc 500 -> fc 10.
    Caffe's original has a ReLU only after the first fully connected layer; we
    add one after each convolution too, which changes no parameter count and
    trains better on Fashion-MNIST.

    >>> net = LeNet5()
    >>> net(torch.zeros(2, 1, 28, 28)).shape
    torch.Size([2, 10])
    >>> sum(p.numel() for p in net.parameters())
    431080
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 20, kernel_size=5)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.fc1 = nn.Linear(50 * 4 * 4, 500)
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # (N, 20, 12, 12)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # (N, 50, 4, 4)
        x = torch.relu(self.fc1(x.flatten(1)))  # (N, 500)
        return self.fc2(x)  # (N, 10)


class TutorialCNN(nn.Module):
    """The Keras tutorial CNN: conv 32@3x3 + ReLU, max-pool 2, fc 128 + ReLU, fc 10.

    >>> sum(p.numel() for p in TutorialCNN().parameters())
    693962
    """

    def __init__(self, num_classes: int = 10):
        super().__init__()
        self.conv = nn.Conv2d(1, 32, kernel_size=3)
        self.fc1 = nn.Linear(32 * 13 * 13, 128)
        self.fc2 = nn.Linear(128, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv(x)), 2)  # (N, 32, 13, 13)
        x = torch.relu(self.fc1(x.flatten(1)))  # (N, 128)
        return self.fc2(x)  # (N, 10)


class MLP(nn.Module):
    """A small fully connected student: 784 -> hidden... -> 10 with ReLU.

    >>> net = MLP(hidden=(32,))
    >>> net(torch.zeros(2, 1, 28, 28)).shape, sum(p.numel() for p in net.parameters())
    (torch.Size([2, 10]), 25450)
    """

    def __init__(self, hidden: tuple[int, ...] = (32,), num_classes: int = 10):
        super().__init__()
        if not hidden or any(h < 1 for h in hidden):
            raise ValueError(f"hidden must be positive layer widths, got {hidden!r}")
        widths = [28 * 28, *hidden]
        self.hidden = nn.ModuleList(
            nn.Linear(a, b) for a, b in zip(widths[:-1], widths[1:], strict=True)
        )
        self.out = nn.Linear(widths[-1], num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)  # (N, 784)
        for layer in self.hidden:
            x = torch.relu(layer(x))
        return self.out(x)  # (N, 10)


class SmallCNN(nn.Module):
    """LeNet-5's shape with fewer channels: a small convolutional student.

    conv c1@5x5 -> max-pool 2 -> conv c2@5x5 -> max-pool 2 -> fc -> fc 10,
    with ReLU after each convolution and the first fully connected layer.
    Its ``conv2`` output has LeNet-5's spatial size (8 x 8), so a hint can
    connect the two. The default is 19,670 parameters, 22 times fewer than
    LeNet-5.

    >>> net = SmallCNN()
    >>> net(torch.zeros(2, 1, 28, 28)).shape, sum(p.numel() for p in net.parameters())
    (torch.Size([2, 10]), 19670)
    """

    def __init__(self, c1: int = 6, c2: int = 16, fc: int = 64, num_classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(1, c1, kernel_size=5)
        self.conv2 = nn.Conv2d(c1, c2, kernel_size=5)
        self.fc1 = nn.Linear(c2 * 4 * 4, fc)
        self.fc2 = nn.Linear(fc, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.max_pool2d(torch.relu(self.conv1(x)), 2)  # (N, c1, 12, 12)
        x = torch.max_pool2d(torch.relu(self.conv2(x)), 2)  # (N, c2, 4, 4)
        x = torch.relu(self.fc1(x.flatten(1)))  # (N, fc)
        return self.fc2(x)  # (N, 10)


class _SeparableBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, each with batch norm and ReLU."""

    def __init__(self, channels: int):
        super().__init__()
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1,
                                   groups=channels, bias=False)  # fmt: skip
        self.bn1 = nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, channels, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.depthwise(x)))  # (N, C, H, W): per channel
        return torch.relu(self.bn2(self.pointwise(x)))  # mixes the channels


class DSCNN(nn.Module):
    """Hello Edge's DS-CNN: a 10x4 conv (stride 2), separable blocks, pool, fc.

    ``size="s"``: 64 channels, 4 blocks (Zhang et al.'s DS-CNN-S, 38.6 KB at
    8 bits); ``size="m"``: 172 channels, 4 blocks; ``size="l"``: 276
    channels, 5 blocks (DS-CNN-L). Input (N, 1, frames, coefficients), e.g.
    51 frames of 10 MFCCs (40 ms every 20 ms); the global average pool makes
    the network indifferent to the number of frames.

    >>> net = DSCNN("s")
    >>> net(torch.zeros(2, 1, 51, 10)).shape, sum(p.numel() for p in net.parameters())
    (torch.Size([2, 12]), 23180)
    >>> sum(p.numel() for p in DSCNN("l").parameters())
    413736
    """

    SIZES = {"s": (64, 4), "m": (172, 4), "l": (276, 5)}

    def __init__(self, size: str = "s", num_classes: int = 12):
        super().__init__()
        if size not in self.SIZES:
            raise ValueError(f"size must be one of {sorted(self.SIZES)}, got {size!r}")
        channels, blocks = self.SIZES[size]
        self.conv = nn.Conv2d(1, channels, (10, 4), stride=2, padding=(5, 1),
                              bias=False)  # fmt: skip
        self.bn = nn.BatchNorm2d(channels)
        self.blocks = nn.Sequential(*[_SeparableBlock(channels) for _ in range(blocks)])
        self.fc = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn(self.conv(x)))  # (N, C, 25, 5)
        x = self.blocks(x)
        return self.fc(x.mean(dim=(2, 3)))  # global average pool -> (N, classes)


MODELS: dict[str, type[nn.Module]] = {
    "lenet300100": LeNet300100,
    "lenet5": LeNet5,
    "tutorialcnn": TutorialCNN,
    "mlp": MLP,
    "smallcnn": SmallCNN,
    "dscnn": DSCNN,
}


def create(name: str, **kwargs) -> nn.Module:
    """Build a model by its name in :data:`MODELS`.

    >>> type(create("lenet5")).__name__
    'LeNet5'
    """
    try:
        return MODELS[name](**kwargs)
    except KeyError:
        raise KeyError(
            f"unknown model {name!r}; choose from {sorted(MODELS)}"
        ) from None
