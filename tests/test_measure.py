import pytest
import torch
from torch import nn

from mlcomp.measure import count_params, latency, layer_macs, macs, storage_bytes
from mlcomp.models import LeNet5, LeNet300100, TutorialCNN


def test_lenet5_macs_match_closed_form():
    # conv: H_out * W_out * C_out * (C_in * k * k); linear: in * out
    expected = {
        "conv1": 24 * 24 * 20 * (1 * 25),
        "conv2": 8 * 8 * 50 * (20 * 25),
        "fc1": 800 * 500,
        "fc2": 500 * 10,
    }
    assert layer_macs(LeNet5(), (1, 28, 28)) == expected
    assert macs(LeNet5(), (1, 28, 28)) == 2_293_000


def test_macs_of_grouped_strided_convolution():
    conv = nn.Conv2d(8, 16, 3, stride=2, padding=1, groups=4)
    out = conv(torch.zeros(1, 8, 32, 32))
    assert macs(conv, (8, 32, 32)) == out.numel() * (8 // 4) * 9 == 16 * 16 * 16 * 18


def test_macs_count_each_call_of_a_shared_layer():
    class Twice(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(5, 5)

        def forward(self, x):
            return self.fc(self.fc(x))

    assert macs(Twice(), (5,)) == 2 * 25


def test_macs_leave_training_mode_and_hooks_alone():
    net = TutorialCNN().train()
    macs(net, (1, 28, 28))
    assert net.training
    assert all(not m._forward_hooks for m in net.modules())


def test_count_params_total_and_nonzero():
    net = LeNet300100()
    assert count_params(net) == 266_610
    with torch.no_grad():
        net.fc1.weight[:, :100].zero_()
    assert count_params(net, nonzero=True) == 266_610 - 300 * 100


def test_storage_bytes_rounds_per_tensor():
    tensors = [torch.zeros(3), torch.zeros(5)]
    assert storage_bytes(tensors, bits=32) == 32
    assert storage_bytes(tensors, bits=3) == 2 + 2  # ceil(9/8) + ceil(15/8)
    assert storage_bytes(LeNet5(), bits=32) == 4 * 431_080
    for bad in (0, 65, 2.5):
        with pytest.raises(ValueError, match="bits"):
            storage_bytes(tensors, bits=bad)


def test_latency_restores_threads_and_mode():
    net = nn.Linear(16, 16).train()
    before = torch.get_num_threads()
    result = latency(net, torch.randn(2, 16), repeats=7, warmup=2, threads=1)
    assert result.threads == 1 and result.repeats == 7
    assert 0 < result.p10_ms <= result.median_ms <= result.p90_ms
    assert torch.get_num_threads() == before and net.training
    assert "ms" in str(result)
    with pytest.raises(ValueError):
        latency(net, torch.randn(2, 16), repeats=0)
    with pytest.raises(ValueError):
        latency(net, torch.randn(2, 16), threads=0)


def test_pruned_modules_are_counted_through_their_masks():
    from torch.nn.utils import prune as torch_prune

    net = LeNet300100()
    torch_prune.l1_unstructured(net.fc1, "weight", amount=0.75)
    assert count_params(net) == 266_610  # weight_orig is not counted twice
    assert count_params(net, nonzero=True) == 266_610 - round(0.75 * 784 * 300)
    assert storage_bytes(net) == 4 * 266_610


def test_a_tied_weight_is_counted_once():
    from mlcomp.gpt import GPT, GPTConfig

    net = GPT(GPTConfig(n_layer=1, n_head=1, n_embd=8, block_size=4))
    assert net.head.weight is net.tok_emb.weight
    assert count_params(net) == sum(p.numel() for p in net.parameters())
