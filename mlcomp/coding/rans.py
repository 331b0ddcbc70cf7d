"""Range-variant asymmetric numeral systems (rANS; Duda 2013).

The whole message lives in one integer state ``x``. Coding symbol ``s`` with
frequency ``f_s`` and cumulative frequency ``c_s`` out of ``M = 2**precision``
maps

    x  ->  (x // f_s) * M + (x mod f_s) + c_s,

which grows ``x`` by a factor of about ``M / f_s``, i.e. by ``-log2 p_s``
bits; the decoder inverts it exactly with ``s = symbol at slot x mod M``.
To keep ``x`` in a machine word, the encoder emits its low 32 bits whenever
the next step would overflow (a 64-bit state in ``[2**31, 2**63)``), and the
decoder reads them back. rANS is last-in first-out, so the encoder runs over
the message backwards. Several states take turns on the symbols
(*interleaving*), which lets a CPU overlap their independent dependency
chains; they all write to one word stream.

>>> import numpy as np
>>> message = np.array([0, 2, 2, 1, 2, 2, 2, 0])
>>> assert np.all(decode(encode(message)) == message)
"""

from __future__ import annotations

import numba
import numpy as np

from mlcomp.coding._format import (
    CorruptFileError,
    check_count,
    min_cost_bits,
    pack,
    read_table,
    read_varints,
    unpack,
    write_table,
    write_varints,
)
from mlcomp.coding.model import Categorical, default_precision, indexed_message

__all__ = ["encode", "decode", "encode_tabled", "decode_tabled"]

_MAGIC, _VERSION = b"MLCR", 1
_L = 1 << 31  # lower bound of the normalized state interval [L, L * 2**32)
MAX_PRECISION = 20  # the decoder's slot table has 2**precision entries


