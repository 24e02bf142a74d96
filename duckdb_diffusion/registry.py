"""Where models live: by default inside the database itself, optionally in a directory.

In the database, a model is one row of ``duckdb_diffusion.models`` (spec as JSON, graphs as
BLOBs), so it travels with the file, is backed up with it, and is replaced in one transaction:
a reader sees the old model or the new one, never half of one.

In a directory, a model is a folder ``NAME/`` of versions (``spec.json`` and one ``.onnx`` per
graph) and a ``CURRENT`` file swapped in by rename, for read-only databases and for sharing
models between databases and processes.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import duckdb

from .artifact import GRAPHS, INT8_GRAPHS, Artifact, ArtifactError, spec_columns

SCHEMA = "duckdb_diffusion"
TABLE = f"{SCHEMA}.models"
SAVE_ATTEMPTS = 5
# One BLOB column per graph; tables made before the 8-bit graphs gain their columns when a
# model is next saved, and read as models without them until then.
GRAPH_COLUMNS = {name: f"{name}_graph" for name in (*GRAPHS, *INT8_GRAPHS)}


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

    def _columns_present(self, cur) -> set[str]:
        rows = cur.execute(
            "SELECT column_name FROM duckdb_columns() WHERE schema_name = ? AND "
            "table_name = 'models' AND database_name = current_database()",
            [SCHEMA],
        ).fetchall()
        return {r[0] for r in rows}

    def check_writable(self) -> None:
        """Fail before training, not after it, when the model could not be stored."""
        cur = self.con.cursor()
        try:
            name, readonly = cur.execute(
                "SELECT database_name, readonly FROM duckdb_databases() "
                "WHERE database_name = current_database()"
            ).fetchall()[0]
        finally:
            cur.close()
        if readonly:
            raise PermissionError(
                f"database {name!r} is open read-only, so no model can be stored in it; open it "
                f"read-write, or keep models in a directory: install(con, model_dir=...) "
                f"(CLI: --model-dir)"
            )

    def save(self, artifact: Artifact) -> None:
        self.check_writable()
        for attempt in range(SAVE_ATTEMPTS):
            try:
                self._save_once(artifact)
                return
            except (duckdb.TransactionException, duckdb.ConstraintException):
                # Another connection of this process saved at the same moment (DuckDB reports
                # it as a write conflict, or as a duplicate name when the other insert
                # committed after our delete); its model is complete, and saving again
                # replaces it whole.
                if attempt == SAVE_ATTEMPTS - 1:
                    raise
                time.sleep(0.05 * (attempt + 1))

    def _save_once(self, artifact: Artifact) -> None:
        cur = self.con.cursor()
        try:
            cur.execute("BEGIN TRANSACTION")
            try:
                cur.execute(f"CREATE SCHEMA IF NOT EXISTS {SCHEMA}")
                blobs = ", ".join(f"{column} BLOB" for column in GRAPH_COLUMNS.values())
                cur.execute(
                    f"CREATE TABLE IF NOT EXISTS {TABLE} (name VARCHAR PRIMARY KEY, "
                    f"created_at TIMESTAMP, spec JSON, {blobs})"
                )
                present = self._columns_present(cur)
                for column in GRAPH_COLUMNS.values():
                    if column not in present:
                        cur.execute(f"ALTER TABLE {TABLE} ADD COLUMN {column} BLOB")
                cur.execute(f"DELETE FROM {TABLE} WHERE name = ?", [artifact.name])
                columns = ", ".join(GRAPH_COLUMNS.values())
                cur.execute(
                    f"INSERT INTO {TABLE} (name, created_at, spec, {columns}) "
                    f"VALUES (?, now()::TIMESTAMP, ?{', ?' * len(GRAPH_COLUMNS)})",
                    [
                        artifact.name,
                        artifact.spec_json(),
                        *(
                            artifact.graphs[g] if g in artifact.graphs else None
                            for g in GRAPH_COLUMNS
                        ),
                    ],
                )
                cur.execute("COMMIT")
            except BaseException:
                with contextlib.suppress(duckdb.Error):  # a failed COMMIT has already ended it
                    cur.execute("ROLLBACK")
                raise
        finally:
            cur.close()

    def load(self, name: str) -> Artifact:
        cur = self.con.cursor()
        try:
            if not self._exists(cur):
                raise ModelNotFoundError(name)
            present = self._columns_present(cur)
            stored = [g for g, column in GRAPH_COLUMNS.items() if column in present]
            columns = ", ".join(GRAPH_COLUMNS[g] for g in stored)
            rows = cur.execute(
                f"SELECT spec::VARCHAR, {columns} FROM {TABLE} WHERE name = ?", [name]
            ).fetchall()
        finally:
            cur.close()
        if not rows:
            raise ModelNotFoundError(name)
        spec, *graphs = rows[0]
        return Artifact.parse(spec, dict(zip(stored, graphs, strict=True)), f"{name!r} in {TABLE}")

    def spec_text(self, name: str) -> str:
        """The model's stored spec, read without its graphs."""
        cur = self.con.cursor()
        try:
            if not self._exists(cur):
                raise ModelNotFoundError(name)
            rows = cur.execute(f"SELECT spec::VARCHAR FROM {TABLE} WHERE name = ?", [name])
            rows = rows.fetchall()
        finally:
            cur.close()
        if not rows:
            raise ModelNotFoundError(name)
        return rows[0][0]

    def columns(self, name: str) -> list[dict]:
        """The model's column specs, read without its graphs (what ``install`` needs)."""
        return spec_columns(self.spec_text(name), f"{name!r} in {TABLE}")

    def names(self) -> list[str]:
        cur = self.con.cursor()
        try:
            if not self._exists(cur):
                return []
            return [r[0] for r in cur.execute(f"SELECT name FROM {TABLE} ORDER BY name").fetchall()]
        finally:
            cur.close()


