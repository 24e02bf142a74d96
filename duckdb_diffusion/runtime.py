"""A loaded model: onnxruntime sessions plus the encoder, working on Arrow record batches.

``Model.impute_batch`` fills NULL cells of modelled columns and returns every other cell as it
came, in the same order; only rows with a NULL to fill reach the graph. ``Model.synthesize_batch``
makes rows ``start .. start+count`` of a synthetic table, so any split into batches gives the
same table.

Execution provider: CUDA when onnxruntime-gpu can actually bring it up, else CPU; which one
runs is read back from the session (onnxruntime lists CUDA as available even where it cannot
load) and reported by ``Model.provider``.
"""

from __future__ import annotations

import functools
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
import onnxruntime as ort
import pyarrow as pa
import pyarrow.compute as pc

from . import arrays, noise
from .artifact import Artifact, decode_schema, int8_name
from .conditions import Given
from .dependencies import Dependencies
from .encoding import Encoder, fill_nulls, to_arrow
from .missingness import Missingness
from .schema import PASSTHROUGH, ColumnSpec

log = logging.getLogger("duckdb_diffusion")

# 0 draws: no random sample but each cell's point estimate from the point predictor (the
# median of a numeric cell's posterior, the mode of a categorical one), in one network
# evaluation. At 30% MCAR on 5,000 rows it beat the sampler's posterior centre on all three
# datasets (california MAE 0.304 vs 0.306, adult 0.454 vs 0.456, default 0.245 vs 0.250;
# accuracy 0.806 vs 0.742, 0.746 vs 0.699, 0.768 vs 0.745) at a fifteenth of the arithmetic.
DEFAULT_DRAWS = 0
# Rows per onnxruntime call, always exactly this many per graph (the last block is padded).
# onnxruntime's kernels round differently for different batch sizes (last-bit differences
# measured between 1, 97 and 700 rows), so a fixed block is what makes a row's output
# independent of how its table was split into batches. The sampler runs 20% faster in blocks
# of 1,024 than of 256 (adult, 2 cores); so does the point graph, 41k -> 56k rows/s (its
# trees see the block's rows with their column NULL, a fifth of 256 before). Padding rows
# are fully observed (mask 1), so no tree runs on them and a batch with few NULL rows pays
# only the network's share of the block.
BLOCK_ROWS = {"impute": 1024, "synthesize": 1024}
# How many ranges a synthesis scan begins ahead of the one asked for (``_Ahead``). With one,
# the pool ran dry while the caller decoded and DuckDB took the rows (adult, 2 cores, 1M rows
# through SQL: 1.75 of 2 cores busy, 126-129k rows/s); with two, 139-140k; three, the same.
AHEAD_RANGES = 2
# Ranges longer than this are not begun ahead: their own blocks keep the pool busy, and rows
# begun early would only hold memory (a Python caller may ask for millions of rows at once).
AHEAD_MAX_ROWS = 65_536


