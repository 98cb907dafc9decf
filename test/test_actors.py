"""The actor networks: the one-step actor and the EDM diffusion actor (the Q-reranking actor: test_policies.py)."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_dtql import EDMDenoiserNetwork, EDMDiffusionActor, make_one_step_actor

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.filterwarnings("ignore:No target network updater")]


def _obs(batch=5, dim=3):
    return TensorDict(observation=torch.randn(batch, dim), batch_size=[batch])


class TestOneStepActor:
    def test_reference_structure_and_init(self):
        actor = make_one_step_actor(17, Bounded(-1.0, 1.0, shape=(6,)))
        linears = [m for m in actor.modules() if isinstance(m, nn.Linear)]
        assert [l.out_features for l in linears] == [256, 256, 256, 12]
        assert sum(isinstance(m, nn.ReLU) for m in actor.modules()) == 3
        for layer in linears:
            w = layer.weight
            gram = w @ w.T if w.shape[0] <= w.shape[1] else w.T @ w
            torch.testing.assert_close(gram, torch.eye(gram.shape[0]), atol=1e-4, rtol=0)
            assert layer.bias.abs().sum() == 0

    def test_log_std_clamped(self):
        actor = make_one_step_actor(3, Bounded(-1.0, 1.0, shape=(2,)), hidden_dim=16)
        net = actor.module[0].module
        with torch.no_grad():
            net.net[-1].bias[2:] = 50.0
        td = actor(_obs())
        torch.testing.assert_close(td["scale"], torch.full_like(td["scale"], torch.exp(torch.tensor(2.0)).item()))
        with torch.no_grad():
            net.net[-1].bias[2:] = -50.0
        td = actor(_obs())
        torch.testing.assert_close(td["scale"], torch.full_like(td["scale"], torch.exp(torch.tensor(-5.0)).item()))

    def test_deterministic_is_tanh_mean_and_random_is_stochastic(self):
        spec = Bounded(-2.0, 2.0, shape=(2,))
        actor = make_one_step_actor(3, spec, hidden_dim=16)
        obs = _obs()
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            td = actor(obs.clone())
        torch.testing.assert_close(td["action"], 2.0 * torch.tanh(td["loc"]))
        a1, a2 = actor(obs.clone())["action"], actor(obs.clone())["action"]
        assert not torch.allclose(a1, a2)
        assert spec.is_in(a1)

    def test_rejects_unbounded_spec(self):
        from torchrl.data import Unbounded

        with pytest.raises(TypeError, match="Bounded"):
            make_one_step_actor(3, Unbounded(shape=(2,)))


class TestEDMDiffusionActor:
    def _actor(self, **kwargs):
        torch.manual_seed(0)
        return EDMDiffusionActor(EDMDenoiserNetwork(2, 3, hidden_dim=32), Bounded(-1.0, 1.0, shape=(2,)), **kwargs)

    @pytest.mark.parametrize("solver", ["euler", "heun"])
    @pytest.mark.parametrize("batch_shape", [[1], [4], [2, 3]])
    def test_acts_within_spec(self, solver, batch_shape):
        actor = self._actor(num_steps=3, solver=solver)
        td = TensorDict(observation=torch.randn(*batch_shape, 3), batch_size=batch_shape)
        out = actor(td)
        assert out["action"].shape == (*batch_shape, 2)
        assert (out["action"].abs() <= 1).all()

    def test_deterministic_repeatable_random_not(self):
        actor = self._actor(num_steps=4)
        obs = _obs()
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            a1, a2 = actor(obs.clone())["action"], actor(obs.clone())["action"]
        torch.testing.assert_close(a1, a2)
        b1, b2 = actor(obs.clone())["action"], actor(obs.clone())["action"]
        assert not torch.allclose(b1, b2)

    def test_clamps_to_non_unit_spec(self):
        spec = Bounded(torch.tensor([-0.1, 0.0]), torch.tensor([0.1, 0.5]), shape=(2,))
        actor = EDMDiffusionActor(EDMDenoiserNetwork(2, 3, hidden_dim=16), spec, num_steps=2)
        actions = actor(_obs(64))["action"]
        assert spec.is_in(actions)

    def test_custom_keys(self):
        actor = EDMDiffusionActor(
            EDMDenoiserNetwork(2, 3, hidden_dim=16), Bounded(-1.0, 1.0, shape=(2,)), in_keys=[("agent", "obs")],
            out_keys=[("agent", "act")], num_steps=2,
        )
        td = TensorDict({("agent", "obs"): torch.randn(4, 3)}, batch_size=[4])
        assert actor(td)["agent", "act"].shape == (4, 2)
