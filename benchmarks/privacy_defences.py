"""Defences against membership inference, side by side: for one dataset and training-set size
(privacy.py's members, challenge and reference rows), train ours with each variant of the
settings, and report the black-box attacks' TPR at 10% / 1% FPR (mean over 4 synthetic draws)
beside fidelity against the members and against as many fresh rows of the population (shape,
trend, detection AUC of boosted trees): what a defence buys in privacy and costs in fidelity.

    .venv/bin/python benchmarks/privacy_defences.py --dataset default --size 1000 \\
        --variants '[{}, {"dropout": 0.1}, {"dropout": 0.25}, {"seed": 1}]'
    .venv/bin/python benchmarks/privacy_defences.py --sigma-floor 0.25   # sampling noise floor

``--sigma-floor`` is an experiment, not a setting: it ends the exported sampler's schedule at
that noise level (keeping the noisy latent) instead of at 0. About 3 minutes per variant.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import duckdb
import numpy as np
from privacy import DATA, ROOT, draw, synthesize_ours, train_ours
from quality import provenance

from duckdb_diffusion import metrics, privacy

DRAWS = 4


def fidelity(reference, synthetic, columns) -> dict:
    synthetic = synthetic.select(columns).cast(reference.schema, safe=False)
    shape = metrics.column_shape_error(reference, synthetic, columns)
    trend = metrics.pair_trend_error(reference, synthetic, columns)
    return {
        "shape": float(np.mean(list(shape.values()))),
        "trend": float(np.mean(list(trend.values()))),
        "detection": metrics.detection_auc_trees(reference, synthetic, columns),
    }


def run_variant(split, fresh, columns, settings) -> dict:
    members = split["members"]
    training = {k: v for k, v in settings.items() if k != "seed"}
    model, timing = train_ours(members, training, seed=settings.get("seed", 0))
    tprs: dict[str, list] = {}
    row = {"settings": settings, **timing}
    for draw_seed in range(DRAWS):
        synthetic = synthesize_ours(model, members.num_rows, seed=draw_seed)
        scores = privacy.black_box_scores(
            split["challenge"], synthetic, split["reference"], columns
        )
        for name, score in scores.items():
            summary = privacy.attack_summary(score, split["member"])
            tprs.setdefault(name, []).append(
                [summary["tpr_at_0.1_fpr"], summary["tpr_at_0.01_fpr"]]
            )
        if draw_seed == 0:
            row["vs_members"] = fidelity(members, synthetic, columns)
            row["vs_fresh"] = fidelity(fresh, synthetic, columns)
    row["attacks"] = {n: np.mean(v, 0).round(3).tolist() for n, v in tprs.items()}
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="default")
    parser.add_argument("--size", type=int, default=1000)
    parser.add_argument("--variants", default='[{}, {"dropout": 0.1}]', help="JSON list")
    parser.add_argument("--sigma-floor", type=float, help="end sampling at this noise level")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    args = parser.parse_args()
    if args.sigma_floor:
        from duckdb_diffusion.training import export

        schedule, floor = export.karras_sigmas, args.sigma_floor
        export.karras_sigmas = lambda steps: schedule(steps + 1, sigma_min=floor)[:-1]
    table = duckdb.sql(f"SELECT * FROM '{DATA / args.dataset}.parquet'").to_arrow_table()
    split = draw(table, args.size, seed=0)
    pool = split["pool"]
    pick = np.random.default_rng(5).choice(pool.num_rows, split["members"].num_rows, replace=False)
    settings = {k: v for k, v in vars(args).items() if k != "results"}
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"privacy-defences-{time.strftime('%Y-%m-%d-%H%M')}.jsonl"
    with path.open("w") as out:
        for variant in json.loads(args.variants):
            row = run_variant(split, pool.take(np.sort(pick)), table.column_names, variant)
            row.update(dataset=args.dataset, size=args.size, sigma_floor=args.sigma_floor)
            row["provenance"] = provenance(settings)
            out.write(json.dumps(row) + "\n")
            out.flush()
            print(json.dumps({k: row[k] for k in row if k != "provenance"}), flush=True)
    print(f"results: {path}")


if __name__ == "__main__":
    main()
