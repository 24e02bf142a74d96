"""From a sampled Arrow table to a stored-ready artifact: encode, train, export, verify."""

from __future__ import annotations

import datetime as dt
import logging
import platform
from importlib import metadata

import numpy as np
import pyarrow as pa

from ..artifact import Artifact, encode_schema
from ..dependencies import Dependencies
from ..encoding import Encoder, numeric_values
from ..metrics import hide_cells, imputation_scores, mean_mode_fill
from ..runtime import Model
from ..schema import CATEGORICAL, PASSTHROUGH, ColumnSpec
from ..settings import TrainConfig
from .dequantize import dequantized
from .export import CALIBRATION_ROWS, OPSET, check_agreement, export_graphs
from .missingness import calibrate_missingness, fit_missingness
from .trainer import train

log = logging.getLogger("duckdb_diffusion")
CHECK_ROWS = 256
VALIDATION_ROWS = 2000
VALIDATION_HIDE = 0.2


def fit_artifact(
    table: pa.Table,
    columns: list[ColumnSpec],
    *,
    name: str,
    source: str,
    config: TrainConfig,
    source_rows: int,
    keys: dict,
) -> Artifact:
    """Train on ``table`` (the sample of the source, at most ``config.max_rows`` rows), export,
    verify the graphs against torch, and score the stored graphs on held-out cells."""
    if table.num_rows < 2:
        raise ValueError(
            f"table {source!r} has {table.num_rows} rows: training needs at least 2 (and far more "
            f"to learn anything useful)"
        )
    columns = demote_unlearnable(table, columns)
    modelled = [c for c in columns if c.kind != PASSTHROUGH]
    if not modelled:
        reasons = ", ".join(f"{c.name}: {c.reason}" for c in columns)
        raise ValueError(
            f"table {source!r} has no column the model can learn ({reasons}); name columns to "
            f"model with categorical=[...]"
        )
    encoder = Encoder.fit(table, modelled)
    encoded = encoder.encode(table)
    # The missingness chain and the column dependencies are models of the rows too; a
    # private model has neither (NULLs are drawn per column at their rate: training/private.py).
    private = config.epsilon is not None
    dependencies = (
        Dependencies(encoder, [])
        if private
        else Dependencies.fit(encoder, encoded.num, encoded.cat, encoded.mask)
    )
    num = dequantized(encoder, table, encoded, config.seed)
    trained = train(
        num,
        encoded.cat,
        encoded.mask,
        encoder.category_sizes,
        config,
        derived=dependencies.always_derived(encoded.num, encoded.cat, encoded.mask),
    )
    check = trained.validation_rows[:CHECK_ROWS]
    # A private model's 8-bit copies would need ranges read off its rows: it has none.
    calibration = None if private else calibration_rows(encoded, trained.validation_rows, config)
    graphs, agreement = export_checked(
        trained, encoded.num.shape[1], encoder.category_sizes, encoded, check, calibration
    )
    metrics = {
        **trained.metrics,
        "source_rows": int(source_rows),
        "onnx_check": agreement,
        "opset": OPSET,
        "dependencies": dependencies.describe(),
    }
    spec = build_spec(
        name=name,
        source=source,
        table=table,
        columns=columns,
        encoder=encoder,
        keys=keys,
        latent_dim=config.latent_dim,
        config=config.to_json(),
        metrics=metrics,
    )
    spec["dependencies"] = dependencies.to_json()
    spec["missingness"] = None if private else fit_missingness(table, encoder, encoded, config.seed)
    artifact = Artifact.create(spec, graphs)
    if spec["missingness"]:
        rates = spec["null_fractions"]
        spec["missingness"] = calibrate_missingness(Model(artifact), rates, config.seed)
        artifact = Artifact.create(spec, graphs)
    validation = validation_imputation(artifact, table, trained.validation_rows, config.seed)
    return Artifact.create(
        {**spec, "metrics": {**metrics, "validation_imputation": validation}}, graphs
    )


def calibration_rows(encoded, validation_rows: np.ndarray, config) -> dict[str, np.ndarray]:
    """Up to ``CALIBRATION_ROWS`` training rows (not the validation rows the graphs are
    checked and scored on), seeded: what fixes the 8-bit graphs' input ranges."""
    rows = np.setdiff1d(np.arange(len(encoded.mask)), validation_rows)
    if len(rows) == 0:
        rows = np.arange(len(encoded.mask))
    rng = np.random.default_rng([config.seed, 7])
    rows = np.sort(rng.permutation(rows)[:CALIBRATION_ROWS])
    return {"num": encoded.num[rows], "cat": encoded.cat[rows], "mask": encoded.mask[rows]}


