"""Quality against the imputers and synthesizers users would otherwise reach for, side by side.

Imputation (DiffPuter's protocol): hide 30% of observed cells under MCAR, MAR and MNAR (fixed
seeds), train on the masked 70% of rows, fill them (in-sample) and the masked other 30% (held
out); MAE / RMSE on z-scored numeric cells, accuracy on categorical cells, next to mean/mode,
KNN, MICE, MissForest and HyperImpute on the same masks.

Synthesis (TabSyn's protocol): train on half the rows, sample as many; column-shape error
(KS / total variation), pair-trend error, detection AUC (C2ST), machine-learning efficacy
(gradient boosting trained on synthetic rows, tested on the real other half, against training
on real rows) and distance-to-closest-record share, next to SDV's GaussianCopula, CTGAN, TVAE.

Peers run in their own virtual environments (created on first use from benchmarks/peers/*.txt,
their pins conflict with ours); tables cross as Parquet. Results are appended to a JSON-lines
file as they come, so an interrupted run resumes where it stopped. Run from the repository root:

    .venv/bin/python benchmarks/quality.py --quick      # < 10 minutes on 2 cores
    .venv/bin/python benchmarks/quality.py              # everything: hours
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

import duckdb_diffusion as ddf
from duckdb_diffusion import metrics
from duckdb_diffusion.encoding import numeric_values

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
PEERS = ROOT / "benchmarks" / "peers"
TARGETS = {"california": "median_house_value", "adult": "income", "default": "label"}
OURS = "duckdb-diffusion"
# --float-too: the same trained model of ours again with its float graphs only (where the
# runtime would run its 8-bit copies), to price the 8-bit products on the same weights.
OURS_FLOAT = "duckdb-diffusion, float products"
# Which environment runs each peer: None is this interpreter (scikit-learn is a dev extra).
IMPUTERS = {
    "knn": None,
    "mice": None,
    "missforest_rf": None,
    "missforest": "missforest",
    "hyperimpute": "hyperimpute",
    "miceforest": "miceforest",
    "tabularargn": "tabularargn",
}
SYNTHESIZERS = {
    "gaussiancopula": "sdv",
    "ctgan": "sdv",
    "tvae": "sdv",
    "tabularargn": "tabularargn",
}
LABELS = {
    "mean/mode": "mean/mode",
    "knn": "KNN (k=5)",
    "mice": "MICE (IterativeImputer)",
    "missforest_rf": "MissForest (random forests, the original algorithm)",
    "missforest": "`missforest` package (LightGBM)",
    "hyperimpute": "HyperImpute",
    "miceforest": "miceforest 6.0.5 (LightGBM MICE, 5 rounds)",
    "tabularargn": "MOSTLY AI TabularARGN (mostlyai-engine 2.7.3)",
    "gaussiancopula": "SDV GaussianCopula",
    "ctgan": "SDV CTGAN",
    "tvae": "SDV TVAE",
    OURS: OURS,
    OURS_FLOAT: OURS_FLOAT,
}


def settings(quick: bool) -> dict:
    if quick:
        return dict(
            mechanisms=["mcar"],
            masks=1,
            rows=2000,
            train_seconds=20,
            epochs=20,
            synth_rows=2000,
            peer_timeout=60,
            # minutes even on 1,000 rows: it alone would break the 10-minute budget
            skip={"hyperimpute": "left out of --quick (minutes per table even on 2,000 rows)"},
        )
    return dict(
        mechanisms=list(metrics.MECHANISMS),
        masks=3,
        rows=0,
        train_seconds=240,
        epochs=300,
        synth_rows=0,
        peer_timeout=3600,
        skip={},
    )


# -- environments ---------------------------------------------------------------------------
class Environments:
    """Peer virtual environments, made on first use; one that does not install is reported."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.failed: dict[str, str] = {}

    def python(self, name: str | None) -> str | None:
        if name is None:
            return sys.executable
        if name in self.failed:
            return None
        venv = self.folder / name
        python = venv / "bin" / "python"
        if not (venv / ".installed").exists():
            print(f"setting up the {name} environment in {venv} ...", flush=True)
            try:
                subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                pip = [str(python), "-m", "pip", "install", "-q"]
                subprocess.run(
                    [*pip, "-r", str(PEERS / f"{name}.txt")],
                    check=True,
                    capture_output=True,
                    text=True,
                )
                # A peer whose own pins break beside ours installs without its dependencies,
                # after the file above has installed the ones it needs.
                if (PEERS / f"{name}.nodeps.txt").exists():
                    subprocess.run(
                        [*pip, "--no-deps", "-r", str(PEERS / f"{name}.nodeps.txt")],
                        check=True,
                        capture_output=True,
                        text=True,
                    )
            except subprocess.CalledProcessError as error:
                self.failed[name] = (error.stderr or str(error)).strip().splitlines()[-1][:300]
                print(f"  {name} did not install: {self.failed[name]}", flush=True)
                return None
            (venv / ".installed").touch()
        return str(python)


