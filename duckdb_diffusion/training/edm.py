"""EDM diffusion over latent tokens (Karras et al., "Elucidating the Design Space of Diffusion-Based
Generative Models", NeurIPS 2022), made conditional by an observation mask.

The pieces meet only through ``denoise(x, sigma, given, mask)`` (and, in samplers,
``denoise.context(given, mask)``: the network's share of the given tokens, computed once):
- ``Precond`` wraps the raw network with EDM's c_skip/c_out/c_in/c_noise scalings;
- ``karras_sigmas`` is the noise schedule;
- ``heun_sample`` is EDM's deterministic second-order sampler (Algorithm 1). It takes its initial
  noise as an argument, so exporting it unrolled to ONNX makes sampling a pure function of the
  inputs, the same at SQL time as in training;
- ``denoising_loss`` is EDM's weighted loss on the tokens the model has to produce.

Conditioning: ``mask`` is 1 on given tokens (observed cells when imputing, none when
synthesizing). Given tokens are held at their clean values through sampling.
"""

from __future__ import annotations

import math

import torch
from torch import nn

SIGMA_DATA = 1.0  # latents are standardised per dimension before diffusion
# Training noise levels, log-normal. EDM's image setting (-1.2, 1.2) almost never trains the
# high-noise steps that decide an imputation; centring on sigma = 1 cut california's MAE from
# 0.49 to 0.42 at equal budget (benchmarks/impute_california.py).
P_MEAN, P_STD = 0.0, 1.4


class Precond(nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x; c_noise), with the given tokens passed through."""

    def __init__(self, network: nn.Module):
        super().__init__()
        self.network = network

    def context(self, given: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """What a sampler computes once per row for all its steps (``Denoiser.context``)."""
        return self.network.context(given * mask, mask)

    def forward(
        self,
        x: torch.Tensor,
        sigma: torch.Tensor,
        given: torch.Tensor,
        mask: torch.Tensor,
        context: torch.Tensor | None = None,
    ) -> torch.Tensor:
        sigma = sigma.reshape(-1, 1)
        c_skip = SIGMA_DATA**2 / (sigma**2 + SIGMA_DATA**2)
        c_out = sigma * SIGMA_DATA / (sigma**2 + SIGMA_DATA**2).sqrt()
        c_in = 1.0 / (sigma**2 + SIGMA_DATA**2).sqrt()
        c_noise = sigma.log() / 4.0
        free = 1.0 - mask
        f = self.network(c_in * x * free, given * mask, mask, c_noise, context)
        return (c_skip * x + c_out * f) * free + given * mask


# The sampler's highest noise level. Latents are standardised, so at sigma 20 a token is 95%
# noise already; EDM's image setting (80, and 40 here before) spent the first steps of a short
# schedule where nothing is decided. With 12 steps from 20 instead of 8 from 40 (one model per
# dataset, 5,000 rows, benchmarks/README.md): detection AUC california 0.683 -> 0.630, adult
# 0.645 -> 0.590, default 0.835 -> 0.808; column shape and pair trend lower on all three.
SIGMA_MAX = 20.0
# The lowest level and the schedule's curvature. EDM's image setting (0.002, rho 7) spent the
# last steps of a short schedule below noise that changes a decoded value; ending at 0.02 with
# rho 12 (levels spaced more evenly in log sigma) lets 8 steps do what 12 did (one model per
# dataset, benchmarks/README.md; detection AUC california 0.630 at 12 steps -> 0.632 at 8,
# adult 0.590 -> 0.593, default 0.802 -> 0.800), at two thirds of the arithmetic.
SIGMA_MIN = 0.02
RHO = 12.0


def karras_sigmas(
    steps: int, sigma_min: float = SIGMA_MIN, sigma_max: float = SIGMA_MAX, rho: float = RHO
) -> list[float]:
    """Karras et al.'s schedule: ``steps`` levels from sigma_max down to sigma_min, then 0."""
    ramp = torch.linspace(0, 1, steps, dtype=torch.float64)
    max_inv, min_inv = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    sigmas = (max_inv + ramp * (min_inv - max_inv)) ** rho
    return [*sigmas.tolist(), 0.0]


def _level(sigma: float) -> torch.Tensor:
    """A sampling step's noise level as a [1, 1] constant, broadcast over the batch: in an
    exported graph everything computed from it alone (the noise embedding MLP, the EDM
    scalings) is constant-folded by onnxruntime instead of being run for every row."""
    return torch.full((1, 1), sigma)


def _start(denoise: Precond, noise, given, mask, sigma_max: float):
    """Every sampler's first state and the denoiser's context of the given tokens: noise at
    the top level on the tokens to draw, the given tokens as they are."""
    return noise * sigma_max * (1.0 - mask) + given * mask, denoise.context(given, mask)


