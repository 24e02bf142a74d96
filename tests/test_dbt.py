"""`dbt build` on examples/dbt with 4 threads, through the duckdb_diffusion.dbt plugin: dbt's
default (view) materialization for the imputed and synthetic models, the training model as a
table; and the error a view-materialized training model gets."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa

import duckdb_diffusion as ddf

PROJECT = Path(__file__).resolve().parents[1] / "examples" / "dbt"


def dbt_build(tmp_path: Path, edit=None) -> tuple[subprocess.CompletedProcess, Path]:
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
    if edit is not None:
        edit(project)
    database = tmp_path / "warehouse.duckdb"
    dbt = Path(sys.executable).with_name("dbt")
    done = subprocess.run(
        [str(dbt), "build", "--threads", "4", "--profiles-dir", ".", "--project-dir", "."]
        + ["--vars", "{train_seconds: 8}"],
        cwd=project,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "DDF_EXAMPLE_DB": str(database), "DBT_SEND_ANONYMOUS_USAGE_STATS": "0"},
    )
    return done, database


def test_dbt_build_imputes_and_synthesizes(tmp_path):
    done, database = dbt_build(tmp_path)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "ERROR=0" in done.stdout

    con = duckdb.connect(str(database), read_only=True)
    listed = con.execute("SELECT view_name FROM duckdb_views() WHERE NOT internal").fetchall()
    views = {name for (name,) in listed}
    assert {"customers_imputed", "customers_synthetic", "segment_summary"} <= views
    ddf.install(con)  # the views call the functions, so reading them needs them installed
    raw = con.sql("SELECT * FROM raw_customers").to_arrow_table()
    imputed = con.sql("SELECT * FROM customers_imputed").to_arrow_table()
    assert raw.num_rows == imputed.num_rows == 1500
    assert imputed.schema == raw.schema
    assert imputed.column("customer_id").equals(raw.column("customer_id"))
    for name in ("age", "income", "segment"):
        assert raw.column(name).null_count > 0
        assert imputed.column(name).null_count == 0
        kept = raw.column(name).is_valid()
        assert imputed.column(name).filter(kept).equals(raw.column(name).filter(kept))
    synthetic = con.sql("SELECT * FROM customers_synthetic").to_arrow_table()
    assert synthetic.num_rows == 1000
    assert pa.compute.min(synthetic.column("customer_id")).as_py() >= 1500  # fresh keys
    summary = con.execute("SELECT segment, customers FROM segment_summary").fetchall()
    assert {s for s, _ in summary} == {"premium", "standard", "student"}
    assert sum(n for _, n in summary) == 1500
    (model,) = con.execute(
        "SELECT name, CAST(spec->>'$.metrics.rows' AS INTEGER) FROM duckdb_diffusion.models"
    ).fetchall()
    assert model == ("customers", 1500)
    con.close()


def test_a_view_materialized_training_model_gets_an_error_naming_the_fix(tmp_path):
    def as_view(project: Path) -> None:
        sql = project / "models" / "customer_model.sql"
        sql.write_text(sql.read_text().replace("materialized='table'", "materialized='view'"))

    done, _ = dbt_build(tmp_path, as_view)
    assert done.returncode != 0
    assert "no model named 'customers'" in done.stdout
    assert "call train_latent_diffusion, but a view never trains" in done.stdout
    assert "materialize the training model as a table" in done.stdout
