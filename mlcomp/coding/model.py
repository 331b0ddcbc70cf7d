"""Information measures and the entropy model the coders share.

A coder never estimates probabilities itself: it takes a :class:`Categorical`
(or builds one from the message's counts), so switching Huffman for rANS
changes one line, as in constriction. All quantities are in bits.
"""

from __future__ import annotations

import heapq
import math

import numba
import numpy as np

__all__ = [
    "entropy",
    "cross_entropy",
    "kl_divergence",
    "Categorical",
    "code_alphabet",
    "default_precision",
]


def _distribution(p, name: str = "p") -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1 or p.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {p.shape}")
    if not np.all(np.isfinite(p)) or np.any(p < 0):
        raise ValueError(f"{name} must be finite and non-negative")
    total = p.sum()
    if total <= 0:
        raise ValueError(f"{name} sums to zero")
    return p / total


def _on_support(p, q) -> tuple[np.ndarray, np.ndarray] | None:
    """``p`` and ``q`` where ``p > 0``; None if ``q`` misses part of that support."""
    p, q = _distribution(p, "p"), _distribution(q, "q")
    if p.shape != q.shape:
        raise ValueError(f"p and q differ in shape: {p.shape} vs {q.shape}")
    nz = p > 0
    return None if np.any(q[nz] == 0) else (p[nz], q[nz])


def entropy(p) -> float:
    """Shannon entropy ``H(p) = -sum p log2 p`` in bits; ``p``: probabilities or counts.

    >>> entropy([0.5, 0.25, 0.25])
    1.5
    >>> entropy([7, 0, 1])  # counts are normalized; 0 log 0 = 0
    0.5435644431995964
    """
    p = _distribution(p)
    nz = p[p > 0]
    return float(-(nz * np.log2(nz)).sum()) + 0.0


def cross_entropy(p, q) -> float:
    """``H(p, q) = -sum p log2 q``: bits per symbol coding ``p`` with a code for ``q``.

    Infinite when ``q`` gives zero probability to a symbol that ``p`` has.

    >>> round(cross_entropy([0.5, 0.5], [0.25, 0.75]), 4)
    1.2075
    """
    support = _on_support(p, q)
    if support is None:
        return float("inf")
    p, q = support
    return float(-(p * np.log2(q)).sum()) + 0.0


def kl_divergence(p, q) -> float:
    """``D(p || q) = sum p log2(p / q) = H(p, q) - H(p)``, the bits lost per symbol.

    >>> kl_divergence([0.5, 0.5], [0.5, 0.5])
    0.0
    >>> round(kl_divergence([0.5, 0.5], [0.25, 0.75]), 4)
    0.2075
    """
    support = _on_support(p, q)
    if support is None:
        return float("inf")
    p, q = support
    return max(float((p * np.log2(p / q)).sum()), 0.0)


class Categorical:
    """A fixed distribution over the symbols ``0 .. size - 1``.

    Build it from probabilities, counts (:meth:`from_counts`) or a message
    (:meth:`from_symbols`); the coders read its integer
    :meth:`frequencies` at a chosen precision.

    >>> model = Categorical.from_symbols([0, 0, 0, 2])
    >>> model.probs
    array([0.75, 0.  , 0.25])
    >>> model.frequencies(precision=4)
    array([12,  0,  4])
    """

    def __init__(self, probs) -> None:
        self.probs = _distribution(probs, "probs")
        self.probs.setflags(write=False)

    @classmethod
    def from_counts(cls, counts) -> Categorical:
        """The empirical distribution of ``counts``."""
        return cls(counts)

    @classmethod
    def from_symbols(cls, symbols, size: int | None = None) -> Categorical:
        """The empirical distribution of a message of non-negative integers."""
        from mlcomp.coding._format import as_symbols

        symbols = as_symbols(symbols)
        if symbols.size == 0:
            raise ValueError("cannot estimate a distribution from an empty message")
        if size is not None and symbols.max() >= size:
            raise ValueError(f"symbol {symbols.max()} is outside 0 .. {size - 1}")
        return cls(np.bincount(symbols, minlength=size or 0))

    @property
    def size(self) -> int:
        return self.probs.size

    def entropy(self) -> float:
        """Entropy in bits per symbol."""
        return entropy(self.probs)

    def frequencies(self, precision: int = 16) -> np.ndarray:
        """Integer frequencies summing to ``2**precision``, for the coders.

        Every symbol with non-zero probability gets at least 1 (so it stays
        codable); the rest are placed by greedy unit steps, each the one that
        lowers the cross-entropy ``-sum p log2(f / 2**precision)`` most.
        """
        if not 1 <= precision <= 31:
            raise ValueError(f"precision must be in 1..31 bits, got {precision}")
        total = 1 << precision
        p = self.probs
        support = p > 0
        if support.sum() > total:
            raise ValueError(
                f"{int(support.sum())} symbols with non-zero probability need "
                f"precision >= {int(np.ceil(np.log2(support.sum())))} bits"
            )
        f = np.where(support, np.maximum(np.floor(p * total), 1), 0).astype(np.int64)
        diff = total - int(f.sum())
        idx = np.flatnonzero(support)
        if diff > 0:  # add where log2((f + 1) / f) * p gains most
            heap = [(-p[i] * np.log2((f[i] + 1) / f[i]), i) for i in idx]
            heapq.heapify(heap)
            for _ in range(diff):
                _, i = heapq.heappop(heap)
                f[i] += 1
                heapq.heappush(heap, (-p[i] * np.log2((f[i] + 1) / f[i]), i))
        elif diff < 0:  # remove where p * log2(f / (f - 1)) costs least
            heap = [(p[i] * np.log2(f[i] / (f[i] - 1)), i) for i in idx if f[i] > 1]
            heapq.heapify(heap)
            for _ in range(-diff):
                _, i = heapq.heappop(heap)
                f[i] -= 1
                if f[i] > 1:
                    heapq.heappush(heap, (p[i] * np.log2(f[i] / (f[i] - 1)), i))
        return f

    def cdf(self, precision: int = 16) -> np.ndarray:
        """Cumulative :meth:`frequencies` with a leading 0 (length ``size + 1``).

        >>> Categorical([0.5, 0.25, 0.25]).cdf(precision=2)
        array([0, 2, 3, 4])
        """
        return np.concatenate([[0], np.cumsum(self.frequencies(precision))])

    def __repr__(self) -> str:
        return f"Categorical(size={self.size}, entropy={self.entropy():.4f} bits)"


