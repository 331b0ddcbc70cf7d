import pytest
import torch
from torch import nn

from mlcomp.models import DSCNN, MODELS, LeNet5, LeNet300100, TutorialCNN, create


def dense_params(*layers):
    """Closed form: weights + biases of (fan_in, fan_out) layers."""
    return sum(fan_in * fan_out + fan_out for fan_in, fan_out in layers)


def test_parameter_counts_match_closed_form():
    assert (
        sum(p.numel() for p in LeNet300100().parameters())
        == dense_params((784, 300), (300, 100), (100, 10))
        == 266_610
    )
    lenet5 = dense_params((1 * 25, 20), (20 * 25, 50), (800, 500), (500, 10))
    assert sum(p.numel() for p in LeNet5().parameters()) == lenet5 == 431_080
    tutorial = dense_params((9, 32), (32 * 13 * 13, 128), (128, 10))
    assert sum(p.numel() for p in TutorialCNN().parameters()) == tutorial == 693_962


@pytest.mark.parametrize("name", sorted(MODELS))
def test_forward_shapes_and_gradients(name):
    net = create(name)
    speech = name == "dscnn"  # MFCC frames in, the 12 keyword classes out
    x = torch.randn(3, 1, 51, 10) if speech else torch.randn(3, 1, 28, 28)
    out = net(x)
    assert out.shape == (3, 12 if speech else 10)
    out.sum().backward()
    assert all(p.grad is not None for p in net.parameters())


def test_lenet5_matches_an_independent_sequential():
    net = LeNet5()
    ref = nn.Sequential(
        nn.Conv2d(1, 20, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(20, 50, 5), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(800, 500), nn.ReLU(), nn.Linear(500, 10),
    )  # fmt: skip
    ref.load_state_dict(
        dict(zip(ref.state_dict(), net.state_dict().values(), strict=True))
    )
    x = torch.randn(4, 1, 28, 28)
    torch.testing.assert_close(net(x), ref(x))


def test_unknown_model_names_the_choices():
    with pytest.raises(KeyError, match="lenet5"):
        create("resnet")


@pytest.mark.parametrize("size", ["s", "m", "l"])
def test_dscnn_parameters_match_closed_form(size):
    c, blocks = DSCNN.SIZES[size]
    bn = 2 * c  # scale and shift
    closed = (c * 10 * 4 + bn) + blocks * (9 * c + bn + c * c + bn) + (c * 12 + 12)
    net = DSCNN(size)
    assert sum(p.numel() for p in net.parameters()) == closed
    depthwise = net.blocks[0].depthwise
    assert depthwise.groups == c and depthwise.weight.shape == (c, 1, 3, 3)
    with pytest.raises(ValueError, match="size must be one of"):
        DSCNN("xl")
