"""``evaluate``: how good a stored model is on the user's own table, with a report to read.

Imputation is measured by hiding observed cells the model knows (a share of the table's
sample), filling them through the same path SQL uses and scoring against the truth, beside
filling means and modes. Synthesis is measured by sampling as many rows as the sample holds and
comparing them with it: marginals, pair relations, a classifier trying to tell them apart,
distances to the nearest real row, and (given ``target``) a model trained on synthetic rows.
The model was trained on this table, so these are in-sample numbers; the training summary's
``validation_imputation`` is the held-out one.

``privacy=True`` asks what an attacker learns about who is in the table: the model's recipe
(its columns and settings) is trained again on half of the sample, so the other half is known
not to be trained on, and membership-inference attacks are scored on that split
(``privacy.audit``). It needs the ``train`` extra and takes one more training.
"""

from __future__ import annotations

import json
from html import escape
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa

from . import metrics, plots
from .api import load_model, model_name, synthesize
from .encoding import numeric_values
from .privacy import audit
from .runtime import Model
from .settings import make_config
from .source import parse_source

REPORT_SUFFIXES = (".html", ".md")


def evaluate(
    con: duckdb.DuckDBPyConnection,
    table: str,
    model: str | None = None,
    *,
    report: str | Path | None = None,
    rows: int = 5000,
    hide: float = 0.2,
    target: str | None = None,
    seed: int = 0,
    model_dir: str | None = None,
    privacy: bool = False,
) -> dict:
    """Measure model ``model`` (default: the one named after ``table``) on up to ``rows`` rows
    of ``table``; write an HTML or markdown ``report`` if a path is given. Returns the metrics.
    ``privacy=True`` adds membership-inference attacks on a retrained copy (module docstring)."""
    if report is not None and Path(report).suffix not in REPORT_SUFFIXES:
        raise ValueError(
            f"report {str(report)!r} must end in .html or .md (the format is taken from it)"
        )
    if not isinstance(rows, int) or rows < 10:
        raise ValueError(f"rows must be an integer of at least 10, got {rows!r}")
    if not 0 < hide < 1:
        raise ValueError(f"hide must be a share between 0 and 1, got {hide!r}")
    if not isinstance(privacy, bool):
        raise ValueError(f"privacy must be true or false, got {privacy!r}")
    if privacy:
        from .fitting import training_package

        training_package()  # the audit trains: say so before any row is read
    source = parse_source(table)
    name = model_name(model, source)
    fitted = load_model(con, name, model_dir, table=table)
    numeric = [c.name for c in fitted.encoder.numeric_columns]
    categorical = [c.name for c in fitted.encoder.categorical_columns]
    columns = numeric + categorical
    real = (
        source.relation(con)
        .query("__t", f"SELECT * FROM __t USING SAMPLE reservoir({rows} ROWS) REPEATABLE ({seed})")
        .to_arrow_table()
    )
    if target is not None and target not in columns:
        raise ValueError(
            f"target {target!r} is not a column model {name!r} learned; choose one of {columns}"
        )
    result = {"model": name, "table": table, "rows": real.num_rows}
    result["imputation"], scatter = _imputation(fitted, real, numeric, categorical, hide, seed)
    synthetic = synthesize(
        con, name, real.num_rows, seed=seed, model_dir=model_dir
    ).to_arrow_table()
    result["synthesis"] = _synthesis(real, synthetic, columns, target, seed)
    result["validation_imputation"] = fitted.spec["metrics"].get("validation_imputation")
    if privacy:
        result["privacy"] = audit(_refit(fitted, table), real, columns, seed)
    if report is not None:
        figures = _figures(real, synthetic, numeric, categorical, scatter)
        if privacy:
            curves = result["privacy"]["curves"]
            figures["Membership inference: ROC of each attack"] = [
                ("roc", plots.roc("attacks on a retrained copy", curves))
            ]
        write_report(Path(report), result, figures)
        result["report"] = str(report)
    return result


def _refit(fitted: Model, table: str):
    """Train ``fitted``'s recipe (its columns, keys and settings) on other rows: what the
    privacy audit attacks. Nothing is stored."""
    from .fitting import training_package

    config = make_config({**fitted.spec["config"], "progress": False})

    def fit(members: pa.Table) -> Model:
        artifact = training_package().fit_artifact(
            members,
            fitted.columns,
            name=f"{fitted.spec['name']} (privacy audit)",
            source=table,
            config=config,
            source_rows=members.num_rows,
            keys=fitted.spec.get("keys", {}),
        )
        return Model(artifact)

    return fit


