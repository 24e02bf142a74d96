"""``duckdb-diffusion``: the command line, a thin door onto the SQL functions.

Every command opens the database with the functions installed and runs the same SQL a user
would (``train_latent_diffusion``, ``impute_latent_diffusion``, ...), with DuckDB's progress
bar on for long scans and a training progress bar on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from sqlglot import exp

from . import arguments
from . import sql as ddf_sql
from .prepare import model_name
from .runtime import DEFAULT_DRAWS
from .source import SourceError, parse_source


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except (SourceError, ValueError, LookupError) as error:
        print(f"duckdb-diffusion {args.command}: {error}", file=sys.stderr)
        return 1
    except Exception as error:  # DuckDB errors carry the UDF's message
        if type(error).__module__.startswith(("duckdb", "_duckdb")):
            print(f"duckdb-diffusion {args.command}: {error}", file=sys.stderr)
            return 1
        raise


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="duckdb-diffusion",
        description="Latent-diffusion imputation and synthesis for DuckDB tables.",
    )
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    train = commands.add_parser("train", help="train a model on a table and store it")
    train.add_argument("database", help="DuckDB database file")
    train.add_argument("table", help="table or view name, or a parenthesised SELECT")
    train.add_argument("--model", help="model name (default: the table's name)")
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--max-seconds", type=float, help="training time budget (default 240)")
    train.add_argument(
        "--categorical",
        action="append",
        metavar="COLUMN",
        help="model this column as categorical (repeat for more)",
    )
    train.add_argument(
        "--passthrough",
        action="append",
        metavar="COLUMN",
        help="leave this column out of the model (repeat for more)",
    )
    train.add_argument(
        "--settings", metavar="JSON", help="training settings as JSON, e.g. '{\"width\": 256}'"
    )
    train.add_argument(
        "--epsilon", type=float, help="train with differential privacy (DP-SGD) to this epsilon"
    )
    train.add_argument("--delta", type=float, help="with --epsilon (default 1 / (10 x rows))")
    _common(train)
    train.set_defaults(run=_train)

    impute = commands.add_parser("impute", help="fill the NULLs of a table")
    impute.add_argument("database")
    impute.add_argument("table")
    impute.add_argument("--model")
    impute.add_argument("--seed", type=int, default=0)
    impute.add_argument(
        "--draws",
        type=int,
        help=f"random posterior draws averaged per row; 0 (default {DEFAULT_DRAWS}) takes the "
        f"deterministic posterior centre, the most accurate and fastest",
    )
    impute.add_argument(
        "--imputations",
        type=int,
        help="multiple imputation: this many completed copies, stacked under a leading "
        "_imputation column (1..M); each NULL an independent posterior draw",
    )
    _destination(impute)
    _common(impute)
    impute.set_defaults(run=_impute)

    synth = commands.add_parser("synthesize", help="generate new rows from a model")
    synth.add_argument("database")
    synth.add_argument("model")
    synth.add_argument("-n", "--rows", type=int, required=True, help="how many rows")
    synth.add_argument("--seed", type=int, default=0)
    synth.add_argument(
        "--given",
        metavar="JSON",
        help='fixed values every row has, e.g. \'{"income": ">50K"}\' (null: that column NULL)',
    )
    _destination(synth)
    _common(synth)
    synth.set_defaults(run=_synthesize)

    models = commands.add_parser("models", help="list the stored models")
    models.add_argument("database")
    _common(models)
    models.set_defaults(run=_models)

    export = commands.add_parser(
        "export", help="copy a stored model into a model directory (for Spark, Ray, sharing)"
    )
    export.add_argument("database")
    export.add_argument("model")
    export.add_argument("directory", help="model directory to copy it into")
    export.set_defaults(run=_export)

    import_ = commands.add_parser(
        "import", help="copy a model from a model directory into the database"
    )
    import_.add_argument("database")
    import_.add_argument("directory", help="model directory to copy it from")
    import_.add_argument("model")
    import_.set_defaults(run=_import)

    evaluate = commands.add_parser(
        "evaluate", help="measure a model on its table and write a report with plots"
    )
    evaluate.add_argument("database")
    evaluate.add_argument("table")
    evaluate.add_argument("--model", help="model name (default: the table's name)")
    evaluate.add_argument(
        "--report", help="report file, .html or .md (default: MODEL-evaluation.html)"
    )
    evaluate.add_argument("--rows", type=int, default=5000, help="rows sampled (default 5000)")
    evaluate.add_argument("--hide", type=float, default=0.2, help="share of cells to hide")
    evaluate.add_argument("--target", help="a column to predict for machine-learning efficacy")
    evaluate.add_argument("--seed", type=int, default=0)
    evaluate.add_argument(
        "--privacy",
        action="store_true",
        help="also attack a copy of the model trained on half the rows (membership inference)",
    )
    _common(evaluate)
    evaluate.set_defaults(run=_evaluate)

    demo = commands.add_parser(
        "demo", help="the main job end to end on a real dataset, in a temporary database"
    )
    demo.add_argument("--data", help="a Parquet or CSV file (default: Palmer penguins)")
    demo.add_argument("--max-seconds", type=float, default=40.0, help="training budget")
    demo.add_argument("--hide", type=float, default=0.2, help="share of cells to hide")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    return parser


def _common(parser) -> None:
    parser.add_argument("--model-dir", help="store models in this directory, not the database")


def _destination(parser) -> None:
    where = parser.add_mutually_exclusive_group()
    where.add_argument("--into", metavar="TABLE", help="write the result to this table")
    where.add_argument("--out", metavar="FILE", help="write the result to a .parquet/.csv file")


def _connect(args, read_only: bool = False):
    con = _connect_plain(args, read_only, args.model_dir)
    con.execute("SET enable_progress_bar = true")
    return con


def _call(function: str, positional: list, named: dict) -> tuple[str, list]:
    """``SELECT * FROM function(?, ..., name := ?)`` with every value bound as a parameter."""
    parts = ["?"] * len(positional)
    values = list(positional)
    for name, value in named.items():
        if value is not None:
            parts.append(f"{name} := ?")
            values.append(value)
    return f"SELECT * FROM {function}({', '.join(parts)})", values


def _train(args) -> int:
    con = _connect(args)
    settings = json.dumps({"progress": True, **arguments.settings(args.settings)})
    query, values = _call(
        "train_latent_diffusion",
        [args.table],
        {
            "model": args.model,
            "seed": args.seed,
            "max_seconds": args.max_seconds,
            "settings": settings,
            "categorical": args.categorical,
            "passthrough": args.passthrough,
            "epsilon": args.epsilon,
            "delta": args.delta,
        },
    )
    relation = con.execute(query, values)
    columns = [d[0] for d in relation.description]
    (row,) = relation.fetchall()
    for name, value in zip(columns, row, strict=True):
        if name == "metrics":  # the whole JSON is in latent_diffusion_models(); show the score
            scores = json.loads(value).get("validation_imputation", {})
            value = f"validation MAE {scores.get('mae')}, accuracy {scores.get('accuracy')}"
            spent = json.loads(row[columns.index("metrics")]).get("privacy")
            if spent:
                value += f"; private: epsilon {spent['epsilon']}, delta {spent['delta']:.2g}"
        print(f"{name:>18}: {value}")
    con.close()
    return 0


def _impute(args) -> int:
    con = _connect(args, read_only=not args.into)
    named = {
        "model": args.model,
        "seed": args.seed,
        "draws": args.draws,
        "imputations": args.imputations,
    }
    query, values = _call("impute_latent_diffusion", [args.table], named)
    _deliver(con, query, values, args)
    con.close()
    return 0


def _synthesize(args) -> int:
    con = _connect(args, read_only=not args.into)
    query, values = _call("synthesize_rows", [args.model, args.rows], {"seed": args.seed})
    if args.given is not None:
        try:
            given = json.loads(args.given)
        except ValueError as error:
            raise ValueError(f"--given must be a JSON object of column: value ({error})") from None
        if not isinstance(given, dict):
            raise ValueError(
                '--given must be a JSON object of column: value, e.g. {"income": ">50K"}'
            )
        # A JSON value is its own to_json(), so the macro hands the planner this object.
        query = query.removesuffix(")") + ", given := ?::JSON)"
        values.append(json.dumps(given))
    _deliver(con, query, values, args)
    con.close()
    return 0


def _deliver(con, query: str, values: list, args) -> None:
    if args.into:
        parse_source(args.into)  # validates the name
        target = exp.to_table(args.into, dialect="duckdb").sql(dialect="duckdb")
        con.execute(f"CREATE TABLE {target} AS {query}", values)
        count = con.execute(f"SELECT count(*) FROM {target}").fetchall()[0][0]
        print(f"wrote {count} rows to {target}")
    elif args.out:
        out = Path(args.out)
        kind = "csv" if out.suffix.lower() == ".csv" else "parquet"
        literal = exp.Literal.string(str(out)).sql(dialect="duckdb")
        con.execute(f"COPY ({query}) TO {literal} (FORMAT {kind})", values)
        print(f"wrote {out}")
    else:
        relation = con.execute(query, values)
        columns = [d[0] for d in relation.description]
        rows = relation.fetchmany(10)
        print("\t".join(columns))
        for row in rows:
            print("\t".join("NULL" if v is None else str(v) for v in row))


def _models(args) -> int:
    con = _connect(args, read_only=True)
    rows = con.execute(
        "SELECT name, source, columns, rows, created, size, "
        "metrics->>'$.validation_imputation.mae', "
        "metrics->>'$.validation_imputation.mean_mode_mae' FROM latent_diffusion_models()"
    ).fetchall()
    if not rows:
        print("no models; train one with: duckdb-diffusion train DATABASE TABLE")
    for name, source, columns, count, created, size, mae, baseline in rows:
        quality = f"\tvalidation MAE {mae} (mean fill {baseline})" if mae is not None else ""
        print(
            f"{name}\t{source}\t{columns} columns\t{count} rows\t{created}\t{size} bytes{quality}"
        )
    con.close()
    return 0


def _export(args) -> int:
    from .api import export_model

    con = _connect_plain(args, read_only=True)
    info = export_model(con, args.model, args.directory)
    print(f"model {info['name']!r} ({info['size']} bytes) copied to {args.directory}")
    return 0


def _import(args) -> int:
    from .api import import_model

    con = _connect_plain(args)
    info = import_model(con, args.model, args.directory)
    print(f"model {info['name']!r} ({info['size']} bytes) copied into {args.database}")
    return 0


def _connect_plain(args, read_only: bool = False, model_dir: str | None = None):
    if not Path(args.database).exists():
        raise ValueError(f"database file {args.database!r} does not exist")
    return ddf_sql.connect(args.database, model_dir=model_dir, read_only=read_only)


def _evaluate(args) -> int:
    from .evaluation import evaluate

    con = _connect(args, read_only=True)
    try:
        name = model_name(args.model, parse_source(args.table))
        report = args.report or f"{name}-evaluation.html"
        result = evaluate(
            con,
            args.table,
            args.model,
            report=report,
            rows=args.rows,
            hide=args.hide,
            target=args.target,
            seed=args.seed,
            model_dir=args.model_dir,
            privacy=args.privacy,
        )
    finally:
        con.close()
    imputation, synthesis = result["imputation"], result["synthesis"]
    print(f"model {result['model']} on {result['table']}, {result['rows']} rows")
    print(
        f"imputation ({imputation['hidden_share']:.0%} of cells hidden): "
        f"MAE {imputation['mae']:.3f} (mean/mode {imputation['mean_mode']['mae']:.3f}), accuracy "
        f"{imputation['accuracy']:.3f} (mode {imputation['mean_mode']['accuracy']:.3f})"
    )
    print(
        f"synthesis: shape error {synthesis['shape_error']:.3f}, trend error "
        f"{synthesis['trend_error']:.3f}, detection AUC {synthesis['detection_auc']:.3f}"
    )
    for attack, found in result.get("privacy", {}).get("attacks", {}).items():
        print(
            f"privacy: {attack} attack TPR {found['tpr_at_0.1_fpr']:.3f} at 10% FPR, "
            f"{found['tpr_at_0.01_fpr']:.3f} at 1% FPR (guessing: 0.100, 0.010)"
        )
    print(f"report: {report}")
    return 0


def _demo(args) -> int:
    from .demo import run_demo

    return run_demo(args.data, max_seconds=args.max_seconds, hide=args.hide, seed=args.seed)


if __name__ == "__main__":
    sys.exit(main())