def cores() -> int:
    """The cores this process may run on (its affinity, where the OS tells it)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return os.cpu_count() or 1


# Blocks run side by side, one per core, each onnxruntime run on one thread. onnxruntime's own
# threads split every node of a run, and on these small matrices their hand-offs cost more
# than they save: adult, 2 cores, one 1,024-row block at a time on 2 threads 120k synthetic /
# 64k imputed rows/s; two blocks at once on one thread each 184k / 80k. One pool per process
# for every model and caller (DuckDB calls a UDF from several threads), so at most one run a
# core is in flight.
_POOL_LOCK = threading.Lock()
_POOL: ThreadPoolExecutor | None = None


def block_pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(cores(), thread_name_prefix="duckdb_diffusion_block")
        return _POOL


def _forget_pool() -> None:
    """A forked child has the pool object but none of its threads: it makes its own."""
    global _POOL
    _POOL = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def preferred_providers() -> list[str]:
    """CUDA first where onnxruntime-gpu is installed, then CPU."""
    available = ort.get_available_providers()
    if "CUDAExecutionProvider" in available and hasattr(ort, "preload_dlls"):
        try:  # CUDA libraries from the nvidia-* wheels, when they are not on the library path
            ort.preload_dlls()
        except Exception as error:  # the session below falls back to CPU and says so
            log.warning("onnxruntime.preload_dlls() failed: %s", error)
    return [p for p in ("CUDAExecutionProvider", "CPUExecutionProvider") if p in available]


# CPU flags of the instructions onnxruntime multiplies signed 8-bit weights with in 32-bit
# sums (VNNI, AMX). Without them (plain AVX2 / AVX-512BW) its kernels add pairs of products
# in 16 bits, which saturate on large inputs and weights: no 8-bit graph runs there.
EXACT_INT8_FLAGS = {"avx512_vnni", "avx_vnni", "amx_int8"}


@functools.cache
def int8_is_exact() -> bool:
    """Whether this CPU multiplies 8-bit products exactly (x86 VNNI or AMX, from
    /proc/cpuinfo; False where that cannot be read)."""
    try:
        with open("/proc/cpuinfo") as info:
            for line in info:
                if line.startswith("flags"):
                    return bool(EXACT_INT8_FLAGS & set(line.split(":", 1)[1].split()))
    except OSError:
        pass
    return False


def chosen_int8(setting: str | None) -> bool:
    """Whether to run the 8-bit graphs a model stores: ``setting`` (None: the
    ``DUCKDB_DIFFUSION_INT8`` variable) "auto" (the default) where the CPU multiplies them
    exactly and the graphs run on it, not on a GPU; "0" never; "1" wherever stored."""
    value = os.environ.get("DUCKDB_DIFFUSION_INT8", "auto") if setting is None else setting
    value = str(value).strip().lower()
    if value in ("0", "false", "no", "off"):
        return False
    if value in ("1", "true", "yes", "on"):
        return True
    if value != "auto":
        raise ValueError(
            f"DUCKDB_DIFFUSION_INT8={value!r}: use auto (8-bit graphs where the CPU multiplies "
            f"them exactly), 0 (float graphs only) or 1 (8-bit graphs wherever stored)"
        )
    return preferred_providers()[0] == "CPUExecutionProvider" and int8_is_exact()


class Model:
    def __init__(self, artifact: Artifact, threads: int | None = None, int8: str | None = None):
        """``threads``: onnxruntime's intra-op threads, the blocks of a batch run one after
        another (None: ``DUCKDB_DIFFUSION_THREADS``; 0, the default there: every core, a block
        on each, ``block_pool``). A Spark task or Ray actor sets it to the cores it was given.
        ``int8``: whether the 8-bit graphs run where the model has them (``chosen_int8``)."""
        self.artifact = artifact
        self.threads = (
            int(os.environ.get("DUCKDB_DIFFUSION_THREADS", "0")) if threads is None else threads
        )
        self.int8 = chosen_int8(int8)
        self.spec = artifact.spec
        self.name = artifact.name
        self.columns = [ColumnSpec.from_json(c) for c in self.spec["columns"]]
        modelled = [c for c in self.columns if c.kind != PASSTHROUGH]
        self.encoder = Encoder.from_json(modelled, self.spec["encoder"])
        self.dependencies = Dependencies.from_json(self.encoder, self.spec.get("dependencies"))
        # Models stored before it draw each column's NULLs at its own rate.
        self.missingness = Missingness.from_json(self.spec.get("missingness"))
        self.schema = decode_schema(self.spec["arrow_schema"])
        self.latent_dim = int(self.spec["latent_dim"])
        self.width = len(modelled) * self.latent_dim
        self._sessions: dict[str, ort.InferenceSession] = {}
        self._float_only: set[str] = set()  # graphs whose 8-bit copy would not load
        self._lock = threading.Lock()
        # On a GPU a run is one device call: blocks go one after another, as with ``threads``.
        self.side_by_side = self.threads == 0 and preferred_providers()[0] == "CPUExecutionProvider"
        self._ahead = _Ahead()

    # -- sessions -------------------------------------------------------------------------
    def session(self, graph: str) -> ort.InferenceSession:
        with self._lock:
            if graph not in self._sessions:
                options = ort.SessionOptions()
                options.log_severity_level = 3
                # Side by side: one thread a run; else ``threads`` (0: onnxruntime's choice).
                options.intra_op_num_threads = 1 if self.side_by_side else self.threads
                providers = preferred_providers()
                runs = self.stored_graph(graph)
                try:
                    session = ort.InferenceSession(
                        self.artifact.graphs[runs], options, providers=providers
                    )
                except Exception as error:  # onnxruntime's errors have no common class
                    if runs == graph:
                        raise
                    # An onnxruntime without the 8-bit kernels: the float graph still runs.
                    log.warning(
                        "model %r: its 8-bit %s graph does not load here (%s); running the "
                        "float one",
                        self.name,
                        graph,
                        str(error).splitlines()[0][:200],
                    )
                    self._float_only.add(graph)
                    runs = graph
                    session = ort.InferenceSession(
                        self.artifact.graphs[runs], options, providers=providers
                    )
                self._sessions[graph] = session
                # onnxruntime-gpu lists CUDA even where it cannot load: read back what runs.
                running = session.get_providers()[0]
                if running != providers[0]:
                    log.warning("model %r: %s unusable, using %s", self.name, providers[0], running)
                log.info("model %r: %s graph (%s) runs on %s", self.name, graph, runs, running)
            return self._sessions[graph]

    def stored_graph(self, graph: str) -> str:
        """Which stored graph runs as ``graph``: its 8-bit copy where chosen and stored."""
        eight = int8_name(graph)
        if graph in self._float_only or not self.int8 or eight not in self.artifact.graphs:
            return graph
        return eight

    def _inputs(self, graph: str) -> list[str]:
        return [i.name for i in self.session(graph).get_inputs()]

    @property
    def _sampler_graph(self) -> str:
        """The graph that draws from the posterior given a row's mask: ``synthesize`` (it
        takes a mask since the point predictor came); models stored before it sample in
        ``impute``."""
        return "synthesize" if "mask" in self._inputs("synthesize") else "impute"

    @property
    def provider(self) -> str:
        return self.session("impute").get_providers()[0]

    def _run(self, graph: str, feeds: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        return self._finish(self._start(graph, feeds), feeds)

    def _start(self, graph: str, feeds: dict[str, np.ndarray]) -> list[Future]:
        """The graph's runs over ``feeds``, a block each: on the pool side by side (running
        while the caller goes on), else run now."""
        session = self.session(graph)
        block = BLOCK_ROWS[graph]
        inputs = padded_to_block({k: feeds[k] for k in self._inputs(graph)}, block)

        def run_block(start: int) -> list[np.ndarray]:
            part = {k: v[start : start + block] for k, v in inputs.items()}
            return session.run(["num_out", "cat_out"], part)

        rows = len(feeds["mask"])
        starts = range(0, rows + -rows % block, block)
        if self.side_by_side and len(starts) > 1:
            return [block_pool().submit(run_block, start) for start in starts]
        runs = []
        for start in starts:
            runs.append(Future())
            runs[-1].set_result(run_block(start))
        return runs

    def _finish(self, runs: list[Future], feeds: dict[str, np.ndarray]) -> tuple:
        """The graph's outputs for ``feeds`` once its runs (``_start``) are done."""
        outputs = [run.result() for run in runs]
        rows = len(feeds["mask"])
        num_out = np.concatenate([num for num, _ in outputs])[:rows]
        cat_out = np.concatenate([cat for _, cat in outputs])[:rows]
        # Every graph's cells follow the columns' dependencies, the given ones' included.
        return self.dependencies.apply(num_out, cat_out, feeds["num"], feeds["cat"], feeds["mask"])

    # -- imputation -----------------------------------------------------------------------
    def impute_batch(
        self,
        batch: pa.RecordBatch,
        seed: int = 0,
        draws: int = DEFAULT_DRAWS,
        copy: int = 0,
        keep_observed: bool = True,
    ) -> pa.RecordBatch:
        """``copy`` >= 1: imputation number ``copy`` of a multiple imputation, one posterior
        draw per NULL cell, keyed by seed, copy and row content (``draws`` is then 1).
        ``keep_observed=False``: a column with NULLs comes back as the model's values in every
        row that had a cell to fill and unspecified values in the others, its observed cells
        not put back: for a caller that keeps them itself (the SQL door's ``coalesce``), which
        saves merging every such column here (a sixth of this function's time on adult)."""
        if copy:
            draws = 1
        nulls = self.encoder.null_cells(batch)
        need = np.flatnonzero(nulls.any(axis=0))
        if len(need) == 0:
            return batch
        encoded = self.encoder.encode(batch)
        num, cat, mask = encoded.num[need], encoded.cat[need], encoded.mask[need]
        rows = len(need)
        if draws == 0:
            feeds = {"num": num, "cat": cat, "mask": mask}
            if "noise" in self._inputs("impute"):
                # Stored before the point predictor: the sampler's ODE run from the noise
                # distribution's mean gives the posterior centre.
                feeds["noise"] = np.zeros((rows, self.width), dtype=np.float32)
            num_out, cat_out = self._run("impute", feeds)
            values = self.encoder.decode_numeric(num_out)
            levels = cat_out
        else:
            key_columns = [num, cat, mask]
            if copy:
                key_columns.append(np.full((rows, 1), copy, dtype=np.int64))
            keys = noise.row_keys(seed, *key_columns)
            start = noise.normal(keys, draws * self.width).reshape(rows * draws, self.width)
            feeds = {
                "num": np.repeat(num, draws, axis=0),
                "cat": np.repeat(cat, draws, axis=0),
                "mask": np.repeat(mask, draws, axis=0),
                "noise": start,
            }
            num_out, cat_out = self._run(self._sampler_graph, feeds)
            values = self.encoder.decode_numeric(num_out).reshape(rows, draws, -1).mean(axis=1)
            levels = _mode(cat_out.reshape(rows, draws, -1), self.encoder.category_sizes)

        columns = list(batch.columns)
        index = {name: i for i, name in enumerate(batch.schema.names)}
        merge = fill_nulls if keep_observed else _filled
        # A column with a NULL anywhere has it in a row of ``need``.
        has_nulls = nulls.any(axis=1)
        for j, (spec, transform) in enumerate(
            zip(self.encoder.numeric_columns, self.encoder.numeric, strict=True)
        ):
            if has_nulls[j]:
                full = np.zeros(batch.num_rows)
                full[need] = transform.finish(values[:, j])
                i = index[spec.name]
                columns[i] = merge(columns[i], to_arrow(full, columns[i].type))
        offset = len(self.encoder.numeric)
        for j, (spec, vocab) in enumerate(
            zip(self.encoder.categorical_columns, self.encoder.vocabularies, strict=True)
        ):
            if has_nulls[offset + j]:
                full = np.zeros(batch.num_rows, dtype=np.int64)
                full[need] = levels[:, j]
                i = index[spec.name]
                columns[i] = merge(columns[i], vocab.values(full, columns[i].type))
        return pa.RecordBatch.from_arrays(columns, schema=batch.schema)

    def sample_tokens(self, keys: np.ndarray, given: Given | None = None) -> tuple:
        """The sampler's outputs for rows keyed ``keys``: normal scores [rows, numeric] and
        level indices [rows, categorical], before decoding and before NULLs are drawn."""
        return self._finish(*self._start_tokens(keys, given))

    def _start_tokens(self, keys: np.ndarray, given: Given | None) -> tuple[list[Future], dict]:
        """``sample_tokens`` begun: its graph runs (``_start``) and their feeds."""
        count = len(keys)
        if given is None:
            feeds = {
                "num": np.zeros((count, len(self.encoder.numeric)), dtype=np.float32),
                "cat": np.zeros((count, len(self.encoder.vocabularies)), dtype=np.int64),
                # nothing given: every token sampled
                "mask": np.zeros((count, len(self.encoder.modelled_names)), dtype=np.float32),
            }
            graph = "synthesize"
        else:
            tiled = given.repeated(count)
            feeds = {"num": tiled.num, "cat": tiled.cat, "mask": tiled.mask}
            graph = self._sampler_graph
        feeds["noise"] = noise.normal(keys, self.width)
        return self._start(graph, feeds), feeds

    def _synthetic_nulls(self, num_out, cat_out, null_draws, given) -> dict[str, np.ndarray]:
        """NULL flags of the columns the missingness chain decides, from each row's sampled
        (or given) values; the same uniforms the per-column rates would have used."""
        if self.missingness is None:
            return {}
        names = self.encoder.modelled_names
        positions = {spec.name: i for i, spec in enumerate(self.columns)}
        uniforms = null_draws[:, [positions[n] for n in names]]
        num, cat, fixed = num_out, cat_out, {}
        if given is not None:
            rows = len(num_out)
            tiled = given.repeated(rows)
            observed = tiled.mask.astype(bool)
            n_num = len(self.encoder.numeric)
            num = np.where(observed[:, :n_num], tiled.num, num_out)
            cat = np.where(observed[:, n_num:], tiled.cat, cat_out)
            fixed = {names.index(n): v.null_count > 0 for n, v in given.values.items()}
        nulls = self.missingness.draw(num, cat, uniforms, fixed)
        return {names[i]: nulls[:, i] for i in self.missingness.targets}

    # -- synthesis ------------------------------------------------------------------------
    def synthesize_batch(
        self,
        start: int,
        count: int,
        seed: int = 0,
        given: Given | None = None,
        end: int | None = None,
    ) -> pa.RecordBatch:
        ordinals = np.arange(start, start + count, dtype=np.int64)
        return self.synthesize_rows(ordinals, seed, given, end)

    def synthesize_rows(
        self,
        ordinals: np.ndarray,
        seed: int = 0,
        given: Given | None = None,
        end: int | None = None,
    ) -> pa.RecordBatch:
        """Rows number ``ordinals`` of the synthetic table for ``seed`` (and ``given``, the
        checked values every row has: ``conditions.check_given``). ``end``: where a scan
        that asks for consecutive ranges stops (its row count), if known: no rows beyond it
        are begun ahead (``_Ahead``)."""
        count = len(ordinals)
        keys = noise.ordinal_keys(seed, ordinals)
        ahead = given is None and self.side_by_side  # a plain scan, whose blocks run on the pool
        runs = self._ahead.take(seed, ordinals) if ahead else None
        begun = runs is not None
        if runs is None:
            runs = self._start_tokens(keys, given)
        if ahead and BLOCK_ROWS["synthesize"] < count <= AHEAD_MAX_ROWS:
            # The ranges a scan asks for next, begun now: their graph runs on the pool while
            # this thread decodes these rows (DuckDB calls the UDF from one thread here).
            # Those of earlier calls were begun then: only the last range is new.
            for k in range(AHEAD_RANGES - 1 if begun else 0, AHEAD_RANGES):
                following = ordinals[-1] + 1 + k * count + np.arange(count, dtype=np.int64)
                if end is not None:
                    following = following[following < end]
                if len(following):
                    begin = self._start_tokens(noise.ordinal_keys(seed, following), None)
                    self._ahead.put(seed, following, begin)
        num_out, cat_out = self._finish(*runs)
        num_out, cat_out = num_out[:count], cat_out[:count]  # begun for more rows than asked
        null_draws = noise.uniform(keys, len(self.columns), stream=7)
        chained = self._synthetic_nulls(num_out, cat_out, null_draws, given)
        values = self.encoder.decode_numeric(num_out)
        decoded = {}
        for j, (spec, transform) in enumerate(
            zip(self.encoder.numeric_columns, self.encoder.numeric, strict=True)
        ):
            decoded[spec.name] = to_arrow(
                transform.finish(values[:, j]), self.schema.field(spec.name).type
            )
        for j, (spec, vocab) in enumerate(
            zip(self.encoder.categorical_columns, self.encoder.vocabularies, strict=True)
        ):
            decoded[spec.name] = vocab.values(cat_out[:, j], self.schema.field(spec.name).type)
        keys_spec = self.spec.get("keys", {})
        out = []
        for position, spec in enumerate(self.columns):
            field = self.schema.field(spec.name)
            fixed = None if given is None else given.column(spec.name, count)
            if fixed is not None:
                out.append(fixed)
            elif spec.name in decoded:
                if spec.name in chained:
                    is_null = arrays.arrow(chained[spec.name])
                else:
                    rate = self.spec["null_fractions"].get(spec.name, 0.0)
                    is_null = arrays.arrow(null_draws[:, position] < rate)
                out.append(pc.if_else(is_null, pa.nulls(count, field.type), decoded[spec.name]))
            elif spec.name in keys_spec:
                fresh = int(keys_spec[spec.name]) + np.asarray(ordinals, dtype=np.int64)
                out.append(arrays.arrow(fresh).cast(field.type))
            else:
                out.append(pa.nulls(count, field.type))
        return pa.RecordBatch.from_arrays(out, schema=self.schema)


