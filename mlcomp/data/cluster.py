"""A Dask client, here or on a cluster, and the memory a process has used.

:func:`connect` starts a ``LocalCluster`` by default and connects to an
existing scheduler when ``MLCOMP_DASK_ADDRESS`` holds its address (e.g.
``tcp://10.0.0.5:8786``), so exactly the code that runs on a laptop runs on
a cluster. :func:`peak_memory_mib` is how the chapter measures what
out-of-core processing saves.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["connect", "peak_memory_mib"]


def connect(
    n_workers: int = 2,
    threads_per_worker: int = 1,
    memory_limit: str = "1GiB",
    processes: bool = True,
):
    """A ``dask.distributed.Client``: to ``$MLCOMP_DASK_ADDRESS`` if set, else local.

    The local cluster has ``n_workers`` workers of ``threads_per_worker``
    threads and ``memory_limit`` each (with ``processes=False`` the workers
    are threads of this process and get no limit). The scheduler's HTTP
    endpoint (health checks, and the dashboard where Bokeh is installed)
    takes a free port rather than 8787, so several clusters can coexist;
    nothing here needs it. Close the client (``with connect() as client:``)
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
        dashboard_address=":0",
    )


def peak_memory_mib() -> float:
    """The largest resident memory this process has had so far, in MiB.

    On Linux this is ``VmHWM`` of ``/proc/self/status``, the high-water mark
    of this process image (``getrusage``'s ``ru_maxrss`` would not do: it
    survives ``exec``, so a Dask worker spawned by a large process inherits
    its parent's peak). Call it on Dask workers with
    ``client.run(peak_memory_mib)``.

    >>> peak_memory_mib() > 0
    True
    """
    import sys

    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**10  # kB
    if sys.platform == "win32":  # pragma: no cover - not on the CI machine
        import psutil

        return psutil.Process().memory_info().peak_wset / 2**20
    import resource  # pragma: no cover - macOS: bytes

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
