"""torchrl_dtql.export: the exported acting policy acts as the live one (to rounding), from raw observations."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from tensordict import TensorDict
from torchrl.data import Bounded
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_dtql import DTQLLoss, make_dtql_modules, QRerankingActor
from torchrl_dtql.export import export_policy, ExportablePolicy, load_policy, make_exportable_policy

from _dtql_common import ACTION_ATOL, ACTION_RTOL, assert_same_reranked_pick, reference_rerank

OBS_DIM, ACT_DIM = 5, 3


@pytest.fixture(scope="module")
def loss() -> DTQLLoss:
    """A loss whose target critic differs from the online one (as after training), with non-unit action bounds."""
    torch.manual_seed(0)
    spec = Bounded(torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([1.0, 2.0, 0.5]), shape=(ACT_DIM,))
    loss = DTQLLoss(**make_dtql_modules(OBS_DIM, spec, hidden_dim=16), alpha=1.0)
    with torch.no_grad():
        loss.target_qvalue_network_params.apply_(lambda p: p.add_(0.3 * torch.randn_like(p)))
        loss.actor_network_params.apply_(lambda p: p.mul_(3.0))  # wider policy: candidates differ visibly
    return loss


def live_mean_action(loss: DTQLLoss, observation: torch.Tensor) -> torch.Tensor:
    td = TensorDict(observation=observation, batch_size=observation.shape[:1])
    with set_exploration_type(ExplorationType.DETERMINISTIC), loss.actor_network_params.to_module(loss.actor_network):
        return loss.actor_network(td)["action"].detach()


def live_reranked_action(loss: DTQLLoss, observation: torch.Tensor, num_candidates: int, temperature: float, seed: int):
    policy = QRerankingActor.from_loss(loss, num_candidates, temperature)
    torch.manual_seed(seed)
    return policy(TensorDict(observation=observation, batch_size=observation.shape[:1]))["action"]


@pytest.mark.parametrize("temperature", [1.0, 0.0])
def test_reranked_policy_matches_live_actor(loss, temperature):
    """The exported policy and the live QRerankingActor pick the same candidates from the same seed.

    They are two implementations (plain modules vs TensorDict modules with the fast Mish), so their actions and Q
    values agree to float32 rounding, not bit for bit (4.8e-7 apart on an AVX-512 CPU); with argmax
    (``temperature=0``) a near-tie in min Q may then go either way, which ``assert_same_reranked_pick`` allows
    (only between tied best candidates, of the reference selection's candidates and scores).
    """
    observation = torch.randn(6, OBS_DIM)
    torch.manual_seed(3)
    reference, candidates, min_q = reference_rerank(loss, observation, 64, temperature)
    live = live_reranked_action(loss, observation, 64, temperature, seed=3)
    exported = make_exportable_policy(loss, num_candidates=64, temperature=temperature)
    torch.manual_seed(3)
    got = exported(observation)
    assert got.shape == live.shape == (6, ACT_DIM)
    assert_same_reranked_pick(live, reference, candidates, min_q, temperature=temperature)
    assert_same_reranked_pick(got, reference, candidates, min_q, temperature=temperature)
    # the choice depends on the candidates: another seed gives other actions
    assert not torch.allclose(live_reranked_action(loss, observation, 64, temperature, seed=4), live)


def test_reranking_uses_the_target_critic_by_default(loss):
    observation = torch.randn(16, OBS_DIM)
    target = make_exportable_policy(loss, num_candidates=64, temperature=0.0)
    online = make_exportable_policy(loss, num_candidates=64, temperature=0.0, use_target_qvalue=False)
    torch.manual_seed(0)
    a = target(observation)
    torch.manual_seed(0)
    b = online(observation)
    assert not torch.equal(a, b)


def test_exported_file_acts_like_the_live_policy(loss, tmp_path):
    """Both acting modes through the file: same actions as the live modules, from raw numpy observations."""
    observation = torch.randn(4, OBS_DIM)
    reranked = load_policy(
        export_policy(
            make_exportable_policy(loss, num_candidates=32), tmp_path / "reranked.pt2", metadata={"env_id": "Test-v0"}
        )
    )
    torch.manual_seed(7)
    actions = reranked(observation.double().numpy())
    assert isinstance(actions, np.ndarray) and actions.shape == (4, ACT_DIM)
    torch.manual_seed(7)
    reference, candidates, min_q = reference_rerank(loss, observation, 32, 1.0)
    # the exported program vs the live modules: the same picks, to float32 rounding (see the first test)
    assert_same_reranked_pick(torch.from_numpy(actions), reference, candidates, min_q, temperature=1.0)
    assert_same_reranked_pick(live_reranked_action(loss, observation, 32, 1.0, seed=7), reference, candidates, min_q,
                              temperature=1.0)  # fmt: skip
    assert reranked.metadata["env_id"] == "Test-v0" and reranked.metadata["num_candidates"] == 32

    mean = load_policy(export_policy(make_exportable_policy(loss, num_candidates=0), tmp_path / "mean.pt2"))
    expected = live_mean_action(loss, observation)
    # exported graph vs live TensorDict actor: two kernels for one float32 MLP, equal to rounding (~1e-6 relative)
    torch.testing.assert_close(mean(observation), expected, rtol=ACTION_RTOL, atol=ACTION_ATOL)
    # one observation (batch size 1 is handled by the dynamic batch dimension): a matrix-vector product may round
    # differently from a row of a matrix-matrix product, so the same tolerance
    np.testing.assert_allclose(mean(observation[0].numpy()), expected[0].numpy(), rtol=ACTION_RTOL, atol=ACTION_ATOL)
    assert mean.module(observation[:1]).shape == (1, ACT_DIM)
    low, high = torch.tensor([-1.0, -2.0, 0.0]), torch.tensor([1.0, 2.0, 0.5])
    assert bool(((expected >= low) & (expected <= high)).all())
    with pytest.raises(ValueError, match="size 5"):
        mean(np.zeros(OBS_DIM + 1))


def test_observation_normalization_is_folded_in(loss):
    loc, scale = torch.randn(OBS_DIM), torch.rand(OBS_DIM) + 0.5
    raw = torch.randn(3, OBS_DIM) * 4
    policy = make_exportable_policy(loss, num_candidates=0, observation_loc=loc, observation_scale=scale)
    # the normalisation inside the exported module vs before the live actor, then two MLP kernels: float32 rounding
    torch.testing.assert_close(policy(raw), live_mean_action(loss, (raw - loc) / scale), rtol=ACTION_RTOL,
                               atol=ACTION_ATOL)  # fmt: skip


def test_dict_observations_are_concatenated_in_metadata_order(loss, tmp_path):
    path = export_policy(
        make_exportable_policy(loss, num_candidates=0),
        tmp_path / "p.pt2",
        metadata={"observation_keys": ["observation", "desired_goal"]},
    )
    act = load_policy(path)
    obs = {"desired_goal": np.ones(2), "observation": np.zeros(3)}
    # exact on purpose: the same program on the same concatenated input (only the concatenation is under test)
    np.testing.assert_array_equal(act(obs), act(np.array([0.0, 0.0, 0.0, 1.0, 1.0])))


def test_invalid_arguments():
    net = torch.nn.Linear(1, 1)
    bounds = {"action_low": -torch.ones(1), "action_high": torch.ones(1)}
    with pytest.raises(ValueError, match="needs the Q networks"):
        ExportablePolicy(net, None, num_candidates=4, **bounds)
    with pytest.raises(ValueError, match="num_candidates must be >= 0"):
        ExportablePolicy(net, None, num_candidates=-1, **bounds)
