"""The Spark door: a stored model on Spark DataFrames, row for row as in DuckDB.

    from duckdb_diffusion import spark as ddf_spark
    filled = ddf_spark.impute(df, "housing", model_dir="models/", seed=7)
    rows = ddf_spark.synthesize(spark, "housing", 10_000_000, model_dir="models/", partitions=64)

Both run as ``mapInArrow`` over Arrow batches. The driver checks the call (model, columns,
seed) and broadcasts the model's bytes once; each Python worker verifies and loads them once
(``engines.worker_model``) with onnxruntime pinned to the cores of its task
(``spark.task.cpus``), and reuses that session for every batch of every task it runs. The
workers need duckdb-diffusion (without the ``train`` extra) in the Python Spark runs them with.

Training stays on one machine: ``train`` draws at most ``max_rows`` rows (those of smallest
``xxhash64(row, seed)``, which no partitioning changes) to the driver as Arrow and trains there.
"""

from __future__ import annotations

from dataclasses import asdict

import duckdb
import pyarrow as pa

from . import arguments, engines
from .runtime import DEFAULT_DRAWS

LABEL = "Spark DataFrame"


def impute(
    df,
    model: str,
    *,
    model_dir: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
):
    """``df`` with every NULL of a modelled column filled: same schema, same rows in the same
    order, every non-NULL cell as it was; the cells ``impute_latent_diffusion`` would give
    for the same model and seed. The model is read from ``model_dir`` or ``con``'s database."""
    loaded = engines.driver_model(model, con, model_dir)
    arrow_schema = _arrow_schema(df.sparkSession, df.schema)
    call, _ = engines.impute_call(loaded, LABEL, arrow_schema, seed, draws)
    shipped = _ship(df.sparkSession, call)
    return df.mapInArrow(_imputer(shipped), df.schema)


def synthesize(
    spark,
    model: str,
    n: int,
    *,
    model_dir: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    seed: int = 0,
    given: dict | None = None,
    partitions: int | None = None,
):
    """``n`` synthetic rows as a DataFrame of the model's columns: rows ``0 .. n-1`` of the
    table ``synthesize_rows(model, n, seed := seed, given := ...)`` makes, over
    ``partitions`` partitions (Spark's default parallelism if None)."""
    loaded = engines.driver_model(model, con, model_dir)
    call, n = engines.synthesize_call(loaded, n, seed, given)
    if partitions is not None:
        partitions = arguments.whole_number("partitions", partitions, 1, 1_000_000)
    schema = spark_schema(loaded.schema)
    ordinals = spark.range(0, n, numPartitions=partitions)
    shipped = _ship(spark, call)
    return ordinals.mapInArrow(_synthesizer(shipped, _arrow_schema(spark, schema)), schema)


def train(
    df,
    model: str,
    *,
    model_dir: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    **settings,
) -> dict:
    """Train ``model`` on at most ``max_rows`` rows of ``df`` (drawn to the driver), stored in
    ``model_dir`` or ``con``'s database. ``settings`` as for ``duckdb_diffusion.train``."""
    return engines.train_drawn(
        lambda max_rows, seed: training_sample(df, max_rows, seed),
        model,
        label=LABEL,
        con=con,
        model_dir=model_dir,
        settings=settings,
    )


def training_sample(df, max_rows: int, seed: int) -> tuple[int, pa.Table]:
    """The row count of ``df`` and at most ``max_rows`` of its rows as Arrow: all of them, or
    those of smallest ``xxhash64(row, seed)`` (a top-k, no full sort), the same rows however
    ``df`` is partitioned."""
    rows = df.count()
    if rows <= max_rows:
        return rows, df.toArrow()
    from pyspark.sql import functions as F

    key = "__ddf_key"
    hashed = df.withColumn(key, F.xxhash64(*[df[c] for c in df.columns], F.lit(seed)))
    return rows, hashed.orderBy(key).limit(max_rows).drop(key).toArrow()


def spark_schema(schema: pa.Schema):
    """The Spark schema for a model's Arrow schema (DuckDB's types as Arrow has them)."""
    from pyspark.sql.types import StructField, StructType

    return StructType([StructField(f.name, _spark_type(f.type), True) for f in schema])


def _spark_type(arrow_type: pa.DataType):
    """Spark has no unsigned integers, dictionaries or string views: the nearest type that
    holds every value (UBIGINT as DECIMAL(20, 0)); DuckDB's TIMESTAMP (no time zone) is
    TIMESTAMP_NTZ, TIMESTAMPTZ is Spark's TIMESTAMP."""
    from pyspark.sql import types as T
    from pyspark.sql.pandas.types import from_arrow_type

    if pa.types.is_dictionary(arrow_type):
        return _spark_type(arrow_type.value_type)
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        return T.StringType()
    if getattr(pa.types, "is_string_view", lambda _: False)(arrow_type):
        return T.StringType()
    unsigned = {
        pa.uint8(): T.ShortType(),
        pa.uint16(): T.IntegerType(),
        pa.uint32(): T.LongType(),
        pa.uint64(): T.DecimalType(20, 0),
    }
    if arrow_type in unsigned:
        return unsigned[arrow_type]
    if pa.types.is_timestamp(arrow_type):
        return T.TimestampType() if arrow_type.tz else T.TimestampNTZType()
    return from_arrow_type(arrow_type)


def _arrow_schema(spark, schema) -> pa.Schema:
    """The Arrow schema of Spark's batches for ``schema`` (TIMESTAMP in the session's zone)."""
    from pyspark.sql.pandas.types import to_arrow_schema

    zone = spark.conf.get("spark.sql.session.timeZone")
    return to_arrow_schema(schema, timezone=zone)


def _ship(spark, call: engines.Call):
    """The call as plain data, broadcast once to every executor; a session without a
    SparkContext (Spark Connect) sends it with the tasks instead."""
    plain = asdict(call)
    try:
        return spark.sparkContext.broadcast(plain)
    except Exception:  # Spark Connect has no sparkContext
        return _Inline(plain)


class _Inline:
    """What a broadcast offers (``.value``), for plain data sent with each task."""

    def __init__(self, value):
        self.value = value


def _worker(shipped) -> tuple:
    """The model and call on a worker, loaded once per worker process and thread count."""
    from pyspark import TaskContext

    call = engines.Call.from_plain(shipped.value)
    context = TaskContext.get()
    threads = context.cpus() if context is not None else 1
    return engines.worker_model(call.shipped, threads), call


def _imputer(shipped):
    def run(batches):
        model, call = _worker(shipped)
        for batch in batches:
            yield from engines.impute_table(model, batch, call).to_batches()

    return run


def _synthesizer(shipped, arrow_schema: pa.Schema):
    def run(batches):
        model, call = _worker(shipped)
        for batch in batches:
            ordinals = batch.column(0).to_numpy()
            table = engines.synthesize_table(model, ordinals, call)
            yield from table.cast(arrow_schema).to_batches()

    return run
