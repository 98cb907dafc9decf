"""torchrl_dtql.policies: the one reranking function, the Q-reranking actor, FunctionalPolicy and the acting modes."""
from __future__ import annotations

import doctest
import importlib

import pytest
import torch
from tensordict import TensorDict
from torch import nn
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

import torchrl_dtql
from torchrl_dtql import (
    DTQLLoss,
    dtql_update_step,
    make_dtql_modules,
    make_dtql_optimizers,
    make_one_step_actor,
    make_qvalue_network,
    QRerankingActor,
)
from torchrl_dtql.policies import (
    ACTING_MODES,
    FunctionalPolicy,
    make_acting_policies,
    make_acting_policy,
    repeat_for_candidates,
    rerank,
    UnknownActingModeError,
)

from _dtql_common import make_batch, make_loss, OBS_DIM

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.filterwarnings("ignore:No target network updater")]


def _obs(batch=5, dim=3):
    return TensorDict(observation=torch.randn(batch, dim), batch_size=[batch])


class TestRerank:
    @pytest.mark.parametrize("batch_shape", [[], [3], [2, 3]])
    def test_argmax_picks_the_best_candidate_of_every_state(self, batch_shape):
        candidates = torch.randn(*batch_shape, 6, 2)
        min_q = torch.randn(*batch_shape, 6)
        chosen = rerank(candidates, min_q, temperature=0.0)
        assert chosen.shape == (*batch_shape, 2)
        best = min_q.argmax(-1, keepdim=True)[..., None].expand(*batch_shape, 1, 2)
        # exact on purpose: the pick is a gather of one candidate, no arithmetic
        torch.testing.assert_close(chosen, candidates.gather(-2, best).squeeze(-2), rtol=0, atol=0)

    @pytest.mark.parametrize("temperature", [1.0, 2.0])
    def test_sampling_frequencies_are_the_softmax(self, temperature):
        """Candidates scored 0, 1, 2, 3 are chosen with probabilities softmax(Q / temperature)."""
        states = 20000
        candidates = torch.arange(4.0).expand(states, 4)[..., None]  # candidate k is the action k
        min_q = torch.arange(4.0).expand(states, 4)
        chosen = rerank(candidates, min_q, temperature, generator=torch.Generator().manual_seed(0))
        freq = torch.bincount(chosen.squeeze(-1).long(), minlength=4).float() / states
        # 20000 draws: the standard error of a frequency is at most 0.0035, so 0.012 is over 3 of them
        torch.testing.assert_close(freq, torch.softmax(torch.arange(4.0) / temperature, 0), atol=0.012, rtol=0)

    def test_one_multinomial_draw_from_the_given_generator(self):
        """The order of random draws every implementation relies on: one multinomial call over the flat states."""
        candidates, min_q = torch.randn(2, 3, 8, 2), torch.randn(2, 3, 8)
        chosen = rerank(candidates, min_q, 0.5, generator=torch.Generator().manual_seed(3))
        index = torch.multinomial(torch.softmax(min_q / 0.5, -1).reshape(6, 8), 1,
                                  generator=torch.Generator().manual_seed(3)).reshape(2, 3)  # fmt: skip
        expected = candidates.gather(-2, index[..., None, None].expand(2, 3, 1, 2)).squeeze(-2)
        # exact on purpose: the same call on the same numbers
        torch.testing.assert_close(chosen, expected, rtol=0, atol=0)
        torch.manual_seed(5)
        default = rerank(candidates, min_q, 0.5)
        torch.manual_seed(5)
        torch.testing.assert_close(default, rerank(candidates, min_q, 0.5), rtol=0, atol=0)  # exact: same seed

    def test_argmax_draws_nothing(self):
        torch.manual_seed(0)
        rerank(torch.randn(4, 8, 2), torch.randn(4, 8), 0.0)
        after = torch.rand(3)
        torch.manual_seed(0)
        torch.randn(4, 8, 2), torch.randn(4, 8)
        # exact on purpose: the generator must be where the inputs left it
        torch.testing.assert_close(after, torch.rand(3), rtol=0, atol=0)

    def test_negative_temperature_is_refused(self):
        with pytest.raises(ValueError, match="temperature"):
            rerank(torch.zeros(1, 2, 1), torch.zeros(1, 2), -1.0)

    def test_candidate_layout_is_the_references(self):
        """State-major, as the reference's repeat_interleave of the states (what the actor and the export use)."""
        states = torch.randn(5, 3)
        # exact on purpose: both only copy values
        torch.testing.assert_close(repeat_for_candidates(states, 4), torch.repeat_interleave(states, 4, dim=0),
                                   rtol=0, atol=0)  # fmt: skip
        nested = torch.randn(2, 3, 7)
        torch.testing.assert_close(repeat_for_candidates(nested, 4, batch_dims=2),
                                   torch.repeat_interleave(nested.reshape(6, 7), 4, dim=0), rtol=0, atol=0)  # fmt: skip


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


