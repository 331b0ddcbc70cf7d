"""Sampling and splitting a stream: reservoir sampling and hash-based splits.

**Reservoir sampling** (algorithm R; Vitter 1985): keep the first ``k`` items;
the ``i``-th item after them (0-based index ``i >= k``) replaces a uniformly
chosen slot with probability ``k / (i + 1)``. By induction every item seen so
far is in the reservoir with probability ``k / n``, without knowing ``n`` in
advance and in ``O(k)`` memory.

**Hash splits**: a row's split is decided by a hash of its key (a user id, a
file name, a speaker) and a salt, mapped to ``[0, 1)`` and cut at the
cumulative fractions. The answer depends on the key alone — not on the order
of the rows, the size of the chunk, or which other keys are present — so
every chunk, every worker and every later run agrees, and all rows of one
key land in the same split: no leak between training and test data.

**Bottom-k samples** (:class:`HashSample`): keep the ``k`` rows whose keys
have the smallest hashes. A good hash orders the keys uniformly at random, so
the kept rows are a uniform sample without replacement; and because the
choice depends only on the keys, two samples merge exactly (the ``k``
smallest of the union), in any order or tree. That makes a sample a
reduction, like the moments: each worker samples its partitions, and the
merged sample is the same however the table was cut.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["Reservoir", "reservoir_sample", "hash_split", "HashSample", "mix64"]


class Reservoir:
    """A uniform random sample of ``k`` items from a stream, fed in batches.

    ``update(batch)`` takes a sequence or an array (axis 0 = items);
    ``sample`` is the current reservoir (fewer than ``k`` items until ``k``
    have been seen) as a list, in slot order. Seeded: the same stream and
    seed give the same sample, however the stream is cut into batches.

    >>> r = Reservoir(3, seed=0)
    >>> r.update(range(10)); r.update(range(10, 100))
    >>> len(r.sample), r.seen
    (3, 100)
    """

    def __init__(self, k: int, seed: int = 0) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.k = k
        self.seen = 0
        self.sample: list = []
        self._rng = np.random.default_rng(seed)

    def update(self, batch: Iterable) -> None:
        """Offer every item of ``batch`` to the reservoir, in order."""
        items = batch if isinstance(batch, (Sequence, np.ndarray)) else list(batch)
        n = len(items)
        fill = min(max(self.k - self.seen, 0), n)
        self.sample.extend(items[i] for i in range(fill))
        if fill < n:
            # item with stream index i goes to slot j ~ U{0..i} if j < k; one
            # draw per item, in stream order, so batching does not matter
            index = np.arange(self.seen + fill, self.seen + n)
            slots = np.floor(self._rng.random(n - fill) * (index + 1)).astype(np.int64)
            for offset in np.flatnonzero(slots < self.k):  # about k/i of them
                self.sample[slots[offset]] = items[fill + offset]
        self.seen += n


def reservoir_sample(
    stream: Iterable, k: int, seed: int = 0, batch: int = 4096
) -> list:
    """``k`` items drawn uniformly without replacement from ``stream`` (one pass).

    >>> sample = reservoir_sample(range(1000), 5, seed=1)
    >>> len(sample), sample == reservoir_sample(range(1000), 5, seed=1)
    (5, True)
    """
    reservoir, chunk = Reservoir(k, seed), []
    for item in stream:
        chunk.append(item)
        if len(chunk) == batch:
            reservoir.update(chunk)
            chunk = []
    reservoir.update(chunk)
    return reservoir.sample


def _unit_hash(key, salt: str) -> float:
    """A key's position in [0, 1): BLAKE2b of salt and key, first 8 bytes."""
    if isinstance(key, bytes):
        data = key
    elif isinstance(key, (str, int, np.integer)):
        data = str(key).encode()
    else:
        raise TypeError(
            f"split keys must be str, bytes or int, got {type(key).__name__}"
        )
    digest = hashlib.blake2b(data, key=salt.encode()[:64], digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def hash_split(
    keys: Iterable, fractions: Sequence[float], salt: str = "mlcomp"
) -> np.ndarray:
    """The split index (0, 1, ...) of every key, aligned with ``keys``.

    ``fractions`` are the shares of the splits (e.g. ``[0.8, 0.1, 0.1]``) and
    must be positive and sum to 1. A key's split depends only on the key and
    ``salt``; change the salt for a different, independent split.

    >>> hash_split(["ada", "bob", "eve", "cy", "ada"], [0.5, 0.5]).tolist()
    [1, 1, 1, 0, 1]
    """
    fractions = np.asarray(fractions, dtype=np.float64)
    if fractions.ndim != 1 or fractions.size < 1 or (fractions <= 0).any():
        raise ValueError(
            f"fractions must be positive numbers, got {fractions.tolist()}"
        )
    if abs(fractions.sum() - 1.0) > 1e-9:
        raise ValueError(f"fractions must sum to 1, got {fractions.sum():.6g}")
    bounds = np.cumsum(fractions)[:-1]
    u = np.fromiter((_unit_hash(k, salt) for k in keys), dtype=np.float64)
    return np.searchsorted(bounds, u, side="right").astype(np.int64)


_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1, _M2 = np.uint64(0xBF58476D1CE4E5B9), np.uint64(0x94D049BB133111EB)


def mix64(keys, salt: int = 0) -> np.ndarray:
    """SplitMix64's finalizer of ``keys + salt``: a bijection of 64-bit integers.

    Distinct keys get distinct hashes, and consecutive keys get hashes that
    look independent and uniform on ``[0, 2^64)`` (Steele, Lea & Flood 2014).

    >>> mix64([0, 1, 2]).tolist()
    [16294208416658607535, 10451216379200822465, 10905525725756348110]
    """
    x = np.asarray(keys)
    if x.dtype.kind not in "iu":
        raise TypeError(f"keys must be integers, got dtype {x.dtype}")
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(salt % 2**64) + _GOLDEN
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


class HashSample:
    """A uniform sample of ``k`` rows kept by smallest key hash; exactly mergeable.

    ``update(keys, values)`` offers rows (``keys``: distinct integers;
    ``values``: one row of floats per key). ``merge(other)`` keeps the ``k``
    smallest hashes of both, so the sample of a table is the same whatever
    the partitions, their order, or the tree that merged them.
    ``quantile(q)`` estimates per-column quantiles from the sample, skipping
    missing values; with ``n`` sampled values the rank error has standard
    deviation ``sqrt(q (1 - q) / n)``.

    >>> a, b = HashSample(4), HashSample(4)
    >>> a.update(range(0, 50), [[float(i)] for i in range(0, 50)])
    >>> b.update(range(50, 100), [[float(i)] for i in range(50, 100)])
    >>> whole = HashSample(4)
    >>> whole.update(range(100), [[float(i)] for i in range(100)])
    >>> a.merge(b).keys.tolist() == whole.keys.tolist()
    True
    """

    def __init__(self, k: int, salt: int = 0) -> None:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive int, got {k!r}")
        self.k, self.salt = k, salt
        self.keys = np.zeros(0, np.int64)
        self.hashes = np.zeros(0, np.uint64)
        self.values: np.ndarray | None = None
        self.seen = 0

    def _keep(self, keys, hashes, values) -> None:
        order = np.argsort(hashes, kind="stable")[: self.k]
        self.keys, self.hashes, self.values = keys[order], hashes[order], values[order]

    def update(self, keys, values) -> None:
        """Offer rows: ``keys`` (n,) integers, ``values`` (n,) or (n, d) floats."""
        keys = np.asarray(keys)
        values = np.asarray(values, dtype=np.float64)
        if values.ndim == 1:
            values = values[:, None]
        if values.ndim != 2 or len(values) != len(keys):
            raise ValueError(
                f"need one row of values per key: {len(keys)} keys, "
                f"values of shape {values.shape}"
            )
        if self.values is not None and values.shape[1] != self.values.shape[1]:
            raise ValueError(
                f"expected {self.values.shape[1]} columns, got {values.shape[1]}"
            )
        # hash twice, the salt in between: salts give independent samples (a
        # salt added to the keys would only shift the same sample along them)
        hashes = mix64(mix64(keys) ^ mix64([self.salt])[0])
        if self.values is None:
            self.values = np.zeros((0, values.shape[1]))
        self._keep(
            np.r_[self.keys, keys.astype(np.int64)],
            np.r_[self.hashes, hashes],
            np.vstack([self.values, values]),
        )
        self.seen += len(keys)

    def merge(self, other: HashSample) -> HashSample:
        """Fold ``other`` (same ``k`` and salt, other keys) into this sample."""
        if (other.k, other.salt) != (self.k, self.salt):
            raise ValueError("cannot merge samples with different k or salt")
        if other.values is None:
            return self
        if self.values is None:
            self.values = np.zeros((0, other.values.shape[1]))
        self._keep(
            np.r_[self.keys, other.keys],
            np.r_[self.hashes, other.hashes],
            np.vstack([self.values, other.values]),
        )
        self.seen += other.seen
        return self

    def quantile(self, q) -> np.ndarray:
        """Per-column quantiles ``q`` (scalar or sequence) of the sampled values.

        Returns shape ``(len(q), columns)`` (or ``(columns,)`` for a scalar);
        a column with no sampled value is an error.
        """
        if self.values is None or not len(self.values):
            raise ValueError("the sample is empty")
        empty = np.isnan(self.values).all(axis=0)
        if empty.any():
            raise ValueError(
                f"column(s) {np.flatnonzero(empty).tolist()} have no sampled values"
            )
        return np.nanquantile(self.values, q, axis=0)
