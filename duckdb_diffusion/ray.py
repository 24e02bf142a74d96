"""The Ray door: a stored model on Ray Datasets, row for row as in DuckDB.

    from duckdb_diffusion import ray as ddf_ray
    filled = ddf_ray.impute(ds, "housing", model_dir="models/", seed=7)
    rows = ddf_ray.synthesize("housing", 10_000_000, model_dir="models/", seed=7)

Both are ``map_batches`` with a callable class over ``pyarrow`` batches: each actor loads the
model once (from bytes the driver checked and put in the object store with the actor's
constructor arguments) with onnxruntime pinned to the actor's ``threads_per_worker`` cores.
Ray Data keeps blocks in order only with ``DataContext.get_current().execution_options.
preserve_order = True``; with it, ``impute`` returns the rows in their order, and without it
the same rows with the same cells, in the order Ray finishes them.

Training stays on one machine: ``train`` draws at most ``max_rows`` rows to the driver.
"""

from __future__ import annotations

from dataclasses import asdict

import duckdb
import pyarrow as pa

from . import arguments, engines
from .runtime import DEFAULT_DRAWS

LABEL = "Ray Dataset"


def impute(
    ds,
    model: str,
    *,
    model_dir: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    seed: int = 0,
    draws: int = DEFAULT_DRAWS,
    workers: int | None = None,
    threads_per_worker: int = 1,
    batch_size: int | None = None,
):
    """``ds`` with every NULL of a modelled column filled, every other cell as it was; the
    cells ``impute_latent_diffusion`` would give for the same model and seed. Each actor
    loads the model once: ``workers`` of them (leave CPUs for the tasks that feed them: a
    pool holding every CPU starves its input), or by default a pool Ray scales from one to
    the cluster's CPUs over ``threads_per_worker`` as CPUs are free."""
    loaded = engines.driver_model(model, con, model_dir)
    call, _ = engines.impute_call(loaded, LABEL, _arrow_schema(ds), seed, draws)
    return _mapped(ds, _Imputer, call, workers, threads_per_worker, batch_size)


def synthesize(
    model: str,
    n: int,
    *,
    model_dir: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    seed: int = 0,
    given: dict | None = None,
    workers: int | None = None,
    threads_per_worker: int = 1,
    blocks: int | None = None,
):
    """``n`` synthetic rows as a Dataset of the model's columns: rows ``0 .. n-1`` of the
    table ``synthesize_rows(model, n, seed := seed, given := ...)`` makes, in ``blocks``
    blocks."""
    import ray

    loaded = engines.driver_model(model, con, model_dir)
    call, n = engines.synthesize_call(loaded, n, seed, given)
    if blocks is not None:
        blocks = arguments.whole_number("blocks", blocks, 1, 1_000_000)
    ordinals = ray.data.range(n, override_num_blocks=blocks)
    return _mapped(ordinals, _Synthesizer, call, workers, threads_per_worker, None)


def train(
    ds,
    model: str,
    *,
    model_dir: str | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
    **settings,
) -> dict:
    """Train ``model`` on at most ``max_rows`` rows of ``ds`` (drawn to the driver), stored in
    ``model_dir`` or ``con``'s database. ``settings`` as for ``duckdb_diffusion.train``."""
    return engines.train_drawn(
        lambda max_rows, seed: _training_sample(ds, max_rows, seed),
        model,
        label=LABEL,
        con=con,
        model_dir=model_dir,
        settings=settings,
    )


def _training_sample(ds, max_rows: int, seed: int) -> tuple[int, pa.Table]:
    rows = ds.count()
    if rows > max_rows:
        # a little over max_rows in expectation, then cut: DuckDB's training keeps max_rows
        fraction = min(1.0, 1.1 * max_rows / rows)
        ds = ds.random_sample(fraction, seed=seed).limit(max_rows)
    return rows, to_arrow(ds)


def _arrow_schema(ds) -> pa.Schema:
    schema = ds.schema()
    base = getattr(schema, "base_schema", schema)
    if isinstance(base, pa.Schema):
        return base
    return pa.schema(list(zip(schema.names, schema.types, strict=True)))


def _mapped(ds, worker_class, call, workers, threads_per_worker, batch_size):
    import ray

    threads = arguments.whole_number("threads_per_worker", threads_per_worker, 1, 1024)
    if workers is None:
        # An autoscaling pool: a fixed one taking every CPU leaves none for the tasks that
        # feed it (a repartition upstream then waits forever, measured on 2 CPUs).
        cpus = int(ray.cluster_resources().get("CPU", 1))
        pool = ray.data.ActorPoolStrategy(min_size=1, max_size=max(1, cpus // threads))
    else:
        workers = arguments.whole_number("workers", workers, 1, 100_000)
        pool = ray.data.ActorPoolStrategy(size=workers)
    if batch_size is not None:
        batch_size = arguments.whole_number("batch_size", batch_size, 1, 10**9)
    return ds.map_batches(
        worker_class,
        fn_constructor_kwargs={"plain": asdict(call), "threads": threads},
        batch_format="pyarrow",
        batch_size=batch_size,
        compute=pool,
        num_cpus=threads,
        udf_modifying_row_count=False,
    )


class _Imputer:
    def __init__(self, plain: dict, threads: int):
        self.call = engines.Call.from_plain(plain)
        self.model = engines.worker_model(self.call.shipped, threads)

    def __call__(self, table: pa.Table) -> pa.Table:
        return engines.impute_table(self.model, table, self.call)


class _Synthesizer:
    def __init__(self, plain: dict, threads: int):
        self.call = engines.Call.from_plain(plain)
        self.model = engines.worker_model(self.call.shipped, threads)

    def __call__(self, table: pa.Table) -> pa.Table:
        ordinals = table.column("id").to_numpy()
        return engines.synthesize_table(self.model, ordinals, self.call)


def to_arrow(ds) -> pa.Table:
    """A Dataset's rows as one Arrow table on the driver (in block order)."""
    import ray

    tables = ray.get(ds.to_arrow_refs())
    return pa.concat_tables(tables) if tables else _arrow_schema(ds).empty_table()
