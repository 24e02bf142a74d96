"""The SQL surface: ``train_latent_diffusion``, ``impute_latent_diffusion``, ``synthesize_rows``
and ``latent_diffusion_models`` on a DuckDB connection.

Layout: ``macros.sql`` (the table macros, as SQL text), ``planners`` (the bind-time UDFs the
macros call), ``plans`` (the SQL they return, shared with the Python door), ``udfs`` (the
bodies of the UDFs that SQL calls), ``registration`` (how UDFs enter an instance). See
DESIGN.md section 4 for what DuckDB 2.0 requires of this.
"""

from __future__ import annotations

from pathlib import Path

import duckdb

from ..artifact import ArtifactError
from ..registry import registry_for
from ..runtime import Model, log
from ..schema import PASSTHROUGH, ColumnSpec
from ..summary import WIRE_TYPES
from . import planners, plans, udfs
from .registration import (
    LOCK,
    Instance,
    function_names,
    instance_of,
    register,
    struct_type,
)

MACROS = (Path(__file__).with_name("macros.sql")).read_text()


def install(con: duckdb.DuckDBPyConnection, model_dir: str | None = None) -> list[str]:
    """Register the SQL functions and the UDFs of every stored model on ``con``. Idempotent;
    call it on every connection and cursor that runs the functions (the macros are TEMP).
    Returns the stored models' names. Reads only the models' specs, never their graphs."""
    with LOCK:
        instance = instance_of(con, _create_shared)
        if model_dir is not None:
            instance.model_dir = model_dir
        instance.add(con)
        registry = registry_for(con, instance.model_dir)
        names = registry.names()
        for name in names:
            try:
                columns = [ColumnSpec.from_json(c) for c in registry.columns(name)]
            except ArtifactError as error:
                # One damaged model must not take the others down; using it reports this.
                log.warning("skipping model %r: %s", name, error)
                continue
            _register_model(con, instance, columns)
        con.execute(MACROS)
        return names


def connect(database: str = ":memory:", model_dir: str | None = None, **kwargs):
    """``duckdb.connect`` with the functions installed."""
    con = duckdb.connect(database, **kwargs)
    install(con, model_dir)
    return con


def ensure_functions(con: duckdb.DuckDBPyConnection, model: Model) -> tuple[str, str]:
    """Make ``model``'s UDFs callable on ``con`` (the Python door runs the planned SQL itself,
    so needs no macros) and return their names."""
    with LOCK:
        instance = instance_of(con, _create_shared)
        instance.add(con)
        _register_model(con, instance, model.columns)
        return function_names(model.columns)


def after_training(con: duckdb.DuckDBPyConnection, name: str, model_dir: str | None) -> None:
    """Register a freshly trained model's UDFs, for the queries that follow."""
    with LOCK:
        instance = instance_of(con, _create_shared)
        columns = registry_for(con, model_dir).columns(name)
        _register_model(con, instance, [ColumnSpec.from_json(c) for c in columns])


def _register_model(con, instance: Instance, columns: list[ColumnSpec]) -> None:
    impute_name, synth_name = function_names(columns)
    modelled = [c for c in columns if c.kind != PASSTHROUGH]
    if impute_name not in instance.functions:
        returns = struct_type({c.name: c.duckdb_type for c in modelled})
        register(con, impute_name, udfs.impute(instance, [c.name for c in modelled]), None, returns)
        instance.functions.add(impute_name)
    if synth_name not in instance.functions:
        returns = struct_type({c.name: c.duckdb_type for c in columns})
        register(con, synth_name, udfs.synthesize(instance), None, returns)
        instance.functions.add(synth_name)


def _create_shared(con, instance: Instance) -> None:
    """The UDFs every model shares: planners, the column check, training."""
    for name, plan, arity in [
        ("ddf_plan_impute", planners.plan_impute, 5),
        ("ddf_plan_synthesize", planners.plan_synthesize, 4),
        ("ddf_plan_train", planners.plan_train, 9),
        ("ddf_plan_models", planners.plan_models, 1),
    ]:
        planner = _planner(instance, plan, arity)
        register(con, name, planner, ["VARCHAR"] * arity, "VARCHAR", native=True)
    register(
        con,
        plans.CHECK_FUNCTION,
        udfs.check(instance),
        ["VARCHAR", "VARCHAR", "VARCHAR", "VARCHAR[]", "VARCHAR[]", "VARCHAR"],
        "VARCHAR",
        native=True,
    )
    register(
        con,
        plans.TRAIN_FUNCTION,
        udfs.train(instance),
        None,
        struct_type(WIRE_TYPES),
        side_effects=True,
    )


def _planner(instance: Instance, plan, arity: int):
    """``plan`` as a UDF of exactly ``arity`` arguments (DuckDB checks the signature), run with
    a cursor for reading the registry."""

    def run(*args):
        cursor = instance.cursor()
        try:
            return plan(instance, cursor, *args)
        finally:
            cursor.close()

    signatures = {
        1: lambda a: run(a),
        4: lambda a, b, c, d: run(a, b, c, d),
        5: lambda a, b, c, d, e: run(a, b, c, d, e),
        9: lambda a, b, c, d, e, f, g, h, i: run(a, b, c, d, e, f, g, h, i),
    }
    return signatures[arity]
