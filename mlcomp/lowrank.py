"""Low-rank factorization of Linear and Conv2d layers.

* A Linear layer's weight ``W`` (out x in) is replaced by its truncated SVD,
  ``W ~ A @ B`` with ``A`` (out x k) and ``B`` (k x in): by the Eckart-Young-Mirsky
  theorem (Eckart & Young 1936) no rank-k matrix is closer to ``W`` in
  Frobenius norm, and the error is the root of the sum of the dropped squared
  singular values. The layer becomes two Linears, in -> k -> out, with
  ``k (in + out) + out`` parameters instead of ``in * out + out``.
* A Conv2d kernel ``K`` (C_out x C_in x kh x kw) is factorized along its two
  channel modes (Tucker-2, as in Kim et al. 2016), initialised by the
  higher-order SVD: ``U_in`` and ``U_out`` hold the leading left singular
  vectors of the mode-1 and mode-0 unfoldings, and the core is
  ``K x_0 U_out^T x_1 U_in^T``. The conv becomes 1x1 (C_in -> r_in), then kh x kw
  (r_in -> r_out), then 1x1 (r_out -> C_out).
"""

from __future__ import annotations

import sys

import torch
from torch import nn

from mlcomp.layers import FilterFn, replace_module, select

__all__ = [
    "truncated_svd",
    "rank_for_energy",
    "LowRankLinear",
    "factorize_",
    "tucker2_conv",
    "tucker2_ranks",
    "tucker2_macs",
]


def _check_rank(rank: int, limit: int) -> None:
    if isinstance(rank, bool) or not isinstance(rank, int):
        raise TypeError(f"rank must be an int, got {type(rank).__name__}")
    if not 1 <= rank <= limit:
        raise ValueError(f"rank must be in [1, {limit}], got {rank}")