def code_alphabet(symbols: np.ndarray, model: Categorical | None):
    """What a coder codes: (alphabet, each symbol's index in it, weights).

    Without a model the alphabet is the distinct symbols of the message and
    the weights are their counts; with one, it is the model's support and
    its probabilities (a message symbol outside the support is an error).

    >>> code_alphabet(np.array([5, 2, 5]), None)
    (array([2, 5]), array([1, 0, 1]), array([1., 2.]))
    """
    if model is None:
        if symbols.size and symbols.max() < (1 << 22):
            present = np.bincount(symbols) > 0
            alphabet = np.flatnonzero(present)
            idx = (np.cumsum(present) - 1)[symbols]
        else:
            alphabet, idx = np.unique(symbols, return_inverse=True)
        weights = np.bincount(idx, minlength=alphabet.size).astype(np.float64)
        return alphabet, idx, weights
    if symbols.size and symbols.max() >= model.size:
        raise ValueError(f"symbol {symbols.max()} is outside the model's alphabet")
    alphabet = np.flatnonzero(model.probs > 0)
    idx = np.searchsorted(alphabet, symbols)
    bad = (idx >= alphabet.size) | (
        alphabet[np.minimum(idx, alphabet.size - 1)] != symbols
    )
    if bad.any():
        raise ValueError(f"symbol {symbols[bad][0]} has probability 0 in the model")
    return alphabet, idx, model.probs[alphabet]


DENSE = 1 << 22  # symbols below this are counted and looked up in flat tables


@numba.njit(cache=True)
def _histogram(symbols, size):  # pragma: no cover - compiled
    """Counts of each value in ``0..size-1``, read in place (no int64 copy)."""
    counts = np.zeros(size, np.int64)
    for i in range(symbols.size):
        counts[symbols[i]] += 1
    return counts


def _message(symbols) -> np.ndarray:
    """The message as an integer array, checked, without copying it."""
    arr = np.asarray(symbols)
    if arr.ndim != 1:
        raise ValueError(f"symbols must be a 1-D array, got shape {arr.shape}")
    if arr.size and not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(f"symbols must be integers, got dtype {arr.dtype}")
    if arr.size == 0:
        return np.zeros(0, np.int64)
    if arr.dtype.kind == "i" and arr.min() < 0:
        raise ValueError(f"symbols must be non-negative, found {arr.min()}")
    if arr.dtype == np.uint64 and arr.max() > np.iinfo(np.int64).max:
        raise ValueError("symbols must fit in int64")
    return np.ascontiguousarray(arr)


def indexed_message(symbols, model: Categorical | None):
    """A message checked and indexed for a compiled coder, without copying it.

    Returns ``(message, lut, alphabet, weights)``: the coder reads symbol
    ``i`` as alphabet index ``lut[message[i]]``. Without a model and with
    values below ``DENSE`` (the common case) the message is the caller's own
    array, of any integer dtype, and ``lut`` a flat table from value to
    index; otherwise (a model, or huge values) the message is replaced by its
    indices through :func:`code_alphabet` and ``lut`` is the identity.

    >>> message, lut, alphabet, weights = indexed_message(np.array([5, 2, 5]), None)
    >>> lut[message].tolist(), alphabet.tolist(), weights.tolist()
    ([1, 0, 1], [2, 5], [1.0, 2.0])
    """
    symbols = _message(symbols)
    top = int(symbols.max()) if symbols.size else 0
    if model is None and top < DENSE:
        counts = _histogram(symbols, top + 1)
        alphabet = np.flatnonzero(counts)
        weights = counts[alphabet].astype(np.float64)
        lut = np.zeros(top + 1, np.int64)
        lut[alphabet] = np.arange(alphabet.size)
        return symbols, lut, alphabet, weights
    alphabet, idx, weights = code_alphabet(symbols.astype(np.int64), model)
    return idx.astype(np.int64), np.arange(alphabet.size), alphabet, weights


def default_precision(alphabet_size: int) -> int:
    """Bits of frequency precision for a coder: 16, more for large alphabets (<= 20).

    Four bits more than the alphabet needs leaves room to tell rare symbols
    from common ones.

    >>> default_precision(256), default_precision(65536)
    (16, 20)
    """
    return min(20, max(16, math.ceil(math.log2(max(alphabet_size, 2))) + 4))
