"""The core through the Python API, on a real database file: train, store, impute, synthesize."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import duckdb_diffusion as ddf
from duckdb_diffusion import runtime
from duckdb_diffusion.runtime import Model

from .conftest import FAST, MODELLED, data_file


def table_of(con, sql: str) -> pa.Table:
    return con.sql(sql).to_arrow_table()


def test_train_summary_reports_metrics_and_onnx_agreement(housing):
    (info,) = ddf.models(housing)
    assert info["name"] == "housing"
    assert info["rows"] == 1500
    assert info["modelled_columns"] == 10  # house_id is a key: passed through
    check = info["metrics"]["onnx_check"]
    assert check["rows"] > 0
    for graph in ("impute", "synthesize"):
        assert check[graph]["max_abs_diff"] < 1e-3
        assert check[graph]["category_agreement"] == 1.0
    assert info["metrics"]["diffusion"]["steps"] > 0
    validation = info["metrics"]["validation_imputation"]
    assert validation["held_out"] and validation["rows"] == 150  # 10% of 1,500 rows
    assert validation["numeric_cells"] > 100 and validation["categorical_cells"] > 10
    # scored on cells the model never saw: better than filling means, and than the mode
    assert validation["mae"] < validation["mean_mode_mae"]
    assert validation["accuracy"] > validation["mean_mode_accuracy"]
    ddf.install(housing)
    listed = housing.execute(
        "SELECT metrics->>'$.validation_imputation.mae' FROM latent_diffusion_models()"
    ).fetchall()
    assert float(listed[0][0]) == validation["mae"]


def test_impute_fills_nulls_and_changes_nothing_else(housing):
    source = table_of(housing, "SELECT * FROM housing")
    result = ddf.impute(housing, "housing").to_arrow_table()
    assert result.schema == source.schema
    assert result.num_rows == source.num_rows
    assert result.column("house_id").equals(source.column("house_id"))  # order kept
    for name in MODELLED:
        before, after = source.column(name), result.column(name)
        assert after.null_count == 0, name
        kept = before.is_valid()
        assert after.filter(kept).equals(before.filter(kept)), name  # bit for bit
    levels = set(source.column("ocean_proximity").drop_null().to_pylist())
    assert set(result.column("ocean_proximity").to_pylist()) <= levels
    bedrooms = result.column("total_bedrooms").to_numpy()
    low, high = pa.compute.min_max(source.column("total_bedrooms")).values()
    assert low.as_py() <= bedrooms.min() and bedrooms.max() <= high.as_py()


def test_imputation_beats_mean_fill_on_hidden_cells(housing):
    """Hide known cells of complete rows; the model must guess them better than the mean."""
    housing.execute(
        "CREATE OR REPLACE TABLE probe AS SELECT * REPLACE ("
        "CASE WHEN house_id % 3 = 0 THEN NULL ELSE households END AS households) "
        "FROM housing WHERE households IS NOT NULL"
    )
    truth = table_of(housing, "SELECT households FROM housing WHERE households IS NOT NULL")
    filled = ddf.impute(housing, "probe", model="housing").to_arrow_table()
    hidden = (table_of(housing, "SELECT house_id FROM probe").column(0).to_numpy() % 3) == 0
    true = truth.column(0).to_numpy()[hidden]
    guess = filled.column("households").to_numpy()[hidden]
    model_error = np.abs(guess - true).mean()
    mean_error = np.abs(true.mean() - true).mean()
    assert model_error < 0.85 * mean_error, (model_error, mean_error)


def test_same_seed_same_output_whatever_the_batch_size(housing):
    one = ddf.impute(housing, "housing", seed=3).to_arrow_table()
    model = ddf.load_model(housing, "housing")
    raw = housing.sql("SELECT * FROM housing").to_arrow_table()
    for draws in (0, 2):  # the same rows cut into batches of 97 by the runtime itself
        parts = [model.impute_batch(b, 3, draws) for b in raw.to_batches(max_chunksize=97)]
        whole = ddf.impute(housing, "housing", seed=3, draws=draws).to_arrow_table()
        assert pa.Table.from_batches(parts).cast(whole.schema).equals(whole)
    housing.execute("SET threads = 1")
    assert ddf.impute(housing, "housing", seed=3).to_arrow_table().equals(one)
    housing.execute("RESET threads")
    sampled = ddf.impute(housing, "housing", seed=3, draws=2).to_arrow_table()
    assert not sampled.equals(ddf.impute(housing, "housing", seed=4, draws=2).to_arrow_table())
    assert not sampled.equals(one)  # random draws, not the posterior centre
    assert ddf.impute(housing, "housing", seed=99).to_arrow_table().equals(one)  # no noise


def test_synthesis_is_deterministic_across_batches(housing):
    one = ddf.synthesize(housing, "housing", n=700, seed=7).to_arrow_table()
    model = ddf.load_model(housing, "housing")
    parts = [model.synthesize_batch(start, 64, 7) for start in range(0, 704, 64)]
    two = pa.Table.from_batches(parts).slice(0, 700).cast(one.schema)
    assert one.equals(two)
    assert not ddf.synthesize(housing, "housing", n=700, seed=8).to_arrow_table().equals(one)


def test_rows_begun_ahead_are_the_rows_asked_for(housing):
    """A scan's next ranges are begun before they are asked for (``runtime._Ahead``): what
    the scan gets, its last and shorter range included, is what each range gives made alone,
    and nothing is begun past the scan's end where the scan says where it ends."""
    model = ddf.load_model(housing, "housing")
    assert model.side_by_side
    sizes, starts, end = [2048, 2048, 1500], [0, 2048, 4096], 5644
    scanned = [
        model.synthesize_batch(start, n, 5, end=end) for start, n in zip(starts, sizes, strict=True)
    ]
    assert model._ahead.take(5, np.arange(end, end + 100)) is None  # nothing past the end
    alone = Model(model.artifact)  # nothing begun: every range made when asked for
    for start, n, batch in reversed(list(zip(starts, sizes, scanned, strict=True))):
        assert alone.synthesize_batch(start, n, 5).equals(batch)
    assert not scanned[0].equals(alone.synthesize_batch(0, 2048, 6))

    # with no end given, the ranges after the last one asked for are begun
    model.synthesize_batch(0, 2048, 9)
    for k in range(1, runtime.AHEAD_RANGES + 1):
        assert model._ahead.take(9, np.arange(k * 2048, (k + 1) * 2048)) is not None
    # but not after a range long enough to keep the pool busy by itself
    long = runtime.AHEAD_MAX_ROWS + 1
    model.synthesize_batch(0, long, 9)
    assert model._ahead.take(9, np.arange(long, 2 * long)) is None