def _keep_given(x: torch.Tensor, given: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """A draw with the given tokens put back exactly."""
    return x * (1.0 - mask) + given * mask


def heun_sample(
    denoise: Precond,
    noise: torch.Tensor,
    given: torch.Tensor,
    mask: torch.Tensor,
    sigmas: list[float],
) -> torch.Tensor:
    """EDM Algorithm 1 (deterministic Heun; Euler on the last step), written to unroll cleanly."""
    x, context = _start(denoise, noise, given, mask, sigmas[0])
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        s = _level(sigma)
        d = (x - denoise(x, s, given, mask, context)) / sigma
        x_next = x + (sigma_next - sigma) * d
        if sigma_next > 0:
            s_next = _level(sigma_next)
            d_next = (x_next - denoise(x_next, s_next, given, mask, context)) / sigma_next
            x_next = x + (sigma_next - sigma) * (0.5 * d + 0.5 * d_next)
        x = x_next
    return _keep_given(x, given, mask)


def dpm_solver_2m(
    denoise: Precond,
    noise: torch.Tensor,
    given: torch.Tensor,
    mask: torch.Tensor,
    sigmas: list[float],
) -> torch.Tensor:
    """DPM-Solver++(2M) (Lu et al., 2022): a second-order multistep solver of the same ODE
    that reuses the previous step's denoised estimate, so it costs one network evaluation per
    step where Heun costs two."""
    return dpm_solver_2m_path(denoise, noise, given, mask, sigmas)[-1]


def dpm_solver_2m_path(
    denoise: Precond,
    noise: torch.Tensor,
    given: torch.Tensor,
    mask: torch.Tensor,
    sigmas: list[float],
) -> list[torch.Tensor]:
    """``dpm_solver_2m``'s state at every level of ``sigmas``, the last being its draw: the
    trajectory a distilled sampler (distil.py) learns to follow in fewer steps."""
    x, context = _start(denoise, noise, given, mask, sigmas[0])
    path, previous = [x], None
    for i, (sigma, sigma_next) in enumerate(zip(sigmas[:-1], sigmas[1:], strict=True)):
        denoised = denoise(x, _level(sigma), given, mask, context)
        if sigma_next == 0:
            path.append(denoised)
            break
        h = math.log(sigma / sigma_next)
        estimate = denoised
        if previous is not None:
            ratio = math.log(sigmas[i - 1] / sigma) / h
            estimate = (1 + 1 / (2 * ratio)) * denoised - (1 / (2 * ratio)) * previous
        x = (sigma_next / sigma) * x - math.expm1(-h) * estimate
        path.append(x)
        previous = denoised
    path[-1] = _keep_given(path[-1], given, mask)
    return path


def ddim_sample(
    denoise: Precond,
    noise: torch.Tensor,
    given: torch.Tensor,
    mask: torch.Tensor,
    sigmas: list[float],
) -> torch.Tensor:
    """The first-order step of the same ODE (DDIM, DPM-Solver++(1)): each step moves to the
    next level along the line to the denoised estimate. A distilled denoiser is trained for
    exactly this step between exactly these levels (distil.py), so each of its steps stands
    for several of the teacher's."""
    x, context = _start(denoise, noise, given, mask, sigmas[0])
    for sigma, sigma_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        denoised = denoise(x, _level(sigma), given, mask, context)
        x = (sigma_next / sigma) * x + (1.0 - sigma_next / sigma) * denoised
    return _keep_given(x, given, mask)


def denoising_loss(
    denoise: Precond, z: torch.Tensor, mask: torch.Tensor, target: torch.Tensor
) -> torch.Tensor:
    """EDM's loss on the ``target`` tokens of clean latents ``z`` given the ``mask`` tokens."""
    rows = z.shape[0]
    sigma = (torch.randn(rows, 1) * P_STD + P_MEAN).exp()
    per_token = denoising_terms(denoise, z, mask, target, sigma, torch.randn_like(z))
    return per_token.sum() / target.sum().clamp(min=1.0)


def denoising_terms(denoise, z, mask, target, sigma, noise) -> torch.Tensor:
    """The weighted squared error of each target token at noise levels ``sigma`` (rows, 1)
    with standard normal ``noise``: the loss before it is averaged."""
    weight = (sigma**2 + SIGMA_DATA**2) / (sigma * SIGMA_DATA) ** 2
    denoised = denoise(z + noise * sigma, sigma, z * mask, mask)
    return weight * (denoised - z) ** 2 * target


# The sampler the exported graphs unroll: DPM-Solver++(2M). On california (90 s model, 5,000
# synthetic rows) 8 of its steps (8 evaluations) matched 8 Heun steps (15 evaluations): column
# shape 0.045 vs 0.046, pair trend 0.029 vs 0.030, detection AUC 0.749 vs 0.737; 4 Heun steps
# (7 evaluations) fell apart (0.191 / 0.121 / 0.991).
sample = dpm_solver_2m
