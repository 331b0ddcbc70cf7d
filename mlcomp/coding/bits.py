"""Fixed-width bit packing: ``n`` integers of ``b`` bits in ``ceil(n * b / 8)`` bytes.

Values are written most significant bit first, one after another with no
padding between them; only the last byte is padded with zeros.
"""

from __future__ import annotations

import numpy as np

from mlcomp.coding._format import CorruptFileError
from mlcomp.utils import check_bits

__all__ = ["pack_bits", "unpack_bits", "MAX_BITS"]

MAX_BITS = 32


def _check_bits(bits: int) -> None:
    check_bits(bits, high=MAX_BITS)  # wider than a quantizer's: index fields too


def pack_bits(values, bits: int) -> bytes:
    """Pack non-negative integers below ``2**bits`` into bytes.

    >>> pack_bits([1, 2, 3], bits=2).hex()  # 01 10 11 + 00 padding
    '6c'
    >>> data = pack_bits(range(1000), bits=10)
    >>> len(data), bool(np.all(unpack_bits(data, 10, 1000) == np.arange(1000)))
    (1250, True)
    """
    _check_bits(bits)
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"values must be 1-D, got shape {values.shape}")
    if values.size == 0:
        return b""
    if not np.issubdtype(values.dtype, np.integer):
        raise ValueError(f"values must be integers, got dtype {values.dtype}")
    if values.min() < 0 or values.max() >= 1 << bits:
        raise ValueError(
            f"values must lie in 0..{(1 << bits) - 1} for {bits} bits, "
            f"got {values.min()}..{values.max()}"
        )
    shifts = np.arange(bits - 1, -1, -1, dtype=np.uint64)
    planes = (values.astype(np.uint64)[:, None] >> shifts) & np.uint64(1)
    return np.packbits(planes.astype(np.uint8).ravel()).tobytes()


def unpack_bits(data: bytes, bits: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` values, as int64.

    >>> unpack_bits(bytes.fromhex("6c"), bits=2, count=3).tolist()
    [1, 2, 3]
    """
    _check_bits(bits)
    need = (count * bits + 7) // 8
    if len(data) < need:
        raise CorruptFileError(
            f"packed data is truncated: {len(data)} bytes, {need} needed for "
            f"{count} values of {bits} bits"
        )
    planes = np.unpackbits(np.frombuffer(bytes(data[:need]), np.uint8))
    planes = planes[: count * bits].reshape(count, bits).astype(np.int64)
    return planes @ (np.int64(1) << np.arange(bits - 1, -1, -1, dtype=np.int64))
