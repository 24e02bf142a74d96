"""A fresh virtual environment with duckdb-diffusion installed without the ``train`` extra (so no
torch) loads a stored model and imputes: inference needs duckdb, pyarrow, numpy and onnxruntime;
and it imports nothing else, pandas included, where pandas is installed."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_a_venv_without_the_train_extra_imputes(tmp_path, housing_db):
    venv = tmp_path / "runtime-venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", str(ROOT)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert install.returncode == 0, install.stderr[-3000:]
    code = textwrap.dedent(
        f"""
        import importlib.util, sys
        assert importlib.util.find_spec("torch") is None, "torch is installed in this venv"
        import duckdb_diffusion as ddf
        con = ddf.connect({str(housing_db)!r}, read_only=True)
        rows = con.execute(
            "SELECT count(*), count(total_bedrooms) FROM impute_latent_diffusion('housing')"
        ).fetchall()
        print(rows)
        con.close()
        import duckdb_diffusion.spark, duckdb_diffusion.ray  # their engines load lazily
        assert not set(["torch", "pyspark", "ray"]) & set(sys.modules), sorted(sys.modules)
        """
    )
    done = subprocess.run(
        [str(python), "-c", code], capture_output=True, text=True, timeout=300, cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "[(1500, 1500)]" in done.stdout


def test_imputing_and_synthesizing_never_import_pandas(housing_db):
    """pyarrow's numpy conversions import pandas on first use (0.15-0.2 s of a fresh process's
    first query); the runtime's own (``arrays.py``) do not, on either function's path."""
    code = textwrap.dedent(
        f"""
        import sys
        import duckdb_diffusion as ddf
        con = ddf.connect({str(housing_db)!r}, read_only=True)
        filled = con.execute(
            "SELECT * FROM impute_latent_diffusion('housing')"
        ).fetchall()
        made = con.execute("SELECT * FROM synthesize_rows('housing', 3000, seed := 1)").fetchall()
        print(len(filled), len(made), "pandas" in sys.modules)
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["1500", "3000", "False"]
