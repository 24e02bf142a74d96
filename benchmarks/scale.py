"""Scale-out: the same model through Spark (local[1], local[2]) and Ray (1 and 2 workers),
beside DuckDB's SQL path on the same rows, in one run.

One adult model (default architecture, ``--train-seconds`` of training: the weights do not
change the arithmetic) is stored in a model directory. For every size in ``--rows`` the adult
table is repeated to that many rows with a further 20% of its cells set NULL and written as
8 Parquet files; then each engine imputes it and synthesizes as many rows, each in a fresh process:

- duckdb:   ``CREATE TABLE AS SELECT * FROM impute_latent_diffusion('<parquet>', ...)`` /
            ``synthesize_rows`` (materialized, as a user keeps a result);
- spark-K:  ``ddf_spark.impute(spark.read.parquet(...))`` / ``ddf_spark.synthesize(...,
            partitions=4K)`` on ``local[K]``, written to Spark's ``noop`` sink (every row and
            column computed, nothing stored); the session's start is not timed;
- ray-K:    ``ddf_ray.impute(ray.data.read_parquet(...), workers=K)`` / ``ddf_ray.synthesize``
            (a pool of K one-thread actors; Ray gets K + 1 logical CPUs, one for the read
            tasks), every batch drained on the driver; ``ray.init`` is not timed.

Run from the repository root (the ``spark`` and ``ray`` extras installed, Java 17 for Spark):

    .venv/bin/python benchmarks/scale.py --rows 1000000 [--rows 10000000]
        [--engines duckdb,spark-1,spark-2,ray-1,ray-2] [--tasks impute,synthesize]
        [--train-seconds 30] [--out benchmarks/scale-DATE.json]

The JSON holds every run with its provenance (``runs``) and, under ``results``, the latest
figure of each engine, task and size with the number of the run it comes from; the table
printed at the end is made from those, and is the one in benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import textwrap
import time
from importlib import metadata
from pathlib import Path

import duckdb

import duckdb_diffusion as ddf

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))
from quality import provenance  # noqa: E402  (one provenance format for every benchmark)

ENGINES = ("duckdb", "spark-1", "spark-2", "ray-1", "ray-2")
TASKS = ("impute", "synthesize")
MODEL = "adult"
NULL_SHARE = 0.2
FILES = 8

# One measurement in its own process; prints one JSON line {"rows": .., "seconds": ..}.
MEASURE = {
    "duckdb": """
        import json, time, duckdb_diffusion as ddf
        con = ddf.connect(model_dir=MODELS)
        began = time.perf_counter()
        if TASK == "impute":
            con.execute(f"CREATE TABLE result AS SELECT * FROM impute_latent_diffusion("
                        f"'{PARQUET}', model := '{MODEL}', seed := 7)")
        else:
            con.execute(f"CREATE TABLE result AS SELECT * FROM synthesize_rows("
                        f"'{MODEL}', {ROWS}, seed := 7)")
        seconds = time.perf_counter() - began
        rows = con.sql("SELECT count(*) FROM result").fetchall()[0][0]
        print(json.dumps({"rows": rows, "seconds": seconds}))
    """,
    "spark": """
        import json, os, sys, time
        os.environ["PYSPARK_PYTHON"] = sys.executable
        from pyspark.sql import SparkSession
        from duckdb_diffusion import spark as ddf_spark
        spark = (SparkSession.builder.master(f"local[{K}]").config("spark.ui.enabled", "false")
                 .config("spark.driver.memory", "4g").getOrCreate())
        spark.range(10).collect()  # the JVM and a Python worker up before the clock starts
        began = time.perf_counter()
        if TASK == "impute":
            frame = spark.read.parquet(PARQUET)
            out = ddf_spark.impute(frame, MODEL, model_dir=MODELS, seed=7)
        else:
            out = ddf_spark.synthesize(spark, MODEL, ROWS, model_dir=MODELS, seed=7,
                                       partitions=4 * K)
        out.write.format("noop").mode("overwrite").save()
        seconds = time.perf_counter() - began
        print(json.dumps({"rows": ROWS, "seconds": seconds,
                          "partitions": out.rdd.getNumPartitions()}))
        spark.stop()
    """,
    "ray": """
        import json, time, ray
        from duckdb_diffusion import ray as ddf_ray
        # K CPUs for the K actors plus one for the tasks that read the Parquet and feed them
        ray.init(num_cpus=K + 1, include_dashboard=False, log_to_driver=False,
                 configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        began = time.perf_counter()
        if TASK == "impute":
            data = ray.data.read_parquet(PARQUET.rsplit("/", 1)[0])  # the folder: a task a file
            out = ddf_ray.impute(data, MODEL, model_dir=MODELS, seed=7, workers=K)
        else:
            out = ddf_ray.synthesize(MODEL, ROWS, model_dir=MODELS, seed=7, workers=K,
                                     blocks=8 * K)
        rows = sum(b.num_rows for b in out.iter_batches(batch_format="pyarrow",
                                                        batch_size=None))
        seconds = time.perf_counter() - began
        print(json.dumps({"rows": rows, "seconds": seconds}))
        ray.shutdown()
    """,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, action="append", help="table sizes (repeatable)")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--train-seconds", type=float, default=30.0)
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per measurement")
    parser.add_argument("--work", help="folder for the model and the Parquet files")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / f"scale-{time.strftime('%Y-%m-%d')}.json")
    )
    args = parser.parse_args()
    sizes = args.rows or [1_000_000]
    engines = args.engines.split(",")
    tasks = args.tasks.split(",")
    work = Path(args.work or tempfile.mkdtemp(prefix="ddf-scale-"))
    models = work / "models"
    settings = {
        "train_seconds": args.train_seconds,
        "sizes": sizes,
        "engines": engines,
        "tasks": tasks,
        "null_share": NULL_SHARE,
    }
    run = {"provenance": provenance(settings), "results": []}
    for package in ("pyspark", "ray", "pyarrow"):
        run["provenance"]["versions"][package] = metadata.version(package)
    out = Path(args.out)
    # Earlier runs stay in the file; the table takes each figure from the latest run having it.
    record = json.loads(out.read_text()) if out.is_file() else {"runs": []}
    record["runs"].append(run)

    train_model(models, args.train_seconds)
    for rows in sizes:
        parquet = write_table(work, rows)
        for task in tasks:
            for engine in engines:
                measured = measure(engine, task, rows, parquet, models, args.timeout)
                measured.update(engine=engine, task=task, table_rows=rows)
                run["results"].append(measured)
                print(json.dumps(measured), flush=True)
                out.write_text(json.dumps(record, indent=1) + "\n")
    latest = {}
    for number, earlier in enumerate(record["runs"]):
        for result in earlier["results"]:
            if "error" not in result:
                key = (result["engine"], result["task"], result["table_rows"])
                latest[key] = {**result, "run": number}
    record["results"] = results = list(latest.values())
    out.write_text(json.dumps(record, indent=1) + "\n")
    print(table(results))


def train_model(models: Path, seconds: float) -> None:
    if (models / MODEL / "CURRENT").is_file():
        return
    con = duckdb.connect()
    con.execute(
        f"CREATE TABLE {MODEL} AS SELECT * FROM read_parquet(?)", [str(DATA / "adult.parquet")]
    )
    ddf.train(con, MODEL, model_dir=str(models), max_seconds=seconds, progress=False)


def write_table(work: Path, rows: int) -> str:
    """The adult table repeated to ``rows`` rows, a further NULL_SHARE of every column's cells
    NULL (chosen by a hash of row and column, so the data are the same every run), as FILES
    Parquet files of consecutive rows: the layout Spark and Ray read in parallel (one file is
    one read task in Ray). Returns their glob."""
    folder = work / f"adult-{rows}"
    pattern = str(folder / "*.parquet")
    if folder.is_dir():
        return pattern
    folder.mkdir(parents=True)
    con = duckdb.connect()
    source = str(DATA / "adult.parquet").replace("'", "''")
    con.execute(f"CREATE VIEW adult AS SELECT * FROM read_parquet('{source}')")
    columns = [r[0] for r in con.execute("DESCRIBE adult").fetchall()]
    cut = int(NULL_SHARE * 1000)
    holed = ", ".join(
        f'CASE WHEN hash(__i, {i}) % 1000 < {cut} THEN NULL ELSE "{c}" END AS "{c}"'
        for i, c in enumerate(columns)
    )
    copies = -(-rows // con.execute("SELECT count(*) FROM adult").fetchall()[0][0])
    con.execute(
        f"CREATE TABLE big AS SELECT __i, {holed} FROM (SELECT *, row_number() OVER () AS __i "
        f"FROM adult, range({copies})) WHERE __i <= {rows}"
    )
    for part in range(FILES):
        low, high = part * rows // FILES, (part + 1) * rows // FILES
        con.execute(
            f"COPY (SELECT * EXCLUDE (__i) FROM big WHERE __i > {low} AND __i <= {high} "
            f"ORDER BY __i) TO '{folder / f'part-{part}.parquet'}' (FORMAT parquet)"
        )
    return pattern


def measure(engine: str, task: str, rows: int, parquet: str, models: Path, timeout: int) -> dict:
    kind, _, k = engine.partition("-")
    header = (
        f"TASK, ROWS, PARQUET, MODELS, MODEL, K = {task!r}, {rows}, {parquet!r}, "
        f"{str(models)!r}, {MODEL!r}, {int(k or 0)}\n"
    )
    code = header + textwrap.dedent(MEASURE[kind])
    try:
        done = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout} s"}
    lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
    if done.returncode != 0 or not lines:
        return {"error": done.stderr[-2000:]}
    result = json.loads(lines[-1])
    result["rows_per_s"] = round(result["rows"] / result["seconds"])
    result["seconds"] = round(result["seconds"], 2)
    return result


def table(results: list[dict]) -> str:
    """Rows/s per engine, with the 2-over-1 scaling ratio and DuckDB's figure beside."""
    by = {(r["task"], r["table_rows"], r["engine"]): r for r in results}
    lines = [
        "| task | rows | duckdb SQL | spark local[1] | spark local[2] | spark 2/1 | "
        "ray 1 worker | ray 2 workers | ray 2/1 |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for task, rows in sorted({(r["task"], r["table_rows"]) for r in results}):
        rate = {e: by.get((task, rows, e), {}).get("rows_per_s") for e in ENGINES}
        shown = {e: f"{c:,}" if c else "–" for e, c in rate.items()}
        ratios = {}
        for family in ("spark", "ray"):
            one, two = rate[f"{family}-1"], rate[f"{family}-2"]
            ratios[family] = f"{two / one:.2f}" if one and two else "–"
        lines.append(
            f"| {task} | {rows:,} | {shown['duckdb']} | {shown['spark-1']} | "
            f"{shown['spark-2']} | {ratios['spark']} | {shown['ray-1']} | {shown['ray-2']} | "
            f"{ratios['ray']} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
