"""The acting modules: one-step actor, EDM diffusion actor and the Q-reranking actor (also inside env.rollout)."""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_dtql import (
    DTQLLoss,
    EDMDenoiserNetwork,
    EDMDiffusionActor,
    QRerankingActor,
    dtql_update_step,
    make_dtql_modules,
    make_dtql_optimizers,
    make_one_step_actor,
    make_qvalue_network,
)

from _dtql_common import make_batch

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


class TestQRerankingActor:
    def _parts(self):
        torch.manual_seed(0)
        actor = make_one_step_actor(3, Bounded(-1.0, 1.0, shape=(2,)), hidden_dim=16)
        qnets = [make_qvalue_network(3, 2, hidden_dim=16) for _ in range(2)]
        return actor, qnets

    @pytest.mark.parametrize("batch_shape", [[], [1], [7], [2, 3]])
    def test_batched_shapes(self, batch_shape):
        actor, qnets = self._parts()
        policy = QRerankingActor(actor, qnets, num_candidates=8)
        td = TensorDict(observation=torch.randn(*batch_shape, 3), batch_size=batch_shape)
        assert policy(td)["action"].shape == (*batch_shape, 2)

    def test_argmax_picks_best_candidate(self):
        """With temperature 0 the chosen action has the highest min-Q among many fresh candidates."""
        actor, qnets = self._parts()
        policy = QRerankingActor(actor, qnets, num_candidates=512, temperature=0.0)
        obs = _obs(1)
        chosen = policy(obs.clone())["action"]

        def min_q(action):
            td = TensorDict(observation=obs["observation"].expand(action.shape[0], 3), action=action,
                            batch_size=[action.shape[0]])
            return torch.stack([q(td.clone())["state_action_value"] for q in qnets]).amin(0).squeeze(-1)

        others = actor(obs.expand(512).clone())["action"]
        with torch.no_grad():
            assert min_q(chosen) >= torch.quantile(min_q(others), 0.98)

    @pytest.mark.parametrize("temperature", [1.0, 2.0])
    def test_softmax_selection_frequencies(self, temperature):
        """Candidates with Q = 0, 1, 2, 3 are chosen with probabilities softmax(Q / temperature)."""
        from tensordict.nn import TensorDictModule
        from torchrl.modules import ValueOperator

        class FourCandidates(nn.Module):  # candidate k of every state is the action (k / 4, 0)
            def forward(self, observation):
                k = torch.arange(4.0).repeat(observation.shape[0] // 4)
                return torch.stack([k / 4, torch.zeros_like(k)], -1)

        class QIsIndex(nn.Module):
            def forward(self, observation, action):
                return action[..., :1] * 4

        actor = TensorDictModule(FourCandidates(), in_keys=["observation"], out_keys=["action"])
        q = ValueOperator(QIsIndex(), in_keys=["observation", "action"])
        policy = QRerankingActor(actor, [q], num_candidates=4, temperature=temperature)
        torch.manual_seed(0)
        chosen = policy(_obs(20000))["action"][:, 0] * 4
        freq = torch.bincount(chosen.round().long(), minlength=4).float() / 20000
        expected = torch.softmax(torch.arange(4.0) / temperature, 0)
        torch.testing.assert_close(freq, expected, atol=0.012, rtol=0)

    def test_invalid_arguments(self):
        actor, qnets = self._parts()
        with pytest.raises(ValueError, match="num_candidates"):
            QRerankingActor(actor, qnets, num_candidates=0)
        with pytest.raises(ValueError, match="temperature"):
            QRerankingActor(actor, qnets, temperature=-1.0)

    def test_from_loss_follows_training(self):
        """An actor built from the loss changes its choices as training moves the (target) critic."""
        torch.manual_seed(0)
        modules = make_dtql_modules(3, 2, hidden_dim=32)
        loss = DTQLLoss(**modules, alpha=1.0)
        policy = QRerankingActor.from_loss(loss, num_candidates=64, temperature=0.0, use_target_qvalue=False)
        obs = _obs(16)
        torch.manual_seed(1)
        before = policy(obs.clone())["action"]
        optimizers = make_dtql_optimizers(loss, lr=1e-3)
        for i in range(20):
            dtql_update_step(loss, optimizers, make_batch(64, seed=i), pretrain=True)  # critic moves, actor does not
        torch.manual_seed(1)
        after = policy(obs.clone())["action"]
        assert not torch.allclose(before, after)
        # and it reads the loss's stacked Q params, not the user's (unchanged) modules
        frozen = QRerankingActor(modules["actor_network"], modules["qvalue_network"], num_candidates=64, temperature=0.0)
        torch.manual_seed(1)
        assert not torch.allclose(frozen(obs.clone())["action"], after)

    def test_from_loss_uses_target_critic_by_default(self):
        loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        policy = QRerankingActor.from_loss(loss)
        assert policy.qvalue_params is loss.target_qvalue_network_params
        assert policy.actor_params is loss.actor_network_params

    def test_inside_env_rollout(self):
        from torchrl.envs import GymEnv, TransformedEnv, DoubleToFloat, StepCounter

        env = TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())
        env.append_transform(StepCounter(10))
        env.set_seed(0)
        modules = make_dtql_modules(env.observation_spec["observation"], env.action_spec_unbatched, hidden_dim=16)
        loss = DTQLLoss(**modules, alpha=1.0)
        policy = QRerankingActor.from_loss(loss, num_candidates=16)
        with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
            rollout = env.rollout(10, policy)
        assert rollout["action"].shape == (10, 1)
        assert env.action_spec.is_in(rollout["action"][0])
        env.close()
