"""Weight-only quantization with one scale per group of inputs (4-bit LLM style).

A per-channel scale is set by the largest weight of a whole output row; in
a Transformer one outlier in a row of a few hundred weights then wastes
most of a 4-bit grid. Cutting each row into groups of ``group_size``
consecutive inputs, each with its own affine scale and zero point, bounds
the damage of an outlier to its group (the scheme of GPTQ, AWQ and
llama.cpp's ``Q4_1``-type formats), at the price of the parameters:
``2 + bits / 8`` bytes per group here (a float16 scale, a ``bits``-bit
zero point), so ``bits + (16 + bits) / group_size`` bits per weight.

The scale is rounded to float16 *before* the codes are computed, so the
stored scale is the one the codes were made for.

>>> w = torch.randn(8, 128, generator=torch.Generator().manual_seed(0))
>>> g = GroupQuantized.from_weight(w, bits=4, group_size=32)
>>> g.codes.shape, g.scales.shape, round(g.bits_per_weight, 3)
(torch.Size([8, 128]), torch.Size([8, 4]), 4.625)
>>> bool((g.dequantize() - w).abs().max() <= g.scales.float().max() / 2 + 1e-6)
True
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from torch import nn

from mlcomp.coding.bits import pack_bits
from mlcomp.layers import FilterFn, prunable
from mlcomp.utils import check_bits

__all__ = ["GroupQuantized", "quantize_groups_", "save_groups"]


@dataclass
class GroupQuantized:
    """A weight (out, in) as ``bits``-bit codes, a scale and a zero point per group.

    >>> g = GroupQuantized.from_weight(torch.tensor([[0.0, 15.0, -8.0, 7.0]]), 4, 2)
    >>> g.codes.tolist(), g.zeros.tolist(), g.dequantize().tolist()
    ([[0, 15, 0, 15]], [[0, 8]], [[0.0, 15.0, -8.0, 7.0]])
    """

    codes: torch.Tensor  # (out, in) uint8 in 0 .. 2**bits - 1
    scales: torch.Tensor  # (out, in / group_size) float16
    zeros: torch.Tensor  # (out, in / group_size) uint8
    bits: int
    group_size: int

    @classmethod
    def from_weight(
        cls, weight: torch.Tensor, bits: int = 4, group_size: int | None = 64
    ) -> GroupQuantized:
        """Min-max affine quantization of every group (zero exact).

        ``group_size=None`` is one group per row (per output channel).
        """
        check_bits(bits, high=8)
        w = weight.detach().float()
        if w.dim() != 2:
            raise ValueError(f"weight must be 2-D (out, in), got {tuple(w.shape)}")
        if group_size is None:
            group_size = w.shape[1]
        if group_size < 1 or w.shape[1] % group_size:
            raise ValueError(
                f"group_size {group_size} must divide the input size {w.shape[1]}"
            )
        groups = w.reshape(w.shape[0], -1, group_size)  # (out, G, g)
        qmax = (1 << bits) - 1
        lo = groups.amin(dim=2).clamp(max=0.0)
        hi = groups.amax(dim=2).clamp(min=0.0)
        scale = ((hi - lo) / qmax).clamp(min=1e-8).half()  # stored as float16
        s = scale.float()[..., None]
        zero = torch.clamp(torch.round(-lo / scale.float()), 0, qmax)
        q = torch.clamp(torch.round(groups / s) + zero[..., None], 0, qmax)
        return cls(
            codes=q.reshape(w.shape).to(torch.uint8),
            scales=scale,
            zeros=zero.to(torch.uint8),
            bits=bits,
            group_size=group_size,
        )

    def dequantize(self) -> torch.Tensor:
        """The float32 weight the codes stand for."""
        out, n = self.codes.shape
        q = self.codes.float().reshape(out, -1, self.group_size)
        w = (q - self.zeros.float()[..., None]) * self.scales.float()[..., None]
        return w.reshape(out, n)

    @property
    def nbytes(self) -> int:
        """Bytes as stored: packed codes, float16 scales, packed zero points."""
        n_codes = self.codes.numel() * self.bits
        n_zeros = self.zeros.numel() * self.bits
        return -(-n_codes // 8) + 2 * self.scales.numel() + -(-n_zeros // 8)

    @property
    def bits_per_weight(self) -> float:
        return 8 * self.nbytes / self.codes.numel()


@torch.no_grad()
def quantize_groups_(
    model: nn.Module,
    bits: int = 4,
    group_size: int | None = 64,
    filter_fn: FilterFn | None = None,
    embeddings: bool = False,
) -> dict[str, GroupQuantized]:
    """Replace the weight of every Linear layer ``filter_fn`` accepts by its
    group-quantized values, in place (simulated: the arithmetic stays float).
    ``group_size=None`` gives every row one scale. With ``embeddings``,
    every ``nn.Embedding`` table is quantized too, each row (one token's
    vector) in groups along the embedding dimension.

    Returns the quantized weights by layer name, for their bytes
    (:attr:`GroupQuantized.nbytes`) and for :func:`save_groups`.

    >>> net = nn.Sequential(nn.Linear(64, 4))
    >>> q = quantize_groups_(net, bits=4, group_size=32)
    >>> len(torch.unique(net[0].weight[0, :32])) <= 16
    True
    """
    out = {}
    layers = {n: m for n, m in prunable(model, filter_fn).items()
              if isinstance(m, nn.Linear)}  # fmt: skip
    if embeddings:
        layers |= {n: m for n, m in model.named_modules()
                   if isinstance(m, nn.Embedding)}  # fmt: skip
    for name, module in layers.items():
        g = GroupQuantized.from_weight(module.weight, bits, group_size)
        module.weight.copy_(g.dequantize())
        out[name] = g
    return out


def save_groups(
    path: str | os.PathLike,
    quantized: dict[str, GroupQuantized],
    model: nn.Module,
) -> Path:
    """Write a real file: the packed codes, scales and zero points of the
    quantized layers, and every other tensor of ``model`` as float16.

    Its size is the stored size of the weight-only quantized model.

    >>> import tempfile
    >>> net = nn.Sequential(nn.Linear(64, 8))
    >>> path = save_groups(tempfile.mkdtemp() + "/m.safetensors",
    ...                    quantize_groups_(net, 4, 32), net)
    >>> path.stat().st_size < 64 * 8 * 4  # smaller than float32
    True
    """
    tensors = {}
    for name, g in quantized.items():
        tensors[f"{name}.codes"] = torch.from_numpy(
            np.frombuffer(pack_bits(g.codes.flatten().numpy(), g.bits), np.uint8).copy()
        )
        tensors[f"{name}.scales"] = g.scales.contiguous()
        tensors[f"{name}.zeros"] = torch.from_numpy(
            np.frombuffer(pack_bits(g.zeros.flatten().numpy(), g.bits), np.uint8).copy()
        )
    done = {f"{name}.weight" for name in quantized}
    for key, value in model.state_dict().items():
        if key not in done:
            tensors[key] = value.detach().half().contiguous()
    path = Path(path)
    save_file(tensors, str(path), metadata={
        "bits": str(next(iter(quantized.values())).bits) if quantized else "",
        "group_size": str(next(iter(quantized.values())).group_size)
        if quantized else "",
    })  # fmt: skip
    return path
