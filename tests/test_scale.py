"""Sizes and values at the edges, through SQL: wide tables, huge vocabularies, megabyte strings,
extreme magnitudes, infinite dates, duplicates and empty rows, and a table streamed through
imputation in bounded memory."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

import duckdb_diffusion as ddf

from .conftest import data_file
from .test_core import run_python
from .test_types import same_bits

TINY = json.dumps({"max_seconds": 2, "width": 32, "depth": 1, "sampling_steps": 2})


def train(con, table: str, **params) -> tuple:
    named = "".join(f", {key} := {value}" for key, value in params.items())
    return con.execute(
        f"SELECT name, modelled_columns FROM train_latent_diffusion(?, settings := ?{named})",
        [table, TINY],
    ).fetchall()[0]


def assert_only_nulls_filled(before: pa.Table, after: pa.Table, filled: list[str]) -> None:
    assert after.schema == before.schema
    assert after.num_rows == before.num_rows
    for name in before.column_names:
        kept = before.column(name).is_valid()
        assert same_bits(before.column(name).filter(kept), after.column(name).filter(kept)), name
        if name in filled:
            assert after.column(name).null_count == 0, name


def test_five_hundred_columns():
    con = ddf.connect()
    columns = ", ".join(
        f"CASE WHEN hash(range, {i}) % 10 = 0 THEN NULL ELSE "
        + (f"(range * {i + 1}) % 97 + 0.5" if i % 5 else f"'L' || ((range + {i}) % 4)")
        + f" END AS c{i}"
        for i in range(500)
    )
    con.execute(f"CREATE TABLE wide AS SELECT {columns} FROM range(300)")
    assert train(con, "wide") == ("wide", 500)
    before = con.sql("SELECT * FROM wide").to_arrow_table()
    after = con.sql("SELECT * FROM impute_latent_diffusion('wide', draws := 2)").to_arrow_table()
    assert_only_nulls_filled(before, after, before.column_names)
    synthetic = con.sql("SELECT * FROM synthesize_rows('wide', 400)").to_arrow_table()
    assert synthetic.schema == before.schema and synthetic.num_rows == 400
    con.close()


def test_a_column_with_a_hundred_thousand_levels():
    """Inferred as an identifier and passed through; chosen as categorical, it is learned over
    its frequent levels (rare ones share a bucket), so the graph stays small."""
    con = ddf.connect()
    con.execute(
        "CREATE TABLE shop AS SELECT CASE WHEN range % 2 = 0 THEN 'common-' || (range % 10 // 2) "
        "ELSE 'sku-' || range END AS sku, (range % 10)::DOUBLE AS x FROM range(200000)"
    )
    con.execute("UPDATE shop SET sku = NULL WHERE x = 4")
    con.execute("UPDATE shop SET x = NULL WHERE (hash(sku) % 7 = 0 AND sku IS NOT NULL)")
    levels = con.execute("SELECT count(DISTINCT sku) FROM shop").fetchall()[0][0]
    assert levels > 100_000

    assert train(con, "shop") == ("shop", 1)  # sku: mostly unique text, passed through
    counts = "SELECT count(*), count(sku), count(x) FROM impute_latent_diffusion('shop'"
    assert con.execute(counts + ")").fetchall() == [(200_000, 180_000, 200_000)]

    assert train(con, "shop", model="'by_sku'", categorical="['sku']") == ("by_sku", 2)
    size = con.execute("SELECT size FROM latent_diffusion_models() WHERE name = 'by_sku'")
    assert size.fetchall()[0][0] < 2_000_000
    before = con.sql("SELECT * FROM shop").to_arrow_table()
    after = con.sql(counts.replace("count(*), count(sku), count(x)", "*") + ", 'by_sku')")
    after = after.to_arrow_table()
    assert_only_nulls_filled(before, after, ["sku", "x"])
    known = set(before.column("sku").drop_null().to_pylist())
    assert set(after.column("sku").to_pylist()) <= known
    con.close()


def test_megabyte_strings():
    con = ddf.connect()
    con.execute(
        "CREATE TABLE docs AS SELECT CASE WHEN range % 9 = 0 THEN NULL "
        "ELSE repeat(chr(65 + (range % 3)::INTEGER), 1000000) END AS body, "
        "repeat('x', 1000000) || range AS unique_body, "
        "CASE WHEN range % 5 = 0 THEN NULL ELSE range % 11 END AS v FROM range(120)"
    )
    assert train(con, "docs") == ("docs", 2)
    before = con.sql("SELECT * FROM docs").to_arrow_table()
    after = con.sql("SELECT * FROM impute_latent_diffusion('docs')").to_arrow_table()
    assert_only_nulls_filled(before, after, ["body", "v"])
    assert set(after.column("body").to_pylist()) <= set(before.column("body").to_pylist())
    made = con.execute(
        "SELECT count(*), min(length(body)), count(unique_body) FROM synthesize_rows('docs', 50)"
    ).fetchall()
    assert made == [(50, 1_000_000, 0)]
    con.close()


def test_extreme_values_infinite_dates_duplicates_and_empty_rows():
    con = ddf.connect()
    con.execute(
        """CREATE TABLE v AS SELECT
          CASE WHEN range % 5 = 0 THEN NULL ELSE (range % 13 + 1) * 1e300 END AS huge,
          CASE WHEN range % 6 = 0 THEN NULL ELSE (range % 17 + 1) * 1e-300 END AS tiny,
          CASE WHEN range % 7 = 0 THEN NULL WHEN range = 1 THEN 'infinity'::DATE
               WHEN range = 2 THEN '-infinity'::DATE ELSE DATE '2020-01-01' + range::INTEGER
               END AS d,
          CASE WHEN range % 8 = 0 THEN NULL WHEN range = 3 THEN 'infinity'::TIMESTAMP
               ELSE TIMESTAMP '2020-01-01' + INTERVAL (range) HOUR END AS ts,
          CASE WHEN range % 10 = 0 THEN NULL WHEN range = 4 THEN '-infinity'::TIMESTAMPTZ
               ELSE TIMESTAMPTZ '2020-01-01 00:00:00+00' + INTERVAL (range) MINUTE END AS tz,
          CASE WHEN range % 9 = 0 THEN NULL ELSE ['a', 'b', 'c'][range % 3 + 1] END AS c
        FROM range(400)
        UNION ALL SELECT NULL, NULL, NULL, NULL, NULL, NULL FROM range(30)
        UNION ALL SELECT 5e300, 5e-300, DATE '2020-02-02', NULL, NULL, 'a' FROM range(100)"""
    )
    assert train(con, "v") == ("v", 6)
    before = con.sql("SELECT * FROM v").to_arrow_table()
    after = con.sql("SELECT * FROM impute_latent_diffusion('v')").to_arrow_table()
    everything = before.column_names
    assert_only_nulls_filled(before, after, everything)
    for name in ["huge", "tiny"]:
        seen, values = before.column(name).drop_null().to_numpy(), after.column(name).to_numpy()
        assert 1e-301 < seen.min() and seen.max() < 1e302
        assert np.all((values >= seen.min()) & (values <= seen.max())), name
    days = before.column("d").cast(pa.int32()).to_numpy(zero_copy_only=False)
    assert days[1] == 2**31 - 1 and days[2] == -(2**31 - 1)  # ±infinity: kept (bits checked)
    synthetic = con.sql("SELECT * FROM synthesize_rows('v', 500)").to_arrow_table()
    made = synthetic.column("d").drop_null().cast(pa.int32()).to_numpy()
    finite = days[np.abs(days) < 2**31 - 1]
    assert made.min() >= finite.min() and made.max() <= finite.max()  # infinity not sampled

    # A level never seen in training is kept as it is, and the rest of its row is filled.
    con.execute("CREATE TABLE v2 AS SELECT * REPLACE (replace(c, 'a', 'never seen') AS c) FROM v")
    seen = con.execute(
        "SELECT count(*), count(huge), count(*) FILTER (c = 'never seen') "
        "FROM impute_latent_diffusion('v2', model := 'v')"
    )
    unseen = before.column("c").to_pylist().count("a")
    assert seen.fetchall() == [(530, 530, unseen)]
    con.close()


STREAM = """
    import json, duckdb_diffusion as ddf

    def peak_mb():  # VmHWM: this process's own high-water mark (ru_maxrss survives exec)
        with open("/proc/self/status") as status:
            line = next(line for line in status if line.startswith("VmHWM"))
        return int(line.split()[1]) / 1024

    con = ddf.connect({path!r})
    con.execute("SET memory_limit = '150MB'")
    start = peak_mb()
    imputed = "SELECT * FROM impute_latent_diffusion('big', draws := 1)"
    con.execute(f"COPY ({{imputed}}) TO {out!r} (FORMAT parquet)")
    print(json.dumps({{"start_mb": start, "peak_mb": peak_mb()}}))
    con.close()
