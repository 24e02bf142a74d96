"""Imputation on california: hide 30% of observed cells (MCAR), train, impute, score.

Prints MAE / RMSE on z-scored numeric cells and accuracy on categorical cells for
duckdb-diffusion next to mean/mode and scikit-learn's IterativeImputer (MICE), on the same masks
in the same run, with wall seconds. Run from the repository root:

    .venv/bin/python benchmarks/impute_california.py [--masks 3] [--max-seconds 240] [--draws 0,10]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

import duckdb_diffusion as ddf
from duckdb_diffusion.metrics import hide_cells, imputation_scores, mean_mode_fill

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "california.parquet"


def mice(masked: pa.Table, numeric, categorical, seed: int) -> dict:
    """IterativeImputer on numeric columns plus one-hot categoricals (argmax decodes them)."""
    from sklearn.experimental import enable_iterative_imputer  # noqa: F401
    from sklearn.impute import IterativeImputer

    blocks, levels = [], {}
    for name in numeric:
        blocks.append(masked.column(name).to_numpy(zero_copy_only=False).astype(float)[:, None])
    for name in categorical:
        values = np.asarray(masked.column(name).to_pylist(), dtype=object)
        levels[name] = sorted({v for v in values if v is not None})
        onehot = np.array([[float(v == lv) for lv in levels[name]] for v in values])
        onehot[values == None] = np.nan  # noqa: E711
        blocks.append(onehot)
    matrix = np.hstack(blocks)
    filled = IterativeImputer(max_iter=10, random_state=seed).fit_transform(matrix)
    out, col = {}, 0
    for name in numeric:
        out[name] = filled[:, col]
        col += 1
    for name in categorical:
        width = len(levels[name])
        out[name] = np.asarray(levels[name], dtype=object)[filled[:, col : col + width].argmax(1)]
        col += width
    return out


def diffusion(masked: pa.Table, numeric, categorical, seed: int, settings: dict, draws) -> dict:
    """One model per mask, imputed once per entry of ``draws``: {draws: (filled, seconds)},
    where seconds is training (shared) plus that imputation."""
    con = duckdb.connect()
    con.register("masked_view", masked)
    con.execute("CREATE TABLE california AS SELECT * FROM masked_view")
    start = time.perf_counter()
    ddf.train(con, "california", seed=seed, **settings)
    trained = time.perf_counter() - start
    results = {}
    for count in draws:
        start = time.perf_counter()
        result = ddf.impute(con, "california", seed=seed, draws=count).to_arrow_table()
        seconds = trained + time.perf_counter() - start
        out = {name: result.column(name).to_numpy(zero_copy_only=False) for name in numeric}
        for name in categorical:
            out[name] = np.asarray(result.column(name).to_pylist(), dtype=object)
        results[count] = (out, seconds)
    con.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--masks", type=int, default=3)
    parser.add_argument("--rate", type=float, default=0.3)
    parser.add_argument("--rows", type=int, default=0, help="sample this many rows (0: all)")
    parser.add_argument("--max-seconds", type=float, default=None, help="training time budget")
    parser.add_argument(
        "--draws",
        type=lambda text: [int(d) for d in text.split(",")],
        default=[0, 10],
        help="comma-separated draws values, each imputed with the same model (default 0,10)",
    )
    args = parser.parse_args()

    truth = duckdb.sql(f"SELECT * FROM '{DATA}'").to_arrow_table()
    if args.rows:
        truth = truth.take(np.random.default_rng(0).permutation(truth.num_rows)[: args.rows])
    numeric = [f.name for f in truth.schema if pa.types.is_floating(f.type)]
    categorical = [f.name for f in truth.schema if pa.types.is_string(f.type)]
    settings = {"progress": False}
    if args.max_seconds is not None:
        settings["max_seconds"] = args.max_seconds

    methods = {
        "mean/mode": lambda m, s: mean_mode_fill(m, numeric, categorical),
        "MICE (IterativeImputer)": lambda m, s: mice(m, numeric, categorical, s),
    }
    labels = [f"duckdb-diffusion, draws {d}" for d in args.draws]
    results = {name: [] for name in [*methods, *labels]}
    for seed in range(args.masks):
        masked, hidden = hide_cells(truth, truth.column_names, args.rate, seed)
        runs = {}
        for name, method in methods.items():
            start = time.perf_counter()
            imputed = method(masked, seed)
            runs[name] = (imputed, time.perf_counter() - start)
        filled = diffusion(masked, numeric, categorical, seed, settings, args.draws)
        runs.update(zip(labels, filled.values(), strict=True))
        for name, (imputed, seconds) in runs.items():
            results[name].append(
                {**imputation_scores(truth, imputed, hidden, numeric, categorical), "s": seconds}
            )
            print(f"mask {seed} {name}: {results[name][-1]}", flush=True)

    print(
        f"\ncalifornia, {truth.num_rows} rows, {args.rate:.0%} MCAR, {args.masks} masks (mean ± sd)"
    )
    print("| method | MAE | RMSE | cat. accuracy | wall s |\n|---|---|---|---|---|")
    for name, runs in results.items():
        cells = []
        for key in ("mae", "rmse", "accuracy", "s"):
            values = np.array([r[key] for r in runs])
            cells.append(f"{values.mean():.3f} ± {values.std():.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
