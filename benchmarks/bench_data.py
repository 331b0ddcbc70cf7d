"""Chapter 1's pipeline at scale: pandas in memory against Dask with 1 and 2 workers.

A table of ``--partitions`` × ``--rows`` rows (30 million by default) is
generated once as partitioned Parquet (zstd) and cached. Each configuration
then runs in its own Python process, while this script samples the resident
memory (RSS) of that process and all its children every 50 ms:

* ``pandas, in memory`` — the first ``--pandas-partitions`` partitions (what
  fits in this machine's memory: pandas needs several times the table's
  Parquet size) read into one DataFrame, validated, cleaned with exact
  quartiles, standardized and written as one file;
* ``mlcomp, one partition at a time`` — :func:`mlcomp.data.outofcore.clean_table`
  without a cluster: one process, one partition in memory;
* ``Dask, N workers`` — the same call on a ``LocalCluster`` of N worker
  processes with one thread each (and a nanny process per worker).

The table reports wall time, rows per second, peak RSS of the whole process
tree, and the largest relative difference between the pipeline's means and
variances and the exact ones: two passes in extended precision
(``numpy.longdouble``) over the rows the pipeline kept and the values inside
its fences. Run with ``.venv/bin/python
benchmarks/bench_data.py`` (``--partitions 4`` for a quick look).
"""

from __future__ import annotations

import argparse
import json
import os
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


def exact_moments(src: Path, cleaned: Path) -> tuple[dict, dict]:
    """Two-pass moments in extended precision of the rows and values kept."""
    from mlcomp.data.outofcore import Schema

    report = json.loads((cleaned / "report.json").read_text())
    numeric = list(Schema().numeric)
    kept = pd.read_parquet(cleaned / "table", columns=["row_id"])["row_id"]
    raw = pd.read_parquet(src, columns=["row_id", *numeric]).set_index("row_id")
    raw = raw.loc[kept.to_numpy()]
    mean, var = {}, {}
    for column in numeric:
        x = raw[column]
        lo, hi = report["fences"].get(column, (-np.inf, np.inf))
        x = x[x.between(lo, hi)].to_numpy(np.longdouble)
        m = x.sum() / len(x)
        mean[column] = float(m)
        var[column] = float(((x - m) ** 2).sum() / (len(x) - 1))
    return mean, var


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
    return {"wall": wall, "rows": report.rows_in, "mean": report.mean, "var": var}


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
    parser.add_argument("--mode", help=argparse.SUPPRESS)
    parser.add_argument("--src", help=argparse.SUPPRESS)
    parser.add_argument("--dst", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.mode:  # a child: run one configuration, write its result
        src, dst = Path(args.src), Path(args.dst)
        if args.mode == "pandas":
            result = run_pandas(src, dst)
        else:
            result = run_mlcomp(src, dst, int(args.mode))
        Path(args.out).write_text(json.dumps(result))
        return

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
          f"of Parquet, {os.cpu_count()} CPUs", flush=True)  # fmt: skip
    n_pandas = min(args.pandas_partitions, args.partitions)
    configs = [("Dask, 2 workers", "2", "dask-2", src),
               ("Dask, 1 worker", "1", "dask-1", src),
               ("mlcomp, one partition at a time", "0", "serial", src),
               (f"pandas, in memory ({n_pandas} partitions)", "pandas", "pandas",
                None)]  # fmt: skip
    results = {}
    with tempfile.TemporaryDirectory() as work:
        subset = Path(work) / "subset"
        subset.mkdir()
        for f in sorted(src.glob("*.parquet"))[:n_pandas]:
            (subset / f.name).symlink_to(f)
        for label, mode, name, data in configs:
            print(f"running {label} ...", flush=True)
            results[label] = measure(["--mode", mode, "--src", str(data or subset),
                                      "--dst", f"{work}/{name}"])  # fmt: skip
        print("exact moments ...", flush=True)
        mean, var = exact_moments(src, Path(work) / "dask-2")
    rows = []
    for label, (result, peak) in results.items():
        error = "(subset)"
        if "mean" in result:
            worst = max(
                max(abs(result["mean"][c] - mean[c]) / abs(mean[c]),
                    abs(result["var"][c] - var[c]) / var[c])
                for c in mean
            )  # fmt: skip
            error = f"{worst:.1e}"
        rows.append({"configuration": label,
                     "wall s": round(result["wall"], 1),
                     "rows/s": f"{result['rows'] / result['wall']:,.0f}",
                     "peak RSS MiB": round(peak / 2**20),
                     "max rel. error of mean, var": error})  # fmt: skip
    table = pd.DataFrame(rows).set_index("configuration")
    print(table.to_string())


if __name__ == "__main__":
    main()
