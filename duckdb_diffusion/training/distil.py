"""Distil the synthesis sampler: a copy of the trained denoiser learns to follow the sampler's
trajectory in ``distilled_steps`` first-order steps where the sampler takes ``sampling_steps``.

Why: a synthetic row costs one denoiser evaluation per sampler step, and at 8 steps that is
nearly all of a row's arithmetic. Trajectory distillation (Luhman & Luhman 2021; Salimans &
Ho's progressive distillation does it in halvings) keeps the teacher's ODE and its noise-to-row
map and only shortens the path: the student starts as the teacher, is given the teacher's
states at a few of its levels, and learns the denoised estimate that takes one DDIM step
(``edm.ddim_sample``) from each of those states to the teacher's state at the next one. The
teacher's draws from the same noise are its targets, so nothing is learned from the rows
beyond what the teacher knew: the rows only supply the given tokens of conditional draws.
"""

from __future__ import annotations

import copy

import numpy as np
import torch

from . import trainer
from .edm import Precond, ddim_sample, dpm_solver_2m_path, karras_sigmas

# Share of the student's training rows drawn with nothing given (synthetic rows, the main use
# of the sampler); the rest are given a random subset of their observed cells, as the teacher
# was, for conditional synthesis and multiple imputation.
UNCONDITIONAL_SHARE = 0.5
LEARNING_RATE_SHARE = 0.5  # of the teacher's: the student starts from a trained network
# The teacher's draws are made for this many batches at once: a matrix product over 1,024 rows
# costs half as much per row as over 256 on 2 cores, and the teacher's 8 evaluations a batch
# were over half of a student step.
TEACHER_BATCHES = 4
# A student is kept only if its draws, from the validation noise, land within this mean squared
# distance (per free token, in the latents' standard deviations) of the teacher's: a student
# stopped early by a short budget is worse than the teacher's own sampler, and is not used.
MAX_DRAW_ERROR = 0.025


def student_indices(teacher_steps: int, steps: int) -> list[int]:
    """Which of the teacher's levels (indices into its ``steps`` + 1 levels) the student
    stops at: the first and the last (0) and others spread evenly between, so each student
    step stands for an equal run of the teacher's."""
    return [round(i * teacher_steps / steps) for i in range(steps + 1)]


def targets(teacher: Precond, noise, given, mask, sigmas: list[float], indices: list[int]):
    """The student's training examples from one teacher draw: for each student step, its
    input states, noise level, and the denoised estimates whose DDIM step lands on the
    teacher's states at the next level. -> (states, levels, estimates), each [steps, rows, ...]."""
    with torch.no_grad():
        path = dpm_solver_2m_path(teacher, noise, given, mask, sigmas)
    states, levels, estimates = [], [], []
    for here, there in zip(indices[:-1], indices[1:], strict=True):
        a, b = sigmas[here], sigmas[there]
        x_a, x_b = path[here], path[there]
        estimates.append(x_b if b == 0 else (x_b - (b / a) * x_a) / (1.0 - b / a))
        states.append(x_a)
        levels.append(torch.full((x_a.shape[0], 1), a))
    return torch.stack(states), torch.stack(levels), torch.stack(estimates)


def student_loss(student: Precond, example, given, mask) -> torch.Tensor:
    """EDM-weighted squared error of the student's denoised estimates on the free tokens."""
    states, levels, estimates = (part.flatten(0, 1) for part in example)
    steps = example[0].shape[0]
    given, mask = given.repeat(steps, 1), mask.repeat(steps, 1)
    weight = (levels**2 + 1.0) / levels**2
    free = 1.0 - mask
    error = weight * (student(states, levels, given, mask) - estimates) ** 2 * free
    return error.sum() / free.sum().clamp(min=1.0)


