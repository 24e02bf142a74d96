"""Spark and Ray, each through its own door, against DuckDB's SQL functions on the same model.

One local Spark session (local[2]) and one local Ray instance (2 CPUs) for the module; the
table is the small housing sample, split into several partitions/blocks so that the
partitioning is exercised. The heavy runs (1M+ rows, scaling) are in benchmarks/scale.py.
"""

from __future__ import annotations

import os
import sys

import duckdb
import pyarrow as pa
import pytest

import duckdb_diffusion as ddf
from duckdb_diffusion import ray as ddf_ray
from duckdb_diffusion import spark as ddf_spark
from duckdb_diffusion.registry import ModelNotFoundError
from duckdb_diffusion.schema import ColumnMismatch

TINY = {"max_seconds": 3, "width": 32, "depth": 1, "sampling_steps": 2, "progress": False}


@pytest.fixture(scope="module")
def model_dir(housing_db, tmp_path_factory) -> str:
    directory = str(tmp_path_factory.mktemp("models"))
    con = duckdb.connect(str(housing_db), read_only=True)
    ddf.export_model(con, "housing", directory)
    con.close()
    return directory


@pytest.fixture(scope="module")
def expected(housing_db) -> dict:
    """What DuckDB's SQL door gives, the reference for every engine."""
    con = ddf.connect(str(housing_db), read_only=True)
    found = {
        "table": con.sql("SELECT * FROM housing").to_arrow_table(),
        "filled": con.sql("SELECT * FROM impute_latent_diffusion('housing', seed := 7)"),
        "drawn": con.sql("SELECT * FROM impute_latent_diffusion('housing', seed := 7, draws := 3)"),
        "synthetic": con.sql("SELECT * FROM synthesize_rows('housing', 2500, seed := 5)"),
        "given": con.sql(
            "SELECT * FROM synthesize_rows('housing', 900, seed := 5, "
            "given := {'ocean_proximity': 'INLAND', 'median_income': 4.5})"
        ),
    }
    found = {k: v if isinstance(v, pa.Table) else v.to_arrow_table() for k, v in found.items()}
    found["errors"] = {}
    for label, query in {
        "missing": "SELECT * FROM impute_latent_diffusion('housing', model := 'nope')",
        "seed": "SELECT * FROM impute_latent_diffusion('housing', seed := -1)",
        "kind": "SELECT * FROM impute_latent_diffusion("
        "'(SELECT * REPLACE (median_income::VARCHAR AS median_income) FROM housing)', "
        "model := 'housing')",
    }.items():
        with pytest.raises(duckdb.Error) as caught:
            con.sql(query).fetchall()
        found["errors"][label] = str(caught.value)
    con.close()
    return found


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ["PYSPARK_PYTHON"] = sys.executable  # the workers run this environment
    session = (
        SparkSession.builder.master("local[2]")
        .appName("duckdb-diffusion-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .config("spark.sql.execution.arrow.maxRecordsPerBatch", "400")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="module")
def ray_local():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    context = ray.data.DataContext.get_current()
    context.execution_options.preserve_order = True
    context.enable_progress_bars = False
    yield ray
    ray.shutdown()


def test_spark_impute_and_synthesize_match_duckdb(spark, model_dir, expected):
    frame = spark.createDataFrame(expected["table"]).repartition(3)
    ordered = frame.sortWithinPartitions("house_id")  # repartition shuffles: compare by id
    for draws, want in [(0, expected["filled"]), (3, expected["drawn"])]:
        got = ddf_spark.impute(ordered, "housing", model_dir=model_dir, seed=7, draws=draws)
        got = got.toArrow().sort_by("house_id")
        assert got.schema == want.schema
        assert got.equals(want.sort_by("house_id")), f"draws={draws}"
        assert got.column("total_bedrooms").null_count == 0

    rows = ddf_spark.synthesize(spark, "housing", 2500, model_dir=model_dir, seed=5, partitions=3)
    assert rows.rdd.getNumPartitions() == 3
    assert rows.toArrow().equals(expected["synthetic"])
    given = {"ocean_proximity": "INLAND", "median_income": 4.5}
    rich = ddf_spark.synthesize(spark, "housing", 900, model_dir=model_dir, seed=5, given=given)
    assert rich.toArrow().equals(expected["given"])


def test_spark_errors_are_the_sql_doors(spark, model_dir, expected):
    frame = spark.createDataFrame(expected["table"])
    errors = expected["errors"]
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'") as caught:
        ddf_spark.impute(frame, "nope", model_dir=model_dir)
    assert "train_latent_diffusion" in errors["missing"] and "train_latent_diffusion" in str(
        caught.value
    )
    with pytest.raises(ValueError) as caught:
        ddf_spark.impute(frame, "housing", model_dir=model_dir, seed=-1)
    assert str(caught.value) in errors["seed"]
    drifted = frame.withColumn("median_income", frame["median_income"].cast("string"))
    with pytest.raises(ColumnMismatch, match=r"median_income \(DOUBLE in the model, VARCHAR now"):
        ddf_spark.impute(drifted, "housing", model_dir=model_dir)
    assert "median_income (DOUBLE in the model, VARCHAR now" in errors["kind"]
    with pytest.raises(ColumnMismatch, match=r"missing columns \['median_income'\]"):
        ddf_spark.impute(frame.drop("median_income"), "housing", model_dir=model_dir)
    with pytest.raises(ValueError, match="model_dir='path'"):
        ddf_spark.synthesize(spark, "housing", 10)  # neither model_dir nor con


def test_spark_train_samples_and_stores(spark, expected, tmp_path):
    frame = spark.createDataFrame(expected["table"]).repartition(4)
    info = ddf_spark.train(
        frame, "from_spark", model_dir=str(tmp_path), max_rows=600, seed=3, **TINY
    )
    assert info["source"] == "Spark DataFrame" and info["metrics"]["source_rows"] == 1500
    assert info["metrics"]["rows"] == 600  # max_rows drawn to the driver
    again = ddf_spark.train(
        frame.repartition(2), "again", model_dir=str(tmp_path), max_rows=600, seed=3, **TINY
    )
    assert again["metrics"]["rows"] == 600
    con = ddf.connect(model_dir=str(tmp_path))
    con.register("t", expected["table"])
    filled = con.sql("SELECT * FROM impute_latent_diffusion('t', model := 'from_spark')")
    assert filled.aggregate("count(*) - count(total_bedrooms)").fetchall()[0][0] == 0


def test_spark_sample_does_not_depend_on_partitioning(spark, expected):
    from duckdb_diffusion.spark import training_sample

    frame = spark.createDataFrame(expected["table"])
    rows, one = training_sample(frame.repartition(1), 500, seed=4)
    _, four = training_sample(frame.repartition(4), 500, seed=4)
    assert rows == 1500 and one.num_rows == 500
    assert one.sort_by("house_id").equals(four.sort_by("house_id"))


def test_ray_impute_and_synthesize_match_duckdb(ray_local, model_dir, expected):
    data = ray_local.data.from_arrow(expected["table"]).repartition(3)
    got = ddf_ray.impute(data, "housing", model_dir=model_dir, seed=7, draws=3, batch_size=300)
    assert ddf_ray.to_arrow(got).equals(expected["drawn"])
    rows = ddf_ray.synthesize("housing", 2500, model_dir=model_dir, seed=5, blocks=4)
    assert ddf_ray.to_arrow(rows).equals(expected["synthetic"])
    given = {"ocean_proximity": "INLAND", "median_income": 4.5}
    rich = ddf_ray.synthesize("housing", 900, model_dir=model_dir, seed=5, given=given, blocks=3)
    assert ddf_ray.to_arrow(rich).equals(expected["given"])
    with pytest.raises(ValueError, match="not one of the levels"):
        ddf_ray.synthesize("housing", 9, model_dir=model_dir, given={"ocean_proximity": "MARS"})

    with pytest.raises(ColumnMismatch, match=r"missing columns \['median_income'\]"):
        ddf_ray.impute(data.drop_columns(["median_income"]), "housing", model_dir=model_dir)
    with pytest.raises(ValueError, match="parameter seed must be between 0 and"):
        ddf_ray.synthesize("housing", 10, model_dir=model_dir, seed=2**63)
    assert "parameter seed must be between 0 and" in expected["errors"]["seed"]
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        ddf_ray.synthesize("nope", 10, model_dir=model_dir)

    info = ddf_ray.train(data, "from_ray", model_dir=model_dir, max_rows=800, **TINY)
    assert info["source"] == "Ray Dataset" and info["metrics"]["rows"] == 800


def test_export_and_import_keep_the_model(housing_db, model_dir, expected, tmp_path):
    con = ddf.connect(str(tmp_path / "other.duckdb"))
    info = ddf.import_model(con, "housing", model_dir)
    assert info["name"] == "housing"
    con.register("housing", expected["table"])
    got = con.sql("SELECT * FROM impute_latent_diffusion('housing', seed := 7)").to_arrow_table()
    assert got.equals(expected["filled"])
    with pytest.raises(ModelNotFoundError, match="no model named 'nope'"):
        ddf.export_model(con, "nope", str(tmp_path / "out"))


def test_spark_keeps_duckdb_types(spark, tmp_path):
    """ENUM, DATE, TIMESTAMP, DECIMAL, HUGEINT, UBIGINT and BOOLEAN reach Spark as the nearest
    Spark types, and the cells are DuckDB's."""
    con = ddf.connect(model_dir=str(tmp_path))
    con.execute(
        "CREATE TABLE typed AS SELECT (i % 3)::VARCHAR::ENUM('0', '1', '2') AS e, "
        "DATE '2020-01-01' + (i * 7 % 365)::INTEGER AS d, "
        "TIMESTAMP '2021-06-01' + to_minutes(i * 37) AS ts, "
        "(i % 50 / 4)::DECIMAL(9, 2) AS amount, (i * 13 % 97)::HUGEINT AS big, "
        "(i * 7 % 31)::UBIGINT AS unsigned, i % 4 = 0 AS flag, "
        "CASE WHEN i % 5 = 0 THEN NULL ELSE (i % 9)::DOUBLE END AS x FROM range(400) t(i)"
    )
    ddf.train(con, "typed", model_dir=str(tmp_path), **TINY)
    want = con.sql("SELECT * FROM synthesize_rows('typed', 700, seed := 1)").to_arrow_table()
    rows = ddf_spark.synthesize(spark, "typed", 700, model_dir=str(tmp_path), seed=1)
    assert [f.dataType.simpleString() for f in rows.schema.fields] == [
        "string", "date", "timestamp_ntz", "decimal(9,2)", "decimal(38,0)", "decimal(20,0)",
        "boolean", "double",
    ]  # fmt: skip
    got = rows.toArrow()
    assert got.equals(want.cast(got.schema))

    from pyspark.sql.pandas.types import to_arrow_schema

    table = con.sql("SELECT * FROM typed").to_arrow_table()  # Spark takes no uint64: cast
    frame = spark.createDataFrame(table.cast(to_arrow_schema(ddf_spark.spark_schema(table.schema))))
    filled = ddf_spark.impute(frame, "typed", model_dir=str(tmp_path), seed=2).toArrow()
    reference = con.sql("SELECT * FROM impute_latent_diffusion('typed', seed := 2)")
    assert filled.column("x").null_count == 0
    assert filled.column("x").to_pylist() == reference.to_arrow_table().column("x").to_pylist()
