"""Arithmetic coding with exact integer arithmetic (Witten, Neal & Cleary 1987).

The coder keeps an interval ``[low, high]`` of 32-bit integers. Coding a
symbol with cumulative frequencies ``cdf[s] .. cdf[s + 1]`` out of
``total = cdf[-1]`` narrows the interval to that fraction of its width; as
soon as both ends share a leading bit, the bit is settled and shifted out.
When the interval straddles the midpoint while shrinking below a quarter,
the coder remembers a *pending* bit (E3 scaling) instead of losing
precision. Each symbol costs ``-log2(f_s / total)`` bits plus a loss that
shrinks with ``total / 2**32``; ending the message costs at most two bits.

The model may change at every step (``encode(symbol, cdf)`` takes the
distribution with the symbol), which is how a language model drives it:

>>> enc = ArithmeticEncoder()
>>> for s in [0, 1, 1, 0, 2]:
...     enc.encode(s, [0, 5, 9, 10])
>>> data = enc.finish()
>>> dec = ArithmeticDecoder(data)
>>> [dec.decode([0, 5, 9, 10]) for _ in range(5)]
[0, 1, 1, 0, 2]

:func:`encode` and :func:`decode` code a whole message with one static model
in the same self-describing stream format as :mod:`~mlcomp.coding.huffman` and
:mod:`~mlcomp.coding.rans`, compiled with numba. They do the same arithmetic
on a wider interval, the way a practical coder does (a *range coder*,
Martin 1979): ``low`` and ``range`` are 64-bit integers, a symbol narrows
them with ``r = range // total`` (a shift: ``total = 2**precision``),
``low += r · cdf[s]``,
``range = r · f_s``, and whenever ``range`` falls below ``2**32`` the top
32 bits of ``low`` are settled and written as one word. No E3 step is
needed: an interval that straddles a word boundary is simply carried, the
addition that overflows ``low`` adding one to the words already written.
Each symbol costs its ``-log2(f_s / total)`` bits plus at most
``total / 2**32`` of one (``range`` never falls below ``2**32``), and the
stream ends with one more word, less its trailing zero bytes.
Version 1 streams (the bit-by-bit coder of the classes) are still read.
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

__all__ = [
    "ArithmeticEncoder",
    "ArithmeticDecoder",
    "RowEncoder",
    "RowDecoder",
    "encode",
    "decode",
    "MAX_TOTAL",
]

_BITS = 32
_TOP = (1 << _BITS) - 1
_HALF = 1 << (_BITS - 1)
_QUARTER = 1 << (_BITS - 2)
MAX_TOTAL = 1 << 24  # cdf totals up to 2**24 keep every interval non-empty
_MAGIC, _VERSION = b"MLCA", 2  # 2: the range coder of the stream functions
_WORD = np.uint64(32)
_WORD_MASK = np.uint64(0xFFFFFFFF)
_RANGE_BOTTOM = np.uint64(1 << 32)  # range is renormalized to stay above this


def _check_cdf(cdf, symbol: int | None = None) -> tuple[int, int, int]:
    if symbol is not None and not 0 <= symbol < len(cdf) - 1:
        raise ValueError(f"symbol {symbol} is outside 0 .. {len(cdf) - 2}")
    total = int(cdf[-1])
    if int(cdf[0]) != 0 or not 0 < total <= MAX_TOTAL:
        raise ValueError(
            f"cdf must start at 0 and end in 1 .. {MAX_TOTAL}, got {total}"
        )
    if symbol is None:
        return 0, 0, total
    lo, hi = int(cdf[symbol]), int(cdf[symbol + 1])
    if hi <= lo:
        raise ValueError(f"symbol {symbol} has zero frequency in this cdf")
    return lo, hi, total


STREAM_PRECISION = 16
"""Bits of the frequencies a :class:`Categorical` gets in the streaming coder."""


def _as_cdf(model) -> np.ndarray:
    """A model for one symbol: a :class:`Categorical`, or integer cumulative counts."""
    if isinstance(model, Categorical):
        return model.cdf(STREAM_PRECISION)
    return np.asarray(model)


class ArithmeticEncoder:
    """Encode symbols one at a time, each with its own cumulative frequencies.

    The streaming interface, for models that change from symbol to symbol
    (a language model's next-symbol distribution, say).

    Each step's model is a :class:`~mlcomp.coding.Categorical` (as for every
    coder of the package) or, for full control, integer cumulative counts
    ``cdf`` (``cdf[0] = 0``; symbol ``s`` owns ``cdf[s] .. cdf[s + 1]``).

    >>> model = Categorical([0.5, 0.1, 0.4])
    >>> enc = ArithmeticEncoder()
    >>> for s in [0, 2, 2, 1]:
    ...     enc.encode(s, model)
    >>> dec = ArithmeticDecoder(enc.finish())
    >>> [dec.decode(model) for _ in range(4)]
    [0, 2, 2, 1]
    >>> enc = ArithmeticEncoder(); enc.encode(2, [0, 5, 6, 10])  # P(2) = 4/10
    >>> ArithmeticDecoder(enc.finish()).decode([0, 5, 6, 10])
    2
    """

    def __init__(self) -> None:
        self._low, self._high, self._pending = 0, _TOP, 0
        self._bits: list[int] = []

    def _emit(self, bit: int) -> None:
        self._bits.append(bit)
        self._bits.extend([1 - bit] * self._pending)
        self._pending = 0

    def encode(self, symbol: int, model) -> None:
        """Narrow the interval to ``cdf[symbol] .. cdf[symbol + 1]`` of ``cdf[-1]``."""
        lo, hi, total = _check_cdf(_as_cdf(model), int(symbol))
        width = self._high - self._low + 1
        self._high = self._low + width * hi // total - 1
        self._low = self._low + width * lo // total
        while True:
            if self._high < _HALF:  # both in the lower half: the next bit is 0
                self._emit(0)
            elif self._low >= _HALF:  # both in the upper half: it is 1
                self._emit(1)
                self._low -= _HALF
                self._high -= _HALF
            elif self._low >= _QUARTER and self._high < _HALF + _QUARTER:
                self._pending += 1  # straddling the middle: decide later (E3)
                self._low -= _QUARTER
                self._high -= _QUARTER
            else:
                break
            self._low = 2 * self._low
            self._high = 2 * self._high + 1

    def bit_count(self) -> int:
        """Bits settled so far (the finished stream adds at most two, plus padding)."""
        return len(self._bits) + self._pending

    def finish(self) -> bytes:
        """Settle the interval with two more bits and return the bytes (zero-padded)."""
        self._pending += 1
        self._emit(0 if self._low < _QUARTER else 1)
        bits = np.array(self._bits, dtype=np.uint8)
        self._bits = []
        return np.packbits(bits).tobytes()


class ArithmeticDecoder:
    """Decode what :class:`ArithmeticEncoder` wrote, with the same sequence of cdfs.

    Reading more than 32 bits beyond the end of ``data`` means the caller
    asked for more symbols than were encoded, or the data was truncated; that
    raises :class:`~mlcomp.coding.CorruptFileError`.

    >>> enc = ArithmeticEncoder(); enc.encode(1, [0, 1, 2])
    >>> ArithmeticDecoder(enc.finish()).decode([0, 1, 2])
    1
    """

    def __init__(self, data: bytes) -> None:
        self._bits = np.unpackbits(np.frombuffer(bytes(data), np.uint8))
        self._pos = 0
        self._low, self._high, self._value = 0, _TOP, 0
        for _ in range(_BITS):
            self._value = 2 * self._value + self._next_bit()

    def _next_bit(self) -> int:
        pos = self._pos
        self._pos += 1
        if pos < self._bits.size:
            return int(self._bits[pos])
        if pos >= self._bits.size + _BITS:
            raise CorruptFileError("arithmetic-coded data ended too early")
        return 0

    def decode(self, model) -> int:
        """The next symbol, given the model (or cdf) the encoder used for it."""
        cdf = _as_cdf(model)
        _, _, total = _check_cdf(cdf)
        width = self._high - self._low + 1
        target = ((self._value - self._low + 1) * total - 1) // width
        symbol = int(np.searchsorted(np.asarray(cdf), target, side="right")) - 1
        lo, hi = int(cdf[symbol]), int(cdf[symbol + 1])
        self._high = self._low + width * hi // total - 1
        self._low = self._low + width * lo // total
        while True:
            if self._high < _HALF:
                pass
            elif self._low >= _HALF:
                self._low -= _HALF
                self._high -= _HALF
                self._value -= _HALF
            elif self._low >= _QUARTER and self._high < _HALF + _QUARTER:
                self._low -= _QUARTER
                self._high -= _QUARTER
                self._value -= _QUARTER
            else:
                break
            self._low = 2 * self._low
            self._high = 2 * self._high + 1
            self._value = 2 * self._value + self._next_bit()
        return symbol


@numba.njit(cache=True)
def _range_encode(symbols, lut, cdf, precision):  # pragma: no cover - compiled
    """The 32-bit words of the message coded with ``cdf`` by the range coder.

    Symbol ``i`` is alphabet index ``lut[symbols[i]]``, so the message is read
    as given (any integer dtype, no int64 copy). ``cdf`` (uint64) sums to
    ``2**precision``: the division of the range by the total is a shift.
    """
    shift = np.uint64(precision)
    out = np.zeros(symbols.size // 8 + 16, np.uint64)  # one word per entry; grown
    n = 0
    low = np.uint64(0)
    rng = np.uint64(0xFFFFFFFFFFFFFFFF)
    for i in range(symbols.size):
        s = lut[symbols[i]]
        r = rng >> shift
        start = low + r * cdf[s]  # modulo 2**64: an overflow is a carry
        if start < low:
            j = n - 1
            while out[j] == _WORD_MASK:
                out[j] = 0
                j -= 1
            out[j] += 1
        low = start
        rng = r * (cdf[s + 1] - cdf[s])
        while rng < _RANGE_BOTTOM:
            if n == out.size:
                bigger = np.zeros(2 * out.size, np.uint64)
                bigger[:n] = out
                out = bigger
            out[n] = low >> _WORD
            n += 1
            low = low << _WORD
            rng = rng << _WORD
    # the end: the multiple of 2**32 at or above low lies in [low, low + range)
    end = (low + _WORD_MASK) & ~_WORD_MASK
    if end < low:  # the rounding up carried
        j = n - 1
        while out[j] == _WORD_MASK:
            out[j] = 0
            j -= 1
        out[j] += 1
    if n == out.size:
        bigger = np.zeros(out.size + 1, np.uint64)
        bigger[:n] = out
        out = bigger
    out[n] = end >> _WORD
    return out[: n + 1]


@numba.njit(cache=True)
def _range_decode(words, n, cdf, precision):  # pragma: no cover - compiled
    """Decode ``n`` symbols from the 32-bit ``words`` (zeros past the end).

    Returns the symbols and the number of words read, or -1 where the data
    cannot have come from the encoder: a value outside every symbol, or
    words read past the end."""
    total = cdf[-1]  # 2**precision
    shift = np.uint64(precision)
    out = np.empty(n, np.int64)
    pos = 0
    point = np.uint64(0)  # the value read minus low: always below range
    for _ in range(2):
        word = words[pos] if pos < words.size else np.uint64(0)
        point = (point << _WORD) | word
        pos += 1
    rng = np.uint64(0xFFFFFFFFFFFFFFFF)
    for i in range(n):
        r = rng >> shift
        target = point // r
        if target >= total:
            return out, -1
        lo, hi = 0, cdf.size - 1  # binary search: cdf[s] <= target < cdf[s + 1]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cdf[mid] <= target:
                lo = mid
            else:
                hi = mid
        s = lo
        point -= r * cdf[s]
        rng = r * (cdf[s + 1] - cdf[s])
        while rng < _RANGE_BOTTOM:
            word = words[pos] if pos < words.size else np.uint64(0)
            point = (point << _WORD) | word
            rng = rng << _WORD
            pos += 1
        out[i] = s
    if pos > words.size + 1:  # the encoder wrote one word fewer than this reads
        return out, -1
    return out, pos


@numba.njit(cache=True)
def _decode_static(data, n, cdf):  # pragma: no cover - compiled; mirrors the class
    """Decode ``n`` symbols of a version 1 stream: the bits of the classes, packed
    in the bytes ``data`` (zeros past the end)."""
    total = cdf[-1]
    size = 8 * data.size
    out = np.empty(n, np.int64)
    pos = 0
    value = 0
    for _ in range(_BITS):
        bit = (data[pos >> 3] >> (7 - (pos & 7))) & 1 if pos < size else 0
        value = 2 * value + bit
        pos += 1
    low, high = 0, _TOP
    for i in range(n):
        width = high - low + 1
        target = ((value - low + 1) * total - 1) // width
        lo, hi = 0, cdf.size - 1  # binary search: cdf[s] <= target < cdf[s + 1]
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cdf[mid] <= target:
                lo = mid
            else:
                hi = mid
        s = lo
        high = low + width * cdf[s + 1] // total - 1
        low = low + width * cdf[s] // total
        while True:
            if high < _HALF:
                pass
            elif low >= _HALF:
                low -= _HALF
                high -= _HALF
                value -= _HALF
            elif low >= _QUARTER and high < _HALF + _QUARTER:
                low -= _QUARTER
                high -= _QUARTER
                value -= _QUARTER
            else:
                break
            low = 2 * low
            high = 2 * high + 1
            bit = (data[pos >> 3] >> (7 - (pos & 7))) & 1 if pos < size else 0
            value = 2 * value + bit
            pos += 1
            if pos > size + _BITS:
                return out, -1
        out[i] = s
    return out, pos


@numba.njit(cache=True)
def _encode_rows(state, idx, cdfs):  # pragma: no cover - compiled; mirrors the class
    bits = np.zeros(4 * idx.size + 64, np.uint8)  # one byte per bit; grown if full
    nb = 0
    low, high, pending = state[0], state[1], state[2]
    for i in range(idx.size):
        s = idx[i]
        total = cdfs[i, -1]
        width = high - low + 1
        high = low + width * cdfs[i, s + 1] // total - 1
        low = low + width * cdfs[i, s] // total
        while True:
            if high < _HALF:
                bit = 0
            elif low >= _HALF:
                bit = 1
                low -= _HALF
                high -= _HALF
            elif low >= _QUARTER and high < _HALF + _QUARTER:
                bit = -1
                pending += 1
                low -= _QUARTER
                high -= _QUARTER
            else:
                break
            if bit >= 0:
                if nb + pending + 1 > bits.size:
                    bigger = np.zeros(2 * bits.size + pending + 1, np.uint8)
                    bigger[: bits.size] = bits
                    bits = bigger
                bits[nb] = bit
                nb += 1
                for _ in range(pending):
                    bits[nb] = 1 - bit
                    nb += 1
                pending = 0
            low = 2 * low
            high = 2 * high + 1
    state[0], state[1], state[2] = low, high, pending
    return bits[:nb]


@numba.njit(cache=True)
def _decode_rows(state, bits, cdfs):  # pragma: no cover - compiled; mirrors the class
    low, high, value, pos = state[0], state[1], state[2], state[3]
    out = np.empty(cdfs.shape[0], np.int64)
    for i in range(cdfs.shape[0]):
        total = cdfs[i, -1]
        width = high - low + 1
        target = ((value - low + 1) * total - 1) // width
        lo, hi = 0, cdfs.shape[1] - 1
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if cdfs[i, mid] <= target:
                lo = mid
            else:
                hi = mid
        s = lo
        high = low + width * cdfs[i, s + 1] // total - 1
        low = low + width * cdfs[i, s] // total
        while True:
            if high < _HALF:
                pass
            elif low >= _HALF:
                low -= _HALF
                high -= _HALF
                value -= _HALF
            elif low >= _QUARTER and high < _HALF + _QUARTER:
                low -= _QUARTER
                high -= _QUARTER
                value -= _QUARTER
            else:
                break
            low = 2 * low
            high = 2 * high + 1
            value = 2 * value + (bits[pos] if pos < bits.size else 0)
            pos += 1
            if pos > bits.size + _BITS:
                state[3] = -1
                return out
        out[i] = s
    state[0], state[1], state[2], state[3] = low, high, value, pos
    return out


def _check_rows(cdfs) -> np.ndarray:
    cdfs = np.ascontiguousarray(cdfs, dtype=np.int64)
    if cdfs.ndim != 2 or cdfs.shape[1] < 2:
        raise ValueError(f"cdfs must be (n, alphabet + 1), got shape {cdfs.shape}")
    if cdfs.size and (
        (cdfs[:, 0] != 0).any()
        or (np.diff(cdfs, axis=1) < 0).any()
        or not (0 < cdfs[:, -1]).all()
        or (cdfs[:, -1] > MAX_TOTAL).any()
    ):
        raise ValueError(
            f"every cdf row must start at 0, not decrease, and end in 1 .. {MAX_TOTAL}"
        )
    return cdfs


class RowEncoder:
    """:class:`ArithmeticEncoder`'s steps compiled, for many symbols per call.

    ``encode(symbols, cdfs)`` codes ``symbols[i]`` with the cumulative
    counts ``cdfs[i]`` (one row per symbol), continuing one stream across
    calls: how a language model drives the coder, a batch of next-byte
    distributions at a time. The bits are those of the class, symbol for
    symbol (a test checks it).

    >>> cdfs = np.array([[0, 5, 9, 10]] * 3)
    >>> enc = RowEncoder(); enc.encode([0, 2, 1], cdfs); data = enc.finish()
    >>> RowDecoder(data).decode(cdfs).tolist()
    [0, 2, 1]
    """

    def __init__(self) -> None:
        self._state = np.array([0, _TOP, 0], np.int64)
        self._bits: list[np.ndarray] = []

    def encode(self, symbols, cdfs) -> None:
        cdfs = _check_rows(cdfs)
        idx = np.asarray(symbols, dtype=np.int64).reshape(-1)
        if idx.size != cdfs.shape[0]:
            raise ValueError(f"{idx.size} symbols but {cdfs.shape[0]} cdf rows")
        if idx.size == 0:
            return
        if idx.min() < 0 or idx.max() >= cdfs.shape[1] - 1:
            raise ValueError(f"a symbol is outside 0 .. {cdfs.shape[1] - 2}")
        rows = np.arange(idx.size)
        if (cdfs[rows, idx + 1] <= cdfs[rows, idx]).any():
            raise ValueError("a symbol has zero frequency in its cdf row")
        self._bits.append(_encode_rows(self._state, idx, cdfs))

    def finish(self) -> bytes:
        """Settle the interval (two more bits) and return the bytes (zero-padded)."""
        low, pending = int(self._state[0]), int(self._state[2]) + 1
        bit = 0 if low < _QUARTER else 1
        tail = np.array([bit] + [1 - bit] * pending, np.uint8)
        bits = np.concatenate(self._bits + [tail])
        self._bits = []
        return np.packbits(bits).tobytes()


class RowDecoder:
    """Decode what :class:`RowEncoder` wrote, given the same cdf rows in order.

    Reading more than 32 bits past the end of the data raises
    :class:`~mlcomp.coding.CorruptFileError` (truncated data, or more
    symbols asked for than were coded).

    >>> enc = RowEncoder(); enc.encode([1, 1], [[0, 1, 4]] * 2)
    >>> RowDecoder(enc.finish()).decode([[0, 1, 4]] * 2).tolist()
    [1, 1]
    """

    def __init__(self, data: bytes) -> None:
        self._bits = np.unpackbits(np.frombuffer(bytes(data), np.uint8))
        value = 0
        for i in range(_BITS):
            value = 2 * value + (int(self._bits[i]) if i < self._bits.size else 0)
        self._state = np.array([0, _TOP, value, _BITS], np.int64)

    def decode(self, cdfs) -> np.ndarray:
        """The next ``len(cdfs)`` symbols, one per cdf row."""
        cdfs = _check_rows(cdfs)
        if self._state[3] < 0:
            raise CorruptFileError("arithmetic-coded data ended too early")
        out = _decode_rows(self._state, self._bits, cdfs)
        if self._state[3] < 0:
            raise CorruptFileError("arithmetic-coded data ended too early")
        return out


def encode(
    symbols, model: Categorical | None = None, precision: int | None = None
) -> bytes:
    """Arithmetic-code a message with one static model; a self-describing stream.

    >>> message = [4, 4, 1, 4, 0, 4]
    >>> assert list(decode(encode(message))) == message
    """
    symbols, lut, alphabet, weights = indexed_message(symbols, model)
    if precision is None:
        precision = default_precision(alphabet.size)
    if not 1 <= precision <= 24:
        raise ValueError(f"precision must be in 1..24 bits, got {precision}")
    header = write_varints([symbols.size, alphabet.size, precision])
    if symbols.size == 0:
        return pack(_MAGIC, _VERSION, header, b"")
    freq = Categorical(weights).frequencies(precision)
    cdf = np.concatenate([[0], np.cumsum(freq)]).astype(np.uint64)
    words = _range_encode(symbols, lut, cdf, precision)
    # the last word's trailing zero bytes, but one, are left out (read as zeros)
    payload = words.astype(">u4").tobytes()
    payload = payload[:-4] + (payload[-4:].rstrip(b"\0") or b"\0")
    header += write_table(alphabet, freq)
    return pack(_MAGIC, _VERSION, header, payload)


def decode(data: bytes, max_symbols: int | None = None) -> np.ndarray:
    """Decode a stream made by :func:`encode`; returns int64 symbols.

    Raises :class:`~mlcomp.coding.CorruptFileError` when the stream is
    truncated, corrupted, or not an arithmetic-coded stream, or declares
    more than ``max_symbols`` symbols (default ``MAX_SYMBOLS``).

    >>> decode(encode([7, 7, 3])).tolist()
    [7, 7, 3]
    """
    data = bytes(data)
    version = data[len(_MAGIC)] if len(data) > len(_MAGIC) else _VERSION
    header, payload = unpack(data, _MAGIC, version if version == 1 else _VERSION)
    (n, k, precision), pos = read_varints(header, 3)
    if n == 0:
        return np.zeros(0, np.int64)
    what = "arithmetic-coding header"
    if not (1 <= precision <= 24 and k >= 1):
        raise CorruptFileError(f"{what} has invalid parameters")
    alphabet, freq, pos = read_table(header, pos, k, precision, what)
    if pos != len(header):
        raise CorruptFileError(f"{what} has trailing bytes")
    min_cost = min_cost_bits(freq, precision)
    check_count(n, 8 * len(payload), min_cost, max_symbols, "arithmetic stream")
    cdf = np.concatenate([[0], np.cumsum(freq)]).astype(np.int64)
    if version == 1:
        idx, used = _decode_static(np.frombuffer(payload, np.uint8), n, cdf)
    else:
        padded = payload + b"\0" * (-len(payload) % 4)
        words = np.frombuffer(padded, ">u4").astype(np.uint64)
        idx, used = _range_decode(words, n, cdf.astype(np.uint64), precision)
    if used < 0:
        raise CorruptFileError("arithmetic-coded payload is truncated or corrupted")
    return alphabet[idx]
