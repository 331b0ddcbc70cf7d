"""One vocabulary: filter_fn, bits and amount behave alike in every verb."""

import pytest
import torch
from torch import nn

from mlcomp import layers, lowrank, prune, quant, utils
from mlcomp.coding import TensorSpec
from mlcomp.layers import NoLayerError
from mlcomp.models import LeNet5


def test_select_calls_filter_fn_with_module_then_name_as_torchao_does():
    seen = []

    def spy(module, name):
        seen.append((type(module).__name__, name))
        return name.startswith("fc")

    assert list(layers.select(LeNet5(), spy)) == ["fc1", "fc2"]
    assert seen == [("Conv2d", "conv1"), ("Conv2d", "conv2"),
                    ("Linear", "fc1"), ("Linear", "fc2")]  # fmt: skip
    convs = layers.select(LeNet5(), types=(nn.Conv2d,))
    assert list(convs) == ["conv1", "conv2"]


NOTHING = lambda m, name: name == "no such layer"  # noqa: E731

VERBS = {
    "magnitude_ layer": lambda net: prune.magnitude_(net, 0.5, filter_fn=NOTHING),
    "magnitude_ global": lambda net: prune.magnitude_(
        net, 0.5, scope="global", filter_fn=NOTHING
    ),
    "sparsity": lambda net: prune.sparsity(net, NOTHING),
    "sensitivity": lambda net: prune.sensitivity(
        net, (torch.zeros(2, 1, 28, 28), torch.zeros(2, dtype=torch.long)), [0.5],
        NOTHING,
    ),
    "shrink_channels": lambda net: prune.shrink_channels(
        net, 0.5, torch.zeros(1, 1, 28, 28), filter_fn=NOTHING
    ),
    "quantize_": lambda net: quant.quantize_(net, quant.QuantConfig(), NOTHING),
    "kmeans_": lambda net: quant.kmeans_(net, 4, NOTHING),
    "capture_inputs": lambda net: quant.capture_inputs(
        net, torch.zeros(1, 1, 28, 28), NOTHING
    ),
    "factorize_": lambda net: lowrank.factorize_(net, rank=4, filter_fn=NOTHING),
}  # fmt: skip


@pytest.mark.parametrize("verb", VERBS)
def test_a_filter_that_matches_nothing_is_one_clear_error_everywhere(verb):
    net = LeNet5()
    before = {k: v.clone() for k, v in net.state_dict().items()}
    with pytest.raises(NoLayerError, match="filter_fn matched none of the"):
        VERBS[verb](net)
    after = net.state_dict()
    assert before.keys() == after.keys()  # nothing was half done
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_bits_are_validated_alike_everywhere():
    for make in (
        lambda b: utils.check_bits(b),
        lambda b: TensorSpec(values="uniform", bits=b),
        lambda b: quant.QuantConfig(weight_bits=b),
        lambda b: quant.qrange(b),
        lambda b: quant.kmeans_(nn.Linear(4, 2), b),
    ):
        with pytest.raises(TypeError, match="must be an integer in"):
            make(4.5)
        with pytest.raises(TypeError, match="must be an integer in"):
            make(True)
        with pytest.raises(ValueError, match=r"must be an integer in \d\.\.16"):
            make(17)
    assert TensorSpec(values="codebook", bits=16).bits == 16


def test_amount_is_a_fraction_in_0_1_or_a_count_everywhere():
    assert utils.count(0.5, 9) == round(4.5) == 4  # half to even, as torch
    assert utils.count(9, 9) == 9 and utils.count(1.0, 9) == 9
    w = torch.arange(1.0, 11.0)
    assert int((prune.magnitude_mask(w, 3) == 0).sum()) == 3
    for bad, error in ((1.5, ValueError), (-1, ValueError), ("0.5", TypeError)):
        with pytest.raises(error, match="amount"):
            prune.magnitude_mask(w, bad)
        with pytest.raises(error, match="amount"):
            prune.shrink_channels(LeNet5(), bad, torch.zeros(1, 1, 28, 28))
        with pytest.raises(error, match="amount"):
            utils.count(bad, 10)


def test_replace_module_and_its_errors():
    net = nn.Sequential(nn.Linear(2, 2), nn.Sequential(nn.ReLU()))
    assert isinstance(layers.replace_module(net, "1.0", nn.Tanh())[1][0], nn.Tanh)
    with pytest.raises(ValueError, match="the model itself"):
        layers.replace_module(net, "", nn.Tanh())
    with pytest.raises(AttributeError):
        layers.replace_module(net, "1.5", nn.Tanh())
    with pytest.raises(NoLayerError, match="has no Linear or Conv2d"):
        layers.prunable(nn.Sequential(nn.ReLU()))
