"""Chapter 1's pipeline at scale, against DuckDB and Polars on the same work.

A table of ``--partitions`` × ``--rows`` rows (30 million by default) is
generated once as partitioned Parquet (zstd) and cached. Each configuration
then runs in its own Python process, while this script samples the resident
memory (RSS) of that process and all its children every 50 ms:

* ``mlcomp, one partition at a time`` — :func:`mlcomp.data.outofcore.clean_table`
  without a cluster: one process, one partition in memory;
* ``mlcomp on Dask, 2 workers`` — the same call on a ``LocalCluster`` of two
  worker processes with one thread each (and a nanny process per worker);
* ``DuckDB`` and ``Polars`` — the same cleaning written in each (peers, run
  only when importable: ``pip install -e ".[bench]"``): exact duplicates
  dropped (the first copy in file and row order kept), exact quartiles,
  Tukey's fences with k = 3, mean and sample standard deviation of the
  values inside them, outliers and gaps filled with the median,
  standardized, with the same flags, written as Parquet (zstd). DuckDB
  runs SQL over the files; Polars scans them lazily, collects the
  de-duplicated rows with its streaming engine and writes from memory;
* ``pandas, in memory`` — the first ``--pandas-partitions`` partitions (what
  fits in this machine's memory: pandas needs several times the table's
  Parquet size), for scale only: it does not see the whole table.

The configurations are interleaved over ``--rounds`` rounds (each round runs
every one once), so that a slow moment of the machine falls on all of them;
the table gives the median wall time with its range, the ratio to
``mlcomp``, the peak RSS over the rounds, the largest relative error of the
means and variances against two passes in extended precision
(``numpy.longdouble``) over the rows kept and the values inside the exact
fences, the fences' largest relative difference from the exact ones, and
an output check: the same rows kept, the same outlier and fill flags, and
the largest difference of a standardized value. Run with ``.venv/bin/python
benchmarks/bench_data.py`` (``--partitions 4 --rounds 1`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd


def run_pandas(src: Path, dst: Path) -> dict:
    from mlcomp.data.outofcore import Schema, _inliers, validate

    schema = Schema()
    start = time.perf_counter()
    frame = pd.read_parquet(src)
    rows, _, counts = validate(frame, schema, "table")
    del frame
    q1, median, q3 = np.nanquantile(rows[list(schema.numeric)], [0.25, 0.5, 0.75], 0)
    iqr = q3 - q1
    fences = {
        c: (q1[j] - 3 * iqr[j], q3[j] + 3 * iqr[j])
        for j, c in enumerate(schema.numeric)
        if c in schema.outliers
    }
    values = _inliers(rows, schema, fences)
    mean, std = values.mean(), values.std()
    for j, column in enumerate(schema.numeric):
        rows[f"{column}_imputed"] = values[column].isna()
        rows[column] = (values[column].fillna(median[j]) - mean[column]) / std[column]
    dst.mkdir(parents=True, exist_ok=True)
    rows.to_parquet(dst / "table.parquet", index=False, compression="zstd")
    return {"wall": time.perf_counter() - start, "rows": counts["rows_in"]}


def exact_statistics(src: Path, cleaned: Path) -> tuple[dict, dict, dict]:
    """Exact fences (numpy's quantiles of the kept rows), and two-pass moments
    in extended precision of the values inside them."""
    from mlcomp.data.outofcore import Schema

    schema = Schema()
    numeric = list(schema.numeric)
    kept = pd.read_parquet(cleaned / "table", columns=["row_id"])["row_id"]
    raw = pd.read_parquet(src, columns=["row_id", *numeric]).set_index("row_id")
    raw = raw.loc[kept.to_numpy()]
    fences, mean, var = {}, {}, {}
    for column in numeric:
        x = raw[column]
        lo, hi = -np.inf, np.inf
        if column in schema.outliers:
            q1, q3 = np.nanquantile(x, [0.25, 0.75])
            lo, hi = q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1)
            fences[column] = (lo, hi)
        x = x[x.between(lo, hi)].to_numpy(np.longdouble)
        m = x.sum() / len(x)
        mean[column] = float(m)
        var[column] = float(((x - m) ** 2).sum() / (len(x) - 1))
    return fences, mean, var


def _columns():
    from mlcomp.data.outofcore import Schema

    schema = Schema()
    return schema, list(schema.numeric), [c for c in schema.columns if c != schema.key]


def run_duckdb(src: Path, dst: Path) -> dict:
    """The cleaning in DuckDB's SQL, on all of this machine's cores."""
    import duckdb

    schema, numeric, content = _columns()
    start = time.perf_counter()
    con = duckdb.connect()
    con.execute(f"SET threads = {os.cpu_count()}")
    files = str(src / "*.parquet")
    rows_in = con.execute(f"SELECT count(*) FROM read_parquet('{files}')").fetchone()[0]
    con.execute(f"""
        CREATE TEMP TABLE kept AS
        SELECT * EXCLUDE (filename, file_row_number)
        FROM read_parquet('{files}', filename = true, file_row_number = true)
        QUALIFY row_number() OVER (PARTITION BY {", ".join(content)}
                                   ORDER BY filename, file_row_number) = 1""")
    quartiles = con.execute("SELECT " + ", ".join(
        f"quantile_cont({c}, [0.25, 0.5, 0.75])" for c in numeric) + " FROM kept"
    ).fetchone()  # fmt: skip
    fences, median, inside = {}, {}, {}
    for c, (q1, q2, q3) in zip(numeric, quartiles, strict=True):
        median[c] = q2
        if c in schema.outliers:
            fences[c] = (q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1))
            inside[c] = f"({c} BETWEEN {fences[c][0]!r} AND {fences[c][1]!r})"
        else:
            inside[c] = f"({c} IS NOT NULL)"
    moments = con.execute("SELECT " + ", ".join(
        f"avg({c}) FILTER (WHERE {inside[c]}), var_samp({c}) FILTER (WHERE {inside[c]})"
        for c in numeric) + " FROM kept").fetchone()  # fmt: skip
    mean = dict(zip(numeric, moments[0::2], strict=True))
    var = dict(zip(numeric, moments[1::2], strict=True))
    select = [schema.key, *schema.text]
    for c in numeric:
        std = max(var[c] ** 0.5, 0) or 1.0
        value = f"CASE WHEN {inside[c]} THEN {c} ELSE {median[c]!r} END"
        select.append(f"({value} - {mean[c]!r}) / {std!r} AS {c}")
        if c in schema.outliers:
            select.append(f"({c} IS NOT NULL AND NOT {inside[c]}) AS {c}_outlier")
        select.append(f"({c} IS NULL OR NOT {inside[c]}) AS {c}_imputed")
    dst.mkdir(parents=True, exist_ok=True)
    out = dst / "table.parquet"
    con.execute(f"COPY (SELECT {', '.join(select)} FROM kept) TO '{out}' "
                "(FORMAT parquet, COMPRESSION zstd)")  # fmt: skip
    con.close()
    return {"wall": time.perf_counter() - start, "rows": rows_in, "mean": mean,
            "var": var, "fences": fences}  # fmt: skip


def run_polars(src: Path, dst: Path) -> dict:
    """The cleaning in Polars: a lazy scan, de-duplicated by its streaming
    engine into memory, then statistics and the output from there."""
    import polars as pl

    schema, numeric, content = _columns()
    start = time.perf_counter()
    files = sorted(str(f) for f in src.glob("*.parquet"))
    scan = pl.scan_parquet(files)
    rows_in = scan.select(pl.len()).collect(engine="streaming").item()
    kept = scan.unique(subset=content, keep="first", maintain_order=True).collect(
        engine="streaming"
    )
    stats = kept.select(
        pl.col(c).quantile(q, interpolation="linear").alias(f"{c}{q}")
        for c in numeric for q in (0.25, 0.5, 0.75)
    ).row(0, named=True)  # fmt: skip
    fences, inside = {}, {}
    for c in numeric:
        q1, q3 = stats[f"{c}0.25"], stats[f"{c}0.75"]
        if c in schema.outliers:
            fences[c] = (q1 - 3 * (q3 - q1), q3 + 3 * (q3 - q1))
            inside[c] = pl.col(c).is_between(*fences[c]).fill_null(False)
        else:
            inside[c] = pl.col(c).is_not_null()
    moments = kept.select(
        expr for c in numeric for expr in (
            pl.col(c).filter(inside[c]).mean().alias(f"{c}_mean"),
            pl.col(c).filter(inside[c]).var(ddof=1).alias(f"{c}_var"))
    ).row(0, named=True)  # fmt: skip
    mean = {c: moments[f"{c}_mean"] for c in numeric}
    var = {c: moments[f"{c}_var"] for c in numeric}
    columns = [pl.col(schema.key), *map(pl.col, schema.text)]
    for c in numeric:
        std = var[c] ** 0.5 or 1.0
        value = pl.when(inside[c]).then(pl.col(c)).otherwise(stats[f"{c}0.5"])
        columns.append(((value - mean[c]) / std).alias(c))
        if c in schema.outliers:
            columns.append((pl.col(c).is_not_null() & ~inside[c]).alias(f"{c}_outlier"))
        columns.append((~inside[c]).alias(f"{c}_imputed"))
    dst.mkdir(parents=True, exist_ok=True)
    kept.select(columns).write_parquet(dst / "table.parquet", compression="zstd")
    return {"wall": time.perf_counter() - start, "rows": rows_in, "mean": mean,
            "var": var, "fences": fences}  # fmt: skip


def worst_relative(pairs) -> float:
    """The largest |a - b| / |b| over pairs (a, b)."""
    return max(abs(a - b) / abs(b) for a, b in pairs)


def output_check(reference: Path, other: Path) -> str:
    """Same rows kept, same flags, largest difference of a standardized value."""
    _, numeric, _ = _columns()
    a = pd.read_parquet(reference / "table").set_index("row_id").sort_index()
    b = pd.read_parquet(other).set_index("row_id").sort_index()
    if not a.index.equals(b.index):
        return f"rows differ ({len(a.index.symmetric_difference(b.index)):,})"
    flags = [c for c in a.columns if c.endswith(("_outlier", "_imputed"))]
    wrong = int(sum((a[c].to_numpy(bool) != b[c].to_numpy(bool)).sum() for c in flags))
    worst = max(float(np.max(np.abs(a[c].to_numpy() - b[c].to_numpy())))
                for c in numeric)  # fmt: skip
    return f"same rows; {wrong} flag mismatches; max |dz| {worst:.1e}"


def run_mlcomp(src: Path, dst: Path, workers: int) -> dict:
    from mlcomp.data import outofcore

    start = time.perf_counter()
    if workers:
        with outofcore.connect(n_workers=workers, threads_per_worker=1) as client:
            report = outofcore.clean_table(src, dst, client=client)
    else:
        report = outofcore.clean_table(src, dst)
    wall = time.perf_counter() - start
    var = dict(zip(report.mean, report.moments.var().tolist(), strict=True))
    return {"wall": wall, "rows": report.rows_in, "mean": report.mean, "var": var,
            "fences": report.fences}  # fmt: skip


def measure(args: list[str]) -> tuple[dict, float]:
    """Run this script with ``args`` in a child process; (its result, peak RSS)."""
    import psutil

    with tempfile.NamedTemporaryFile(suffix=".json") as out:
        child = subprocess.Popen([sys.executable, __file__, *args, "--out", out.name])
        root, peak = psutil.Process(child.pid), 0
        done = threading.Event()

        def sample():
            nonlocal peak
            while not done.is_set():
                try:
                    tree = [root, *root.children(recursive=True)]
                    rss = 0
                    for p in tree:
                        try:
                            rss += p.memory_info().rss
                        except psutil.NoSuchProcess:
                            pass
                    peak = max(peak, rss)
                except psutil.NoSuchProcess:
                    pass
                done.wait(0.05)

        watcher = threading.Thread(target=sample)
        watcher.start()
        code = child.wait()
        done.set()
        watcher.join()
        if code:
            raise SystemExit(f"the run {args} failed with status {code}")
        return json.loads(Path(out.name).read_text()), peak


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--partitions", type=int, default=60)
    parser.add_argument("--rows", type=int, default=500_000, help="per partition")
    parser.add_argument("--pandas-partitions", type=int, default=6)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # a child: run one configuration, write its result
        src, dst = Path(args.src), Path(args.dst)
        runs = {"pandas": run_pandas, "duckdb": run_duckdb, "polars": run_polars}
        if args.mode in runs:
            result = runs[args.mode](src, dst)
        else:
            result = run_mlcomp(src, dst, int(args.mode))
        Path(args.out).write_text(json.dumps(result))
        return

    import importlib.util

    from mlcomp.data import synth
    from mlcomp.utils import cache_dir

    root = cache_dir("bench-data", f"{args.partitions}x{args.rows}")
    want = {"rows_per_partition": args.rows, "partitions": args.partitions}
    try:
        have = synth.read_manifest(root)
    except FileNotFoundError:
        have = {}
    if any(have.get(k) != v for k, v in want.items()):
        print(f"generating {args.partitions * args.rows:,} rows ...", flush=True)
        synth.make_table(root, args.rows, args.partitions, progress=True)
    src = root / "table"
    on_disk = sum(f.stat().st_size for f in src.glob("*.parquet"))
    print(f"table: {args.partitions * args.rows:,} rows, {on_disk / 2**20:,.0f} MiB "
          f"of Parquet, {os.cpu_count()} CPUs, {args.rounds} interleaved rounds",
          flush=True)  # fmt: skip
    n_pandas = min(args.pandas_partitions, args.partitions)
    configs = [("mlcomp, one partition at a time", "0", "serial", src),
               ("mlcomp on Dask, 2 workers", "2", "dask-2", src)]  # fmt: skip
    for label, module in (("DuckDB", "duckdb"), ("Polars", "polars")):
        if importlib.util.find_spec(module) is None:
            print(f"{label}: not installed, left out (pip install -e '.[bench]')")
        else:
            configs.append((label, module, module, src))
    configs.append((f"pandas, in memory ({n_pandas} partitions)", "pandas", "pandas",
                    None))  # fmt: skip
    walls = {label: [] for label, *_ in configs}
    peaks = {label: 0 for label, *_ in configs}
    results = {}
    with tempfile.TemporaryDirectory() as work:
        subset = Path(work) / "subset"
        subset.mkdir()
        for f in sorted(src.glob("*.parquet"))[:n_pandas]:
            (subset / f.name).symlink_to(f)
        for r in range(args.rounds):
            for label, mode, name, data in configs:
                print(f"round {r + 1}: {label} ...", flush=True)
                dst = Path(work) / name
                shutil.rmtree(dst, ignore_errors=True)
                result, peak = measure(["--mode", mode, "--src", str(data or subset),
                                        "--dst", str(dst)])  # fmt: skip
                walls[label].append(result["wall"])
                peaks[label] = max(peaks[label], peak)
                results[label] = result
        print("exact statistics and output checks ...", flush=True)
        reference = Path(work) / "serial"
        fences, mean, var = exact_statistics(src, reference)
        checks = {label: output_check(reference, Path(work) / name / "table"
                                      if name in ("serial", "dask-2")
                                      else Path(work) / name / "table.parquet")
                  for label, mode, name, _ in configs if mode != "pandas"}  # fmt: skip
    ours = statistics.median(walls[configs[0][0]])
    rows = []
    for label, result in results.items():
        error = fence = check = "(subset)"
        if "mean" in result:
            moments = [(result["mean"][c], mean[c]) for c in mean]
            moments += [(result["var"][c], var[c]) for c in var]
            error = f"{worst_relative(moments):.1e}"
            ends = [
                (result["fences"][c][i], fences[c][i]) for c in fences for i in (0, 1)
            ]
            fence = f"{worst_relative(ends):.1e}"
            check = checks[label]
        wall = statistics.median(walls[label])
        rows.append({"configuration": label,
                     "wall s (min-max)": f"{wall:.1f} ({min(walls[label]):.1f}-"
                                         f"{max(walls[label]):.1f})",
                     "x ours": round(wall / ours, 2),
                     "rows/s": f"{result['rows'] / wall:,.0f}",
                     "peak RSS MiB": round(peaks[label] / 2**20),
                     "rel. error mean, var": error,
                     "fences vs exact": fence,
                     "output vs ours": check})  # fmt: skip
    table = pd.DataFrame(rows).set_index("configuration")
    with pd.option_context("display.width", 250, "display.max_colwidth", 60):
        print(table.to_string())


if __name__ == "__main__":
    main()