"""


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads Linux's VmHWM")
def test_a_table_larger_than_the_memory_it_may_use_streams_through(tmp_path):
    """Two million rows (over 600 MB as Arrow) imputed with a 150 MB DuckDB memory limit: the
    process's peak stays well below the table's size, so nothing holds the whole table."""
    rows = 2_000_000
    path, out = tmp_path / "big.duckdb", tmp_path / "out.parquet"
    con = ddf.connect(str(path))
    con.execute(
        f"""CREATE TABLE big AS SELECT * REPLACE (
              CASE WHEN hash(i, 1) % 5 = 0 THEN NULL ELSE median_income END AS median_income,
              CASE WHEN hash(i, 2) % 5 = 0 THEN NULL ELSE ocean_proximity END AS ocean_proximity),
            repeat(md5(i::VARCHAR), 8) AS note
          FROM (SELECT range AS i FROM range({rows})) r
          JOIN (SELECT row_number() OVER () - 1 AS j, * FROM read_parquet(?)) c
            ON r.i % 20433 = c.j ORDER BY i""",
        [data_file("california")],
    )
    con.execute("ALTER TABLE big DROP i")
    con.execute("ALTER TABLE big DROP j")
    train(con, "(SELECT * FROM big LIMIT 20000)", model="'big'", passthrough="['note']")
    arrow_mb = con.execute(
        "SELECT (sum(strlen(note)) + count(*) * 9 * 8) / 2 ^ 20 FROM big"
    ).fetchall()[0][0]
    con.close()

    done = run_python(STREAM.format(path=str(path), out=str(out)))
    assert done.returncode == 0, done.stderr
    memory = json.loads(done.stdout.strip().splitlines()[-1])
    assert arrow_mb > 600
    assert memory["peak_mb"] < 0.75 * arrow_mb, memory

    check = ddf.connect()
    counts = check.execute(
        "SELECT count(*), count(median_income), count(ocean_proximity) FROM read_parquet(?)",
        [str(out)],
    ).fetchall()
    assert counts == [(rows, rows, rows)]
    check.close()
