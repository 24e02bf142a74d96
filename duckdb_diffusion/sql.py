"""The SQL surface: table functions for training, imputation, synthesis and the registry.

DuckDB's Python API has no table functions, so each one is a TEMP table macro over
``query()`` of a *planner* UDF that returns SQL text:

    impute_latent_diffusion(tbl, ...)  ->  SELECT * EXCLUDE (__ddf) REPLACE (__ddf."c" AS "c", ...)
                                           FROM (SELECT *, ddf_impute_<model>(struct_pack(...),
                                                 seed, draws) AS __ddf FROM <tbl>)
    synthesize_rows(model, n, ...)     ->  SELECT unnest(ddf_synthesize_<model>(range, seed))
                                           FROM range(n)
    train_latent_diffusion(tbl, ...)   ->  SELECT unnest(ddf_train(...))   (VOLATILE: runs once,
                                           at execution time, never at bind time)

so names, order and types of the output are the source's (DESCRIBE and CREATE TABLE AS agree),
and every row goes through the same ``Model`` methods as the Python API.

What DuckDB 2.0 requires of this (see DESIGN.md section 4):
- UDFs are instance-wide and die with the instance; macros are TEMP, so per connection:
  ``install`` is idempotent and is called on every connection or cursor that uses them.
- SQL run from inside a UDF goes through a cursor of an installed, still open connection.
- A UDF whose registering connection was closed segfaults the process when called, unless its
  callable is still referenced: every callable is kept in ``_KEEP`` for the life of the process.
- A UDF registered while a query runs is invisible to that query, so per-model UDFs are
  registered ahead: by ``install`` for every stored model, and right after each training.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import uuid
import weakref
from collections import OrderedDict

import duckdb
import numpy as np
import pyarrow as pa
from sqlglot import exp

from . import api
from .artifact import ArtifactError
from .registry import registry_for
from .runtime import DEFAULT_DRAWS, Model, log
from .schema import PASSTHROUGH
from .source import parse_source

_KEEP: list = []  # every callable handed to DuckDB, referenced for the life of the process
_LOCK = threading.RLock()
_INSTANCES: dict[str, _Instance] = {}
# Models that planners handed to a query, by spec digest; the per-signature UDFs look them up.
_PLANNED: OrderedDict[str, Model] = OrderedDict()
MAX_PLANNED = 64
MAX_SEED = 2**63 - 1
MAX_ROWS = 10**12

SUMMARY_TYPE = {
    "model": "VARCHAR",
    "source": "VARCHAR",
    "rows": "BIGINT",
    "columns": "BIGINT",
    "modelled_columns": "BIGINT",
    "training_seconds": "DOUBLE",
    "validation_loss": "DOUBLE",
    "size_bytes": "BIGINT",
    "created_at": "VARCHAR",
}
MODELS_COLUMNS = {
    "name": "VARCHAR",
    "source": "VARCHAR",
    "columns": "BIGINT",
    "rows": "BIGINT",
    "created": "TIMESTAMP",
    "metrics": "JSON",
    "size": "BIGINT",
}

MACROS = [
    "CREATE OR REPLACE TEMP MACRO impute_latent_diffusion(tbl, model := NULL, seed := 0, "
    f"draws := {DEFAULT_DRAWS}) AS TABLE "
    "SELECT * FROM query(ddf_plan_impute(tbl, model, seed::VARCHAR, draws::VARCHAR))",
    "CREATE OR REPLACE TEMP MACRO synthesize_rows(model, n, seed := 0) AS TABLE "
    "SELECT * FROM query(ddf_plan_synthesize(model, n::VARCHAR, seed::VARCHAR))",
    "CREATE OR REPLACE TEMP MACRO train_latent_diffusion(tbl, model := NULL, seed := 0, "
    "max_seconds := NULL, settings := NULL, categorical := NULL, passthrough := NULL) AS TABLE "
    "SELECT * FROM query(ddf_plan_train(tbl, model, seed::VARCHAR, max_seconds::VARCHAR, "
    "settings::VARCHAR, to_json(categorical)::VARCHAR, to_json(passthrough)::VARCHAR))",
    "CREATE OR REPLACE TEMP MACRO latent_diffusion_models() AS TABLE "
    "SELECT * FROM query(ddf_plan_models())",
]


class _Instance:
    """Per DuckDB instance: its installed connections, model directory and registered UDFs."""

    def __init__(self, token: str, model_dir: str | None):
        self.token = token
        self.model_dir = model_dir
        # Weak references: holding a connection would keep its database open (and its file
        # locked) after the user let go of it.
        self.connections: list[weakref.ref] = []
        self.functions: set[str] = set()

    def add(self, con: duckdb.DuckDBPyConnection) -> None:
        if all(ref() is not con for ref in self.connections):
            self.connections.append(weakref.ref(con))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor of any still-open installed connection, for SQL run inside a UDF."""
        for ref in list(self.connections):
            con = ref()
            try:
                if con is not None:
                    return con.cursor()
            except duckdb.ConnectionException:
                pass
            self.connections.remove(ref)
        raise RuntimeError(
            "every connection that installed duckdb_diffusion on this database is closed; "
            "call duckdb_diffusion.install(con) on the connection you use"
        )


