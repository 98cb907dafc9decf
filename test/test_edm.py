"""Numerical checks of the EDM pieces against dtql_spec.md sections 1.1, 2.1-2.3 and 8.11-8.12."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from torchrl_dtql.modules.denoiser import EDMDenoiserNetwork, SinusoidalTimeEmbedding
from torchrl_dtql.modules.diffusion_actor import EDMDiffusionModel
from torchrl_dtql.modules.edm import (
    EDMConfig,
    LogLogisticSigmaSampler,
    edm_loss_weight,
    edm_preconditioning,
    edm_sample,
    karras_sigmas,
)


@pytest.mark.parametrize("sigma_data", [0.5, 1.3])
def test_preconditioning_identities(sigma_data):
    sigma = torch.logspace(-3, 2, 50)
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, sigma_data)
    sd2 = sigma_data**2
    torch.testing.assert_close(c_skip, sd2 / (sigma**2 + sd2))
    torch.testing.assert_close(c_out, sigma * sigma_data / torch.sqrt(sigma**2 + sd2))
    torch.testing.assert_close(c_in, 1 / torch.sqrt(sigma**2 + sd2))
    torch.testing.assert_close(c_noise, torch.log(sigma) / 4)
    # unit-variance training target: c_skip^2 sd^2 + c_out^2 ... EDM eq. (the effective target has variance 1)
    torch.testing.assert_close(c_in**2 * (sigma**2 + sd2), torch.ones_like(sigma))
    torch.testing.assert_close(edm_loss_weight(sigma, sigma_data), 1 / c_out**2)


def test_sigma_sampler_median_and_mass():
    sampler = LogLogisticSigmaSampler()
    sigma = sampler((400_000,), generator=torch.Generator().manual_seed(0))
    assert sigma.dtype == torch.float32
    assert sigma.min() >= 0.002 and sigma.max() <= 80
    assert abs(float(sigma.median()) - 0.5) < 0.01
    mass = float(((sigma >= 0.11) & (sigma <= 2.24)).float().mean())
    assert abs(mass - 0.90) < 0.01
    # the law of ln(sigma) is logistic(ln 0.5, 0.5): its CDF at ln(1) is sigmoid(ln 2 / 0.5) = 0.8
    assert abs(float((sigma <= 1.0).float().mean()) - 1 / (1 + math.exp(-math.log(2) / 0.5))) < 0.005


def test_sigma_sampler_float32_same_law():
    s64 = LogLogisticSigmaSampler()((200_000,), generator=torch.Generator().manual_seed(1))
    s32 = LogLogisticSigmaSampler(dtype=torch.float32)((200_000,), generator=torch.Generator().manual_seed(1))
    assert abs(float(s64.median()) - float(s32.median())) < 0.01


def _model(clip: bool = True, action_dim: int = 2, obs_dim: int = 3) -> EDMDiffusionModel:
    torch.manual_seed(0)
    return EDMDiffusionModel(
        EDMDenoiserNetwork(action_dim, obs_dim, hidden_dim=32), -torch.ones(action_dim), torch.ones(action_dim),
        clip_denoised=clip,
    )


def test_unclamped_loss_equals_f_target_form():
    """Without the clamp, ((D - a)/c_out)^2 == (F - (a - c_skip x)/c_out)^2 (spec 2.2)."""
    model = _model(clip=False)
    action, obs = torch.rand(64, 2) * 2 - 1, torch.randn(64, 3)
    sigma = model.sigma_sampler((64, 1))
    noise = torch.randn(64, 2)
    loss = model.denoising_loss(action, obs, sigma=sigma, noise=noise)
    x_noisy = action + sigma * noise
    c_skip, c_out, c_in, c_noise = edm_preconditioning(sigma, 0.5)
    f = model.denoiser(c_in * x_noisy, obs, c_noise)
    expected = (f - (action - c_skip * x_noisy) / c_out).pow(2).mean(-1)
    torch.testing.assert_close(loss, expected, rtol=1e-4, atol=1e-5)


def test_clamp_blocks_gradient_through_denoiser():
    """Clamped coordinates of D pass no gradient to the network; the action then only gets the '-a' target term."""
    model = _model(clip=True)
    with torch.no_grad():  # push the output far outside [-1, 1]: every coordinate is clamped
        model.denoiser.trunk[-1].bias.fill_(1e4)
    action = (torch.rand(8, 2) * 2 - 1).requires_grad_()
    sigma, noise = torch.full((8, 1), 0.5), torch.randn(8, 2)
    loss = model.denoising_loss(action, torch.randn(8, 3), sigma=sigma, noise=noise).sum()
    loss.backward()
    assert all(p.grad is None or p.grad.abs().max() == 0 for p in model.denoiser.parameters())
    _, c_out, _, _ = edm_preconditioning(sigma, 0.5)
    denoised = torch.ones(8, 2)  # clamped to the upper bound
    expected = -2 * (denoised - action.detach()) / c_out**2 / 2  # d/da mean_d ((D - a)/c_out)^2, D constant
    torch.testing.assert_close(action.grad, expected)


def test_trust_region_gradient_flows_through_input_and_target():
    """The policy action gets gradient through the noisy input of D as well as through the '-a' target (spec 8.9)."""
    model = _model(clip=False)
    obs, sigma, noise = torch.randn(8, 3), torch.full((8, 1), 0.3), torch.randn(8, 2)
    action = (torch.rand(8, 2) * 0.5).requires_grad_()
    model.denoising_loss(action, obs, sigma=sigma, noise=noise).sum().backward()
    full = action.grad.clone()
    target_only_action = action.detach().clone().requires_grad_()
    denoised = model.denoise(target_only_action.detach() + sigma * noise, obs, sigma)
    _, c_out, _, _ = edm_preconditioning(sigma, 0.5)
    ((denoised - target_only_action) / c_out).pow(2).mean(-1).sum().backward()
    assert full.abs().sum() > 0
    assert not torch.allclose(full, target_only_action.grad)


def test_karras_schedule():
    sigmas = karras_sigmas(18, 0.002, 80.0)
    assert sigmas.shape == (19,)
    assert float(sigmas[0]) == pytest.approx(80.0) and float(sigmas[-2]) == pytest.approx(0.002, rel=1e-4)
    assert float(sigmas[-1]) == 0.0  # an appended constant, not computed: exact
    assert bool((sigmas[:-1] > sigmas[1:]).all())
    with pytest.raises(ValueError, match="num_steps"):
        karras_sigmas(0)


@pytest.mark.parametrize("solver", ["euler", "heun"])
def test_sampler_solves_point_mass(solver):
    """With the exact denoiser of a Gaussian N(m, s^2) the ODE maps N(0, s^2 + sigma_max^2) to N(m, s^2)."""
    m, s = 0.3, 0.2
    torch.manual_seed(0)
    x0 = torch.randn(20000, 1) * math.sqrt(s**2 + 80.0**2)

    def denoise(x, sigma):  # posterior mean of a Gaussian prior
        return m + (x - m) * s**2 / (s**2 + sigma**2)

    x = edm_sample(denoise, x0, karras_sigmas(40), solver)
    assert abs(float(x.mean()) - m) < 0.01
    assert abs(float(x.std()) - s) < 0.02


def test_unknown_solver():
    with pytest.raises(ValueError, match="solver"):
        edm_sample(lambda x, s: x, torch.zeros(1, 1), karras_sigmas(2), "rk4")


def test_reference_trunk_quirk():
    quirk = EDMDenoiserNetwork(6, 17)
    layers = [type(m) for m in quirk.trunk]
    assert layers == [nn.Linear, nn.Linear, nn.Mish, nn.Linear, nn.Mish, nn.Linear, nn.Mish, nn.Linear]
    assert quirk.trunk[0].in_features == 6 + 17 + 16
    fixed = EDMDenoiserNetwork(6, 17, reference_trunk_quirk=False)
    assert [type(m) for m in fixed.trunk].count(nn.Mish) == 4


def test_time_embedding_frequencies():
    emb = SinusoidalTimeEmbedding(16)
    expected = torch.exp(-torch.arange(8) * math.log(10000) / 7)
    torch.testing.assert_close(emb.freqs, expected)
    assert [type(m) for m in emb.mlp] == [nn.Linear, nn.Mish, nn.Linear]
    assert emb.mlp[0].out_features == 32


def test_edm_config_validation():
    with pytest.raises(ValueError, match="sigma_min"):
        EDMConfig(sigma_min=1.0, sigma_max=0.5)
