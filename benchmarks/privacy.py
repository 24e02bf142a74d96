"""Membership inference on synthetic tables, MIDST's protocol: how often an attacker tells the rows
a model trained on from rows it never saw, at a low false-positive rate.

For each dataset and training-set size: members (the training rows), 1,000 + 1,000 challenge
rows (members and non-members of the same population, 50/50), and 2,000 reference rows the
attacker holds (never trained on). Each method makes as many synthetic rows as it trained on;
every attack scores the challenge rows; the score is TPR at 10% and at 1% FPR (guessing: 0.10
and 0.01). Attacks (``duckdb_diffusion.privacy``):

- black box: distance to the closest synthetic record; k-NN density ratio against the reference
  (DOMIAS); a shadow-model attack (the attacker trains models of ours on rows from the
  population, half of the challenge rows inside each, and learns a classifier on each challenge
  row's distances to synthetic and reference rows and density ratio; then applies it to the
  target's synthetic rows: for peers too, with shadows of ours);
- white box: reconstruction through the stored impute graph (ours only: peers have none).

Methods: ours (default training), SDV GaussianCopula and TVAE (their own environment, as in
quality.py), and "bootstrap": releasing a resample of the members, the upper bound.

    .venv/bin/python benchmarks/privacy.py --quick    # one table, 1,000 rows: ~5 minutes
    .venv/bin/python benchmarks/privacy.py            # 3 datasets x 3 sizes: about an hour
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from quality import DATA, ROOT, SYNTHESIZERS, Environments, provenance, run_peer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import duckdb_diffusion as ddf
from duckdb_diffusion import privacy
from duckdb_diffusion.loading import load_model

CHALLENGE = 1000  # members and as many non-members
REFERENCE = 2000
SHADOWS = 3
OURS = "duckdb-diffusion"
METHODS = (OURS, "gaussiancopula", "tvae", "bootstrap")


def draw(table: pa.Table, size: int, seed: int) -> dict[str, pa.Table]:
    """Disjoint members, challenge non-members and reference rows, plus the pool the attacker
    draws shadow training sets from (every row not a member, so shadow sets hold no member
    except the challenge members placed in them on purpose)."""
    order = np.random.default_rng(seed).permutation(table.num_rows)
    size = min(size, table.num_rows - CHALLENGE - REFERENCE)
    members = order[:size]
    outsiders = order[size : size + CHALLENGE]
    reference = order[size + CHALLENGE : size + CHALLENGE + REFERENCE]
    pool = order[size + CHALLENGE + REFERENCE :]
    challenge_members = members[: min(CHALLENGE, size)]
    n = len(challenge_members)
    return {
        "members": table.take(np.sort(members)),
        "challenge": table.take(np.r_[challenge_members, outsiders[:n]]),
        "member": np.r_[np.ones(n, bool), np.zeros(n, bool)],
        "reference": table.take(np.sort(reference)),
        "pool": table.take(np.sort(np.r_[pool, outsiders[n:]])),
    }


def train_ours(members: pa.Table, settings: dict, seed: int):
    """Train ours on ``members`` through the Python door; the runtime model and its summary."""
    con = ddf.connect()
    con.register("members_view", members)
    con.execute("CREATE TABLE members AS SELECT * FROM members_view")
    started = time.perf_counter()
    info = ddf.train(con, "members", seed=seed, progress=False, **settings)
    seconds = time.perf_counter() - started
    model = load_model(con, "members")
    con.close()
    return model, {"fit_s": seconds, "stopped_by": info["metrics"]["diffusion"]["stopped_by"]}


def synthesize_ours(model, rows: int, seed: int) -> pa.Table:
    batches = [
        model.synthesize_batch(start, min(65_536, rows - start), seed=seed)
        for start in range(0, rows, 65_536)
    ]
    return pa.Table.from_batches(batches)


def attack_features(challenge, synthetic, reference, columns) -> np.ndarray:
    """What the shadow attack's classifier sees of each challenge row, black box only: log
    distances to its 5 nearest synthetic rows and to its 5 nearest reference rows, and the
    density ratio."""
    x_challenge, x_synthetic, x_reference = privacy.attack_features(
        [challenge, synthetic, reference], reference, columns
    )
    tiny = privacy.TINY_DISTANCE
    near = np.log(privacy.nearest_distances(x_challenge, x_synthetic, 5) + tiny)
    known = np.log(privacy.nearest_distances(x_challenge, x_reference, 5) + tiny)
    ratio = privacy.density_ratio_scores(x_challenge, x_synthetic, x_reference)
    return np.hstack([near, known, ratio[:, None]])


def shadow_classifier(split, size, settings, seed, columns):
    """Train ``SHADOWS`` models of ours, each on a random half of the challenge rows topped up
    to ``size`` from the attacker's pool; learn membership from their attack features."""
    challenge, pool = split["challenge"], split["pool"]
    xs, ys = [], []
    for shadow in range(SHADOWS):
        rng = np.random.default_rng(10_000 + seed * 100 + shadow)
        inside = rng.random(challenge.num_rows) < 0.5
        fill = rng.choice(pool.num_rows, max(size - int(inside.sum()), 0), replace=False)
        members = pa.concat_tables([challenge.filter(pa.array(inside)), pool.take(fill)])
        model, _ = train_ours(members, settings, seed=1 + shadow)
        synthetic = synthesize_ours(model, members.num_rows, seed=shadow)
        xs.append(attack_features(challenge, synthetic, split["reference"], columns))
        ys.append(inside)
    classifier = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    classifier.fit(np.vstack(xs), np.concatenate(ys))
    return classifier


