"""From a DuckDB relation to a stored-ready artifact: sample, encode, train, export, verify."""

from __future__ import annotations

import datetime as dt
import platform
from dataclasses import fields
from importlib import metadata

import duckdb
import numpy as np
import pyarrow as pa
from sqlglot import exp

from ..artifact import Artifact, encode_schema
from ..encoding import Encoder, numeric_values
from ..schema import CATEGORICAL, PASSTHROUGH, ColumnSpec
from .export import OPSET, check_agreement, export_graphs
from .trainer import TrainConfig, train

CHECK_ROWS = 256


def fit_artifact(
    relation: duckdb.DuckDBPyRelation,
    columns: list[ColumnSpec],
    *,
    name: str,
    source: str,
    settings: dict,
) -> Artifact:
    config = make_config(settings)
    rows = relation.aggregate("count(*)").fetchall()[0][0]
    if rows > config.max_rows:
        relation = relation.query(
            "__source",
            f"SELECT * FROM __source USING SAMPLE reservoir({int(config.max_rows)} ROWS) "
            f"REPEATABLE ({int(config.seed)})",
        )
    table = relation.to_arrow_table()
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
    trained = train(encoded.num, encoded.cat, encoded.mask, encoder.category_sizes, config)
    graphs = export_graphs(trained, encoded.num.shape[1], encoder.category_sizes)
    check = trained.validation_rows[:CHECK_ROWS]
    agreement = check_agreement(
        trained, graphs, encoded.num[check], encoded.cat[check], encoded.mask[check]
    )
    metrics = {**trained.metrics, "source_rows": int(rows), "onnx_check": agreement, "opset": OPSET}
    spec = build_spec(
        name=name,
        source=source,
        table=table,
        columns=columns,
        encoder=encoder,
        keys=key_starts(relation, columns),
        latent_dim=config.latent_dim,
        config=config.to_json(),
        metrics=metrics,
    )
    return Artifact.create(spec, graphs)


def make_config(settings: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(settings) - known)
    if unknown:
        raise ValueError(f"unknown training settings {unknown}; known: {sorted(known)}")
    return TrainConfig(**settings)


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


def key_starts(relation: duckdb.DuckDBPyRelation, columns: list[ColumnSpec]) -> dict:
    """First fresh value for each integer key column (over the whole source, not the sample),
    so synthetic keys never collide with real ones."""
    keys = [c for c in columns if c.kind == PASSTHROUGH and c.reason == "unique integer key"]
    if not keys:
        return {}
    maxima = [exp.func("max", exp.column(c.name, quoted=True)).sql(dialect="duckdb") for c in keys]
    row = relation.aggregate(", ".join(maxima)).fetchall()[0]
    return {c.name: int(v) + 1 for c, v in zip(keys, row, strict=True) if v is not None}


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
