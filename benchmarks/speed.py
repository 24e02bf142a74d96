"""Speed of imputation and synthesis against the machine's limit and against the peers, in one run.

For each table shape (california: 9 columns, adult: 15 columns with real NULLs) it trains one
model on the dataset with ``--null-share`` of its cells NULL, then at every size in ``--sizes``
(the dataset repeated, same NULL share) measures rows/s and peak RSS of

- impute and synthesize through SQL (``impute_latent_diffusion`` / ``synthesize_rows``, the
  result materialized as a user would, ``CREATE TEMP TABLE .. AS``:
  a ``SELECT count(*)`` over the functions would not run the model at all): door ``sql`` the
  process's first query (the model's loading and onnxruntime's sessions included), door
  ``sql-warm`` a second one (what every later query of a pipeline pays),
- the same through the Python API (``impute_batches`` / ``synthesize_batches``),
- the bare ONNX graph on the same rows (inputs prepared beforehand, only ``session.run`` timed):
  the ceiling the two doors are measured against;
- what the SQL door costs without the model: DuckDB's own copy of the table (``CREATE TEMP
  TABLE .. AS SELECT *``, door ``copy``), and the warm SQL query with the model's work taken
  out of the UDF (door ``glue``: imputation hands back the rows it was given, synthesis rows
  made beforehand), which leaves DuckDB's side of the door (the row as a struct, Arrow both
  ways, ``coalesce`` and casts, the result written) and the UDF's calls. The graph and the
  glue one after the other on the same cores (``1 / (1/graph + 1/glue)`` rows/s) is as fast
  as the SQL door can be without the two overlapping, which a one-row-group table (up to
  122,880 rows: DuckDB calls the UDF from one thread) does not allow;

each in a fresh process that reads its own high-water mark (VmHWM). Beside them: the graphs'
FLOPs per row (counted from the ONNX graph), the model arithmetic's FLOP/s as a share of the
machine's peak (a large float32 matmul, numpy's and onnxruntime's, best of both, measured in the
same run), training seconds per epoch and to the best validation loss, and scikit-learn's
IterativeImputer, MissForest and SDV's GaussianCopula and CTGAN on the same rows.

The run's provenance (commit, versions, settings, machine, peak FLOP/s) heads the printed report
and, with every measured row, goes to ``--results`` as one JSON file.

Run from the repository root (peers' environments as in quality.py):

    .venv/bin/python benchmarks/speed.py [--sizes 10000,100000,1000000,10000000]
        [--shapes california,adult] [--train-seconds 120] [--peer-timeout 300] [--quick]
        [--keep-db DIR]

Each run trains its own model, and models trained alike differ (the trees a column keeps vary
from model to model), so a change of the runtime is best measured on one trained model:
``--keep-db DIR`` keeps each shape's database (model and tables) in DIR with what the report
needs beside it, and a later run given the same DIR measures those instead of training (with
the code it runs: check out the other commit, or put its worktree on PYTHONPATH).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

import duckdb_diffusion as ddf
from duckdb_diffusion.runtime import int8_is_exact

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
sys.path.insert(0, str(ROOT / "benchmarks"))
from quality import Environments, provenance, run_peer  # noqa: E402  (shared with quality.py)

SHAPES = ("california", "adult")
PEER_IMPUTERS = {"mice": None, "missforest_rf": None}
PEER_SYNTHESIZERS = {"gaussiancopula": "sdv", "ctgan": "sdv"}
LABELS = {
    "mice": "IterativeImputer (MICE), fit + transform",
    "missforest_rf": "MissForest (random forests), fit + transform",
    "gaussiancopula": "SDV GaussianCopula, fit + sample",
    "ctgan": "SDV CTGAN (30 epochs), fit + sample",
}

# One measurement, in its own process: rows/s of one door and that process's peak memory.
MEASURE = """
    import json, time, duckdb, numpy as np, duckdb_diffusion as ddf
    from duckdb_diffusion.runtime import BLOCK_ROWS, block_pool, padded_to_block

    def peak_mb():
        with open("/proc/self/status") as status:
            return int(next(l for l in status if l.startswith("VmHWM")).split()[1]) / 1024

    # Not read-only: the SQL door materializes into a TEMP table (in memory, not in the file).
    con = duckdb.connect({path!r})
    ddf.install(con)
    table, model_name, task, door, rows = {table!r}, {model!r}, {task!r}, {door!r}, {rows}
    timed = 0.0
    graph_rows = rows
    began = time.perf_counter()
    if door in ("sql", "sql-warm", "glue"):
        if task == "impute":
            query = f"FROM impute_latent_diffusion('{{table}}', model := '{{model_name}}')"
        else:
            query = f"FROM synthesize_rows('{{model_name}}', {{rows}})"
        if door != "sql":  # a query after the first: the model loaded, its sessions made
            con.execute(f"CREATE TEMP TABLE result AS {{query}}")
            con.execute("DROP TABLE result")
        if door == "glue":  # the model's work taken out of the UDF: what is left is the door
            from duckdb_diffusion.runtime import Model
            made = ddf.load_model(con, model_name).synthesize_rows(np.arange(2048))
            Model.impute_batch = lambda self, batch, *args, **kwargs: batch
            Model.synthesize_rows = lambda self, ordinals, *args: made.slice(0, len(ordinals))
            graph_rows = 0
        began = time.perf_counter()
        con.execute(f"CREATE TEMP TABLE result AS {{query}}")
        count = con.execute("SELECT count(*) FROM result").fetchall()[0][0]
    elif door == "copy":  # the same table's rows, read and written without a model
        con.execute(f"CREATE TEMP TABLE result AS SELECT * FROM {{table}}")
        count = con.execute("SELECT count(*) FROM result").fetchall()[0][0]
        graph_rows = 0
    elif door == "python" and task == "impute":
        count = sum(b.num_rows for b in ddf.impute_batches(con, table, model=model_name))
    elif door == "python":
        count = sum(b.num_rows for b in ddf.synthesize_batches(con, model_name, rows))
    else:  # the bare graph: inputs made beforehand, only session.run is timed
        model = ddf.load_model(con, model_name)
        session = model.session(task)
        wanted = {{i.name for i in session.get_inputs()}}
        count, graph_rows = 0, 0
        if task == "impute":
            batches = con.sql(f"SELECT * FROM {{table}}").to_arrow_reader(2048)
        else:
            batches = (min(2048, rows - s) for s in range(0, rows, 2048))
        for batch in batches:
            if task == "impute":
                encoded = model.encoder.encode(batch)
                need = np.flatnonzero(encoded.mask.min(axis=1) < 1)
                feeds = {{
                    "num": encoded.num[need], "cat": encoded.cat[need],
                    "mask": encoded.mask[need],
                    "noise": np.zeros((len(need), model.width), np.float32),
                }}
                count += batch.num_rows
            else:
                n = batch
                feeds = {{
                    "num": np.zeros((n, len(model.encoder.numeric)), np.float32),
                    "cat": np.zeros((n, len(model.encoder.vocabularies)), np.int64),
                    "mask": np.zeros((n, len(model.encoder.modelled_names)), np.float32),
                    "noise": np.random.default_rng(count).standard_normal(
                        (n, model.width), dtype=np.float32),
                }}
                count += n
            graph_rows += len(feeds["mask"])
            block = BLOCK_ROWS[task]
            feeds = padded_to_block({{k: v for k, v in feeds.items() if k in wanted}}, block)
            parts = [{{k: v[start:start + block] for k, v in feeds.items()}}
                     for start in range(0, len(feeds["mask"]), block)]
            # As the runtime runs them: side by side on its pool, or one after another.
            run = lambda part: session.run(["num_out", "cat_out"], part)
            tick = time.perf_counter()
            if model.side_by_side:
                list(block_pool().map(run, parts))
            else:
                for part in parts:
                    run(part)
            timed += time.perf_counter() - tick
    seconds = timed if door == "graph" else time.perf_counter() - began
    print(json.dumps({{"rows": count, "graph_rows": graph_rows, "seconds": seconds,
                      "peak_mb": peak_mb()}}))
    con.close()
