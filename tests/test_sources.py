"""The functions see what ``SELECT * FROM <tbl>`` sees where they are called: TEMP tables, the
schema chosen with USE, registered and replacement-scanned DataFrames and Arrow tables,
subqueries over them and Parquet paths; and tables whose types widened since training."""

from __future__ import annotations

import json
import shutil
import threading

import duckdb
import pandas as pd
import pyarrow as pa
import pytest

import duckdb_diffusion as ddf
from duckdb_diffusion.artifact import Artifact
from duckdb_diffusion.registry import DatabaseRegistry

from .conftest import FAST, MODELLED


@pytest.fixture
def con(housing):
    ddf.install(housing)
    return housing


def assert_imputed(before: pa.Table, after: pa.Table, modelled=MODELLED) -> None:
    """Same rows in the same order, no NULL left in modelled columns, every other cell kept."""
    assert after.num_rows == before.num_rows
    assert after.column_names == before.column_names
    for name in before.column_names:
        old, new = before.column(name), after.column(name)
        kept = old.is_valid()
        assert new.filter(kept).equals(old.filter(kept).cast(new.type)), name
        if name in modelled:
            assert new.null_count == 0, name
    assert sum(before.column(n).null_count for n in modelled) > 0  # there was work to do


def impute(con, table: str, **named) -> pa.Table:
    args = "".join(
        f", {k} := {json.dumps(v) if isinstance(v, int) else repr(v)}" for k, v in named.items()
    )
    return con.sql(f"SELECT * FROM impute_latent_diffusion({table!r}{args})").to_arrow_table()


def test_a_temp_table_and_a_subquery_over_it(con):
    con.execute("CREATE OR REPLACE TEMP TABLE tmp AS SELECT * FROM housing ORDER BY house_id DESC")
    before = con.sql("SELECT * FROM tmp").to_arrow_table()
    assert_imputed(before, impute(con, "tmp", model="housing"))
    subquery = impute(con, "(SELECT * FROM tmp WHERE house_id > 700)", model="housing")
    assert_imputed(con.sql("SELECT * FROM tmp WHERE house_id > 700").to_arrow_table(), subquery)
    # A TEMP table shadowing a stored one of the same name is the one imputed.
    con.execute("CREATE OR REPLACE TEMP TABLE housing AS SELECT * FROM main.housing LIMIT 10")
    assert impute(con, "housing").num_rows == 10
    con.execute("DROP TABLE temp.housing")


def test_the_schema_chosen_with_use(con):
    con.execute("CREATE SCHEMA IF NOT EXISTS staging")
    con.execute("CREATE OR REPLACE TABLE staging.houses AS SELECT * FROM main.housing LIMIT 300")
    con.execute("USE staging")
    try:
        assert_imputed(
            con.sql("SELECT * FROM houses").to_arrow_table(), impute(con, "houses", model="housing")
        )
        synthetic = con.sql("SELECT * FROM synthesize_rows('housing', 20)").to_arrow_table()
        assert synthetic.num_rows == 20
    finally:
        con.execute("USE main")


def test_registered_dataframes_and_arrow_tables(con):
    frame = con.sql("SELECT * FROM housing").df()
    table = con.sql("SELECT * FROM housing").to_arrow_table()
    con.register("frame", frame)
    con.register("arrow_rows", table)
    assert_imputed(table, impute(con, "frame", model="housing"))
    assert_imputed(table, impute(con, "arrow_rows", model="housing"))
    assert_imputed(table, impute(con, "(SELECT * FROM frame)", model="housing"))
    con.unregister("frame")
    con.unregister("arrow_rows")


def test_replacement_scans_of_python_variables(con):
    # DuckDB looks a variable up in the frame that runs the query, so the SQL is written here.
    local_frame = con.sql("SELECT * FROM housing").df()  # noqa: F841 (read by name, in SQL)
    local_arrow = con.sql("SELECT * FROM housing").to_arrow_table()
    for name in ("local_frame", "local_arrow"):
        query = f"SELECT * FROM impute_latent_diffusion('{name}', model := 'housing')"
        assert_imputed(local_arrow, con.sql(query).to_arrow_table())
    # The Python door finds them the same way, from its caller's frame.
    assert_imputed(local_arrow, ddf.impute(con, "local_frame", "housing").to_arrow_table())
    assert_imputed(local_arrow, ddf.impute(con, "local_arrow", "housing").to_arrow_table())


