"""``duckdb-diffusion demo``: the main job end to end, through SQL, in a temporary database.

Loads a real dataset (Palmer penguins, CC0, shipped by the ``palmerpenguins`` package, with
real NULLs; or any Parquet/CSV file), hides a share of its observed cells, trains a model with
``train_latent_diffusion``, fills the hidden cells with ``impute_latent_diffusion`` and scores
them against mean/mode filling, then makes synthetic rows with ``synthesize_rows`` and compares
their marginals with the real ones.
"""

from __future__ import annotations

import json
import tempfile
import time
from importlib import resources
from pathlib import Path

from . import metrics
from . import sql as ddf_sql
from .schema import CATEGORICAL, NUMERIC, infer_schema


def penguins_csv() -> Path:
    return Path(str(resources.files("palmerpenguins").joinpath("data/penguins.csv")))


def run_demo(data: str | None = None, max_seconds: float = 45.0, hide: float = 0.2, seed: int = 0):
    path = Path(data) if data else penguins_csv()
    if not path.is_file():
        raise ValueError(f"data file {str(path)!r} does not exist")
    with tempfile.TemporaryDirectory() as tmp:
        con = ddf_sql.connect(str(Path(tmp) / "demo.duckdb"))
        try:
            _run(con, path, max_seconds, hide, seed, named=data is None)
        finally:
            con.close()
    return 0


def _run(con, path: Path, max_seconds: float, hide: float, seed: int, named: bool) -> None:
    if path.suffix.lower() == ".parquet":
        con.execute("CREATE TABLE source AS SELECT * FROM read_parquet(?)", [str(path)])
    else:
        con.execute("CREATE TABLE source AS SELECT * FROM read_csv(?, nullstr = 'NA')", [str(path)])
    truth = con.sql("SELECT * FROM source").to_arrow_table()
    columns = infer_schema(con.sql("SELECT * FROM source"))
    numeric = [c.name for c in columns if c.kind == NUMERIC]
    categorical = [c.name for c in columns if c.kind == CATEGORICAL]
    masked, hidden = metrics.hide_cells(truth, numeric + categorical, hide, seed)
    con.register("masked_rows", masked)
    con.execute("CREATE TABLE observed AS SELECT * FROM masked_rows")
    con.unregister("masked_rows")

    title = "Palmer penguins (palmerpenguins package, CC0)" if named else path.name
    hidden_cells = sum(int(m.sum()) for m in hidden.values())
    print(f"dataset: {title}: {truth.num_rows} rows, {truth.num_columns} columns")
    print(f"hid {hidden_cells} observed cells ({hide:.0%}, at random) in table 'observed'\n")

    print(f"SELECT * FROM train_latent_diffusion('observed', max_seconds := {max_seconds:g})")
    start = time.perf_counter()
    con.execute(
        "SELECT * FROM train_latent_diffusion('observed', seed := ?, max_seconds := ?, "
        "settings := ?)",
        [seed, max_seconds, json.dumps({"progress": True})],
    ).fetchall()
    print(f"  trained in {time.perf_counter() - start:.1f} s\n")

    print("SELECT * FROM impute_latent_diffusion('observed')")
    start = time.perf_counter()
    filled = con.sql(
        "SELECT * FROM impute_latent_diffusion('observed', seed := $seed)", params={"seed": seed}
    ).to_arrow_table()
    seconds = time.perf_counter() - start
    ours = metrics.imputation_scores(truth, filled, hidden, numeric, categorical)
    base = metrics.imputation_scores(
        truth, metrics.mean_mode_fill(masked, numeric, categorical), hidden, numeric, categorical
    )
    print(f"  imputed {filled.num_rows} rows in {seconds:.2f} s; on the hidden cells:")
    print(f"  {'':<22}{'MAE (z)':>10}{'RMSE (z)':>10}{'accuracy':>10}")
    for label, s in (("duckdb-diffusion", ours), ("mean/mode fill", base)):
        print(f"  {label:<22}{s['mae']:>10.3f}{s['rmse']:>10.3f}{s['accuracy']:>10.3f}")
    print(
        f"  ({ours['numeric_cells']} numeric and {ours['categorical_cells']} categorical cells)\n"
    )

    rows = truth.num_rows
    print(f"SELECT * FROM synthesize_rows('observed', {rows}, seed := {seed})")
    synthetic = con.sql(
        "SELECT * FROM synthesize_rows('observed', $n, seed := $seed)",
        params={"n": rows, "seed": seed},
    ).to_arrow_table()
    print(f"  {'column':<22}{'distance':>12}{'NULLs trained':>15}{'NULLs synth':>12}")
    # NULL rates are those of the table the model learned from: the one with hidden cells.
    for row in metrics.fidelity(masked, synthetic, numeric, categorical):
        distance = f"{row['measure']} {row['distance']:.3f}"
        print(
            f"  {row['column']:<22}{distance:>12}"
            f"{row['real_nulls']:>15.1%}{row['synthetic_nulls']:>12.1%}"
        )
    print("  (KS: Kolmogorov-Smirnov statistic, TV: total variation; 0 is a perfect match)")
