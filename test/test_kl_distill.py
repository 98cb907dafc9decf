"""KLDistillLoss (DQL-KL) and its one-step generator: keys, gradient isolation, the DMD direction, the update step."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.objectives import SoftUpdate

from torchrl_dtql import EDMDiffusionActor, make_dtql_modules
from torchrl_dtql.modules.edm import edm_preconditioning, EDMConfig
from torchrl_dtql.modules.generator import make_one_step_generator, OneStepGenerator
from torchrl_dtql.objectives.kl_distill import (
    KLDistillLoss,
    KLDistillOptimizers,
    kl_distill_update_step,
    make_kl_distill_optimizers,
)

pytestmark = [
    pytest.mark.filterwarnings("error"),
    pytest.mark.filterwarnings("ignore:No target network updater"),
]

OBS_DIM, ACTION_DIM, BATCH, HIDDEN = 3, 2, 16, 16
SPEC = Bounded(-1.0, 1.0, shape=(ACTION_DIM,))
NETWORKS = ("actor_network", "diffusion_network", "fake_score_network", "qvalue_network", "value_network")


def make_batch(batch: int = BATCH, seed: int = 0) -> TensorDict:
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(batch, 1, generator=g) < 0.25
    return TensorDict(
        observation=torch.randn(batch, OBS_DIM, generator=g),
        action=torch.rand(batch, ACTION_DIM, generator=g) * 2 - 1,
        next=TensorDict(
            observation=torch.randn(batch, OBS_DIM, generator=g),
            reward=torch.randn(batch, 1, generator=g),
            done=terminated.clone(),
            terminated=terminated,
            batch_size=[batch],
        ),
        batch_size=[batch],
    )


def make_loss(**kwargs) -> KLDistillLoss:
    modules = make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN)
    modules["actor_network"] = make_one_step_generator(OBS_DIM, SPEC, hidden_dim=HIDDEN, time_embed_dim=4)
    fake_score = make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN)["diffusion_network"]
    return KLDistillLoss(**modules, fake_score_network=fake_score, **kwargs)


def trainable(loss: KLDistillLoss, network: str) -> list[torch.Tensor]:
    return [p for p in getattr(loss, f"{network}_params").values(True, True) if p.requires_grad]


def networks_with_grad(loss: KLDistillLoss) -> set[str]:
    return {name for name in NETWORKS if any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainable(loss, name))}


def zero_grads(loss: KLDistillLoss) -> None:
    for name in NETWORKS:
        for p in trainable(loss, name):
            p.grad = None


class PointMassBackbone(nn.Module):
    """The exact EDM backbone of a point mass at ``centre``: with it the denoiser returns ``centre`` at every sigma."""

    def __init__(self, centre: list[float], sigma_data: float = 0.5) -> None:
        super().__init__()
        self.centre = nn.Parameter(torch.tensor(centre))
        self.sigma_data = sigma_data

    def forward(self, scaled_action: torch.Tensor, observation: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        sigma = torch.exp(4 * c_noise)
        c_skip, c_out, c_in, _ = edm_preconditioning(sigma, self.sigma_data)
        noisy_action = scaled_action / c_in
        return (self.centre - c_skip * noisy_action) / c_out


def point_mass_model(centre: list[float]) -> EDMDiffusionActor:
    return EDMDiffusionActor(PointMassBackbone(centre), SPEC, clip_denoised=False)


# ----------------------------------------------------------------------------------------------- the generator
def test_generator_is_random_by_default_and_repeatable_when_deterministic():
    generator = make_one_step_generator(OBS_DIM, SPEC, hidden_dim=HIDDEN, time_embed_dim=4)
    td = TensorDict(observation=torch.randn(5, OBS_DIM), batch_size=[5])
    with set_exploration_type(ExplorationType.RANDOM):
        first, second = generator(td.clone())["action"], generator(td.clone())["action"]
    assert first.shape == (5, ACTION_DIM)
    assert not torch.allclose(first, second)
    with set_exploration_type(ExplorationType.DETERMINISTIC):
        first, second = generator(td.clone())["action"], generator(td.clone())["action"]
    torch.testing.assert_close(first, second)


def test_generator_feeds_scaled_noise_and_the_raw_time_input():
    seen = {}

    class Recorder(nn.Module):
        def forward(self, x, observation, t):
            seen.update(x=x, t=t)
            return x

    generator = OneStepGenerator(Recorder(), action_dim=2, generation_sigma=2.5)
    noise = torch.randn(4, 2)
    out = generator(torch.zeros(4, 1), noise)
    torch.testing.assert_close(out, 2.5 * noise)
    torch.testing.assert_close(seen["t"], torch.full((4, 1), 2.5))
    with pytest.raises(ValueError, match="generation_sigma"):
        OneStepGenerator(Recorder(), action_dim=2, generation_sigma=0.0)


# ----------------------------------------------------------------------------------------------- the loss
def test_forward_returns_every_loss_and_diagnostics_and_writes_td_error():
    loss = make_loss()
    batch = make_batch()
    out = loss(batch)
    assert {k for k in out.keys() if k.startswith("loss_")} == {
        "loss_actor",
        "loss_qvalue",
        "loss_value",
        "loss_diffusion",
        "loss_fake_score",
    }
    for key in ("distill", "min_q_actor", "distill_grad_norm"):
        assert out[key].shape == ()
    assert batch["td_error"].shape == (BATCH,)


@pytest.mark.parametrize(
    "method, network",
    [
        ("actor_loss", "actor_network"),
        ("fake_score_loss", "fake_score_network"),
        ("diffusion_loss", "diffusion_network"),
        ("qvalue_loss", "qvalue_network"),
        ("value_loss", "value_network"),
    ],
)
def test_each_loss_moves_only_its_own_network(method, network):
    loss = make_loss()
    value, _ = getattr(loss, method)(make_batch())
    value.backward()
    assert networks_with_grad(loss) == {network}
    for name in NETWORKS:
        target = getattr(loss, f"target_{name}_params", None)
        assert all(p.grad is None for p in target.values(True, True)) if target is not None else True


def test_generator_loss_reaches_the_generator_through_both_terms():
    loss = make_loss(alpha=1.0)
    batch = make_batch()
    # Q term alone (distillation weight 0)
    loss.alpha = 0.0
    loss.actor_loss(batch)[0].backward()
    assert networks_with_grad(loss) == {"actor_network"}
    zero_grads(loss)
    # distillation term alone: the generator's gradient differs from the Q-only one
    loss.alpha = 1.0
    torch.manual_seed(0)
    with_distill = torch.autograd.grad(loss.actor_loss(batch)[0], trainable(loss, "actor_network"))
    loss.alpha = 0.0
    torch.manual_seed(0)
    q_only = torch.autograd.grad(loss.actor_loss(batch)[0], trainable(loss, "actor_network"))
    assert any(not torch.allclose(a, b) for a, b in zip(with_distill, q_only))


def test_dmd_direction_points_from_the_fake_density_towards_the_real_one():
    modules = make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN)
    modules["actor_network"] = make_one_step_generator(OBS_DIM, SPEC, hidden_dim=HIDDEN, time_embed_dim=4)
    modules["diffusion_network"] = point_mass_model([0.5, -0.5])  # the data
    loss = KLDistillLoss(**modules, fake_score_network=point_mass_model([0.0, 0.0]))  # the generator's samples
    action = torch.randn(64, ACTION_DIM) * 0.1
    direction = loss.dmd_direction(action, torch.zeros(64, OBS_DIM))
    # (D_fake - D_real) / mean|a - D_real| = ((0, 0) - (0.5, -0.5)) / mean|a - (0.5, -0.5)|
    normalizer = (action - torch.tensor([0.5, -0.5])).abs().mean(-1, keepdim=True)
    torch.testing.assert_close(direction, torch.tensor([-0.5, 0.5]) / normalizer)
    # a gradient step on L_KL moves the actions towards the data
    stepped = action - 0.1 * direction
    assert bool(((stepped - torch.tensor([0.5, -0.5])).norm(dim=-1) < (action - torch.tensor([0.5, -0.5])).norm(dim=-1)).all())


def test_distillation_vanishes_when_the_fake_score_equals_the_real_one():
    loss = make_loss()
    loss.copy_diffusion_to_fake_score()
    for real, fake in zip(
        loss.diffusion_network_params.values(True, True), loss.fake_score_network_params.values(True, True)
    ):
        torch.testing.assert_close(real, fake)
    _, metadata = loss.actor_loss(make_batch())
    # exactly 0 on purpose: the same network code with bit-equal weights on the same inputs, one machine
    assert float(metadata["distill"].abs().max()) == 0.0


def test_generator_and_fake_score_can_start_from_the_behaviour_model():
    modules = make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN, time_embed_dim=4)
    modules["actor_network"] = make_one_step_generator(OBS_DIM, SPEC, hidden_dim=HIDDEN, time_embed_dim=4)
    fake_score = make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN, time_embed_dim=4)["diffusion_network"]
    loss = KLDistillLoss(**modules, fake_score_network=fake_score)
    loss.copy_diffusion_to_generator()
    denoiser = loss.diffusion_network_params["module", "denoiser"]
    for key, value in loss.actor_network_params["module", "backbone"].items(True, True):
        torch.testing.assert_close(value, denoiser[key])
    wider = make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN, time_embed_dim=4)
    wider["actor_network"] = make_one_step_generator(OBS_DIM, SPEC, hidden_dim=2 * HIDDEN, time_embed_dim=4)
    mismatched = KLDistillLoss(**wider, fake_score_network=make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN, time_embed_dim=4)["diffusion_network"])
    with pytest.raises(ValueError, match="architecture"):
        mismatched.copy_diffusion_to_generator()


def test_reduction_none_and_keyword_call():
    loss = make_loss(reduction="none")
    out = loss(make_batch())
    for key in ("loss_actor", "loss_fake_score", "loss_diffusion", "loss_value", "distill"):
        assert out[key].shape == (BATCH,)
    loss = make_loss()
    batch = make_batch()
    loss.select_out_keys("loss_actor", "loss_fake_score")
    torch.manual_seed(0)
    loss_actor, loss_fake_score = loss(
        observation=batch["observation"],
        action=batch["action"],
        next_observation=batch["next", "observation"],
        next_reward=batch["next", "reward"],
        next_done=batch["next", "done"],
        next_terminated=batch["next", "terminated"],
    )
    torch.manual_seed(0)
    out = loss(batch.clone())
    torch.testing.assert_close(loss_actor, out["loss_actor"])
    torch.testing.assert_close(loss_fake_score, out["loss_fake_score"])


def test_state_dict_round_trip():
    source, target = make_loss(), make_loss()
    target.load_state_dict(source.state_dict())
    for name in NETWORKS:
        for a, b in zip(trainable(source, name), trainable(target, name)):
            torch.testing.assert_close(a, b)


def test_mismatched_fake_score_is_refused():
    modules = make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN)
    modules["actor_network"] = make_one_step_generator(OBS_DIM, SPEC, hidden_dim=HIDDEN, time_embed_dim=4)
    unclamped = make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN, clip_denoised=False)["diffusion_network"]
    with pytest.raises(ValueError, match="clamp"):
        KLDistillLoss(**modules, fake_score_network=unclamped)
    other_sigma = make_dtql_modules(OBS_DIM, SPEC, hidden_dim=HIDDEN, sigma_data=1.0)["diffusion_network"]
    with pytest.raises(ValueError, match="EDM constants"):
        KLDistillLoss(**modules, fake_score_network=other_sigma)
    with pytest.raises(TypeError, match="EDMDiffusionActor"):
        KLDistillLoss(**modules, fake_score_network=modules["value_network"])
    assert EDMConfig() == EDMConfig()  # the comparison the check relies on


def test_update_step_moves_every_part_and_the_target_critic():
    loss = make_loss()
    optimizers = make_kl_distill_optimizers(loss, lr=1e-2)
    assert isinstance(optimizers, KLDistillOptimizers)
    updater = SoftUpdate(loss, tau=0.5)
    before = {name: [p.detach().clone() for p in trainable(loss, name)] for name in NETWORKS}
    target_before = [p.clone() for p in loss.target_qvalue_network_params.values(True, True)]
    out = kl_distill_update_step(loss, optimizers, make_batch(), target_updater=updater)
    assert {"loss_actor", "loss_qvalue", "loss_value", "loss_diffusion", "loss_fake_score"} <= set(out.keys())
    for name in NETWORKS:
        after = trainable(loss, name)
        assert any(not torch.equal(a, b) for a, b in zip(before[name], after)), f"{name} did not move"
    assert any(not torch.equal(a, b) for a, b in zip(target_before, loss.target_qvalue_network_params.values(True, True)))


def test_pretraining_step_leaves_generator_and_fake_score_alone():
    loss = make_loss()
    optimizers = make_kl_distill_optimizers(loss, lr=1e-2)
    frozen = {name: [p.detach().clone() for p in trainable(loss, name)] for name in ("actor_network", "fake_score_network")}
    out = kl_distill_update_step(loss, optimizers, make_batch(), pretrain=True)
    assert "loss_fake_score" not in out.keys() and "loss_actor" not in out.keys()
    for name, params in frozen.items():
        for a, b in zip(params, trainable(loss, name)):
            torch.testing.assert_close(a, b)
    state = optimizers.state_dict()
    assert set(state) == {"critic", "diffusion", "actor", "fake_score"}
    optimizers.load_state_dict(state)