class _Ahead:
    """Synthetic rows begun before they were asked for, by seed and first ordinal.

    A synthesis scan asks for consecutive ranges of ordinals from one thread; starting the
    next ranges' graphs (AHEAD_RANGES of them) when a range is asked for lets the graph (on
    the pool) and the decoding of the current rows (numpy, in the caller's thread) run at
    once. Rows are a function of (seed, ordinal) alone, so rows begun early are the rows
    asked for later, and a scan's last, shorter range takes the first of the rows begun for
    it. A few are kept; one a scan never asks for is dropped when newer ones come."""

    KEPT = 4 * AHEAD_RANGES

    def __init__(self):
        self._lock = threading.Lock()
        self._begun: dict[tuple[int, int], tuple[list[Future], dict]] = {}

    def put(self, seed: int, ordinals: np.ndarray, runs: tuple[list[Future], dict]) -> None:
        with self._lock:
            self._begun[seed, int(ordinals[0])] = runs
            while len(self._begun) > self.KEPT:
                del self._begun[next(iter(self._begun))]

    def take(self, seed: int, ordinals: np.ndarray) -> tuple[list[Future], dict] | None:
        """The runs begun for ``ordinals`` (or for more rows from the same first one)."""
        if len(ordinals) == 0 or not bool(np.all(np.diff(ordinals) == 1)):
            return None
        with self._lock:
            runs = self._begun.pop((seed, int(ordinals[0])), None)
        if runs is not None and len(runs[1]["mask"]) < len(ordinals):
            return None
        return runs


