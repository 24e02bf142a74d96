"""The Python API, and the one core every other door (SQL, CLI, dbt) calls into.

``train`` fits a model on a table and stores it in the registry; ``impute`` and ``synthesize``
stream Arrow record batches through the stored model and hand DuckDB a relation.
"""

from __future__ import annotations

from collections import OrderedDict

import duckdb
import numpy as np
import pyarrow as pa
from sqlglot import exp

from .artifact import Artifact, ArtifactError
from .registry import ModelNotFoundError, registry_for
from .runtime import DEFAULT_DRAWS, Model
from .schema import PASSTHROUGH, infer_schema
from .source import SourceError, parse_source

BATCH_ROWS = 65_536
# Loaded models keyed by spec digest, so onnxruntime sessions stay warm across calls.
_models: OrderedDict[str, Model] = OrderedDict()
MAX_LOADED_MODELS = 16


def train(
    con: duckdb.DuckDBPyConnection,
    table: str,
    model: str | None = None,
    *,
    categorical: list[str] | tuple[str, ...] = (),
    passthrough: list[str] | tuple[str, ...] = (),
    model_dir: str | None = None,
    **settings,
) -> dict:
    """Train a model on ``table`` (a name or a parenthesised SELECT) and store it as ``model``.

    ``settings`` are fields of ``TrainConfig`` (seed, max_seconds, sampling_steps, ...).
    Returns the training summary. Needs the ``train`` extra (torch).
    """
    try:
        from .training import fit_artifact
    except ImportError as error:
        raise ImportError(
            f"training needs torch ({error}); install duckdb-diffusion[train] (see the README)"
        ) from None
    source = parse_source(table)
    name = model_name(model, source)
    relation = source.relation(con)
    registry = registry_for(con, model_dir)
    registry.check_writable()
    columns = infer_schema(relation, categorical, passthrough)
    artifact = fit_artifact(relation, columns, name=name, source=table, settings=settings)
    registry.save(artifact)
    from .sql import after_training

    after_training(con, name, model_dir)
    return summary(artifact)


def impute(
    con: duckdb.DuckDBPyConnection,
    table: str,
    model: str | None = None,
    *,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    batch_rows: int = BATCH_ROWS,
    model_dir: str | None = None,
) -> duckdb.DuckDBPyRelation:
    """``table`` with every NULL of a modelled column filled; all else as it was, in order.

    The relation streams (a table larger than memory works) and can be read once: keep the
    result with ``.create("name")``, ``.to_arrow_table()`` or ``.df()``.
    """
    reader, types = _impute_reader(con, table, model, seed, draws, batch_rows, model_dir)
    return _typed(con.from_arrow(reader), reader.schema.names, types)


def impute_batches(
    con: duckdb.DuckDBPyConnection,
    table: str,
    model: str | None = None,
    *,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    batch_rows: int = BATCH_ROWS,
    model_dir: str | None = None,
) -> pa.RecordBatchReader:
    """The imputed table as Arrow record batches of up to ``batch_rows`` rows."""
    return _impute_reader(con, table, model, seed, draws, batch_rows, model_dir)[0]


def synthesize(
    con: duckdb.DuckDBPyConnection,
    model: str,
    n: int,
    *,
    seed: int = 0,
    batch_rows: int = BATCH_ROWS,
    model_dir: str | None = None,
) -> duckdb.DuckDBPyRelation:
    """``n`` new rows with the training table's columns and types (read once, like ``impute``)."""
    reader, loaded = _synthesize_reader(con, model, n, seed, batch_rows, model_dir)
    types = [c.duckdb_type for c in loaded.columns]
    return _typed(con.from_arrow(reader), reader.schema.names, types)


def synthesize_batches(
    con: duckdb.DuckDBPyConnection,
    model: str,
    n: int,
    *,
    seed: int = 0,
    batch_rows: int = BATCH_ROWS,
    model_dir: str | None = None,
) -> pa.RecordBatchReader:
    """``n`` new rows as Arrow record batches of up to ``batch_rows`` rows."""
    return _synthesize_reader(con, model, n, seed, batch_rows, model_dir)[0]


def _synthesize_reader(con, model, n, seed, batch_rows, model_dir):
    _check_count("n", n, minimum=0)
    _check_count("batch_rows", batch_rows)
    _check_seed(seed)
    loaded = load_model(con, model, model_dir)

    def batches():
        for start in range(0, n, batch_rows):
            yield loaded.synthesize_batch(start, min(batch_rows, n - start), seed)

    return pa.RecordBatchReader.from_batches(loaded.schema, batches()), loaded


