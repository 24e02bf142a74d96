"""The SQL surface on real connections: every statement of the contract, and its errors."""

from __future__ import annotations

import gc
import json
import threading

import duckdb
import pytest

import duckdb_diffusion as ddf

from .conftest import FAST, data_file
from .test_core import run_python


def describe(con, sql: str) -> list[tuple[str, str]]:
    return [(r[0], r[1]) for r in con.execute(f"DESCRIBE {sql}").fetchall()]


@pytest.fixture
def sql(housing):
    ddf.install(housing)
    return housing


def test_impute_through_sql_equals_the_python_api_and_keeps_the_schema(sql):
    through_sql = sql.sql(
        "SELECT * FROM impute_latent_diffusion('housing', seed := 2)"
    ).to_arrow_table()
    through_python = ddf.impute(sql, "housing", seed=2).to_arrow_table()
    assert through_sql.equals(through_python)
    assert through_sql.column("total_bedrooms").null_count == 0
    expected = describe(sql, "SELECT * FROM housing")
    assert describe(sql, "SELECT * FROM impute_latent_diffusion('housing')") == expected
    sql.execute("CREATE OR REPLACE TABLE housing_filled AS FROM impute_latent_diffusion('housing')")
    assert describe(sql, "housing_filled") == expected


def test_quoted_qualified_names_and_subqueries(sql):
    plain = sql.execute("SELECT * FROM impute_latent_diffusion('housing')").fetchall()
    quoted = sql.execute(
        """SELECT * FROM impute_latent_diffusion('"warehouse"."main"."housing"')"""
    ).fetchall()
    assert quoted == plain
    qualified = sql.execute("SELECT * FROM impute_latent_diffusion('warehouse.main.housing')")
    assert qualified.fetchall() == plain
    with pytest.raises(duckdb.Error, match=r"'warehouse.main.x.housing' has 4 parts"):
        sql.execute("SELECT * FROM impute_latent_diffusion('warehouse.main.x.housing')")
    sub = sql.execute(
        "SELECT count(*), count(total_bedrooms) FROM impute_latent_diffusion("
        "'(SELECT * FROM housing WHERE house_id <= 100)', model := 'housing')"
    ).fetchall()
    assert sub == [(100, 100)]


def test_one_and_two_threads_give_the_same_result(sql):
    results = []
    for threads in (1, 2):
        sql.execute(f"SET threads = {threads}")
        results.append(
            sql.sql(
                "SELECT * FROM impute_latent_diffusion('housing', seed := 9, draws := 3)"
            ).to_arrow_table()
        )
        results.append(
            sql.sql("SELECT * FROM synthesize_rows('housing', 3000, seed := 9)").to_arrow_table()
        )
    assert results[0].equals(results[2])
    assert results[1].equals(results[3])


def test_cursors_and_repeated_install(sql):
    assert ddf.install(sql) == ["housing"]
    cursor = sql.cursor()
    ddf.install(cursor)
    ddf.install(cursor)
    via_cursor = cursor.execute(
        "SELECT * FROM synthesize_rows('housing', 50, seed := 1)"
    ).fetchall()
    via_con = sql.execute("SELECT * FROM synthesize_rows('housing', 50, seed := 1)").fetchall()
    assert via_cursor == via_con
    cursor.close()
    assert sql.execute("SELECT count(*) FROM synthesize_rows('housing', 5)").fetchall() == [(5,)]


def test_synthesize_rows_through_sql(sql):
    relation = "synthesize_rows('housing', 1234, seed := 7)"
    assert describe(sql, f"SELECT * FROM {relation}") == describe(sql, "SELECT * FROM housing")
    table = sql.sql(f"SELECT * FROM {relation}").to_arrow_table()
    assert table.num_rows == 1234
    assert table.equals(ddf.synthesize(sql, "housing", n=1234, seed=7).to_arrow_table())
    assert sql.execute("SELECT count(*) FROM synthesize_rows('housing', 0)").fetchall() == [(0,)]


def test_models_listing(sql):
    rows = sql.execute("SELECT * FROM latent_diffusion_models()").fetchall()
    columns = [d[0] for d in sql.description]
    assert columns == list(ddf.summary.COLUMNS)
    (row,) = rows
    listed = dict(zip(columns, row, strict=True))
    assert listed["name"] == "housing" and listed["columns"] == 11 and listed["rows"] == 1500
    assert listed["size"] > 0 and listed["modelled_columns"] == 10
    assert "onnx_check" in json.loads(listed["metrics"])
    # Training returns the same row the listing shows.
    (python,) = ddf.models(sql)
    assert python["name"] == "housing" and python["size"] == listed["size"]


