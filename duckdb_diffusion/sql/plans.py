"""The SQL each function expands to: built here once, run by the SQL door (through ``query()``
in the caller's context) and by the Python door (``con.sql``) alike.

    impute:      SELECT * EXCLUDE (__ddf) REPLACE (coalesce("c", cast_to_type(__ddf."c", "c")) ...)
                 FROM (SELECT * EXCLUDE (__ddf_checked),
                              ddf_impute_<sig>(struct_pack("c" := TRY_CAST("c" AS <trained>)),
                                               seed, draws, __ddf_checked, ...) AS __ddf
                       FROM (SELECT *, ddf_check_columns(digest, ..., typeof(__ddf_row))
                                       AS __ddf_checked FROM <tbl> AS __ddf_row))
    imputations: SELECT 1 AS _imputation, * FROM (<impute, copy 1>) UNION ALL ... (copy m)
    synthesize:  SELECT unnest(ddf_synthesize_<sig>(range, seed, digest, ..., given, n))
                 FROM range(n)
    train:       SELECT <typed summary> FROM (SELECT unnest(ddf_train(..., (row count),
                 (statistics), (sample))))

Why the impute query has this shape:
- The table is only named here, never inspected by us: DuckDB binds it where the user called
  the function, so whatever ``SELECT * FROM <tbl>`` would see there is what gets imputed.
- ``typeof(__ddf_row)`` (the source's row type, every column's name and type) is folded to a
  constant while DuckDB plans the query, so ``ddf_check_columns`` (a plain scalar UDF of
  constants) runs then, before any row is read: a column that changed kind (numbers now
  text) is a named error. (An empty table may be planned away before it runs: nothing to fill.)
- A modelled column missing from the table fails in DuckDB's binder ("Referenced column "c"
  not found"), which names the column and the call. Making it reach the check instead (an
  empty ``UNION ALL BY NAME`` adding it) was tried: it binds, but the union's supertypes turn
  the table's own types into the trained ones (DECIMAL into DOUBLE, ENUM into VARCHAR).
- The model reads each cell in the type it was trained on (``TRY_CAST``: a value that does
  not fit counts as unobserved for the model), and the result takes the table's own types
  (``cast_to_type``), with every non-NULL cell returned as it was (``coalesce``).
"""

from __future__ import annotations

from .. import summary
from ..prepare import Prepared
from ..schema import PASSTHROUGH
from ..source import sql_identifier, sql_literal

CHECK_FUNCTION = "ddf_check_columns"
TRAIN_FUNCTION = "ddf_train"


def impute_sql(prepared: Prepared, function: str) -> str:
    """The completed table; with ``imputations`` m, m of them stacked in long format under a
    leading ``_imputation`` column 1..m (as R's ``mice::complete(action = "long")``), each
    copy in the table's row order (UNION ALL keeps its inputs' order)."""
    if prepared.imputations is None:
        return _completed_sql(prepared, function, copy=0)
    copies = [
        f"SELECT {c}::INTEGER AS _imputation, * FROM ({_completed_sql(prepared, function, c)})"
        for c in range(1, prepared.imputations + 1)
    ]
    return " UNION ALL ".join(copies)


def _completed_sql(prepared: Prepared, function: str, copy: int) -> str:
    model = prepared.model
    modelled = [c for c in model.columns if c.kind != PASSTHROUGH]
    names = [sql_identifier(c.name) for c in modelled]
    check = (
        f"{CHECK_FUNCTION}({_text(model.artifact.digest)}, {_text(prepared.source.text)}, "
        f"{_text(model.name)}, {_list(c.name for c in modelled)}, "
        f"{_list(c.duckdb_type for c in modelled)}, typeof(__ddf_row))"
    )
    packed = ", ".join(
        f"{n} := TRY_CAST({n} AS {c.duckdb_type})" for n, c in zip(names, modelled, strict=True)
    )
    call = (
        f"{function}(struct_pack({packed}), {int(prepared.seed)}, {int(prepared.draws)}, "
        f"__ddf_checked, {_text(model.name)}, {_text(prepared.model_dir)}, {int(copy)})"
    )
    replaced = ", ".join(f"coalesce({n}, cast_to_type(__ddf.{n}, {n})) AS {n}" for n in names)
    return (
        f"SELECT * EXCLUDE (__ddf) REPLACE ({replaced}) FROM ("
        f"SELECT * EXCLUDE (__ddf_checked), {call} AS __ddf FROM ("
        f"SELECT *, {check} AS __ddf_checked FROM ({prepared.source.sql}) AS __ddf_row))"
    )


def synthesize_sql(prepared: Prepared, function: str) -> str:
    model = prepared.model
    digest, name = _text(model.artifact.digest), _text(model.name)
    return (
        f"SELECT unnest({function}(range, {int(prepared.seed)}, {digest}, {name}, "
        f"{_text(prepared.model_dir)}, {_text(prepared.given_json)}, {int(prepared.n)})) "
        f"FROM range({int(prepared.n)})"
    )


def train_sql(
    *,
    name: str,
    source: str,
    settings_json: str,
    model_dir: str | None,
    inputs: list[str],
) -> str:
    """``inputs``: the row count, statistics and sample queries (``fitting.inputs_sql``)."""
    args = [_text(name), _text(source), _text(settings_json), _text(model_dir)]
    args += [f"({query})" for query in inputs]
    call = f"{TRAIN_FUNCTION}({', '.join(args)})"
    # unnest() of a VOLATILE call repeats the call once per struct field (measured: DuckDB
    # does not share volatile expressions), so the call is made once, in a subquery.
    once = f"SELECT unnest(__summary) FROM (SELECT {call} AS __summary)"
    return f"SELECT {summary.casts()} FROM ({once})"


def _text(value: str | None) -> str:
    """A text argument; NULL typed, so a UDF's signature still matches."""
    return "NULL::VARCHAR" if value is None else sql_literal(str(value))


def _list(values) -> str:
    return "[" + ", ".join(_text(v) for v in values) + "]::VARCHAR[]"
