"""Property-based tests: random tables with random NULL patterns, trained and run through SQL.

Invariants: every non-NULL cell comes back bit for bit, rows keep their count and order, the
schema is unchanged, every NULL of a modelled column is filled, the same seed gives the same
output, and synthetic values stay within the training data's range and categories.

The default profile is derandomized (the same examples on every run, so CI is stable); set
HYPOTHESIS_PROFILE=thorough to search fresh random examples.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os

import duckdb
import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

import duckdb_diffusion as ddf
from duckdb_diffusion.schema import CATEGORICAL, NUMERIC, PASSTHROUGH, TEMPORAL

from .test_types import same_bits

settings.register_profile(
    "ci",
    max_examples=14,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "thorough",
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

TRAIN = json.dumps(
    {
        "max_seconds": 1,
        "width": 16,
        "depth": 1,
        "sampling_steps": 1,
        "vae_epochs": 3,
        "diffusion_epochs": 3,
        "batch_size": 32,
    }
)
NAMES = ["x", "select", "two words", 'q"uote', "ünï", "Mixed Case"]

VALUES = {
    "DOUBLE": (
        pa.float64(),
        st.one_of(
            st.floats(-1e6, 1e6),
            st.floats(allow_nan=True, allow_infinity=True),
            st.sampled_from([0.0, -0.0, 1e-310, -1e308]),
        ),
    ),
    "BIGINT": (
        pa.int64(),
        st.one_of(st.integers(-100, 100), st.integers(-(2**63), 2**63 - 1)),
    ),
    "VARCHAR": (pa.string(), st.sampled_from(["a", "b", "c", "", "ü", "long " * 40])),
    "BOOLEAN": (pa.bool_(), st.booleans()),
    "DATE": (pa.date32(), st.dates(dt.date(1900, 1, 1), dt.date(2100, 1, 1))),
}


@st.composite
def tables(draw) -> pa.Table:
    rows = draw(st.integers(4, 60))
    columns = {"rid": pa.array(range(rows), pa.int64())}
    for k in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(sorted(VALUES)))
        arrow_type, values = VALUES[kind]
        cells = draw(st.lists(values, min_size=rows, max_size=rows))
        null_rate = draw(st.sampled_from([0.0, 0.2, 0.5, 0.9, 1.0]))
        hidden = np.random.default_rng(draw(st.integers(0, 2**32))).random(rows) < null_rate
        cells = [None if h else v for h, v in zip(hidden, cells, strict=True)]
        columns[f"{NAMES[k]}_{kind.lower()}"] = pa.array(cells, arrow_type)
    return pa.table(columns)


@given(tables())
def test_imputation_and_synthesis_invariants(table):
    con = ddf.connect()
    try:
        con.register("generated", table)
        con.execute('CREATE TABLE "t t" AS SELECT * FROM generated')
        con.unregister("generated")
        before = con.sql('SELECT * FROM "t t"').to_arrow_table()
        try:
            con.execute(
                """SELECT * FROM train_latent_diffusion('"t t"', settings := ?)""", [TRAIN]
            ).fetchall()
        except duckdb.Error as error:
            # The only acceptable refusals say why, naming the table.
            assert "'\"t t\"'" in str(error), error
            assert "no column the model can learn" in str(error) or "rows" in str(error), error
            event("refused: nothing to learn")
            return
        event("trained")
        kinds = {c.name: c.kind for c in ddf.load_model(con, "t t").columns}

        query = """SELECT * FROM impute_latent_diffusion('"t t"', seed := 7)"""
        after = con.sql(query).to_arrow_table()
        assert after.schema == before.schema
        assert after.num_rows == before.num_rows
        assert after.column("rid").equals(before.column("rid"))  # same rows, same order
        for name in before.column_names:
            kept = before.column(name).is_valid()
            assert same_bits(before.column(name).filter(kept), after.column(name).filter(kept))
            if kinds[name] != PASSTHROUGH:
                assert after.column(name).null_count == 0, name
            else:
                assert after.column(name).equals(before.column(name)), name
        assert same_table(con.sql(query).to_arrow_table(), after)  # deterministic

        synthetic = con.sql("SELECT * FROM synthesize_rows('t t', 40, seed := 1)").to_arrow_table()
        assert synthetic.schema == before.schema and synthetic.num_rows == 40
        for name, kind in kinds.items():
            made = [v for v in synthetic.column(name).to_pylist() if v is not None]
            seen = [v for v in before.column(name).to_pylist() if v is not None]
            if kind == CATEGORICAL:
                assert set(made) <= set(seen), name
            elif kind in (NUMERIC, TEMPORAL):
                finite = [v for v in seen if not (isinstance(v, float) and not math.isfinite(v))]
                assert all(min(finite) <= v <= max(finite) for v in made), name
    finally:
        con.close()


def same_table(a: pa.Table, b: pa.Table) -> bool:
    return a.schema == b.schema and all(same_bits(a.column(n), b.column(n)) for n in a.column_names)