def run_peer(python: str, args: list[str], work: Path, timeout: float) -> dict:
    timing = work / "timing.json"
    command = [python, str(PEERS / "run_peer.py"), *args, "--timing", str(timing)]
    try:
        # LightGBM/XGBoost threads spinning while they wait ran 30x slower beside other work.
        env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
        done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"did not finish within {timeout:.0f} s (--peer-timeout)") from None
    if done.returncode:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        raise RuntimeError(" / ".join(tail)[:400])
    return json.loads(timing.read_text())


# -- imputation -----------------------------------------------------------------------------
def imputation_runs(dataset, truth, mechanism, seed, config, envs, results, work: Path):
    """Every imputer on one mask of one dataset."""
    numeric = [f.name for f in truth.schema if not pa.types.is_string(f.type)]
    categorical = [f.name for f in truth.schema if pa.types.is_string(f.type)]
    key = {"task": "impute", "dataset": dataset, "mechanism": mechanism, "mask": seed}
    masked, hidden = metrics.hide_cells(truth, truth.column_names, 0.3, seed, mechanism)
    order = np.random.default_rng(seed).permutation(truth.num_rows)
    cut = int(0.7 * truth.num_rows)
    parts = {"in-sample": np.sort(order[:cut]), "held-out": np.sort(order[cut:])}
    sides = {
        side: (truth.take(rows), masked.take(rows), {c: m[rows] for c, m in hidden.items()})
        for side, rows in parts.items()
    }
    pq.write_table(sides["in-sample"][1], work / "train.parquet")
    pq.write_table(sides["held-out"][1], work / "test.parquet")
    methods = [m for m in ["mean/mode", *IMPUTERS, OURS] if m not in config["skip"]]
    for method in methods:
        if results.has({**key, "method": method}):
            continue
        start = time.perf_counter()
        try:
            fills = impute_with(method, sides, numeric, categorical, config, envs, work)
        except Exception as error:  # a peer that fails is reported, the run goes on
            results.add({**key, "method": method, "error": str(error)[:400]})
            print(f"{dataset} {mechanism} mask {seed} {method}: failed: {error}", flush=True)
            continue
        seconds = time.perf_counter() - start
        variants = {method: fills}
        if method == OURS and config.get("float_too"):
            variants = {OURS: fills[OURS], OURS_FLOAT: fills[OURS_FLOAT]}
        for name, filled_sides in variants.items():
            for side, filled in filled_sides.items():
                true, _, cells = sides[side]
                scores = metrics.imputation_scores(true, filled, cells, numeric, categorical)
                constant = constant_fill(filled, cells, numeric)
                results.add(
                    {
                        **key,
                        "method": name,
                        "side": side,
                        "s": seconds,
                        **scores,
                        "constant_fill": constant,
                    }
                )
        print(f"{dataset} {mechanism} mask {seed} {method}: {seconds:.1f} s", flush=True)