def install(con: duckdb.DuckDBPyConnection, model_dir: str | None = None) -> list[str]:
    """Register the SQL functions and every stored model on ``con``. Idempotent; call it on
    every connection and cursor that runs the functions. Returns the stored models' names."""
    with _LOCK:
        instance = _instance(con, model_dir)
        instance.add(con)
        names = registry_for(con, instance.model_dir).names()
        for name in names:
            try:
                loaded = api.load_model(con, name, instance.model_dir)
            except ArtifactError as error:
                # One damaged model must not take the others down; using it reports this.
                log.warning("skipping model %r: %s", name, error)
                continue
            _register_model(con, instance, loaded)
        for statement in MACROS:
            con.execute(statement)
        return names


def connect(database: str = ":memory:", model_dir: str | None = None, **kwargs):
    """``duckdb.connect`` with the functions installed."""
    con = duckdb.connect(database, **kwargs)
    install(con, model_dir)
    return con


def after_training(con: duckdb.DuckDBPyConnection, name: str, model_dir: str | None) -> None:
    """Register a freshly trained model on ``con``'s instance if the functions are installed."""
    with _LOCK:
        token = _token(con)
        if token in _INSTANCES:
            _register_model(con, _INSTANCES[token], api.load_model(con, name, model_dir))


# -- instances --------------------------------------------------------------------------------
def _token(con) -> str | None:
    found = con.execute(
        "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'ddf_instance'"
    ).fetchall()[0][0]
    return con.execute("SELECT ddf_instance()").fetchall()[0][0] if found else None


def _instance(con, model_dir) -> _Instance:
    token = _token(con)
    if token is not None:
        instance = _INSTANCES[token]
        if model_dir is not None:
            instance.model_dir = model_dir
        return instance
    instance = _Instance(uuid.uuid4().hex, model_dir)
    _INSTANCES[instance.token] = instance
    _register(con, "ddf_instance", lambda: instance.token, [], "VARCHAR", native=True)
    # Planners take every macro argument as text (the macros cast them) and return SQL.
    for name, plan, arity in [
        ("ddf_plan_impute", _plan_impute, 4),
        ("ddf_plan_synthesize", _plan_synthesize, 3),
        ("ddf_plan_train", _plan_train, 7),
        ("ddf_plan_models", _plan_models, 0),
    ]:
        planner = _planner(instance, plan, arity)
        _register(con, name, planner, ["VARCHAR"] * arity, "VARCHAR", native=True)
    _register(
        con,
        "ddf_train",
        _train_udf(instance),
        ["VARCHAR", "VARCHAR", "BIGINT", "DOUBLE", "VARCHAR"],
        _struct(SUMMARY_TYPE),
        side_effects=True,
    )
    return instance


