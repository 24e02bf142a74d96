"""`dbt build` on examples/dbt with 4 threads, through the duckdb_diffusion.dbt plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow as pa

PROJECT = Path(__file__).resolve().parents[1] / "examples" / "dbt"


def test_dbt_build_imputes_and_synthesizes(tmp_path):
    project = tmp_path / "project"
    shutil.copytree(PROJECT, project, ignore=shutil.ignore_patterns("target", "logs", "*.duckdb*"))
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
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert "ERROR=0" in done.stdout

    con = duckdb.connect(str(database), read_only=True)
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
