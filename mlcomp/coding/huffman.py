"""Canonical Huffman coding (Huffman 1952), length-limited by package-merge.

* :func:`code_lengths` — optimal prefix-code lengths from counts; with
  ``max_length`` the optimal *length-limited* code by package-merge
  (Larmore & Hirschberg 1990).
* :func:`canonical_codes` — codewords from lengths alone (as in DEFLATE and
  JPEG), so a stream only has to carry the lengths.
* :func:`encode` / :func:`decode` — a self-describing stream: the symbols
  present and their code lengths travel in the header; decoding looks up the
  next ``TABLE_BITS`` bits in a table and falls back to the canonical
  first-code comparison for longer codes.

>>> import numpy as np
>>> message = np.array([3, 3, 3, 1, 3, 7, 3, 1])
>>> data = encode(message)
>>> assert np.all(decode(data) == message)
"""

from __future__ import annotations

import heapq

import numba
import numpy as np

from mlcomp.coding._format import (
    CorruptFileError,
    as_symbols,
    check_count,
    pack,
    read_alphabet,
    read_varints,
    unpack,
    write_varints,
)
from mlcomp.coding.model import Categorical, code_alphabet

__all__ = [
    "merges",
    "code_lengths",
    "canonical_codes",
    "encode",
    "decode",
    "MAX_LENGTH",
]

MAX_LENGTH = 32  # longest codeword the stream format allows
TABLE_BITS = 11  # decoding table: 2**11 entries cover most symbols in one lookup
_MAGIC, _VERSION = b"MLCH", 1


def merges(weights) -> list[tuple[int, int, float]]:
    """Huffman's algorithm step by step: merge the two lightest nodes, repeat.

    Nodes ``0 .. k-1`` are the symbols; the ``i``-th merge creates node
    ``k + i``. Returns ``(left, right, weight)`` per merge (ties are broken
    by node id, so the result is deterministic).

    >>> merges([5, 1, 1, 2])  # node 4 = {1, 2}, node 5 = {3, 4}, node 6 = root
    [(1, 2, 2.0), (3, 4, 4.0), (5, 0, 9.0)]
    """
    heap = [(float(w), i) for i, w in enumerate(weights)]
    heapq.heapify(heap)
    node, steps = len(heap), []
    while len(heap) > 1:
        w1, a = heapq.heappop(heap)
        w2, b = heapq.heappop(heap)
        steps.append((a, b, w1 + w2))
        heapq.heappush(heap, (w1 + w2, node))
        node += 1
    return steps


def _natural_lengths(weights: np.ndarray) -> np.ndarray:
    """Depth of every leaf in Huffman's tree."""
    k = weights.size
    parent = np.zeros(2 * k - 1, dtype=np.int64)
    for i, (a, b, _) in enumerate(merges(weights)):
        parent[a] = parent[b] = k + i
    depth = np.zeros(2 * k - 1, dtype=np.int64)
    for n in range(2 * k - 3, -1, -1):  # parents have larger ids than children
        depth[n] = depth[parent[n]] + 1
    return depth[:k]