def _register(con, name, function, parameters, returns, native=False, side_effects=False):
    _KEEP.append(function)
    con.create_function(
        name,
        function,
        None if parameters is None else [duckdb.sqltype(p) for p in parameters],
        duckdb.sqltype(returns) if isinstance(returns, str) else returns,
        type="native" if native else "arrow",
        null_handling="special",
        side_effects=side_effects,
    )


def _struct(columns: dict[str, str]):
    return duckdb.struct_type({name: duckdb.sqltype(t) for name, t in columns.items()})


# -- per-model UDFs ---------------------------------------------------------------------------
def _function_names(model: Model) -> tuple[str, str]:
    """UDF names keyed by the model's output types, not by the model: a model retrained (here
    or by another process) with the same columns and types reuses them, no new install needed.
    Which model runs is an argument (its spec digest), resolved when the UDF is called."""
    modelled = [[c.name, c.duckdb_type] for c in model.columns if c.kind != PASSTHROUGH]
    every = [[c.name, c.duckdb_type] for c in model.columns]
    return f"ddf_impute_{_short_hash(modelled)}", f"ddf_synthesize_{_short_hash(every)}"


def _short_hash(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:20]


def _register_model(con, instance: _Instance, model: Model) -> None:
    _remember(model)
    impute_name, synth_name = _function_names(model)
    if impute_name not in instance.functions:
        modelled = [c for c in model.columns if c.kind != PASSTHROUGH]
        _register(
            con,
            impute_name,
            _impute_udf([c.name for c in modelled]),
            None,
            _struct({c.name: c.duckdb_type for c in modelled}),
        )
        instance.functions.add(impute_name)
    if synth_name not in instance.functions:
        _register(
            con,
            synth_name,
            _synthesize_udf(),
            ["BIGINT", "BIGINT", "VARCHAR"],
            _struct({c.name: c.duckdb_type for c in model.columns}),
        )
        instance.functions.add(synth_name)


def _remember(model: Model) -> None:
    """Keep a planned model reachable by digest until its query has run."""
    with _LOCK:
        _PLANNED[model.artifact.digest] = model
        _PLANNED.move_to_end(model.artifact.digest)
        while len(_PLANNED) > MAX_PLANNED:
            _PLANNED.popitem(last=False)


def _planned(digest) -> Model:
    key = digest[0].as_py()
    with _LOCK:
        model = _PLANNED.get(key)
    if model is None:
        raise LookupError(
            f"the model planned for this query (digest {key[:12]}) is no longer loaded "
            f"(more than {MAX_PLANNED} models were used since); run the query again"
        )
    return model


def _impute_udf(names: list[str]):
    def impute(rows, seed, draws, digest):
        model = _planned(digest)
        rows = rows.combine_chunks() if isinstance(rows, pa.ChunkedArray) else rows
        batch = pa.RecordBatch.from_struct_array(rows)
        filled = model.impute_batch(batch, _first_int(seed), _first_int(draws))
        return pa.StructArray.from_arrays(
            [filled.column(n) for n in names], fields=[filled.schema.field(n) for n in names]
        )

    return impute


def _synthesize_udf():
    def synthesize(ordinals, seed, digest):
        model = _planned(digest)
        ordinals = ordinals.to_numpy() if hasattr(ordinals, "to_numpy") else np.asarray(ordinals)
        batch = model.synthesize_rows(np.asarray(ordinals, dtype=np.int64), _first_int(seed))
        return pa.StructArray.from_arrays(batch.columns, fields=list(batch.schema))

    return synthesize


def _first_int(array) -> int:
    value = array[0]
    return int(value.as_py() if hasattr(value, "as_py") else value)


# -- planners: bind-time UDFs that turn the macro's arguments into SQL -----------------------
def _planner(instance: _Instance, plan, arity: int):
    """``plan`` as a UDF of exactly ``arity`` arguments (DuckDB checks the signature)."""

    def run(*args):
        cursor = instance.cursor()
        try:
            return plan(instance, cursor, *args)
        finally:
            cursor.close()

    signatures = {
        0: lambda: run(),
        3: lambda a, b, c: run(a, b, c),
        4: lambda a, b, c, d: run(a, b, c, d),
        7: lambda a, b, c, d, e, f, g: run(a, b, c, d, e, f, g),
    }
    return signatures[arity]