def impute_with(method, sides, numeric, categorical, config, envs, work) -> dict[str, pa.Table]:
    if method == "mean/mode":
        train = sides["in-sample"][1]
        return {
            side: metrics.mean_mode_fill(masked, numeric, categorical, reference=train)
            for side, (_, masked, _) in sides.items()
        }
    if method == OURS:
        con = duckdb.connect()
        for side, table in (
            ("train_rows", sides["in-sample"][1]),
            ("test_rows", sides["held-out"][1]),
        ):
            con.register("arrow_view", table)
            con.execute(f"CREATE TABLE {side} AS SELECT * FROM arrow_view")
            con.unregister("arrow_view")
        ddf.train(
            con,
            "train_rows",
            max_seconds=config["train_seconds"],
            progress=False,
            **config["settings"],
        )

        def fill():
            return {
                "in-sample": ddf.impute(con, "train_rows").to_arrow_table(),
                "held-out": ddf.impute(con, "test_rows", model="train_rows").to_arrow_table(),
            }

        out = fill()
        if config.get("float_too"):
            with float_graphs():
                out = {OURS: out, OURS_FLOAT: fill()}
        con.close()
        return out
    python = envs.python(IMPUTERS[method])
    if python is None:
        raise RuntimeError(f"environment did not install: {envs.failed[IMPUTERS[method]]}")
    files = {name: str(work / f"{name}.parquet") for name in ("train", "test")}
    files.update(
        {f"out-{side}": str(work / f"filled_{side}.parquet") for side in ("train", "test")}
    )
    arguments = ["impute", method, "--categorical", ",".join(categorical)]
    for flag, path in files.items():
        arguments += [f"--{flag}", path]
    run_peer(python, arguments, work, config["peer_timeout"])
    return {
        "in-sample": pq.read_table(files["out-train"]),
        "held-out": pq.read_table(files["out-test"]),
    }


@contextlib.contextmanager
def float_graphs():
    """Models loaded inside run their float graphs (``DUCKDB_DIFFUSION_INT8=0``)."""
    from duckdb_diffusion.loading import MODELS

    before = os.environ.get("DUCKDB_DIFFUSION_INT8")
    os.environ["DUCKDB_DIFFUSION_INT8"] = "0"
    MODELS.clear()
    try:
        yield
    finally:
        if before is None:
            del os.environ["DUCKDB_DIFFUSION_INT8"]
        else:
            os.environ["DUCKDB_DIFFUSION_INT8"] = before
        MODELS.clear()


def constant_fill(filled, hidden: dict, numeric: list[str]) -> bool:
    """True when every numeric column got one value in all its hidden cells (a silent failure
    HyperImpute shows with the wrong pandas / scikit-learn)."""
    spreads = []
    for name in (n for n in numeric if n in hidden):
        column = filled.column(name) if isinstance(filled, pa.Table) else filled[name]
        values = np.asarray(
            numeric_values(column) if not isinstance(column, np.ndarray) else column,
            dtype=float,
        )[hidden[name]]
        if len(values) > 1:
            spreads.append(np.nanstd(values))
    return bool(spreads) and bool(max(spreads) == 0)


# -- synthesis ------------------------------------------------------------------------------
def synthesis_runs(dataset: str, truth: pa.Table, config: dict, envs, results, work: Path):
    columns = truth.column_names
    categorical = [f.name for f in truth.schema if pa.types.is_string(f.type)]
    order = np.random.default_rng(0).permutation(truth.num_rows)
    half = truth.num_rows // 2
    train, holdout = truth.take(np.sort(order[:half])), truth.take(np.sort(order[half:]))
    rows = config["synth_rows"] or train.num_rows
    pq.write_table(train, work / "real_train.parquet")
    key = {"task": "synthesize", "dataset": dataset}
    for method in [m for m in [*SYNTHESIZERS, OURS] if m not in config["skip"]]:
        if results.has({**key, "method": method}):
            continue
        try:
            synthetic, timing = synthesize_with(
                method, train, rows, categorical, config, envs, work
            )
        except Exception as error:
            results.add({**key, "method": method, "error": str(error)[:400]})
            print(f"{dataset} synthesis {method}: failed: {error}", flush=True)
            continue
        synthetic = synthetic.select(columns).cast(train.schema, safe=False)
        shape = metrics.column_shape_error(train, synthetic, columns)
        trend = metrics.pair_trend_error(train, synthetic, columns)
        efficacy = metrics.ml_efficacy(train, synthetic, holdout, columns, TARGETS[dataset])
        results.add(
            {
                **key,
                "method": method,
                **timing,
                "shape_error": float(np.mean(list(shape.values()))),
                "trend_error": float(np.mean(list(trend.values()))),
                "detection_auc": metrics.detection_auc(train, synthetic, columns),
                "detection_auc_trees": metrics.detection_auc_trees(train, synthetic, columns),
                "efficacy_metric": efficacy["metric"],
                "efficacy_real": efficacy["real"],
                "efficacy_synthetic": efficacy["synthetic"],
                "dcr_share": metrics.closest_record_share(train, holdout, synthetic, columns),
            }
        )
        print(f"{dataset} synthesis {method}: {timing}", flush=True)


