"""Byte-level framing shared by the coders: varints and checked streams.

Every coder's output is a *stream*::

    magic (4 bytes) | version (1) | header length (varint) | header
    | payload length (varint) | payload | CRC-32 of everything before (4)

so a truncated or corrupted stream is detected before any symbol is decoded,
and the error names what failed.

A CRC-32 detects accidental damage, not a forged stream (anyone can
recompute it). So every decoder also validates each header field before it
allocates or loops: a count of symbols must be one the payload can carry
(:func:`check_count`: the information in the payload bounds it) and at most
``max_symbols`` (default :data:`MAX_SYMBOLS`); alphabets must be increasing
int64 values (:func:`read_alphabet`). A malformed stream raises
:class:`CorruptFileError` and nothing else, with memory bounded by a small
multiple of the stream's size (or of ``max_symbols``, for messages that
compress extremely well).
"""

from __future__ import annotations

import math
import zlib

import numpy as np

__all__ = [
    "CorruptFileError",
    "write_varints",
    "read_varints",
    "pack",
    "unpack",
    "as_symbols",
    "write_table",
    "read_table",
    "read_alphabet",
    "check_count",
    "min_cost_bits",
    "MAX_SYMBOLS",
]

MAX_SYMBOLS = 1 << 27
"""The most symbols a decoder produces unless its caller allows more (1 GiB)."""

_INT64_MAX = (1 << 63) - 1


class CorruptFileError(ValueError):
    """Compressed data is truncated, corrupted, or not what the reader expects."""


def write_varints(values) -> bytes:
    """LEB128: 7 bits per byte, low bits first, high bit set on all but the last.

    >>> write_varints([0, 127, 128, 300]).hex()
    '007f8001ac02'
    """
    out = bytearray()
    for v in values:
        v = int(v)
        if v < 0:
            raise ValueError(f"varints are non-negative, got {v}")
        while v >= 0x80:
            out.append((v & 0x7F) | 0x80)
            v >>= 7
        out.append(v)
    return bytes(out)


def read_varints(data: bytes, count: int, pos: int = 0, what: str = "header"):
    """Read ``count`` varints from ``data`` at ``pos``; return (list, new pos).

    >>> read_varints(bytes.fromhex("007f8001ac02"), 4)
    ([0, 127, 128, 300], 6)
    """
    values = []
    for _ in range(count):
        v = shift = 0
        while True:
            if pos >= len(data):
                raise CorruptFileError(f"{what} is truncated")
            byte = data[pos]
            pos += 1
            v |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
            if shift > 63:
                raise CorruptFileError(f"{what} has a varint longer than 64 bits")
        values.append(v)
    return values, pos


def pack(magic: bytes, version: int, header: bytes, payload: bytes) -> bytes:
    """Frame ``header`` and ``payload`` as a checked stream.

    >>> unpack(pack(b"TEST", 1, b"hi", b"there"), b"TEST", 1)
    (b'hi', b'there')
    """
    body = (
        magic
        + bytes([version])
        + write_varints([len(header)])
        + header
        + write_varints([len(payload)])
        + payload
    )
    return body + zlib.crc32(body).to_bytes(4, "little")


def unpack(data: bytes, magic: bytes, version: int) -> tuple[bytes, bytes]:
    """Check a stream made by :func:`pack`; return (header, payload).

    >>> unpack(b"TEST", b"TEST", 1)
    Traceback (most recent call last):
    ...
    mlcomp.coding._format.CorruptFileError: stream is truncated: 4 bytes
    """
    data = bytes(data)
    name = magic.decode("ascii", "replace")
    if len(data) < len(magic) + 7:
        raise CorruptFileError(f"stream is truncated: {len(data)} bytes")
    if data[: len(magic)] != magic:
        raise CorruptFileError(
            f"not a {name} stream: starts with {data[: len(magic)]!r}, "
            f"expected {magic!r}"
        )
    if data[len(magic)] != version:
        raise CorruptFileError(
            f"{name} stream version {data[len(magic)]} is not supported "
            f"(this reader knows version {version})"
        )
    (hlen,), pos = read_varints(data, 1, len(magic) + 1, "stream header")
    header = data[pos : pos + hlen]
    pos += hlen
    (plen,), pos = read_varints(data, 1, pos, "stream header")
    payload = data[pos : pos + plen]
    pos += plen
    if len(header) != hlen or len(payload) != plen or pos + 4 > len(data):
        raise CorruptFileError(
            f"{name} stream is truncated: {len(data)} bytes, the header says {pos + 4}"
        )
    if pos + 4 < len(data):
        raise CorruptFileError(
            f"{name} stream has {len(data) - pos - 4} unexpected trailing bytes"
        )
    if zlib.crc32(data[:pos]) != int.from_bytes(data[pos : pos + 4], "little"):
        raise CorruptFileError(f"{name} stream is corrupted: CRC-32 mismatch")
    return header, payload


