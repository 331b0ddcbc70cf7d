"""Out of core with Dask: the same mergeable statistics, one partition at a time.

A Dask DataFrame is a list of pandas partitions plus a task graph. A
statistic that can be computed per partition and merged — like
:class:`~mlcomp.data.RunningMoments` — becomes a tree reduction: each worker
summarizes the partitions it reads, the summaries are merged pairwise, and no
worker ever holds more than a few partitions. Exactly the code that runs on a
laptop runs on a cluster: :func:`connect` starts a ``LocalCluster`` by
default, and connects to an existing scheduler when the environment variable
``MLCOMP_DASK_ADDRESS`` holds its address (e.g. ``tcp://10.0.0.5:8786``).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from mlcomp.data.stats import RunningMoments

__all__ = ["connect", "moments"]


def connect(
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str = "1GiB",
    processes: bool = True,
):
    """A ``dask.distributed.Client``: to ``$MLCOMP_DASK_ADDRESS`` if set, else local.

    The local cluster has ``n_workers`` workers of ``threads_per_worker``
    threads and ``memory_limit`` each (with ``processes=False`` the workers
    are threads of this process and get no limit), and no dashboard (nothing
    listens on a web port). Close the client (``with connect() as client:``)
    to stop the cluster it started.

    >>> with connect(n_workers=1, processes=False) as client:
    ...     client.submit(sum, [1, 2, 3]).result()
    6
    """
    from dask.distributed import Client

    address = os.environ.get("MLCOMP_DASK_ADDRESS")
    if address:
        return Client(address)
    return Client(  # a client given cluster options starts and owns a LocalCluster
        n_workers=n_workers,
        threads_per_worker=threads_per_worker,
        # threads in this process share its memory: a per-worker limit would
        # count everything the process holds and pause the workers
        memory_limit=memory_limit if processes else 0,
        processes=processes,
        dashboard_address=None,
    )


def _partition_moments(frame, columns: Sequence[str]) -> RunningMoments:
    rm = RunningMoments()
    rm.update(frame[list(columns)].to_numpy(dtype="float64", na_value=float("nan")))
    return rm


def _merge(parts: list[RunningMoments]) -> RunningMoments:
    total = RunningMoments()
    for part in parts:
        total.merge(part)
    return total


def moments(data, columns: Sequence[str], split_every: int = 8) -> RunningMoments:
    """Per-column :class:`RunningMoments` of a Dask DataFrame or a Parquet folder.

    Each partition is summarized where it is read; the summaries are merged
    ``split_every`` at a time up a tree. Runs on the current Dask client (or
    Dask's default scheduler without one).

    >>> import dask.dataframe as dd, pandas as pd
    >>> frame = dd.from_pandas(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}), npartitions=2)
    >>> rm = moments(frame, ["x"])
    >>> rm.mean.tolist(), rm.var().tolist()
    ([2.5], [1.6666666666666667])
    """
    import dask
    import dask.dataframe as dd

    if split_every < 2:
        raise ValueError(f"split_every must be >= 2, got {split_every}")
    frame = (
        data
        if isinstance(data, dd.DataFrame)
        else dd.read_parquet(data, columns=list(columns))
    )
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise KeyError(f"no such columns: {missing}")
    level = [
        dask.delayed(_partition_moments)(part, tuple(columns))
        for part in frame.to_delayed()
    ]
    if not level:
        raise ValueError("the data has no partitions")
    while len(level) > 1:
        level = [
            dask.delayed(_merge)(level[i : i + split_every])
            for i in range(0, len(level), split_every)
        ]
    return level[0].compute()
