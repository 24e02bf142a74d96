"""Two stored models' graphs timed in turns on the same inputs: a before/after comparison of
graph changes that holds on a noisy machine, where two runs of ``speed.py`` minutes apart do
not (this 2-core machine's matmul peak moved between 110 and 430 GFLOP/s from hour to hour).

Each model (``database_file:model_name``) runs its graph on the same block of rows, the two
alternating ``--rounds`` times; the report is each one's median and best rows/s and how often
the second beat the first in a round. Synthesis rows are all-free (a synthetic row); imputation
rows have ``--null-share`` of their cells NULL. Run from the repository root:

    .venv/bin/python benchmarks/graph_ab.py before.duckdb:adult after.duckdb:adult \\
        [--task synthesize] [--rounds 10]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import duckdb
import numpy as np
from quality import provenance

import duckdb_diffusion as ddf
from duckdb_diffusion.runtime import BLOCK_ROWS


def inputs(model, task: str, null_share: float) -> dict:
    rows, rng = BLOCK_ROWS[task], np.random.default_rng(0)
    columns = len(model.encoder.modelled_names)
    observed = rng.random((rows, columns)) >= (null_share if task == "impute" else 1.0)
    return {
        "num": rng.standard_normal((rows, len(model.encoder.numeric))).astype(np.float32),
        "cat": np.zeros((rows, len(model.encoder.vocabularies)), np.int64),
        "mask": observed.astype(np.float32),
        "noise": rng.standard_normal((rows, model.width)).astype(np.float32),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs=2, help="database_file:model_name, twice")
    parser.add_argument("--task", default="synthesize", choices=["synthesize", "impute"])
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--runs", type=int, default=15, help="graph runs per model per round")
    parser.add_argument("--null-share", type=float, default=0.2)
    args = parser.parse_args()
    timed = []
    for spec in args.models:
        path, name = spec.rsplit(":", 1)
        con = duckdb.connect(path, read_only=True)
        ddf.install(con)
        model = ddf.load_model(con, name)
        session = model.session(args.task)
        wanted = {i.name for i in session.get_inputs()}
        feeds = {k: v for k, v in inputs(model, args.task, args.null_share).items() if k in wanted}
        session.run(None, feeds)  # warm
        timed.append((spec, session, feeds))
    rates = {spec: [] for spec, _, _ in timed}
    for _ in range(args.rounds):
        for spec, session, feeds in timed:
            started = time.perf_counter()
            for _ in range(args.runs):
                session.run(None, feeds)
            rates[spec].append(args.runs * BLOCK_ROWS[args.task] / (time.perf_counter() - started))
    first, second = (rates[spec] for spec, _, _ in timed)
    print(f"provenance: {json.dumps(provenance(vars(args)))}")
    print(f"| {args.task} graph | median rows/s | best rows/s |\n|---|---|---|")
    for spec, values in rates.items():
        print(f"| {spec} | {statistics.median(values):,.0f} | {max(values):,.0f} |")
    wins = sum(b > a for a, b in zip(first, second, strict=True))
    print(f"the second faster in {wins} of {args.rounds} rounds")


if __name__ == "__main__":
    main()
