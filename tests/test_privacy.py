"""Membership inference: the attacks on cases with known answers, and the privacy audit through
``evaluate`` and the command line."""

from __future__ import annotations

import json
import re

import duckdb
import numpy as np
import pyarrow as pa
import pytest

import duckdb_diffusion as ddf
from duckdb_diffusion import privacy
from duckdb_diffusion.encoding import NumericTransform
from duckdb_diffusion.registry import DatabaseRegistry

from .conftest import data_file
from .test_cli import cli


def test_tpr_at_fpr_takes_ties_together_and_the_best_threshold():
    member = np.array([1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0], bool)
    scores = np.array([9, 8, 3, 3, 7, 3, 2, 2, 1, 1, 1, 0, 0, 0], float)
    false_pos, true_pos = privacy.roc_curve(scores, member)
    assert false_pos[-1] == 1 and true_pos[-1] == 1
    # Above 7 only the two members: TPR 0.5 at FPR 0. Taking 7 adds one of ten non-members.
    assert privacy.tpr_at_fpr(scores, member, 0.0) == 0.5
    assert privacy.tpr_at_fpr(scores, member, 0.1) == 0.5
    # The tie at 3 takes two members and one non-member at once: FPR 0.2, TPR 1.
    assert privacy.tpr_at_fpr(scores, member, 0.2) == 1.0
    assert privacy.attack_summary(-scores, member)["auc"] < 0.5


@pytest.fixture(scope="module")
def population():
    """California rows split into members, non-members and reference rows."""
    table = pa.Table.from_batches(
        ddf.connect()
        .sql(f"SELECT * FROM read_parquet('{data_file('california')}') LIMIT 3000")
        .arrow()
    )
    order = np.random.default_rng(0).permutation(table.num_rows)
    members, outsiders, reference = (table.take(order[k::3]) for k in range(3))
    challenge = pa.concat_tables([members.slice(0, 500), outsiders.slice(0, 500)])
    member = np.r_[np.ones(500, bool), np.zeros(500, bool)]
    return members, outsiders, reference, challenge, member, table.column_names


def test_releasing_the_members_is_caught_by_every_black_box_attack(population):
    members, _, reference, challenge, member, columns = population
    scores = privacy.black_box_scores(challenge, members, reference, columns)
    for name, found in scores.items():
        summary = privacy.attack_summary(found, member)
        assert summary["tpr_at_0.01_fpr"] > 0.9, name  # a copy of each member is released


def test_rows_that_share_no_member_reveal_nothing(population):
    members, outsiders, reference, challenge, member, columns = population
    independent = outsiders.slice(500)  # same population, neither members nor challenge rows
    scores = privacy.black_box_scores(challenge, independent, reference, columns)
    for name, found in scores.items():
        summary = privacy.attack_summary(found, member)
        assert summary["tpr_at_0.1_fpr"] < 0.18, name
        assert 0.43 < summary["auc"] < 0.57, name


def test_python_evaluate_audits_privacy_on_a_retrained_copy(housing, tmp_path):
    report = tmp_path / "report.html"
    result = ddf.evaluate(housing, "housing", rows=1200, privacy=True, report=report)
    audit = result["privacy"]
    assert audit["members"] == 600 and audit["challenge_rows"] == 600
    assert set(audit["attacks"]) == set(privacy.ATTACKS)
    for found in audit["attacks"].values():
        assert 0 <= found["tpr_at_0.01_fpr"] <= found["tpr_at_0.1_fpr"] <= 1
        assert 0.3 < found["auc"] < 0.8  # a real model on real rows: near guessing
    assert 0.3 < audit["closest_record_share"] < 0.7
    assert audit["nearest_record"]["exact_copies"] < 0.05
    html = report.read_text()
    assert "Privacy: membership inference on a copy trained on 600 rows" in html
    assert "attacks on a retrained copy" in html  # the ROC chart
    assert [m["name"] for m in ddf.models(housing)] == ["housing"]  # the copy is not stored


