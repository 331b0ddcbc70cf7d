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
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

import numpy as np

__all__ = ["Reservoir", "reservoir_sample", "hash_split"]


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
