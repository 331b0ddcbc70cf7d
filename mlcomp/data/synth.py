"""A large table with known defects, written as partitioned Parquet.

:func:`make_table` writes ``partitions`` Parquet files of ``rows_per_partition``
rows each, partition by partition, so the table can be far larger than memory.
Everything is determined by ``seed``: partition ``p`` draws from
``numpy.random.default_rng([seed, p])``, so any partition can be regenerated
alone. Beside every row the generator keeps the truth — which values it
removed, which it corrupted into outliers, which rows are exact or near copies
of which — in a second Parquet data set, so that a cleaning pipeline can be
scored (precision and recall) rather than eyeballed.

The columns:

* ``row_id`` (int64) — the row's number in the table, unique;
  ``user`` (string) — a key for splits (several rows per user);
* ``age`` (normal, clipped to 18–90), ``income`` (log-normal: skewed),
  ``score`` (a mixture of two normals: bimodal) — the columns that carry
  missing values and outliers;
* ``sensor`` — ``1e9`` plus unit normal noise: a magnitude far from zero,
  where the textbook variance formula fails;
* ``comment`` — a short text; near duplicates differ from their original by
  one changed word.

Defects, each at its own rate: missing values (``NaN``, completely at random)
in ``age``, ``income`` and ``score``; outliers in the same columns (the value
multiplied by 5–20, or, for ``score``, moved 15 standard deviations); exact
duplicates (a copy of an earlier row of the same partition, with its own
``row_id``); near duplicates (a copy with one word of the comment changed).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pandas as pd

__all__ = ["Defects", "make_table", "table_truth", "read_manifest"]

NUMERIC = ("age", "income", "score")
_WORDS = (
    "fast delivery great price poor quality would buy again broken on arrival "
    "works as described too small too large excellent support late refund "
    "recommended not recommended battery lasts screen bright sound clear "
    "cheap sturdy flimsy heavy light quiet loud warm cold soft hard smooth rough "
    "easy setup difficult manual missing parts extra cable charger box packaging "
    "damaged perfect fit color faded scratched shiny elegant ugly comfortable "
    "tight loose size colour red blue black white green grey silver gold pink "
    "gift kids parents office kitchen garden travel daily weekly monthly once "
    "twice never always sometimes slow quick noisy reliable unreliable value "
    "money waste worth every penny expensive budget premium basic advanced "
    "button switch lid handle strap zipper pocket wheel motor blade filter "
    "seller courier store website app update firmware instructions warranty"
).split()
_WORDS = list(dict.fromkeys(_WORDS))  # each word once, in order


@dataclasses.dataclass(frozen=True)
class Defects:
    """Rates of the injected defects (fractions of rows or of values).

    >>> Defects(missing=0.1).outliers
    0.01
    >>> Defects(exact_duplicates=0.6)
    Traceback (most recent call last):
    ...
    ValueError: exact_duplicates rate must be in [0, 0.5), got 0.6
    """

    missing: float = 0.05  # per value of age, income, score
    outliers: float = 0.01  # per value of age, income, score
    exact_duplicates: float = 0.02  # per row
    near_duplicates: float = 0.01  # per row

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            rate = getattr(self, field.name)
            if not 0.0 <= rate < 0.5:
                raise ValueError(f"{field.name} rate must be in [0, 0.5), got {rate}")
        if self.exact_duplicates + self.near_duplicates >= 0.5:
            raise ValueError("duplicates must stay below half of the rows")


def _comments(rng: np.random.Generator, n: int) -> np.ndarray:
    words = rng.integers(0, len(_WORDS), size=(n, 8))
    vocab = np.array(_WORDS, dtype=object)
    return np.array([" ".join(row) for row in vocab[words]], dtype=object)


def _partition(seed: int, p: int, rows: int, defects: Defects):
    """One partition and its truth, as two DataFrames."""
    rng = np.random.default_rng([seed, p])
    n_copies = int(rows * (defects.exact_duplicates + defects.near_duplicates))
    n_orig = rows - n_copies
    df = pd.DataFrame(
        {
            "user": np.char.add(
                "u", rng.integers(0, max(rows // 4, 1), n_orig).astype(str)
            ),
            "age": np.clip(rng.normal(40, 12, n_orig), 18, 90).round(1),
            "income": rng.lognormal(10.5, 0.6, n_orig).round(2),
            "score": np.where(
                rng.random(n_orig) < 0.7,
                rng.normal(60, 8, n_orig),
                rng.normal(85, 4, n_orig),
            ).round(2),  # fmt: skip
            "sensor": 1e9 + rng.normal(0, 1, n_orig),
            "comment": _comments(rng, n_orig),
        }
    )
    truth = pd.DataFrame(index=range(n_orig))
    # outliers and missing values, on the originals (copies inherit them)
    for column in NUMERIC:
        bad = rng.random(n_orig) < defects.outliers
        values = df[column].to_numpy().copy()
        if column == "score":
            values[bad] += rng.choice([-1, 1], bad.sum()) * 15 * 8
        else:
            values[bad] *= rng.uniform(5, 20, bad.sum())
        missing = (rng.random(n_orig) < defects.missing) & ~bad
        values[missing] = np.nan
        df[column] = values
        truth[f"{column}_outlier"] = bad
        truth[f"{column}_missing"] = missing
    truth["duplicate_of"] = -1  # row_id of the original, for exact copies
    truth["near_duplicate_of"] = -1
    # copies of earlier rows of this partition
    n_exact = int(rows * defects.exact_duplicates)
    sources = rng.integers(0, n_orig, n_copies)
    copies = df.iloc[sources].reset_index(drop=True)
    copy_truth = truth.iloc[sources].reset_index(drop=True)
    near = np.arange(n_copies) >= n_exact
    if near.any():
        changed = copies.loc[near, "comment"].str.split(" ")
        slot = rng.integers(0, 8, near.sum())
        word = rng.integers(0, len(_WORDS), near.sum())
        copies.loc[near, "comment"] = [
            " ".join(
                w[:s] + [_WORDS[x] if _WORDS[x] != w[s] else "changed"] + w[s + 1 :]
            )
            for w, s, x in zip(changed, slot, word, strict=True)
        ]
    # interleave: each copy goes after its source, at a random later position
    order = np.r_[np.arange(n_orig), rng.integers(sources, n_orig) + 0.5]
    order = np.argsort(order, kind="stable")
    table = (
        pd.concat([df, copies], ignore_index=True).iloc[order].reset_index(drop=True)
    )
    first = p * rows
    row_ids = np.arange(first, first + rows)
    # the row_id of each row's original, in the final order
    original_pos = np.r_[np.arange(n_orig), sources]
    position_of = np.empty(rows, np.int64)
    position_of[order] = np.arange(rows)
    source_ids = row_ids[position_of[original_pos]]
    is_copy = np.r_[np.zeros(n_orig, bool), np.ones(n_copies, bool)]
    is_near = np.r_[np.zeros(n_orig, bool), near]
    truth = pd.concat([truth, copy_truth], ignore_index=True)
    truth["duplicate_of"] = np.where(is_copy & ~is_near, source_ids, -1)
    truth["near_duplicate_of"] = np.where(is_near, source_ids, -1)
    truth = truth.iloc[order].reset_index(drop=True)
    table.insert(0, "row_id", row_ids)
    truth.insert(0, "row_id", row_ids)
    return table, truth


def make_table(
    path: str | os.PathLike,
    rows_per_partition: int = 100_000,
    partitions: int = 4,
    seed: int = 0,
    defects: Defects = Defects(),
    compression: str = "zstd",
    progress: bool = False,
) -> Path:
    """Write the table to ``path/table/`` and its truth to ``path/truth/`` (Parquet).

    Returns ``path``. A ``manifest.json`` records the arguments, so a reader
    knows what it is scoring against. Existing files of another table are
    replaced.

    >>> import tempfile
    >>> root = make_table(tempfile.mkdtemp(), rows_per_partition=1000, partitions=2)
    >>> table = pd.read_parquet(root / "table")
    >>> len(table), table["row_id"].is_unique
    (2000, True)
    """
    from tqdm import tqdm

    if rows_per_partition < 10 or partitions < 1:
        raise ValueError("need at least 10 rows per partition and one partition")
    root = Path(path)
    for sub in ("table", "truth"):
        (root / sub).mkdir(parents=True, exist_ok=True)
        for old in (root / sub).glob("part-*.parquet"):
            old.unlink()
    for p in tqdm(range(partitions), desc="writing partitions", disable=not progress):
        table, truth = _partition(seed, p, rows_per_partition, defects)
        name = f"part-{p:05d}.parquet"
        for frame, sub in ((table, "table"), (truth, "truth")):  # CRC per page
            frame.to_parquet(root / sub / name, index=False, compression=compression,
                             write_page_checksum=True)  # fmt: skip
    manifest = {
        "rows_per_partition": rows_per_partition,
        "partitions": partitions,
        "seed": seed,
        "defects": dataclasses.asdict(defects),
        "compression": compression,
    }
    (root / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return root


def read_manifest(path: str | os.PathLike) -> dict:
    """The arguments a table was generated with; a clear error if it is not one.

    >>> read_manifest("/nonexistent")
    Traceback (most recent call last):
    ...
    FileNotFoundError: /nonexistent holds no generated table (no manifest.json); ...
    """
    manifest = Path(path) / "manifest.json"
    if not manifest.is_file():
        raise FileNotFoundError(
            f"{path} holds no generated table (no manifest.json); "
            "create one with mlcomp.data.synth.make_table"
        )
    return json.loads(manifest.read_text())


def table_truth(path: str | os.PathLike) -> pd.DataFrame:
    """The truth of a generated table, all partitions, indexed by ``row_id``.

    >>> import tempfile
    >>> root = make_table(tempfile.mkdtemp(), rows_per_partition=1000, partitions=1)
    >>> truth = table_truth(root)
    >>> int((truth["duplicate_of"] >= 0).sum()), int(truth["age_missing"].sum()) > 0
    (20, True)
    """
    read_manifest(path)
    return pd.read_parquet(Path(path) / "truth").set_index("row_id")
