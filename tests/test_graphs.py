"""What the two stored graphs compute, and that models stored before the point predictor (an
``impute`` graph that samples, a ``synthesize`` graph that takes noise only) still work."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import duckdb_diffusion as ddf
from duckdb_diffusion.artifact import Artifact
from duckdb_diffusion.registry import DatabaseRegistry
from duckdb_diffusion.runtime import Model

from .conftest import FAST


def test_point_graph_takes_no_noise_and_sampler_takes_a_mask(housing):
    model = ddf.load_model(housing, "housing")
    inputs = {g: {i.name for i in model.session(g).get_inputs()} for g in ("impute", "synthesize")}
    assert inputs["impute"] == {"num", "cat", "mask"}
    assert inputs["synthesize"] == {"num", "cat", "mask", "noise"}
    # one network evaluation for the point estimate (a layer norm per block and one at the
    # end), sampling_steps for the sampler
    norms = {
        g: sum(n.op_type == "LayerNormalization" for n in graph.node)
        for g, graph in ((g, onnx.load_from_string(model.artifact.graphs[g]).graph) for g in inputs)
    }
    assert norms["impute"] == FAST["depth"] + 1
    assert norms["synthesize"] == FAST["sampling_steps"] * (FAST["depth"] + 1)


def test_draws_sample_the_posterior_and_keep_observed_cells(housing):
    ddf.install(housing)
    point = housing.sql("SELECT * FROM impute_latent_diffusion('housing')").to_arrow_table()
    again = housing.sql("SELECT * FROM impute_latent_diffusion('housing')").to_arrow_table()
    drawn = housing.sql(
        "SELECT * FROM impute_latent_diffusion('housing', draws := 1, seed := 3)"
    ).to_arrow_table()
    original = housing.sql("SELECT * FROM housing").to_arrow_table()
    assert point.equals(again)
    missing = original.column("total_bedrooms").is_null().to_numpy(zero_copy_only=False)
    a = point.column("total_bedrooms").to_numpy()[missing]
    b = drawn.column("total_bedrooms").to_numpy()[missing]
    assert np.mean(a != b) > 0.5  # a random draw is not the point estimate
    kept = ~missing
    assert np.array_equal(
        drawn.column("total_bedrooms").to_numpy()[kept],
        original.column("total_bedrooms").to_numpy(zero_copy_only=False)[kept],
    )


def _without_inputs(graph: bytes, zeros: dict[str, tuple[int, int]]) -> bytes:
    """``graph`` with the named inputs replaced by zeros of [batch, width], the batch read from
    the ``noise`` input: the signature ``synthesize`` had before it took a mask."""
    model = onnx.load_from_string(graph)
    kept = [i for i in model.graph.input if i.name not in zeros]
    del model.graph.input[:]
    model.graph.input.extend(kept)
    nodes = [
        helper.make_node("Shape", ["noise"], ["__shape"]),
        helper.make_node("Slice", ["__shape", "__zero", "__one"], ["__rows"]),
    ]
    constants = [
        helper.make_tensor("__zero", TensorProto.INT64, [1], [0]),
        helper.make_tensor("__one", TensorProto.INT64, [1], [1]),
    ]
    for name, (width, dtype) in zeros.items():
        constants.append(helper.make_tensor(f"__{name}_width", TensorProto.INT64, [1], [width]))
        nodes.append(
            helper.make_node("Concat", ["__rows", f"__{name}_width"], [f"__{name}_shape"], axis=0)
        )
        nodes.append(
            helper.make_node(
                "ConstantOfShape",
                [f"__{name}_shape"],
                [name],
                value=helper.make_tensor("v", dtype, [1], [0]),
            )
        )
    model.graph.initializer.extend(constants)
    old = list(model.graph.node)
    del model.graph.node[:]
    model.graph.node.extend([*nodes, *old])
    return model.SerializeToString()


def test_models_stored_before_the_point_predictor_still_impute_and_synthesize(tmp_path, housing):
    current = ddf.load_model(housing, "housing")
    sampler = current.artifact.graphs["synthesize"]
    n_numeric = len(current.encoder.numeric)
    n_categorical = len(current.encoder.vocabularies)
    old_synthesize = _without_inputs(
        sampler,
        {
            "num": (n_numeric, TensorProto.FLOAT),
            "cat": (n_categorical, TensorProto.INT64),
            "mask": (n_numeric + n_categorical, TensorProto.FLOAT),
        },
    )
    spec = {**current.spec, "name": "housing_old"}
    spec.pop("graphs", None)
    old = Artifact.create(spec, {"impute": sampler, "synthesize": old_synthesize})
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.register("source", housing.sql("SELECT * FROM housing").to_arrow_table())
    con.execute("CREATE TABLE housing_old AS SELECT * FROM source")
    DatabaseRegistry(con).save(old)
    ddf.install(con)
    original = con.sql("SELECT * FROM housing_old").to_arrow_table()
    for draws in (0, 2):
        filled = con.sql(
            f"SELECT * FROM impute_latent_diffusion('housing_old', draws := {draws})"
        ).to_arrow_table()
        assert filled.num_rows == original.num_rows
        for name in ("total_bedrooms", "median_income", "ocean_proximity"):
            assert filled.column(name).null_count == 0
    synthetic = con.sql("SELECT * FROM synthesize_rows('housing_old', 300)").to_arrow_table()
    assert synthetic.num_rows == 300 and synthetic.schema == original.schema
    con.close()


@pytest.mark.filterwarnings("ignore:Specified provider 'CUDAExecutionProvider'")
def test_cuda_that_cannot_load_falls_back_to_cpu_and_says_so(housing, monkeypatch, caplog):
    """onnxruntime-gpu lists CUDA even where it cannot load (no driver, no GPU): the runtime
    asks for it first, reads back what the session runs, warns, and imputes on the CPU."""
    import onnxruntime as ort

    monkeypatch.setattr(
        ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"]
    )
    model = Model(ddf.load_model(housing, "housing").artifact)
    with caplog.at_level("WARNING", logger="duckdb_diffusion"):
        assert model.provider == "CPUExecutionProvider"
    assert any("CUDAExecutionProvider unusable" in r.getMessage() for r in caplog.records)
    batch = housing.sql("SELECT * FROM housing LIMIT 300").to_arrow_table().to_batches()[0]
    filled = model.impute_batch(batch)
    assert filled.column("total_bedrooms").null_count == 0


def test_int8_graphs_stored_beside_float_ones_and_chosen_through_sql(housing, monkeypatch):
    """``int8`` (the default): beside each float graph the model stores a copy with 8-bit
    products (its export check held it to the float graph's distribution); the SQL door runs
    it where ``DUCKDB_DIFFUSION_INT8`` chooses it, close to the float graph's results, and
    never on the float graph's behalf where it is turned off."""
    from duckdb_diffusion.loading import MODELS

    con = duckdb.connect()
    ddf.install(con)
    table = housing.sql("SELECT * EXCLUDE (house_id) FROM housing").to_arrow_table()
    con.register("view", table)
    con.execute("CREATE TABLE h AS SELECT * FROM view")
    con.execute("SELECT * FROM train_latent_diffusion('h', settings := ?)", [json.dumps(FAST)])
    graphs = ddf.load_model(con, "h").artifact.graphs
    assert set(graphs) == {"impute", "synthesize", "impute_int8", "synthesize_int8"}
    for name in ("impute", "synthesize"):
        float_ops = {n.op_type for n in onnx.load_from_string(graphs[name]).graph.node}
        int8_ops = {n.op_type for n in onnx.load_from_string(graphs[f"{name}_int8"]).graph.node}
        assert "QuantizeLinear" not in float_ops and "QuantizeLinear" in int8_ops
        eight = onnx.load_from_string(graphs[f"{name}_int8"]).graph.initializer
        assert any(w.data_type == TensorProto.INT8 for w in eight)
    # fixed input ranges: a row's outputs do not depend on the rows beside it in its block
    model = Model(ddf.load_model(con, "h").artifact, int8="1")
    rng = np.random.default_rng(0)
    encoded = model.encoder.encode(table.to_batches()[0])
    rows = rng.choice(len(encoded.mask), 1024)
    feeds = {"num": encoded.num[rows], "cat": encoded.cat[rows], "mask": encoded.mask[rows] * 0}
    feeds["noise"] = rng.standard_normal((1024, model.width)).astype(np.float32)
    session = model.session("synthesize")
    alone = session.run(None, feeds)
    shuffled = np.r_[np.arange(10), 10 + rng.permutation(1014)]
    beside = session.run(None, {k: v[shuffled] for k, v in feeds.items()})
    assert np.array_equal(alone[0][:10], beside[0][:10])
    listing = con.execute("SELECT metrics FROM latent_diffusion_models() WHERE name = 'h'")
    check = json.loads(listing.fetchall()[0][0])["onnx_check"]
    assert check["impute_int8"]["median_abs_diff"] < 0.05
    assert check["synthesize_int8"]["category_agreement"] >= 0.95

    def run(setting: str):
        monkeypatch.setenv("DUCKDB_DIFFUSION_INT8", setting)
        MODELS.clear()
        model = ddf.load_model(con, "h")
        ran = {g: model.stored_graph(g) for g in ("impute", "synthesize")}
        filled = con.sql("SELECT * FROM impute_latent_diffusion('h')").to_arrow_table()
        made = con.sql("SELECT * FROM synthesize_rows('h', 2000, seed := 3)").to_arrow_table()
        return ran, filled, made

    MODELS.clear()
    (ran8, filled8, made8), (ran32, filled32, made32) = run("1"), run("0")
    assert ran8 == {"impute": "impute_int8", "synthesize": "synthesize_int8"}
    assert ran32 == {"impute": "impute", "synthesize": "synthesize"}
    assert filled8.schema == filled32.schema == table.schema
    assert made8.num_rows == 2000 and made8.schema.names == table.schema.names
    # the same observed cells; the filled ones close to the float graph's
    observed = ~np.isnan(table.column("total_bedrooms").to_numpy(False))
    for filled in (filled8, filled32):
        column = filled.column("total_bedrooms").to_numpy(False)
        assert np.array_equal(
            column[observed], table.column("total_bedrooms").to_numpy(False)[observed]
        )
    gap = np.abs(
        filled8.column("median_income").to_numpy(False)
        - filled32.column("median_income").to_numpy(False)
    )
    spread = np.nanstd(table.column("median_income").to_numpy(False))
    assert (gap > 0).any() and np.median(gap[gap > 0]) < 0.05 * spread
    made = made8.column("median_income").drop_null().to_numpy()
    real = table.column("median_income").to_numpy(False)
    real = real[~np.isnan(real)]
    assert abs(np.median(made) - np.median(real)) < 0.25 * np.std(real)
    levels = set(table.column("ocean_proximity").drop_null().to_pylist())
    assert set(made8.column("ocean_proximity").drop_null().to_pylist()) <= levels
    # the same noise through both graphs: mostly the same rows
    same = made8.column("ocean_proximity").to_numpy(False) == made32.column(
        "ocean_proximity"
    ).to_numpy(False)
    assert 0.8 < same.mean()
    monkeypatch.setenv("DUCKDB_DIFFUSION_INT8", "sometimes")
    with pytest.raises(ValueError, match="DUCKDB_DIFFUSION_INT8='sometimes'"):
        Model(ddf.load_model(con, "h").artifact)
    MODELS.clear()


def test_a_models_table_from_before_the_8_bit_graphs_still_loads_and_gains_them(
    tmp_path, housing, monkeypatch
):
    """A database whose models table has only the two float graph columns (written before the
    8-bit copies): its models load and run in float even where 8-bit is asked for, and the
    next save adds the columns, keeping the older models as they were."""
    monkeypatch.setenv("DUCKDB_DIFFUSION_INT8", "1")
    stored = ddf.load_model(housing, "housing").artifact
    spec = {k: v for k, v in stored.spec.items() if k != "graphs"}
    floats = {g: stored.graphs[g] for g in ("impute", "synthesize")}
    old = Artifact.create({**spec, "name": "old"}, floats)
    con = duckdb.connect(str(tmp_path / "old.duckdb"))
    con.execute("CREATE SCHEMA duckdb_diffusion")
    con.execute(
        "CREATE TABLE duckdb_diffusion.models (name VARCHAR PRIMARY KEY, created_at TIMESTAMP, "
        "spec JSON, impute_graph BLOB, synthesize_graph BLOB)"
    )
    con.execute(
        "INSERT INTO duckdb_diffusion.models VALUES (?, now()::TIMESTAMP, ?, ?, ?)",
        [old.name, old.spec_json(), floats["impute"], floats["synthesize"]],
    )
    rows = housing.sql("SELECT * FROM housing").to_arrow_table()
    con.register("rows_view", rows)
    con.execute("CREATE TABLE housing AS SELECT * FROM rows_view")
    ddf.install(con)
    model = ddf.load_model(con, "old")
    assert model.int8 and model.stored_graph("impute") == "impute"
    query = "SELECT * FROM impute_latent_diffusion('housing', model := 'old')"
    before = con.sql(query).to_arrow_table()
    assert before.column("total_bedrooms").null_count == 0

    DatabaseRegistry(con).save(Artifact.create({**spec, "name": "new"}, stored.graphs))
    columns = {r[0] for r in con.execute("DESCRIBE duckdb_diffusion.models").fetchall()}
    assert {"impute_int8_graph", "synthesize_int8_graph"} <= columns
    assert ddf.load_model(con, "new").stored_graph("synthesize") == "synthesize_int8"
    assert con.sql(query).to_arrow_table().equals(before)


def test_an_8_bit_graph_that_does_not_load_gives_way_to_the_float_one(housing, caplog):
    """An onnxruntime that cannot build a stored 8-bit copy (older kernels, a damaged but
    checksummed copy): the float graph runs, with a warning naming the model and graph."""
    stored = ddf.load_model(housing, "housing").artifact
    spec = {k: v for k, v in stored.spec.items() if k != "graphs"}
    graphs = {**stored.graphs, "impute_int8": b"not an onnx graph"}
    model = Model(Artifact.create(spec, graphs), int8="1")
    assert model.stored_graph("impute") == "impute_int8"
    batch = housing.sql("SELECT * FROM housing LIMIT 300").to_arrow_table().to_batches()[0]
    with caplog.at_level("WARNING", logger="duckdb_diffusion"):
        filled = model.impute_batch(batch)
    assert filled.column("total_bedrooms").null_count == 0
    assert model.stored_graph("impute") == "impute"
    assert any("8-bit impute graph does not load" in r.getMessage() for r in caplog.records)
    float_model = Model(Artifact.create(spec, graphs), int8="0")
    assert filled.equals(float_model.impute_batch(batch))
