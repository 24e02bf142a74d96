"""Conditional synthesis (``given``) and multiple imputation (``imputations``), through SQL on
real connections, plus the Python door and the CLI flags."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import duckdb_diffusion as ddf

from .conftest import data_file
from .test_cli import cli

# Stopped by the epoch cap, not the clock, so the model is the same on a slow or busy machine
# (45 s by the clock gave 108 epochs on a slow day and missed a conditional share by 0.005).
PEOPLE_SETTINGS = {"max_seconds": 120, "diffusion_epochs": 150, "progress": False}


@pytest.fixture(scope="module")
def people(tmp_path_factory):
    """adult (3,000 rows, real NULLs in workclass / occupation / native-country) and a model
    of it with a budget short enough for CI but long enough to learn the strong dependences."""
    path = tmp_path_factory.mktemp("people") / "people.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE people AS SELECT * FROM read_parquet(?) "
        "USING SAMPLE reservoir(3000 ROWS) REPEATABLE (3)",
        [data_file("adult")],
    )
    ddf.train(con, "people", **PEOPLE_SETTINGS)
    con.close()
    return path


@pytest.fixture
def con(people):
    connection = ddf.connect(str(people))
    yield connection
    connection.close()


def shares(con, query: str, column: str) -> dict:
    rows = con.sql(f'SELECT "{column}", count(*) FROM ({query}) GROUP BY ALL').fetchall()
    total = sum(n for _, n in rows)
    return {value: n / total for value, n in rows}


def total_variation(p: dict, q: dict) -> float:
    return 0.5 * sum(abs(p.get(k, 0) - q.get(k, 0)) for k in set(p) | set(q))


def test_given_rows_follow_the_conditional_distribution(con):
    given = "SELECT * FROM synthesize_rows('people', 3000, seed := 4, given := {'income': '>50K'})"
    rich = "SELECT * FROM people WHERE income = '>50K'"
    everyone = "SELECT * FROM people"
    assert shares(con, given, "income") == {">50K": 1.0}  # exact, in every row

    def mean(query, expression):
        return con.sql(f"SELECT avg({expression}) FROM ({query})").fetchall()[0][0]

    for expression in ["age", "(\"marital-status\" = 'Married-civ-spouse')::INT"]:
        synthetic, conditional, marginal = (mean(q, expression) for q in (given, rich, everyone))
        # much closer to the real rows with that income than to the whole table
        assert abs(synthetic - conditional) < 0.5 * abs(synthetic - marginal), expression
    # and the categories move toward the conditional, from where unconditioned rows are
    free = "SELECT * FROM synthesize_rows('people', 3000, seed := 4)"
    for column in ["relationship", "marital-status"]:
        target = shares(con, rich, column)
        assert total_variation(shares(con, given, column), target) < 0.6 * total_variation(
            shares(con, free, column), target
        ), column


def test_several_given_values_and_a_null(con):
    rows = con.sql(
        "SELECT * FROM synthesize_rows('people', 500, seed := 2, "
        "given := {'gender': 'Female', 'age': 30, 'workclass': NULL})"
    )
    table = rows.to_arrow_table()
    assert table.num_rows == 500
    assert set(table.column("gender").to_pylist()) == {"Female"}
    assert set(table.column("age").to_pylist()) == {30}
    assert table.column("workclass").null_count == 500
    assert table.column("occupation").null_count < 500  # the others are drawn as usual
    assert table.schema == con.sql("SELECT * FROM people LIMIT 0").to_arrow_table().schema
    again = con.sql(
        "SELECT * FROM synthesize_rows('people', 500, seed := 2, "
        "given := {'gender': 'Female', 'age': 30, 'workclass': NULL})"
    ).to_arrow_table()
    assert again.equals(table)  # deterministic for a seed
    python = ddf.synthesize(
        con, "people", 500, seed=2, given={"gender": "Female", "age": 30, "workclass": None}
    ).to_arrow_table()
    assert python.equals(table)
    batches = ddf.synthesize_batches(
        con, "people", 500, seed=2, given={"gender": "Female", "age": 30, "workclass": None},
        batch_rows=170,
    ).read_all()  # fmt: skip
    assert batches.equals(table)


@pytest.mark.parametrize(
    ("given", "message"),
    [
        ("{'nope': 1}", r"given columns \['nope'\] are not columns of model 'people'"),
        ("{'income': '>60K'}", r"given value '>60K' for column 'income' is not one of the levels"),
        ("{'age': 300}", r"given value 300 for column 'age' is outside the range"),
        ("{'age': 'abc'}", r"given value 'abc' for column 'age' of model 'people' does not cast"),
        ("'income'", r"parameter given must be a struct of column := value"),
    ],
)
def test_given_errors_name_the_column_and_the_fix(con, given, message):
    with pytest.raises(duckdb.Error, match=message):
        con.sql(f"SELECT * FROM synthesize_rows('people', 5, given := {given})").fetchall()


def test_given_passthrough_column_is_refused(con, tmp_path):
    con.execute("CREATE TEMP TABLE keyed AS SELECT row_number() OVER () AS id, * FROM people")
    ddf.train(con, "keyed", model_dir=str(tmp_path), max_seconds=3, width=32, progress=False)
    ddf.install(con, str(tmp_path))
    with pytest.raises(duckdb.Error, match=r"given columns \['id'\] are passed through.*key"):
        con.sql("SELECT * FROM synthesize_rows('keyed', 5, given := {'id': 3})").fetchall()


def test_multiple_imputation_in_long_format(con):
    query = "SELECT * FROM impute_latent_diffusion('people', imputations := 4, seed := 2)"
    long = con.sql(query).to_arrow_table()
    original = con.sql("SELECT * FROM people").to_arrow_table()
    rows = original.num_rows
    assert long.num_rows == 4 * rows
    assert long.column_names == ["_imputation", *original.column_names]
    assert str(con.sql(query).types[0]) == "INTEGER"
    copies = [long.slice(i * rows, rows) for i in range(4)]
    for number, copy in enumerate(copies, start=1):
        assert set(copy.column("_imputation").to_pylist()) == {number}
        for name in original.column_names:
            kept = original.column(name).is_valid()
            assert copy.column(name).filter(kept).equals(original.column(name).filter(kept))
        assert copy.column("workclass").null_count == 0
    holes = original.column("occupation").is_null()
    drawn = [c.column("occupation").filter(holes).to_pylist() for c in copies]
    assert len({tuple(d) for d in drawn}) == 4  # each copy its own draws
    assert con.sql(query).to_arrow_table().equals(long)  # deterministic for a seed
    con.execute("SET threads = 1")
    assert con.sql(query).to_arrow_table().equals(long)  # and for the thread count
    other = con.sql(query.replace("seed := 2", "seed := 3")).to_arrow_table()
    assert not other.equals(long)
    python = ddf.impute(con, "people", imputations=4, seed=2).to_arrow_table()
    assert python.equals(long)
    batches = ddf.impute_batches(con, "people", imputations=4, seed=2, batch_rows=700)
    assert batches.read_all().equals(long)


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        ("imputations := 3, draws := 2", "imputations and draws do not combine"),
        ("imputations := 0", "parameter imputations must be between 1 and 100, got 0"),
        ("imputations := 101", "parameter imputations must be between 1 and 100, got 101"),
        ("imputations := 1.5", "parameter imputations must be a whole number"),
    ],
)
def test_imputations_errors(con, arguments, message):
    with pytest.raises(duckdb.Error, match=message):
        con.sql(f"SELECT * FROM impute_latent_diffusion('people', {arguments})").fetchall()


def test_multiple_imputation_varies_every_hidden_number(con):
    """Each hidden number gets a different value in (almost) every copy: posterior draws, not
    one value repeated."""
    con.execute(
        "CREATE TEMP TABLE holes AS SELECT row_number() OVER () AS row_id, * REPLACE (CASE WHEN "
        "hash(fnlwgt) % 4 = 0 THEN NULL ELSE age END AS age) FROM people"
    )
    spread = con.sql(
        "SELECT stddev_samp(age) FROM impute_latent_diffusion('holes', model := 'people', "
        "imputations := 8, seed := 1) WHERE row_id IN (SELECT row_id FROM holes WHERE age IS "
        "NULL) GROUP BY row_id"
    ).fetchnumpy()
    spread = next(iter(spread.values()))
    assert len(spread) > 500 and (spread > 0).mean() > 0.9


def test_cli_given_and_imputations(people, tmp_path):
    out = tmp_path / "rich.parquet"
    done = cli(
        "synthesize", str(people), "people", "-n", "200", "--given",
        json.dumps({"income": ">50K"}), "--out", str(out),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    rows = duckdb.sql(f"SELECT DISTINCT income FROM '{out}'").fetchall()
    assert rows == [(">50K",)]
    copy = tmp_path / "copy.duckdb"
    duckdb.connect(str(copy)).close()
    long = tmp_path / "long.parquet"
    done = cli("impute", str(people), "people", "--imputations", "3", "--out", str(long))
    assert done.returncode == 0, done.stderr
    counts = duckdb.sql(f"SELECT _imputation, count(*) FROM '{long}' GROUP BY 1 ORDER BY 1")
    assert counts.fetchall() == [(1, 3000), (2, 3000), (3, 3000)]
    bad = cli("synthesize", str(people), "people", "-n", "5", "--given", "{not json")
    assert bad.returncode == 1 and "--given" in bad.stderr


def test_synthetic_nulls_come_together_as_in_the_table(con):
    """adult's workclass and occupation are NULL together (the same rows); the missingness
    chain reproduces that, where drawing each column's NULLs alone makes them rarely meet."""
    from duckdb_diffusion.metrics import co_missingness_error
    from duckdb_diffusion.runtime import Model

    real = con.sql("SELECT * FROM people").to_arrow_table()
    synthetic = con.sql("SELECT * FROM synthesize_rows('people', 6000, seed := 3)").to_arrow_table()
    columns = [c for c in real.column_names if real.column(c).null_count or c == "age"]

    def both_null(table):
        pair = ("workclass", "occupation")
        flags = [table.column(c).is_null().to_numpy(zero_copy_only=False) for c in pair]
        return float(np.mean(flags[0] & flags[1]))

    truth = both_null(real)
    assert truth > 0.03 and abs(both_null(synthetic) - truth) < 0.3 * truth
    stored = ddf.load_model(con, "people")
    alone = Model(stored.artifact)
    alone.missingness = None  # each column's NULLs at its own rate, as models stored before
    independent = pa.Table.from_batches([alone.synthesize_batch(0, 6000, seed=3)])
    assert both_null(independent) < 0.3 * truth
    chained = co_missingness_error(real, synthetic, columns)["mean"]
    assert chained < 0.5 * co_missingness_error(real, independent, columns)["mean"]
    for name in columns:  # each column's own NULL rate still holds
        rate = real.column(name).null_count / real.num_rows
        assert abs(synthetic.column(name).null_count / synthetic.num_rows - rate) < 0.02, name

    # A NULL given value is conditioned on by the NULLs drawn after it in the chain.
    names = stored.encoder.modelled_names
    first, second = (names[m.target] for m in stored.missingness.chain[:2])
    assert {first, second} == {"workclass", "occupation"}
    given = con.sql(
        f"SELECT count(*) FILTER ({second} IS NULL) / count(*) FROM "
        f"synthesize_rows('people', 1000, seed := 5, given := {{'{first}': NULL}})"
    ).fetchall()[0][0]
    assert given > 0.8
