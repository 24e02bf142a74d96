"""The one training path behind every door: what to read from the source, and what to do with it.

Training needs three things from the source table: its row count, per-column statistics over
the whole table (``schema.statistics_sql``: distinct counts, NULLs, ranges, which decide each
column's kind and the next free key), and a sample of at most ``max_rows`` rows. All three are
written as SQL over the source, so the SQL door can embed them as scalar subqueries in the query
the caller's connection runs (which sees its TEMP tables, registered DataFrames and ``USE``
schema), and the Python door runs the same SQL on the caller's connection.

The sample is the ``max_rows`` rows of smallest ``hash(row, seed)``, in that order: a uniform
sample that, unlike a reservoir, depends on neither thread count nor scan order, so a seed and a
table give the same training rows in the same order every time.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from .registry import registry_for
from .schema import key_starts, schema_from_statistics, statistics_sql, struct_fields
from .settings import make_config
from .summary import summary

SAMPLE_VIEW = "__ddf_training_sample"


def training_package():
    """The torch half (``duckdb_diffusion.training``), or an error that says how to get it."""
    try:
        from . import training
    except ImportError as error:
        raise ImportError(
            f"training needs torch ({error}); install duckdb-diffusion[train] (see the README)"
        ) from None
    return training


def check_can_train(con: duckdb.DuckDBPyConnection, model_dir: str | None) -> None:
    """Before any row is read: torch is there and the model could be stored."""
    training_package()
    registry_for(con, model_dir).check_writable()


def source_rows_sql(source_sql: str) -> str:
    return f"SELECT count(*) FROM ({source_sql})"


def sample_sql(source_sql: str, max_rows: int, seed: int) -> str:
    """One struct: ``type`` (the rows' DuckDB struct type) and ``rows`` (the sample)."""
    return (
        "SELECT {'type': typeof(list(__row)), 'rows': list(__row ORDER BY __key)} FROM ("
        f"SELECT __row, hash(__row, {int(seed)}) AS __key FROM ({source_sql}) AS __row "
        f"ORDER BY __key LIMIT {int(max_rows)})"
    )


def inputs_sql(source_sql: str, max_rows: int, seed: int) -> list[str]:
    """Row count, statistics and sample, in the order ``train_from`` takes them."""
    return [
        source_rows_sql(source_sql),
        statistics_sql(source_sql),
        sample_sql(source_sql, max_rows, seed),
    ]


def read_inputs(con: duckdb.DuckDBPyConnection, source_sql: str, config, run):
    """Run the three input queries on ``con`` through ``run(con, sql)`` (the Python door)."""
    parts = ", ".join(
        f"({q}) AS c{i}" for i, q in enumerate(inputs_sql(source_sql, config.max_rows, config.seed))
    )
    table = run(con, f"SELECT {parts}").to_arrow_table()
    return (
        table.column(0)[0].as_py(),
        table.column(1).combine_chunks(),
        table.column(2).combine_chunks(),
    )


def train_from(
    con: duckdb.DuckDBPyConnection,
    *,
    name: str,
    source: str,
    rows: int,
    statistics: pa.StructArray,
    sample: pa.StructArray,
    settings: dict,
    model_dir: str | None,
) -> dict:
    """Train on what ``inputs_sql`` read (one-element Arrow arrays), store the model, return
    its summary. ``settings`` may hold ``categorical`` and ``passthrough`` beside the
    ``TrainConfig`` fields."""
    settings = dict(settings)
    categorical = settings.pop("categorical", [])
    passthrough = settings.pop("passthrough", [])
    config = make_config(settings)
    fit_artifact = training_package().fit_artifact
    registry = registry_for(con, model_dir)
    registry.check_writable()
    stats = _first(statistics).as_py()
    sampled = _first(sample)
    row_type = sampled["type"].as_py().removesuffix("[]")
    values = sampled["rows"].values  # None when the table is empty
    cursor = con.cursor()
    try:
        table = _typed_sample(cursor, values, row_type)
        types = list(struct_fields(cursor, row_type).values())
    finally:
        cursor.close()
    columns = schema_from_statistics(
        table.column_names, types, rows, stats, categorical, passthrough
    )
    artifact = fit_artifact(
        table,
        columns,
        name=name,
        source=source,
        config=config,
        source_rows=rows,
        keys=key_starts(columns, stats),
    )
    registry.save(artifact)
    return summary(artifact)


def _first(array):
    """The first value of a one-value Arrow argument (UDFs may get a ChunkedArray)."""
    return array.chunk(0)[0] if isinstance(array, pa.ChunkedArray) else array[0]


def _typed_sample(cursor, values: pa.StructArray | None, row_type: str) -> pa.Table:
    """The sampled rows with the source's exact DuckDB types (Arrow alone would turn e.g.
    HUGEINT into DECIMAL): cast back to the struct type DuckDB reported for them."""
    cast = f"CAST(__r AS {row_type})"
    if values is None or len(values) == 0:
        return cursor.sql(f"SELECT unnest(CAST(NULL AS {row_type})) LIMIT 0").to_arrow_table()
    cursor.register(SAMPLE_VIEW, pa.table({"__r": values}))
    try:
        return cursor.sql(f"SELECT unnest({cast}) FROM {SAMPLE_VIEW}").to_arrow_table()
    finally:
        cursor.unregister(SAMPLE_VIEW)