def _plan_impute(instance, cursor, table, model, seed, draws) -> str:
    seed = _parameter("seed", seed, minimum=0, maximum=MAX_SEED)
    draws = _parameter("draws", draws, minimum=0, maximum=1000)
    source = parse_source(_text("tbl", table))
    name = api.model_name(model, source)
    relation = source.relation(cursor)
    loaded = api.load_model(cursor, name, instance.model_dir, table)
    api.check_compatible(loaded, table, relation.columns, [str(t) for t in relation.types])
    impute_name, _ = _function_names(loaded)
    _require_registered(instance, impute_name, name)
    _remember(loaded)
    digest = exp.Literal.string(loaded.artifact.digest).sql(dialect="duckdb")
    fields = [c.name for c in loaded.columns if c.kind != PASSTHROUGH]
    packed = ", ".join(f"{_ident(f)} := {_ident(f)}" for f in fields)
    replaced = ", ".join(f"__ddf.{_ident(f)} AS {_ident(f)}" for f in fields)
    return (
        f"SELECT * EXCLUDE (__ddf) REPLACE ({replaced}) FROM ("
        f"SELECT *, {impute_name}(struct_pack({packed}), {seed}, {draws}, {digest}) AS __ddf "
        f"FROM ({source.sql}))"
    )


def _plan_synthesize(instance, cursor, model, n, seed) -> str:
    n = _parameter("n", n, minimum=0, maximum=MAX_ROWS)
    seed = _parameter("seed", seed, minimum=0, maximum=MAX_SEED)
    name = _text("model", model)
    loaded = api.load_model(cursor, name, instance.model_dir)
    _, synth_name = _function_names(loaded)
    _require_registered(instance, synth_name, name)
    _remember(loaded)
    digest = exp.Literal.string(loaded.artifact.digest).sql(dialect="duckdb")
    return f"SELECT unnest({synth_name}(range, {seed}, {digest})) FROM range({n})"


def _plan_train(
    instance, cursor, table, model, seed, max_seconds, settings, categorical, passthrough
) -> str:
    seed = _parameter("seed", seed, minimum=0, maximum=MAX_SEED)
    max_seconds = _seconds(max_seconds)
    chosen = {
        key: names
        for key, names in [
            ("categorical", _names("categorical", categorical)),
            ("passthrough", _names("passthrough", passthrough)),
        ]
        if names
    }
    if chosen:
        settings = json.dumps({**_settings(settings), **chosen})
    else:
        _settings(settings)
    source = parse_source(_text("tbl", table))
    name = api.model_name(model, source)
    source.relation(cursor)  # fail at bind time if the table does not exist
    args = [
        exp.Literal.string(table),
        exp.Literal.string(name),
        exp.Literal.number(seed),
        exp.Literal.number(max_seconds) if max_seconds is not None else exp.null(),
        exp.Literal.string(settings) if settings is not None else exp.null(),
    ]
    call = exp.Anonymous(this="ddf_train", expressions=args).sql(dialect="duckdb")
    # unnest() of a VOLATILE call repeats the call once per struct field (measured: DuckDB
    # does not share volatile expressions), so the call is made once in a subquery.
    return f"SELECT unnest(summary) FROM (SELECT {call} AS summary)"


