"""Multiple imputation and synthetic NULLs: are the spread and the NULL patterns right?

For each dataset (a ``--rows`` sample of california, adult, default):

1. Multiple imputation: hide ``--hide`` of the observed cells (MCAR), train on the holed
   table, and make ``--imputations`` completed copies
   (``impute_latent_diffusion(..., imputations := m)``). For every hidden numeric cell the
   5%-95% range of its m values is a 90% interval: **coverage** is the share of true values
   inside (target 0.85-0.95), **width** its mean length in standard deviations. The **pooled
   estimate** (Rubin's rule: the mean over copies of each numeric column's mean) is compared
   with the complete-data mean, in standard deviations; MAE of the per-cell mean of the m
   draws is the point error. miceforest (LightGBM MICE, ``num_datasets = m``,
   ``--mice-iterations`` rounds, its own venv from ``benchmarks/peers/miceforest.txt``) on the
   same masks, beside it (on 5,000 rows x 20 datasets x 5 rounds it ran past 14 minutes for
   california alone on 2 cores: the recorded run uses fewer rows and rounds).
2. Synthetic NULLs: train on the table with its real NULLs plus ``--hide`` of MAR-hidden cells
   (NULLs that depend on other columns' values), synthesize as many rows, and measure the
   **co-missingness error** (``metrics.co_missingness_error``: per column pair, |share of
   rows with both NULL, synthetic - real|, mean over pairs) with the missingness chain (after)
   and with the same model drawing each column's NULLs at its own rate (before).

    .venv/bin/python benchmarks/uncertainty.py [--datasets california,adult,default]
        [--rows 5000] [--train-seconds 60] [--imputations 20] [--hide 0.3] [--skip miceforest]
        [--out benchmarks/uncertainty-DATE.json]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import duckdb_diffusion as ddf
from duckdb_diffusion import metrics
from duckdb_diffusion.runtime import Model

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))
from quality import PEERS, Environments, provenance  # noqa: E402  (shared peer venvs)

DATASETS = ("california", "adult", "default")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default=",".join(DATASETS))
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--train-seconds", type=float, default=60.0)
    parser.add_argument("--imputations", type=int, default=20)
    parser.add_argument("--hide", type=float, default=0.3)
    parser.add_argument(
        "--mice-iterations", type=int, default=5, help="miceforest's MICE rounds (its default 5)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--settings", default="{}", help="our other training settings, JSON: '{\"width\": 256}'"
    )
    parser.add_argument("--skip", default="", help="comma-separated: ours, miceforest, nulls")
    parser.add_argument("--venvs", type=Path, default=ROOT / "benchmarks" / ".venvs")
    parser.add_argument(
        "--out", default=str(ROOT / "benchmarks" / f"uncertainty-{time.strftime('%Y-%m-%d')}.json")
    )
    args = parser.parse_args()
    config = {k: v for k, v in vars(args).items() if k not in ("venvs", "out")}
    record = {"provenance": provenance(config), "results": []}
    envs = Environments(args.venvs)
    skip = set(filter(None, args.skip.split(",")))
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for dataset in args.datasets.split(","):
            truth = sample(dataset, args.rows, args.seed)
            rows = []
            if "ours" not in skip:
                rows.append(multiple_imputation(dataset, truth, args, work))
            if "miceforest" not in skip:
                rows.append(miceforest(dataset, truth, args, envs, work))
            if "nulls" not in skip:
                rows.append(synthetic_nulls(dataset, truth, args))
            for row in rows:
                record["results"].append(row)
                print(json.dumps(row), flush=True)
                Path(args.out).write_text(json.dumps(record, indent=1) + "\n")
    print(markdown(record["results"]))


def sample(dataset: str, rows: int, seed: int) -> pa.Table:
    truth = duckdb.sql(f"SELECT * FROM '{DATA / dataset}.parquet'").to_arrow_table()
    keep = np.random.default_rng(seed).permutation(truth.num_rows)[:rows]
    return truth.take(np.sort(keep))


def kinds(table: pa.Table) -> tuple[list[str], list[str]]:
    categorical = [f.name for f in table.schema if pa.types.is_string(f.type)]
    return [n for n in table.column_names if n not in categorical], categorical


def interval_scores(truth: pa.Table, copies: list[pa.Table], hidden: dict, numeric) -> dict:
    """Coverage and width of the 5%-95% intervals, pooled-mean error, MAE of the draws' mean."""
    covered, widths, errors, pooled = [], [], [], []
    for name in numeric:
        cells = hidden[name]
        if not cells.any():
            continue
        true = truth.column(name).to_numpy(zero_copy_only=False).astype(float)
        scale = np.nanstd(true) or 1.0
        draws = np.stack(
            [c.column(name).to_numpy(zero_copy_only=False).astype(float) for c in copies]
        )
        low, high = np.quantile(draws[:, cells], [0.05, 0.95], axis=0)
        covered.append((low <= true[cells]) & (true[cells] <= high))
        widths.append((high - low) / scale)
        errors.append(np.abs(draws[:, cells].mean(axis=0) - true[cells]) / scale)
        pooled.append(abs(np.nanmean(draws, axis=1).mean() - np.nanmean(true)) / scale)
    return {
        "coverage_90": round(float(np.concatenate(covered).mean()), 4),
        "width_sd": round(float(np.concatenate(widths).mean()), 4),
        "pooled_mean_error_sd": round(float(np.mean(pooled)), 4),
        "mae_of_mean": round(float(np.concatenate(errors).mean()), 4),
        "cells": int(sum(len(c) for c in covered)),
    }


