import numpy as np
import pytest
import torch
from torch import nn

from mlcomp.lowrank import (
    LowRankLinear,
    factorize_,
    rank_for_energy,
    truncated_svd,
    tucker2_conv,
    tucker2_macs,
    tucker2_ranks,
)
from mlcomp.measure import count_params, macs
from mlcomp.models import LeNet5, LeNet300100


@pytest.fixture
def W():
    return torch.randn(
        50, 30, generator=torch.Generator().manual_seed(0), dtype=torch.float64
    )


@pytest.mark.parametrize("k", [1, 5, 29, 30])
def test_eckart_young_error_matches_dropped_singular_values(W, k):
    A, B = truncated_svd(W, k)
    sigma = np.linalg.svd(W.numpy(), compute_uv=False)
    error = torch.linalg.matrix_norm(W - A @ B).item()
    assert error == pytest.approx(np.sqrt((sigma[k:] ** 2).sum()), abs=1e-10)
    # the same matrix as numpy's truncated reconstruction
    U, S, Vt = np.linalg.svd(W.numpy(), full_matrices=False)
    np.testing.assert_allclose((A @ B).numpy(), (U[:, :k] * S[:k]) @ Vt[:k], atol=1e-12)


def test_no_random_rank_k_approximation_beats_the_svd(W):
    k = 5
    A, B = truncated_svd(W, k)
    best = torch.linalg.matrix_norm(W - A @ B)
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        # the best approximation within a random k-dimensional column space
        Q, _ = torch.linalg.qr(torch.randn(50, k, generator=g, dtype=torch.float64))
        assert torch.linalg.matrix_norm(W - Q @ (Q.T @ W)) >= best


def test_factors_are_balanced_and_keep_dtype(W):
    A, B = truncated_svd(W.float(), 4)
    assert (
        A.dtype == B.dtype == torch.float32
        and A.shape == (50, 4)
        and B.shape == (4, 30)
    )
    torch.testing.assert_close(A.norm(dim=0), B.norm(dim=1))


def test_truncated_svd_rejects_bad_input(W):
    with pytest.raises(ValueError, match="2-D"):
        truncated_svd(torch.zeros(2, 3, 4), 1)
    with pytest.raises(ValueError, match="rank"):
        truncated_svd(W, 31)
    with pytest.raises(TypeError):
        truncated_svd(W, 2.0)


def test_rank_for_energy_edges():
    s = torch.tensor([4.0, 2.0, 1.0, 0.0])  # energies 16, 4, 1, 0 of 21
    assert rank_for_energy(s, 16 / 21) == 1
    assert rank_for_energy(s, 16 / 21 + 1e-6) == 2
    assert rank_for_energy(s, 1.0) == 3  # the zero singular value is never needed
    for bad in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError):
            rank_for_energy(s, bad)


def test_low_rank_linear_matches_its_factors_and_counts():
    fc = nn.Linear(40, 20)
    low = LowRankLinear.from_linear(fc, rank=5)
    A, B = truncated_svd(fc.weight, 5)
    x = torch.randn(7, 40)
    torch.testing.assert_close(low(x), x @ (A @ B).T + fc.bias)
    assert count_params(low) == 5 * (40 + 20) + 20
    full = LowRankLinear.from_linear(fc, rank=20)
    torch.testing.assert_close(full(x), fc(x), atol=1e-5, rtol=1e-5)


def test_factorize_by_rank_energy_and_filter():
    net = LeNet300100()
    x = torch.randn(4, 1, 28, 28)
    factorize_(net, rank=32)
    assert isinstance(net.fc1, LowRankLinear) and isinstance(net.fc2, LowRankLinear)
    assert isinstance(net.fc3, nn.Linear)  # rank 32 >= 100*10/110: would grow, kept
    assert count_params(net) == 32 * (784 + 300) + 300 + 32 * (300 + 100) + 100 + 1010
    assert net(x).shape == (4, 10)

    net = LeNet300100()
    sigma = torch.linalg.svdvals(net.fc2.weight.detach().double())
    factorize_(net, energy=0.5, filter_fn=lambda m, name: name == "fc2")
    assert isinstance(net.fc2, LowRankLinear) and isinstance(net.fc1, nn.Linear)
    assert net.fc2.rank == rank_for_energy(sigma, 0.5)