def as_symbols(symbols) -> np.ndarray:
    """Validate a message: a 1-D array of non-negative integers, as int64.

    >>> as_symbols([3, 0, 2])
    array([3, 0, 2])
    """
    arr = np.asarray(symbols)
    if arr.ndim != 1:
        raise ValueError(f"symbols must be a 1-D array, got shape {arr.shape}")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"symbols must be integers, got dtype {arr.dtype}")
    if arr.min() < 0:
        raise ValueError(f"symbols must be non-negative, found {arr.min()}")
    if arr.max() > np.iinfo(np.int64).max:
        raise ValueError("symbols must fit in int64")
    return arr.astype(np.int64)


def write_table(alphabet: np.ndarray, freq: np.ndarray) -> bytes:
    """A coder's model in its header: the symbols (as gaps) and their frequencies.

    >>> read_table(write_table(np.array([3, 9]), np.array([5, 11])), 0, 2, 4, "test")
    (array([3, 9]), array([ 5, 11]), 4)
    """
    return write_varints(np.diff(alphabet, prepend=0)) + write_varints(freq)


def read_alphabet(header: bytes, pos: int, k: int, what: str):
    """Read ``k`` alphabet gaps; check the symbols increase and fit in int64.

    Returns (alphabet as int64, position after the gaps).

    >>> read_alphabet(write_varints([3, 6]), 0, 2, "test")
    (array([3, 9]), 2)
    >>> read_alphabet(write_varints([3, 0]), 0, 2, "test")
    Traceback (most recent call last):
    ...
    mlcomp.coding._format.CorruptFileError: test has an invalid alphabet
    """
    if k > len(header) - pos:  # every gap takes at least one byte
        raise CorruptFileError(f"{what} is truncated")
    gaps, pos = read_varints(header, k, pos, what)
    if any(g < 1 for g in gaps[1:]) or sum(gaps) > _INT64_MAX:
        raise CorruptFileError(f"{what} has an invalid alphabet")
    return np.cumsum(np.array(gaps, dtype=np.int64)), pos


def read_table(header: bytes, pos: int, k: int, precision: int, what: str):
    """Read :func:`write_table`'s output; check the frequencies sum to 2**precision.

    Returns (alphabet, frequencies, position after the table).
    """
    alphabet, pos = read_alphabet(header, pos, k, what)
    freq, pos = read_varints(header, k, pos, what)
    if any(f < 1 for f in freq) or sum(freq) != 1 << precision:
        raise CorruptFileError(f"{what} has an invalid frequency table")
    return alphabet, np.array(freq, dtype=np.int64), pos


def check_count(
    n: int,
    payload_bits: int,
    min_cost: float,
    max_symbols: int | None,
    what: str,
) -> None:
    """Refuse a declared symbol count that the payload cannot carry, or too many.

    Each symbol costs at least ``min_cost`` bits (the shortest code, or
    ``-log2`` of the largest probability), so a payload of ``payload_bits``
    (plus 64 bits for a coder's final state) holds at most
    ``(payload_bits + 64) / min_cost`` symbols. A count above that is
    corrupt; a count above ``max_symbols`` (default :data:`MAX_SYMBOLS`)
    could be real but is refused so that memory stays bounded.

    >>> check_count(100, payload_bits=8, min_cost=1.0, max_symbols=None, what="t")
    Traceback (most recent call last):
    ...
    mlcomp.coding._format.CorruptFileError: t declares 100 symbols, more than ...
    """
    limit = MAX_SYMBOLS if max_symbols is None else max_symbols
    if min_cost > 0 and n > 1.01 * (payload_bits + 64) / min_cost + 1:
        raise CorruptFileError(
            f"{what} declares {n:,} symbols, more than its {payload_bits}-bit "
            "payload can carry"
        )
    if n > limit:
        raise CorruptFileError(
            f"{what} declares {n:,} symbols, more than the limit of {limit:,}; "
            "pass max_symbols= to decode a larger message"
        )


def min_cost_bits(freq: np.ndarray, precision: int) -> float:
    """``-log2`` of the largest probability ``freq / 2**precision``.

    The least any symbol costs, in bits.

    >>> round(min_cost_bits(np.array([3, 1]), 2), 6)  # the largest is 3/4
    0.415037
    """
    return -math.log2(int(freq.max()) / (1 << precision))
