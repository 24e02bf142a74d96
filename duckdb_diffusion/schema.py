"""Column kinds: which columns the model learns, and how, decided from DuckDB types and statistics.

A column is one of five kinds:

- ``numeric``: integers, floats, decimals. Modelled through a quantile-normal transform.
- ``temporal``: DATE and TIMESTAMP columns, modelled as numbers (days or microseconds).
- ``categorical``: text, ENUM and BOOLEAN columns with few enough distinct values.
- ``passthrough``: everything the model cannot or should not learn: ids and keys,
  high-cardinality text, nested types, BLOBs. Imputation leaves them untouched.

The decision is kept as data (``ColumnSpec``) inside the model, so the runtime never has to
guess again, and so a table that drifted from what the model knows can be named precisely.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass

import duckdb

NUMERIC = "numeric"
TEMPORAL = "temporal"
CATEGORICAL = "categorical"
PASSTHROUGH = "passthrough"

INTEGER_TYPES = {
    "TINYINT",
    "SMALLINT",
    "INTEGER",
    "BIGINT",
    "HUGEINT",
    "UTINYINT",
    "USMALLINT",
    "UINTEGER",
    "UBIGINT",
    "UHUGEINT",
}
FLOAT_TYPES = {"FLOAT", "DOUBLE"}
TEMPORAL_TYPES = {"DATE", "TIMESTAMP", "TIMESTAMP_S", "TIMESTAMP_MS", "TIMESTAMP_NS"}
TEXT_TYPES = {"VARCHAR"}

# A text column with more distinct values than this is free text or an identifier.
MAX_CATEGORIES = 1000


@dataclass(frozen=True)
class ColumnSpec:
    """One column as the model sees it: its name, DuckDB type, kind and why."""

    name: str
    duckdb_type: str
    kind: str
    integral: bool = False
    reason: str = ""

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict) -> ColumnSpec:
        return cls(**data)


def base_type(duckdb_type: str) -> str:
    """'DECIMAL(10,2)' -> 'DECIMAL'; 'TIMESTAMP WITH TIME ZONE' -> 'TIMESTAMPTZ'."""
    upper = duckdb_type.upper().strip()
    if upper == "TIMESTAMP WITH TIME ZONE":
        return "TIMESTAMPTZ"
    return re.split(r"[\s(]", upper, maxsplit=1)[0]


def classify(
    name: str,
    duckdb_type: str,
    rows: int,
    distinct: int,
    is_dense_unique_integer: bool,
) -> ColumnSpec:
    """Decide a column's kind from its type and statistics, with a reason a user can read."""
    kind_type = base_type(duckdb_type)
    if kind_type in INTEGER_TYPES:
        if is_dense_unique_integer:
            return ColumnSpec(name, duckdb_type, PASSTHROUGH, reason="unique integer key")
        return ColumnSpec(name, duckdb_type, NUMERIC, integral=True)
    if kind_type in FLOAT_TYPES or kind_type == "DECIMAL":
        return ColumnSpec(name, duckdb_type, NUMERIC)
    if kind_type in TEMPORAL_TYPES or kind_type == "TIMESTAMPTZ":
        return ColumnSpec(name, duckdb_type, TEMPORAL, integral=True)
    if kind_type in ("BOOLEAN", "ENUM"):
        return ColumnSpec(name, duckdb_type, CATEGORICAL)
    if kind_type in TEXT_TYPES:
        if distinct > MAX_CATEGORIES:
            return ColumnSpec(
                name, duckdb_type, PASSTHROUGH, reason=f"{distinct} distinct values (free text)"
            )
        if rows >= 20 and distinct > 0.5 * rows:
            return ColumnSpec(name, duckdb_type, PASSTHROUGH, reason="mostly unique text (an id)")
        return ColumnSpec(name, duckdb_type, CATEGORICAL)
    return ColumnSpec(name, duckdb_type, PASSTHROUGH, reason=f"type {duckdb_type} is not modelled")


def infer_schema(
    relation: duckdb.DuckDBPyRelation,
    categorical: list[str] | tuple[str, ...] = (),
    passthrough: list[str] | tuple[str, ...] = (),
) -> list[ColumnSpec]:
    """Classify every column of ``relation``; ``categorical``/``passthrough`` override by name."""
    names = relation.columns
    types = [str(t) for t in relation.types]
    unknown = [c for c in (*categorical, *passthrough) if c not in names]
    if unknown:
        raise ValueError(
            f"columns {unknown} given as categorical/passthrough are not in the table "
            f"(its columns are {names})"
        )
    stats = _column_statistics(relation, names, types)
    specs = []
    for name, duckdb_type in zip(names, types, strict=True):
        rows, distinct, dense_unique = stats[name]
        if name in passthrough:
            spec = ColumnSpec(name, duckdb_type, PASSTHROUGH, reason="chosen by the user")
        elif name in categorical:
            spec = ColumnSpec(name, duckdb_type, CATEGORICAL, reason="chosen by the user")
        else:
            spec = classify(name, duckdb_type, rows, distinct, dense_unique)
        specs.append(spec)
    return specs


def _column_statistics(
    relation: duckdb.DuckDBPyRelation, names: list[str], types: list[str]
) -> dict[str, tuple[int, int, bool]]:
    """Row count, approximate distinct count and 'dense unique integer' flag per column."""
    from sqlglot import exp

    selects = [exp.func("count_star").as_("__rows")]
    for i, (name, duckdb_type) in enumerate(zip(names, types, strict=True)):
        col = exp.column(name, quoted=True)
        kind_type = base_type(duckdb_type)
        if kind_type in INTEGER_TYPES or kind_type in TEXT_TYPES:
            selects.append(exp.func("approx_count_distinct", col).as_(f"d{i}"))
            selects.append(exp.func("count", col).as_(f"n{i}"))
        if kind_type in INTEGER_TYPES:
            span = exp.Sub(
                this=exp.cast(exp.func("max", col), "DOUBLE"),
                expression=exp.cast(exp.func("min", col), "DOUBLE"),
            )
            selects.append(span.as_(f"s{i}"))
    query = exp.select(*selects).from_("__source").sql(dialect="duckdb")
    row = relation.query("__source", query).fetchall()[0]
    values = dict(zip([s.alias for s in selects], row, strict=True))
    rows = int(values["__rows"])
    stats = {}
    for i, name in enumerate(names):
        distinct = int(values.get(f"d{i}") or 0)
        non_null = int(values.get(f"n{i}") or 0)
        span = values.get(f"s{i}")
        # approx_count_distinct errs by a few percent, so 'unique' allows that slack.
        dense_unique = (
            span is not None
            and rows >= 20
            and non_null == rows
            and distinct >= 0.97 * rows
            and span + 1 <= 1.5 * rows
        )
        stats[name] = (rows, distinct, dense_unique)
    return stats