def test_synthesis_keeps_schema_ranges_categories_and_null_rates(housing):
    source = table_of(housing, "SELECT * FROM housing")
    relation = ddf.synthesize(housing, "housing", n=4000, seed=1)
    described = [(n, str(t)) for n, t in zip(relation.columns, relation.types, strict=True)]
    expected = housing.sql("SELECT * FROM housing")
    assert described == [(n, str(t)) for n, t in zip(expected.columns, expected.types, strict=True)]
    synthetic = relation.to_arrow_table()
    assert synthetic.num_rows == 4000
    for name in MODELLED:
        real, fake = source.column(name), synthetic.column(name)
        real_rate, fake_rate = real.null_count / len(real), fake.null_count / len(fake)
        assert abs(real_rate - fake_rate) < 0.03, (name, real_rate, fake_rate)
        if pa.types.is_floating(real.type):
            low, high = pa.compute.min_max(real).values()
            values = fake.drop_null().to_numpy()
            assert low.as_py() <= values.min() and values.max() <= high.as_py(), name
    levels = set(source.column("ocean_proximity").drop_null().to_pylist())
    assert set(synthetic.column("ocean_proximity").drop_null().to_pylist()) <= levels
    ids = synthetic.column("house_id").to_numpy()
    assert (
        len(np.unique(ids)) == len(ids) and ids.min() > source.column("house_id").to_numpy().max()
    )


def test_integer_columns_stay_integral_on_real_nulls(tmp_path):
    """adult has real NULLs (workclass, occupation, native-country) and BIGINT columns."""
    con = duckdb.connect(str(tmp_path / "adult.duckdb"))
    con.execute(
        "CREATE TABLE adult AS SELECT * FROM read_parquet(?) "
        "USING SAMPLE reservoir(1500 ROWS) REPEATABLE (2)",
        [data_file("adult")],
    )
    con.execute("UPDATE adult SET age = NULL WHERE fnlwgt % 5 = 0")
    ddf.train(con, "adult", **FAST)
    result = ddf.impute(con, "adult").to_arrow_table()
    assert str(con.sql("SELECT * FROM adult").types[0]) == "BIGINT"
    assert result.column("age").null_count == 0
    assert result.column("workclass").null_count == 0
    assert result.column("age").type == pa.int64()
    synthetic = ddf.synthesize(con, "adult", n=500, seed=2).to_arrow_table()
    ages = synthetic.column("age").drop_null().to_numpy()
    assert ages.min() >= 17 and ages.max() <= 90
    con.close()