def export_checked(
    trained, n_numeric: int, sizes: list[int], encoded, check, calibration=None
) -> tuple:
    """Export the graphs and prove them against torch. The boosted trees' export reads
    scikit-learn's private tree arrays: if a scikit-learn release changed them (export fails
    or disagrees), the model is stored without the trees, with a warning and the reason in
    ``metrics.trees.dropped``, rather than not at all (the point predictor alone is the
    ``category_trees=False, numeric_trees=False`` model)."""

    def attempt():
        graphs = export_graphs(trained, n_numeric, sizes, calibration)
        rows = (encoded.num[check], encoded.cat[check], encoded.mask[check])
        return graphs, check_agreement(trained, graphs, *rows)

    if not trained.trees:
        return attempt()
    try:
        return attempt()
    except Exception as error:  # any failure of the trees' export
        log.warning("boosted trees could not be exported (%s); stored without them", error)
        trained.trees = []
        trees = trained.metrics.get("trees", {})
        trained.metrics["trees"] = {**trees, "dropped": f"{type(error).__name__}: {error}"[:500]}
        return attempt()


def validation_imputation(
    artifact: Artifact, table: pa.Table, validation_rows: np.ndarray, seed: int
) -> dict:
    """How well the stored model fills cells it never saw: hide a fifth of the observed cells of
    up to 2,000 validation rows (rows the denoiser did not learn from), impute them with the
    exported ONNX graphs (what SQL will run), score against the truth and against filling
    means and modes of the other rows. Stored in the training summary, so
    ``latent_diffusion_models()`` shows how good each model is."""
    model = Model(artifact)
    numeric = [c.name for c in model.encoder.numeric_columns]
    categorical = [c.name for c in model.encoder.categorical_columns]
    held_out = len(validation_rows) < table.num_rows
    rows = np.sort(validation_rows[:VALIDATION_ROWS])
    truth = table.take(rows)
    masked, hidden = hide_cells(truth, numeric + categorical, VALIDATION_HIDE, seed)
    if not any(mask.any() for mask in hidden.values()):
        return {"rows": len(rows), "hidden_cells": 0}
    filled = pa.Table.from_batches(
        [model.impute_batch(batch) for batch in masked.to_batches()], schema=masked.schema
    )
    others = np.setdiff1d(np.arange(table.num_rows), rows) if held_out else rows
    baseline = mean_mode_fill(masked, numeric, categorical, reference=table.take(others))
    ours = imputation_scores(truth, filled, hidden, numeric, categorical)
    base = imputation_scores(truth, baseline, hidden, numeric, categorical)
    return {
        "rows": len(rows),
        "held_out": held_out,
        "hidden_share": VALIDATION_HIDE,
        **{key: _rounded(value) for key, value in ours.items()},
        "mean_mode_mae": _rounded(base["mae"]),
        "mean_mode_accuracy": _rounded(base["accuracy"]),
    }


def _rounded(value):
    """Four decimals; NaN (no cell of that kind) or infinity (values at float64's limits
    overflow the z-scores) becomes null, which JSON can hold."""
    if isinstance(value, float):
        return round(value, 4) if np.isfinite(value) else None
    return value


def build_spec(
    *,
    name: str,
    source: str,
    table: pa.Table,
    columns: list[ColumnSpec],
    encoder: Encoder,
    keys: dict,
    latent_dim: int,
    config: dict,
    metrics: dict,
) -> dict:
    """The JSON half of an artifact (the training package supplies the graphs)."""
    null_fractions = {}
    for spec in columns:
        if spec.kind != PASSTHROUGH and table.num_rows:
            column = table.column(spec.name)
            null_fractions[spec.name] = column.null_count / table.num_rows
    return {
        "name": name,
        "source": source,
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "columns": [c.to_json() for c in columns],
        "arrow_schema": encode_schema(table.schema),
        "encoder": encoder.to_json(),
        "null_fractions": null_fractions,
        "keys": keys,
        "latent_dim": latent_dim,
        "sampling_steps": config["sampling_steps"],
        "config": config,
        "metrics": metrics,
        "versions": library_versions(),
    }


def library_versions() -> dict:
    versions = {"python": platform.python_version()}
    for package in (
        "duckdb-diffusion",
        "duckdb",
        "onnxruntime",
        "numpy",
        "pyarrow",
        "torch",
        "onnx",
    ):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return versions


def demote_unlearnable(table: pa.Table, columns: list[ColumnSpec]) -> list[ColumnSpec]:
    """Columns with nothing to learn from (entirely NULL/NaN) become passthrough."""
    out = []
    for spec in columns:
        if spec.kind != PASSTHROUGH:
            column = table.column(spec.name).combine_chunks()
            empty = (
                column.null_count == len(column)
                if spec.kind == CATEGORICAL
                else not np.isfinite(numeric_values(column)).any()
            )
            if empty:
                spec = ColumnSpec(
                    spec.name, spec.duckdb_type, PASSTHROUGH, reason="no observed values"
                )
        out.append(spec)
    return out
