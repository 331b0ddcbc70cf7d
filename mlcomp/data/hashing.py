"""Row hashes for finding duplicates: 64 bits per row, from the columns' buffers.

A row's hash combines one hash per value, column by column. Numbers are
hashed by their 64 bits (``-0.0`` as ``0.0`` and every NaN as one NaN, so
values that compare equal hash equal), strings by their UTF-8 bytes read
straight from the Arrow buffers (MurmurHash64A's block mixing, Appleby
2008), missing values by a constant. The loops are compiled with numba and
touch each byte once, where ``pandas.util.hash_pandas_object`` first
converts Arrow strings into Python objects.

Equal rows always get equal hashes; unequal rows collide with probability
about ``2^-64`` per pair, so :func:`mlcomp.data.clean.exact_duplicates`
compares the values of rows whose hashes match, and the cross-partition
check of :func:`mlcomp.data.outofcore.clean_table` asks for two hashes
under different seeds (128 bits). That check finds the later copies among
a bucket's hashes with :func:`repeats`, a hash table in numba: one pass,
where sorting the bucket would take ``n log n``.
"""

from __future__ import annotations

import numba
import numpy as np
import pandas as pd
import pyarrow as pa

__all__ = ["row_hashes", "repeats"]

_M = np.uint64(0xC6A4A7935BD1E995)  # MurmurHash64A's multiplier
_CANONICAL_NAN = np.float64("nan").view(np.uint64)


@numba.njit(cache=True, inline="always")
def _scramble(k):
    m = numba.uint64(0xC6A4A7935BD1E995)
    k *= m
    k ^= k >> numba.uint64(47)
    return k * m


@numba.njit(cache=True, inline="always")
def _finish(h):
    m = numba.uint64(0xC6A4A7935BD1E995)
    h ^= h >> numba.uint64(47)
    h *= m
    return h ^ (h >> numba.uint64(47))


@numba.njit(cache=True)
def _fold_words(acc, words, valid, seed):
    """acc[i] folded with the hash of the 64-bit word words[i] (or of null)."""
    m = numba.uint64(0xC6A4A7935BD1E995)
    null = numba.uint64(0x9AE16A3B2F90404F)
    for i in range(acc.size):
        k = _scramble(words[i]) if valid[i] else null
        acc[i] = _finish((acc[i] ^ seed ^ k) * m)


@numba.njit(cache=True)
def _fold_strings(acc, offsets, data, valid, seed):
    """acc[i] folded with MurmurHash64A of the bytes data[offsets[i]:offsets[i+1]]."""
    m = numba.uint64(0xC6A4A7935BD1E995)
    null = numba.uint64(0x9AE16A3B2F90404F)
    for i in range(acc.size):
        if not valid[i]:
            k = null
        else:
            start, stop = offsets[i], offsets[i + 1]
            n = stop - start
            h = seed ^ (numba.uint64(n) * m)
            j = start
            while j + 8 <= stop:
                w = numba.uint64(0)
                for b in range(8):
                    w |= numba.uint64(data[j + b]) << numba.uint64(8 * b)
                h ^= _scramble(w)
                h *= m
                j += 8
            if j < stop:
                w = numba.uint64(0)
                for b in range(stop - j):
                    w |= numba.uint64(data[j + b]) << numba.uint64(8 * b)
                h ^= w
                h *= m
            k = _finish(h)
        acc[i] = _finish((acc[i] ^ seed ^ k) * m)


