"""The Python door: ``train``, ``impute``, ``synthesize`` and friends on a DuckDB connection.

A thin door onto the shared core: the arguments are checked by ``arguments``, the call is
prepared by ``prepare`` and run as the same SQL the SQL functions expand to (``sql.plans``),
on the caller's own connection, so a TEMP table, a registered DataFrame or the schema chosen
with ``USE`` is found exactly as ``SELECT * FROM <table>`` would find it.
"""

from __future__ import annotations

import os
import sys

import duckdb
import numpy as np
import pyarrow as pa

from . import arguments, fitting, prepare
from .loading import load_model
from .registry import DatabaseRegistry, DirectoryRegistry
from .runtime import DEFAULT_DRAWS
from .schema import check_model_columns as check_columns
from .settings import config_of
from .sql import after_training, ensure_functions, plans
from .summary import summary

BATCH_ROWS = 65_536
model_name = prepare.model_name
__all__ = [
    "export_model",
    "import_model",
    "impute",
    "impute_batches",
    "load_model",
    "models",
    "synthesize",
    "train",
]


def train(
    con: duckdb.DuckDBPyConnection,
    table: str,
    model: str | None = None,
    *,
    categorical: list[str] | tuple[str, ...] = (),
    passthrough: list[str] | tuple[str, ...] = (),
    model_dir: str | None = None,
    **settings,
) -> dict:
    """Train a model on ``table`` (a name, a path or a parenthesised SELECT) and store it as
    ``model``. ``settings`` are fields of ``TrainConfig`` (seed, max_seconds, ...). Returns the
    model's summary. Needs the ``train`` extra (torch)."""
    settings = arguments.column_choices(
        {**settings, "categorical": categorical, "passthrough": passthrough}
    )
    config = config_of(settings)  # every setting checked before the table
    source, name = prepare.source_and_name(table, model)
    return train_source(
        con,
        source.sql,
        name=name,
        label=table,
        settings=settings,
        model_dir=model_dir,
        config=config,
    )


def train_source(
    con: duckdb.DuckDBPyConnection,
    source_sql: str,
    *,
    name: str,
    label: str,
    settings: dict,
    model_dir: str | None,
    config=None,
    rows: int | None = None,
) -> dict:
    """Train ``name`` on the rows of ``source_sql``, recorded as coming from ``label``: the
    body of ``train``, also used by the Spark and Ray doors on the sample they drew (``rows``:
    the size of the table it was drawn from, when that is not the sample's)."""
    config = config or config_of(settings)
    fitting.check_can_train(con, model_dir)
    counted, statistics, sample = fitting.read_inputs(con, source_sql, config, caller_sql)
    info = fitting.train_from(
        con,
        name=name,
        source=label,
        rows=counted if rows is None else rows,
        statistics=statistics,
        sample=sample,
        settings=settings,
        model_dir=model_dir,
    )
    after_training(con, name, model_dir)
    return info


def impute(
    con: duckdb.DuckDBPyConnection,
    table: str,
    model: str | None = None,
    *,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    imputations: int | None = None,
    model_dir: str | None = None,
) -> duckdb.DuckDBPyRelation:
    """``table`` with every NULL of a modelled column filled; all else as it was, in order.
    With ``imputations=m``, m completed copies stacked under a leading ``_imputation`` column
    (1..m), each NULL an independent posterior draw in each copy.

    A lazy relation on ``con``: it streams when read (a table larger than memory works) and
    runs again each time it is read; keep a result with ``.create("name")``."""
    prepared, _ = _checked_impute(con, table, model, seed, draws, imputations, model_dir)
    impute_name, _ = ensure_functions(con, prepared.model)
    return caller_sql(con, plans.impute_sql(prepared, impute_name))


def impute_batches(
    con: duckdb.DuckDBPyConnection,
    table: str,
    model: str | None = None,
    *,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    imputations: int | None = None,
    batch_rows: int = BATCH_ROWS,
    model_dir: str | None = None,
) -> pa.RecordBatchReader:
    """The imputed table as Arrow record batches of up to ``batch_rows`` rows, each handed to
    the model whole (no 2,048-row UDF calls: the path for large batches and for a GPU). The
    table is read on ``con``, which is busy until the reader is drained; with
    ``imputations=m`` it is read m times, once per copy."""
    batch_rows = arguments.batch_rows(batch_rows)
    prepared, relation = _checked_impute(con, table, model, seed, draws, imputations, model_dir)
    loaded = prepared.model
    if prepared.imputations is None:
        reader = relation.to_arrow_reader(batch_rows)
        batches = (loaded.impute_batch(b, prepared.seed, prepared.draws) for b in reader)
        return pa.RecordBatchReader.from_batches(reader.schema, batches)
    schema = pa.schema([pa.field("_imputation", pa.int32()), *relation.to_arrow_reader(1).schema])

    def copies():
        for copy in range(1, prepared.imputations + 1):
            for batch in relation.to_arrow_reader(batch_rows):
                filled = loaded.impute_batch(batch, prepared.seed, copy=copy)
                number = pa.array(np.full(filled.num_rows, copy, dtype=np.int32))
                yield pa.RecordBatch.from_arrays([number, *filled.columns], schema=schema)

    return pa.RecordBatchReader.from_batches(schema, copies())


