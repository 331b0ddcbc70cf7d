"""Cleaning: missing values, outliers, exact and near duplicates.

* **Imputation** — :func:`impute` fills missing values of numeric columns by
  the column's mean, median or mode, drops incomplete rows, or predicts each
  missing value from the other columns (``"model"``: scikit-learn's
  ``IterativeImputer``, round-robin regression). It reports what it did and
  refuses a column with nothing to learn from (all missing).
* **Outlier rules**, each returning a boolean mask:
  :func:`iqr_outliers` (Tukey's fences, the box plot's whiskers at
  ``k`` interquartile ranges beyond the quartiles), :func:`zscore_outliers`
  (``|x - mean| / std > t``; the mean and std are themselves pulled by the
  outliers, so it masks them), :func:`mad_outliers` (the robust modified
  z-score ``0.6745 (x - median) / MAD`` of Iglewicz & Hoaglin) and
  :func:`isolation_forest_outliers` (scikit-learn's IsolationForest of Liu,
  Ting & Zhou: points that random axis-aligned cuts isolate quickly).
* **Exact duplicates** — :func:`exact_duplicates` hashes every row and
  confirms equal hashes by comparing the rows, so a hash collision can never
  drop a row.
* **Near duplicates** — :func:`minhash` signatures of shingle sets, whose
  agreement rate estimates the Jaccard similarity ``|A ∩ B| / |A ∪ B|``
  with standard error ``sqrt(J (1 - J) / m)`` for ``m`` hash functions, and
  :func:`lsh_candidates`, which cuts signatures into ``b`` bands of ``r``
  rows so that a pair becomes a candidate with probability
  ``1 - (1 - J^r)^b`` (Broder 1997; Leskovec, Rajaraman & Ullman, ch. 3).
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

from mlcomp.data.hashing import row_hashes

__all__ = [
    "impute",
    "iqr_outliers",
    "zscore_outliers",
    "mad_outliers",
    "isolation_forest_outliers",
    "exact_duplicates",
    "shingles",
    "minhash",
    "jaccard",
    "lsh_candidates",
]

_PRIME = (1 << 31) - 1  # a Mersenne prime: hash values live in [0, 2^31 - 1)


# --- missing values -----------------------------------------------------------


def impute(
    df: pd.DataFrame,
    strategy: str = "mean",
    columns: Sequence[str] | None = None,
    seed: int = 0,
) -> tuple[pd.DataFrame, pd.Series]:
    """Fill (or drop) the missing values of ``columns``; returns (new frame, report).

    ``strategy``: ``"drop"`` (rows with any missing value in ``columns``),
    ``"mean"``, ``"median"``, ``"mode"`` (the most frequent value; the
    smallest on ties), or ``"model"`` (each column regressed on the others,
    iteratively). The report counts the values filled (or rows dropped) per
    column. The input frame is not changed.

    >>> df = pd.DataFrame({"a": [1.0, None, 3.0], "b": [4.0, 5.0, None]})
    >>> out, report = impute(df, "mean")
    >>> out["a"].tolist(), report.to_dict()
    ([1.0, 2.0, 3.0], {'a': 1, 'b': 1})
    """
    strategies = ("drop", "mean", "median", "mode", "model")
    if strategy not in strategies:
        raise ValueError(f"strategy must be one of {strategies}, got {strategy!r}")
    columns = list(df.columns if columns is None else columns)
    missing_cols = [c for c in columns if c not in df.columns]
    if missing_cols:
        raise KeyError(f"no such columns: {missing_cols}")
    report = df[columns].isna().sum()
    empty = [c for c in columns if report[c] == len(df) and len(df) > 0]
    if empty and strategy != "drop":
        raise ValueError(
            f"column(s) {empty} have no values at all: nothing to impute from; "
            "drop the column or fill it from another source"
        )
    if strategy == "drop":
        return df.dropna(subset=columns).copy(), report
    out = df.copy()
    if strategy == "model":
        from sklearn.experimental import enable_iterative_imputer  # noqa: F401
        from sklearn.impute import IterativeImputer

        numeric = [c for c in columns if pd.api.types.is_numeric_dtype(df[c])]
        if numeric != columns:
            raise TypeError(
                "model-based imputation needs numeric columns, not "
                f"{sorted(set(columns) - set(numeric))}"
            )
        imputer = IterativeImputer(
            random_state=seed, max_iter=20, sample_posterior=False
        )
        out[columns] = imputer.fit_transform(df[columns].to_numpy(dtype=np.float64))
        return out, report
    for c in columns:
        if not report[c]:
            continue
        if strategy == "mode":
            value = df[c].mode(dropna=True).sort_values().iloc[0]
        elif not pd.api.types.is_numeric_dtype(df[c]):
            raise TypeError(f"{strategy} of non-numeric column {c!r}; use 'mode'")
        else:
            value = df[c].mean() if strategy == "mean" else df[c].median()
        out[c] = df[c].fillna(value)
    return out, report


# --- outliers -------------------------------------------------------------------


def _values(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1:
        raise ValueError(f"expected one column of values, got shape {x.shape}")
    if np.isnan(x).all():
        raise ValueError("the column has no values (all missing)")
    return x


def iqr_outliers(x, k: float = 1.5) -> np.ndarray:
    """Tukey's rule: outside ``[Q1 - k·IQR, Q3 + k·IQR]`` (NaN is never an outlier).

    >>> iqr_outliers([1, 2, 3, 4, 5, 100]).tolist()
    [False, False, False, False, False, True]
    """
    x = _values(x)
    q1, q3 = np.nanpercentile(x, [25, 75])
    iqr = q3 - q1
    with np.errstate(invalid="ignore"):
        return (x < q1 - k * iqr) | (x > q3 + k * iqr)


def zscore_outliers(x, threshold: float = 3.0) -> np.ndarray:
    """``|x - mean| / std > threshold`` with the sample's own mean and std.

    >>> zscore_outliers([1, 2, 3, 4, 5, 100], threshold=2).tolist()
    [False, False, False, False, False, True]
    """
    x = _values(x)
    std = np.nanstd(x)
    if std == 0:
        return np.zeros(x.shape, bool)
    with np.errstate(invalid="ignore"):
        return np.abs(x - np.nanmean(x)) / std > threshold


def mad_outliers(x, threshold: float = 3.5) -> np.ndarray:
    """The modified z-score ``0.6745 (x - median) / MAD`` beyond ``threshold``.

    0.6745 is the 75th percentile of the standard normal, so for normal data
    the score is on the scale of a z-score. When more than half the values
    are equal the MAD is 0; then ``1.253314 × mean absolute deviation`` takes
    its place (Iglewicz & Hoaglin 1993).

    >>> mad_outliers([1, 2, 3, 4, 5, 100]).tolist()
    [False, False, False, False, False, True]
    """
    x = _values(x)
    median = np.nanmedian(x)
    dev = np.abs(x - median)
    mad = np.nanmedian(dev)
    if mad > 0:
        score = 0.6745 * dev / mad
    else:
        mean_ad = np.nanmean(dev)
        if mean_ad == 0:
            return np.zeros(x.shape, bool)
        score = dev / (1.253314 * mean_ad)
    with np.errstate(invalid="ignore"):
        return score > threshold


def isolation_forest_outliers(
    X, contamination: float = 0.01, seed: int = 0
) -> np.ndarray:
    """Rows that scikit-learn's IsolationForest isolates fastest.

    The ``contamination`` share of the rows with the shortest average path
    length in the forest's random trees is flagged. ``X`` is a 2-D array
    (rows × features) without missing values.

    >>> rng = np.random.default_rng(0)
    >>> X = np.vstack([rng.normal(size=(200, 2)), [[8.0, 8.0]]])
    >>> bool(isolation_forest_outliers(X, contamination=0.005)[-1])
    True
    """
    from sklearn.ensemble import IsolationForest

    X = np.asarray(X, dtype=np.float64)
    if X.ndim != 2:
        raise ValueError(f"expected rows × features, got shape {X.shape}")
    if np.isnan(X).any():
        raise ValueError("IsolationForest cannot take missing values: impute first")
    forest = IsolationForest(contamination=contamination, random_state=seed)
    return forest.fit_predict(X) == -1


# --- exact duplicates -------------------------------------------------------------


def exact_duplicates(df: pd.DataFrame) -> np.ndarray:
    """True for every row equal to an earlier row (the first copy is kept).

    Rows are hashed (:func:`mlcomp.data.hashing.row_hashes`, 64 bits); rows
    with equal hashes are then compared value by value, so the answer is
    exact even if two different rows collide.

    >>> df = pd.DataFrame({"a": [1, 2, 1, 1], "b": ["x", "y", "x", "z"]})
    >>> exact_duplicates(df).tolist()
    [False, False, True, False]
    """
    hashes = row_hashes(df)
    duplicate = np.zeros(len(df), bool)
    # only rows whose hash occurs more than once need a look at their values
    candidates = np.flatnonzero(pd.Series(hashes).duplicated(keep=False).to_numpy())
    if not len(candidates):
        return duplicate
    sub = hashes[candidates]
    # each candidate against the first candidate with its hash, column by column
    first = pd.Series(np.arange(len(sub))).groupby(sub).transform("first").to_numpy()
    same = np.ones(len(sub), bool)
    for j in range(df.shape[1]):
        a = df.iloc[candidates, j].reset_index(drop=True)
        b = a.iloc[first].reset_index(drop=True)
        equal = (a == b).fillna(False).to_numpy(bool)
        same &= equal | (a.isna() & b.isna()).to_numpy()
    later = first != np.arange(len(sub))
    duplicate[candidates[later & same]] = True
    # a hash shared by rows that differ (a collision): settle its rows one by one
    collided = np.unique(sub[later & ~same])
    if len(collided):
        rows = candidates[np.isin(sub, collided)]
        duplicate[rows] = False
        values = df.iloc[rows].to_numpy(dtype=object)
        groups: dict[int, list[int]] = defaultdict(list)
        for row, i in enumerate(rows):
            for other in groups[hashes[i]]:  # earlier rows with the same hash
                if _same_row(values[row], values[other]):
                    duplicate[i] = True
                    break
            else:
                groups[hashes[i]].append(row)
    return duplicate


def _same_row(a, b) -> bool:
    """Equal value by value, a missing value equal to a missing value."""
    return all(x == y or (pd.isna(x) and pd.isna(y)) for x, y in zip(a, b, strict=True))


# --- near duplicates ----------------------------------------------------------------


def shingles(text: str, k: int = 5) -> set[str]:
    """The set of ``k``-character substrings of ``text`` (whitespace collapsed).

    >>> sorted(shingles("abcab", 3))
    ['abc', 'bca', 'cab']
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    text = " ".join(text.split())
    return {text[i : i + k] for i in range(max(len(text) - k + 1, 1))}


