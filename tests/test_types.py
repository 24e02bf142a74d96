"""Awkward types and names through SQL: every modelled type round-trips, passthrough columns
and non-NULL cells (NaN and inf included) come back bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest

import duckdb_diffusion as ddf

from .conftest import FAST

MODELLED = ["price €", "select", "day", "ts", "tstz", 'my "mood"', "flag", "x", "small", "tiny"]
PASSTHROUGH = ["id", "l", "s", "m", "b"]


@pytest.fixture(scope="module")
def odd():
    con = ddf.connect()
    con.execute("CREATE TYPE mood AS ENUM ('sad', 'ok', 'happy')")
    con.execute(
        '''CREATE TABLE "odd table" AS SELECT
          range AS id,
          (range % 97 * 1.25)::DECIMAL(8,2) AS "price €",
          (range * 1000)::HUGEINT AS "select",
          DATE '2020-01-01' + (range % 365)::INTEGER AS "day",
          TIMESTAMP '2021-01-01' + INTERVAL (range) MINUTE AS ts,
          TIMESTAMPTZ '2021-01-01 00:00:00+00' + INTERVAL (range) HOUR AS tstz,
          (['sad', 'ok', 'happy'])[range % 3 + 1]::mood AS "my ""mood""",
          range % 2 = 0 AS flag,
          CASE WHEN range % 50 = 0 THEN 'nan'::DOUBLE WHEN range % 51 = 0 THEN 'inf'::DOUBLE
               ELSE range / 7 END AS x,
          [range, range + 1] AS l, {'a': range} AS s, MAP {'k': range} AS m, 'blob'::BLOB AS b,
          range::SMALLINT AS small, (range % 200)::UTINYINT AS tiny
        FROM range(600)'''
    )
    for name in MODELLED:
        quoted = name.replace('"', '""')
        con.execute(f'UPDATE "odd table" SET "{quoted}" = NULL WHERE id % 7 = 3')
    settings = json.dumps({**FAST, "max_seconds": 6})
    (row,) = con.execute(
        "SELECT name, modelled_columns FROM "
        """train_latent_diffusion('"odd table"', settings := ?)""",
        [settings],
    ).fetchall()
    assert row == ("odd table", len(MODELLED))
    yield con
    con.close()


def same_bits(a: pa.ChunkedArray, b: pa.ChunkedArray) -> bool:
    """Equality that counts NaN == NaN (Arrow's equals does not)."""
    if pa.types.is_floating(a.type):
        x, y = a.to_numpy(), b.to_numpy()
        return x.shape == y.shape and np.array_equal(x.view(np.uint64), y.view(np.uint64))
    return a.equals(b)


def test_every_type_is_imputed_and_nothing_else_changes(odd):
    source = odd.sql('SELECT * FROM "odd table"')
    result = odd.sql("""SELECT * FROM impute_latent_diffusion('"odd table"')""")
    assert [str(t) for t in result.types] == [str(t) for t in source.types]
    before, after = source.to_arrow_table(), result.to_arrow_table()
    for name in MODELLED:
        kept = before.column(name).is_valid()
        assert after.column(name).null_count == 0, name
        assert same_bits(before.column(name).filter(kept), after.column(name).filter(kept)), name
    for name in PASSTHROUGH:
        assert after.column(name).equals(before.column(name)), name
    x, original = after.column("x").to_numpy(), before.column("x").drop_null().to_numpy()
    assert np.isnan(original).sum() > 0 and np.isinf(original).sum() > 0
    assert np.isnan(x).sum() == np.isnan(original).sum()  # NaN and inf are values: kept
    assert np.isinf(x).sum() == np.isinf(original).sum()
    assert set(after.column('my "mood"').to_pylist()) <= {"sad", "ok", "happy"}


def test_synthesis_keeps_every_type(odd):
    source = odd.sql('SELECT * FROM "odd table"')
    synthetic = odd.sql("SELECT * FROM synthesize_rows('odd table', 300, seed := 1)")
    assert [str(t) for t in synthetic.types] == [str(t) for t in source.types]
    table = synthetic.to_arrow_table()
    assert table.column("id").to_pylist() == list(range(600, 900))  # fresh keys
    assert table.column("l").null_count == 300  # nested passthrough: not invented
    days = [d for d in table.column("day").to_pylist() if d is not None]
    assert min(days).year == 2020 and max(days).year == 2020
    tiny = [v for v in table.column("tiny").to_pylist() if v is not None]
    assert 0 <= min(tiny) and max(tiny) <= 199


def test_views_schemas_and_attached_databases(odd, tmp_path):
    odd.execute("CREATE SCHEMA IF NOT EXISTS shop")
    odd.execute(
        'CREATE OR REPLACE VIEW shop."odd view" AS SELECT * FROM "odd table" WHERE id < 100'
    )
    via_view = odd.execute(
        """SELECT count(*), count("price €") FROM impute_latent_diffusion('shop."odd view"', """
        "model := 'odd table')"
    ).fetchall()
    assert via_view == [(100, 100)]
    odd.execute("ATTACH ? AS other", [str(tmp_path / "other.duckdb")])
    odd.execute('CREATE TABLE other.main.copy AS SELECT * FROM "odd table" WHERE id < 50')
    via_attached = odd.execute(
        """SELECT count(*), count(ts) FROM impute_latent_diffusion('"other"."main"."copy"', """
        "model := 'odd table')"
    ).fetchall()
    assert via_attached == [(50, 50)]
    odd.execute("DETACH other")
