"""One-dimensional k-means: the codebooks of weight sharing and of ``.mlc`` files.

Deep Compression (Han, Mao & Dally 2016) clusters each layer's weights into
``k`` shared values. In one dimension Lloyd's algorithm is exact and fast on
sorted data: the clusters are intervals between midpoints of neighbouring
centroids, so every step is a ``searchsorted`` and a prefix sum.
:func:`mlcomp.quant.kmeans_` (weight sharing in a model) and
:mod:`mlcomp.coding.container` (codebook tensors in a file) both use these
two functions.
"""

from __future__ import annotations

import numpy as np

__all__ = ["kmeans_1d", "nearest_centroid"]


def kmeans_1d(x: np.ndarray, k: int, iters: int = 100) -> np.ndarray:
    """Sorted centroids of ``x`` by Lloyd's algorithm, started evenly over [min, max].

    Deep Compression's linear initialization: unlike random or density-based
    starts it keeps centroids on the rare large weights. With at most ``k``
    distinct values the codebook is exact.

    >>> kmeans_1d(np.array([0.0, 0.1, 0.9, 1.0, 1.1]), 2)
    array([0.05, 1.  ])
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    xs = np.sort(np.asarray(x, dtype=np.float64).ravel())
    if xs.size and not np.isfinite(xs[[0, -1]]).all():
        raise ValueError("x contains NaN or infinite values")
    unique = np.unique(xs)
    if unique.size <= k:
        return unique
    centroids = np.linspace(xs[0], xs[-1], k)
    prefix = np.r_[0.0, np.cumsum(xs)]
    for _ in range(iters):
        bounds = np.r_[
            0, np.searchsorted(xs, (centroids[1:] + centroids[:-1]) / 2), xs.size
        ]
        counts = np.diff(bounds)
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        new = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.array_equal(new, centroids):
            break
        centroids = new
    return centroids


def nearest_centroid(x: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    """Index (int64) of the nearest of the sorted ``centroids`` for every ``x``.

    The boundaries are the midpoints of neighbouring centroids, computed in
    the centroids' own dtype; a value exactly on a midpoint goes to the lower
    centroid.

    >>> nearest_centroid(np.array([-1.0, 0.5, 0.6, 9.0]), np.array([0.0, 1.0]))
    array([0, 0, 1, 1])
    """
    centroids = np.asarray(centroids)
    bounds = (centroids[1:] + centroids[:-1]) / 2
    return np.searchsorted(bounds, np.asarray(x)).astype(np.int64)