def test_factorize_energy_one_is_exact_where_it_shrinks():
    net = nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Sequential(nn.Linear(64, 4)))
    with torch.no_grad():
        net[0].weight.copy_(torch.randn(64, 3) @ torch.randn(3, 64))  # rank 3
    x = torch.randn(5, 64)
    before = net(x)
    factorize_(net, energy=1.0)
    assert isinstance(net[0], LowRankLinear) and net[0].rank == 3
    assert isinstance(net[2][0], nn.Linear)  # nested layer at full rank would grow
    torch.testing.assert_close(net(x), before, atol=1e-4, rtol=1e-4)


def test_factorize_argument_errors():
    with pytest.raises(ValueError, match="exactly one"):
        factorize_(LeNet300100())
    with pytest.raises(ValueError, match="exactly one"):
        factorize_(LeNet300100(), rank=4, energy=0.9)
    with pytest.raises(KeyError, match="fc9"):
        factorize_(LeNet300100(), rank={"fc9": 4})
    with pytest.raises(ValueError, match="rank"):
        factorize_(LeNet300100(), rank={"fc3": 11})


@pytest.mark.parametrize(
    "kwargs", [{}, {"stride": 2, "padding": 1}, {"dilation": 2, "bias": False}]
)
def test_tucker2_full_rank_is_exact(kwargs):
    conv = nn.Conv2d(6, 10, 3, **kwargs)
    seq = tucker2_conv(conv, (10, 6))
    x = torch.randn(2, 6, 11, 11)
    torch.testing.assert_close(seq(x), conv(x), atol=1e-5, rtol=1e-5)


def test_tucker2_truncation_is_the_hosvd_projection():
    conv = nn.Conv2d(12, 16, 3, padding=1)
    seq = tucker2_conv(conv, (5, 4))
    K = conv.weight.detach().double()
    U_out = np.linalg.svd(K.reshape(16, -1).numpy())[0][:, :5]
    U_in = np.linalg.svd(K.transpose(0, 1).reshape(12, -1).numpy())[0][:, :4]
    projected = np.einsum("oikl,op,iq->pqkl", K.numpy(), U_out @ U_out.T, U_in @ U_in.T)
    composed = torch.einsum(  # the three kernels composed into one
        "or,rskl,si->oikl",
        seq[2].weight[:, :, 0, 0].double(),
        seq[1].weight.double(),
        seq[0].weight[:, :, 0, 0].double(),
    )
    np.testing.assert_allclose(composed.detach().numpy(), projected, atol=1e-5)


def test_tucker2_macs_formula_matches_the_hooks():
    conv = LeNet5().conv2
    for ranks in [(50, 20), (20, 10), (3, 2)]:
        assert tucker2_macs(conv, ranks, (12, 12)) == macs(
            tucker2_conv(conv, ranks), (20, 12, 12)
        )
    assert tucker2_macs(conv, (50, 20), (12, 12), dense=True) == macs(
        conv, (20, 12, 12)
    )


def test_tucker2_ranks_by_energy_and_budget():
    conv = LeNet5().conv2
    assert tucker2_ranks(conv, energy=1.0) == (50, 20)
    small = tucker2_ranks(conv, energy=0.5)
    assert small[0] < 50 and small[1] < 20
    out_rank, in_rank = tucker2_ranks(conv, mac_fraction=0.3, input_hw=(12, 12))
    assert tucker2_macs(conv, (out_rank, in_rank), (12, 12)) <= 0.3 * 1_600_000
    bigger = (out_rank + 1, max(1, round((out_rank + 1) * 20 / 50)))
    assert tucker2_macs(conv, bigger, (12, 12)) > 0.3 * 1_600_000


def test_tucker2_refuses_what_it_cannot_do():
    with pytest.raises(ValueError, match="groups"):
        tucker2_conv(nn.Conv2d(4, 4, 3, groups=2), (2, 2))
    with pytest.raises(TypeError, match="Conv2d"):
        tucker2_conv(nn.Linear(3, 3), (1, 1))
    with pytest.raises(ValueError, match="rank"):
        tucker2_conv(nn.Conv2d(4, 6, 3), (7, 2))
    with pytest.raises(ValueError, match="exactly one"):
        tucker2_ranks(nn.Conv2d(4, 6, 3))