def load_model(
    con: duckdb.DuckDBPyConnection,
    name: str,
    model_dir: str | None = None,
    table: str | None = None,
) -> Model:
    """The stored model ``name``; ``table`` (what it would be trained on) shapes the hint."""
    registry = registry_for(con, model_dir)
    try:
        artifact = registry.load(name)
    except ModelNotFoundError:
        table = table or name
        literal = exp.Literal.string(table).sql(dialect="duckdb")
        named = "" if table == name else f", model := {exp.Literal.string(name).sql('duckdb')}"
        raise ModelNotFoundError(
            f"no model named {name!r} in {registry.describe()}; train one with "
            f"SELECT * FROM train_latent_diffusion({literal}{named}) "
            f"or duckdb_diffusion.train(con, {table!r}, model={name!r})"
        ) from None
    key = artifact.digest
    if key not in _models:
        _models[key] = Model(artifact)
        while len(_models) > MAX_LOADED_MODELS:
            _models.popitem(last=False)
    _models.move_to_end(key)
    return _models[key]


def models(con: duckdb.DuckDBPyConnection, model_dir: str | None = None) -> list[dict]:
    """A summary of every stored model; a damaged one is listed with its error as metrics, so
    one bad model neither hides nor breaks the listing."""
    registry = registry_for(con, model_dir)
    found = []
    for name in registry.names():
        try:
            found.append(summary(registry.load(name)))
        except ArtifactError as error:
            unknown = ["source", "rows", "columns", "modelled_columns", "created_at"]
            unknown += ["training_seconds", "size_bytes"]
            found.append(
                {**dict.fromkeys(unknown), "model": name, "metrics": {"error": str(error)}}
            )
    return found


def summary(artifact: Artifact) -> dict:
    spec = artifact.spec
    modelled = [c for c in spec["columns"] if c["kind"] != PASSTHROUGH]
    return {
        "model": spec["name"],
        "source": spec["source"],
        "rows": spec["metrics"]["rows"],
        "columns": len(spec["columns"]),
        "modelled_columns": len(modelled),
        "created_at": spec["created_at"],
        "training_seconds": spec["metrics"]["training_seconds"],
        "metrics": spec["metrics"],
        "size_bytes": sum(len(g) for g in artifact.graphs.values()),
    }


def _impute_reader(con, table, model, seed, draws, batch_rows, model_dir):
    _check_count("draws", draws, minimum=0)
    _check_count("batch_rows", batch_rows)
    _check_seed(seed)
    source = parse_source(table)
    cursor = con.cursor()
    relation = source.relation(cursor)
    loaded = load_model(con, model_name(model, source), model_dir, table)
    check_compatible(loaded, table, relation.columns, [str(t) for t in relation.types])
    types = [str(t) for t in relation.types]
    reader = relation.to_arrow_reader(batch_rows)

    def batches():
        try:
            for batch in reader:
                yield loaded.impute_batch(batch, seed, draws)
        finally:
            cursor.close()

    return pa.RecordBatchReader.from_batches(reader.schema, batches()), types


def check_compatible(model: Model, table: str, names: list[str], types: list[str]) -> None:
    """The columns the model learned must be in the table with the same types."""
    found = dict(zip(names, types, strict=True))
    missing = [c.name for c in model.columns if c.kind != PASSTHROUGH and c.name not in found]
    changed = [
        f"{c.name} ({c.duckdb_type} in the model, {found[c.name]} now)"
        for c in model.columns
        if c.kind != PASSTHROUGH and c.name in found and found[c.name] != c.duckdb_type
    ]
    if missing or changed:
        problems = []
        if missing:
            problems.append(f"missing columns {missing}")
        if changed:
            problems.append(f"changed types: {', '.join(changed)}")
        raise SourceError(
            f"table {table!r} no longer matches model {model.name!r}: {'; '.join(problems)}. "
            f"Retrain the model on the table as it is now."
        )


def _typed(relation, names: list[str], types: list[str]) -> duckdb.DuckDBPyRelation:
    """Cast each column back to its DuckDB type (Arrow round trips lose e.g. HUGEINT, ENUM)."""
    casts = [
        exp.cast(exp.column(n, quoted=True), exp.DataType.build(t, dialect="duckdb")).as_(
            n, quoted=True
        )
        for n, t in zip(names, types, strict=True)
    ]
    return relation.project(", ".join(c.sql(dialect="duckdb") for c in casts))


def model_name(model: str | None, source) -> str:
    if model is not None:
        if not isinstance(model, str) or not model.strip():
            raise ValueError("model name must be a non-empty string")
        return model
    if source.default_model is None:
        raise ValueError(f"source {source.text!r} is a subquery: name the model with model=...")
    return source.default_model


def _check_count(name: str, value, minimum: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")


def _check_seed(seed) -> None:
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
