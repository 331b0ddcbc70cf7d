"""Mergeable statistics as Dask tree reductions, and their task graphs.

A statistic that can be computed per partition and merged — like
:class:`~mlcomp.data.RunningMoments` — becomes a tree reduction: each worker
summarizes the partitions it reads, the summaries are merged pairwise
(``split_every`` at a time), and no worker ever holds more than a few
partitions. :func:`task_layers` lays the graph out by depth so that the book
can draw it without Graphviz.
"""

from __future__ import annotations

from collections.abc import Sequence

from mlcomp.data.stats import RunningMoments

__all__ = ["moments", "moments_graph", "task_layers"]


def _partition_moments(frame, columns: Sequence[str]) -> RunningMoments:
    rm = RunningMoments()
    rm.update(frame[list(columns)].to_numpy(dtype="float64", na_value=float("nan")))
    return rm


def _merge(parts: list[RunningMoments]) -> RunningMoments:
    total = RunningMoments()
    for part in parts:
        total.merge(part)
    return total


def moments_graph(data, columns: Sequence[str], split_every: int = 8):
    """The lazy tree reduction behind :func:`moments` (a ``dask.delayed`` object).

    Nothing is read until it is computed; :func:`task_layers` draws it.

    >>> import dask.dataframe as dd, pandas as pd
    >>> frame = dd.from_pandas(pd.DataFrame({"x": [1.0, 2.0, 3.0, 4.0]}), npartitions=4)
    >>> graph = moments_graph(frame, ["x"], split_every=2)
    >>> graph.compute().mean.tolist()
    [2.5]
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
    return level[0]


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
    return moments_graph(data, columns, split_every).compute()


def task_layers(obj) -> tuple[list[list], list[tuple]]:
    """The task graph of a Dask collection, by depth: (layers, edges).

    ``layers[d]`` lists the keys of the tasks whose longest chain of inputs
    has ``d`` tasks, ordered so that a task sits near the tasks that use its
    output; ``edges`` holds ``(input key, task key)`` pairs. Enough to draw
    a graph without Graphviz.

    >>> import dask
    >>> a, b = dask.delayed(1), dask.delayed(2)
    >>> layers, edges = task_layers(dask.delayed(sum)([a, b]))
    >>> [len(layer) for layer in layers], len(edges)
    ([2, 1], 2)
    """
    from dask.core import get_dependencies

    graph = dict(obj.__dask_graph__())
    deps = {key: get_dependencies(graph, key) for key in graph}
    depth: dict = {}

    def level(key) -> int:  # graphs here are shallow: recursion is fine
        if key not in depth:
            depth[key] = 1 + max((level(d) for d in deps[key]), default=-1)
        return depth[key]

    layers: list[list] = [[] for _ in range(1 + max(map(level, graph)))]
    for key in graph:
        layers[depth[key]].append(key)
    edges = [(d, key) for key, ds in deps.items() for d in ds]
    # order each layer after the layer that uses it, so a drawing has no
    # crossings in a tree: a task goes where its users are
    users: dict = {key: [] for key in graph}
    for d, key in edges:
        users[d].append(key)
    place = {key: i / len(layers[-1]) for i, key in enumerate(layers[-1])}
    for layer in reversed(layers[:-1]):
        layer.sort(
            key=lambda k: sum(place[u] for u in users[k]) / max(len(users[k]), 1)
        )
        place.update({key: i / len(layer) for i, key in enumerate(layer)})
    return layers, edges
