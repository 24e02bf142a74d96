"""Quality measures, shared by the demo and the benchmarks: hide cells, score fills, compare
synthetic rows with real ones. Plain numpy over Arrow tables; no model code here.

Numeric errors are on z-scored values (each column divided by its standard deviation in the
true table), as in the DiffPuter and TabSyn protocols, so columns of any scale weigh alike.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from .encoding import numeric_values


def hide_cells(
    table: pa.Table, columns: list[str], rate: float, seed: int
) -> tuple[pa.Table, dict[str, np.ndarray]]:
    """MCAR: each observed cell of ``columns`` becomes NULL with probability ``rate``."""
    if not 0 < rate < 1:
        raise ValueError(f"the share of cells to hide must be between 0 and 1, got {rate}")
    rng = np.random.default_rng(seed)
    arrays, hidden = [], {}
    for name in table.column_names:
        column = table.column(name).combine_chunks()
        if name in columns:
            observed = column.is_valid().to_numpy(zero_copy_only=False)
            mask = observed & (rng.random(len(column)) < rate)
            hidden[name] = mask
            column = pc.if_else(pa.array(mask), pa.nulls(len(column), column.type), column)
        arrays.append(column)
    return pa.table(arrays, schema=table.schema), hidden


def imputation_scores(
    truth: pa.Table,
    filled: dict[str, np.ndarray] | pa.Table,
    hidden: dict[str, np.ndarray],
    numeric: list[str],
    categorical: list[str],
) -> dict:
    """MAE and RMSE over hidden numeric cells (z-scored), accuracy over hidden categorical cells."""
    errors, hits = [], []
    for name in numeric:
        true = numeric_values(truth.column(name))
        std = np.nanstd(true) or 1.0
        got = _values(filled, name, numeric=True)
        errors.append(((got - true) / std)[hidden[name]])
    for name in categorical:
        true = np.asarray(truth.column(name).to_pylist(), dtype=object)
        got = _values(filled, name, numeric=False)
        hits.append((got == true)[hidden[name]])
    err = np.concatenate(errors) if errors else np.zeros(0)
    hit = np.concatenate(hits) if hits else np.zeros(0, dtype=bool)
    return {
        "mae": float(np.abs(err).mean()) if err.size else float("nan"),
        "rmse": float(np.sqrt((err**2).mean())) if err.size else float("nan"),
        "accuracy": float(hit.mean()) if hit.size else float("nan"),
        "numeric_cells": int(err.size),
        "categorical_cells": int(hit.size),
    }


def mean_mode_fill(masked: pa.Table, numeric: list[str], categorical: list[str]) -> dict:
    """The baseline everyone beats: column mean for numbers, most frequent level otherwise."""
    out = {}
    for name in numeric:
        values = numeric_values(masked.column(name))
        out[name] = np.where(np.isnan(values), np.nanmean(values), values)
    for name in categorical:
        column = masked.column(name)
        counts = pc.value_counts(column.drop_null()).to_pylist()
        mode = max(counts, key=lambda item: item["counts"])["values"] if counts else None
        out[name] = np.asarray(column.fill_null(mode).to_pylist(), dtype=object)
    return out


def fidelity(real: pa.Table, synthetic: pa.Table, numeric: list[str], categorical: list[str]):
    """Per column: NULL rates and a distance between real and synthetic marginals
    (Kolmogorov-Smirnov statistic for numbers, total variation for categories)."""
    rows = []
    for name in [*numeric, *categorical]:
        a, b = real.column(name), synthetic.column(name)
        row = {
            "column": name,
            "real_nulls": a.null_count / max(len(a), 1),
            "synthetic_nulls": b.null_count / max(len(b), 1),
        }
        if name in numeric:
            x, y = numeric_values(a), numeric_values(b)
            x, y = x[np.isfinite(x)], y[np.isfinite(y)]
            row.update(real_mean=x.mean(), synthetic_mean=y.mean(), distance=ks_statistic(x, y))
            row["measure"] = "KS"
        else:
            row.update(distance=total_variation(a, b), measure="TV")
        rows.append(row)
    return rows


def ks_statistic(x: np.ndarray, y: np.ndarray) -> float:
    """Largest gap between the two empirical CDFs (0: same distribution, 1: disjoint)."""
    if not len(x) or not len(y):
        return float("nan")
    grid = np.sort(np.concatenate([x, y]))
    cdf_x = np.searchsorted(np.sort(x), grid, side="right") / len(x)
    cdf_y = np.searchsorted(np.sort(y), grid, side="right") / len(y)
    return float(np.abs(cdf_x - cdf_y).max())


def total_variation(a: pa.ChunkedArray, b: pa.ChunkedArray) -> float:
    """Half the L1 distance between the two level frequencies (NULLs left out)."""
    pa_counts = {d["values"]: d["counts"] for d in pc.value_counts(a.drop_null()).to_pylist()}
    pb_counts = {d["values"]: d["counts"] for d in pc.value_counts(b.drop_null()).to_pylist()}
    na, nb = sum(pa_counts.values()) or 1, sum(pb_counts.values()) or 1
    levels = set(pa_counts) | set(pb_counts)
    return 0.5 * sum(abs(pa_counts.get(v, 0) / na - pb_counts.get(v, 0) / nb) for v in levels)


def _values(filled, name: str, numeric: bool) -> np.ndarray:
    column = filled.column(name) if isinstance(filled, pa.Table) else filled[name]
    if numeric:
        if isinstance(column, pa.ChunkedArray | pa.Array):
            return numeric_values(column)
        return np.asarray(column, dtype=float)
    if isinstance(column, pa.ChunkedArray | pa.Array):
        return np.asarray(column.to_pylist(), dtype=object)
    return np.asarray(column, dtype=object)
