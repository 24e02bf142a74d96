"""Putting UDFs into a DuckDB instance, and the facts of DuckDB 2.0 that shape how.

- UDFs live in the instance-wide catalog (every connection and cursor of the database sees
  them) and die with the instance; registering a name twice raises. So each instance gets an
  ``Instance`` record, found again through the ``ddf_instance()`` UDF it registered.
- A UDF whose registering connection was closed segfaults the process when another connection
  calls it, unless its callable is still referenced: every callable handed to DuckDB is kept in
  ``_KEEP`` for the life of the process.
- A UDF registered while a query runs is invisible to that query, so the per-model UDFs are
  registered before any query uses them: by ``install`` for every stored model, right after each
  training, and by the Python door just before it runs a query.
- Per-model UDFs are named by the model's output columns and types, not by the model: a model
  retrained (here or by another process) with the same columns reuses them; which model runs is
  an argument, resolved from the shared model cache when rows arrive.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
import weakref

import duckdb

from ..runtime import Model
from ..schema import PASSTHROUGH, ColumnSpec

_KEEP: list = []
LOCK = threading.RLock()
_INSTANCES: dict[str, Instance] = {}


class Instance:
    """Per DuckDB instance: its installed connections, model directory and registered UDFs."""

    def __init__(self, token: str, model_dir: str | None):
        self.token = token
        self.model_dir = model_dir
        # Weak references: holding a connection would keep its database open (and its file
        # locked) after the user let go of it.
        self._connections: list[weakref.ref] = []
        self.functions: set[str] = set()

    def add(self, con: duckdb.DuckDBPyConnection) -> None:
        with LOCK:
            if all(ref() is not con for ref in self._connections):
                self._connections.append(weakref.ref(con))

    def cursor(self) -> duckdb.DuckDBPyConnection:
        """A fresh cursor of any still-open installed connection, for SQL run inside a UDF
        (the calling connection itself cannot run SQL while its query runs)."""
        with LOCK:
            for ref in list(self._connections):
                con = ref()
                try:
                    if con is not None:
                        return con.cursor()
                except duckdb.ConnectionException:
                    pass
                self._connections.remove(ref)
        raise RuntimeError(
            "every connection that installed duckdb_diffusion on this database is closed; "
            "call duckdb_diffusion.install(con) on the connection you use"
        )


def instance_of(con: duckdb.DuckDBPyConnection, create) -> Instance:
    """The ``Instance`` of ``con``'s database; ``create(con, instance)`` registers the shared
    UDFs the first time."""
    with LOCK:
        found = con.execute(
            "SELECT count(*) FROM duckdb_functions() WHERE function_name = 'ddf_instance'"
        ).fetchall()[0][0]
        if found:
            return _INSTANCES[con.execute("SELECT ddf_instance()").fetchall()[0][0]]
        instance = Instance(uuid.uuid4().hex, None)
        _INSTANCES[instance.token] = instance
        register(con, "ddf_instance", lambda: instance.token, [], "VARCHAR", native=True)
        create(con, instance)
        return instance


def register(con, name, function, parameters, returns, native=False, side_effects=False):
    """``con.create_function`` with the callable kept alive (see the module docstring)."""
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


def struct_type(columns: dict[str, str]):
    return duckdb.struct_type({name: duckdb.sqltype(t) for name, t in columns.items()})


def function_names(columns: list[ColumnSpec]) -> tuple[str, str]:
    """The impute and synthesize UDF names of a model with these columns."""
    modelled = [[c.name, c.duckdb_type] for c in columns if c.kind != PASSTHROUGH]
    every = [[c.name, c.duckdb_type] for c in columns]
    return f"ddf_impute_{_short_hash(modelled)}", f"ddf_synthesize_{_short_hash(every)}"


def require_registered(instance: Instance, model: Model) -> tuple[str, str]:
    """The model's UDF names; a model stored by another process since ``install`` may need
    UDFs this instance does not have yet, and a running query cannot register them."""
    names = function_names(model.columns)
    if not all(n in instance.functions for n in names):
        raise LookupError(
            f"model {model.name!r} was stored with columns or types this connection has not "
            f"seen since duckdb_diffusion.install() ran (by another process); call "
            f"duckdb_diffusion.install(con) again"
        )
    return names


def _short_hash(value) -> str:
    return hashlib.sha256(json.dumps(value).encode()).hexdigest()[:20]