def distil(teacher: Precond, latents, col_mask, fit_rows, val_rows, config, clock, deadline):
    """-> (student, its levels, metrics). Trains until the student's validation loss stops
    improving at the lowest of a few learning rates (as the teacher did), or ``deadline``
    (seconds since training began)."""
    latent_dim = config.latent_dim
    sigmas = karras_sigmas(config.sampling_steps)
    indices = student_indices(config.sampling_steps, config.distilled_steps)
    teacher = teacher.eval().requires_grad_(False)
    student = copy.deepcopy(teacher).requires_grad_(True).train()
    ema = copy.deepcopy(teacher)
    rate = config.learning_rate * LEARNING_RATE_SHARE
    optimizer = trainer.adamw(student.parameters(), lr=rate)
    generator = torch.Generator().manual_seed(config.seed + 20)

    def draw(rows, gen):
        cond, _ = trainer._condition_masks(col_mask[rows], UNCONDITIONAL_SHARE, gen)
        mask = trainer._tokens(cond, latent_dim)
        given = latents[rows] * mask
        noise = torch.randn(given.shape, generator=gen)
        return targets(teacher, noise, given, mask, sigmas, indices), given, mask, noise

    rows = val_rows if len(val_rows) else fit_rows
    fixed = draw(np.tile(rows, -(-trainer.VALIDATION_SAMPLES // len(rows))), generator)
    with torch.no_grad():
        first = best = student_loss(ema, *fixed[:3]).item()
    best_state, stale, decays, steps, epoch, stopped = None, 0, 0, 0, 0, "time"
    started = clock.elapsed()
    while clock.elapsed() < deadline:
        epoch += 1
        for example in _student_batches(fit_rows, config, epoch, draw, generator):
            loss = student_loss(student, *example)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            steps += 1
            trainer._ema_update(ema, student, min(config.ema_decay, (1 + steps) / (10 + steps)))
            if steps % trainer.VALIDATE_EVERY_STEPS:
                continue
            with torch.no_grad():
                val = student_loss(ema, *fixed[:3]).item()
            clock.show("distillation", epoch, val)
            if val < best * (1 - trainer.MIN_IMPROVEMENT):
                best, best_state, stale = val, copy.deepcopy(ema.state_dict()), 0
            else:
                stale += 1
            if stale >= config.patience:
                if decays == trainer.LR_DECAYS:
                    stopped = "converged"
                    break
                rate, decays, stale = rate * trainer.LR_FACTOR, decays + 1, 0
                for group in optimizer.param_groups:
                    group["lr"] = rate
            if clock.elapsed() >= deadline:
                break
        if stopped == "converged":
            break
    if best_state is not None:
        ema.load_state_dict(best_state)
    error = draw_error(ema, teacher, fixed, sigmas, indices)
    metrics = {
        "steps": config.distilled_steps,
        "levels": [round(sigmas[i], 5) for i in indices],
        "optimizer_steps": steps,
        "seconds": round(clock.elapsed() - started, 2),
        # The loss of the undistilled denoiser taking the student's steps, and the student's.
        "initial_loss": round(first, 5),
        "validation_loss": round(best, 5),
        "stopped_by": stopped,
        "learning_rate_decays": decays,
        "draw_error": round(error, 5),
        "kept": error <= MAX_DRAW_ERROR,
    }
    if error > MAX_DRAW_ERROR:
        return None, None, metrics
    return ema.eval(), [sigmas[i] for i in indices], metrics


def _student_batches(fit_rows, config, epoch: int, draw, generator):
    """One epoch of the student's examples, batch by batch; the teacher draws for
    ``TEACHER_BATCHES`` batches at a time."""
    order = np.random.default_rng(config.seed + 30_000 + epoch).permutation(fit_rows)
    size = config.batch_size
    for start in range(0, len(order), size * TEACHER_BATCHES):
        example, given, mask, _ = draw(order[start : start + size * TEACHER_BATCHES], generator)
        for part in range(0, len(given), size):
            rows = slice(part, part + size)
            yield tuple(x[:, rows] for x in example), given[rows], mask[rows]


def draw_error(student, teacher, fixed, sigmas, indices) -> float:
    """Mean squared distance per free token between the student's draws and the teacher's
    (``sampling_steps`` steps) from the same validation noise and given tokens."""
    (_, _, estimates), given, mask, noise = fixed
    with torch.no_grad():
        taught = ddim_sample(student, noise, given, mask, [sigmas[i] for i in indices])
    final = estimates[-1]  # the last step's target is the teacher's draw
    free = 1.0 - mask
    return (((taught - final) * free) ** 2).sum().item() / free.sum().clamp(min=1.0).item()
