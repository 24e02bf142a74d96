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
    # one network evaluation for the point estimate, sampling_steps for the sampler
    graph = onnx.load_from_string(model.artifact.graphs["impute"])
    assert sum(n.op_type in ("Gemm", "MatMul") for n in graph.graph.node) < 20


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


def test_int8_sampler_through_sql_stores_8_bit_products_and_keeps_the_columns(housing):
    """``int8``: the stored synthesis graph multiplies in 8 bits (its export check held it to
    the float graph's distribution), and its rows still follow the table's columns."""
    con = duckdb.connect()
    ddf.install(con)
    table = housing.sql("SELECT * EXCLUDE (house_id) FROM housing").to_arrow_table()
    con.register("view", table)
    con.execute("CREATE TABLE h AS SELECT * FROM view")
    settings = json.dumps({**FAST, "int8": True})
    con.execute("SELECT * FROM train_latent_diffusion('h', settings := ?)", [settings]).fetchall()
    model = ddf.load_model(con, "h")
    ops = {n.op_type for n in onnx.load_from_string(model.artifact.graphs["synthesize"]).graph.node}
    assert "MatMulInteger" in ops and "Gemm" not in ops
    impute_ops = {
        n.op_type for n in onnx.load_from_string(model.artifact.graphs["impute"]).graph.node
    }
    assert "MatMulInteger" not in impute_ops  # imputation keeps float products
    listing = con.execute("SELECT metrics FROM latent_diffusion_models() WHERE name = 'h'")
    check = json.loads(listing.fetchall()[0][0])["onnx_check"]["synthesize"]
    assert check["median_abs_diff"] < 0.05
    rows = con.sql("SELECT * FROM synthesize_rows('h', 2000, seed := 3)").to_arrow_table()
    assert rows.num_rows == 2000 and rows.schema.names == table.schema.names
    real, made = table.column("median_income").to_numpy(False), rows.column("median_income")
    made = made.drop_null().to_numpy()
    real = real[~np.isnan(real)]
    assert abs(np.median(made) - np.median(real)) < 0.25 * np.std(real)
    levels = set(table.column("ocean_proximity").drop_null().to_pylist())
    assert set(rows.column("ocean_proximity").drop_null().to_pylist()) <= levels
