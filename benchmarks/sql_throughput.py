"""Rows per second of imputation and synthesis through SQL and through the Python API, on the
same model and the same data, in one run.

The table is california repeated to ``--rows`` rows with ``--null-share`` of its cells NULL.
Run from the repository root:

    .venv/bin/python benchmarks/sql_throughput.py [--rows 100000] [--train-seconds 60]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from sqlglot import exp

import duckdb_diffusion as ddf
from duckdb_diffusion.runtime import DEFAULT_DRAWS

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "california.parquet"


def _quoted(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")


def timed(action) -> float:
    start = time.perf_counter()
    action()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--null-share", type=float, default=0.2)
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--draws", type=int, default=DEFAULT_DRAWS)
    args = parser.parse_args()

    con = ddf.connect()
    con.execute("CREATE TABLE california AS SELECT * FROM read_parquet(?)", [str(DATA)])
    ddf.train(con, "california", max_seconds=args.train_seconds, progress=False)
    columns = [_quoted(c) for c in con.sql("SELECT * FROM california").columns]
    nulls = ", ".join(
        f"CASE WHEN random() < {float(args.null_share)} THEN NULL ELSE {c} END AS {c}"
        for c in columns
    )
    con.execute("SELECT setseed(0.5)")
    con.execute(
        f"CREATE TABLE big AS SELECT {nulls} FROM california, range(?) LIMIT ?",
        [-(-args.rows // 20433), args.rows],
    )
    incomplete = con.execute(
        "SELECT count(*) FROM big WHERE " + " OR ".join(f"{c} IS NULL" for c in columns)
    ).fetchall()[0][0]
    print(f"{args.rows} rows, {incomplete} with a NULL, draws={args.draws}, threads=2\n")

    rows = args.rows
    results = {
        "impute, SQL": timed(
            lambda: con.execute(
                "CREATE OR REPLACE TABLE out_sql AS SELECT * FROM "
                "impute_latent_diffusion('big', model := 'california', draws := ?)",
                [args.draws],
            )
        ),
        "impute, Python API": timed(
            lambda: ddf.impute(con, "big", model="california", draws=args.draws).to_arrow_table()
        ),
        "synthesize, SQL": timed(
            lambda: con.execute(
                "CREATE OR REPLACE TABLE syn_sql AS SELECT * FROM synthesize_rows('california', ?)",
                [rows],
            )
        ),
        "synthesize, Python API": timed(
            lambda: ddf.synthesize(con, "california", n=rows).to_arrow_table()
        ),
    }
    print("| path | seconds | rows/s |\n|---|---|---|")
    for name, seconds in results.items():
        print(f"| {name} | {seconds:.1f} | {rows / seconds:,.0f} |")
    con.close()


if __name__ == "__main__":
    main()
