"""Numbers come out on the grid their column lives on: two-decimal prices stay two-decimal,
multiples of 10 stay multiples of 10, a column of a few values gets those values with their
frequencies, and a value that holds a fifth of a continuous column (zero amounts) keeps its
share (synthesis through SQL; imputation too)."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

import duckdb_diffusion as ddf
from duckdb_diffusion.encoding import Encoder, NumericTransform
from duckdb_diffusion.schema import NUMERIC, ColumnSpec
from duckdb_diffusion.training.dequantize import dequantized

from .conftest import FAST

RATINGS = {1.0: 0.05, 2.5: 0.15, 3.0: 0.2, 4.5: 0.6}


def test_synthetic_and_imputed_numbers_lie_on_the_columns_grid():
    con = ddf.connect()
    con.execute(
        """CREATE TABLE shop AS SELECT
             round(5 + (hash(range, 'p') % 100000) / 1000.0 + 3 * (range % 4), 2)::DOUBLE AS price,
             CASE WHEN u < 0.05 THEN 1.0 WHEN u < 0.2 THEN 2.5 WHEN u < 0.4 THEN 3.0 ELSE 4.5 END
               AS rating,
             (10 * (hash(range, 'c') % 40))::INTEGER AS stock,
             CASE WHEN range % 4 = 0 THEN 'a' ELSE 'b' END AS kind,
             CASE WHEN hash(range, 'z') % 5 = 0 THEN 0.0
                  ELSE round(exp(4 + (hash(range, 'a') % 1000) / 300.0)) END AS amount
           FROM (SELECT range, (hash(range, 'u') % 10000) / 10000.0 AS u FROM range(3000))"""
    )
    con.execute(
        "SELECT * FROM train_latent_diffusion('shop', settings := ?)",
        [json.dumps({**FAST, "max_seconds": 600, "vae_epochs": 10, "diffusion_epochs": 60})],
    ).fetchall()
    rows = con.sql("SELECT * FROM synthesize_rows('shop', 4000, seed := 1)").to_arrow_table()
    prices = rows.column("price").to_pylist()
    assert all(abs(p * 100 - round(p * 100)) < 1e-6 for p in prices)
    assert len(set(prices)) > 500  # on the grid, not copies of a few training values
    assert all(s % 10 == 0 for s in rows.column("stock").to_pylist())
    # A continuous column with a spike (a fifth of the amounts are 0) keeps the spike.
    zeros = sum(a == 0 for a in rows.column("amount").to_pylist()) / rows.num_rows
    assert 0.1 < zeros < 0.3, zeros
    ratings = rows.column("rating").to_pylist()
    assert set(ratings) <= set(RATINGS)
    shares = {r: ratings.count(r) / len(ratings) for r in RATINGS}
    total_variation = sum(abs(shares[r] - p) for r, p in RATINGS.items()) / 2
    assert total_variation < 0.08, shares

    con.execute("CREATE TABLE holes AS SELECT * FROM shop")
    con.execute("UPDATE holes SET rating = NULL, price = NULL WHERE hash(price) % 5 = 0")
    filled = con.sql(
        "SELECT * FROM impute_latent_diffusion('holes', model := 'shop')"
    ).to_arrow_table()
    assert filled.column("rating").null_count == 0
    assert set(filled.column("rating").to_pylist()) <= set(RATINGS)
    assert all(abs(p * 100 - round(p * 100)) < 1e-6 for p in filled.column("price").to_pylist())


def test_dequantized_training_scores_decode_to_their_values_and_are_normal():
    """Hours a week: 40 in almost half the rows, its neighbours rare. Training sees each cell
    at a random score inside its value's interval: every such score decodes back to the
    value, and together the scores are a standard normal (no point mass for the denoiser to
    blur into the neighbours)."""
    rng = np.random.default_rng(0)
    hours = np.where(rng.random(5000) < 0.47, 40, rng.integers(1, 99, 5000)).astype(float)
    table = pa.table({"hours": hours})
    spec = ColumnSpec("hours", "BIGINT", NUMERIC, integral=True)
    encoder = Encoder.fit(table, [spec])
    transform = encoder.numeric[0]
    assert transform.discrete and transform.edges is not None
    num = dequantized(encoder, table, encoder.encode(table), seed=3)[:, 0]
    np.testing.assert_array_equal(transform.inverse(num.astype(float)), hours)
    assert abs(num.mean()) < 0.05 and abs(num.std() - 1) < 0.05
    assert len(np.unique(num)) > 4000  # spread out, not one score per value
    # a model stored before intervals decodes to the nearest mid-rank score, as it did
    old = NumericTransform.from_json({**transform.to_json(), "edges": None})
    assert old.edges is None and set(old.inverse(num.astype(float))) <= set(hours)