def test_a_parquet_path(con, tmp_path):
    path = tmp_path / "houses.parquet"
    con.execute(f"COPY housing TO '{path}' (FORMAT parquet)")
    before = con.sql(f"SELECT * FROM '{path}'").to_arrow_table()
    assert_imputed(before, impute(con, str(path), model="housing"))


def test_a_glob_of_parquet_files(con, tmp_path):
    folder = tmp_path / "houses"
    folder.mkdir()
    for part, (low, high) in enumerate([(0, 700), (700, 1500)]):
        con.execute(
            f"COPY (SELECT * FROM housing WHERE house_id > {low} AND house_id <= {high} "
            f"ORDER BY house_id) TO '{folder / f'part-{part}.parquet'}' (FORMAT parquet)"
        )
    pattern = str(folder / "*.parquet")
    before = con.sql(f"SELECT * FROM '{pattern}'").to_arrow_table()
    assert before.num_rows == 1500
    assert_imputed(before, impute(con, pattern, model="housing"))
    with pytest.raises(duckdb.Error, match="no model named 'houses'"):
        con.sql(f"SELECT * FROM impute_latent_diffusion('{pattern}')").fetchall()


def test_training_through_sql_reads_a_temp_table(con):
    con.execute("CREATE OR REPLACE TEMP TABLE scratch AS SELECT * FROM housing LIMIT 400")
    settings = json.dumps({**FAST, "max_seconds": 4})
    (row,) = con.execute(
        "SELECT name, rows, modelled_columns FROM train_latent_diffusion('scratch', settings := ?)",
        [settings],
    ).fetchall()
    assert row == ("scratch", 400, 10)
    before = con.sql("SELECT * FROM scratch").to_arrow_table()
    assert_imputed(before, impute(con, "scratch"))
    con.execute("DELETE FROM duckdb_diffusion.models WHERE name = 'scratch'")


@pytest.fixture(scope="module")
def people():
    """A model trained on INTEGER, DECIMAL and VARCHAR columns."""
    con = ddf.connect()
    con.execute(
        """CREATE TABLE people AS SELECT range AS id,
             CASE WHEN range % 7 = 0 THEN NULL ELSE (20 + range % 50)::INTEGER END AS age,
             CASE WHEN range % 11 = 0 THEN NULL
                  ELSE (1000 + (range % 50) * 40 + hash(range) % 100)::DECIMAL(10, 2) END AS income,
             CASE WHEN range % 13 = 0 THEN NULL WHEN range % 50 < 25 THEN 'young' ELSE 'old' END
               AS band
           FROM range(600)"""
    )
    ddf.train(con, "people", **{**FAST, "max_seconds": 6})
    yield con
    con.close()


WIDENED = {
    "BIGINT, DOUBLE, ENUM": "SELECT id, age::BIGINT AS age, income::DOUBLE AS income, "
    "band::ENUM('young', 'old') AS band FROM people",
    "HUGEINT, DECIMAL(18,4), VARCHAR": "SELECT id, age::HUGEINT AS age, "
    "income::DECIMAL(18, 4) AS income, band FROM people",
    "SMALLINT, FLOAT, VARCHAR": "SELECT id, age::SMALLINT AS age, income::FLOAT AS income, "
    "band FROM people",
}


@pytest.mark.parametrize("types", list(WIDENED))
def test_widened_types_are_accepted_and_kept(people, types):
    people.execute(f"CREATE OR REPLACE TABLE widened AS {WIDENED[types]}")
    before = people.sql("SELECT * FROM widened").to_arrow_table()
    query = "SELECT * FROM impute_latent_diffusion('widened', model := 'people')"
    after = people.sql(query).to_arrow_table()
    assert_imputed(before, after, modelled=["age", "income", "band"])
    assert after.schema == before.schema  # the table's own types, not the trained ones
    described = [r[1] for r in people.execute(f"DESCRIBE {query}").fetchall()]
    assert described == [r[1] for r in people.execute("DESCRIBE widened").fetchall()]
    ages = after.column("age").to_pylist()
    assert min(ages) >= 20 and max(ages) <= 69  # filled inside the trained range