def holed(truth: pa.Table, args) -> tuple[pa.Table, dict]:
    numeric, categorical = kinds(truth)
    return metrics.hide_cells(truth, numeric + categorical, args.hide, args.seed)


def multiple_imputation(dataset: str, truth: pa.Table, args, work: Path) -> dict:
    masked, hidden = holed(truth, args)
    numeric, _ = kinds(truth)
    con = ddf.connect()
    con.register("source", masked)
    con.execute("CREATE TABLE holes AS SELECT * FROM source")
    began = time.perf_counter()
    settings = json.loads(args.settings)
    ddf.train(
        con, "holes", max_seconds=args.train_seconds, seed=args.seed, progress=False, **settings
    )
    trained = time.perf_counter() - began
    long = ddf.impute(con, "holes", imputations=args.imputations, seed=args.seed)
    long = long.to_arrow_table()
    seconds = time.perf_counter() - began
    rows = truth.num_rows
    copies = [long.slice(i * rows, rows) for i in range(args.imputations)]
    scores = interval_scores(truth, copies, hidden, numeric)
    return {"dataset": dataset, "method": "ours", "task": "multiple imputation",
            "train_s": round(trained, 1), "seconds": round(seconds, 1), **scores}  # fmt: skip


def miceforest(dataset: str, truth: pa.Table, args, envs, work: Path) -> dict:
    masked, hidden = holed(truth, args)
    numeric, categorical = kinds(truth)
    python = envs.python("miceforest")
    row = {"dataset": dataset, "method": "miceforest", "task": "multiple imputation"}
    if python is None:
        return {**row, "error": envs.failed.get("miceforest", "did not install")}
    source, out, timing = work / "masked.parquet", work / "mice.parquet", work / "timing.json"
    pq.write_table(masked, source)
    command = [python, str(PEERS / "run_peer.py"), "multiple", "miceforest", "--train",
               str(source), "--categorical", ",".join(categorical), "--seed", str(args.seed),
               "--imputations", str(args.imputations), "--iterations",
               str(args.mice_iterations), "--out", str(out), "--timing", str(timing)]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, timeout=3600)
    if done.returncode:
        return {**row, "error": done.stderr.strip().splitlines()[-1][:300]}
    long = pq.read_table(out)
    rows = truth.num_rows
    copies = [long.slice(i * rows, rows) for i in range(args.imputations)]
    seconds = json.loads(timing.read_text())["s"]
    return {**row, "seconds": round(seconds, 1), **interval_scores(truth, copies, hidden, numeric)}


def synthetic_nulls(dataset: str, truth: pa.Table, args) -> dict:
    numeric, categorical = kinds(truth)
    real, _ = metrics.hide_cells(truth, numeric + categorical, args.hide, args.seed, "mar")
    con = ddf.connect()
    con.register("source", real)
    con.execute("CREATE TABLE nulls AS SELECT * FROM source")
    settings = json.loads(args.settings)
    ddf.train(
        con, "nulls", max_seconds=args.train_seconds, seed=args.seed, progress=False, **settings
    )
    model = ddf.load_model(con, "nulls")
    after = ddf.synthesize(con, "nulls", real.num_rows, seed=args.seed).to_arrow_table()
    alone = Model(model.artifact)
    alone.missingness = None
    before = pa.Table.from_batches([alone.synthesize_batch(0, real.num_rows, args.seed)])
    columns = numeric + categorical
    scores = {
        label: metrics.co_missingness_error(real, table, columns)
        for label, table in (("before", before), ("after", after))
    }
    rates = {
        label: float(np.mean([abs(t.column(c).null_count - real.column(c).null_count) / len(t)
                              for c in columns]))
        for label, t in (("before", before), ("after", after))
    }  # fmt: skip
    return {
        "dataset": dataset, "method": "ours", "task": "synthetic NULLs (real + 30% MAR)",
        "co_missingness_before": round(scores["before"]["mean"], 5),
        "co_missingness_after": round(scores["after"]["mean"], 5),
        "worst_pair_before": round(scores["before"]["max"], 4),
        "worst_pair_after": round(scores["after"]["max"], 4),
        "null_rate_error_before": round(rates["before"], 5),
        "null_rate_error_after": round(rates["after"], 5),
    }  # fmt: skip


def markdown(results: list[dict]) -> str:
    lines = [
        "| dataset | method | 90% coverage | width (sd) | pooled mean error (sd) | MAE of mean | "
        "seconds |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in results:
        if r["task"] == "multiple imputation" and "error" not in r:
            lines.append(
                f"| {r['dataset']} | {r['method']} | {r['coverage_90']:.3f} | "
                f"{r['width_sd']:.3f} | {r['pooled_mean_error_sd']:.4f} | "
                f"{r['mae_of_mean']:.3f} | {r['seconds']} |"
            )
        elif "error" in r:
            lines.append(f"| {r['dataset']} | {r['method']} | failed: {r['error']} |||||")
    lines += [
        "",
        "| dataset | co-missingness error, before -> after | worst pair | NULL-rate error |",
        "|---|---|---|---|",
    ]
    for r in results:
        if r["task"].startswith("synthetic NULLs"):
            lines.append(
                f"| {r['dataset']} | {r['co_missingness_before']:.4f} -> "
                f"{r['co_missingness_after']:.4f} | {r['worst_pair_before']:.3f} -> "
                f"{r['worst_pair_after']:.3f} | {r['null_rate_error_before']:.4f} -> "
                f"{r['null_rate_error_after']:.4f} |"
            )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
