"""The command line, run as a user runs it: a subprocess per command."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from .conftest import FAST, data_file

COMMANDS = ["train", "impute", "synthesize", "models", "export", "import", "evaluate", "demo"]


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    script = Path(sys.executable).with_name("duckdb-diffusion")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "duckdb_diffusion.cli"]
    return subprocess.run(
        [*command, *args], capture_output=True, text=True, timeout=timeout, env=dict(os.environ)
    )


@pytest.mark.parametrize("command", [None, *COMMANDS])
def test_help_on_every_command(command):
    done = cli(*([command] if command else []), "--help")
    assert done.returncode == 0, done.stderr
    assert "usage: duckdb-diffusion" in done.stdout


def test_train_impute_synthesize_models(tmp_path):
    db = tmp_path / "shop.duckdb"
    con = duckdb.connect(str(db))
    con.execute(
        "CREATE TABLE customers AS SELECT * FROM read_parquet(?) "
        "USING SAMPLE reservoir(600 ROWS) REPEATABLE (5)",
        [data_file("adult")],
    )
    con.close()

    # The CLI trains with the default settings except the budget; FAST keeps it quick.
    from duckdb_diffusion import api

    con = duckdb.connect(str(db))
    api.train(con, "customers", model="warm", **FAST)  # a second model, for 'models'
    con.close()
    done = cli(
        "train",
        str(db),
        "customers",
        "--max-seconds",
        "6",
        "--categorical",
        "educational-num",
        "--passthrough",
        "fnlwgt",
        "--settings",
        '{"width": 96}',
    )
    assert done.returncode == 0, done.stderr
    assert "name: customers" in done.stdout
    con = duckdb.connect(str(db), read_only=True)
    spec = json.loads(
        con.execute(
            "SELECT spec::VARCHAR FROM duckdb_diffusion.models WHERE name = 'customers'"
        ).fetchall()[0][0]
    )
    con.close()
    kinds = {c["name"]: (c["kind"], c["reason"]) for c in spec["columns"]}
    assert kinds["educational-num"] == ("categorical", "chosen by the user")
    assert kinds["fnlwgt"] == ("passthrough", "chosen by the user")
    assert spec["config"]["width"] == 96
    done = cli("train", str(db), "customers", "--settings", '{"wdth": 1}')
    assert done.returncode == 1 and "unknown training settings ['wdth']" in done.stderr

    done = cli("impute", str(db), "customers", "--into", "customers_filled", "--draws", "2")
    assert done.returncode == 0, done.stderr
    assert "wrote 600 rows" in done.stdout
    con = duckdb.connect(str(db), read_only=True)
    nulls = con.execute(
        "SELECT count(*) - count(workclass), count(*) - count(occupation) FROM customers_filled"
    ).fetchall()
    assert nulls == [(0, 0)]
    con.close()

    out = tmp_path / "synthetic.parquet"
    done = cli("synthesize", str(db), "customers", "-n", "250", "--seed", "3", "--out", str(out))
    assert done.returncode == 0, done.stderr
    synthetic = pq.read_table(out)
    assert synthetic.num_rows == 250
    assert synthetic.column_names[:3] == ["age", "fnlwgt", "educational-num"]

    done = cli("models", str(db))
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[0].startswith("customers\tcustomers\t15 columns\t600 rows")
    assert any(line.startswith("warm\t") for line in done.stdout.splitlines())

    done = cli("impute", str(db), "customers", "--model", "nope")
    assert done.returncode == 1
    assert "no model named 'nope'" in done.stderr and "train_latent_diffusion" in done.stderr


def test_missing_database_is_a_clear_error(tmp_path):
    done = cli("models", str(tmp_path / "absent.duckdb"))
    assert done.returncode == 1
    assert "does not exist" in done.stderr


def test_demo_runs_the_main_job_on_packaged_data():
    done = cli("demo", "--max-seconds", "12")
    assert done.returncode == 0, done.stderr
    assert "Palmer penguins" in done.stdout
    lines = {line.split()[0]: line.split() for line in done.stdout.splitlines() if line.strip()}
    ours, baseline = lines["duckdb-diffusion"], lines["mean/mode"]
    assert float(ours[1]) < float(baseline[2])  # MAE (z): model beats the mean
    assert "synthesize_rows" in done.stdout and "KS" in done.stdout


def test_demo_on_a_user_file(tmp_path):
    path = tmp_path / "houses.parquet"
    con = duckdb.connect()
    con.sql(f"SELECT * FROM read_parquet('{data_file('california')}') LIMIT 400").write_parquet(
        str(path)
    )
    con.close()
    done = cli("demo", "--data", str(path), "--max-seconds", "6")
    assert done.returncode == 0, done.stderr
    assert "houses.parquet: 400 rows, 10 columns" in done.stdout


def test_export_and_import_a_model(housing_db, tmp_path):
    folder = tmp_path / "models"
    done = cli("export", str(housing_db), "housing", str(folder))
    assert done.returncode == 0, done.stderr
    assert "copied to" in done.stdout and (folder / "housing" / "CURRENT").is_file()
    other = tmp_path / "other.duckdb"
    duckdb.connect(str(other)).close()
    done = cli("import", str(other), str(folder), "housing")
    assert done.returncode == 0, done.stderr
    listed = cli("models", str(other))
    assert listed.stdout.startswith("housing\t"), listed.stdout
    missing = cli("export", str(housing_db), "nope", str(folder))
    assert missing.returncode == 1 and "no model named 'nope'" in missing.stderr
