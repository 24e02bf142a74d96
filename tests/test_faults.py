"""Faults around the registry: writers killed mid-save, writers racing, read-only databases.

The crash-prone cases run in subprocesses and are checked by exit code; afterwards the model
that was live before must still load and impute exactly as before.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time

import duckdb
import pytest

import duckdb_diffusion as ddf
from duckdb_diffusion.artifact import Artifact
from duckdb_diffusion.registry import DatabaseRegistry, DirectoryRegistry

from .conftest import data_file
from .test_core import run_python

TINY = {"max_seconds": 2, "width": 32, "depth": 1, "sampling_steps": 2, "progress": False}
IMPUTE = "SELECT * FROM impute_latent_diffusion('t', seed := 3)"


@pytest.fixture(scope="module")
def small_db(tmp_path_factory):
    """A closed database file with table 't' (800 california rows with NULLs) and model 't',
    stored both in the database and in a model directory; plus what imputing gives."""
    folder = tmp_path_factory.mktemp("faults")
    path, models = folder / "small.duckdb", folder / "models"
    con = ddf.connect(str(path))
    con.execute(
        "CREATE TABLE t AS SELECT * FROM read_parquet(?) LIMIT 800", [data_file("california")]
    )
    con.execute("UPDATE t SET median_income = NULL WHERE households % 4 = 0")
    con.execute("UPDATE t SET ocean_proximity = NULL WHERE population % 5 = 0")
    ddf.train(con, "t", **TINY)
    DirectoryRegistry(models).save(DatabaseRegistry(con).load("t"))
    expected = con.execute(IMPUTE).fetchall()
    con.close()
    return folder, expected


@pytest.fixture
def copy(small_db, tmp_path):
    """A private copy of the database and the model directory, for tests that write."""
    folder, expected = small_db
    shutil.copy(folder / "small.duckdb", tmp_path / "small.duckdb")
    shutil.copytree(folder / "models", tmp_path / "models")
    return tmp_path / "small.duckdb", tmp_path / "models", expected


KILLED_SAVE = """
    import os, signal, duckdb
    from duckdb_diffusion import registry as reg

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    class DyingGraphs(dict):
        def __getitem__(self, key):
            if key == "synthesize":
                die()
            return super().__getitem__(key)

    con = duckdb.connect({path!r})
    target = reg.DirectoryRegistry({models!r}) if {directory!r} else reg.DatabaseRegistry(con)
    artifact = target.load("t")
    artifact.spec["source"] = "the new model"
    if {where!r} == "writing graphs":
        artifact.graphs = DyingGraphs(artifact.graphs)
    else:  # the new version is complete on disk, but not yet made current
        reg.os.replace = die
    target.save(artifact)
    print("not killed")
"""


@pytest.mark.parametrize(
    ("directory", "where"),
    [(False, "writing graphs"), (True, "writing graphs"), (True, "switching versions")],
)
def test_a_writer_killed_mid_save_leaves_the_previous_model(copy, directory, where):
    path, models, expected = copy
    code = KILLED_SAVE.format(path=str(path), models=str(models), directory=directory, where=where)
    done = run_python(code)
    assert done.returncode == -signal.SIGKILL, done.stdout + done.stderr

    con = ddf.connect(str(path), model_dir=str(models) if directory else None)
    assert con.execute(IMPUTE).fetchall() == expected
    listed = con.execute("SELECT name, source FROM latent_diffusion_models()").fetchall()
    assert listed == [("t", "t")]  # the old model, whole; no half-written one
    # The next save goes through and replaces it.
    target = DirectoryRegistry(models) if directory else DatabaseRegistry(con)
    artifact = target.load("t")
    artifact.spec["source"] = "replaced"
    target.save(artifact)
    assert target.load("t").spec["source"] == "replaced"
    con.close()


def test_a_writer_paused_before_switching_versions_still_points_at_a_whole_model(copy, monkeypatch):
    """Another writer saves twice while this one sits between renaming its version into place
    and switching CURRENT to it: the other writer's pruning must not remove that version."""
    _, models, _ = copy
    registry = DirectoryRegistry(models)
    replace, paused = os.replace, []

    def replace_after_two_other_saves(source, target):
        if os.path.basename(target) == "CURRENT" and not paused:
            paused.append(True)
            for k in range(2):
                other = registry.load("t")
                other.spec["source"] = f"other writer {k}"
                DirectoryRegistry(models).save(other)
        replace(source, target)

    monkeypatch.setattr(os, "replace", replace_after_two_other_saves)
    artifact = registry.load("t")
    artifact.spec["source"] = "paused writer"
    registry.save(artifact)
    assert paused and DirectoryRegistry(models).load("t").spec["source"] == "paused writer"


