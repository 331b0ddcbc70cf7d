"""LZW dictionary coding (Welch 1984), the variant GIF and Unix ``compress`` use.

The coder keeps a dictionary of strings, starting with the 256 single
bytes. It reads the longest string ``w`` that is already in the dictionary,
emits its code, and adds ``w`` plus the next byte as a new entry. The
decoder rebuilds the same dictionary from the codes alone, one step behind,
so nothing but the codes is stored. Codes start 9 bits wide and grow to
``max_bits`` as the dictionary grows; when it is full, a CLEAR code starts a
fresh one (GIF's rule), so the coder adapts to changing data.

This is a teaching implementation in plain Python: readable, exact, and
about a megabyte per second.

>>> data = b"TOBEORNOTTOBEORTOBEORNOT"
>>> assert decode(encode(data)) == data
"""

from __future__ import annotations

import numpy as np

from mlcomp.coding._format import (
    MAX_SYMBOLS,
    CorruptFileError,
    pack,
    read_varints,
    unpack,
    write_varints,
)

__all__ = ["encode", "decode", "codes"]

CLEAR, END, FIRST = 256, 257, 258  # two control codes, then the learned entries
_MAGIC, _VERSION = b"MLCZ", 1


def _width(k: int, max_bits: int) -> int:
    """Bits for the ``k``-th code after a CLEAR: enough for every code that can occur.

    Before the ``k``-th code the coder has added ``k - 1`` entries, so codes
    are below ``FIRST + k - 1``; both sides count ``k`` and agree.
    """
    return min(max(9, (FIRST + k - 2).bit_length()), max_bits)


def codes(data: bytes, max_bits: int = 12) -> list[int]:
    """The LZW code sequence of ``data`` (ending with END).

    >>> codes(b"ABABABA")  # A, B, AB, ABA
    [65, 66, 258, 260, 257]
    """
    if not 9 <= max_bits <= 16:
        raise ValueError(f"max_bits must be in 9..16, got {max_bits}")
    data = bytes(data)
    out: list[int] = []
    if not data:
        return [END]
    table: dict[int, int] = {}  # (prefix code << 8 | byte) -> code
    next_code = FIRST
    prefix = data[0]
    for byte in data[1:]:
        code = table.get(prefix << 8 | byte)
        if code is not None:
            prefix = code  # the string continues
            continue
        out.append(prefix)
        if next_code < 1 << max_bits:
            table[prefix << 8 | byte] = next_code
            next_code += 1
        else:  # dictionary full: start over
            out.append(CLEAR)
            table.clear()
            next_code = FIRST
        prefix = byte
    out.extend([prefix, END])
    return out


def encode(data: bytes, max_bits: int = 12) -> bytes:
    """LZW-compress bytes into a self-describing, checksummed stream.

    >>> text = b"abcabcabcabcabcabcabcabc"
    >>> len(encode(text)) < len(text) + 16  # 16 bytes of framing
    True
    """
    seq = codes(data, max_bits)
    widths, k = [], 0
    for c in seq:
        k += 1
        widths.append(_width(k, max_bits))
        if c == CLEAR:
            k = 0
    widths = np.array(widths)
    values = np.array(seq, dtype=np.int64)
    # one row of max_bits per code, keep each code's low `width` bits, MSB first
    shifts = np.arange(max_bits - 1, -1, -1)
    bits = (values[:, None] >> shifts) & 1
    keep = shifts[None, :] < widths[:, None]
    payload = np.packbits(bits[keep].astype(np.uint8)).tobytes()
    header = write_varints([len(data), max_bits])
    return pack(_MAGIC, _VERSION, header, payload)


def decode(data: bytes, max_bytes: int | None = None) -> bytes:
    """Decode a stream made by :func:`encode`.

    A stream that declares more than ``max_bytes`` of output (default
    ``MAX_SYMBOLS``), or whose codes would write more than it declares, is
    refused with :class:`~mlcomp.coding.CorruptFileError` before the output
    grows past the declared size.

    >>> decode(encode(b"abracadabra"))
    b'abracadabra'
    """
    header, payload = unpack(data, _MAGIC, _VERSION)
    (size, max_bits), _ = read_varints(header, 2)
    if not 9 <= max_bits <= 16:
        raise CorruptFileError(f"LZW header has invalid max_bits {max_bits}")
    limit = MAX_SYMBOLS if max_bytes is None else max_bytes
    if size > limit:
        raise CorruptFileError(
            f"LZW stream declares {size:,} bytes, more than the limit of {limit:,}; "
            "pass max_bytes= to decode a larger message"
        )
    bits = np.unpackbits(np.frombuffer(payload, np.uint8))
    weights = 1 << np.arange(15, -1, -1)
    pos, k = 0, 0
    table = [bytes([i]) for i in range(256)] + [b"", b""]
    out, prev = bytearray(), None
    while True:
        k += 1
        width = _width(k, max_bits)
        if pos + width > bits.size:
            raise CorruptFileError("LZW stream is truncated (no END code)")
        code = int(bits[pos : pos + width] @ weights[16 - width :])
        pos += width
        if code == END:
            break
        if code == CLEAR:
            del table[FIRST:]
            k, prev = 0, None
            continue
        if prev is None:
            if code >= 256:
                raise CorruptFileError(f"LZW stream is corrupted: code {code} first")
            entry = table[code]
        elif code < len(table):
            entry = table[code]
        elif code == len(table):  # the string being defined right now: w + w[0]
            entry = table[prev] + table[prev][:1]
        else:
            raise CorruptFileError(f"LZW stream is corrupted: unknown code {code}")
        out += entry
        if len(out) > size:
            raise CorruptFileError(f"LZW stream decodes to more than {size} bytes")
        if prev is not None and len(table) < 1 << max_bits:
            table.append(table[prev] + entry[:1])
        prev = code
    if len(out) != size:
        raise CorruptFileError(
            f"LZW stream decodes to {len(out)} bytes, header says {size}"
        )
    return bytes(out)