@numba.njit(cache=True)
def _encode_words(symbols, lut, freq, cum, precision, streams):  # pragma: no cover
    """The words of the stream, in the order the decoder reads them.

    ``lut`` maps a symbol's value to its index in the alphabet, so the
    message is read as given (any integer dtype). rANS emits its words last
    first; they are written from the end of the buffer backwards, so the
    stream is a slice of it, not a reversed copy.
    """
    n = symbols.size
    out = np.empty(n + 2 * streams, np.uint32)  # at most one word per symbol
    states = np.full(streams, np.uint64(_L), np.uint64)
    bound = np.uint64((_L >> precision) << 32)
    p = np.uint64(precision)
    pos = out.size  # the next word goes to out[pos - 1]
    j = (n - 1) % streams  # the state that codes symbol i, counting down
    for i in range(n - 1, -1, -1):
        s = lut[symbols[i]]
        f = np.uint64(freq[s])
        x = states[j]
        if x >= bound * f:  # renormalize: emit the low 32 bits
            pos -= 1
            out[pos] = np.uint32(x & np.uint64(0xFFFFFFFF))
            x >>= np.uint64(32)
        states[j] = ((x // f) << p) + (x % f) + np.uint64(cum[s])
        j = j - 1 if j > 0 else streams - 1
    for j in range(streams - 1, -1, -1):  # flush: the decoder reads state 0 first
        out[pos - 1] = np.uint32(states[j] & np.uint64(0xFFFFFFFF))
        out[pos - 2] = np.uint32(states[j] >> np.uint64(32))
        pos -= 2
    return out[pos:]


@numba.njit(cache=True)
def _decode_words(words, n, freq, cum, slot_to_symbol, precision, streams, alphabet):
    # pragma: no cover - compiled
    out = np.empty(n, np.int64)
    if words.size < 2 * streams:
        return out, -1
    states = np.empty(streams, np.uint64)
    for j in range(streams):
        states[j] = (np.uint64(words[2 * j]) << np.uint64(32)) | np.uint64(
            words[2 * j + 1]
        )
    pos = 2 * streams
    p = np.uint64(precision)
    mask = np.uint64((1 << precision) - 1)
    j = 0  # the state whose turn it is (a counter: cheaper than i % streams)
    for i in range(n):
        x = states[j]
        slot = x & mask
        s = np.int64(slot_to_symbol[slot])
        x = freq[s] * (x >> p) + slot - cum[s]
        if x < np.uint64(_L):
            if pos >= words.size:
                return out, -1
            x = (x << np.uint64(32)) | np.uint64(words[pos])
            pos += 1
        states[j] = x
        out[i] = alphabet[s]  # the symbol value itself, in one pass
        j += 1
        if j == streams:
            j = 0
    for j in range(streams):  # a valid stream ends where the encoder started
        if states[j] != np.uint64(_L):
            return out, -1
    return out, pos


def encode(
    symbols,
    model: Categorical | None = None,
    precision: int | None = None,
    streams: int = 4,
) -> bytes:
    """rANS-code a message of non-negative integers into a self-describing stream.

    Without ``model`` the frequencies are the message's own counts, quantized
    to ``precision`` bits (default: :func:`default_precision`); the
    frequency table travels in the header. ``streams`` interleaved states
    (1 to 64) share the output.

    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> message = rng.geometric(0.3, size=100_000)
    >>> data = encode(message)
    >>> assert np.all(decode(data) == message)
    >>> bits = 8 * len(data) / message.size  # entropy of Geometric(0.3): 2.94 bits
    >>> bool(2.93 < bits < 2.96)
    True
    """
    if not 1 <= streams <= 64:
        raise ValueError(f"streams must be in 1..64, got {streams}")
    symbols, lut, alphabet, weights = indexed_message(symbols, model)
    if precision is None:
        precision = default_precision(alphabet.size)
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 1..{MAX_PRECISION}, got {precision}")
    header = write_varints([symbols.size, alphabet.size, precision, streams])
    if symbols.size == 0:
        return pack(_MAGIC, _VERSION, header, b"")
    freq = Categorical(weights).frequencies(precision)
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
    words = _encode_words(symbols, lut, freq, cum, precision, streams)
    header += write_table(alphabet, freq)
    if words.dtype.byteorder == ">":  # pragma: no cover - big-endian machines
        words = words.astype("<u4")
    return pack(_MAGIC, _VERSION, header, words.tobytes())


def decode(data: bytes, max_symbols: int | None = None) -> np.ndarray:
    """Decode a stream made by :func:`encode`; returns int64 symbols.

    Raises :class:`~mlcomp.coding.CorruptFileError` when the stream is
    truncated, corrupted, or not an rANS stream, or declares more than
    ``max_symbols`` symbols (default ``MAX_SYMBOLS``).

    >>> decode(encode([5, 5, 1, 5])).tolist()
    [5, 5, 1, 5]
    """
    header, payload = unpack(data, _MAGIC, _VERSION)
    (n, k, precision, streams), pos = read_varints(header, 4)
    if n == 0:
        return np.zeros(0, np.int64)
    if not (1 <= precision <= MAX_PRECISION and 1 <= streams <= 64 and k >= 1):
        raise CorruptFileError("rANS header has invalid parameters")
    alphabet, freq, pos = read_table(header, pos, k, precision, "rANS header")
    if pos != len(header):
        raise CorruptFileError("rANS header has trailing bytes")
    min_cost = min_cost_bits(freq, precision)
    bits = 8 * len(payload) + 32 * streams  # the states' last words included
    check_count(n, bits, min_cost, max_symbols, "rANS stream")
    if len(payload) % 4:
        raise CorruptFileError("rANS payload is not a whole number of 32-bit words")
    cum = np.concatenate([[0], np.cumsum(freq)[:-1]])
    # the slot table is read once per symbol: keep it small enough for the cache
    dtype = np.uint8 if k <= 256 else np.uint16 if k <= 65536 else np.int32
    slot_to_symbol = np.repeat(np.arange(k, dtype=dtype), freq)
    words = np.frombuffer(payload, "<u4").astype(np.uint32)
    out, used = _decode_words(
        words, n, freq.astype(np.uint64), cum.astype(np.uint64), slot_to_symbol,
        precision, streams, alphabet,
    )  # fmt: skip
    if used != words.size:
        raise CorruptFileError("rANS payload is truncated or corrupted")
    return out


@numba.njit(cache=True)
def _encode_tabled(symbols, rows, freq, cum, precision):  # pragma: no cover
    """One state; symbol ``i`` is column ``symbols[i]`` of table row ``rows[i]``."""
    n = symbols.size
    out = np.empty(n + 2, np.uint32)  # at most one word per symbol, plus the flush
    x = np.uint64(_L)
    bound = np.uint64((_L >> precision) << 32)
    p = np.uint64(precision)
    pos = out.size
    for i in range(n - 1, -1, -1):
        r, s = rows[i], symbols[i]
        f = np.uint64(freq[r, s])
        if f == 0:
            return out[:0], i  # a zero-frequency symbol cannot be coded
        if x >= bound * f:
            pos -= 1
            out[pos] = np.uint32(x & np.uint64(0xFFFFFFFF))
            x >>= np.uint64(32)
        x = ((x // f) << p) + (x % f) + np.uint64(cum[r, s])
    out[pos - 1] = np.uint32(x & np.uint64(0xFFFFFFFF))
    out[pos - 2] = np.uint32(x >> np.uint64(32))
    return out[pos - 2 :], -1


@numba.njit(cache=True)
def _decode_tabled(words, rows, freq, cum, precision):  # pragma: no cover
    n = rows.size
    out = np.empty(n, np.int64)
    if words.size < 2:
        return out, -1
    x = (np.uint64(words[0]) << np.uint64(32)) | np.uint64(words[1])
    pos = 2
    p = np.uint64(precision)
    mask = np.uint64((1 << precision) - 1)
    k = freq.shape[1]
    for i in range(n):
        r = rows[i]
        slot = x & mask
        lo, hi = 0, k  # binary search: cum[r, s] <= slot < cum[r, s] + freq[r, s]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cum[r, mid] <= slot:
                lo = mid
            else:
                hi = mid
        s = lo  # the last entry at or below the slot: never a zero-width one
        x = np.uint64(freq[r, s]) * (x >> p) + slot - np.uint64(cum[r, s])
        if x < np.uint64(_L):
            if pos >= words.size:
                return out, -1
            x = (x << np.uint64(32)) | np.uint64(words[pos])
            pos += 1
        out[i] = s
    if x != np.uint64(_L):  # a valid stream ends where the encoder started
        return out, -1
    return out, pos


def _check_tables(freq, precision: int) -> tuple[np.ndarray, np.ndarray]:
    freq = np.asarray(freq)
    if freq.ndim != 2 or freq.shape[1] < 1 or not np.issubdtype(freq.dtype, np.integer):
        raise ValueError(
            f"freq must be a 2-D integer table, got {freq.dtype} {freq.shape}"
        )
    if not 1 <= precision <= MAX_PRECISION:
        raise ValueError(f"precision must be in 1..{MAX_PRECISION}, got {precision}")
    if (freq < 0).any() or (freq.sum(axis=1) != 1 << precision).any():
        raise ValueError(f"every row of freq must be >= 0 and sum to 2**{precision}")
    freq = freq.astype(np.uint64)
    cum = np.zeros_like(freq)
    np.cumsum(freq[:, :-1], axis=1, out=cum[:, 1:])
    return freq, cum


def _check_rows(rows, n_rows: int, size: int | None = None) -> np.ndarray:
    rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
    if size is not None and rows.size != size:
        raise ValueError(f"{size} symbols but {rows.size} table rows")
    if rows.size and (rows.min() < 0 or rows.max() >= n_rows):
        raise ValueError(f"a table row index is outside 0 .. {n_rows - 1}")
    return rows


def encode_tabled(symbols, rows, freq, precision: int = 16) -> bytes:
    """rANS-code ``symbols[i]`` with the frequencies ``freq[rows[i]]``; bare words.

    The models are known to both sides (a learned entropy model's integer
    tables, say), so nothing but the state's words is written: no header, no
    table, no CRC (the caller frames the bytes). ``freq`` is an integer table
    whose rows each sum to ``2**precision``; a symbol is a column of its row
    and must have a non-zero frequency there.

    >>> freq = np.array([[8, 8, 0, 0], [1, 1, 1, 13]])
    >>> data = encode_tabled([0, 3, 1, 3], [0, 1, 0, 1], freq, precision=4)
    >>> decode_tabled(data, [0, 1, 0, 1], freq, precision=4).tolist()
    [0, 3, 1, 3]
    """
    freq, cum = _check_tables(freq, precision)
    idx = np.ascontiguousarray(symbols, dtype=np.int64).reshape(-1)
    rows = _check_rows(rows, freq.shape[0], idx.size)
    if idx.size and (idx.min() < 0 or idx.max() >= freq.shape[1]):
        raise ValueError(f"a symbol is outside 0 .. {freq.shape[1] - 1}")
    words, bad = _encode_tabled(idx, rows, freq, cum, precision)
    if bad >= 0:
        raise ValueError(f"symbol {bad} has zero frequency in its table row")
    return words.astype("<u4").tobytes()


def decode_tabled(data: bytes, rows, freq, precision: int = 16) -> np.ndarray:
    """Decode what :func:`encode_tabled` wrote, given the same rows and tables.

    Raises :class:`~mlcomp.coding.CorruptFileError` when the words run out
    early, are left over, or end in another state than the encoder's start.

    >>> freq = np.array([[4, 12]])
    >>> data = encode_tabled([1, 1, 0], [0, 0, 0], freq, precision=4)
    >>> decode_tabled(data, [0, 0, 0], freq, precision=4).tolist()
    [1, 1, 0]
    """
    freq, cum = _check_tables(freq, precision)
    rows = _check_rows(rows, freq.shape[0])
    data = bytes(data)
    if len(data) % 4:
        raise CorruptFileError("rANS words are not a whole number of 32-bit words")
    words = np.frombuffer(data, "<u4").astype(np.uint32)
    out, used = _decode_tabled(words, rows, freq, cum, precision)
    if used != words.size:
        raise CorruptFileError("rANS words are truncated or corrupted")
    return out
