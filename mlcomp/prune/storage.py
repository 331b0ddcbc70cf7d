"""Exact byte counts of sparse storage formats, and Deep Compression's indices.

CSR (values, column indices, row pointers), a bitmask (one bit per entry and
the non-zeros), and relative indices (Han, Mao & Dally 2016): each stored
entry records its distance from the previous one in ``index_bits`` bits,
with a filler zero wherever a gap is too long for the field. The ``.mlc``
file (:mod:`mlcomp.coding.container`) stores sparse tensors with these very
functions.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from mlcomp.utils import check_bits

__all__ = [
    "csr_bytes",
    "bitmask_bytes",
    "relative_indices",
    "relative_gaps",
    "relative_index_bytes",
]


def _bytes(bits: int) -> int:
    return math.ceil(bits / 8)


def csr_bytes(tensor: torch.Tensor, value_bits: int = 32, index_bits: int = 32) -> int:
    """Bytes of CSR storage: values, column indices and row pointers.

    A tensor of more than two dimensions is viewed as (shape[0], rest).

    >>> csr_bytes(torch.tensor([[0.0, 1.0], [2.0, 0.0]]))  # 2 values, 2 cols, 3 ptrs
    28
    """
    rows = (
        tensor.reshape(tensor.shape[0], -1)
        if tensor.dim() > 1
        else tensor.reshape(1, -1)
    )
    nnz = int(torch.count_nonzero(rows))
    return (
        _bytes(nnz * value_bits)
        + _bytes(nnz * index_bits)
        + _bytes((rows.shape[0] + 1) * index_bits)
    )


def bitmask_bytes(tensor: torch.Tensor, value_bits: int = 32) -> int:
    """Bytes of a one-bit-per-entry presence mask plus the non-zero values.

    >>> bitmask_bytes(torch.tensor([0.0, 1.0, 0.0, 2.0]))  # 1 byte of mask + 2 values
    9
    """
    nnz = int(torch.count_nonzero(tensor))
    return _bytes(tensor.numel()) + _bytes(nnz * value_bits)


def relative_indices(
    mask: torch.Tensor | np.ndarray, index_bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """Deep Compression's relative indices of the non-zeros of ``mask`` (flattened).

    Each stored entry records its distance ``d`` (1 to ``2**index_bits``) from
    the previous stored entry, starting before position 0; the index field
    holds ``d - 1``. A gap too long for the field is bridged by filler
    entries (stored zeros). Returns the index fields and a flag per entry
    that is True for fillers.

    >>> gaps, filler = relative_indices(torch.tensor([1, 0, 0, 0, 0, 0, 1]), 2)
    >>> gaps.tolist(), filler.tolist()
    ([0, 3, 1], [False, True, False])
    """
    positions = np.flatnonzero(np.asarray(mask).ravel())
    return relative_gaps(positions, index_bits)


def relative_gaps(
    positions: np.ndarray, index_bits: int
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`relative_indices` of the sorted flat ``positions`` of the non-zeros.

    Vectorized: a gap of distance ``d`` needs ``(d - 1) // 2**index_bits``
    fillers, each of field ``2**index_bits - 1``, then one entry holding the
    rest. The stored positions are ``cumsum(fields + 1) - 1``.

    >>> fields, filler = relative_gaps(np.array([0, 6]), 2)
    >>> fields.tolist(), filler.tolist(), (np.cumsum(fields + 1) - 1).tolist()
    ([0, 3, 1], [False, True, False], [0, 4, 6])
    """
    span = 1 << check_bits(index_bits, "index_bits", high=32)
    distance = np.diff(np.asarray(positions, dtype=np.int64), prepend=-1)
    if distance.size and distance.min() < 1:
        raise ValueError("positions must be distinct, sorted and non-negative")
    fillers = (distance - 1) // span  # entries needed to bridge each gap
    # each run: `fillers` entries of span - 1, then the remainder
    fields = np.full(int(fillers.sum() + distance.size), span - 1, np.int64)
    ends = np.cumsum(fillers + 1) - 1
    fields[ends] = distance - fillers * span - 1
    filler = np.ones(fields.size, dtype=bool)
    filler[ends] = False
    return fields, filler


def relative_index_bytes(
    tensor: torch.Tensor, index_bits: int, value_bits: int = 32
) -> int:
    """Bytes of relative-index storage: index and value per entry, fillers included.

    >>> relative_index_bytes(torch.tensor([1.0, 0, 0, 0, 0, 0, 2.0]), 2, value_bits=8)
    4
    """
    gaps, _ = relative_indices(tensor != 0, index_bits)
    return _bytes(len(gaps) * index_bits) + _bytes(len(gaps) * value_bits)