def _words(column: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """A numeric or boolean column as (64-bit words, valid), or None if it is not."""
    dtype = column.dtype
    if pd.api.types.is_bool_dtype(dtype) or pd.api.types.is_integer_dtype(dtype):
        valid = column.notna().to_numpy()
        values = column.to_numpy(dtype=np.int64, na_value=0)
        return values.view(np.uint64), valid
    if pd.api.types.is_float_dtype(dtype):
        values = column.to_numpy(dtype=np.float64, na_value=np.nan)
        valid = np.ones(len(values), bool)
        values = np.where(values == 0, 0.0, values)  # -0.0 == 0.0
        words = values.view(np.uint64).copy()
        words[np.isnan(values)] = _CANONICAL_NAN
        return words, valid
    return None


def _strings(column: pd.Series) -> pa.LargeStringArray | None:
    """A text column as one Arrow large_string array, or None if it is not text."""
    if not (pd.api.types.is_string_dtype(column.dtype) or column.dtype == object):
        return None
    try:
        array = pa.array(column, from_pandas=True)
        if isinstance(array, pa.ChunkedArray):
            array = array.combine_chunks()
        if not (
            pa.types.is_string(array.type)
            or pa.types.is_large_string(array.type)
            or pa.types.is_string_view(array.type)
            or pa.types.is_null(array.type)
        ):
            return None
        return array.cast(pa.large_string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):  # an object column of mixed types
        return None


def row_hashes(frame: pd.DataFrame, seed: int = 0) -> np.ndarray:
    """A uint64 hash of each row of ``frame`` (the index is not hashed).

    Rows with equal values in every column hash equal (a missing value
    equals a missing value; ``-0.0`` equals ``0.0``); ``seed`` selects
    another hash function of the same rows. Columns that are neither
    numbers nor text (dates, categories, mixed objects) are hashed by
    ``pandas.util.hash_array``.

    >>> df = pd.DataFrame({"a": [1.0, 2.0, 1.0, -0.0, 0.0],
    ...                    "b": ["x", "y", "x", None, None]})
    >>> h = row_hashes(df)
    >>> bool(h[0] == h[2]), bool(h[0] == h[1]), bool(h[3] == h[4])
    (True, False, True)
    >>> bool(row_hashes(df, seed=1)[0] == h[0])
    False
    """
    n = len(frame)
    acc = np.full(n, np.uint64(seed * int(_M) % 2**64), np.uint64)
    for j, name in enumerate(frame.columns):
        column = frame[name]
        column_seed = np.uint64((seed * 1_000_003 + j + 1) % 2**64)
        words = _words(column)
        if words is not None:
            _fold_words(acc, words[0], words[1], column_seed)
            continue
        text = _strings(column)
        if text is not None:
            valid = text.is_valid().to_numpy(zero_copy_only=False)
            buffers = text.buffers()
            offsets = np.frombuffer(buffers[1], np.int64)[
                text.offset : text.offset + n + 1
            ]
            data = (np.frombuffer(buffers[2], np.uint8) if buffers[2] is not None
                    else np.zeros(0, np.uint8))  # fmt: skip
            _fold_strings(acc, offsets, data, valid, column_seed)
            continue
        other = pd.util.hash_array(column.to_numpy(dtype=object))
        _fold_words(acc, other, np.ones(n, bool), column_seed)
    return acc


@numba.njit(cache=True)
def _repeats(a, b):
    """out[i]: whether the pair (a[i], b[i]) equals that of some j < i."""
    n = a.size
    size = 2
    while size < 2 * n:  # at most half full: short probe runs
        size <<= 1
    mask = numba.uint64(size - 1)
    m = numba.uint64(0xC6A4A7935BD1E995)
    first = np.zeros(size, np.int64)  # 1 + the first index holding a pair; 0 empty
    out = np.zeros(n, np.bool_)
    for i in range(n):
        slot = _finish(a[i] ^ (b[i] * m)) & mask
        while True:
            j = first[slot]
            if j == 0:
                first[slot] = i + 1
                break
            if a[j - 1] == a[i] and b[j - 1] == b[i]:
                out[i] = True
                break
            slot = (slot + numba.uint64(1)) & mask
    return out


def repeats(a: np.ndarray, b: np.ndarray | None = None) -> np.ndarray:
    """Whether each element (or pair ``(a[i], b[i])``) equals an earlier one.

    One pass over a hash table with open addressing, compiled with numba:
    linear time, where sorting would take ``n log n``. The first occurrence
    of every value is ``False``, each later copy ``True``; ``a`` and ``b``
    are 64-bit integers (viewed as unsigned).

    >>> repeats(np.array([5, 3, 5, 5, 2])).tolist()
    [False, False, True, True, False]
    >>> repeats(np.array([1, 1, 1]), np.array([7, 8, 7])).tolist()
    [False, False, True]
    """
    a = np.ascontiguousarray(a)
    if a.ndim != 1 or a.dtype.itemsize != 8 or a.dtype.kind not in "iu":
        raise ValueError(f"repeats needs a 1-D array of 64-bit integers, got {a.dtype}")
    b = a if b is None else np.ascontiguousarray(b)
    if b.shape != a.shape or b.dtype.itemsize != 8 or b.dtype.kind not in "iu":
        raise ValueError(
            f"repeats needs two 1-D arrays of 64-bit integers of one length, "
            f"got shapes {a.shape} and {b.shape}"
        )
    return _repeats(a.view(np.uint64), b.view(np.uint64))
