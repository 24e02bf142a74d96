"""What a model is, in one row: the schema shared by training's result, the registry listing
(``latent_diffusion_models()``, ``ddf.models``), the CLI and the Python API.

One list of fields and types, so every door names them alike (``name``, ``created``,
``size``) and the SQL casts come from the same place as the Python dicts.
"""

from __future__ import annotations

import json

import pyarrow as pa

from .artifact import Artifact
from .schema import PASSTHROUGH
from .source import sql_identifier, sql_literal

# Field -> DuckDB type, in the order every door shows them.
COLUMNS = {
    "name": "VARCHAR",
    "source": "VARCHAR",
    "rows": "BIGINT",
    "columns": "BIGINT",
    "modelled_columns": "BIGINT",
    "training_seconds": "DOUBLE",
    "validation_loss": "DOUBLE",
    "created": "TIMESTAMP",
    "size": "BIGINT",
    "metrics": "JSON",
}
# How a summary crosses an Arrow UDF (JSON and timestamps travel as text, cast back in SQL).
WIRE_TYPES = {**COLUMNS, "created": "VARCHAR", "metrics": "VARCHAR"}
_ARROW = {"VARCHAR": pa.string(), "BIGINT": pa.int64(), "DOUBLE": pa.float64()}
WIRE_ARROW = pa.struct([(name, _ARROW[t]) for name, t in WIRE_TYPES.items()])


def summary(artifact: Artifact) -> dict:
    spec = artifact.spec
    metrics = spec["metrics"]
    modelled = [c for c in spec["columns"] if c["kind"] != PASSTHROUGH]
    return {
        "name": spec["name"],
        "source": spec["source"],
        "rows": metrics["rows"],
        "columns": len(spec["columns"]),
        "modelled_columns": len(modelled),
        "training_seconds": metrics["training_seconds"],
        "validation_loss": metrics.get("diffusion", {}).get("validation_loss"),
        "created": spec["created_at"],
        "size": sum(len(g) for g in artifact.graphs.values()),
        "metrics": metrics,
    }


def damaged(name: str, error: Exception) -> dict:
    """The row of a model that cannot be read: its name, and the error as its metrics."""
    return {**dict.fromkeys(COLUMNS), "name": name, "metrics": {"error": str(error)}}


def to_wire(row: dict) -> dict:
    """A summary as the UDF returns it (see WIRE_TYPES)."""
    return {**row, "metrics": json.dumps(row["metrics"], sort_keys=True)}


def casts() -> str:
    """The SELECT list that types the summary columns of a row read as text (``WIRE_TYPES``):
    training's result and the registry listing share it."""
    return ", ".join(
        f"CAST({sql_identifier(c)} AS {t}) AS {sql_identifier(c)}" for c, t in COLUMNS.items()
    )


def values_sql(rows: list[dict]) -> str:
    """The rows as one typed SELECT (the registry listing)."""
    names = ", ".join(sql_identifier(c) for c in COLUMNS)
    if not rows:
        empty = ", ".join(f"CAST(NULL AS {t}) AS {sql_identifier(c)}" for c, t in COLUMNS.items())
        return f"SELECT {empty} WHERE false"
    tuples = []
    for row in rows:
        wire = to_wire(row)
        values = [sql_literal(wire[c]) for c in COLUMNS]
        tuples.append("(" + ", ".join(values) + ")")
    return f"SELECT {casts()} FROM (VALUES {', '.join(tuples)}) AS t({names}) ORDER BY name"