@pytest.mark.parametrize("damage", ["truncated graph", "truncated spec", "missing graph"])
def test_damaged_files_in_a_model_directory_give_a_clear_error(copy, damage):
    path, models, _ = copy
    folder = models / "t" / (models / "t" / "CURRENT").read_text()
    graph, spec = folder / "impute.onnx", folder / "spec.json"
    if damage == "truncated graph":
        graph.write_bytes(graph.read_bytes()[:1000])
    elif damage == "truncated spec":
        spec.write_text(spec.read_text()[:-100])
    else:
        graph.unlink()
    ddf.loading.MODELS.clear()  # forget the loaded model so the damaged files are read
    con = ddf.connect(str(path), read_only=True, model_dir=str(models))
    message = "spec is not valid JSON" if damage == "truncated spec" else "graph is missing or dam"
    with pytest.raises(duckdb.Error, match=f"model 't' in .*{message}.*"):
        con.execute(IMPUTE).fetchall()
    listed = con.execute("SELECT name, rows, metrics->>'error' FROM latent_diffusion_models()")
    ((name, rows, error),) = listed.fetchall()
    assert (name, rows) == ("t", None)
    assert "retrain it" in error or "not valid JSON" in error
    con.close()


RACING_TRAINER = """
    import json, duckdb_diffusion as ddf
    from duckdb_diffusion.registry import DirectoryRegistry
    con = ddf.connect({path!r}, model_dir={models!r}, read_only=True)
    row = con.execute(
        "SELECT name FROM train_latent_diffusion('t', model := 'shared', seed := {seed}, "
        "settings := ?)", [{settings!r}]
    ).fetchall()
    registry = DirectoryRegistry({models!r})
    artifact = registry.load("shared")
    for round in range(25):  # keep racing the other writer
        artifact.spec["source"] = "writer {seed}"
        registry.save(artifact)
    filled = con.execute("SELECT count(*) FROM impute_latent_diffusion('t', model := 'shared')")
    print(row, filled.fetchall())
    con.close()
"""


def test_two_processes_training_one_name_into_a_model_directory(copy):
    """Read-only connections (both processes at once) training into one directory; a third
    process reads the model all the while and must always find a whole one."""
    path, models, _ = copy
    settings = json.dumps(TINY)
    writers = [
        _spawn(RACING_TRAINER.format(path=str(path), models=str(models), seed=k, settings=settings))
        for k in (1, 2)
    ]
    reads, failures = 0, []
    while any(w.poll() is None for w in writers):
        try:
            artifact = DirectoryRegistry(models).load("shared")
            reads += 1
            assert artifact.name == "shared"
        except LookupError:
            pass  # not trained yet
        except Exception as error:  # a damaged or missing read is the failure looked for
            failures.append(repr(error))
        time.sleep(0.01)
    for writer in writers:
        out, err = writer.communicate()
        assert writer.returncode == 0, err
        assert "[('shared',)] [(800,)]" in out
    assert failures == []
    assert reads > 0
    final = DirectoryRegistry(models)
    assert final.names() == ["shared", "t"]
    assert final.load("shared").spec["source"] in {"writer 1", "writer 2"}
    versions = [p for p in (models / "shared").iterdir() if p.name.startswith("v")]
    assert len(versions) > DirectoryRegistry.KEEP_VERSIONS  # young versions outlive the race
    later = DirectoryRegistry(models)
    later.GRACE_SECONDS = 0  # as the next save finds them once the grace has passed
    later.save(final.load("shared"))
    versions = [p for p in (models / "shared").iterdir() if p.name.startswith("v")]
    assert len(versions) <= DirectoryRegistry.KEEP_VERSIONS + 1  # the live one and the newest
    assert later.load("shared").name == "shared"