def test_cli_evaluate_privacy_prints_each_attack(housing_db, tmp_path):
    report = tmp_path / "housing.md"
    done = cli(
        "evaluate", str(housing_db), "housing", "--rows", "800", "--privacy", "--report",
        str(report),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    found = re.findall(r"privacy: (\w+) attack TPR ([\d.]+) at 10% FPR", done.stdout)
    assert {name for name, _ in found} == set(privacy.ATTACKS)
    assert all(0 <= float(tpr) <= 1 for _, tpr in found)
    assert "## Privacy: membership inference" in report.read_text()


TINY = {"width": 32, "predictor_width": 32, "depth": 1, "vae_hidden": 16, "sampling_steps": 2}


@pytest.fixture
def small(tmp_path):
    con = ddf.connect(str(tmp_path / "small.duckdb"))
    con.execute(
        "CREATE TABLE t AS SELECT * FROM read_parquet(?) LIMIT 600", [data_file("california")]
    )
    con.execute("UPDATE t SET median_income = NULL WHERE households % 5 = 0")
    yield con
    con.close()


def test_differentially_private_training_through_sql_stores_the_epsilon_spent(small):
    [(name,)] = small.execute(
        "SELECT name FROM train_latent_diffusion('t', epsilon := 4, max_seconds := 120, "
        "settings := ?)",
        [json.dumps(TINY)],
    ).fetchall()
    assert name == "t"
    [(metrics,)] = small.execute("SELECT metrics FROM latent_diffusion_models()").fetchall()
    metrics = json.loads(metrics)
    spent = metrics["privacy"]
    assert metrics["diffusion"]["stopped_by"] == "planned steps"
    assert spent["target_epsilon"] == 4 and 3.9 < spent["epsilon"] <= 4.0  # what was asked
    assert spent["delta"] == pytest.approx(1 / (10 * 540))  # 1 / (10 x training rows)
    assert spent["steps"] == spent["planned_steps"] > 0 and spent["noise_multiplier"] > 0.5
    assert "trees" not in metrics  # no private training for the boosted trees: left out
    # nor 8-bit copies, whose input ranges would be read off the rows without noise
    assert set(ddf.load_model(small, "t").artifact.graphs) == {"impute", "synthesize"}
    filled = small.sql("SELECT median_income FROM impute_latent_diffusion('t')").fetchall()
    assert len(filled) == 600 and all(v is not None for (v,) in filled)
    rows = small.sql("SELECT * FROM synthesize_rows('t', 200, seed := 1)").fetchall()
    assert len(rows) == 200


def test_epsilon_errors_name_the_parameter(small):
    with pytest.raises(duckdb.Error, match="setting epsilon must be a number in"):
        small.execute("SELECT * FROM train_latent_diffusion('t', epsilon := -1)").fetchall()
    with pytest.raises(duckdb.Error, match="parameter delta must be a number"):
        small.execute(
            "SELECT * FROM train_latent_diffusion('t', epsilon := 1, delta := 'x')"
        ).fetchall()
    with pytest.raises(ValueError, match="setting delta must be a number in"):
        ddf.train(small, "t", epsilon=1.0, delta=0.5)
    assert ddf.models(small) == []  # nothing trained, nothing stored


def test_rare_levels_and_extreme_values_are_never_stored_or_emitted(tmp_path):
    """A level three rows hold and one row's outlying value: the model learns neither, never
    synthesizes or imputes them, and its stored spec does not hold them."""
    con = ddf.connect(str(tmp_path / "rare.duckdb"))
    con.execute(
        "CREATE TABLE t AS SELECT median_income, housing_median_age, "
        "CASE WHEN row_number() OVER () <= 3 THEN 'Atlantis' ELSE ocean_proximity END AS place, "
        # An even-valued count with one odd value three rows hold: a discrete rare value.
        "CASE WHEN row_number() OVER () BETWEEN 4 AND 6 THEN 25 "
        "ELSE housing_median_age::INTEGER // 2 * 2 END AS age_even "
        "FROM read_parquet(?) LIMIT 1500",
        [data_file("california")],
    )
    con.execute("UPDATE t SET median_income = 987654.5 WHERE place = 'Atlantis' AND rowid = 0")
    con.execute("UPDATE t SET place = NULL WHERE rowid % 7 = 3")
    con.execute("UPDATE t SET median_income = NULL WHERE rowid % 11 = 4")
    con.execute("UPDATE t SET age_even = NULL WHERE rowid % 13 = 5")
    [(fifth_largest,)] = con.sql(
        "SELECT median_income FROM t WHERE median_income IS NOT NULL "
        "ORDER BY median_income DESC LIMIT 1 OFFSET 4"
    ).fetchall()
    ddf.train(con, "t", max_seconds=15, progress=False, **TINY)
    spec = DatabaseRegistry(con).load("t").spec
    assert "Atlantis" not in json.dumps(spec) and "987654" not in json.dumps(spec)
    made = con.sql("SELECT * FROM synthesize_rows('t', 5000, seed := 2)").to_arrow_table()
    assert "Atlantis" not in made.column("place").to_pylist()
    assert 25 not in made.column("age_even").to_pylist()
    assert max(v for v in made.column("median_income").to_pylist() if v is not None) <= (
        fifth_largest
    )
    filled = con.sql("SELECT * FROM impute_latent_diffusion('t')").to_arrow_table()
    hidden = con.sql("SELECT place IS NULL AS p FROM t").to_arrow_table().column("p").to_pylist()
    imputed = [v for v, h in zip(filled.column("place").to_pylist(), hidden, strict=True) if h]
    assert imputed and "Atlantis" not in imputed
    # The observed 25s stay as they are; no NULL is filled with one.
    odd = "SELECT count(*) FROM {} WHERE age_even % 2 = 1"
    observed = con.sql(odd.format("t")).fetchall()
    assert (
        observed[0][0] > 0
        and con.sql(odd.format("impute_latent_diffusion('t')")).fetchall() == observed
    )
    con.close()


def _decoded_near(decoded: np.ndarray, points: np.ndarray, width: float = 0.002) -> float:
    """How many of the sorted ``decoded`` values lie within ``width`` of each point, on average."""
    upper = np.searchsorted(decoded, points + width)
    return (upper - np.searchsorted(decoded, points - width)).mean()


def test_continuous_columns_do_not_decode_to_a_peak_at_each_training_value():
    """Knots at every training value made decoded values crowd around the training rows (a row
    borders its own gaps; a new value falls in a larger one): the density near members came out
    twice the density near fresh rows of the same population. Quantile knots remove that."""
    ratios = []
    for seed in range(5):
        rng = np.random.default_rng(seed)
        members, fresh = rng.lognormal(size=300), rng.lognormal(size=300)
        transform = NumericTransform.fit(members, integral=False)
        decoded = np.sort(transform.inverse(rng.standard_normal(400_000)))
        ratios.append(_decoded_near(decoded, members) / _decoded_near(decoded, fresh))
    assert np.mean(ratios) < 1.35, ratios  # 2.1-2.3 with a knot at every training value


def test_memorisation_is_reported_and_dropout_through_sql_lowers_it(tmp_path):
    """A small table trained for many epochs: the denoiser's loss on its training rows pulls
    below its loss on held-out rows, and the model list reports by how much; dropout (a SQL
    setting) makes the denoiser learn its own rows less."""
    con = ddf.connect(str(tmp_path / "small.duckdb"))
    con.execute("CREATE TABLE t AS SELECT * FROM read_parquet(?) LIMIT 600", [data_file("default")])
    gaps = []
    for dropout in (0.0, 0.3):
        settings = {**TINY, "width": 96, "depth": 2, "diffusion_epochs": 300, "dropout": dropout}
        name = f"dropout_{int(dropout * 10)}"
        con.execute(
            "SELECT * FROM train_latent_diffusion('t', model := ?, max_seconds := 400, "
            "settings := ?)",
            [name, json.dumps(settings)],
        ).fetchall()
        [(gap,)] = con.sql(
            "SELECT (metrics->>'$.diffusion.memorisation')::DOUBLE "
            f"FROM latent_diffusion_models() WHERE name = '{name}'"
        ).fetchall()
        gaps.append(gap)
    assert gaps[0] > 0.01 and gaps[1] < gaps[0], gaps
    con.close()
