"""Shared fixtures: real data from ../shared/data, and models trained once per test session.

Training budgets are short (seconds) so the suite stays quick on 2 cores; the quality of a
full-budget model is measured by benchmarks/, not here.
"""

from __future__ import annotations

from pathlib import Path

import duckdb
import pytest

import duckdb_diffusion as ddf

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
# The housing model's modelled columns (house_id, a key, is passed through).
MODELLED = [
    "longitude",
    "latitude",
    "housing_median_age",
    "total_rooms",
    "total_bedrooms",
    "population",
    "households",
    "median_income",
    "median_house_value",
    "ocean_proximity",
]
# Small, quick models. No distilled student: a 12 s budget has no quarter to spare for one
# (test_distil.py trains them, the default setting included).
FAST = {
    "max_seconds": 12,
    "width": 128,
    "depth": 2,
    "progress": False,
    "sampling_steps": 6,
    "distilled_steps": 0,
}


def data_file(name: str) -> str:
    path = (DATA / f"{name}.parquet").resolve()
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests read ../shared/data beside the repository")
    return str(path)


@pytest.fixture(scope="session")
def housing_db(tmp_path_factory) -> Path:
    """A database file with 'housing' (california sample, an id column, injected NULLs) and a
    model trained on it."""
    path = tmp_path_factory.mktemp("db") / "warehouse.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE housing AS SELECT row_number() OVER () AS house_id, * FROM ("
        "SELECT * FROM read_parquet(?) USING SAMPLE reservoir(1500 ROWS) REPEATABLE (1))",
        [data_file("california")],
    )
    con.execute("SELECT setseed(0.25)")
    con.execute("UPDATE housing SET total_bedrooms = NULL WHERE random() < 0.25")
    con.execute("UPDATE housing SET median_income = NULL WHERE random() < 0.15")
    con.execute("UPDATE housing SET ocean_proximity = NULL WHERE random() < 0.2")
    ddf.train(con, "housing", **FAST)
    con.close()
    return path


@pytest.fixture
def housing(housing_db):
    con = duckdb.connect(str(housing_db))
    yield con
    con.close()