def _package_merge(weights: np.ndarray, max_length: int) -> np.ndarray:
    """Optimal lengths <= ``max_length`` (coin collector's problem).

    Every level holds the leaves and the pairs ("packages") of the level
    below, sorted by weight; the code keeps the ``2k - 2`` lightest items of
    the top level, and a leaf's length is the number of levels in which it
    is kept. Kept items always form a prefix of each level's sorted list, so
    only the leaf/package pattern of each level is stored.
    """
    order = np.argsort(weights, kind="stable")
    w = weights[order].astype(np.float64)
    k = w.size
    levels = []  # per level, from the deepest: True where the item is a package
    items = w
    levels.append(np.zeros(k, dtype=bool))
    for _ in range(max_length - 1):
        pairs = 2 * (items.size // 2)
        packages = items[0:pairs:2] + items[1:pairs:2]
        merged = np.concatenate([w, packages])
        is_package = np.concatenate([np.zeros(k, bool), np.ones(packages.size, bool)])
        perm = np.argsort(merged, kind="stable")  # leaves first on ties
        items, is_package = merged[perm], is_package[perm]
        levels.append(is_package)
    lengths = np.zeros(k, dtype=np.int64)
    keep = 2 * k - 2
    for is_package in reversed(levels):  # from the top level down
        prefix = is_package[:keep]
        leaves = int(keep - prefix.sum())
        lengths[:leaves] += 1  # leaves in a sorted list appear in weight order
        keep = 2 * int(prefix.sum())
    out = np.empty(k, dtype=np.int64)
    out[order] = lengths
    return out


def code_lengths(counts, max_length: int | None = MAX_LENGTH) -> np.ndarray:
    """Optimal prefix-code lengths in bits for symbols with these counts.

    Symbols with count 0 get length 0 (no codeword). A lone symbol also gets
    length 0: a message of one repeated symbol needs no bits beyond its
    length. With ``max_length`` no codeword is longer (package-merge, optimal
    under that limit); ``None`` means no limit.

    >>> code_lengths([10, 1, 1, 3])
    array([1, 3, 3, 2])
    >>> code_lengths([10, 1, 1, 3], max_length=2)
    array([2, 2, 2, 2])
    """
    counts = np.asarray(counts)
    if counts.ndim != 1 or np.any(counts < 0):
        raise ValueError("counts must be a 1-D array of non-negative numbers")
    used = np.flatnonzero(counts > 0)
    lengths = np.zeros(counts.size, dtype=np.int64)
    if used.size <= 1:
        return lengths
    if max_length is not None:
        if max_length < 1 or (1 << min(max_length, 62)) < used.size:
            raise ValueError(
                f"{used.size} symbols cannot have codes of at most {max_length} bits"
            )
    natural = _natural_lengths(counts[used])
    if max_length is not None and natural.max() > max_length:
        natural = _package_merge(counts[used], max_length)
    lengths[used] = natural
    return lengths


def canonical_codes(lengths) -> np.ndarray:
    """Canonical codewords: shorter codes first, then by symbol, counting up.

    >>> lengths = [1, 3, 3, 2]
    >>> [format(int(c), f"0{n}b") for c, n in zip(canonical_codes(lengths), lengths)]
    ['0', '110', '111', '10']
    """
    lengths = np.asarray(lengths, dtype=np.int64)
    codes = np.zeros(lengths.size, dtype=np.uint64)
    order = np.lexsort((np.arange(lengths.size), lengths))
    code, prev = 0, 0
    for s in order:
        n = int(lengths[s])
        if n == 0:
            continue
        code <<= n - prev
        codes[s] = code
        code += 1
        prev = n
    if prev and code > (1 << prev):
        raise ValueError("lengths violate the Kraft inequality")
    return codes


@numba.njit(cache=True)
def _encode_bits(idx, codes, lengths, nbytes):  # pragma: no cover - compiled
    out = np.zeros(nbytes, np.uint8)
    acc = np.uint64(0)
    nacc = 0
    pos = 0
    for i in range(idx.size):
        s = idx[i]
        n = lengths[s]
        acc = (acc << np.uint64(n)) | codes[s]  # MSB first; old high bits fall off
        nacc += n
        while nacc >= 8:
            nacc -= 8
            out[pos] = (acc >> np.uint64(nacc)) & np.uint64(0xFF)
            pos += 1
    if nacc > 0:
        out[pos] = (acc << np.uint64(8 - nacc)) & np.uint64(0xFF)
    return out


@numba.njit(cache=True)
def _decode_bits(
    data, n, table_sym, table_len, first_code, count, offset, by_code, max_len
):  # pragma: no cover - compiled
    out = np.empty(n, np.int64)
    buf = np.uint64(0)
    nbits = 0
    pos = 0
    mask = np.uint64((1 << TABLE_BITS) - 1)
    for i in range(n):
        while nbits <= 56:  # refill; past the end, pad with zero bits
            byte = np.uint64(data[pos]) if pos < data.size else np.uint64(0)
            buf = (buf << np.uint64(8)) | byte
            pos += 1
            nbits += 8
        peek = (buf >> np.uint64(nbits - TABLE_BITS)) & mask
        length = table_len[peek]
        if length > 0:
            sym = table_sym[peek]
        else:  # longer than the table: canonical first-code comparison
            sym = -1
            for length in range(TABLE_BITS + 1, max_len + 1):
                bits = (buf >> np.uint64(nbits - length)) & np.uint64((1 << length) - 1)
                code = np.int64(bits)
                if first_code[length] <= code < first_code[length] + count[length]:
                    sym = by_code[offset[length] + code - first_code[length]]
                    break
            if sym < 0:
                return out, -1
        nbits -= length
        out[i] = sym
    consumed = pos * 8 - nbits  # bits actually used
    return out, consumed


def _tables(lengths: np.ndarray, codes: np.ndarray):
    max_len = max(int(lengths.max()), 1)
    table_sym = np.zeros(1 << TABLE_BITS, np.int64)
    table_len = np.zeros(1 << TABLE_BITS, np.int64)
    for s in np.flatnonzero((lengths > 0) & (lengths <= TABLE_BITS)):
        n = int(lengths[s])
        start = int(codes[s]) << (TABLE_BITS - n)
        table_sym[start : start + (1 << (TABLE_BITS - n))] = s
        table_len[start : start + (1 << (TABLE_BITS - n))] = n
    count = np.bincount(lengths[lengths > 0], minlength=max_len + 1).astype(np.int64)
    by_code = np.lexsort((np.arange(lengths.size), lengths))
    by_code = by_code[lengths[by_code] > 0].astype(np.int64)  # symbols in code order
    offset = np.concatenate([[0], np.cumsum(count)[:-1]]).astype(np.int64)
    first_code = np.zeros(max_len + 1, np.int64)
    for n in range(1, max_len + 1):
        if count[n]:
            first_code[n] = int(codes[by_code[offset[n]]])
    return table_sym, table_len, first_code, count, offset, by_code, max_len


def encode(
    symbols, model: Categorical | None = None, max_length: int = MAX_LENGTH
) -> bytes:
    """Huffman-code a message of non-negative integers into a self-describing stream.

    Without ``model`` the code is built from the message's own counts; with
    one, from its probabilities (every symbol of the message must have
    non-zero probability in it).

    >>> import numpy as np
    >>> message = np.repeat([0, 1, 2], [6, 1, 1])
    >>> data = encode(message)
    >>> assert np.all(decode(data) == message)
    """
    symbols = as_symbols(symbols)
    if not 1 <= max_length <= MAX_LENGTH:
        raise ValueError(f"max_length must be in 1..{MAX_LENGTH}, got {max_length}")
    alphabet, idx, weights = code_alphabet(symbols, model)
    lengths = code_lengths(weights, max_length)
    codes = canonical_codes(lengths)
    nbits = int((lengths[idx]).sum()) if symbols.size else 0
    payload = _encode_bits(idx, codes, lengths, (nbits + 7) // 8).tobytes()
    gaps = np.diff(alphabet, prepend=0) if alphabet.size else alphabet
    header = (
        write_varints([symbols.size, alphabet.size])
        + write_varints(gaps)
        + bytes(lengths.astype(np.uint8))
    )
    return pack(_MAGIC, _VERSION, header, payload)


def decode(data: bytes, max_symbols: int | None = None) -> np.ndarray:
    """Decode a stream made by :func:`encode`; returns int64 symbols.

    Raises :class:`~mlcomp.coding.CorruptFileError` when the stream is
    truncated, corrupted, or not a Huffman stream, or declares more than
    ``max_symbols`` symbols (default ``MAX_SYMBOLS``; see
    :func:`~mlcomp.coding._format.check_count`).

    >>> decode(encode([2, 0, 2, 2])).tolist()
    [2, 0, 2, 2]
    """
    header, payload = unpack(data, _MAGIC, _VERSION)
    (n, k), pos = read_varints(header, 2)
    alphabet, pos = read_alphabet(header, pos, k, "Huffman header")
    lengths = np.frombuffer(header[pos : pos + k], np.uint8).astype(np.int64)
    if lengths.size != k or pos + k != len(header):
        raise CorruptFileError("Huffman header is truncated or has trailing bytes")
    if n == 0:
        return np.zeros(0, np.int64)
    if k == 0:
        raise CorruptFileError("Huffman header declares symbols but no alphabet")
    if k > 1 and (lengths.max() > MAX_LENGTH or lengths.min() < 1):
        raise CorruptFileError("Huffman header has invalid code lengths")
    min_cost = 0.0 if k == 1 else float(lengths.min())  # one symbol: 0 bits
    check_count(n, 8 * len(payload), min_cost, max_symbols, "Huffman stream")
    if k == 1:
        return np.full(n, alphabet[0], np.int64)
    try:
        codes = canonical_codes(lengths)
    except ValueError as err:
        raise CorruptFileError(f"Huffman header: {err}") from None
    table_sym, table_len, first_code, count, offset, by_code, max_len = _tables(
        lengths, codes
    )
    # the tables hold symbol values, so the kernel writes the message directly
    table_sym, by_code = alphabet[table_sym], alphabet[by_code]
    buf = np.frombuffer(payload, np.uint8)
    out, used = _decode_bits(buf, n, table_sym, table_len, first_code, count,
                             offset, by_code, max_len)  # fmt: skip
    if used < 0 or used > 8 * len(payload):
        raise CorruptFileError("Huffman payload is truncated or corrupted")
    return out