def _checked_impute(con, table, model, seed, draws, imputations, model_dir):
    """The prepared call and the table as a relation on ``con``. The caller's connection is at
    hand here, so the table's columns are checked now, with the check the SQL door runs while
    planning (where a missing column is DuckDB's binder error)."""
    prepared = prepare.impute(
        con,
        table,
        model,
        seed=arguments.seed(seed),
        draws=arguments.draws(draws),
        imputations=arguments.imputations(imputations, draws),
        model_dir=model_dir,
    )
    relation = prepared.source.relation(con, caller_sql)
    check_columns(table, prepared.model, relation.columns, [str(t) for t in relation.types])
    return prepared, relation


def _prepared_synthesis(con, model, n, seed, given, model_dir):
    return prepare.synthesize(
        con,
        arguments.text("model", model),
        n=arguments.row_count(n),
        seed=arguments.seed(seed),
        given=given,
        model_dir=model_dir,
    )


def synthesize(
    con: duckdb.DuckDBPyConnection,
    model: str,
    n: int,
    *,
    seed: int = 0,
    given: dict | None = None,
    model_dir: str | None = None,
) -> duckdb.DuckDBPyRelation:
    """``n`` new rows with the training table's columns and types (a lazy relation, like
    ``impute``'s). ``given`` (column -> value) fixes those cells in every row and draws the
    others from the model's distribution given them (``None`` as a value: that column NULL)."""
    prepared = _prepared_synthesis(con, model, n, seed, given, model_dir)
    _, synth_name = ensure_functions(con, prepared.model)
    return con.sql(plans.synthesize_sql(prepared, synth_name))


def synthesize_batches(
    con: duckdb.DuckDBPyConnection,
    model: str,
    n: int,
    *,
    seed: int = 0,
    given: dict | None = None,
    batch_rows: int = BATCH_ROWS,
    model_dir: str | None = None,
) -> pa.RecordBatchReader:
    """``n`` new rows as Arrow record batches of up to ``batch_rows`` rows, each made by the
    model in one call; the same rows as ``synthesize`` (rows are keyed by their ordinal)."""
    batch_rows = arguments.batch_rows(batch_rows)
    prepared = _prepared_synthesis(con, model, n, seed, given, model_dir)
    loaded, total = prepared.model, prepared.n
    batches = (
        loaded.synthesize_batch(
            start, min(batch_rows, total - start), prepared.seed, prepared.given, total
        )
        for start in range(0, total, batch_rows)
    )
    return pa.RecordBatchReader.from_batches(loaded.schema, batches)


def caller_sql(con: duckdb.DuckDBPyConnection, query: str) -> duckdb.DuckDBPyRelation:
    """``con.sql(query)`` as if the user had written it where they called us.

    DuckDB 2.0 finds a Python variable named in a query (a DataFrame or Arrow table, by
    replacement scan) in the frame that calls ``con.sql``: from inside this package that frame
    is ours, so the query runs from a frame holding the caller's globals and locals instead.
    """
    frame = sys._getframe(1)
    while frame is not None and frame.f_globals.get("__name__", "").startswith(__package__):
        frame = frame.f_back
    if frame is None:
        return con.sql(query)
    scope = {**frame.f_locals, "__ddf_con": con, "__ddf_query": query}
    return eval("__ddf_con.sql(__ddf_query)", frame.f_globals, scope)  # noqa: S307


def export_model(
    con: duckdb.DuckDBPyConnection, name: str, directory: str, *, model_dir: str | None = None
) -> dict:
    """Copy model ``name`` from the database of ``con`` (or from ``model_dir``) into the model
    directory ``directory``, where Spark and Ray workers, another database or another process
    can read it (``model_dir=directory``). Returns the model's summary."""
    artifact = load_model(con, arguments.text("model", name), model_dir).artifact
    registry = DirectoryRegistry(arguments.text("directory", os.fspath(directory)))
    registry.save(artifact)
    return summary(artifact)


def import_model(con: duckdb.DuckDBPyConnection, name: str, directory: str) -> dict:
    """Copy model ``name`` from the model directory ``directory`` into the database of
    ``con`` (replacing a model of that name), ready for the SQL functions."""
    artifact = load_model(
        con, arguments.text("model", name), arguments.text("directory", os.fspath(directory))
    ).artifact
    DatabaseRegistry(con).save(artifact)
    after_training(con, artifact.name, None)
    return summary(artifact)


def models(con: duckdb.DuckDBPyConnection, model_dir: str | None = None) -> list[dict]:
    """The summary of every stored model (``summary.COLUMNS``); a damaged one is listed with
    its error as metrics."""
    return prepare.model_summaries(con, model_dir)