def test_a_pandas_int_column_arriving_as_double(people):
    # What a pandas pipeline often holds: integers with gaps, stored as floats (NaN = NULL).
    frame = people.sql("SELECT * FROM people").df().astype({"age": "float64"})
    before = people.sql("SELECT * FROM frame").to_arrow_table()
    query = "SELECT * FROM impute_latent_diffusion('frame', model := 'people')"
    after = people.sql(query).to_arrow_table()
    assert after.schema.field("age").type == pa.float64()
    assert_imputed(before, after, modelled=["age", "income", "band"])
    nullable = frame.astype({"age": "Int64"})  # noqa: F841 (read by name)
    out = ddf.impute(people, "nullable", "people").df()
    assert out["age"].notna().all() and pd.Series(nullable["age"]).isna().any()


def test_a_change_of_kind_is_an_error_naming_the_column(people):
    people.execute(
        "CREATE OR REPLACE TABLE texty AS SELECT * REPLACE (age::VARCHAR AS age) FROM people"
    )
    with pytest.raises(
        duckdb.Error,
        match=r"table 'texty' no longer matches model 'people'.*age \(INTEGER in the model, "
        r"VARCHAR now: text instead of number\)",
    ):
        people.sql("SELECT * FROM impute_latent_diffusion('texty', model := 'people')").fetchall()
    with pytest.raises(ddf.SourceError, match=r"band \(VARCHAR in the model, BOOLEAN"):
        ddf.impute(people, "(SELECT * REPLACE (band = 'old' AS band) FROM people)", "people")


def test_python_seeds_are_checked_as_sql_checks_them(people):
    for seed in (2**63, 2**64 + 1, -1, 1.5, True):
        with pytest.raises(ValueError, match="parameter seed"):
            ddf.impute(people, "people", seed=seed)
        with pytest.raises(ValueError, match="parameter seed"):
            ddf.synthesize(people, "people", 5, seed=seed)
    assert ddf.synthesize(people, "people", 5, seed=2**63 - 1).to_arrow_table().num_rows == 5


def test_install_reads_no_graphs(people, monkeypatch):
    def refuse(self, name):
        raise AssertionError("install loaded a whole model")

    monkeypatch.setattr(DatabaseRegistry, "load", refuse)
    cursor = people.cursor()
    assert ddf.install(cursor) == ["people"]
    cursor.close()


def test_eight_threads_using_more_models_than_the_cache_holds(housing_db, tmp_path, monkeypatch):
    path = tmp_path / "many.duckdb"
    shutil.copy(housing_db, path)
    con = duckdb.connect(str(path))
    registry = DatabaseRegistry(con)
    stored = registry.load("housing")
    names = [f"copy{i}" for i in range(6)]
    for name in names:  # same graphs, other names: other digests, so other cache entries
        registry.save(Artifact.create({**stored.spec, "name": name}, stored.graphs))
    monkeypatch.setattr(ddf.loading.MODELS, "capacity", 2)
    ddf.loading.MODELS.clear()
    ddf.install(con)
    errors, counts = [], []

    def work(worker: int) -> None:
        cursor = con.cursor()
        try:
            ddf.install(cursor)
            for step in range(6):
                name = names[(worker + step) % len(names)]
                filled = cursor.sql(
                    f"SELECT count(total_bedrooms) FROM impute_latent_diffusion("
                    f"'(SELECT * FROM housing LIMIT 200)', model := '{name}')"
                ).fetchall()
                rows = cursor.sql(f"SELECT * FROM synthesize_rows('{name}', 30)").fetchall()
                counts.append((filled[0][0], len(rows)))
        except Exception as error:  # collected: a thread's failure must fail the test
            errors.append(repr(error))
        finally:
            cursor.close()

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    con.close()
    assert errors == []
    assert counts == [(200, 30)] * 48
    assert len(ddf.loading.MODELS) <= 2