def truncated_svd(weight: torch.Tensor, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Best rank-``rank`` factors ``A`` (m x k), ``B`` (k x n) with ``A @ B ~ weight``.

    The singular values are split evenly, ``A = U_k S_k^(1/2)`` and
    ``B = S_k^(1/2) V_k^T``, so both factors have the same scale. The SVD is
    computed in float64 and the factors returned in ``weight``'s dtype.

    >>> W = torch.tensor([[3.0, 0.0], [0.0, 1.0]])
    >>> A, B = truncated_svd(W, 1)
    >>> A @ B
    tensor([[3., 0.],
            [0., 0.]])
    """
    if weight.dim() != 2:
        raise ValueError(f"weight must be 2-D, got shape {tuple(weight.shape)}")
    _check_rank(rank, min(weight.shape))
    U, S, Vh = torch.linalg.svd(weight.detach().double(), full_matrices=False)
    root = S[:rank].sqrt()
    A = U[:, :rank] * root  # (m, k)
    B = root[:, None] * Vh[:rank]  # (k, n)
    return A.to(weight.dtype), B.to(weight.dtype)


def rank_for_energy(singular_values: torch.Tensor, energy: float) -> int:
    """Smallest ``k`` whose top-k singular values keep ``energy`` of sum(sigma^2).

    ``energy`` is a fraction in (0, 1]; with it, the relative Frobenius error
    of the truncation is at most ``sqrt(1 - energy)``.

    >>> rank_for_energy(torch.tensor([3.0, 2.0, 1.0]), 0.9)  # 9/14 < 0.9 <= 13/14
    2
    """
    if not 0 < energy <= 1:
        raise ValueError(f"energy must be in (0, 1], got {energy}")
    s2 = torch.as_tensor(singular_values, dtype=torch.float64) ** 2
    if s2.dim() != 1 or len(s2) == 0:
        raise ValueError("singular_values must be a non-empty 1-D tensor")
    kept = torch.cumsum(s2, 0) / s2.sum()
    # a tiny tolerance so that energy=1.0 is reached despite rounding
    return (
        int(torch.searchsorted(kept, torch.tensor(energy - 1e-12, dtype=kept.dtype)))
        + 1
    )


class LowRankLinear(nn.Module):
    """``in -> rank -> out``: a Linear factorized as ``second(first(x))``.

    ``first`` has no bias; ``second`` carries the original bias.

    >>> fc = nn.Linear(6, 4)
    >>> low = LowRankLinear.from_linear(fc, rank=4)  # full rank: exact
    >>> x = torch.randn(3, 6)
    >>> torch.allclose(low(x), fc(x), atol=1e-6)
    True
    """

    def __init__(
        self, in_features: int, out_features: int, rank: int, bias: bool = True
    ):
        super().__init__()
        _check_rank(rank, min(in_features, out_features))
        self.first = nn.Linear(in_features, rank, bias=False)
        self.second = nn.Linear(rank, out_features, bias=bias)

    @property
    def rank(self) -> int:
        return self.first.out_features

    @classmethod
    def from_linear(cls, linear: nn.Linear, rank: int) -> LowRankLinear:
        """Factorize ``linear`` by its truncated SVD."""
        layer = cls(
            linear.in_features, linear.out_features, rank, linear.bias is not None
        )
        A, B = truncated_svd(linear.weight, rank)
        with torch.no_grad():
            layer.first.weight.copy_(B)
            layer.second.weight.copy_(A)
            if linear.bias is not None:
                layer.second.bias.copy_(linear.bias)
        return layer.to(linear.weight.device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.second(self.first(x))  # (..., in) -> (..., k) -> (..., out)


def _break_even_rank(linear: nn.Linear) -> float:
    """Ranks below this make the factorized layer smaller than the dense one."""
    m, n = linear.out_features, linear.in_features
    return m * n / (m + n)


def factorize_(
    model: nn.Module,
    rank: int | dict[str, int] | None = None,
    energy: float | None = None,
    filter_fn: FilterFn | None = None,
) -> nn.Module:
    """Replace Linear layers of ``model`` by :class:`LowRankLinear`, in place.

    Give exactly one of ``rank`` (an int for every layer, or a dict from
    layer name to rank) and ``energy`` (each layer gets
    :func:`rank_for_energy` of its own singular values). Layers for which
    ``filter_fn(module, name)`` is false (:func:`mlcomp.layers.select`), or
    that are absent from a ``rank`` dict, are kept. A layer whose
    factorization would not have fewer parameters than the dense layer is
    kept too. Returns ``model``.

    >>> from mlcomp.models import LeNet300100
    >>> net = factorize_(LeNet300100(), rank={"fc1": 32, "fc2": 16})
    >>> type(net.fc1).__name__, net.fc1.rank, type(net.fc3).__name__
    ('LowRankLinear', 32, 'Linear')
    """
    if (rank is None) == (energy is None):
        raise ValueError("give exactly one of rank and energy")
    targets = list(select(model, filter_fn, (nn.Linear,)).items())
    if isinstance(rank, dict):
        unknown = set(rank) - {name for name, _ in targets}
        if unknown:
            raise KeyError(f"no Linear layer named {sorted(unknown)} in the model")
        targets = [(name, m) for name, m in targets if name in rank]
    elif rank is not None:
        _check_rank(rank, sys.maxsize)  # per layer, too large means: keep it
    for name, linear in targets:
        if energy is not None:
            sigma = torch.linalg.svdvals(linear.weight.detach().double())
            k = rank_for_energy(sigma, energy)
        elif isinstance(rank, dict):
            k = rank[name]
            _check_rank(k, min(linear.in_features, linear.out_features))
        else:
            k = rank
        if k >= _break_even_rank(linear):
            continue
        replace_module(model, name, LowRankLinear.from_linear(linear, k))
    return model


def _unfold(kernel: torch.Tensor, mode: int) -> torch.Tensor:
    """Mode-``mode`` unfolding: that mode's fibres become the rows' index."""
    return kernel.movedim(mode, 0).reshape(kernel.shape[mode], -1)


def tucker2_ranks(
    conv: nn.Conv2d,
    energy: float | None = None,
    mac_fraction: float | None = None,
    input_hw: tuple[int, int] | None = None,
) -> tuple[int, int]:
    """Choose ``(out_rank, in_rank)`` for :func:`tucker2_conv`.

    By ``energy``: each rank keeps that fraction of its channel unfolding's
    squared singular values. By ``mac_fraction`` (with ``input_hw``): the
    largest ranks, kept in the proportion ``C_out : C_in``, whose
    factorization costs at most that fraction of the dense conv's MACs.

    >>> tucker2_ranks(nn.Conv2d(8, 16, 3), energy=1.0)
    (16, 8)
    >>> tucker2_ranks(nn.Conv2d(20, 50, 5), mac_fraction=0.4, input_hw=(12, 12))
    (28, 11)
    """
    if (energy is None) == (mac_fraction is None):
        raise ValueError("give exactly one of energy and mac_fraction")
    if energy is not None:
        K = conv.weight.detach().double()
        out_rank, in_rank = (
            rank_for_energy(torch.linalg.svdvals(_unfold(K, mode)), energy)
            for mode in (0, 1)
        )
        return out_rank, in_rank
    if not 0 < mac_fraction <= 1 or input_hw is None:
        raise ValueError("mac_fraction must be in (0, 1] and input_hw given")
    c_out, c_in = conv.out_channels, conv.in_channels
    dense = tucker2_macs(conv, (c_out, c_in), input_hw, dense=True)
    for out_rank in range(c_out, 0, -1):
        in_rank = max(1, round(out_rank * c_in / c_out))
        if tucker2_macs(conv, (out_rank, in_rank), input_hw) <= mac_fraction * dense:
            return out_rank, in_rank
    raise ValueError(f"no ranks fit in {mac_fraction} of the dense MACs")


def tucker2_macs(
    conv: nn.Conv2d,
    ranks: tuple[int, int],
    input_hw: tuple[int, int],
    dense: bool = False,
) -> int:
    """MACs of the Tucker-2 factorization of ``conv`` for one ``input_hw`` input.

    ``H W C_in r_in`` (1x1 at the input size) ``+ H' W' r_in r_out kh kw`` (the
    core at the output size ``H' x W'``) ``+ H' W' r_out C_out`` (1x1).

    >>> conv = nn.Conv2d(20, 50, 5)  # LeNet-5's conv2 on a 12x12 input
    >>> tucker2_macs(conv, (20, 10), (12, 12))
    412800
    >>> tucker2_macs(conv, (50, 20), (12, 12), dense=True)  # the conv itself
    1600000
    """
    r_out, r_in = ranks
    (kh, kw), (h, w) = conv.kernel_size, input_hw
    with torch.no_grad():
        out = conv(torch.zeros(1, conv.in_channels, h, w, dtype=conv.weight.dtype))
    h_out, w_out = out.shape[-2:]
    if dense:
        return h_out * w_out * conv.out_channels * conv.in_channels * kh * kw
    return (
        h * w * conv.in_channels * r_in
        + h_out * w_out * r_in * r_out * kh * kw
        + h_out * w_out * r_out * conv.out_channels
    )


def tucker2_conv(conv: nn.Conv2d, ranks: tuple[int, int]) -> nn.Sequential:
    """Tucker-2 factorization of ``conv`` as 1x1 -> kh x kw -> 1x1, by HOSVD.

    ``ranks = (out_rank, in_rank)``. At full rank the result computes the same
    function as ``conv`` (up to float rounding).

    >>> conv = nn.Conv2d(4, 6, 3, padding=1)
    >>> seq = tucker2_conv(conv, (6, 4))
    >>> x = torch.randn(2, 4, 8, 8)
    >>> torch.allclose(seq(x), conv(x), atol=1e-5)
    True
    """
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"tucker2_conv needs an nn.Conv2d, got {type(conv).__name__}")
    if conv.groups != 1:
        raise ValueError("tucker2_conv supports groups=1 only (grouped conv given)")
    if conv.padding_mode != "zeros":
        raise ValueError(f"padding_mode {conv.padding_mode!r} is not supported")
    r_out, r_in = ranks
    _check_rank(r_out, conv.out_channels)
    _check_rank(r_in, conv.in_channels)
    K = conv.weight.detach().double()  # (C_out, C_in, kh, kw)
    U_out = torch.linalg.svd(_unfold(K, 0), full_matrices=False)[0][:, :r_out]
    U_in = torch.linalg.svd(_unfold(K, 1), full_matrices=False)[0][:, :r_in]
    core = torch.einsum("oikl,or,is->rskl", K, U_out, U_in)  # (r_out, r_in, kh, kw)

    first = nn.Conv2d(conv.in_channels, r_in, 1, bias=False)
    middle = nn.Conv2d(
        r_in, r_out, conv.kernel_size, stride=conv.stride, padding=conv.padding,
        dilation=conv.dilation, bias=False,
    )  # fmt: skip
    last = nn.Conv2d(r_out, conv.out_channels, 1, bias=conv.bias is not None)
    dtype = conv.weight.dtype
    with torch.no_grad():
        first.weight.copy_(U_in.T.reshape(r_in, conv.in_channels, 1, 1).to(dtype))
        middle.weight.copy_(core.to(dtype))
        last.weight.copy_(U_out.reshape(conv.out_channels, r_out, 1, 1).to(dtype))
        if conv.bias is not None:
            last.bias.copy_(conv.bias)
    return nn.Sequential(first, middle, last).to(conv.weight.device)