def _imputation(fitted, real, numeric, categorical, hide, seed):
    masked, hidden = metrics.hide_cells(real, numeric + categorical, hide, seed)
    filled = pa.Table.from_batches(
        [fitted.impute_batch(batch, seed=seed) for batch in masked.to_batches()],
        schema=masked.schema,
    )
    baseline = metrics.mean_mode_fill(masked, numeric, categorical)
    scores = {
        "hidden_share": hide,
        **metrics.imputation_scores(real, filled, hidden, numeric, categorical),
        "mean_mode": metrics.imputation_scores(real, baseline, hidden, numeric, categorical),
        "columns": {},
    }
    scatter = {}
    for column in numeric + categorical:
        kind = ([column], []) if column in numeric else ([], [column])
        ours = metrics.imputation_scores(real, filled, hidden, *kind)
        base = metrics.imputation_scores(real, baseline, hidden, *kind)
        key = "mae" if column in numeric else "accuracy"
        cells = ours["numeric_cells"] + ours["categorical_cells"]
        scores["columns"][column] = {
            "measure": key,
            "model": ours[key],
            "mean_mode": base[key],
            "cells": cells,
        }
        if column in numeric:
            mask = hidden[column]
            scatter[column] = (
                numeric_values(real.column(column))[mask],
                numeric_values(filled.column(column))[mask],
            )
    return scores, scatter


def _synthesis(real, synthetic, columns, target, seed) -> dict:
    shape = metrics.column_shape_error(real, synthetic, columns)
    trend = metrics.pair_trend_error(real, synthetic, columns)
    out = {
        "rows": synthetic.num_rows,
        "shape_error": float(np.mean(list(shape.values()))),
        "trend_error": float(np.mean(list(trend.values()))) if trend else 0.0,
        "detection_auc": metrics.detection_auc(real, synthetic, columns, seed),
        "nearest_record": metrics.nearest_record_distances(real, synthetic, columns),
        "columns": {
            c: {
                "measure": "KS" if c in shape and metrics.is_numeric(real.column(c).type) else "TV",
                "error": shape[c],
                "real_nulls": real.column(c).null_count / max(real.num_rows, 1),
                "synthetic_nulls": synthetic.column(c).null_count / max(synthetic.num_rows, 1),
            }
            for c in columns
        },
    }
    if target is not None:
        half = real.num_rows // 2
        order = np.random.default_rng(seed).permutation(real.num_rows)
        train, test = real.take(order[:half]), real.take(order[half:])
        out["ml_efficacy"] = metrics.ml_efficacy(train, synthetic, test, columns, target, seed)
    return out


def _figures(real, synthetic, numeric, categorical, scatter) -> dict[str, list[tuple[str, str]]]:
    """Named SVG charts, by section."""
    marginals = []
    for column in numeric:
        svg = plots.histograms(
            column, numeric_values(real.column(column)), numeric_values(synthetic.column(column))
        )
        marginals.append((column, svg))
    for column in categorical:
        _, levels = metrics.category_codes(real.column(column), None)
        levels = levels[:12]
        shares = []
        for table in (real, synthetic):
            codes, _ = metrics.category_codes(table.column(column), levels)
            counts = np.bincount(codes[codes >= 0], minlength=len(levels))
            shares.append(counts / max(table.num_rows, 1))
        marginals.append((column, plots.bars(column, [str(v) for v in levels], *shares)))
    columns = numeric + categorical
    heatmaps = [
        (
            label,
            plots.heatmap(
                f"{label} associations", columns, metrics.association_matrix(table, columns, real)
            ),
        )
        for label, table in (("real", real), ("synthetic", synthetic))
    ]
    scatters = [
        (c, plots.scatter(f"{c}: imputed vs true", *scatter[c]))
        for c in numeric
        if scatter[c][0].size
    ]
    return {
        "Real (blue) and synthetic (orange) distributions": marginals,
        "Column associations (Pearson r between numbers, Cramer's V otherwise)": heatmaps,
        "Hidden cells: imputed (vertical) against true (horizontal)": scatters,
    }


