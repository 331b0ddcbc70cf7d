"""Checking one partition against a schema: usable rows, quarantine, counts.

The first step of the cleaning pipeline (:func:`mlcomp.data.outofcore.clean_table`)
and usable on its own: :func:`validate` converts numeric columns, parses
numbers stored as text, quarantines the rows that cannot be used (with the
reason) and drops exact duplicates, counting everything it does.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd

from mlcomp.data.clean import exact_duplicates

__all__ = ["Schema", "validate", "read_partition"]


@dataclasses.dataclass(frozen=True)
class Schema:
    """The columns a table must have, and what the pipeline does with each.

    ``key``: a unique integer per row (sampling and the truth use it);
    ``numeric``: parsed as float64, filled and standardized; ``outliers``: the
    numeric columns screened by Tukey's fences; ``text``: kept as strings.
    Other columns pass through untouched. The defaults describe the table of
    :func:`mlcomp.data.synth.make_table`.

    >>> Schema().columns
    ('row_id', 'age', 'income', 'score', 'sensor', 'user', 'comment')
    >>> Schema(outliers=("height",))
    Traceback (most recent call last):
    ...
    ValueError: outlier columns ['height'] are not numeric columns
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


def empty_counts() -> dict:
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
    counts = empty_counts()
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

    raw_key = frame[schema.key]
    if pd.api.types.is_integer_dtype(raw_key) and not pd.api.types.is_bool_dtype(
        raw_key
    ):
        over = raw_key.astype(object) > np.iinfo(np.int64).max  # uint64 keys
        flag(over, f"{schema.key} is out of the exactly representable range")
        key = raw_key.where(~over, 0).astype("Int64")
        whole = key.notna() & ~over
    else:  # floats and text: an integer only where float64 holds it exactly
        key = pd.to_numeric(raw_key, errors="coerce").astype(np.float64)
        whole = key.notna() & np.isfinite(key) & (key == np.round(key))
        big = whole & (key.abs() > 2.0**53)
        flag(big, f"{schema.key} is out of the exactly representable range")
        whole &= ~big
    flag(~whole, f"{schema.key} is missing or not an integer")
    if frame[schema.key].dtype != np.int64:
        counts["coerced"].append(f"{name}: {schema.key} {frame[schema.key].dtype}")
    out[schema.key] = key.where(whole, 0).astype(np.int64)
    taken = out[schema.key].where(whole).duplicated(keep="first") & whole
    flag(taken, f"{schema.key} repeats an earlier row's key")
    for column in schema.numeric:
        raw = frame[column]
        if (
            pd.api.types.is_bool_dtype(raw)
            or pd.api.types.is_datetime64_any_dtype(raw)
            or isinstance(raw.dtype, pd.DatetimeTZDtype)
        ):
            raise ValueError(
                f"{name}: numeric column {column!r} holds {raw.dtype} values, not "
                "numbers; convert it before cleaning or list it among the text columns"
            )
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


def add_counts(total: dict, part: dict) -> dict:
    for field in ("partitions", "rows_in", "duplicates"):
        total[field] += part[field]
    for field in ("empty_partitions", "coerced"):
        total[field] += part[field]
    for why, n in part["quarantined"].items():
        total["quarantined"][why] = total["quarantined"].get(why, 0) + n
    return total


def read_partition(path: str) -> pd.DataFrame:
    """One Parquet partition; a file that is not Parquet is a ValueError naming it.

    >>> import tempfile
    >>> bad = Path(tempfile.mkdtemp()) / "part-0.parquet"
    >>> _ = bad.write_bytes(b"not parquet")
    >>> read_partition(bad)
    Traceback (most recent call last):
    ...
    ValueError: part-0.parquet: cannot be read as Parquet (...); the file is ...
    """
    try:
        # pages written with a CRC (clean_table and make_table write them) are
        # verified: a flipped bit is an error here, not a silently changed row
        return pd.read_parquet(path, page_checksum_verification=True)
    except Exception as err:  # pyarrow's and pandas' many types: one error here
        raise ValueError(
            f"{Path(path).name}: cannot be read as Parquet ({err}); the file is "
            "corrupt, truncated or not Parquet — regenerate or remove it"
        ) from err