def jaccard(a: set, b: set) -> float:
    """``|a ∩ b| / |a ∪ b|`` (1 for two empty sets).

    >>> jaccard({1, 2, 3}, {2, 3, 4})
    0.5
    """
    union = len(a | b)
    return len(a & b) / union if union else 1.0


def _token_hashes(items: Iterable) -> np.ndarray:
    out = [
        int.from_bytes(hashlib.blake2b(str(t).encode(), digest_size=8).digest(), "big")
        % _PRIME
        for t in items
    ]
    return np.asarray(out, dtype=np.uint64)


def minhash(sets: Sequence[set], num_perm: int = 128, seed: int = 0) -> np.ndarray:
    """MinHash signatures, one row per set: ``min over x in S of h_i(x)``.

    The ``num_perm`` hash functions are ``h_i(x) = (a_i x + b_i) mod p`` with
    ``p = 2^31 - 1`` and random ``a_i, b_i``, applied to a 64-bit hash of
    each element reduced mod ``p``. Two sets agree in one row with
    probability equal to their Jaccard similarity, so the fraction of equal
    entries estimates it. An empty set gets the signature ``p`` everywhere.

    >>> sig = minhash([{"a", "b", "c"}, {"a", "b", "c"}, {"x"}], num_perm=64)
    >>> float((sig[0] == sig[1]).mean()), float((sig[0] == sig[2]).mean())
    (1.0, 0.0)
    """
    if num_perm < 1:
        raise ValueError(f"num_perm must be >= 1, got {num_perm}")
    rng = np.random.default_rng(seed)
    a = rng.integers(1, _PRIME, num_perm, dtype=np.uint64)
    b = rng.integers(0, _PRIME, num_perm, dtype=np.uint64)
    p = np.uint64(_PRIME)
    out = np.full((len(sets), num_perm), _PRIME, dtype=np.uint64)
    for row, s in enumerate(sets):
        if s:
            x = _token_hashes(s)[:, None]  # < 2^31, so a·x + b < 2^63: no overflow
            out[row] = ((a * x + b) % p).min(axis=0)
    return out


