"""Preprocessing data that does not fit in memory: one pass, mergeable pieces.

* :mod:`~mlcomp.data.stats` — :class:`RunningMoments`: per-column count,
  mean and variance in one pass (Welford), merged across chunks or workers
  (Chan, Golub & LeVeque), accurate even far from zero.
* :mod:`~mlcomp.data.clean` — imputation, outlier rules (IQR, z-score,
  MAD, isolation forest), exact duplicates by row hashing, near duplicates
  by MinHash and LSH banding.
* :mod:`~mlcomp.data.hashing` — :func:`~mlcomp.data.hashing.row_hashes`:
  64 bits per row from the columns' buffers (numba), equal rows equal.
* :mod:`~mlcomp.data.transform` — :class:`Standardizer`,
  :class:`MinMaxScaler` and :class:`Discretizer` (equal width or equal
  frequency), each with ``fit``/``transform`` and ``partial_fit``/``merge``.
* :mod:`~mlcomp.data.synth` — a large table with known, injected defects,
  written as partitioned Parquet, with its ground truth.
* :mod:`~mlcomp.data.outofcore` — the out-of-core cleaning pipeline
  :func:`~mlcomp.data.outofcore.clean_table`, built from
  :mod:`~mlcomp.data.schema` (the per-partition check),
  :mod:`~mlcomp.data.reduce` (the statistics as Dask tree reductions) and
  :mod:`~mlcomp.data.cluster` (a Dask client, local or on the cluster
  ``MLCOMP_DASK_ADDRESS`` names).
* :mod:`~mlcomp.data.sampling` — :class:`Reservoir` (Vitter's algorithm R):
  a uniform sample of fixed size from a stream of unknown length; and
  :func:`hash_split`, train/validation/test splits decided by a key's hash,
  so a key lands in the same split whatever order or company it comes in.

Every piece works chunk by chunk and merges, which is what lets the same
code run on a laptop and as a Dask reduction on a cluster.
"""

from mlcomp.data import clean, cluster, hashing, outofcore, reduce, schema, synth
from mlcomp.data.sampling import HashSample, Reservoir, hash_split, reservoir_sample
from mlcomp.data.stats import RunningMoments, naive_variance
from mlcomp.data.transform import Discretizer, MinMaxScaler, Standardizer

__all__ = [
    "clean",
    "cluster",
    "hashing",
    "outofcore",
    "reduce",
    "schema",
    "synth",
    "Standardizer",
    "MinMaxScaler",
    "Discretizer",
    "RunningMoments",
    "naive_variance",
    "Reservoir",
    "reservoir_sample",
    "hash_split",
    "HashSample",
]
