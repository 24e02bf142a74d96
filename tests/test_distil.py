"""The distilled sampler: a student that takes the teacher's path in fewer steps (distil.py),
driven both at the level of the sampler and through SQL."""

from __future__ import annotations

import json

import duckdb
import numpy as np
import onnx
import pytest
import torch

import duckdb_diffusion as ddf
from duckdb_diffusion import metrics
from duckdb_diffusion.settings import TrainConfig
from duckdb_diffusion.training import distil, edm, trainer
from duckdb_diffusion.training.networks import Denoiser

from .conftest import FAST


def _trained_teacher(latents: torch.Tensor) -> edm.Precond:
    """A small denoiser fitted (unconditionally) to ``latents`` for a few hundred steps."""
    teacher = edm.Precond(Denoiser(latents.shape[1], 64, 2))
    optimizer = torch.optim.AdamW(teacher.parameters(), lr=3e-3)
    none, every = torch.zeros(256, latents.shape[1]), torch.ones(256, latents.shape[1])
    for _ in range(600):
        batch = latents[torch.randint(0, latents.shape[0], (256,))]
        loss = edm.denoising_loss(teacher, batch, none, every)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return teacher.eval()


def test_student_lands_where_the_teacher_does_in_two_steps():
    """From the same noise, the 2-step student's draws sit far closer to the teacher's 8-step
    draws than the teacher's own 2-step draws do (which is what distillation buys)."""
    torch.manual_seed(0)
    rows, columns, latent_dim = 2000, 2, 4
    centres = torch.randn(3, columns * latent_dim) * 2.0
    latents = centres[torch.randint(0, 3, (rows,))] + 0.3 * torch.randn(rows, columns * latent_dim)
    latents = (latents - latents.mean(0)) / latents.std(0)
    teacher = _trained_teacher(latents)
    config = TrainConfig(latent_dim=latent_dim, distilled_steps=2, progress=False, patience=4)
    order = np.random.default_rng(0).permutation(rows)
    clock = trainer._Clock(config)
    col_mask = torch.ones(rows, columns)
    student, levels, report = distil.distil(
        teacher, latents, col_mask, order[200:], order[:200], config, clock, deadline=20.0
    )
    assert levels == [edm.karras_sigmas(8)[i] for i in (0, 4, 8)]
    assert report["kept"] and report["validation_loss"] < 0.2 * report["initial_loss"]

    noise = torch.randn(1000, columns * latent_dim)
    nothing = torch.zeros_like(noise)
    with torch.no_grad():
        target = edm.dpm_solver_2m(teacher, noise, nothing, nothing, edm.karras_sigmas(8))
        taught = edm.ddim_sample(student, noise, nothing, nothing, levels)
        untaught = edm.ddim_sample(teacher, noise, nothing, nothing, levels)
    taught_error = ((taught - target) ** 2).mean().item()
    untaught_error = ((untaught - target) ** 2).mean().item()
    assert taught_error < 0.3 * untaught_error, (taught_error, untaught_error)


def test_path_ends_in_the_samplers_draw_and_targets_replay_it():
    """``dpm_solver_2m_path`` ends where ``dpm_solver_2m`` does, and a DDIM step with each
    target estimate lands exactly on the teacher's next state."""
    torch.manual_seed(1)
    denoise = edm.Precond(Denoiser(dim=12, width=32, depth=1)).eval()
    for parameter in denoise.parameters():
        torch.nn.init.normal_(parameter, std=0.2)
    noise, given = torch.randn(16, 12), torch.randn(16, 12)
    mask = (torch.rand(16, 12) < 0.3).float()
    sigmas = edm.karras_sigmas(8)
    with torch.no_grad():
        path = edm.dpm_solver_2m_path(denoise, noise, given, mask, sigmas)
        assert torch.equal(path[-1], edm.dpm_solver_2m(denoise, noise, given, mask, sigmas))
        indices = distil.student_indices(8, 3)
        assert indices == [0, 3, 5, 8]
        states, levels, estimates = distil.targets(denoise, noise, given, mask, sigmas, indices)
    for k, (here, there) in enumerate(zip(indices[:-1], indices[1:], strict=True)):
        a, b = sigmas[here], sigmas[there]
        assert torch.all(levels[k] == a) and torch.equal(states[k], path[here])
        landed = (b / a) * states[k] + (1 - b / a) * estimates[k]
        assert torch.allclose(landed, path[there], atol=1e-5)


def _denoiser_evaluations(graph: bytes, depth: int) -> int:
    """How many times a synthesis graph runs the denoiser: each evaluation normalises
    ``depth`` + 1 times (its blocks and its output), and nothing else in the graph does."""
    ops = [n.op_type for n in onnx.load_from_string(graph).graph.node]
    assert ops.count("LayerNormalization") % (depth + 1) == 0
    return ops.count("LayerNormalization") // (depth + 1)


@pytest.mark.parametrize(("asked", "steps"), [({"distilled_steps": 2}, 2), ({}, 4)])
def test_distilled_steps_through_sql(housing, asked, steps):
    """``distilled_steps`` (4 unless set): the stored synthesis graph runs the denoiser that
    many times, the model reports its distillation, and its rows follow the table's columns."""
    con = duckdb.connect()
    ddf.install(con)
    table = housing.sql("SELECT * EXCLUDE (house_id) FROM housing").to_arrow_table()
    con.register("view", table)
    con.execute("CREATE TABLE h AS SELECT * FROM view")
    quick = {k: v for k, v in FAST.items() if k != "distilled_steps"}
    settings = json.dumps({**quick, "max_seconds": 24, "distil_share": 0.5, **asked})
    con.execute("SELECT * FROM train_latent_diffusion('h', settings := ?)", [settings]).fetchall()
    listing = con.execute("SELECT metrics FROM latent_diffusion_models() WHERE name = 'h'")
    report = json.loads(listing.fetchall()[0][0])["diffusion"]["distilled"]
    assert report["steps"] == steps and len(report["levels"]) == steps + 1
    assert report["validation_loss"] < 0.5 * report["initial_loss"]
    model = ddf.load_model(con, "h")
    assert _denoiser_evaluations(model.artifact.graphs["synthesize"], FAST["depth"]) == steps
    rows = con.sql("SELECT * FROM synthesize_rows('h', 1500, seed := 3)").to_arrow_table()
    assert rows.num_rows == 1500 and rows.schema.names == table.schema.names
    shape = metrics.column_shape_error(table, rows, table.schema.names)
    assert np.mean(list(shape.values())) < 0.12, shape
