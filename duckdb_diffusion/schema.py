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

from .source import SourceError

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


def statistics_sql(source_sql: str) -> str:
    """One row, one struct: per column, its approximate distinct count, non-NULL count and
    min / max as text, over the whole of ``source_sql`` (columns need not be known: DuckDB
    expands ``COLUMNS(*)`` in the caller's context, which is what lets a SQL door run this on
    a TEMP table or a registered DataFrame it cannot see itself)."""
    return (
        "SELECT __stats FROM (SELECT {'distinct': approx_count_distinct(COLUMNS(*)), "
        "'count': count(COLUMNS(*)), 'low': min(COLUMNS(*))::VARCHAR, "
        f"'high': max(COLUMNS(*))::VARCHAR}} FROM ({source_sql})) AS __stats"
    )


def infer_schema(
    relation: duckdb.DuckDBPyRelation,
    categorical: list[str] | tuple[str, ...] = (),
    passthrough: list[str] | tuple[str, ...] = (),
) -> list[ColumnSpec]:
    """Classify every column of ``relation`` (statistics computed here)."""
    rows = relation.aggregate("count(*)").fetchall()[0][0]
    stats = relation.query("__source", statistics_sql("SELECT * FROM __source")).fetchall()[0][0]
    types = [str(t) for t in relation.types]
    return schema_from_statistics(relation.columns, types, rows, stats, categorical, passthrough)


def schema_from_statistics(
    names: list[str],
    types: list[str],
    rows: int,
    stats: dict,
    categorical: list[str] | tuple[str, ...] = (),
    passthrough: list[str] | tuple[str, ...] = (),
) -> list[ColumnSpec]:
    """Classify every column from ``statistics_sql``'s row; ``categorical``/``passthrough``
    override by name."""
    unknown = [c for c in (*categorical, *passthrough) if c not in names]
    if unknown:
        raise ValueError(
            f"columns {unknown} given as categorical/passthrough are not in the table "
            f"(its columns are {names})"
        )
    specs = []
    for name, duckdb_type in zip(names, types, strict=True):
        if name in passthrough:
            spec = ColumnSpec(name, duckdb_type, PASSTHROUGH, reason="chosen by the user")
        elif name in categorical:
            spec = ColumnSpec(name, duckdb_type, CATEGORICAL, reason="chosen by the user")
        else:
            column = stats[name]
            spec = classify(
                name,
                duckdb_type,
                rows,
                int(column["distinct"] or 0),
                _dense_unique(duckdb_type, rows, column),
            )
        specs.append(spec)
    return specs


def key_starts(columns: list[ColumnSpec], stats: dict) -> dict:
    """First fresh value of each integer key column (over the whole source, not the sample),
    so synthetic keys never collide with real ones."""
    keys = [c for c in columns if c.kind == PASSTHROUGH and c.reason == "unique integer key"]
    return {c.name: int(stats[c.name]["high"]) + 1 for c in keys if stats[c.name]["high"]}


def _dense_unique(duckdb_type: str, rows: int, column: dict) -> bool:
    """An integer column with a distinct non-NULL value in (nearly) every row, spanning about
    as many values as rows: a key. approx_count_distinct errs by a few percent, hence slack."""
    if base_type(duckdb_type) not in INTEGER_TYPES or column["low"] is None:
        return False
    span = float(column["high"]) - float(column["low"])
    distinct = int(column["distinct"] or 0)
    return (
        rows >= 20
        and int(column["count"]) == rows
        and distinct >= 0.97 * rows
        and span + 1 <= 1.5 * rows
    )


def type_family(duckdb_type: str) -> str:
    """What kind of values a DuckDB type holds, for telling a widened column (INTEGER ->
    BIGINT -> DOUBLE, DECIMAL; VARCHAR <-> ENUM) from one that changed kind."""
    kind_type = base_type(duckdb_type)
    if kind_type in INTEGER_TYPES or kind_type in FLOAT_TYPES or kind_type == "DECIMAL":
        return "number"
    if kind_type in TEMPORAL_TYPES or kind_type in ("TIMESTAMPTZ", "TIMESTAMP_US"):
        return "date/time"
    if kind_type in TEXT_TYPES or kind_type == "ENUM":
        return "text"
    if kind_type == "BOOLEAN":
        return "boolean"
    return kind_type.lower()


def struct_fields(con: duckdb.DuckDBPyConnection, struct_type: str) -> dict[str, str]:
    """Field name -> DuckDB type of a ``STRUCT(...)`` type as ``typeof`` writes it; DuckDB
    parses its own type strings (quoted names, nested types), so this asks it."""
    relation = con.sql(f"SELECT unnest(CAST(NULL AS {struct_type}))")
    return dict(zip(relation.columns, [str(t) for t in relation.types], strict=True))


class ColumnMismatch(SourceError):
    """A table no longer has what its model learned: a column is gone or changed kind."""


def check_columns(
    table: str, model: str, names: list[str], trained: list[str], found: dict[str, str]
) -> None:
    """The modelled columns ``names`` (types ``trained``) against the table's columns
    (``found``: name -> DuckDB type; through SQL a missing column already failed in DuckDB's
    binder). Any numeric type may replace any other, ENUM
    and VARCHAR each other, DATE and TIMESTAMPs each other: the model reads the value in its
    trained type and the result keeps the table's. Any other change is an error."""
    missing, changed = [], []
    for name, was in zip(names, trained, strict=True):
        now = found.get(name)
        if now is None:
            missing.append(name)
        elif type_family(was) != type_family(now):
            changed.append(
                f"{name} ({was} in the model, {now} now: {type_family(now)} "
                f"instead of {type_family(was)})"
            )
    if missing or changed:
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if changed:
            problems.append(f"columns of another kind: {', '.join(changed)}")
        raise ColumnMismatch(
            f"table {table!r} no longer matches model {model!r}: {'; '.join(problems)}. "
            f"Retrain the model on the table as it is now, or select the columns it was "
            f"trained on with a (SELECT ...)."
        )


def check_model_columns(table: str, model, names: list[str], types: list[str]) -> None:
    """``check_columns`` for a loaded model against a table's column names and types."""
    modelled = [c for c in model.columns if c.kind != PASSTHROUGH]
    check_columns(
        table,
        model.name,
        [c.name for c in modelled],
        [c.duckdb_type for c in modelled],
        dict(zip(names, types, strict=True)),
    )