def _plan_models(instance, cursor) -> str:
    rows = []
    for info in api.models(cursor, instance.model_dir):
        values = [
            _literal(info["model"]),
            _literal(info["source"]),
            _literal(info["columns"]),
            _literal(info["rows"]),
            _literal(info["created_at"]),
            _literal(json.dumps(info["metrics"], sort_keys=True)),
            _literal(info["size_bytes"]),
        ]
        rows.append("(" + ", ".join(v.sql(dialect="duckdb") for v in values) + ")")
    names = ", ".join(_ident(c) for c in MODELS_COLUMNS)
    casts = ", ".join(f"CAST({_ident(c)} AS {t}) AS {_ident(c)}" for c, t in MODELS_COLUMNS.items())
    if not rows:
        empty = ", ".join(f"CAST(NULL AS {t}) AS {_ident(c)}" for c, t in MODELS_COLUMNS.items())
        return f"SELECT {empty} WHERE false"
    return f"SELECT {casts} FROM (VALUES {', '.join(rows)}) AS t({names}) ORDER BY name"


def _train_udf(instance: _Instance):
    def train(table, model, seed, max_seconds, settings_json):
        table, model = table[0].as_py(), model[0].as_py()
        settings = {"progress": False, **_settings(settings_json[0].as_py())}
        settings["seed"] = int(seed[0].as_py())
        if max_seconds[0].as_py() is not None:
            settings["max_seconds"] = float(max_seconds[0].as_py())
        cursor = instance.cursor()
        try:
            # api.train registers the new model's UDFs (after_training), for the next query.
            info = api.train(cursor, table, model, model_dir=instance.model_dir, **settings)
        finally:
            cursor.close()
        row = {
            "model": info["model"],
            "source": info["source"],
            "rows": info["rows"],
            "columns": info["columns"],
            "modelled_columns": info["modelled_columns"],
            "training_seconds": info["training_seconds"],
            "validation_loss": info["metrics"]["diffusion"]["validation_loss"],
            "size_bytes": info["size_bytes"],
            "created_at": info["created_at"],
        }
        return pa.array([row] * len(seed))

    return train


def _settings(text: str | None) -> dict:
    """The ``settings`` parameter: a JSON object of training settings (TrainConfig fields)."""
    if text is None:
        return {}
    try:
        value = json.loads(text)
    except ValueError as error:
        raise ValueError(f"parameter settings must be a JSON object: {error}") from None
    if not isinstance(value, dict):
        raise ValueError(f"parameter settings must be a JSON object, got {text!r}")
    return value


def _names(parameter: str, text: str | None) -> list[str]:
    """A list-of-column-names argument, arriving as JSON (the macro applies to_json)."""
    value = None if text is None else json.loads(text)
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ValueError(
            f"parameter {parameter} must be a list of column names such as ['a', 'b'], got {text}"
        )
    return value


def _require_registered(instance: _Instance, function: str, name: str) -> None:
    if function not in instance.functions:
        raise LookupError(
            f"model {name!r} was stored with columns or types this connection has not seen since "
            f"duckdb_diffusion.install() ran (by another process); call "
            f"duckdb_diffusion.install(con) again"
        )


def _parameter(name: str, text: str | None, minimum: int, maximum: int) -> int:
    """A whole-number macro argument. Arguments arrive as text (the macros cast them), so a
    NULL, a fraction, a word or a number beyond BIGINT gets this message, not a binder error."""
    if text is None or not re.fullmatch(r"\s*[+-]?\d+\s*", text):
        shown = "NULL" if text is None else repr(text)
        raise ValueError(f"parameter {name} must be a whole number, got {shown}")
    value = int(text)
    if not minimum <= value <= maximum:
        raise ValueError(f"parameter {name} must be between {minimum} and {maximum}, got {value}")
    return value


def _seconds(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value < math.inf:
        raise ValueError(
            f"parameter max_seconds must be a positive number of seconds, got {text!r}"
        )
    return value


def _text(name: str, value) -> str:
    if not isinstance(value, str) or not value.strip():
        shown = "NULL" if value is None else repr(value)
        raise ValueError(f"parameter {name} must be a non-empty string, got {shown}")
    return value


def _literal(value) -> exp.Expression:
    if value is None:
        return exp.null()
    return exp.Literal.string(value) if isinstance(value, str) else exp.Literal.number(value)


def _ident(name: str) -> str:
    return exp.to_identifier(name, quoted=True).sql(dialect="duckdb")
