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

import copy

import torch
from torch import nn

__all__ = [
    "LeNet300100",
    "LeNet5",
    "TutorialCNN",
    "MLP",
    "SmallCNN",
    "DSCNN",
    "fold_batchnorm",
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


def fold_batchnorm(
    conv: nn.Conv2d, bn: nn.BatchNorm2d
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of one conv that computes ``bn(conv(x))`` in eval mode.

    With ``s = gamma / sqrt(running_var + eps)`` per output channel:
    ``w' = w * s`` and ``b' = (b - running_mean) * s + beta``.

    >>> conv, bn = nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3).eval()
    >>> _ = bn.running_var.fill_(4.0)
    >>> w, b = fold_batchnorm(conv, bn)
    >>> torch.allclose(w, conv.weight / (4.0 + bn.eps) ** 0.5)
    True
    """
    scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
    bias = conv.bias if conv.bias is not None else torch.zeros_like(bn.running_mean)
    weight = conv.weight * scale.reshape(-1, *([1] * (conv.weight.dim() - 1)))
    return weight.detach(), ((bias - bn.running_mean) * scale + bn.bias).detach()


class _SeparableBlock(nn.Module):
    """Depthwise 3x3 then pointwise 1x1, each with batch norm and ReLU."""

    def __init__(self, channels: int, out_channels: int | None = None, folded=False):
        super().__init__()
        out_channels = channels if out_channels is None else out_channels
        self.depthwise = nn.Conv2d(channels, channels, 3, padding=1,
                                   groups=channels, bias=folded)  # fmt: skip
        self.bn1 = nn.Identity() if folded else nn.BatchNorm2d(channels)
        self.pointwise = nn.Conv2d(channels, out_channels, 1, bias=folded)
        self.bn2 = nn.Identity() if folded else nn.BatchNorm2d(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn1(self.depthwise(x)))  # (N, C, H, W): per channel
        return torch.relu(self.bn2(self.pointwise(x)))  # mixes the channels


class DSCNN(nn.Module):
    """Hello Edge's DS-CNN: a 10x4 conv (stride 2), separable blocks, pool, fc.

    ``size="s"``: 64 channels, 4 blocks (Zhang et al.'s DS-CNN-S, 38.6 KB at
    8 bits); ``size="m"``: 172 channels, 4 blocks; ``size="l"``: 276
    channels, 5 blocks (DS-CNN-L). ``widths`` overrides the size with one
    channel count per stage (the first conv, then each block's pointwise
    conv), which is what structured pruning leaves behind
    (:func:`mlcomp.prune.shrink_channels`).

    Input (N, 1, frames, coefficients), e.g. 51 frames of 10 MFCCs (40 ms
    every 20 ms); the global average pool makes the network indifferent to
    the number of frames. The buffers ``feature_mean`` and ``feature_std``
    (one per coefficient) normalize the input inside the model, so a saved
    model carries the statistics it was trained with. ``folded=True``
    builds the deployment form, each batch norm folded into the conv before
    it (:meth:`folded`): convs with biases, no batch norms.

    >>> net = DSCNN("s")
    >>> net(torch.zeros(2, 1, 51, 10)).shape, sum(p.numel() for p in net.parameters())
    (torch.Size([2, 12]), 23180)
    >>> sum(p.numel() for p in DSCNN("l").parameters())
    413736
    >>> DSCNN(widths=(32, 32, 24, 24, 16)).fc
    Linear(in_features=16, out_features=12, bias=True)
    """

    SIZES = {"s": (64, 4), "m": (172, 4), "l": (276, 5)}

    def __init__(
        self,
        size: str = "s",
        num_classes: int = 12,
        widths: tuple[int, ...] | list[int] | None = None,
        n_coefficients: int = 10,
        folded: bool = False,
    ):
        super().__init__()
        if size not in self.SIZES:
            raise ValueError(f"size must be one of {sorted(self.SIZES)}, got {size!r}")
        if widths is None:
            channels, blocks = self.SIZES[size]
            widths = (channels,) * (blocks + 1)
        widths = tuple(int(w) for w in widths)
        if len(widths) < 2 or min(widths) < 1:
            raise ValueError(f"widths needs two or more positive counts, got {widths}")
        self.register_buffer("feature_mean", torch.zeros(n_coefficients))
        self.register_buffer("feature_std", torch.ones(n_coefficients))
        self.conv = nn.Conv2d(1, widths[0], (10, 4), stride=2, padding=(5, 1),
                              bias=folded)  # fmt: skip
        self.bn = nn.Identity() if folded else nn.BatchNorm2d(widths[0])
        self.blocks = nn.Sequential(
            *[
                _SeparableBlock(a, b, folded)
                for a, b in zip(widths, widths[1:], strict=False)
            ]
        )
        self.fc = nn.Linear(widths[-1], num_classes)

    @property
    def widths(self) -> tuple[int, ...]:
        """Channels per stage, read from the layers (so also after shrinking)."""
        return (self.conv.out_channels,) + tuple(
            b.pointwise.out_channels for b in self.blocks
        )

    @property
    def is_folded(self) -> bool:
        return isinstance(self.bn, nn.Identity)

    def folded(self) -> DSCNN:
        """A copy with every batch norm folded into its conv (same outputs, eval mode).

        >>> net = DSCNN(widths=(8, 8)).eval()
        >>> x = torch.randn(2, 1, 51, 10)
        >>> small = net.folded()
        >>> torch.allclose(net(x), small(x), atol=1e-5), small.is_folded
        (True, True)
        """
        if self.is_folded:
            return copy.deepcopy(self)
        out = DSCNN(widths=self.widths, num_classes=self.fc.out_features,
                    n_coefficients=len(self.feature_mean), folded=True)  # fmt: skip
        pairs = (
            [(self.conv, self.bn, out.conv)]
            + [
                (b.depthwise, b.bn1, o.depthwise)
                for b, o in zip(self.blocks, out.blocks, strict=True)
            ]
            + [
                (b.pointwise, b.bn2, o.pointwise)
                for b, o in zip(self.blocks, out.blocks, strict=True)
            ]
        )
        with torch.no_grad():
            for conv, bn, target in pairs:
                weight, bias = fold_batchnorm(conv, bn)
                target.weight.copy_(weight)
                target.bias.copy_(bias)
            out.fc.load_state_dict(self.fc.state_dict())
            out.feature_mean.copy_(self.feature_mean)
            out.feature_std.copy_(self.feature_std)
        return out.eval()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = (x - self.feature_mean) / self.feature_std  # (N, 1, frames, coefficients)
        x = torch.relu(self.bn(self.conv(x)))  # (N, C, 26, 5) for 51 frames
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