class DirectoryRegistry:
    """Models stored as folders of plain files.

    ``NAME/`` holds one subfolder per saved version and a ``CURRENT`` file naming the live one.
    A save writes a new version folder beside the others and then replaces ``CURRENT`` in one
    rename, so a reader (in any process) sees the old model or the new one, never a mix; two
    processes saving one name at once both succeed and the later rename wins; a writer killed
    mid-save leaves only an unreferenced folder that the next save removes.

    Pruning spares every version younger than ``GRACE_SECONDS``: a writer descheduled between
    renaming its version into place and switching ``CURRENT`` to it may find that another
    writer has saved twice meanwhile, and without the grace it would point ``CURRENT`` at a
    folder the other writer had just removed.
    """

    KEEP_VERSIONS = 2  # the live one and its predecessor, which a reader may still be reading
    GRACE_SECONDS = 60  # no version this young is removed, live or not
    STALE_SECONDS = 3600  # an unfinished staging folder this old belongs to a dead writer

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)

    def describe(self) -> str:
        return f"directory {self.path}"

    def check_writable(self) -> None:
        try:
            self.path.mkdir(parents=True, exist_ok=True)
        except OSError as error:
            raise PermissionError(
                f"cannot store models in directory {self.path} ({error.strerror}); pass a "
                f"model_dir you can write to"
            ) from None
        if not os.access(self.path, os.W_OK | os.X_OK):
            raise PermissionError(
                f"cannot store models in directory {self.path} (not writable); pass a model_dir "
                f"you can write to"
            )

    def save(self, artifact: Artifact) -> None:
        self.check_writable()
        folder = self.path / _folder_name(artifact.name)
        folder.mkdir(exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=folder))
        (staging / "spec.json").write_text(artifact.spec_json())
        for graph in (*GRAPHS, *INT8_GRAPHS):
            if graph in artifact.graphs:
                (staging / f"{graph}.onnx").write_bytes(artifact.graphs[graph])
        _sync_folder(staging)
        version = f"v{time.time_ns():020d}-{os.getpid()}-{staging.name[-8:]}"
        os.rename(staging, folder / version)
        pointer = folder / f".CURRENT-{version}"
        pointer.write_text(version)
        os.replace(pointer, folder / "CURRENT")
        _sync_folder(folder)
        self._prune(folder)

    def load(self, name: str) -> Artifact:
        folder = self.path / _folder_name(name)
        for attempt in range(5):  # a concurrent save may retire the version between two reads
            if attempt:
                time.sleep(0.01 * attempt)
            try:
                version = (folder / "CURRENT").read_text().strip()
            except FileNotFoundError:
                raise ModelNotFoundError(name) from None
            try:
                spec = (folder / version / "spec.json").read_text()
                graphs = {}
                for graph in (*GRAPHS, *INT8_GRAPHS):
                    file = folder / version / f"{graph}.onnx"
                    if file.is_file():
                        graphs[graph] = file.read_bytes()
            except FileNotFoundError:
                continue
            return Artifact.parse(spec, graphs, f"{name!r} in {folder / version}")
        raise ArtifactError(f"model {name!r} in {folder} keeps changing while being read; retry")

    def spec_text(self, name: str) -> str:
        """The live version's spec, read without its graphs."""
        return self._spec(name)[1]

    def columns(self, name: str) -> list[dict]:
        """The model's column specs, read without its graphs (what ``install`` needs)."""
        where, text = self._spec(name)
        return spec_columns(text, f"{name!r} in {where}")

    def _spec(self, name: str) -> tuple[Path, str]:
        folder = self.path / _folder_name(name)
        try:
            version = (folder / "CURRENT").read_text().strip()
            return folder / version, (folder / version / "spec.json").read_text()
        except FileNotFoundError:
            raise ModelNotFoundError(name) from None

    def names(self) -> list[str]:
        if not self.path.is_dir():
            return []
        found = []
        for folder in sorted(self.path.iterdir()):
            if folder.name.startswith(".") or not (folder / "CURRENT").is_file():
                continue
            try:
                version = (folder / "CURRENT").read_text().strip()
                found.append(json.loads((folder / version / "spec.json").read_text())["name"])
            except (OSError, ValueError, KeyError, TypeError):
                found.append(folder.name)
        return found

    def _prune(self, folder: Path) -> None:
        """Remove versions older than the newest few, and staging left by dead writers."""
        try:
            live = (folder / "CURRENT").read_text().strip()
        except FileNotFoundError:
            return
        versions = sorted(p.name for p in folder.iterdir() if p.name.startswith("v"))
        keep = {live, *versions[-self.KEEP_VERSIONS :]}
        now = time.time()
        for entry in folder.iterdir():
            if entry.name.startswith("v") and entry.name not in keep:
                if now - _saved_at(entry.name) > self.GRACE_SECONDS:
                    shutil.rmtree(entry, ignore_errors=True)
            elif entry.name.startswith(".") and now - _mtime(entry) > self.STALE_SECONDS:
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    _unlink(entry)


def _saved_at(version: str) -> float:
    """When a version was renamed into place (its name starts with the time in nanoseconds);
    a name that does not parse counts as old, so it can still be removed."""
    try:
        return int(version[1:].split("-", 1)[0]) / 1e9
    except ValueError:
        return 0.0


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return time.time()


def _unlink(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _sync_folder(folder: Path) -> None:
    """fsync a folder's files and the folder itself, so a rename never outlives its contents
    after a power cut."""
    for file in folder.iterdir():
        # Another writer may rename its pointer file away between the listing and the open:
        # that file is its writer's to sync.
        with contextlib.suppress(FileNotFoundError):
            if file.is_file():
                with open(file, "rb") as handle:
                    os.fsync(handle.fileno())
    if hasattr(os, "O_DIRECTORY"):
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _folder_name(name: str) -> str:
    """A model name as a safe folder name (names may hold any character)."""
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    if safe != name or safe.startswith("."):
        safe = f"{safe}-{hashlib.sha256(name.encode()).hexdigest()[:12]}"
    return safe


def registry_for(con: duckdb.DuckDBPyConnection, directory: str | os.PathLike | None = None):
    return DirectoryRegistry(directory) if directory is not None else DatabaseRegistry(con)