def test_sql_training_in_memory_matches_python_training():
    settings = json.dumps({**FAST, "max_seconds": 600, "vae_epochs": 2, "diffusion_epochs": 2})
    digests = []
    for door in ("sql", "python"):
        con = ddf.connect()
        con.execute(
            "CREATE TABLE c AS SELECT * FROM read_parquet(?) LIMIT 400", [data_file("california")]
        )
        con.execute("UPDATE c SET households = NULL WHERE population > 1500")
        if door == "sql":
            (row,) = con.execute(
                "SELECT * FROM train_latent_diffusion('(SELECT * FROM c WHERE latitude > 0)', "
                "model := 'recent', seed := 4, settings := ?)",
                [settings],
            ).fetchall()
            assert row[0] == "recent" and row[2] == 400
            filled = con.execute(
                "SELECT count(households) FROM impute_latent_diffusion('c', model := 'recent')"
            ).fetchall()
            assert filled == [(400,)]
        else:
            ddf.train(
                con,
                "(SELECT * FROM c WHERE latitude > 0)",
                "recent",
                seed=4,
                **json.loads(settings),
            )
        spec = con.execute("SELECT spec::VARCHAR FROM duckdb_diffusion.models").fetchall()[0][0]
        digests.append(json.loads(spec)["graphs"])
        con.close()
    assert digests[0] == digests[1]