def synthesize_with(method, train, rows, categorical, config, envs, work):
    if method == OURS:
        con = duckdb.connect()
        con.register("arrow_view", train)
        con.execute("CREATE TABLE real_rows AS SELECT * FROM arrow_view")
        start = time.perf_counter()
        ddf.train(
            con,
            "real_rows",
            max_seconds=config["train_seconds"],
            progress=False,
            **config["settings"],
        )
        fitted = time.perf_counter() - start
        start = time.perf_counter()
        synthetic = ddf.synthesize(con, "real_rows", rows, seed=0).to_arrow_table()
        con.close()
        return synthetic, {"fit_s": fitted, "sample_s": time.perf_counter() - start}
    python = envs.python(SYNTHESIZERS[method])
    if python is None:
        raise RuntimeError(f"environment did not install: {envs.failed[SYNTHESIZERS[method]]}")
    timing = run_peer(
        python,
        [
            "synthesize",
            method,
            "--train",
            str(work / "real_train.parquet"),
            "--rows",
            str(rows),
            "--categorical",
            ",".join(categorical),
            "--epochs",
            str(config["epochs"]),
            "--out",
            str(work / "synthetic.parquet"),
        ],
        work,
        config["peer_timeout"],
    )
    return pq.read_table(work / "synthetic.parquet"), timing


# -- results --------------------------------------------------------------------------------
class Results:
    """Rows of results in a JSON-lines file, so a stopped run resumes.

    Every row carries its run's provenance (commit, versions, settings, machine), and only a
    row of the same commit and settings counts as done: a rerun with other settings or code
    measures again instead of reusing old rows."""

    def __init__(self, path: Path, fresh: bool, config: dict):
        self.path = path
        if fresh and path.exists():
            path.unlink()
        self.rows = (
            [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
        )
        self.provenance = provenance(config)
        measured = {k: v for k, v in config.items() if k not in ("skip", "peer_timeout")}
        self.run = hashlib.sha256(
            json.dumps([self.provenance["commit"], measured], sort_keys=True).encode()
        ).hexdigest()[:16]

    def has(self, key: dict) -> bool:
        return any(
            row.get("run") == self.run and all(row.get(k) == v for k, v in key.items())
            for row in self.rows
        )

    def add(self, row: dict) -> None:
        row = {**row, "run": self.run, "provenance": self.provenance}
        self.rows.append(row)
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")


def provenance(config: dict) -> dict:
    """Where a row of results comes from: commit (and whether the tree had changes), library
    versions, settings and machine."""

    def git(*args: str) -> str:
        done = subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True, text=True)
        return done.stdout.strip()

    versions = {}
    for package in ("duckdb", "onnxruntime", "torch", "numpy", "scikit-learn"):
        try:
            versions[package] = metadata.version(package)
        except metadata.PackageNotFoundError:
            pass
    return {
        "commit": git("rev-parse", "HEAD") + ("+changes" if git("status", "--porcelain") else ""),
        "versions": versions,
        "settings": config,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
        f"Python {platform.python_version()}",
        "date": time.strftime("%Y-%m-%d"),
    }


SHORT = {
    "mean/mode": "mean/mode",
    "knn": "KNN",
    "mice": "MICE",
    "missforest_rf": "MissForest",
    "missforest": "missforest pkg",
    "hyperimpute": "HyperImpute",
    "miceforest": "miceforest",
    "tabularargn": "TabularARGN",
    OURS: "**ours**",
    OURS_FLOAT: "ours, float",
}


