"""Out of core with Dask: the same mergeable statistics, one partition at a time.

A Dask DataFrame is a list of pandas partitions plus a task graph. A
statistic that can be computed per partition and merged — like
:class:`~mlcomp.data.RunningMoments` — becomes a tree reduction: each worker
summarizes the partitions it reads, the summaries are merged pairwise, and no
worker ever holds more than a few partitions. Exactly the code that runs on a
laptop runs on a cluster: :func:`connect` starts a ``LocalCluster`` by
default, and connects to an existing scheduler when the environment variable
``MLCOMP_DASK_ADDRESS`` holds its address (e.g. ``tcp://10.0.0.5:8786``).

:func:`clean_table` is the chapter's pipeline: partitioned Parquet in,
validated, cleaned and standardized Parquet (zstd) out, in three passes that
each hold one partition per worker:

1. **validate and sample** — every partition is checked against a
   :class:`Schema`; rows that cannot be used (a key that is missing or not an
   integer, a number that does not parse, an infinite value) go to a
   quarantine with their reason, exact duplicates within the partition are
   dropped (a copy in another partition needs a shuffle by row hash, as
   ``dask.dataframe.DataFrame.drop_duplicates`` does), and a
   :class:`~mlcomp.data.HashSample` of the numeric columns is merged across
   partitions. Its quartiles give Tukey's fences and its medians the fill
   values;
2. **moments** — :class:`~mlcomp.data.RunningMoments` of the values inside
   the fences, merged: the mean and standard deviation for standardizing;
3. **write** — each partition is cleaned again (the same deterministic
   steps), outliers are set missing, missing values are filled with the
   median, numeric columns are standardized, and the partition is written
   with flags saying which values were outliers or filled. Quarantined rows
   are written beside it, every value kept as text.

Nothing is dropped silently: the :class:`CleanReport` counts every row in,
out, quarantined (by reason) and deduplicated, every empty partition, and
every column whose type had to be converted. A file that is not Parquet, a
partition that lacks a column, and a column with no value anywhere are
errors that name the file or the column.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from mlcomp.data.clean import exact_duplicates
from mlcomp.data.sampling import HashSample
from mlcomp.data.stats import RunningMoments

__all__ = [
    "connect",
    "moments",
    "moments_graph",
    "task_layers",
    "Schema",
    "CleanReport",
    "validate",
    "clean_table",
]


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


# --- the cleaning pipeline ------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Schema:
    """The columns a table must have, and what the pipeline does with each.

    ``key``: a unique integer per row (sampling and the truth use it);
    ``numeric``: parsed as float64, filled and standardized; ``outliers``: the
    numeric columns screened by Tukey's fences; ``text``: kept as strings.
    Other columns pass through untouched. The defaults describe the table of
    :func:`mlcomp.data.synth.make_table`.
    """

    key: str = "row_id"
    numeric: tuple[str, ...] = ("age", "income", "score", "sensor")
    outliers: tuple[str, ...] = ("age", "income", "score")
    text: tuple[str, ...] = ("user", "comment")

    def __post_init__(self) -> None:
        extra = sorted(set(self.outliers) - set(self.numeric))
        if extra:
            raise ValueError(f"outlier columns {extra} are not numeric columns")

    @property
    def columns(self) -> tuple[str, ...]:
        return (self.key, *self.numeric, *self.text)


# text that means "no value" (as pandas' CSV reader reads it), not a bad value
_MISSING = frozenset(["", "na", "n/a", "nan", "-nan", "null", "none", "<na>", "#n/a"])


def _counts() -> dict:
    return {
        "partitions": 0,
        "empty_partitions": [],
        "rows_in": 0,
        "quarantined": {},
        "duplicates": 0,
        "coerced": [],
    }


def validate(
    frame: pd.DataFrame, schema: Schema = Schema(), name: str = "partition"
) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """Check one partition: (usable rows, quarantined rows, counts).

    Numeric columns stored with another numeric type are converted (and the
    conversion counted); stored as text, they are parsed, and a row whose
    value does not parse, or is infinite, is quarantined with the reason.
    So is a row whose key is missing or not an integer. Exact duplicates
    (every column but the key equal to an earlier row's) are dropped and
    counted. The quarantine keeps every original value as text, plus
    ``reason`` and ``partition``. A missing column is an error.

    >>> frame = pd.DataFrame({"row_id": [1, 2, 3], "x": ["1.5", "one", "2"]})
    >>> schema = Schema(numeric=("x",), outliers=(), text=())
    >>> rows, bad, counts = validate(frame, schema)
    >>> rows["x"].tolist(), bad["reason"].tolist(), counts["quarantined"]
    ([1.5, 2.0], ['x is not a number'], {'x is not a number': 1})
    >>> validate(frame.assign(x=["1", "n/a", "3"]), schema)[0]["x"].tolist()
    [1.0, nan, 3.0]
    """
    counts = _counts()
    counts["partitions"] = 1
    counts["rows_in"] = len(frame)
    missing = [c for c in schema.columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{name}: missing column(s) {missing}; the schema needs "
            f"{list(schema.columns)}"
        )
    if not len(frame):
        counts["empty_partitions"].append(name)
        return frame.copy(), frame.astype(str).assign(reason=[], partition=[]), counts
    out = frame.copy()
    reason = np.full(len(frame), None, dtype=object)  # the first reason found

    def flag(mask, why: str) -> None:
        reason[np.asarray(mask, bool) & (reason == None)] = why  # noqa: E711

    key = pd.to_numeric(frame[schema.key], errors="coerce")
    whole = key.notna() & np.isfinite(key) & (key == np.round(key))
    flag(~whole, f"{schema.key} is missing or not an integer")
    if frame[schema.key].dtype != np.int64:
        counts["coerced"].append(f"{name}: {schema.key} {frame[schema.key].dtype}")
    out[schema.key] = key.where(whole, 0).astype(np.int64)
    for column in schema.numeric:
        raw = frame[column]
        if raw.dtype == np.float64:
            values = raw
        else:
            counts["coerced"].append(f"{name}: {column} {raw.dtype}")
            if pd.api.types.is_numeric_dtype(raw) or pd.api.types.is_bool_dtype(raw):
                values = raw.astype(np.float64)
            else:
                values = pd.to_numeric(raw, errors="coerce").astype(np.float64)
                blank = raw.astype(str).str.strip().str.lower().isin(_MISSING)
                flag(raw.notna() & ~blank & values.isna(), f"{column} is not a number")
        flag(np.isinf(values), f"{column} is infinite")
        out[column] = values
    for column in schema.text:
        raw = frame[column]
        if not (pd.api.types.is_string_dtype(raw) or raw.dtype == object):
            counts["coerced"].append(f"{name}: {column} {raw.dtype}")
            out[column] = raw.astype(str).where(raw.notna(), None)
    bad = reason != None  # noqa: E711 (elementwise on an object array)
    quarantine = frame[bad].astype(str).assign(reason=reason[bad], partition=name)
    for why, n in quarantine["reason"].value_counts().sort_index().items():
        counts["quarantined"][why] = int(n)
    out = out[~bad]
    content = [c for c in out.columns if c != schema.key]
    duplicate = exact_duplicates(out[content])
    counts["duplicates"] = int(duplicate.sum())
    return out[~duplicate].reset_index(drop=True), quarantine, counts


def _add_counts(total: dict, part: dict) -> dict:
    for field in ("partitions", "rows_in", "duplicates"):
        total[field] += part[field]
    for field in ("empty_partitions", "coerced"):
        total[field] += part[field]
    for why, n in part["quarantined"].items():
        total["quarantined"][why] = total["quarantined"].get(why, 0) + n
    return total


def _read(path: str) -> pd.DataFrame:
    import pyarrow

    try:
        return pd.read_parquet(path)
    except (OSError, pyarrow.ArrowException) as err:
        raise ValueError(
            f"{Path(path).name}: cannot be read as Parquet ({err}); the file is "
            "corrupt, truncated or not Parquet — regenerate or remove it"
        ) from err


def _pass_sample(path: str, schema: Schema, k: int):
    rows, _, counts = validate(_read(path), schema, Path(path).name)
    sample = HashSample(k)
    sample.update(rows[schema.key].to_numpy(), rows[list(schema.numeric)].to_numpy())
    counts["values"] = rows[list(schema.numeric)].notna().sum().to_numpy()
    return sample, counts


def _inliers(rows: pd.DataFrame, schema: Schema, fences: dict) -> pd.DataFrame:
    values = rows[list(schema.numeric)].copy()
    for column, (lo, hi) in fences.items():
        values[column] = values[column].where(values[column].between(lo, hi))
    return values


def _pass_moments(path: str, schema: Schema, fences: dict) -> RunningMoments:
    rows, _, _ = validate(_read(path), schema, Path(path).name)
    rm = RunningMoments()
    if len(rows):
        rm.update(_inliers(rows, schema, fences).to_numpy())
    return rm


def _pass_write(path: str, dst: str, schema: Schema, params: dict) -> dict:
    name = Path(path).name
    rows, quarantine, _ = validate(_read(path), schema, name)
    done = {"rows_out": len(rows), "outliers": {}, "imputed": {}}
    if len(quarantine):
        quarantine.to_parquet(
            Path(dst) / "quarantine" / name, index=False, compression="zstd"
        )
    if not len(rows):
        return done
    values = _inliers(rows, schema, params["fences"])
    for j, column in enumerate(schema.numeric):
        if column in params["fences"]:
            outlier = rows[column].notna() & values[column].isna()
            rows[f"{column}_outlier"] = outlier
            done["outliers"][column] = int(outlier.sum())
        filled = values[column].isna()
        rows[f"{column}_imputed"] = filled
        done["imputed"][column] = int(filled.sum())
        x = values[column].fillna(params["median"][j])
        rows[column] = (x - params["mean"][j]) / params["std"][j]
    rows.to_parquet(Path(dst) / "table" / name, index=False, compression="zstd")
    return done


def _run(fn: Callable, items: list, client, progress: bool, desc: str, collect):
    """Call ``fn`` on every item, here or on the Dask ``client``; ``collect(i, r)``."""
    from tqdm import tqdm

    bar = tqdm(total=len(items), desc=desc, disable=not progress)
    if client is None:
        for i, item in enumerate(items):
            collect(i, fn(item))
            bar.update()
    else:
        from dask.distributed import as_completed

        futures = client.map(fn, items, pure=False)
        index = {future.key: i for i, future in enumerate(futures)}
        for future in as_completed(futures):
            collect(index[future.key], future.result())
            future.release()  # results are summaries: fold in and let go
            bar.update()
    bar.close()


@dataclasses.dataclass
class CleanReport:
    """What :func:`clean_table` did, row by row accounted for.

    ``rows_in = rows_out + sum(quarantined) + duplicates``, checked before
    the report is returned. ``fences``, ``median``, ``mean`` and ``std`` are
    the parameters applied (per numeric column; ``mean``/``std`` of the
    values inside the fences); ``moments`` is their
    :class:`~mlcomp.data.RunningMoments`.
    """

    partitions: int
    empty_partitions: list
    rows_in: int
    rows_out: int
    quarantined: dict
    duplicates: int
    coerced: list
    outliers: dict
    imputed: dict
    fences: dict
    median: dict
    mean: dict
    std: dict
    moments: RunningMoments = dataclasses.field(repr=False)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out.pop("moments")
        return out

    def __str__(self) -> str:
        lines = [
            f"{self.partitions} partitions ({len(self.empty_partitions)} empty), "
            f"{self.rows_in:,} rows in, {self.rows_out:,} out, "
            f"{self.duplicates:,} exact duplicates dropped (within partitions), "
            f"{sum(self.quarantined.values()):,} quarantined",
        ]
        lines += [
            f"  quarantined: {n:,} × {why}" for why, n in self.quarantined.items()
        ]
        lines += [f"  empty: {name}" for name in self.empty_partitions]
        lines += [f"  converted: {c}" for c in self.coerced]
        for column in self.mean:
            lo, hi = self.fences.get(column, (-np.inf, np.inf))
            lines.append(
                f"  {column}: fences [{lo:.6g}, {hi:.6g}], "
                f"{self.outliers.get(column, 0):,} outliers, "
                f"{self.imputed[column]:,} filled with {self.median[column]:.6g}, "
                f"mean {self.mean[column]:.10g}, std {self.std[column]:.6g}"
            )
        return "\n".join(lines)


def clean_table(
    src: str | os.PathLike,
    dst: str | os.PathLike,
    schema: Schema = Schema(),
    k: float = 3.0,
    sample_size: int = 65536,
    client=None,
    progress: bool = False,
) -> CleanReport:
    """Validate, clean and standardize a folder of Parquet files; write ``dst``.

    ``src`` holds ``*.parquet`` partitions. ``dst/table/`` receives the
    cleaned partitions (zstd), ``dst/quarantine/`` the rows that could not
    be used, ``dst/report.json`` the :class:`CleanReport`. ``dst`` must
    neither contain nor lie inside ``src``, and Parquet files already in
    ``dst`` are replaced only if an earlier run wrote them (otherwise
    :class:`FileExistsError`): nothing the pipeline did not write is deleted.
    Outliers are values outside ``[Q1 - k·IQR, Q3 + k·IQR]``, quartiles estimated from a
    ``sample_size``-row :class:`~mlcomp.data.HashSample`. With a Dask
    ``client`` the partitions are processed by its workers (which must see
    ``src`` and ``dst``); without one, one at a time in this process. The
    result is the same either way.

    >>> import tempfile
    >>> from mlcomp.data import synth
    >>> root = synth.make_table(tempfile.mkdtemp(), rows_per_partition=500)
    >>> report = clean_table(root / "table", root / "clean")
    >>> report.rows_in == report.rows_out + report.duplicates
    True
    """
    src, dst = Path(src), Path(dst)
    files = sorted(str(f) for f in src.glob("*.parquet"))
    if not files:
        raise FileNotFoundError(
            f"{src} holds no *.parquet files; generate a table with "
            "mlcomp.data.synth.make_table"
        )
    if not k > 0:
        raise ValueError(f"the fence multiplier k must be positive, got {k}")
    s, d = src.resolve(), dst.resolve()
    if d == s or d in s.parents or s in d.parents:
        raise ValueError(
            f"the destination {dst} must neither contain nor lie inside the source "
            f"{src}: cleaning would overwrite its own input"
        )
    # an earlier run wrote this folder: its marker, or (older runs) its report
    marker = dst / ".written-by-clean_table"
    ours = marker.is_file() or (dst / "report.json").is_file()
    for sub in ("table", "quarantine"):
        (dst / sub).mkdir(parents=True, exist_ok=True)
        stale = sorted((dst / sub).glob("*.parquet"))
        if stale and not ours:
            raise FileExistsError(
                f"{dst / sub} holds Parquet files clean_table did not write "
                f"({stale[0].name}, ...); choose an empty destination"
            )
        for old in stale:  # the output of an earlier run into this destination
            old.unlink()
    marker.write_text("the output of mlcomp.data.outofcore.clean_table\n")
    # pass 1: validate, count, sample
    counts, sample = _counts(), HashSample(sample_size)
    values = np.zeros(len(schema.numeric), np.int64)

    def fold_sample(i, result):
        nonlocal values
        part_sample, part_counts = result
        sample.merge(part_sample)
        _add_counts(counts, part_counts)
        values = values + part_counts.pop("values")

    fn = functools.partial(_pass_sample, schema=schema, k=sample_size)
    _run(fn, files, client, progress, "validate, sample", fold_sample)
    counts["empty_partitions"].sort()
    counts["coerced"].sort()
    empty = [c for c, n in zip(schema.numeric, values, strict=True) if n == 0]
    if empty:
        raise ValueError(
            f"column(s) {empty} have no values in any partition (all missing): "
            "nothing to fill or scale them from; drop them from the Schema"
        )
    q1, median, q3 = sample.quantile([0.25, 0.5, 0.75])
    fences = {}
    for j, column in enumerate(schema.numeric):
        if column in schema.outliers:
            iqr = q3[j] - q1[j]
            fences[column] = (float(q1[j] - k * iqr), float(q3[j] + k * iqr))

    # pass 2: moments of the values inside the fences, merged in file order
    parts: list = [None] * len(files)
    fn = functools.partial(_pass_moments, schema=schema, fences=fences)
    _run(fn, files, client, progress, "moments", parts.__setitem__)
    moments = RunningMoments()
    for part in parts:
        moments.merge(part)
    mean, std = moments.mean, moments.std()
    std = np.where(std > 0, std, 1.0)

    # pass 3: clean, fill, standardize, write
    params = {"fences": fences, "median": median, "mean": mean, "std": std}
    done = {"rows_out": 0, "outliers": {}, "imputed": {}}

    def fold_write(i, result):
        done["rows_out"] += result["rows_out"]
        for field in ("outliers", "imputed"):
            for column, n in result[field].items():
                done[field][column] = done[field].get(column, 0) + n

    fn = functools.partial(_pass_write, dst=str(dst), schema=schema, params=params)
    _run(fn, files, client, progress, "write", fold_write)
    names = list(schema.numeric)
    report = CleanReport(
        **counts,
        rows_out=done["rows_out"],
        outliers={c: done["outliers"].get(c, 0) for c in fences},
        imputed={c: done["imputed"].get(c, 0) for c in names},
        fences=fences,
        median=dict(zip(names, median.tolist(), strict=True)),
        mean=dict(zip(names, mean.tolist(), strict=True)),
        std=dict(zip(names, std.tolist(), strict=True)),
        moments=moments,
    )
    accounted = report.rows_out + sum(report.quarantined.values()) + report.duplicates
    if accounted != report.rows_in:  # pragma: no cover - a bug, not bad input
        raise RuntimeError(f"{report.rows_in} rows in but {accounted} accounted for")
    (dst / "report.json").write_text(json.dumps(report.to_dict(), indent=1))
    return report
