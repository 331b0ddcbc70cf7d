import copy

import pytest
import torch
from torch import nn

from mlcomp.layers import NoLayerError
from mlcomp.measure import count_params, macs
from mlcomp.models import LeNet5, TutorialCNN
from mlcomp.prune import UnsupportedModelError, filter_norms, shrink_channels

X = torch.randn(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))


def kept(conv, amount, norm="l1"):
    n_keep = max(1, conv.out_channels - round(amount * conv.out_channels))
    return set(torch.topk(filter_norms(conv, norm), n_keep).indices.tolist())


def zero_inputs_of_dropped(reference, producer, consumer, keep, spatial=None):
    """Silence dropped channels in the original: zero what the consumer reads."""
    conv, nxt = reference.get_submodule(producer), reference.get_submodule(consumer)
    dropped = [c for c in range(conv.out_channels) if c not in keep]
    with torch.no_grad():
        for c in dropped:
            if isinstance(nxt, nn.Conv2d):
                nxt.weight[:, c] = 0
            else:
                nxt.weight[:, c * spatial : (c + 1) * spatial] = 0


@pytest.mark.parametrize("amount, norm", [(0.5, "l1"), (0.3, "l2"), (0.9, "l1")])
def test_lenet5_shrinks_and_computes_the_silenced_original(amount, norm):
    torch.manual_seed(0)
    net = LeNet5().eval()
    small = shrink_channels(net, amount, X[:1], norm=norm)
    k1, k2 = kept(net.conv1, amount, norm), kept(net.conv2, amount, norm)
    assert small.conv1.out_channels == len(k1) == small.conv2.in_channels
    assert small.fc1.in_features == len(k2) * 16
    reference = copy.deepcopy(net)
    zero_inputs_of_dropped(reference, "conv1", "conv2", k1)
    zero_inputs_of_dropped(reference, "conv2", "fc1", k2, spatial=16)
    torch.testing.assert_close(small(X), reference(X), atol=1e-5, rtol=1e-5)
    assert count_params(small) < count_params(net) and macs(small, (1, 28, 28)) < macs(
        net, (1, 28, 28)
    )


def test_original_is_untouched_and_amount_zero_is_identity():
    torch.manual_seed(0)
    net = LeNet5()
    before = copy.deepcopy(net.state_dict())
    same = shrink_channels(net, 0.0, X[:1])
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    torch.testing.assert_close(same(X), net(X))


def test_sequential_with_batchnorm_and_nn_flatten():
    torch.manual_seed(0)
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3), nn.BatchNorm2d(16), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )  # fmt: skip
    for bn in (net[1], net[5]):  # non-trivial running statistics
        bn.running_mean.uniform_(-1, 1)
        bn.running_var.uniform_(0.5, 2)
    net.eval()
    small = shrink_channels(net, 0.25, X[:1])
    assert small[1].num_features == small[0].out_channels == 6 == small[4].in_channels
    assert small[5].num_features == 12 and small[9].in_features == 12 * 4
    # silencing in the original needs the BN output of dropped channels to be ignored
    reference = copy.deepcopy(net)
    zero_inputs_of_dropped(reference, "0", "4", kept(net[0], 0.25))
    zero_inputs_of_dropped(reference, "4", "9", kept(net[4], 0.25), spatial=4)
    torch.testing.assert_close(small(X), reference(X), atol=1e-5, rtol=1e-5)


def test_filter_fn_limits_which_convs_shrink():
    net = LeNet5()
    small = shrink_channels(net, 0.5, torch.zeros(1, 1, 28, 28),
                            filter_fn=lambda m, name: name == "conv2")  # fmt: skip
    assert small.conv1.out_channels == 20 and small.conv2.out_channels == 25
    with pytest.raises(NoLayerError, match="filter_fn matched none"):
        shrink_channels(net, 0.5, torch.zeros(1, 1, 28, 28), filter_fn=lambda m, n: 0)
    small = shrink_channels(TutorialCNN(), 0.5, X[:1])
    assert small.conv.out_channels == 16 and small.fc1.in_features == 16 * 13 * 13


class Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3, padding=1), nn.Conv2d(4, 4, 3, padding=1)

    def forward(self, x):
        y = self.a(x)
        return self.b(y) + y


class Reshaping(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv, self.fc = nn.Conv2d(1, 4, 3), nn.Linear(4 * 26 * 26, 2)

    def forward(self, x):
        return self.fc(self.conv(x).view(x.shape[0], -1))


class Grouped(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 3, groups=2)

    def forward(self, x):
        return self.b(self.a(x))


@pytest.mark.parametrize(
    "model, match",
    [(Residual(), "used 2 times"), (Reshaping(), "view"), (Grouped(), "grouped")],
)
def test_unsupported_structures_are_refused(model, match):
    with pytest.raises(UnsupportedModelError, match=match):
        shrink_channels(model, 0.5, X[:1])


def test_bad_amount_and_norm():
    with pytest.raises(ValueError, match="amount"):
        shrink_channels(LeNet5(), 1.5, X[:1])
    with pytest.raises(ValueError, match="amount"):
        shrink_channels(LeNet5(), 21, X[:1])  # conv1 has 20 filters
    with pytest.raises(TypeError, match="amount"):
        shrink_channels(LeNet5(), "half", X[:1])
    smallest = shrink_channels(LeNet5(), 1.0, X[:1])  # one filter is always kept
    assert smallest.conv1.out_channels == smallest.conv2.out_channels == 1
    by_count = shrink_channels(LeNet5(), 10, X[:1])  # an int drops that many
    assert by_count.conv1.out_channels == 10 and by_count.conv2.out_channels == 40
    with pytest.raises(ValueError, match="norm"):
        filter_norms(nn.Conv2d(1, 2, 3), "l0")


def test_training_mode_batchnorm_statistics_are_not_touched():
    net = nn.Sequential(
        nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 26 * 26, 2)
    )
    before = net[1].running_mean.clone()
    small = shrink_channels(net.train(), 0.5, X[:1])
    assert torch.equal(net[1].running_mean, before)
    assert small[1].training


def test_dscnn_shrinks_through_depthwise_convs_and_the_global_pool():
    from mlcomp.models import DSCNN

    torch.manual_seed(0)
    net = DSCNN(widths=(16, 12, 12, 8)).eval()
    for m in net.modules():  # batch norms that do something
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)
    x = torch.randn(3, 1, 51, 10, generator=torch.Generator().manual_seed(1))
    small = shrink_channels(net, 0.5, x[:1])
    assert small.widths == (8, 6, 6, 4)
    producers = [
        "conv",
        "blocks.0.pointwise",
        "blocks.1.pointwise",
        "blocks.2.pointwise",
    ]
    consumers = ["blocks.0.pointwise", "blocks.1.pointwise", "blocks.2.pointwise", "fc"]
    reference = copy.deepcopy(net)
    for producer, consumer in zip(producers, consumers, strict=True):
        keep = kept(net.get_submodule(producer), 0.5)
        zero_inputs_of_dropped(reference, producer, consumer, keep, spatial=1)
    assert small.blocks[0].depthwise.groups == 8 == small.blocks[0].bn1.num_features
    torch.testing.assert_close(small(x), reference(x), atol=1e-5, rtol=1e-5)
    # the shrunk network is an ordinary DSCNN: its weights load into one
    rebuilt = DSCNN(widths=small.widths)
    rebuilt.load_state_dict(small.state_dict())


def test_a_grouped_conv_that_is_not_depthwise_is_refused():
    net = nn.Sequential(
        nn.Conv2d(1, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3, groups=2), nn.Flatten(),
        nn.LazyLinear(3),
    )  # fmt: skip
    net(X[:1])
    with pytest.raises(UnsupportedModelError, match="grouped"):
        shrink_channels(net, 0.5, X[:1])
