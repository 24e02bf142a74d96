"""Where models live: by default inside the database itself, optionally in a directory.

In the database, a model is one row of ``duckdb_diffusion.models`` (spec as JSON, graphs as
BLOBs), so it travels with the file, is backed up with it, and is replaced in one transaction:
a reader sees the old model or the new one, never half of one.

In a directory, a model is a folder ``NAME/`` with ``spec.json`` and one ``.onnx`` per graph,
written beside and swapped in by rename, for read-only databases and sharing between databases.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import duckdb

from .artifact import GRAPHS, Artifact

SCHEMA = "duckdb_diffusion"
TABLE = f"{SCHEMA}.models"


class ModelNotFoundError(LookupError):
    pass


class DatabaseRegistry:
    """Models stored in a table of the connection's database."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self.con = con

    def describe(self) -> str:
        return f"table {TABLE}"

    def _exists(self, cur) -> bool:
        rows = cur.execute(
            "SELECT 1 FROM duckdb_tables() WHERE schema_name = ? AND table_name = 'models' "
            "AND database_name = current_database()",
            [SCHEMA],
        ).fetchall()
        return bool(rows)

    def save(self, artifact: Artifact) -> None:
        cur = self.con.cursor()
        try:
            cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
            cur.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR PRIMARY KEY, "
                "created_at TIMESTAMP, spec JSON, impute_graph BLOB, synthesize_graph BLOB)"
            )
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute(f"DELETE FROM {TABLE} WHERE name = ?", [artifact.name])
                cur.execute(
                    f"INSERT INTO {TABLE} VALUES (?, now()::TIMESTAMP, ?, ?, ?)",
                    [artifact.name, artifact.spec_json(), *(artifact.graphs[g] for g in GRAPHS)],
                )
                cur.execute("COMMIT")
            except BaseException:
                cur.execute("ROLLBACK")
                raise
        finally:
            cur.close()

    def load(self, name: str) -> Artifact:
        cur = self.con.cursor()
        try:
            if not self._exists(cur):
                raise ModelNotFoundError(name)
            rows = cur.execute(
                f"SELECT spec::VARCHAR, impute_graph, synthesize_graph FROM {TABLE} WHERE name = ?",
                [name],
            ).fetchall()
        finally:
            cur.close()
        if not rows:
            raise ModelNotFoundError(name)
        spec, *graphs = rows[0]
        return Artifact.parse(spec, dict(zip(GRAPHS, graphs, strict=True)), f"{name!r} in {TABLE}")

    def names(self) -> list[str]:
        cur = self.con.cursor()
        try:
            if not self._exists(cur):
                return []
            return [r[0] for r in cur.execute(f"SELECT name FROM {TABLE} ORDER BY name").fetchall()]
        finally:
            cur.close()


class DirectoryRegistry:
    """Models stored as folders of plain files."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def describe(self) -> str:
        return f"directory {self.path}"

    def save(self, artifact: Artifact) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        target = self.path / _folder_name(artifact.name)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=self.path))
        (staging / "spec.json").write_text(artifact.spec_json())
        for graph in GRAPHS:
            (staging / f"{graph}.onnx").write_bytes(artifact.graphs[graph])
        retired = None
        if target.exists():
            retired = Path(tempfile.mkdtemp(prefix=".retired-", dir=self.path))
            os.replace(target, retired / "model")
        os.replace(staging, target)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)

    def load(self, name: str) -> Artifact:
        folder = self.path / _folder_name(name)
        if not (folder / "spec.json").is_file():
            raise ModelNotFoundError(name)
        graphs = {}
        for graph in GRAPHS:
            file = folder / f"{graph}.onnx"
            if file.is_file():
                graphs[graph] = file.read_bytes()
        return Artifact.parse((folder / "spec.json").read_text(), graphs, f"{name!r} in {folder}")

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        found = []
        for folder in sorted(self.path.iterdir()):
            if folder.name.startswith(".") or not (folder / "spec.json").is_file():
                continue
            try:
                found.append(json.loads((folder / "spec.json").read_text())["name"])
            except (ValueError, KeyError, TypeError):
                found.append(folder.name)
        return found


def _folder_name(name: str) -> str:
    """A model name as a safe folder name (names may hold any character)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if safe != name or safe.startswith("."):
        safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return safe


def registry_for(con: duckdb.DuckDBPyConnection, directory: str | os.PathLike | None = None):
    return DirectoryRegistry(directory) if directory is not None else DatabaseRegistry(con)
