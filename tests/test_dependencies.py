"""A column that another column determines (a grade's code beside its name, a city beside its
zip code) comes out determined: every synthetic row pairs them as the real rows do, a NULL
derived cell is filled from its source, and a NULL source cell from a one-to-one derived
cell; observed cells stay as they were (through SQL)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

import duckdb_diffusion as ddf
from duckdb_diffusion.dependencies import Dependencies
from duckdb_diffusion.encoding import Encoder
from duckdb_diffusion.schema import CATEGORICAL, NUMERIC, ColumnSpec

from .conftest import FAST

GRADES = {"primary": 4, "middle": 8, "high": 12, "bachelor": 16, "master": 18, "doctor": 21}
REGIONS = {"north": "cold", "east": "mild", "south": "warm", "west": "mild"}


def _school(con, rows: int = 3000) -> None:
    levels = ", ".join(f"'{g}'" for g in GRADES)
    years = "CASE grade " + " ".join(f"WHEN '{g}' THEN {y}" for g, y in GRADES.items())
    climate = "CASE region " + " ".join(f"WHEN '{r}' THEN '{c}'" for r, c in REGIONS.items())
    con.execute(
        f"""CREATE TABLE school AS SELECT grade, ({years} END)::INTEGER AS years, region,
                ({climate} END) AS climate, round(30 + 2 * ({years} END) + noise, 1) AS income
            FROM (SELECT ([{levels}])[1 + (hash(range, 'g') % 6)::INTEGER] AS grade,
                         (['north', 'east', 'south', 'west'])[1 + (hash(range, 'r') % 4)::INTEGER]
                           AS region,
                         (hash(range, 'n') % 1000) / 100.0 AS noise
                  FROM range({rows}))"""
    )


def test_synthetic_rows_keep_a_determined_column_determined_and_imputation_uses_it():
    con = ddf.connect()
    _school(con)
    settings = {**FAST, "max_seconds": 60, "diffusion_epochs": 5}  # a model that knows little
    con.execute(
        "SELECT * FROM train_latent_diffusion('school', settings := ?)", [json.dumps(settings)]
    ).fetchall()
    summary = con.sql("SELECT metrics FROM latent_diffusion_models()").fetchall()[0][0]
    found = set(json.loads(summary)["dependencies"])
    # grade <-> years one to one (one of them is the source), region -> climate (many to one)
    assert {"grade -> years", "years -> grade"} & found and "region -> climate" in found
    assert "climate -> region" not in found and not any("income" in d for d in found)
    # a derived column's cells are always looked up: no trees are spent on them
    trees = json.loads(summary)["trees"]
    fitted = {("grade", "region", "climate")[int(j)] for j in trees["rounds"]}
    fitted |= {("years", "income")[int(j)] for j in trees["numeric_rounds"]}
    derived = {d.split(" -> ")[1] for d in found}
    assert "climate" in derived and not fitted & derived
    assert {"region", "income"} <= fitted and {"grade", "years"} - derived <= fitted

    rows = con.sql("SELECT * FROM synthesize_rows('school', 3000, seed := 2)").fetchall()
    pairs = [(g, y) for g, y, *_ in rows if g is not None and y is not None]
    assert len(pairs) > 2500 and all(GRADES[g] == y for g, y in pairs)
    assert all(REGIONS[r] == c for _, _, r, c, _ in rows if r is not None and c is not None)
    # given a derived value, its one source value follows
    given = con.sql(
        "SELECT DISTINCT grade FROM synthesize_rows('school', 200, given := {'years': 16})"
    ).fetchall()
    assert given == [("bachelor",)]

    con.execute("CREATE TABLE holes AS SELECT row_number() OVER () AS id, * FROM school")
    con.execute("UPDATE holes SET years = NULL WHERE id % 3 = 0")
    con.execute("UPDATE holes SET grade = NULL WHERE id % 3 = 1")
    con.execute("UPDATE holes SET climate = NULL WHERE id % 2 = 0")
    filled = con.sql(
        "SELECT * FROM impute_latent_diffusion('holes', model := 'school') ORDER BY id"
    ).fetchall()
    truth = con.sql("SELECT * FROM school").fetchall()
    assert [r[1:] for r in filled] == [tuple(t) for t in truth]  # every cell exactly right


def test_no_rule_from_a_relation_that_only_mostly_holds_or_from_too_few_rows():
    rng = np.random.default_rng(0)
    a = rng.integers(0, 4, 5000)
    mostly = np.where(rng.random(5000) < 0.99, a % 2, 1 - a % 2)  # 1% of rows break it
    table = pa.table(
        {
            "a": pa.array([f"l{v}" for v in a]),
            "mostly": pa.array(mostly.astype(np.int64)),
            "exact": pa.array((a * 10).astype(np.int64)),
        }
    )
    specs = [
        ColumnSpec("mostly", "BIGINT", NUMERIC, integral=True),
        ColumnSpec("exact", "BIGINT", NUMERIC, integral=True),
        ColumnSpec("a", "VARCHAR", CATEGORICAL),
    ]
    encoder = Encoder.fit(table, specs)
    encoded = encoder.encode(table)
    found = Dependencies.fit(encoder, encoded.num, encoded.cat, encoded.mask).describe()
    assert found == ["exact -> a"] or found == ["a -> exact"], found
    few = table.slice(0, 50)
    encoded = encoder.encode(few)
    assert Dependencies.fit(encoder, encoded.num, encoded.cat, encoded.mask).rules == []