def lsh_candidates(signatures: np.ndarray, bands: int) -> set[tuple[int, int]]:
    """Pairs ``(i, j)``, ``i < j``, whose signatures agree on at least one whole band.

    The ``m`` signature rows are cut into ``bands`` bands of ``r = m / bands``
    rows; a pair with Jaccard similarity ``J`` agrees on a given band with
    probability ``J^r``, so it is a candidate with probability
    ``1 - (1 - J^r)^bands``: an S-curve whose threshold sits near
    ``(1/bands)^(1/r)``. Only candidates need an exact comparison.

    >>> sig = minhash([{"a", "b", "c", "d"}, {"a", "b", "c", "d"}, {"x", "y"}], 16)
    >>> lsh_candidates(sig, bands=4)
    {(0, 1)}
    """
    signatures = np.asarray(signatures)
    n, m = signatures.shape
    if bands < 1 or m % bands:
        raise ValueError(f"{m} signature rows cannot be cut into {bands} equal bands")
    r = m // bands
    pairs: set[tuple[int, int]] = set()
    for band in range(bands):
        buckets: dict[bytes, list[int]] = defaultdict(list)
        chunk = np.ascontiguousarray(signatures[:, band * r : (band + 1) * r])
        for i in range(n):
            buckets[chunk[i].tobytes()].append(i)
        for members in buckets.values():
            for x, i in enumerate(members):
                for j in members[x + 1 :]:
                    pairs.add((i, j))
    return pairs