# -- the report ----------------------------------------------------------------------------
def write_report(path: Path, result: dict, figures: dict) -> None:
    """HTML with the charts inline, or markdown with the charts as SVG files beside it."""
    tables = _tables(result)
    if path.suffix == ".html":
        body = [f"<h1>Model {escape(result['model'])} on {escape(result['table'])}</h1>"]
        for title, (header, rows) in tables:
            body.append(f"<h2>{escape(title)}</h2><table><tr>")
            body.append("".join(f"<th>{escape(h)}</th>" for h in header) + "</tr>")
            for row in rows:
                body.append("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in row) + "</tr>")
            body.append("</table>")
        for title, charts in figures.items():
            body.append(f"<h2>{escape(title)}</h2><div>")
            body += [svg for _, svg in charts]
            body.append("</div>")
        numbers = escape(json.dumps(result, indent=2, default=str))
        body.append(f"<details><summary>All numbers (JSON)</summary><pre>{numbers}</pre></details>")
        path.write_text(
            "<!doctype html><html><head><meta charset='utf-8'><title>duckdb-diffusion evaluation"
            "</title><style>body{font-family:sans-serif;max-width:1100px;margin:auto}"
            "table{border-collapse:collapse}td,th{border:1px solid #ccc;padding:3px 8px}"
            "svg{margin:4px}</style></head><body>" + "\n".join(body) + "</body></html>"
        )
        return
    folder = path.with_name(path.stem + "_plots")
    folder.mkdir(parents=True, exist_ok=True)
    lines = [f"# Model {result['model']} on {result['table']}", ""]
    for title, (header, rows) in tables:
        lines += [f"## {title}", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(row) + " |" for row in rows]
        lines.append("")
    for number, (title, charts) in enumerate(figures.items()):
        lines += [f"## {title}", ""]
        for index, (name, svg) in enumerate(charts):
            file = folder / f"{number}-{index}-{_slug(name)}.svg"
            file.write_text(svg)
            lines.append(f"![{name}]({folder.name}/{file.name})")
        lines.append("")
    path.write_text("\n".join(lines))


def _tables(result: dict) -> list[tuple[str, tuple[list[str], list[list[str]]]]]:
    imp, syn = result["imputation"], result["synthesis"]
    summary = [
        ["imputation: MAE, z-scored numeric cells", _f(imp["mae"]), _f(imp["mean_mode"]["mae"])],
        ["imputation: RMSE, z-scored numeric cells", _f(imp["rmse"]), _f(imp["mean_mode"]["rmse"])],
        [
            "imputation: accuracy, categorical cells",
            _f(imp["accuracy"]),
            _f(imp["mean_mode"]["accuracy"]),
        ],
        ["synthesis: column-shape error (mean KS / TV)", _f(syn["shape_error"]), ""],
        ["synthesis: pair-trend error", _f(syn["trend_error"]), ""],
        ["synthesis: detection ROC AUC (0.5: indistinguishable)", _f(syn["detection_auc"]), ""],
        [
            "synthesis: nearest-real-row distance / real-to-real",
            _f(syn["nearest_record"]["ratio"]),
            "",
        ],
        [
            "synthesis: share of exact copies of real rows",
            _f(syn["nearest_record"]["exact_copies"]),
            "",
        ],
    ]
    if "ml_efficacy" in syn:
        eff = syn["ml_efficacy"]
        summary.append(
            [
                f"synthesis: {eff['metric']} predicting {eff['target']}, trained on synthetic "
                "(real-trained beside)",
                _f(eff["synthetic"]),
                _f(eff["real"]),
            ]
        )
    validation = result.get("validation_imputation") or {}
    if validation.get("mae") is not None or validation.get("accuracy") is not None:
        summary.append(
            [
                "held-out validation at training: MAE / accuracy",
                f"{_f(validation.get('mae'))} / {_f(validation.get('accuracy'))}",
                f"{_f(validation.get('mean_mode_mae'))} / "
                f"{_f(validation.get('mean_mode_accuracy'))}",
            ]
        )
    columns = [
        [name, c["measure"], _f(c["model"]), _f(c["mean_mode"]), str(c["cells"])]
        for name, c in imp["columns"].items()
    ]
    marginals = [
        [name, c["measure"], _f(c["error"]), _f(c["real_nulls"]), _f(c["synthetic_nulls"])]
        for name, c in syn["columns"].items()
    ]
    sections = []
    if "privacy" in result:
        sections.append(_privacy_table(result["privacy"]))
    return [
        (
            f"Summary ({result['rows']} rows; {imp['hidden_share']:.0%} of observed cells hidden)",
            (["measure", "model", "mean/mode fill"], summary),
        ),
        (
            "Imputation by column",
            (["column", "measure", "model", "mean/mode fill", "hidden cells"], columns),
        ),
        (
            "Synthesis by column",
            (["column", "measure", "error", "real NULL share", "synthetic NULL share"], marginals),
        ),
        *sections,
    ]


def _privacy_table(found: dict) -> tuple[str, tuple[list[str], list[list[str]]]]:
    rows = [
        [name, _f(a["tpr_at_0.1_fpr"]), _f(a["tpr_at_0.01_fpr"]), _f(a["auc"])]
        for name, a in found["attacks"].items()
    ]
    near = found["nearest_record"]
    rows += [
        ["(guessing)", "0.100", "0.010", "0.500"],
        ["closest-record share (0.5: members not preferred)", _f(found["closest_record_share"])],
        ["nearest-row distance / real-to-real", _f(near["ratio"])],
        ["share of exact copies of members", _f(near["exact_copies"])],
    ]
    rows = [row + [""] * (4 - len(row)) for row in rows]
    title = (
        f"Privacy: membership inference on a copy trained on {found['members']} rows "
        f"({found['challenge_rows']} challenge rows, half members)"
    )
    return title, (["attack", "TPR at 10% FPR", "TPR at 1% FPR", "ROC AUC"], rows)


def _f(value) -> str:
    if value is None or (isinstance(value, float) and value != value):
        return "–"
    return f"{value:.3f}"


def _slug(text: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in text)[:40]