def test_trainings_at_once_on_two_threads_are_reproducible():
    """torch's random state is process-wide: concurrent trainings take turns, so each gives
    what it gives alone."""
    import threading

    settings = json.dumps({**FAST, "max_seconds": 600, "vae_epochs": 2, "diffusion_epochs": 2})
    con = ddf.connect()
    con.execute(
        "CREATE TABLE c AS SELECT * FROM read_parquet(?) LIMIT 300", [data_file("california")]
    )

    def train(name: str) -> None:
        cursor = con.cursor()
        ddf.install(cursor)
        cursor.execute(
            f"SELECT * FROM train_latent_diffusion('c', model := '{name}', settings := ?)",
            [settings],
        ).fetchall()
        cursor.close()

    threads = [threading.Thread(target=train, args=(n,)) for n in ("one", "two")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    train("alone")
    graphs = {
        name: json.loads(spec)["graphs"]
        for name, spec in con.execute(
            "SELECT name, spec::VARCHAR FROM duckdb_diffusion.models"
        ).fetchall()
    }
    assert graphs["one"] == graphs["two"] == graphs["alone"]
    con.close()


def test_training_from_sql_trains_once(monkeypatch):
    calls = []
    real_train = ddf.fitting.train_from

    def counting_train(*args, **kwargs):
        calls.append(kwargs["source"])
        return real_train(*args, **kwargs)

    monkeypatch.setattr(ddf.fitting, "train_from", counting_train)
    con = ddf.connect()
    con.execute(
        "CREATE TABLE c AS SELECT * FROM read_parquet(?) LIMIT 300", [data_file("california")]
    )
    settings = json.dumps({**FAST, "max_seconds": 600, "vae_epochs": 1, "diffusion_epochs": 1})
    rows = con.execute("SELECT * FROM train_latent_diffusion('c', settings := ?)", [settings])
    assert len(rows.fetchall()) == 1
    assert calls == ["c"]
    con.close()


def test_reopened_database_in_a_new_process(housing_db, housing):
    ddf.install(housing)
    expected = housing.execute(
        "SELECT * FROM impute_latent_diffusion('housing', seed := 5)"
    ).fetchall()
    housing.close()
    code = f"""
        import duckdb_diffusion as ddf
        con = ddf.connect({str(housing_db)!r}, read_only=True)
        rows = con.execute("SELECT * FROM impute_latent_diffusion('housing', seed := 5)").fetchall()
        print(repr(rows))
        con.close()
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == repr(expected)


@pytest.mark.parametrize(
    ("statement", "message"),
    [
        ("SELECT * FROM impute_latent_diffusion('nope')", "no model named 'nope'"),
        (
            "SELECT * FROM impute_latent_diffusion('nope', model := 'housing')",
            "Table with name nope does not exist",
        ),
        (
            "SELECT * FROM impute_latent_diffusion('housing', model := 'zz')",
            "train_latent_diffusion('housing', model := 'zz')",
        ),
        ("SELECT * FROM synthesize_rows('zz', 5)", "no model named 'zz'"),
        ("SELECT * FROM impute_latent_diffusion('housing', draws := -1)", "parameter draws"),
        ("SELECT * FROM impute_latent_diffusion('housing', seed := -1)", "parameter seed"),
        ("SELECT * FROM impute_latent_diffusion(NULL)", "parameter tbl"),
        ("SELECT * FROM synthesize_rows('housing', -1)", "parameter n"),
        ("SELECT * FROM synthesize_rows('housing', NULL)", "parameter n"),
        ("SELECT * FROM impute_latent_diffusion('housing', bogus := 1)", "does not support"),
        (
            "SELECT * FROM impute_latent_diffusion('(DELETE FROM housing)', model := 'housing')",
            "SELECT",
        ),
        ("SELECT * FROM impute_latent_diffusion('x; DROP TABLE housing')", "x; DROP TABLE housing"),
        ("SELECT * FROM impute_latent_diffusion('(SELECT 1)')", "name the model"),
        ("SELECT * FROM train_latent_diffusion('housing', settings := '[1]')", "JSON object"),
        ("SELECT * FROM train_latent_diffusion('housing', settings := '{\"wat\": 1}')", "wat"),
        ("SELECT * FROM train_latent_diffusion('nope')", "Table with name nope does not exist"),
        (
            "SELECT * FROM impute_latent_diffusion('\"unterminated')",
            "does not parse.*double quotes",
        ),
        ("SELECT * FROM impute_latent_diffusion('')", "parameter tbl must be a non-empty"),
        (
            "SELECT * FROM impute_latent_diffusion('housing', model := '')",
            "parameter model must be a non-empty string",
        ),
        (
            "SELECT * FROM impute_latent_diffusion('housing', model := 'x; DROP TABLE housing')",
            "no model named 'x; DROP TABLE housing'",
        ),
        ("SELECT * FROM synthesize_rows('', 3)", "parameter model must be a non-empty"),
        ("SELECT * FROM synthesize_rows(NULL, 3)", "parameter model must be a non-empty.*NULL"),
        ("SELECT * FROM synthesize_rows('housing', 10 ^ 13)", "parameter n must be"),
        ("SELECT * FROM synthesize_rows('housing', 9223372036854775807)", "parameter n must be"),
        ("SELECT * FROM synthesize_rows('housing', 1.5)", "parameter n must be a whole number"),
        ("SELECT * FROM synthesize_rows('housing', 'ten')", "parameter n must be a whole number"),
        ("SELECT * FROM synthesize_rows('housing', 5, seed := NULL)", "parameter seed.*NULL"),
        ("SELECT * FROM synthesize_rows('housing', 5, seed := 2 ^ 70)", "parameter seed"),
        ("SELECT * FROM synthesize_rows('housing', 5, bogus := 2)", "does not support"),
        (
            "SELECT * FROM impute_latent_diffusion('housing', seed := 18446744073709551615)",
            "parameter seed must be between 0 and 9223372036854775807",
        ),
        ("SELECT * FROM impute_latent_diffusion('housing', draws := NULL)", "parameter draws"),
        ("SELECT * FROM impute_latent_diffusion('housing', draws := 100000)", "parameter draws"),
        (
            "SELECT * FROM train_latent_diffusion('housing', max_seconds := 0)",
            "parameter max_seconds",
        ),
        (
            "SELECT * FROM train_latent_diffusion('housing', max_seconds := 'soon')",
            "parameter max_seconds",
        ),
        (
            "SELECT * FROM train_latent_diffusion('housing', settings := '{\"max_seconds\": -1}')",
            "setting max_seconds must be",
        ),
        (
            "SELECT * FROM train_latent_diffusion('housing', settings := '{\"width\": 1.5}')",
            "setting width must be an integer",
        ),
        (
            "SELECT * FROM train_latent_diffusion('housing', categorical := ['nope'])",
            r"columns \['nope'\] given as categorical",
        ),
        (
            "SELECT * FROM train_latent_diffusion('housing', passthrough := [1, 2])",
            "parameter passthrough must be a list of column names",
        ),
        (
            "SELECT * FROM train_latent_diffusion('housing', model := '')",
            "parameter model must be a non-empty string",
        ),
    ],
)
def test_errors_are_sql_errors_that_say_what_to_do(sql, statement, message):
    with pytest.raises(duckdb.Error, match=message.replace("(", r"\(").replace(")", r"\)")):
        sql.execute(statement).fetchall()
    assert sql.execute("SELECT count(*) FROM housing").fetchall() == [(1500,)]


def test_drifted_table_names_the_columns(sql):
    sql.execute(
        "CREATE OR REPLACE TABLE drifted AS SELECT * EXCLUDE (latitude) "
        "REPLACE (population::VARCHAR AS population) FROM housing"
    )
    # A missing column fails in DuckDB's binder, which names it; a changed kind is ours.
    with pytest.raises(duckdb.Error, match='column "latitude" not found'):
        sql.execute(
            "SELECT * FROM impute_latent_diffusion('drifted', model := 'housing')"
        ).fetchall()
    with pytest.raises(
        duckdb.Error,
        match=r"no longer matches model 'housing'.*population \(DOUBLE in the model, VARCHAR",
    ):
        sql.execute(
            "SELECT * FROM impute_latent_diffusion("
            "'(SELECT * REPLACE (population::VARCHAR AS population) FROM housing)', "
            "model := 'housing')"
        ).fetchall()
    # A column the model has never seen is passed through, wherever it sits.
    sql.execute(
        "CREATE OR REPLACE TABLE widened AS SELECT 'new' || house_id AS extra, *, "
        "CASE WHEN house_id % 2 = 0 THEN NULL ELSE 1.5 END AS also_new FROM housing"
    )
    before = sql.sql("SELECT * FROM widened").to_arrow_table()
    after = sql.sql(
        "SELECT * FROM impute_latent_diffusion('widened', model := 'housing')"
    ).to_arrow_table()
    assert after.column_names == before.column_names
    assert after.column("extra").equals(before.column("extra"))
    assert after.column("also_new").equals(before.column("also_new"))
    assert after.column("total_bedrooms").null_count == 0


def test_functions_survive_the_installing_connection_closing(housing_db):
    """DuckDB segfaults when a UDF outlives its registering connection unless it is kept alive
    (DESIGN.md section 4): run it in a subprocess and check the exit code."""
    code = f"""
        import duckdb, duckdb_diffusion as ddf
        first = duckdb.connect({str(housing_db)!r})
        second = duckdb.connect({str(housing_db)!r})
        ddf.install(first)
        ddf.install(second)
        first.close()
        print(second.execute("SELECT count(*) FROM synthesize_rows('housing', 10)").fetchall())
        second.close()
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "[(10,)]" in done.stdout


def test_edge_tables_and_damaged_models_give_clear_errors():
    con = ddf.connect()
    settings = json.dumps({**FAST, "max_seconds": 3})
    con.execute("CREATE TABLE empty (a DOUBLE, b VARCHAR)")
    con.execute("CREATE TABLE one AS SELECT 1.0 AS a, 'x' AS b")
    con.execute("CREATE TABLE keys_only AS SELECT range AS id, [range] AS l FROM range(50)")
    for table, message in [
        ("empty", "has 0 rows"),
        ("one", "has 1 rows"),
        ("keys_only", r"no column the model can learn \(id: unique integer key"),
    ]:
        with pytest.raises(duckdb.Error, match=message):
            con.execute(
                "SELECT * FROM train_latent_diffusion(?, settings := ?)", [table, settings]
            ).fetchall()

    con.execute(
        "CREATE TABLE t AS SELECT range::DOUBLE AS a, NULL::DOUBLE AS gone, "
        "CASE WHEN range % 4 = 0 THEN NULL ELSE (range % 3)::VARCHAR END AS c FROM range(200)"
    )
    (row,) = con.execute(
        "SELECT modelled_columns FROM train_latent_diffusion('t', settings := ?)", [settings]
    ).fetchall()
    assert row == (2,)  # the all-NULL column is passed through, not learned
    filled = con.execute("SELECT count(*), count(gone), count(c) FROM impute_latent_diffusion('t')")
    assert filled.fetchall() == [(200, 0, 200)]
    con.execute("CREATE TABLE t0 AS SELECT * FROM t LIMIT 0")
    empty = con.execute("SELECT count(*) FROM impute_latent_diffusion('t0', model := 't')")
    assert empty.fetchall() == [(0,)]

    ddf.loading.MODELS.clear()  # forget the loaded model so the damaged one is read
    con.execute("UPDATE duckdb_diffusion.models SET impute_graph = 'garbage'::BLOB")
    with pytest.raises(duckdb.Error, match="impute graph is missing or damaged.*retrain"):
        con.execute("SELECT * FROM impute_latent_diffusion('t')").fetchall()
    con.execute("UPDATE duckdb_diffusion.models SET spec = json_object('format_version', 99)")
    with pytest.raises(duckdb.Error, match="newer duckdb-diffusion.*upgrade"):
        con.execute("SELECT * FROM impute_latent_diffusion('t')").fetchall()
    con.close()


def test_eight_threads_on_cursors_get_the_same_results():
    con = ddf.connect()
    con.execute(
        "CREATE TABLE t AS SELECT * FROM read_parquet(?) LIMIT 3000", [data_file("california")]
    )
    con.execute("UPDATE t SET population = NULL WHERE households % 5 = 0")
    settings = json.dumps({**FAST, "max_seconds": 4})
    con.execute("SELECT * FROM train_latent_diffusion('t', settings := ?)", [settings]).fetchall()
    queries = [
        "SELECT * FROM impute_latent_diffusion('t', seed := 1)",
        "SELECT * FROM synthesize_rows('t', 2000, seed := 2)",
    ]
    expected = [con.execute(q).fetchall() for q in queries]
    errors, finished = [], []

    def work(k: int) -> None:
        try:
            cursor = con.cursor()
            ddf.install(cursor)
            for _ in range(3):
                assert cursor.execute(queries[k % 2]).fetchall() == expected[k % 2]
            cursor.close()
            finished.append(k)
        except Exception as error:  # collected and asserted below, in the main thread
            errors.append(repr(error))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert sorted(finished) == list(range(8))
    con.close()


def test_dropping_an_installed_connection_releases_the_database(tmp_path):
    """install() must not keep a database open (and its file locked) behind the user's back."""
    path = tmp_path / "released.duckdb"
    con = ddf.connect(str(path))
    con.execute("CREATE TABLE t AS SELECT 1 AS a")
    cursor = con.cursor()
    ddf.install(cursor)
    del con, cursor
    gc.collect()
    code = f"""
        import duckdb
        con = duckdb.connect({str(path)!r})
        con.execute("INSERT INTO t VALUES (2)")
        print(con.execute("SELECT count(*) FROM t").fetchall())
        con.close()
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "[(2,)]" in done.stdout


def test_nothing_is_written_outside_the_registry(sql):
    """Imputing, synthesizing and training change no table, view or macro of the user's, and
    no data: the one write is the model's row in duckdb_diffusion.models."""

    def catalog():
        return sql.execute(
            "SELECT 'table', schema_name, table_name FROM duckdb_tables() "
            "WHERE database_name = current_database() "
            "UNION ALL SELECT 'view', schema_name, view_name FROM duckdb_views() "
            "WHERE NOT internal AND NOT temporary "
            "UNION ALL SELECT 'macro', schema_name, function_name FROM duckdb_functions() "
            "WHERE function_type LIKE '%macro' AND NOT internal AND database_name != 'temp' "
            "ORDER BY ALL"
        ).fetchall()

    def contents():
        return sql.execute("SELECT count(*), sum(hash(housing)) FROM housing").fetchall()

    before_catalog, before_contents = catalog(), contents()
    sql.execute("CREATE TEMP TABLE filled AS FROM impute_latent_diffusion('housing')")
    sql.execute("SELECT count(*) FROM synthesize_rows('housing', 100)").fetchall()
    tiny = json.dumps({"max_seconds": 1, "width": 16, "depth": 1, "sampling_steps": 1})
    sql.execute(
        "SELECT * FROM train_latent_diffusion('(SELECT * FROM housing LIMIT 200)', "
        "model := 'written', settings := ?)",
        [tiny],
    ).fetchall()
    assert catalog() == before_catalog
    assert contents() == before_contents
    stored = sql.execute("SELECT name FROM duckdb_diffusion.models ORDER BY name").fetchall()
    assert ("written",) in stored
    sql.execute("DELETE FROM duckdb_diffusion.models WHERE name = 'written'")


def test_models_with_identical_graphs_but_other_columns_stay_apart():
    """Found by the property tests: two tiny constant tables train to bit-identical graphs, so
    loaded models and their UDFs must be told apart by the whole spec, not the graphs."""
    tiny = json.dumps(
        {"width": 8, "depth": 1, "sampling_steps": 1, "vae_epochs": 2, "diffusion_epochs": 2}
    )
    results, graphs = [], []
    for column in ["first", "second"]:
        con = ddf.connect()
        con.execute(f"CREATE TABLE t AS SELECT range AS id, 0 AS {column} FROM range(4)")
        con.execute(f"UPDATE t SET {column} = NULL WHERE id = 2")
        con.execute("SELECT * FROM train_latent_diffusion('t', settings := ?)", [tiny]).fetchall()
        graphs.append(ddf.load_model(con, "t").spec["graphs"])
        results.append(con.sql("SELECT * FROM impute_latent_diffusion('t')").to_arrow_table())
        con.close()
    assert graphs[0] == graphs[1]  # the premise: same weights, other columns
    assert results[0].column_names == ["id", "first"]
    assert results[1].column_names == ["id", "second"]
    assert results[1].column("second").to_pylist() == [0, 0, 0, 0]