"""


# -- the machine's limit ------------------------------------------------------------------
def peak_flops(n: int = 2048, repeats: int = 15) -> dict:
    """Best float32 matmul FLOP/s of numpy (BLAS) and of onnxruntime (MLAS) on all cores.

    Best of many runs, and measured again at the end: on a shared virtual machine a
    neighbour's load can halve one measurement."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    best = {}
    np.matmul(a, a)
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        np.matmul(a, a)
        times.append(time.perf_counter() - tick)
    best["numpy"] = 2 * n**3 / min(times)
    x = helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [n, n])
    y = helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [n, n])
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [x],
        [y],
        [numpy_helper.from_array(a, "w")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    session.run(None, {"x": a})
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        session.run(None, {"x": a})
        times.append(time.perf_counter() - tick)
    best["onnxruntime"] = 2 * n**3 / min(times)
    return best


def graph_flops(graph: bytes) -> float:
    """Floating-point operations per row of an ONNX graph: 2 per multiply-add of every MatMul,
    Gemm and Einsum (the arithmetic that matters here; element-wise ops are left out), and of
    every MatMulInteger (an ``int8`` graph's products, counted as if they were float). Shapes
    are read by running the graph on one row with every such node's operands as outputs (the
    sampler's reshapes defeat static shape inference); nodes onnxruntime constant-folds away
    (those fed by constants only) are not counted, as they never run per row."""
    model = onnx.load_from_string(graph)
    constant = {i.name for i in model.graph.initializer}
    for node in model.graph.node:
        if node.op_type == "Constant" or (node.input and all(n in constant for n in node.input)):
            constant.update(node.output)
    wanted = [
        n
        for n in model.graph.node
        if n.op_type in ("MatMul", "MatMulInteger", "Gemm", "Einsum")
        and not all(i in constant for i in n.input)
    ]
    names = {name for n in wanted for name in (*n.input, *n.output)} - constant
    known = {o.name for o in model.graph.output}
    model.graph.output.extend(
        helper.make_empty_tensor_value_info(name) for name in sorted(names - known)
    )
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {}
    for value in session.get_inputs():
        shape = [1 if not isinstance(d, int) else d for d in value.shape]
        dtype = np.int64 if "int64" in value.type else np.float32
        feeds[value.name] = np.zeros(shape, dtype=dtype)
    outputs = [o.name for o in session.get_outputs()]
    shapes = dict(zip(outputs, (a.shape for a in session.run(outputs, feeds)), strict=True))
    shapes.update({i.name: tuple(i.dims) for i in model.graph.initializer})
    total = 0.0
    for node in wanted:
        out = shapes[node.output[0]]
        if node.op_type == "Einsum":
            equation = helper.get_attribute_value(node.attribute[0]).decode()
            sizes = {}
            for operand, name in zip(equation.split("->")[0].split(","), node.input, strict=True):
                sizes.update(zip(operand.strip(), shapes[name], strict=True))
            total += 2.0 * float(np.prod(list(sizes.values())))
        else:
            a = shapes[node.input[0]]
            trans_a = any(at.name == "transA" and at.i for at in node.attribute)
            total += 2.0 * float(np.prod(out)) * (a[-2] if trans_a else a[-1])
    return total


# -- data ---------------------------------------------------------------------------------
def build(path: Path, shape: str, sizes: list[int], null_share: float, settings: dict) -> dict:
    """The dataset with ``null_share`` of its cells NULL, a model trained on it, and the
    dataset repeated to every size (same NULL share: each repeat gets its own NULL cells)."""
    con = ddf.connect(str(path))
    con.execute(
        f"CREATE TABLE {shape}_base AS SELECT row_number() OVER () - 1 AS __j, * "
        f"FROM read_parquet(?)",
        [str(DATA / f"{shape}.parquet")],
    )
    columns = [c for c in con.table(f"{shape}_base").columns if c != "__j"]
    base_rows = con.execute(f"SELECT count(*) FROM {shape}_base").fetchall()[0][0]
    nulls = ", ".join(
        f'CASE WHEN hash(i, {k}) % 1000 < {int(null_share * 1000)} THEN NULL ELSE "{c}" END '
        f'AS "{c}"'
        for k, c in enumerate(columns)
    )
    for size in [base_rows, *sizes]:
        con.execute(
            f"""CREATE OR REPLACE TABLE {shape}_{size} AS SELECT {nulls}
                FROM (SELECT range AS i FROM range({size})) r
                JOIN {shape}_base c ON r.i % {base_rows} = c.__j ORDER BY i"""
        )
    train_table = f"{shape}_{base_rows}"
    summary = ddf.train(con, train_table, shape, progress=False, **settings)
    incomplete = {
        size: con.execute(
            f"SELECT count(*) FROM {shape}_{size} WHERE "
            + " OR ".join(f'"{c}" IS NULL' for c in columns)
        ).fetchall()[0][0]
        for size in sizes
    }
    model = ddf.load_model(con, shape)
    flops = {g: graph_flops(model.artifact.graphs[g]) for g in ("impute", "synthesize")}
    con.close()
    return {
        "columns": len(columns),
        "trained_on": train_table,
        "summary": summary,
        "incomplete": incomplete,
        "flops": flops,
    }


def kept_or_built(path: Path, shape, sizes, null_share, settings, keep: Path | None) -> dict:
    """``build``'s answer for ``path``; with ``keep``, the one stored beside a database built
    by an earlier run (its model and tables measured as they are, sizes it lacks refused),
    else the database built now and its answer stored beside it."""
    stored = path.with_suffix(".json")
    if keep is not None and path.exists() and stored.exists():
        info = json.loads(stored.read_text())
        missing = [size for size in sizes if str(size) not in info["incomplete"]]
        if missing or info["null_share"] != null_share:
            raise SystemExit(
                f"{path} was built for sizes {sorted(map(int, info['incomplete']))} and NULL "
                f"share {info['null_share']}: use another --keep-db folder for these"
            )
        info["incomplete"] = {int(k): v for k, v in info["incomplete"].items()}
        info["model"] = {**info["model"], "kept": True}
        print(f"measuring the model kept in {path}, built at {info['model']['commit']}")
        return info
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        path.unlink(missing_ok=True)
    info = build(path, shape, sizes, null_share, settings)
    info["null_share"] = null_share
    info["model"] = {"db": str(path), "commit": provenance({})["commit"], "kept": False}
    if keep is not None:
        stored.write_text(json.dumps(info, indent=1, default=str))
    return info


def measure(path: Path, shape: str, size: int, task: str, door: str) -> dict:
    code = MEASURE.format(
        path=str(path), table=f"{shape}_{size}", model=shape, task=task, door=door, rows=size
    )
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True
    )
    if done.returncode != 0:
        raise SystemExit(f"{shape} {size} {task} {door} failed:\n{done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


# -- peers --------------------------------------------------------------------------------
def peer_runs(
    path: Path, shape: str, sizes: list[int], envs: Environments, timeout: float, work: Path
):
    """Each peer at growing sizes until one does not finish within ``timeout``."""
    import duckdb

    con = duckdb.connect(str(path), read_only=True)
    base = con.table(f"{shape}_base")
    categorical = [c for c, t in zip(base.columns, base.types, strict=True) if str(t) == "VARCHAR"]
    out = []
    for method, env in {**PEER_IMPUTERS, **PEER_SYNTHESIZERS}.items():
        for size in sizes:
            table = work / "train.parquet"
            con.execute(f"COPY {shape}_{size} TO '{table}' (FORMAT parquet)")
            python = envs.python(env)
            if python is None:
                out.append({"method": method, "rows": size, "error": "environment failed"})
                break
            if method in PEER_IMPUTERS:
                con.execute(f"COPY (FROM {shape}_{size} LIMIT 1) TO '{work / 't.parquet'}'")
                args = ["impute", method, "--train", str(table), "--test", str(work / "t.parquet")]
                args += ["--out-train", str(work / "o.parquet")]
                args += ["--out-test", str(work / "p.parquet")]
            else:
                args = ["synthesize", method, "--train", str(table), "--rows", str(size)]
                args += ["--out", str(work / "o.parquet"), "--epochs", "30"]
            args += ["--categorical", ",".join(categorical)]
            try:
                timing = run_peer(python, args, work, timeout)
            except RuntimeError as error:
                out.append({"method": method, "rows": size, "error": str(error)[:200]})
                print(f"  {shape} {method} {size:,}: {error}", flush=True)
                break
            seconds = timing.get("s", timing.get("fit_s", 0) + timing.get("sample_s", 0))
            out.append({"method": method, "rows": size, "seconds": seconds, **timing})
            print(f"  {shape} {method} {size:,}: {seconds:.1f} s", flush=True)
    con.close()
    return out


# -- report -------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000,1000000,10000000")
    parser.add_argument("--shapes", default=",".join(SHAPES))
    parser.add_argument("--null-share", type=float, default=0.2)
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--settings", default="{}", help="extra training settings, JSON")
    parser.add_argument("--doors", default="sql,sql-warm,python,graph,copy,glue")
    parser.add_argument("--tasks", default="impute,synthesize")
    parser.add_argument("--peer-timeout", type=float, default=300.0)
    parser.add_argument("--skip-peers", action="store_true")
    parser.add_argument(
        "--repeat", type=int, default=2, help="runs of each measurement; the fastest is shown"
    )
    parser.add_argument("--venvs", default=str(ROOT / "benchmarks" / ".venvs"))
    parser.add_argument("--quick", action="store_true", help="10k and 100k rows, 30 s training")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument(
        "--keep-db",
        type=Path,
        help="keep each shape's trained database here; measure the kept one if it is there",
    )
    args = parser.parse_args()
    if args.quick:
        args.sizes, args.train_seconds, args.peer_timeout = "10000,100000", 30.0, 60.0
    sizes = sorted(int(s) for s in args.sizes.split(","))
    settings = {"max_seconds": args.train_seconds, **json.loads(args.settings)}
    began = time.perf_counter()

    peak = peak_flops()
    limit = max(peak.values())
    config = {key: value for key, value in vars(args).items() if key not in ("venvs", "results")}
    config["keep_db"] = None if args.keep_db is None else str(args.keep_db)
    run = {"provenance": provenance({**config, "training": settings}), "peak_flops": peak}
    run["provenance"]["command"] = " ".join(sys.argv)
    run["provenance"]["versions"]["onnxruntime_device"] = ort.get_device()
    # Which graphs ran: the 8-bit copies where the CPU multiplies them exactly, unless told.
    run["provenance"]["int8"] = {
        "DUCKDB_DIFFUSION_INT8": os.environ.get("DUCKDB_DIFFUSION_INT8", "auto"),
        "exact_on_this_cpu": int8_is_exact(),
    }
    run["results"] = []
    args.results.mkdir(parents=True, exist_ok=True)
    record = args.results / f"speed-{time.strftime('%Y-%m-%d-%H%M')}.json"
    print(f"provenance: {json.dumps(run['provenance'])}")
    print(
        f"peak float32 matmul (2048³): numpy {peak['numpy'] / 1e9:.1f} GFLOP/s, "
        f"onnxruntime {peak['onnxruntime'] / 1e9:.1f} GFLOP/s\n",
        flush=True,
    )
    envs = Environments(Path(args.venvs))
    with tempfile.TemporaryDirectory() as folder:
        for shape in args.shapes.split(","):
            path = (args.keep_db or Path(folder)) / f"{shape}.duckdb"
            info = kept_or_built(path, shape, sizes, args.null_share, settings, args.keep_db)
            run["provenance"].setdefault("models", {})[shape] = info["model"]
            report_training(shape, info)
            print(
                "| task | rows | rows with a NULL | door | rows/s | seconds | peak RSS MB | "
                "model GFLOP/s | share of peak |"
            )
            print("|---|---|---|---|---|---|---|---|---|")
            copies = {}  # the copy door measures the same rows for both tasks: once a size
            for size in sizes:
                for task in args.tasks.split(","):
                    for door in args.doors.split(","):
                        if door == "copy" and size in copies:
                            result = copies[size]
                        else:
                            runs = [
                                measure(path, shape, size, task, door) for _ in range(args.repeat)
                            ]
                            result = min(runs, key=lambda r: r["seconds"])
                        if door == "copy":
                            copies[size] = result
                        rate = result["rows"] / result["seconds"]
                        flop_rate = info["flops"][task] * result["graph_rows"] / result["seconds"]
                        needing = info["incomplete"][size] if task == "impute" else size
                        run["results"].append(
                            {
                                "shape": shape,
                                "task": task,
                                "door": door,
                                **result,
                                "rows_per_s": rate,
                                "model_flops_per_s": flop_rate,
                                "training": {k: info[k] for k in ("trained_on", "flops")},
                            }
                        )
                        record.write_text(json.dumps(run, indent=1))
                        print(
                            f"| {task} | {size:,} | {needing:,} | {door} | {rate:,.0f} | "
                            f"{result['seconds']:.2f} | {result['peak_mb']:,.0f} | "
                            f"{flop_rate / 1e9:.1f} | {flop_rate / limit:.0%} |",
                            flush=True,
                        )
            report_bounds(shape, run["results"])
            if not args.skip_peers:
                print(f"\npeers on {shape} (same rows, same NULLs):", flush=True)
                work = Path(folder) / "peers"
                work.mkdir(exist_ok=True)
                rows = peer_runs(path, shape, sizes, envs, args.peer_timeout, work)
                run["results"].extend({"shape": shape, **row} for row in rows)
                record.write_text(json.dumps(run, indent=1))
                print("\n| peer | rows | seconds | rows/s |\n|---|---|---|---|")
                for row in rows:
                    if "error" in row:
                        print(f"| {LABELS[row['method']]} | {row['rows']:,} | {row['error']} | – |")
                    else:
                        rate = row["rows"] / row["seconds"]
                        print(
                            f"| {LABELS[row['method']]} | {row['rows']:,} | "
                            f"{row['seconds']:.1f} | {rate:,.0f} |"
                        )
            print(flush=True)
            if args.keep_db is None:
                path.unlink()
    again = peak_flops()
    print(
        f"peak float32 matmul measured again at the end: numpy {again['numpy'] / 1e9:.1f}, "
        f"onnxruntime {again['onnxruntime'] / 1e9:.1f} GFLOP/s (shares above use the first)"
    )
    run["peak_flops_at_end"] = again
    record.write_text(json.dumps(run, indent=1))
    print(f"{time.perf_counter() - began:.0f} s in all; results: {record}")


def report_bounds(shape: str, results: list[dict]) -> None:
    """The SQL doors against the bare graph and against the graph and the glue (the door
    without the model) one after the other, where a run measured all three."""
    rates = {
        (r["task"], r["rows"], r["door"]): r["rows_per_s"]
        for r in results
        if r.get("shape") == shape and "door" in r
    }
    lines = []
    for (task, rows, door), sql in rates.items():
        graph, glue = rates.get((task, rows, "graph")), rates.get((task, rows, "glue"))
        if not door.startswith("sql") or graph is None or glue is None:
            continue
        bound = 1 / (1 / graph + 1 / glue)
        lines.append(
            f"| {task} | {rows:,} | {door} | {sql:,.0f} | {graph:,.0f} | {glue:,.0f} | "
            f"{bound:,.0f} | {sql / graph:.0%} | {bound / graph:.0%} | {sql / bound:.0%} |"
        )
    if lines:
        print(
            "\n| task | rows | door | rows/s | bare graph | glue | graph, then glue | "
            "door / graph | graph-then-glue / graph | door / graph-then-glue |\n"
            "|---|---|---|---|---|---|---|---|---|---|"
        )
        print("\n".join(lines), flush=True)


def report_training(shape: str, info: dict) -> None:
    metrics = info["summary"]["metrics"]
    diffusion, vae = metrics["diffusion"], metrics["vae"]
    print(
        f"## {shape}: {info['columns']} columns; model trained on {info['trained_on']} "
        f"({metrics['rows']:,} rows) in {metrics['training_seconds']:.0f} s: VAE "
        f"{vae['epochs']} epochs, {vae.get('seconds', 0) / max(vae['epochs'], 1):.2f} s/epoch; "
        f"diffusion {diffusion['epochs']} epochs, "
        f"{diffusion.get('seconds', 0) / max(diffusion['epochs'], 1):.2f} s/epoch, best "
        f"validation at {diffusion.get('best_at_seconds', float('nan')):.0f} s, stopped by "
        f"{diffusion['stopped_by']}"
    )
    print(
        f"FLOPs per row (MatMul/Gemm/Einsum): impute {info['flops']['impute'] / 1e6:.2f} M, "
        f"synthesize {info['flops']['synthesize'] / 1e6:.2f} M\n",
        flush=True,
    )


if __name__ == "__main__":
    main()