def _filled(original: pa.Array, filled: pa.Array) -> pa.Array:
    """``fill_nulls`` for a caller that puts the observed cells back itself."""
    return filled


def padded_to_block(feeds: dict[str, np.ndarray], block: int) -> dict[str, np.ndarray]:
    """A graph's inputs padded to a whole number of blocks (``BLOCK_ROWS``), the padding rows
    fully observed (mask 1) so that no tree runs on them; zeros elsewhere."""
    rows = -len(next(iter(feeds.values()))) % block
    if rows == 0:
        return feeds
    return {
        k: np.concatenate([v, np.full((rows, *v.shape[1:]), int(k == "mask"), dtype=v.dtype)])
        for k, v in feeds.items()
    }


def _mode(levels: np.ndarray, sizes: list[int]) -> np.ndarray:
    """Most frequent level per row over draws ([rows, draws, columns] -> [rows, columns]).

    Ties go to the lower index, which is the more frequent level in training."""
    rows = levels.shape[0]
    out = np.zeros((rows, levels.shape[2]), dtype=np.int64)
    for j, size in enumerate(sizes):
        flat = (np.arange(rows)[:, None] * size + levels[:, :, j]).ravel()
        counts = np.bincount(flat, minlength=rows * size).reshape(rows, size)
        out[:, j] = counts.argmax(axis=1)
    return out