def summary(impute: list[dict], side: str) -> list[str]:
    """One line per dataset and mechanism: every method's MAE / accuracy (mean over masks)."""
    methods = [m for m in SHORT if any(r["method"] == m for r in impute)]
    lines = [
        f"\n**Imputation summary, {side}: numeric MAE / categorical accuracy** (mean over masks)\n",
        "| dataset, mechanism (masks) | " + " | ".join(SHORT[m] for m in methods) + " |",
        "|---" * (len(methods) + 1) + "|",
    ]
    for dataset in TARGETS:
        for mechanism in metrics.MECHANISMS:
            chosen = [
                r
                for r in impute
                if r["dataset"] == dataset and r["mechanism"] == mechanism and r["side"] == side
            ]
            if not chosen:
                continue
            cells = []
            for method in methods:
                mine = [r for r in chosen if r["method"] == method]
                mae = np.mean([r["mae"] for r in mine]) if mine else np.nan
                acc = np.mean([r["accuracy"] for r in mine]) if mine else np.nan
                cells.append("–" if not mine else f"{mae:.3f} / {acc:.3f}".replace("nan", "–"))
            masks = len({r["mask"] for r in chosen})
            lines.append(
                f"| {dataset}, {mechanism.upper()} ({masks}) | " + " | ".join(cells) + " |"
            )
    return lines


