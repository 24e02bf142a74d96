"""``evaluate`` through its doors: the command line writing an HTML report, the Python API
writing markdown with SVG files, and its errors."""

from __future__ import annotations

import re

import pytest

import duckdb_diffusion as ddf

from .test_cli import cli


def test_cli_evaluate_writes_an_html_report(housing_db, tmp_path):
    report = tmp_path / "housing.html"
    done = cli("evaluate", str(housing_db), "housing", "--report", str(report), "--rows", "800")
    assert done.returncode == 0, done.stderr
    assert "model housing on housing, 800 rows" in done.stdout
    mae, baseline = map(
        float, re.search(r"MAE ([\d.]+) \(mean/mode ([\d.]+)\)", done.stdout).groups()
    )
    assert mae < baseline
    html = report.read_text()
    assert html.startswith("<!doctype html>")
    # the metric table, and one chart per modelled column, two heatmaps, a scatter per number
    assert "detection ROC AUC" in html and "Imputation by column" in html
    assert html.count("<svg") == 10 + 2 + 9
    assert ">total_bedrooms: imputed vs true<" in html


def test_python_evaluate_returns_metrics_and_writes_markdown(housing, tmp_path):
    report = tmp_path / "report.md"
    result = ddf.evaluate(housing, "housing", report=report, rows=600, target="ocean_proximity")
    assert result["rows"] == 600
    imputation, synthesis = result["imputation"], result["synthesis"]
    assert imputation["mae"] < imputation["mean_mode"]["mae"]
    assert set(imputation["columns"]) == set(synthesis["columns"])
    assert "house_id" not in imputation["columns"]  # a passed-through key is not judged
    assert 0 <= synthesis["shape_error"] < 0.5 and 0 <= synthesis["trend_error"] < 0.5
    assert 0.5 <= synthesis["detection_auc"] <= 1
    assert synthesis["nearest_record"]["exact_copies"] < 0.05
    efficacy = synthesis["ml_efficacy"]
    # ocean proximity follows from longitude and latitude: real rows predict it well; how well
    # synthetic rows do depends on the (seconds-long) test model, so only its range is checked
    assert efficacy["metric"] == "accuracy" and efficacy["real"] > 0.8
    assert 0 <= efficacy["synthetic"] <= 1
    text = report.read_text()
    assert "| imputation: MAE, z-scored numeric cells |" in text
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert len(images) == 10 + 2 + 9
    for image in images:
        assert (tmp_path / image).read_text().startswith("<svg")


def test_evaluate_errors_name_the_parameter(housing, tmp_path):
    with pytest.raises(ValueError, match=r"report '.*x\.pdf' must end in \.html or \.md"):
        ddf.evaluate(housing, "housing", report=tmp_path / "x.pdf")
    with pytest.raises(ValueError, match="target 'house_id' is not a column model 'housing'"):
        ddf.evaluate(housing, "housing", target="house_id")
    with pytest.raises(ValueError, match="rows must be an integer of at least 10"):
        ddf.evaluate(housing, "housing", rows=3)
    with pytest.raises(ddf.ModelNotFoundError, match="no model named 'nope'"):
        ddf.evaluate(housing, "housing", model="nope")
    assert not list(tmp_path.iterdir())
