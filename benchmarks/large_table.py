"""Peak memory and rows per second of imputation and synthesis on a table far larger than memory
should need: california repeated to ``--rows`` rows (10 million by default) with ``--null-share``
of the modelled cells NULL, in a database file.

Each measurement runs in a fresh process and reads that process's own high-water mark (VmHWM),
so one step's memory does not hide in another's. Results stream to Parquet files, as a
warehouse job would write them. Run from the repository root:

    .venv/bin/python benchmarks/large_table.py [--rows 10000000] [--draws 1] [--memory-limit 1GB]

The model is small and fast by default (``--settings``): this measures how the runtime streams,
not how good the model is (``impute_california.py`` does that).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import duckdb_diffusion as ddf

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "california.parquet"
SMALL_MODEL = {"max_seconds": 30, "width": 64, "depth": 1, "sampling_steps": 2}

MEASURE = """
    import json, time, duckdb, duckdb_diffusion as ddf
    import pyarrow.parquet as pq

    def peak_mb():
        with open("/proc/self/status") as status:
            return int(next(l for l in status if l.startswith("VmHWM")).split()[1]) / 1024

    con = duckdb.connect({path!r}, read_only=True)
    con.execute("SET memory_limit = {memory_limit!r}")
    ddf.install(con)
    start_mb, began = peak_mb(), time.perf_counter()
    if {door!r} == "sql":
        con.execute("COPY ({query}) TO {out!r} (FORMAT parquet)")
    else:
        reader = {reader}
        with pq.ParquetWriter({out!r}, reader.schema) as writer:
            for batch in reader:
                writer.write_batch(batch)
    seconds = time.perf_counter() - began
    print(json.dumps({{"seconds": seconds, "start_mb": start_mb, "peak_mb": peak_mb()}}))
    con.close()
"""


def build(path: Path, rows: int, null_share: float, settings: dict) -> int:
    con = ddf.connect(str(path))
    modelled = ["median_income", "housing_median_age", "total_rooms", "population"]
    modelled += ["ocean_proximity"]
    nulls = ", ".join(
        f"CASE WHEN hash(i, {k}) % 1000 < {int(null_share * 1000)} THEN NULL ELSE {c} END AS {c}"
        for k, c in enumerate(modelled)
    )
    con.execute(
        f"""CREATE TABLE big AS SELECT * EXCLUDE (i, j) REPLACE ({nulls})
            FROM (SELECT range AS i FROM range({rows})) r
            JOIN (SELECT row_number() OVER () - 1 AS j, * FROM read_parquet(?)) c
              ON r.i % 20433 = c.j ORDER BY i""",
        [str(DATA)],
    )
    ddf.train(con, "(SELECT * FROM big USING SAMPLE 200000 ROWS)", "big", **settings)
    incomplete = con.execute(
        "SELECT count(*) FROM big WHERE " + " OR ".join(f"{c} IS NULL" for c in modelled)
    ).fetchall()[0][0]
    con.close()
    return incomplete


def measure(door: str, query: str, reader: str, path: Path, out: Path, memory_limit: str) -> dict:
    code = MEASURE.format(
        path=str(path),
        door=door,
        query=query,
        reader=reader,
        out=str(out),
        memory_limit=memory_limit,
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{door} run failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--null-share", type=float, default=0.2)
    parser.add_argument("--draws", type=int, default=1)
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB's memory_limit")
    parser.add_argument("--settings", default=json.dumps(SMALL_MODEL), help="training JSON")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "large.duckdb"
        incomplete = build(path, args.rows, args.null_share, json.loads(args.settings))
        size_mb = path.stat().st_size / 2**20
        print(
            f"{args.rows:,} rows ({incomplete:,} with a NULL), database file {size_mb:,.0f} MB, "
            f"draws={args.draws}, memory_limit={args.memory_limit}, model {args.settings}\n"
        )
        runs = [
            (
                "impute, SQL → Parquet",
                "sql",
                f"SELECT * FROM impute_latent_diffusion('big', draws := {args.draws})",
                "None",
            ),
            (
                "impute, Python batches → Parquet",
                "python",
                "",
                f"ddf.impute_batches(con, 'big', draws={args.draws})",
            ),
            (
                "synthesize, SQL → Parquet",
                "sql",
                f"SELECT * FROM synthesize_rows('big', {args.rows})",
                "None",
            ),
        ]
        print("| run | rows/s | seconds | peak RSS MB | RSS before the run MB |")
        print("|---|---|---|---|---|")
        for label, door, query, reader in runs:
            result = measure(
                door, query, reader, path, Path(folder) / "out.parquet", args.memory_limit
            )
            print(
                f"| {label} | {args.rows / result['seconds']:,.0f} | {result['seconds']:.1f} | "
                f"{result['peak_mb']:,.0f} | {result['start_mb']:,.0f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