def test_two_connections_training_one_name_in_the_database(copy):
    path, _, _ = copy
    con = ddf.connect(str(path))
    settings = json.dumps(TINY)
    errors, rows = [], []

    def train(seed: int) -> None:
        cursor = con.cursor()
        try:
            ddf.install(cursor)
            rows.extend(
                cursor.execute(
                    "SELECT name FROM train_latent_diffusion('t', model := 'same', seed := ?, "
                    "settings := ?)",
                    [seed, settings],
                ).fetchall()
            )
        except Exception as error:  # asserted below, in the main thread
            errors.append(repr(error))
        finally:
            cursor.close()

    threads = [threading.Thread(target=train, args=(k,)) for k in (1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=300)
    assert errors == []
    assert rows == [("same",), ("same",)]
    count = con.execute("SELECT count(*) FROM duckdb_diffusion.models WHERE name = 'same'")
    assert count.fetchall() == [(1,)]
    ddf.install(con)
    filled = con.execute("SELECT count(median_income) FROM impute_latent_diffusion('t', 'same')")
    assert filled.fetchall() == [(800,)]
    con.close()


def test_a_save_that_loses_the_race_for_a_name_saves_again(copy, monkeypatch):
    """Two cursors saving one new name: when the other's insert commits between our delete
    (of nothing) and our insert, DuckDB says 'duplicate key'. That is a lost race, not a broken
    model: save again, which replaces the other's model whole."""
    path, _, _ = copy
    con = duckdb.connect(str(path))
    registry = DatabaseRegistry(con)
    stored = registry.load("t")
    artifact = Artifact.create({**stored.spec, "name": "fresh"}, stored.graphs)
    rival = con.cursor()
    original = DatabaseRegistry._save_once
    raced = []

    def racing_save(self, artifact):
        if raced:
            return original(self, artifact)
        raced.append(True)
        ours = self.con.cursor()
        ours.execute("BEGIN TRANSACTION")
        ours.execute("DELETE FROM duckdb_diffusion.models WHERE name = 'fresh'")
        original(DatabaseRegistry(rival), artifact)  # the other connection commits first
        try:
            ours.execute("INSERT INTO duckdb_diffusion.models (name) VALUES ('fresh')")
        finally:
            ours.execute("ROLLBACK")
            ours.close()

    monkeypatch.setattr(DatabaseRegistry, "_save_once", racing_save)
    registry.save(artifact)
    assert raced
    count = con.execute("SELECT count(*) FROM duckdb_diffusion.models WHERE name = 'fresh'")
    assert count.fetchall() == [(1,)]
    assert registry.load("fresh").spec_json() == artifact.spec_json()
    rival.close()
    con.close()


def test_read_only_database_refuses_to_train_but_works_with_a_model_directory(copy, tmp_path):
    path, models, expected = copy
    con = ddf.connect(str(path), read_only=True)
    assert con.execute(IMPUTE).fetchall() == expected  # stored models are readable
    started = time.perf_counter()
    with pytest.raises(duckdb.Error, match="read-only.*model_dir"):
        con.execute("SELECT * FROM train_latent_diffusion('t', model := 'u')").fetchall()
    assert time.perf_counter() - started < 5  # refused before training, not after
    con.close()

    elsewhere = tmp_path / "elsewhere"
    con = ddf.connect(str(path), read_only=True, model_dir=str(elsewhere))
    con.execute(
        "SELECT * FROM train_latent_diffusion('t', model := 'u', settings := ?)", [json.dumps(TINY)]
    ).fetchall()
    assert con.execute("SELECT name FROM latent_diffusion_models()").fetchall() == [("u",)]
    filled = con.execute(
        "SELECT count(*), count(median_income) FROM impute_latent_diffusion('t', model := 'u')"
    )
    assert filled.fetchall() == [(800, 800)]
    con.close()

    blocked = tmp_path / "a file"
    blocked.write_text("not a folder")
    con = ddf.connect(str(path), read_only=True, model_dir=str(blocked / "models"))
    with pytest.raises(duckdb.Error, match="cannot store models in directory .*a file"):
        con.execute("SELECT * FROM train_latent_diffusion('t', model := 'v')").fetchall()
    con.close()
    assert blocked.read_text() == "not a folder"


def _spawn(code: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
