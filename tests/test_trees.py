"""Boosted trees: the exported TreeEnsembles compute what scikit-learn's trees compute, and
through SQL they impute a categorical column and a numeric column that a rule on other cells
decides."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import onnx
import onnxruntime as ort
import pytest

import duckdb_diffusion as ddf
from duckdb_diffusion.encoding import Encoder
from duckdb_diffusion.schema import PASSTHROUGH, infer_schema
from duckdb_diffusion.training import trees

from .conftest import FAST

RULE_TABLE = """
CREATE TABLE graded AS
SELECT region, score, noise,
       CASE WHEN region IN ('north', 'east') AND score > 0.2 THEN 'A'
            WHEN region = 'south' THEN 'B' ELSE 'C' END AS grade
FROM (
    SELECT ['north', 'south', 'east', 'west', 'centre'][1 + (hash(i) % 5)::INT] AS region,
           (hash(i * 7) % 1000) / 500.0 - 1.0 AS score,
           (hash(i * 13) % 1000) / 1000.0 AS noise
    FROM range(2500) t(i)
)
"""


@pytest.fixture
def graded():
    con = duckdb.connect()
    con.execute(RULE_TABLE)
    con.execute("ALTER TABLE graded ADD COLUMN truth VARCHAR")
    con.execute("UPDATE graded SET truth = grade")
    con.execute("UPDATE graded SET grade = NULL WHERE hash(score) % 5 = 0")
    con.execute("UPDATE graded SET region = NULL WHERE hash(noise) % 10 = 0")
    yield con
    con.close()


def _encoded(con):
    relation = con.sql("SELECT region, score, noise, grade FROM graded")
    specs = [s for s in infer_schema(relation) if s.kind != PASSTHROUGH]
    table = relation.to_arrow_table()
    encoder = Encoder.fit(table, specs)
    return encoder, encoder.encode(table)


def test_exported_trees_compute_what_scikit_learn_computes(graded):
    encoder, e = _encoded(graded)
    sizes = encoder.category_sizes
    rows = np.arange(len(e.num))
    fitted, summary = trees.fit_trees(e.num, e.cat, e.mask, sizes, rows[300:], rows[:300], 30, 0)
    assert {t.column for t in fitted} == set(range(len(sizes)))  # region and grade
    assert all(r > 0 for r in summary["rounds"].values())
    graph = trees.trees_graph(fitted, e.num.shape[1], sizes)
    onnx.checker.check_model(graph, full_check=True)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])

    num, cat, mask = e.num.copy(), e.cat.copy(), e.mask.copy()
    # a level the trees never saw (the rare bucket): scikit-learn routes it as missing
    cat[:50, 0] = sizes[0] - 1
    for batch in (slice(0, 400), slice(400, 401)):  # the second: no NULL grade to fill
        feeds = {"num": num[batch], "cat": cat[batch], "mask": mask[batch]}
        got = session.run(None, feeds)[0]
        want = trees.margins(fitted, trees.features(**feeds), sizes)
        np.testing.assert_allclose(got, want, atol=1e-4)


def test_sql_imputation_learns_a_rule_on_other_cells(graded):
    graded.execute("CREATE TABLE rules AS SELECT region, score, noise, grade FROM graded")
    summary = ddf.train(graded, "rules", **FAST)
    chosen = summary["metrics"]["trees"]
    assert chosen["rounds"]
    graph = onnx.load_from_string(ddf.load_model(graded, "rules").artifact.graphs["impute"])
    ensembles = [n for n in graph.graph.node if n.op_type == "TreeEnsemble"]
    kept = sum(r > 0 for r in {**chosen["rounds"], **chosen.get("kept_rounds", {})}.values())
    numeric = [w for w in chosen.get("weights", {}).values() if w > 0]
    assert len(ensembles) == kept + len(numeric)  # trees cut to nothing are not in it

    assert _rule_accuracy(graded, "rules") > 0.95


def _rule_accuracy(con, model: str) -> float:
    """Imputes ``graded`` through SQL with ``model``: every observed cell kept, every NULL
    filled; -> the accuracy on the NULL grades whose region is known (the rule's input)."""
    ddf.install(con)
    filled = con.execute(
        "SELECT i.grade, g.grade, g.truth, g.region IS NOT NULL "
        f"FROM impute_latent_diffusion('{model}') i POSITIONAL JOIN graded g"
    ).fetchall()
    assert all(got == given for got, given, _, _ in filled if given is not None)
    assert all(got is not None for got, *_ in filled)
    hidden = [(got, truth) for got, given, truth, known in filled if given is None and known]
    assert len(hidden) > 300
    return float(np.mean([got == truth for got, truth in hidden]))


def test_trees_skipped_where_the_predictor_is_sure_still_impute_the_rule(graded, monkeypatch):
    # small enough a table that every chosen cut and gate is made on few cells
    monkeypatch.setattr(trees, "ROUNDS_MIN_CELLS", 50)
    monkeypatch.setattr(trees, "GATE_MIN_SHARE", 0.0)
    graded.execute("CREATE TABLE gated AS SELECT region, score, noise, grade FROM graded")
    summary = ddf.train(graded, "gated", **FAST)
    gates = summary["metrics"]["trees"]["gates"]
    assert gates and all(level in trees.GATE_LEVELS for level in gates.values())
    assert summary["metrics"]["onnx_check"]["impute"]["category_agreement"] == 1.0
    model = ddf.load_model(graded, "gated")
    graph = onnx.load_from_string(model.artifact.graphs["impute"])
    onnx.checker.check_model(graph, full_check=True)
    assert [i.name for i in graph.graph.input] == ["num", "cat", "mask"]
    assert [o.name for o in graph.graph.output] == ["num_out", "cat_out"]
    assert any(trees.SURE in node.input for node in graph.graph.node)

    assert _rule_accuracy(graded, "gated") > 0.95


def test_category_trees_can_be_turned_off(graded):
    graded.execute("CREATE TABLE plain AS SELECT region, score, grade FROM graded")
    off = {"category_trees": False, "numeric_trees": False}
    summary = ddf.train(graded, "plain", **{**FAST, "max_seconds": 4, **off})
    assert "trees" not in summary["metrics"]
    graph = onnx.load_from_string(ddf.load_model(graded, "plain").artifact.graphs["impute"])
    assert not any(n.op_type == "TreeEnsemble" for n in graph.graph.node)
    ddf.install(graded)
    count = graded.execute(
        "SELECT count(*) FROM impute_latent_diffusion('plain') WHERE grade IS NULL"
    ).fetchall()
    assert count == [(0,)]


def test_no_time_left_means_no_trees_and_training_goes_on(graded):
    encoder, e = _encoded(graded)
    rows = np.arange(len(e.num))
    fitted, summary = trees.fit_trees(
        e.num, e.cat, e.mask, encoder.category_sizes, rows[300:], rows[:300], 0.0, 0
    )
    assert fitted == [] and summary["rounds"] == {}
    # the budget running out between columns, before a column's first round
    from sklearn.ensemble import HistGradientBoostingClassifier

    unfitted = HistGradientBoostingClassifier(max_iter=0, warm_start=True)
    assert trees._boost(unfitted, e.num, e.cat[:, 0], rows, rows[:300], deadline=0.0) == 0
    graded.execute("CREATE TABLE hurried AS SELECT region, score, grade FROM graded")
    ddf.train(graded, "hurried", **{**FAST, "max_seconds": 2, "tree_share": 0.0})
    ddf.install(graded)
    count = graded.execute(
        "SELECT count(*) FROM impute_latent_diffusion('hurried') WHERE grade IS NULL"
    ).fetchall()
    assert count == [(0,)]


def test_trees_that_cannot_be_exported_are_dropped_with_a_warning(graded, monkeypatch, caplog):
    """A scikit-learn whose private tree arrays changed must not stop training: the model is
    stored without the trees, and says why."""

    def changed_layout(*args, **kwargs):
        raise AttributeError(
            "'HistGradientBoostingClassifier' object has no attribute '_predictors'"
        )

    monkeypatch.setattr(trees, "attach", changed_layout)
    graded.execute("CREATE TABLE fragile AS SELECT region, score, grade FROM graded")
    ddf.install(graded)
    settings = json.dumps({**FAST, "max_seconds": 4})
    with caplog.at_level("WARNING", logger="duckdb_diffusion"):
        graded.execute(
            "SELECT * FROM train_latent_diffusion('fragile', settings := ?)", [settings]
        ).fetchall()
    assert "boosted trees could not be exported" in caplog.text
    (dropped,) = graded.execute(
        "SELECT metrics->>'$.trees.dropped' FROM latent_diffusion_models() WHERE name = 'fragile'"
    ).fetchall()[0]
    assert "_predictors" in dropped
    graph = onnx.load_from_string(ddf.load_model(graded, "fragile").artifact.graphs["impute"])
    assert not any(n.op_type == "TreeEnsemble" for n in graph.graph.node)
    count = graded.execute(
        "SELECT count(*) FROM impute_latent_diffusion('fragile') WHERE grade IS NULL"
    ).fetchall()
    assert count == [(0,)]


NUMERIC_RULE = """
CREATE TABLE priced AS
SELECT region, size, noise,
       CASE WHEN region IN ('north', 'east') THEN 100.0 + 2 * size ELSE 20.0 END
           + noise AS price
FROM (
    SELECT ['north', 'south', 'east', 'west', 'centre'][1 + (hash(i) % 5)::INT] AS region,
           (hash(i * 7) % 1000) / 20.0 AS size,
           (hash(i * 13) % 1000) / 1000.0 AS noise
    FROM range(2500) t(i)
)
"""


def test_numeric_trees_export_and_impute_a_rule_through_sql():
    """A price decided by a step on a category and a line in a number: absolute-error trees
    find it, the exported graph computes what scikit-learn computes, the blend weight comes
    from validation cells, and SQL imputes hidden prices close to the truth."""
    con = duckdb.connect()
    con.execute(NUMERIC_RULE)
    con.execute("CREATE TABLE truth AS SELECT * FROM priced")
    con.execute("UPDATE priced SET price = NULL WHERE hash(size + noise) % 5 = 0")
    relation = con.sql("SELECT region, size, noise, price FROM priced")
    specs = [s for s in infer_schema(relation) if s.kind != PASSTHROUGH]
    encoder = Encoder.fit(relation.to_arrow_table(), specs)
    e = encoder.encode(relation.to_arrow_table())
    rows = np.arange(len(e.num))
    sizes = encoder.category_sizes
    fitted, summary = trees.fit_trees(
        e.num, e.cat, e.mask, sizes, rows[300:], rows[:300], 30, 0, numeric=True
    )
    assert {t.column for t in fitted if t.numeric} >= {2}  # price (and maybe the others)
    assert summary["numeric_rounds"]["2"] > 0
    session = ort.InferenceSession(
        trees.trees_graph(fitted, e.num.shape[1], sizes).SerializeToString(),
        providers=["CPUExecutionProvider"],
    )
    feeds = {"num": e.num[:400], "cat": e.cat[:400], "mask": e.mask[:400]}
    got = session.run([trees.MEDIANS], feeds)[0]
    want = trees.medians(fitted, trees.features(**feeds), e.num.shape[1])
    np.testing.assert_allclose(got, want, atol=1e-4)

    # epochs, not the clock, end the networks, and the trees' share of the budget is ample:
    # on a busy machine a tenth of 12 s ran out before the price column
    settings = {"max_seconds": 120, "vae_epochs": 20, "diffusion_epochs": 40}
    summary = ddf.train(con, "priced", **{**FAST, **settings})
    weights = summary["metrics"]["trees"]["weights"]
    assert set(weights) >= {"2"} and all(0.0 <= w <= 1.0 for w in weights.values())
    ddf.install(con)
    pairs = con.execute(
        "SELECT i.price, p.price, t.price FROM impute_latent_diffusion('priced') i "
        "POSITIONAL JOIN priced p POSITIONAL JOIN truth t"
    ).fetchall()
    assert all(got == given for got, given, _ in pairs if given is not None)
    hidden = np.array([(got, truth) for got, given, truth in pairs if given is None])
    assert len(hidden) > 300
    # the price spread is ~60: a fill that missed the rule would be off by tens
    assert np.median(np.abs(hidden[:, 0] - hidden[:, 1])) < 5.0
    con.close()


def test_category_rounds_keep_what_the_product_needs(graded):
    """Rounds are cut to where the product with the predictor stops gaining accuracy, and a
    column whose trees add nothing to the predictor loses them."""
    encoder, e = _encoded(graded)
    sizes = encoder.category_sizes
    rows = np.arange(len(e.num))
    fitted, summary = trees.fit_trees(e.num, e.cat, e.mask, sizes, rows[600:], rows[:600], 30, 0)
    grade = next(t for t in fitted if t.column == 1)
    fitted_rounds = len(grade.classifier._predictors)
    check = np.tile(rows[:600], 10)  # enough cells (ROUNDS_MIN_CELLS) for a cut
    known = e.mask[check, e.num.shape[1] :] > 0
    hidden = np.zeros_like(known)
    hidden[:3000, 1] = known[:3000, 1]  # grade, with region given
    hidden[3000:, 0] = known[3000:, 0]  # region, with grade given
    cond = e.mask[check].copy()
    cond[:, e.num.shape[1] :][hidden] = 0
    x = trees.features(e.num[check], e.cat[check], cond)
    truth = e.cat[check]
    # a predictor that knows region exactly and nothing of grade
    region = np.full((len(check), sizes[0]), -5.0, np.float32)
    region[np.arange(len(check)), truth[:, 0]] = 5.0
    logits = [region, np.zeros((len(check), sizes[1]), np.float32)]
    few = slice(0, 600)  # a small table's validation cells cannot tell rounds apart
    assert (
        trees.category_rounds(fitted, x[few], [lg[few] for lg in logits], truth[few], hidden[few])
        == {}
    )
    assert len(grade.classifier._predictors) == fitted_rounds
    kept = trees.category_rounds(fitted, x, logits, truth, hidden)
    assert kept["0"] == 0 and all(t.column != 0 for t in fitted)  # region: dropped
    assert 0 < kept["1"] <= fitted_rounds and len(grade.classifier._predictors) == kept["1"]
    # what is kept is as accurate, within the tolerance, as the rounds fitted
    picked = trees.margins(fitted, x, sizes)[:, sizes[0] :].argmax(1)
    accuracy = (picked == truth[:, 1])[hidden[:, 1]].mean()
    assert accuracy > 0.95


def test_category_rounds_cut_the_trees_of_levels_the_predictor_knows(graded):
    """Where the predictor alone tells the rarest grade apart, that level's trees are cut
    (every round walks a tree per level kept), the level keeps its starting log-odds, and the
    exported graph still computes what scikit-learn's kept trees compute."""
    encoder, e = _encoded(graded)
    sizes = encoder.category_sizes
    rows = np.arange(len(e.num))
    fitted, _ = trees.fit_trees(e.num, e.cat, e.mask, sizes, rows[600:], rows[:600], 30, 0)
    grade = next(t for t in fitted if t.column == 1)
    classes = grade.classifier.classes_.astype(int)
    assert len(classes) == 3  # a tree per level and round
    check = np.tile(rows[:600], 10)
    known = e.mask[check, e.num.shape[1] :] > 0
    hidden = np.zeros_like(known)
    hidden[:, 1] = known[:, 1]
    cond = e.mask[check].copy()
    cond[:, e.num.shape[1] :][hidden] = 0
    x = trees.features(e.num[check], e.cat[check], cond)
    truth = e.cat[check]
    rarest = classes[-1]
    # a predictor sure of the rarest grade where it is the truth, unsure of the others
    knows = np.zeros((len(check), sizes[1]), np.float32)
    knows[truth[:, 1] == rarest, rarest] = 20.0
    knows[truth[:, 1] != rarest, rarest] = -20.0
    logits = [np.zeros((len(check), sizes[0]), np.float32), knows]
    trees.category_rounds(fitted, x, logits, truth, hidden)
    assert rarest in grade.dropped and len(grade.dropped) < len(classes)
    net = knows - np.log(np.exp(knows).sum(1, keepdims=True))
    product = net + trees.margins(fitted, x, sizes)[:, sizes[0] :]
    assert (product.argmax(1) == truth[:, 1])[hidden[:, 1]].mean() > 0.95
    # where the predictor is sure it is right: its choice stands without the trees there
    assert grade.confident is not None

    graph = trees.trees_graph(fitted, e.num.shape[1], sizes)
    session = ort.InferenceSession(graph.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = {"num": e.num[:400], "cat": e.cat[:400], "mask": e.mask[:400]}
    sure = np.zeros((400, len(sizes)), bool)
    sure[:, 1] = np.random.default_rng(0).random(400) < 0.5
    got = session.run([trees.MARGINS], {**feeds, trees.SURE: sure})[0]
    want = trees.margins(fitted, trees.features(**feeds), sizes)
    # rows where the predictor is sure are not walked: they keep the starting values
    start = trees.margins(
        fitted, trees.features(**{**feeds, "mask": np.ones_like(e.mask[:400])}), sizes
    )
    want[sure[:, 1], sizes[0] :] = start[sure[:, 1], sizes[0] :]
    assert (~sure[:, 1] & (e.mask[:400, e.num.shape[1] + 1] == 0)).any()
    np.testing.assert_allclose(got, want, atol=1e-4)