def run_python(code: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **(env or {})},
    )


def test_new_process_finds_the_model_and_imputes_the_same_with_one_thread(housing_db, housing):
    expected = ddf.impute(housing, "housing", seed=5).to_arrow_table()
    housing.close()  # a read-write connection would hold the file's lock
    code = f"""
        import duckdb, duckdb_diffusion as ddf, pyarrow as pa
        con = duckdb.connect({str(housing_db)!r}, read_only=True)
        assert ddf.install(con) == ["housing"]
        table = ddf.impute(con, "housing", seed=5).to_arrow_table()
        with pa.OSFile(sys.argv[0] if False else {str(housing_db) + ".arrow"!r}, "wb") as sink:
            with pa.ipc.new_file(sink, table.schema) as writer:
                writer.write_table(table)
    """
    done = run_python(code, {"DUCKDB_DIFFUSION_THREADS": "1"})
    assert done.returncode == 0, done.stderr
    got = pa.ipc.open_file(str(housing_db) + ".arrow").read_all()
    assert got.equals(expected)


def test_runtime_imputes_without_torch(housing_db):
    """A process where torch cannot be imported loads the stored model and imputes."""
    code = f"""
        import sys, importlib.abc
        class NoTorch(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path, target=None):
                if name == "torch" or name.startswith("torch."):
                    raise ImportError("torch is blocked in this test")
        sys.meta_path.insert(0, NoTorch())
        import duckdb, duckdb_diffusion as ddf
        con = duckdb.connect({str(housing_db)!r}, read_only=True)
        out = ddf.impute(con, "housing").to_arrow_table()
        assert out.column("total_bedrooms").null_count == 0
        assert not any(m == "torch" or m.startswith("torch.") for m in sys.modules)
        try:
            ddf.train(con, "housing")
        except ImportError as error:
            print("TRAIN:", error)
    """
    done = run_python(code)
    assert done.returncode == 0, done.stderr
    assert "duckdb-diffusion[train]" in done.stdout


def test_directory_registry_round_trip(tmp_path, housing):
    folder = tmp_path / "models"
    ddf.train(
        housing,
        "(SELECT * FROM housing WHERE house_id <= 800)",
        model="small",
        model_dir=folder,
        **FAST,
    )
    live = (folder / "small" / "CURRENT").read_text()
    spec = json.loads((folder / "small" / live / "spec.json").read_text())
    assert spec["format_version"] == 1 and "torch" in spec["versions"]
    other = duckdb.connect()
    other.execute(
        "CREATE TABLE t AS SELECT * FROM read_parquet(?) LIMIT 50", [data_file("california")]
    )
    other.execute("UPDATE t SET population = NULL WHERE longitude < -120")
    out = ddf.impute(other, "t", model="small", model_dir=folder).to_arrow_table()
    assert out.column("population").null_count == 0
    assert "small" not in [m["name"] for m in ddf.models(housing)]
    other.close()


def test_errors_name_what_is_wrong(housing):
    with pytest.raises(ddf.SourceError, match="table 'nope' was not found"):
        ddf.impute(housing, "nope", model="housing")
    with pytest.raises(ddf.ModelNotFoundError, match="train_latent_diffusion"):
        ddf.impute(housing, "housing", model="missing_model")
    with pytest.raises(ValueError, match="draws"):
        ddf.impute(housing, "housing", draws=-1)
    with pytest.raises(ValueError, match="seed"):
        ddf.synthesize(housing, "housing", n=3, seed=-1)
    with pytest.raises(ValueError, match="name the model"):
        ddf.impute(housing, "(SELECT * FROM housing)")
    with pytest.raises(ddf.SourceError, match="SELECT"):
        ddf.impute(housing, "(DROP TABLE housing)", model="housing")
    housing.execute(
        "CREATE OR REPLACE TABLE drifted AS SELECT * EXCLUDE (latitude) "
        "REPLACE (population::VARCHAR AS population) FROM housing"
    )
    with pytest.raises(
        ddf.SourceError, match=r"latitude.*population \(DOUBLE in the model, VARCHAR"
    ):
        ddf.impute(housing, "drifted", model="housing")
    assert housing.execute("SELECT count(*) FROM housing").fetchall() == [(1500,)]