def synthesize_peer(method, members, envs, work, epochs, timeout) -> tuple[pa.Table, dict]:
    if method == "bootstrap":
        rng = np.random.default_rng(0)
        return members.take(rng.integers(0, members.num_rows, members.num_rows)), {"fit_s": 0.0}
    python = envs.python(SYNTHESIZERS[method])
    if python is None:
        raise RuntimeError(f"environment did not install: {envs.failed[SYNTHESIZERS[method]]}")
    pq.write_table(members, work / "members.parquet")
    categorical = [f.name for f in members.schema if pa.types.is_string(f.type)]
    args = ["synthesize", method, "--train", str(work / "members.parquet")]
    args += ["--rows", str(members.num_rows), "--categorical", ",".join(categorical)]
    args += ["--epochs", str(epochs), "--out", str(work / "synthetic.parquet")]
    timing = run_peer(python, args, work, timeout)
    synthetic = pq.read_table(work / "synthetic.parquet").select(members.column_names)
    return synthetic.cast(members.schema, safe=False), timing


def run(dataset, size, config, envs, work, out) -> None:
    table = duckdb.sql(f"SELECT * FROM '{DATA / dataset}.parquet'").to_arrow_table()
    split = draw(table, size, seed=0)
    columns = table.column_names
    members, challenge, member = split["members"], split["challenge"], split["member"]
    classifier = None
    if size <= config["shadow_max_rows"]:
        started = time.perf_counter()
        classifier = shadow_classifier(split, members.num_rows, config["settings"], 0, columns)
        shadow_s = time.perf_counter() - started
    for method in config["methods"]:
        started = time.perf_counter()
        model = None
        try:
            if method == OURS:
                model, timing = train_ours(members, config["settings"], seed=0)
                synthetic = synthesize_ours(model, members.num_rows, seed=0)
            else:
                synthetic, timing = synthesize_peer(
                    method, members, envs, work, config["epochs"], config["peer_timeout"]
                )
        except Exception as error:
            print(f"{dataset} {size} {method}: failed: {error}", flush=True)
            out.write(json.dumps({"dataset": dataset, "size": size, "method": method,
                                  "error": str(error)[:400]}) + "\n")  # fmt: skip
            continue
        scores = privacy.black_box_scores(challenge, synthetic, split["reference"], columns)
        if model is not None:
            scores["reconstruction"] = privacy.reconstruction_scores(
                model, challenge, split["reference"]
            )
        if classifier is not None:
            x = attack_features(challenge, synthetic, split["reference"], columns)
            scores["shadow_model"] = classifier.decision_function(x)
        row = {
            "dataset": dataset,
            "size": members.num_rows,
            "method": method,
            **timing,
            "seconds": round(time.perf_counter() - started, 1),
            "attacks": {name: privacy.attack_summary(s, member) for name, s in scores.items()},
            **({"shadow_s": round(shadow_s, 1)} if classifier is not None else {}),
            "provenance": config["provenance"],
        }
        out.write(json.dumps(row) + "\n")
        out.flush()
        brief = {n: round(a["tpr_at_0.1_fpr"], 3) for n, a in row["attacks"].items()}
        print(f"{dataset} {members.num_rows} {method}: TPR@10%FPR {brief}", flush=True)


def markdown(rows: list[dict]) -> str:
    attacks = ["closest_record", "density_ratio", "shadow_model", "reconstruction"]
    lines = [
        "| dataset | members | method | " + " | ".join(attacks) + " | fit s |",
        "|---" * (len(attacks) + 4) + "|",
    ]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['size']} | {r['method']} | failed: {r['error']}")
            continue
        cells = []
        for name in attacks:
            a = r["attacks"].get(name)
            cells.append(f"{a['tpr_at_0.1_fpr']:.3f} / {a['tpr_at_0.01_fpr']:.3f}" if a else "–")
        lines.append(
            f"| {r['dataset']} | {r['size']} | {r['method']} | " + " | ".join(cells)
            + f" | {r.get('fit_s', 0):.0f} |"
        )  # fmt: skip
    return "TPR at 10% FPR / TPR at 1% FPR (guessing: 0.100 / 0.010)\n\n" + "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="california, 1,000 rows")
    parser.add_argument("--datasets", default="california,adult,default")
    parser.add_argument("--sizes", default="1000,5000,20000")
    parser.add_argument("--methods", default=",".join(METHODS))
    parser.add_argument("--settings", default="{}", help="our training settings, JSON")
    parser.add_argument("--shadow-max-rows", type=int, default=5000, help="shadow attack up to")
    parser.add_argument("--epochs", type=int, default=300, help="TVAE epochs")
    parser.add_argument("--peer-timeout", type=float, default=3600)
    parser.add_argument("--venvs", type=Path, default=ROOT / "benchmarks" / ".venvs")
    parser.add_argument("--results", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--tables-only", type=Path, help="print the table of a results file")
    args = parser.parse_args()
    if args.tables_only:
        rows = [json.loads(line) for line in args.tables_only.read_text().splitlines()]
        print(markdown(rows))
        return
    if args.quick:
        args.datasets, args.sizes = "california", "1000"
    config = {
        "settings": json.loads(args.settings),
        "methods": args.methods.split(","),
        "shadow_max_rows": args.shadow_max_rows,
        "epochs": args.epochs,
        "peer_timeout": args.peer_timeout,
    }
    config["provenance"] = provenance({**config, "sizes": args.sizes, "shadows": SHADOWS})
    args.results.mkdir(parents=True, exist_ok=True)
    path = args.results / f"privacy-{time.strftime('%Y-%m-%d-%H%M')}.jsonl"
    envs = Environments(args.venvs)
    with tempfile.TemporaryDirectory() as folder, path.open("w") as out:
        for dataset in args.datasets.split(","):
            for size in map(int, args.sizes.split(",")):
                run(dataset, size, config, envs, Path(folder), out)
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    print(markdown(rows))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
