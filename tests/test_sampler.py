"""The exported sampler computes the given tokens' share of the denoiser once per row: it must
draw what the step-by-step network (as trained) would draw from the same noise."""

import torch

from duckdb_diffusion.training import edm
from duckdb_diffusion.training.networks import Denoiser


class _PerStep(torch.nn.Module):
    """The same denoiser with no precomputed context: every step runs the whole input layer."""

    def __init__(self, denoise):
        super().__init__()
        self.denoise = denoise

    def context(self, given, mask):
        return None

    def forward(self, x, sigma, given, mask, context=None):
        return self.denoise(x, sigma, given, mask)


def test_sampling_with_the_context_once_matches_the_network_at_every_step():
    torch.manual_seed(0)
    denoise = edm.Precond(Denoiser(dim=12, width=32, depth=2)).eval()
    for parameter in denoise.parameters():  # the output layer starts at zero: make it speak
        torch.nn.init.normal_(parameter, std=0.2)
    noise, given = torch.randn(64, 12), torch.randn(64, 12)
    mask = (torch.rand(64, 12) < 0.4).float()
    sigmas = edm.karras_sigmas(6)
    with torch.no_grad():
        for sampler in (edm.dpm_solver_2m, edm.heun_sample):
            fast = sampler(denoise, noise, given, mask, sigmas)
            slow = sampler(_PerStep(denoise), noise, given, mask, sigmas)
            assert torch.allclose(fast, slow, atol=1e-5)
            assert torch.equal(fast * mask, given * mask)  # given tokens held
            assert fast.std() > 0.1  # the network did move the free tokens