def test_training_is_reproducible_when_epochs_end_it(tmp_path):
    """Same seed, same data, an epoch cap that ends training before the clock: same model."""
    settings = {**FAST, "max_seconds": 600, "vae_epochs": 2, "diffusion_epochs": 2}
    digests = []
    for run in range(2):
        con = duckdb.connect(str(tmp_path / f"run{run}.duckdb"))
        con.execute(
            "CREATE TABLE t AS SELECT * FROM read_parquet(?) LIMIT 400", [data_file("california")]
        )
        ddf.train(con, "t", seed=11, **settings)
        spec = json.loads(
            con.execute("SELECT spec::VARCHAR FROM duckdb_diffusion.models").fetchall()[0][0]
        )
        digests.append(spec["graphs"])
        con.close()
    assert digests[0] == digests[1]


def test_training_stops_by_convergence_and_is_then_reproducible(tmp_path):
    """With time to spare, the denoiser stops when its validation loss no longer improves at
    its lowest learning rate, after lowering it on each plateau: the stopping point depends
    on the data and the seed only, so two trainings are the same model."""
    settings = {**FAST, "max_seconds": 600, "width": 16, "depth": 1, "patience": 2}
    settings["diffusion_epochs"] = 100_000  # not the epoch cap: convergence must end it
    digests, stops = [], []
    for run in range(2):
        con = duckdb.connect(str(tmp_path / f"run{run}.duckdb"))
        con.execute(
            "CREATE TABLE t AS SELECT * FROM read_parquet(?) LIMIT 400", [data_file("california")]
        )
        summary = ddf.train(con, "t", seed=5, **settings)
        stops.append(summary["metrics"]["diffusion"])
        spec = json.loads(
            con.execute("SELECT spec::VARCHAR FROM duckdb_diffusion.models").fetchall()[0][0]
        )
        digests.append(spec["graphs"])
        con.close()
    assert stops[0]["stopped_by"] == "converged"
    assert stops[0]["learning_rate_decays"] == 3
    assert stops[0]["seconds"] < 300  # long before the budget
    assert digests[0] == digests[1]


def test_the_batch_paths_give_what_sql_gives(housing):
    ddf.install(housing)
    sql = housing.sql("SELECT * FROM impute_latent_diffusion('housing', seed := 2)")
    batches = ddf.impute_batches(housing, "housing", seed=2, batch_rows=300)
    assert pa.Table.from_batches(list(batches)).equals(sql.to_arrow_table())
    expected = housing.sql("SELECT * FROM synthesize_rows('housing', 700, seed := 2)")
    expected = expected.to_arrow_table()
    batches = ddf.synthesize_batches(housing, "housing", 700, seed=2, batch_rows=256)
    assert pa.Table.from_batches(list(batches)).cast(expected.schema).equals(expected)


def test_planning_reads_the_graphs_of_a_model_not_loaded_yet(housing_db, tmp_path, monkeypatch):
    """A query's planning reads a stored model's spec; its graphs (megabytes, checksummed) only
    when no model with that spec is loaded. Storing the model again (a new spec) reads them."""
    from duckdb_diffusion.artifact import Artifact
    from duckdb_diffusion.registry import DatabaseRegistry, registry_for

    path = tmp_path / "copy.duckdb"
    shutil.copy(housing_db, path)
    con = duckdb.connect(str(path))
    ddf.install(con)
    reads = []
    load = DatabaseRegistry.load
    monkeypatch.setattr(
        DatabaseRegistry, "load", lambda self, name: reads.append(name) or load(self, name)
    )
    ddf.loading.MODELS.clear()
    for _ in range(2):
        con.execute(
            "CREATE OR REPLACE TEMP TABLE filled AS FROM impute_latent_diffusion('housing')"
        )
    first = ddf.load_model(con, "housing")
    assert reads == ["housing"]
    assert con.execute("SELECT count(*) FROM filled WHERE total_bedrooms IS NULL").fetchall() == [
        (0,)
    ]

    stored = first.artifact
    registry_for(con).save(Artifact.create({**stored.spec, "note": "stored again"}, stored.graphs))
    second = ddf.load_model(con, "housing")
    assert reads == ["housing", "housing"] and second is not first
    assert second.artifact.spec["note"] == "stored again"
    con.close()
