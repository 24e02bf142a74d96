"""The bodies of the UDFs the planned SQL calls: they run rows through the shared core.

Arrow UDFs get at most 2,048 rows per call; constant arguments arrive as arrays of that length.
"""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa

from .. import arrays, fitting
from ..artifact import ArtifactError
from ..conditions import checked_given
from ..loading import MODELS, load_model
from ..runtime import Model
from ..schema import check_columns, struct_fields
from ..summary import WIRE_ARROW, to_wire
from .registration import Instance


def model_for(instance: Instance, digest: str, name: str, model_dir: str | None) -> Model:
    """The model a query was planned with: from the cache, or read again if it aged out."""
    model = MODELS.get(digest)
    if model is not None:
        return model
    cursor = instance.cursor()
    try:
        model = load_model(cursor, name, model_dir)
    finally:
        cursor.close()
    if model.artifact.digest != digest:
        raise ArtifactError(
            f"model {name!r} was replaced while this query ran (planned with digest "
            f"{digest[:12]}, stored now {model.artifact.digest[:12]}); run the query again"
        )
    return model


def impute(instance: Instance, names: list[str]):
    def run(rows, seed, draws, digest, name, model_dir, copy):
        model = model_for(instance, _first(digest), _first(name), _first(model_dir))
        rows = rows.combine_chunks() if isinstance(rows, pa.ChunkedArray) else rows
        batch = pa.RecordBatch.from_struct_array(rows)
        # The planned SQL keeps every observed cell (``coalesce``): none is merged here.
        filled = model.impute_batch(
            batch,
            int(_first(seed)),
            int(_first(draws)),
            copy=int(_first(copy)),
            keep_observed=False,
        )
        return pa.StructArray.from_arrays(
            [filled.column(n) for n in names], fields=[filled.schema.field(n) for n in names]
        )

    return run


def synthesize(instance: Instance):
    def run(ordinals, seed, digest, name, model_dir, given, total):
        model = model_for(instance, _first(digest), _first(name), _first(model_dir))
        conditions = checked_given(model, _first(given))
        if isinstance(ordinals, pa.ChunkedArray):
            ordinals = ordinals.combine_chunks()
        ordinals = np.asarray(arrays.values(ordinals), dtype=np.int64)
        # ``total``: the scan's row count, beyond which no rows are begun ahead
        batch = model.synthesize_rows(ordinals, int(_first(seed)), conditions, int(_first(total)))
        return pa.StructArray.from_arrays(batch.columns, fields=list(batch.schema))

    return run


def check(instance: Instance):
    def run(digest: str, table: str, model: str, names, trained, row_type: str) -> str:
        """Runs while DuckDB plans the impute query (its arguments are constants)."""
        cursor = instance.cursor()
        try:
            found = struct_fields(cursor, row_type)
        finally:
            cursor.close()
        check_columns(table, model, list(names), list(trained), found)
        return digest

    return run


def train(instance: Instance):
    def run(name, source, settings_json, model_dir, rows, statistics, sample):
        cursor = instance.cursor()
        try:
            info = fitting.train_from(
                cursor,
                name=_first(name),
                source=_first(source),
                rows=int(_first(rows)),
                statistics=statistics,
                sample=sample,
                settings=json.loads(_first(settings_json)),
                model_dir=_first(model_dir),
            )
            from . import after_training

            after_training(cursor, info["name"], _first(model_dir))
        finally:
            cursor.close()
        return pa.array([to_wire(info)] * len(name), type=WIRE_ARROW)

    return run


def _first(array):
    value = array[0]
    return value.as_py() if hasattr(value, "as_py") else value