def markdown(rows: list[dict], config: dict, failed: dict) -> str:
    impute = [r for r in rows if r["task"] == "impute" and "error" not in r]
    lines = summary(impute, "in-sample") + summary(impute, "held-out")
    for dataset in TARGETS:
        for mechanism in config["mechanisms"]:
            chosen = [r for r in impute if r["dataset"] == dataset and r["mechanism"] == mechanism]
            if not chosen:
                continue
            masks = len({r["mask"] for r in chosen})
            lines += [
                f"\n**Imputation, {dataset}, 30% {mechanism.upper()}, {masks} mask(s)** "
                "(mean ± sd over masks; MAE/RMSE on z-scored numeric cells)\n",
                "| method | MAE in | RMSE in | acc. in | MAE out | RMSE out | acc. out | wall s |",
                "|---|---|---|---|---|---|---|---|",
            ]
            for method in LABELS:
                mine = [r for r in chosen if r["method"] == method]
                if not mine:
                    continue
                cells = []
                for side in ("in-sample", "held-out"):
                    part = [r for r in mine if r["side"] == side]
                    cells += [_stat([r[k] for r in part]) for k in ("mae", "rmse", "accuracy")]
                flag = " (constant fill!)" if any(r["constant_fill"] for r in mine) else ""
                seconds = _stat([r["s"] for r in mine if r["side"] == "in-sample"], digits=1)
                lines.append(f"| {LABELS[method]}{flag} | " + " | ".join(cells) + f" | {seconds} |")
    synth = [r for r in rows if r["task"] == "synthesize" and "error" not in r]
    for dataset in TARGETS:
        chosen = [r for r in synth if r["dataset"] == dataset]
        if not chosen:
            continue
        metric = chosen[0]["efficacy_metric"]
        lines += [
            f"\n**Synthesis, {dataset}** (lower is better for errors; detection AUC 0.5 is "
            f"indistinguishable; efficacy {metric} on real held-out rows, real-trained "
            f"{chosen[0]['efficacy_real']:.3f}; DCR share 0.5 is ideal)\n",
            "| method | shape error | trend error | detection AUC (network) | detection AUC "
            "(trees) | efficacy | DCR share | fit s | sample s |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for method in LABELS:
            for r in (r for r in chosen if r["method"] == method):
                trees = f"{r['detection_auc_trees']:.3f}" if "detection_auc_trees" in r else "–"
                lines.append(
                    f"| {LABELS[method]} | {r['shape_error']:.3f} | {r['trend_error']:.3f} | "
                    f"{r['detection_auc']:.3f} | {trees} | {r['efficacy_synthetic']:.3f} | "
                    f"{r['dcr_share']:.3f} | {r['fit_s']:.1f} | {r['sample_s']:.1f} |"
                )
    errors = [r for r in rows if "error" in r]
    if errors or failed or config["skip"]:
        lines.append("\n**Did not run**\n")
        lines += [f"- {name} environment: {why}" for name, why in failed.items()]
        lines += [f"- {LABELS[name]}: {why}" for name, why in config["skip"].items()]
        seen = set()
        for r in errors:
            where = f"{r['task']} {r['dataset']} {r.get('mechanism', '')} {r['method']}"
            if where not in seen:
                seen.add(where)
                lines.append(f"- {where}: {r['error']}")
    return "\n".join(lines) + "\n"


def _stat(values: list[float], digits: int = 3) -> str:
    values = np.asarray([v for v in values if v == v], dtype=float)
    if not values.size:
        return "–"
    if values.size == 1:
        return f"{values[0]:.{digits}f}"
    return f"{values.mean():.{digits}f} ± {values.std():.{digits}f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 mask, MCAR, 2,000 rows, 30 s")
    parser.add_argument("--datasets", default=",".join(TARGETS))
    parser.add_argument("--tasks", default="impute,synthesize")
    parser.add_argument("--rows", type=int, help="sample this many rows of each dataset")
    parser.add_argument("--masks", type=int)
    parser.add_argument("--mechanisms", help="comma-separated, of mcar,mar,mnar")
    parser.add_argument("--train-seconds", type=float, help="our training budget per model")
    parser.add_argument("--epochs", type=int, help="CTGAN/TVAE epochs")
    parser.add_argument(
        "--settings", default="{}", help="our other training settings, JSON: '{\"width\": 256}'"
    )
    parser.add_argument(
        "--float-too",
        action="store_true",
        help="imputation: ours also with float graphs only, on the same trained model",
    )
    parser.add_argument("--skip", help="comma-separated peers to leave out, e.g. hyperimpute")
    parser.add_argument("--peer-timeout", type=float, help="seconds before a peer is given up")
    parser.add_argument("--venvs", type=Path, default=ROOT / "benchmarks" / ".venvs")
    parser.add_argument("--results", type=Path, help="JSON-lines file (resumed if it exists)")
    parser.add_argument("--fresh", action="store_true", help="discard earlier results")
    parser.add_argument("--out", type=Path, help="markdown file for the tables")
    parser.add_argument(
        "--tables-only",
        action="store_true",
        help="print the tables of earlier results, run nothing",
    )
    args = parser.parse_args()

    config = settings(args.quick)
    config["settings"] = json.loads(args.settings)
    for name in ("rows", "masks", "train_seconds", "epochs", "peer_timeout"):
        if getattr(args, name) is not None:
            config[name] = getattr(args, name)
    if args.skip:
        config["skip"] = {m: "left out by --skip" for m in args.skip.split(",")}
    if args.mechanisms:
        config["mechanisms"] = args.mechanisms.split(",")
    if args.float_too:
        config["float_too"] = True
    if args.rows:
        config["synth_rows"] = 0
    results_dir = ROOT / "benchmarks" / "results"
    results_dir.mkdir(parents=True, exist_ok=True)
    tag = "quick" if args.quick else "full"
    results = Results(args.results or results_dir / f"quality-{tag}.jsonl", args.fresh, config)
    envs = Environments(args.venvs)
    started = time.perf_counter()
    tables = {}
    for dataset in [] if args.tables_only else args.datasets.split(","):
        truth = duckdb.sql(f"SELECT * FROM '{DATA / dataset}.parquet'").to_arrow_table()
        if config["rows"]:
            keep = np.random.default_rng(0).permutation(truth.num_rows)[: config["rows"]]
            truth = truth.take(np.sort(keep))
        tables[dataset] = truth
    # Most telling first (mask 0 of every dataset and mechanism, then synthesis, then the other
    # masks), so a run stopped early still has a row for every table.
    with tempfile.TemporaryDirectory() as folder:
        work = Path(folder)
        for seed in range(config["masks"]):
            for mechanism in config["mechanisms"]:
                for dataset, truth in tables.items():
                    if "impute" in args.tasks:
                        imputation_runs(
                            dataset, truth, mechanism, seed, config, envs, results, work
                        )
            if seed == 0 and "synthesize" in args.tasks:
                for dataset, truth in tables.items():
                    synthesis_runs(dataset, truth, config, envs, results, work)
    # This run's rows (a results file may hold other runs'); --tables-only prints them all.
    rows = (
        results.rows
        if args.tables_only
        else [r for r in results.rows if r.get("run") == results.run]
    )
    text = markdown(rows, config, envs.failed)
    text += f"\n{tag} run, {config}, {time.perf_counter() - started:.0f} s this invocation\n"
    out = args.out or results_dir / f"quality-{tag}.md"
    out.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
