"""The preparation every door shares: parse the table argument, name the model, load it.

The SQL planners and the Python API both call these, then hand the result to ``sql.plans``
for the SQL that runs; the CLI and dbt go through SQL. Nothing here reads the user's table
(which only the caller's own connection can see in full): it is named in the planned SQL.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import duckdb

from . import arguments
from .artifact import ArtifactError
from .conditions import Given, check_given, parse_given
from .loading import load_model
from .registry import registry_for
from .runtime import Model
from .source import Source, parse_source
from .summary import damaged, summary


@dataclass(frozen=True)
class Prepared:
    """A checked call: what to run, with which model and arguments."""

    model: Model
    seed: int
    model_dir: str | None
    source: Source | None = None  # impute only
    draws: int = 0
    imputations: int | None = None  # impute only: m stacked completed copies
    n: int = 0  # synthesize only
    given: Given | None = None  # synthesize only: checked values every row has
    given_json: str | None = None  # the same, as the JSON text the SQL passes on


def source_and_name(table: str, model: str | None) -> tuple[Source, str]:
    source = parse_source(table)
    return source, model_name(model, source)


def model_name(model: str | None, source: Source) -> str:
    if model is not None:
        return arguments.text("model", model)
    if source.default_model is None:
        raise ValueError(
            f"source {source.text!r} is a subquery: name the model (model := 'name' in SQL, "
            f"model='name' in Python, --model on the command line)"
        )
    return source.default_model


def impute(
    con: duckdb.DuckDBPyConnection,
    table: str,
    model: str | None,
    *,
    seed: int,
    draws: int,
    model_dir: str | None,
    imputations: int | None = None,
) -> Prepared:
    source, name = source_and_name(table, model)
    loaded = load_model(con, name, model_dir, table)
    return Prepared(loaded, seed, model_dir, source=source, draws=draws, imputations=imputations)


def synthesize(
    con: duckdb.DuckDBPyConnection,
    model: str,
    *,
    n: int,
    seed: int,
    model_dir: str | None,
    given=None,
) -> Prepared:
    """``given``: None, a dict (Python) or JSON text of a struct (SQL), checked here."""
    loaded = load_model(con, model, model_dir)
    values = parse_given(given)
    checked = check_given(loaded, values)
    text = None if checked is None else json.dumps(values, default=str, sort_keys=True)
    return Prepared(loaded, seed, model_dir, n=n, given=checked, given_json=text)


def model_summaries(con: duckdb.DuckDBPyConnection, model_dir: str | None) -> list[dict]:
    """A summary of every stored model; a damaged one is listed with its error as metrics, so
    one bad model neither hides nor breaks the listing."""
    registry = registry_for(con, model_dir)
    found = []
    for name in registry.names():
        try:
            found.append(summary(registry.load(name)))
        except ArtifactError as error:
            found.append(damaged(name, error))
    return found
