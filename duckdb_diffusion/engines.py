"""A stored model on another engine's Arrow batches: what Spark and Ray share.

The driver loads and checks everything a user can get wrong (the model's name, the table's
columns, the seed) before any task starts, so those errors are the SQL door's own, raised
where the call was made. Then the model travels as data, its spec JSON and ONNX bytes
(``Shipped``), never as a pickled object: each worker process verifies the checksums and
builds onnxruntime sessions once (``worker_model``), sized to the cores its task was given,
and every batch after that reuses them.

Rows come out as the DuckDB door makes them, whatever the partitioning: an imputed row's noise
is keyed by its own content and a synthetic row's by its ordinal, and the graphs always run in
fixed blocks (``runtime.BLOCK_ROWS``), so the split into partitions and batches changes nothing.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb
import pyarrow as pa

from . import arguments
from .artifact import Artifact
from .conditions import check_given, checked_given, parse_given
from .loading import ModelCache, load_model
from .runtime import DEFAULT_DRAWS, Model
from .schema import check_model_columns
from .settings import config_of

# A worker process holds the models of the jobs it ran, each once per thread count.
WORKER_MODELS = ModelCache(capacity=4)


@dataclass(frozen=True)
class Shipped:
    """A model as plain data, for a broadcast or an actor's constructor."""

    name: str
    spec_json: str
    graphs: dict[str, bytes]

    @classmethod
    def of(cls, model: Model) -> Shipped:
        artifact = model.artifact
        return cls(artifact.name, artifact.spec_json(), dict(artifact.graphs))


@dataclass(frozen=True)
class Call:
    """A checked call, shipped to the workers: the model and the arguments of every batch."""

    shipped: Shipped
    seed: int
    draws: int = DEFAULT_DRAWS
    given_json: str | None = None  # synthesis: checked given values, as the SQL passes them

    @classmethod
    def from_plain(cls, plain: dict) -> Call:
        """Back from ``dataclasses.asdict`` (what travels: text, bytes and numbers only)."""
        return cls(Shipped(**plain["shipped"]), plain["seed"], plain["draws"], plain["given_json"])


def driver_model(name: str, con: duckdb.DuckDBPyConnection | None, model_dir: str | None) -> Model:
    """The model ``name`` from ``model_dir`` (a directory every worker may not see: the bytes
    are shipped) or from the database of ``con``; the SQL door's not-found error otherwise."""
    name = arguments.text("model", name)
    if (con is None) == (model_dir is None):
        raise ValueError(
            f"model {name!r}: say where it is stored, either model_dir='path' (a model "
            f"directory, see duckdb_diffusion.export_model) or con=<a DuckDB connection whose "
            f"database holds it>, not both"
        )
    if con is None:
        con = duckdb.connect()  # a directory registry reads no database
    return load_model(con, name, model_dir)


def impute_call(
    model: Model, table: str, schema: pa.Schema, seed: int, draws: int
) -> tuple[Call, Model]:
    """Check an imputation before it runs: the seed and draws, and ``schema`` (the input's
    Arrow schema) against the model's columns, as the SQL door checks them while planning."""
    call = Call(Shipped.of(model), arguments.seed(seed), arguments.draws(draws))
    check_model_columns(table, model, schema.names, duckdb_types(schema))
    return call, model


def synthesize_call(model: Model, n: int, seed: int, given=None) -> tuple[Call, int]:
    """Check a synthesis before it runs: seed, row count and ``given`` (as every door does)."""
    values = parse_given(given)
    text = None
    if check_given(model, values) is not None:
        text = json.dumps(values, default=str, sort_keys=True)
    return Call(Shipped.of(model), arguments.seed(seed), given_json=text), arguments.row_count(n)


def duckdb_types(schema: pa.Schema) -> list[str]:
    """The DuckDB type of each field of an Arrow schema, as DuckDB itself maps it (so the
    type rules are those of a table scanned from Arrow)."""
    relation = duckdb.connect().from_arrow(schema.empty_table())
    return [str(t) for t in relation.types]


def worker_model(shipped: Shipped, threads: int) -> Model:
    """The shipped model, loaded once per worker process (checksums verified first)."""
    artifact = Artifact.parse(shipped.spec_json, shipped.graphs, f"{shipped.name!r} (shipped)")
    return WORKER_MODELS.add(artifact, threads)


def impute_table(model: Model, table: pa.Table | pa.RecordBatch, call: Call) -> pa.Table:
    """NULLs of modelled columns filled; every other cell, the schema and the order as given."""
    if isinstance(table, pa.RecordBatch):
        table = pa.Table.from_batches([table])
    batches = [model.impute_batch(b, call.seed, call.draws) for b in table.to_batches()]
    return pa.Table.from_batches(batches, schema=table.schema)


def synthesize_table(model: Model, ordinals, call: Call) -> pa.Table:
    """Rows number ``ordinals`` of the synthetic table for the call's seed (and given)."""
    batch = model.synthesize_rows(ordinals, call.seed, checked_given(model, call.given_json))
    return pa.Table.from_batches([batch])


def train_drawn(
    draw,
    name: str,
    *,
    label: str,
    con: duckdb.DuckDBPyConnection | None,
    model_dir: str | None,
    settings: dict,
) -> dict:
    """Train model ``name`` on the rows ``draw(max_rows, seed)`` brings to the driver (it
    returns the table's row count and at most ``max_rows`` of its rows as Arrow), stored
    where ``con`` / ``model_dir`` say; the column statistics come from those rows. Every
    setting is checked before ``draw`` reads a row. Returns the model's summary."""
    from .api import train_source

    name = arguments.text("model", name)
    if (con is None) == (model_dir is None):
        raise ValueError(
            f"model {name!r}: say where to store it, either model_dir='path' (a model "
            f"directory) or con=<a DuckDB connection>, not both"
        )
    settings = arguments.column_choices(settings)
    config = config_of(settings)
    rows, sample = draw(config.max_rows, config.seed)
    target = duckdb.connect() if con is None else con
    view = "__ddf_engine_sample"
    target.register(view, sample)
    try:
        return train_source(
            target,
            f"SELECT * FROM {view}",
            name=name,
            label=label,
            settings=settings,
            model_dir=model_dir,
            config=config,
            rows=rows,
        )
    finally:
        target.unregister(view)
