"""Loaded models: one cache for every door, keyed by the stored model's digest.

A loaded ``Model`` holds onnxruntime sessions, which are slow to create and large, so every
door (Python, SQL planners, the UDFs that run the rows) shares one bounded, locked cache: a
model retrained under the same name gets a new digest and so a new entry, and the old one
ages out.
"""

from __future__ import annotations

import threading
from collections import OrderedDict

import duckdb

from .artifact import Artifact, spec_digest
from .registry import ModelNotFoundError, registry_for
from .runtime import Model
from .source import sql_literal

MAX_LOADED_MODELS = 32


class ModelCache:
    """Least-recently-used ``Model``s by digest; safe to use from any thread."""

    def __init__(self, capacity: int = MAX_LOADED_MODELS):
        self.capacity = capacity
        self._models: OrderedDict[str, Model] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, digest: str) -> Model | None:
        with self._lock:
            model = self._models.get(digest)
            if model is not None:
                self._models.move_to_end(digest)
            return model

    def add(self, artifact: Artifact, threads: int | None = None) -> Model:
        """The loaded ``artifact``; ``threads`` (onnxruntime's, see ``Model``) is part of the
        key, so a worker pinned to its cores never shares sessions sized for another."""
        key = artifact.digest if threads is None else f"{artifact.digest}/{threads}"
        found = self.get(key)
        if found is not None:
            return found
        model = Model(artifact, threads)  # outside the lock: nothing slow runs under it
        with self._lock:
            model = self._models.setdefault(key, model)
            self._models.move_to_end(key)
            while len(self._models) > self.capacity:
                self._models.popitem(last=False)
            return model

    def clear(self) -> None:
        with self._lock:
            self._models.clear()

    def __len__(self) -> int:
        with self._lock:
            return len(self._models)


MODELS = ModelCache()


def load_model(
    con: duckdb.DuckDBPyConnection,
    name: str,
    model_dir: str | None = None,
    table: str | None = None,
) -> Model:
    """The stored model ``name``; ``table`` (what it would be trained on) shapes the hint.

    The spec is read first: a model loaded before under the same digest (the spec names
    every graph by its checksum) is returned without reading its graphs again, which every
    query's planning did before (adult: ~25 ms of 10 MB read and hashed per query)."""
    registry = registry_for(con, model_dir)
    try:
        loaded = MODELS.get(spec_digest(registry.spec_text(name)))
        if loaded is not None:
            return loaded
        artifact = registry.load(name)
    except ModelNotFoundError:
        raise ModelNotFoundError(_not_found(con, registry, name, table)) from None
    return MODELS.add(artifact)


def _not_found(con, registry, name: str, table: str | None) -> str:
    table = table or name
    literal = sql_literal(table)
    named = "" if table == name else f", model := {sql_literal(name)}"
    message = (
        f"no model named {name!r} in {registry.describe()}; train one with "
        f"SELECT * FROM train_latent_diffusion({literal}{named}) "
        f"or duckdb_diffusion.train(con, {table!r}, model={name!r})"
    )
    views = _training_views(con)
    if views:
        message += (
            f". The view(s) {views} call train_latent_diffusion, but a view never trains (it "
            f"only stores the query): materialize the training model as a table (in dbt: "
            f"{{{{ config(materialized='table') }}}})"
        )
    return message


def _training_views(con) -> list[str]:
    """Views whose query trains a model: the usual cause of a missing model under dbt, whose
    default materialization is a view."""
    try:
        cursor = con.cursor()
    except duckdb.Error:
        return []
    try:
        rows = cursor.execute(
            "SELECT schema_name || '.' || view_name FROM duckdb_views() "
            "WHERE NOT internal AND sql ILIKE '%train_latent_diffusion%' ORDER BY 1"
        ).fetchall()
    except duckdb.Error:
        return []
    finally:
        cursor.close()
    return [r[0] for r in rows]
