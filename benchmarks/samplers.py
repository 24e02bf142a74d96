"""Sampler schedules on one trained model: how many solver steps, from which noise level.

The synthesis graph unrolls DPM-Solver++(2M) over Karras et al.'s noise levels; steps and the
highest level are fixed at export. To compare schedules without the noise of retraining, the
denoiser is trained once per dataset (quality.py's split: a seeded sample, half of it the
training rows) and exported again for each schedule, then each exported model synthesizes as
many rows as it trained on through the Python API, scored as quality.py scores synthesis.
Run from the repository root:

    .venv/bin/python benchmarks/samplers.py --datasets adult,default,california --rows 10000

With ``--distilled 2,3``, students of each of those step counts are distilled from the same
trained denoiser (distil.py; each with distil_share of the budget, on top of it) and scored
beside the teacher's schedules and beside the undistilled denoiser taking the students' steps.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import subprocess
import sys
import time
from importlib import metadata
from pathlib import Path

import duckdb
import numpy as np

from duckdb_diffusion import metrics
from duckdb_diffusion.training import distil, edm, export, fit

sys.path.insert(0, str(Path(__file__).resolve().parent))
import quality  # noqa: E402  (benchmarks/quality.py: the same training and sampling calls)

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
# steps:highest noise level[:lowest noise level[:rho]] of Karras et al.'s schedule; where left
# out, EDM's 0.002 and 7 (the defaults before 2026-12-03; edm.py has today's)
SCHEDULES = "8:40,8:20,10:20,12:20,16:20,12:10,24:40"


def split(dataset: str, rows: int):
    """quality.py's synthesis split: a seeded sample of ``rows``, its seeded half to train on."""
    truth = duckdb.sql(f"SELECT * FROM '{DATA / dataset}.parquet'").to_arrow_table()
    if rows:
        keep = np.random.default_rng(0).permutation(truth.num_rows)[:rows]
        truth = truth.take(np.sort(keep))
    order = np.random.default_rng(0).permutation(truth.num_rows)
    return truth.take(np.sort(order[: truth.num_rows // 2]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="adult,default,california")
    parser.add_argument("--rows", type=int, default=10000)
    parser.add_argument("--train-seconds", type=float, default=240)
    parser.add_argument("--schedules", default=SCHEDULES)
    parser.add_argument(
        "--int8", action="store_true", help="each schedule also with the 8-bit synthesis graph"
    )
    parser.add_argument(
        "--distilled", default="", help="student step counts to distil, e.g. 2,3 (none: '')"
    )
    parser.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "samplers.jsonl"
    )
    args = parser.parse_args()
    schedules = []
    for text in args.schedules.split(","):
        parts = [float(part) for part in text.split(":")]
        schedules.append((*parts, *(0.002, 7.0)[len(parts) - 2 :]))  # the defaults fill in
    provenance = {
        "commit": subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT
        ).stdout.strip(),
        "versions": {p: metadata.version(p) for p in ("duckdb", "onnxruntime", "torch")},
        "settings": vars(args) | {"out": str(args.out)},
        "machine": f"{platform.machine()}, {len(os.sched_getaffinity(0))} cores",
        "date": time.strftime("%Y-%m-%d"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    trained_once, distilled_once = fit.train, distil.distil
    student_steps = [int(k) for k in args.distilled.split(",") if k]
    for dataset in args.datasets.split(","):
        train = split(dataset, args.rows)
        columns = train.column_names
        cache = {}

        def train_once(*a, cache=cache, **k):
            """The one trained model, set up for the variant at hand (its first call trains)."""
            if "model" not in cache:
                cache["model"] = trained_once(*a, **k)
            steps, int8, kind = cache["variant"]
            model = cache["model"]
            model.config.int8 = int8
            if kind is None:  # the teacher on one of its schedules
                model.config.sampling_steps = steps
                model.student = model.student_levels = None
            else:  # the student, or the teacher taking the student's steps
                student, levels, _ = cache[steps]
                model.student = student if kind == "student" else model.denoiser
                model.student_levels = levels
            return model

        def distil_each(teacher, *data, cache=cache):
            """Every student from the one teacher, each with the budget a default run gives."""
            *data, config, clock, _ = data
            for k in student_steps:
                config_k = copy.copy(config)
                config_k.distilled_steps = k
                budget = clock.elapsed() + config.max_seconds * config.distil_share
                cache[k] = distilled_once(teacher, *data, config_k, clock, budget)
            return cache[student_steps[0]]

        fit.train, distil.distil = train_once, distil_each
        variants = [(*s, int8, None) for s in schedules for int8 in (False, True)[: 1 + args.int8]]
        kinds = ("ddim", "student")
        variants += [(k, 0, 0, 0, False, kind) for k in student_steps for kind in kinds]
        for steps, highest, lowest, rho, int8, kind in variants:
            export.karras_sigmas = lambda n, h=highest, low=lowest, r=rho: edm.karras_sigmas(
                n, sigma_min=low, sigma_max=h, rho=r
            )
            if kind and cache[steps][0] is None:
                print(f"{dataset:10s} {steps:3d} steps: student not kept {cache[steps][2]}")
                continue
            cache["variant"] = (int(steps), int8, kind)
            settings = {"sampling_steps": int(steps), "int8": int8}
            if student_steps:
                settings = {"distilled_steps": student_steps[0]}
            config = {"train_seconds": args.train_seconds, "settings": settings}
            synthetic, timing = quality.synthesize_with(
                quality.OURS, train, train.num_rows, [], config, None, None
            )
            synthetic = synthetic.select(columns).cast(train.schema, safe=False)
            if kind:
                levels = cache[steps][1]
                highest, lowest, rho = levels[0], levels[-2], 0
            row = {
                "dataset": dataset,
                "steps": int(steps),
                "sigma_max": highest,
                "sigma_min": lowest,
                "rho": rho,
                "int8": int8,
                "distilled": kind,
                **({"distillation": cache[steps][2]} if kind else {}),
                "shape_error": float(
                    np.mean(list(metrics.column_shape_error(train, synthetic, columns).values()))
                ),
                "trend_error": float(
                    np.mean(list(metrics.pair_trend_error(train, synthetic, columns).values()))
                ),
                "detection_auc": metrics.detection_auc(train, synthetic, columns),
                "detection_auc_trees": metrics.detection_auc_trees(train, synthetic, columns),
                **timing,
                "stopped_by": cache["model"].metrics["diffusion"]["stopped_by"],
                "provenance": provenance,
            }
            with args.out.open("a") as out:
                out.write(json.dumps(row) + "\n")
            print(
                f"{dataset:10s} {int(steps):3d} steps {highest:g} -> {lowest:g} (rho {rho:g})"
                f"{' int8' if int8 else ''}{' ' + kind if kind else ''}: "
                f"shape "
                f"{row['shape_error']:.4f} trend {row['trend_error']:.4f} detection "
                f"{row['detection_auc']:.3f} / trees {row['detection_auc_trees']:.3f}",
                flush=True,
            )
    fit.train, distil.distil = trained_once, distilled_once


if __name__ == "__main__":
    main()