class TestFunctionalPolicy:
    def test_reads_the_loss_parameters_by_reference(self):
        loss = make_loss()
        policy = FunctionalPolicy(loss.actor_network, loss.actor_network_params, ExplorationType.DETERMINISTIC)
        td = TensorDict(observation=torch.randn(4, OBS_DIM), batch_size=[4])
        before = policy(td.clone())["action"]
        with torch.no_grad():
            loss.actor_network_params.apply_(lambda p: p.mul_(2.0))  # an in-place update, as an optimizer step
        assert not torch.allclose(policy(td.clone())["action"], before)
        assert policy.in_keys == ["observation"] and policy.out_keys == loss.actor_network.out_keys

    def test_its_exploration_type_wins_over_the_callers(self):
        loss = make_loss()
        td = TensorDict(observation=torch.randn(4, OBS_DIM), batch_size=[4])
        mean = FunctionalPolicy(loss.actor_network, loss.actor_network_params, ExplorationType.DETERMINISTIC)
        with set_exploration_type(ExplorationType.RANDOM):
            # exact on purpose: the mean action draws nothing, so two calls run the same computation
            torch.testing.assert_close(mean(td.clone())["action"], mean(td.clone())["action"], rtol=0, atol=0)
        sampled = FunctionalPolicy(loss.diffusion_network, loss.diffusion_network_params, ExplorationType.RANDOM)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            assert not torch.allclose(sampled(td.clone())["action"], sampled(td.clone())["action"])


class TestActingModes:
    @pytest.mark.parametrize("mode", ACTING_MODES)
    def test_every_mode_acts_within_the_action_spec(self, mode):
        spec = Bounded(torch.tensor([-1.0, 0.0]), torch.tensor([1.0, 0.5]), shape=(2,))
        loss = DTQLLoss(**make_dtql_modules(OBS_DIM, spec, hidden_dim=16), alpha=1.0)
        policy = make_acting_policy(loss, mode, num_candidates=8)
        with set_exploration_type(ExplorationType.DETERMINISTIC):
            action = policy(TensorDict(observation=torch.randn(6, OBS_DIM), batch_size=[6]))["action"]
        assert action.shape == (6, 2) and spec.is_in(action)

    def test_reranked_mode_is_the_papers_policy(self):
        loss = make_loss()
        policy = make_acting_policy(loss, "reranked", num_candidates=8, temperature=0.0)
        assert isinstance(policy, QRerankingActor)
        assert policy.num_candidates == 8 and policy.temperature == 0.0
        assert policy.qvalue_params is loss.target_qvalue_network_params
        online = make_acting_policy(loss, "reranked", use_target_qvalue=False)
        assert online.qvalue_params is loss.qvalue_network_params and online.num_candidates == 1024

    def test_mean_mode_is_the_deterministic_actor(self):
        loss = make_loss()
        td = TensorDict(observation=torch.randn(4, OBS_DIM), batch_size=[4])
        with set_exploration_type(ExplorationType.DETERMINISTIC), loss.actor_network_params.to_module(loss.actor_network):
            expected = loss.actor_network(td.clone())["action"]
        # exact on purpose: the same network, parameters and input
        torch.testing.assert_close(make_acting_policy(loss, "mean")(td.clone())["action"], expected, rtol=0, atol=0)

    def test_policies_in_the_given_order(self):
        policies = make_acting_policies(make_loss(), ["mean", "diffusion_bc", "reranked"], num_candidates=4)
        assert list(policies) == ["mean", "diffusion_bc", "reranked"]

    def test_unknown_or_missing_modes_are_named(self):
        loss = make_loss()
        with pytest.raises(UnknownActingModeError, match="'argmax'.*'reranked', 'mean', 'diffusion_bc'"):
            make_acting_policy(loss, "argmax")
        with pytest.raises(UnknownActingModeError, match=r"\['argmax'\]"):
            make_acting_policies(loss, ["mean", "argmax"])
        with pytest.raises(UnknownActingModeError, match="no acting mode"):
            make_acting_policies(loss, [])
        assert issubclass(UnknownActingModeError, ValueError)


def test_moved_names_import_from_their_home_and_the_top_level():
    from torchrl_dtql.export import ExportablePolicy, make_exportable_policy
    from torchrl_dtql.policies import ExportablePolicy as exportable_home, make_exportable_policy as make_home

    assert torchrl_dtql.QRerankingActor is QRerankingActor
    assert ExportablePolicy is exportable_home and make_exportable_policy is make_home
    # modules/ never imports policies/: the old path names the new one instead of importing it
    with pytest.raises(AttributeError, match="from torchrl_dtql.policies import QRerankingActor"):
        torchrl_dtql.modules.QRerankingActor  # noqa: B018
    with pytest.raises(AttributeError):
        torchrl_dtql.modules.NoSuchActor  # noqa: B018


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("name", ["reranking", "reranking_actor", "functional", "acting_modes", "exportable", "__init__"])
def test_docstring_examples(name):
    module = importlib.import_module("torchrl_dtql.policies" + ("" if name == "__init__" else f".{name}"))
    assert doctest.testmod(module).failed == 0
