"""What the category trees cost and give, on one model trained as ``speed.py`` trains it.

Trains a model on adult with ``--null-share`` of its cells NULL (``speed.build``, the same
table and settings as ``speed.py``), then prints:

- the trees kept (per category column: rounds, levels whose trees were cut, trees), and the
  numeric columns' trees;
- onnxruntime's kernel time per row of the impute graph that runs here (its 8-bit copy on a
  CPU with exact 8-bit products), one thread, 1,024-row blocks of real rows, by operator;
- the accuracy of SQL imputation on the table's NULL cells of the category columns, against
  the values the NULLs replaced (what the trees are for);
- seconds of SQL imputation of 100,000 rows in a fresh process: the first query (as
  ``speed.py`` times it) and the second.

Each training run grows its own trees, so compare runs of two commits with two or more runs
each. Run from the repository root:

    .venv/bin/python benchmarks/trees_cost.py [--train-seconds 120] [--results FILE]
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
from pathlib import Path

import onnx
import onnxruntime as ort
from onnx import helper

import duckdb_diffusion as ddf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from quality import provenance  # noqa: E402
from speed import build  # noqa: E402

TIMED = """
import json, time, duckdb, duckdb_diffusion as ddf
con = duckdb.connect({path!r})
ddf.install(con)
query = ("CREATE OR REPLACE TEMP TABLE r AS "
         "FROM impute_latent_diffusion('adult_100000', model := 'adult')")
times = []
for _ in range(2):
    began = time.perf_counter()
    con.execute(query)
    times.append(time.perf_counter() - began)
print(json.dumps(times))
"""


def tree_counts(model) -> dict:
    """Trees per TreeEnsemble node of the impute graph, by the column it fills."""
    graph = onnx.load_from_string(model.artifact.graphs["impute"]).graph
    counts = {}
    for node in graph.node:
        if node.op_type == "TreeEnsemble":
            roots = next(a for a in node.attribute if a.name == "tree_roots")
            counts[node.input[0].rsplit("_", 1)[0]] = len(helper.get_attribute_value(roots))
    return counts


def kernel_times(model, con, blocks: int = 40) -> dict:
    """ns per row by operator, onnxruntime's profile of ``blocks`` 1,024-row runs."""
    rows = con.sql(f"SELECT * FROM adult_100000 LIMIT {1024 * blocks}").arrow().read_all()
    encoded = model.encoder.encode(rows)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.enable_profiling = True
    options.profile_file_prefix = str(Path(tempfile.gettempdir()) / "trees_cost")
    graph = model.stored_graph("impute")
    session = ort.InferenceSession(
        model.artifact.graphs[graph], options, providers=["CPUExecutionProvider"]
    )
    for start in range(0, 1024 * blocks, 1024):
        part = slice(start, start + 1024)
        session.run(
            None, {"num": encoded.num[part], "cat": encoded.cat[part], "mask": encoded.mask[part]}
        )
    profile = Path(session.end_profiling())
    by_op, run = collections.Counter(), 0.0
    for event in json.loads(profile.read_text()):
        if event.get("cat") == "Node" and event["name"].endswith("_kernel_time"):
            by_op[event["args"]["op_name"]] += event["dur"]
        if event.get("name") == "model_run":
            run += event["dur"]
    profile.unlink()
    per_row = 1e3 / (1024 * blocks)  # µs in all -> ns a row
    return {
        "graph": graph,
        "model_run": round(run * per_row),
        "kernels": {op: round(us * per_row) for op, us in by_op.most_common()},
    }


def accuracy(con, model) -> dict:
    """Per category column: the share of its NULL cells (whose value is known) imputed right."""
    con.execute(
        "CREATE OR REPLACE TEMP TABLE filled AS "
        "FROM impute_latent_diffusion('adult_48842', model := 'adult')"
    )
    out = {}
    for spec in model.encoder.categorical_columns:
        column = f'"{spec.name}"'
        right, cells = con.execute(
            f"""SELECT avg((f.{column} = b.{column})::INT), count(*)
                FROM (SELECT row_number() OVER () AS k, * FROM filled) f
                JOIN (SELECT row_number() OVER () AS k, {column} AS given FROM adult_48842) g
                USING (k)
                JOIN (SELECT __j + 1 AS k, * FROM adult_base) b USING (k)
                WHERE g.given IS NULL AND b.{column} IS NOT NULL"""
        ).fetchall()[0]
        out[spec.name] = {"accuracy": round(right, 4), "cells": cells}
    cells = sum(c["cells"] for c in out.values())
    out["all"] = {
        "accuracy": round(sum(c["accuracy"] * c["cells"] for c in out.values()) / cells, 4),
        "cells": cells,
        "mean_of_columns": round(sum(c["accuracy"] for c in out.values()) / len(out), 4),
    }
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train-seconds", type=float, default=120.0)
    parser.add_argument("--null-share", type=float, default=0.2)
    parser.add_argument("--results", type=Path, default=None, help="append the run as JSON")
    args = parser.parse_args()
    run = {"provenance": provenance({**vars(args), "results": str(args.results)})}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "adult.duckdb"
        info = build(path, "adult", [100000], args.null_share, {"max_seconds": args.train_seconds})
        run["trees"] = info["summary"]["metrics"].get("trees", {})
        con = ddf.connect(str(path))
        model = ddf.load_model(con, "adult")
        run["tree_counts"] = tree_counts(model)
        run["profile"] = kernel_times(model, con)
        run["accuracy"] = accuracy(con, model)
        con.close()
        timed = subprocess.run(
            [sys.executable, "-c", TIMED.format(path=str(path))],
            capture_output=True,
            text=True,
            check=True,
        )
        run["sql_seconds_100k"] = [round(s, 3) for s in json.loads(timed.stdout)]
    counts = run["tree_counts"]
    category = sum(n for name, n in counts.items() if "num" not in name)
    print(f"provenance: {json.dumps(run['provenance'])}")
    print(f"trees: {json.dumps(run['trees'])}")
    print(f"category trees {category}, numeric {sum(counts.values()) - category}: {counts}")
    kernels = run["profile"]["kernels"]
    print(
        f"impute graph ({run['profile']['graph']}), one thread, ns a row: run "
        f"{run['profile']['model_run']}, kernels {sum(kernels.values())}, "
        + ", ".join(f"{op} {ns}" for op, ns in list(kernels.items())[:8])
    )
    print(f"accuracy on NULL cells: {json.dumps(run['accuracy'])}")
    first, second = run["sql_seconds_100k"]
    print(f"SQL imputation of 100,000 rows, fresh process: first {first} s, second {second} s")
    if args.results:
        with args.results.open("a") as out:
            out.write(json.dumps(run, default=float) + "\n")


if __name__ == "__main__":
    main()
