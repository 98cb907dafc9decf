"""DTQLLoss's value estimators: TD0 on sampled transitions (what DTQL uses); TD1 and TD(lambda) on trajectories only.

TorchRL's multi-step estimators read the last batch dimension as time unless told otherwise. On a batch of
uniformly sampled transitions that makes every target bootstrap through the next, unrelated row: wrong, and
silent. ``DTQLLoss`` refuses such batches with an error that says so and names the fix; on trajectory slices whose
time dimension is named (or given as ``time_dim``) it computes the multi-step targets, checked here against a loop.
"""
from __future__ import annotations

import pytest
import torch
from tensordict import TensorDict
from torchrl.objectives.utils import ValueEstimators

from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_optimizers

from _dtql_common import make_batch, make_loss, OBS_DIM, ACTION_DIM

pytestmark = [pytest.mark.filterwarnings("error"), pytest.mark.filterwarnings("ignore:No target network updater")]

MULTI_STEP = [ValueEstimators.TD1, ValueEstimators.TDLambda]
GAMMA, LMBDA = 0.9, 0.7


def _trajectories(num: int = 3, length: int = 4, seed: int = 0) -> TensorDict:
    """``[num, length]`` consecutive transitions (``next`` observation = the following observation), with one
    termination inside the second trajectory and a truncation (done, not terminated) at the end of the third."""
    g = torch.Generator().manual_seed(seed)
    observations = torch.randn(num, length + 1, OBS_DIM, generator=g)
    done = torch.zeros(num, length, 1, dtype=torch.bool)
    terminated = torch.zeros(num, length, 1, dtype=torch.bool)
    terminated[1, 1] = done[1, 1] = True  # steps 2.. of trajectory 1 start a new episode
    done[2, -1] = True
    return TensorDict(
        observation=observations[:, :-1],
        action=torch.rand(num, length, ACTION_DIM, generator=g) * 2 - 1,
        next=TensorDict(
            observation=observations[:, 1:],
            reward=torch.randn(num, length, 1, generator=g),
            done=done,
            terminated=terminated,
            batch_size=[num, length],
        ),
        batch_size=[num, length],
    )


@torch.no_grad()
def _next_values(loss: DTQLLoss, batch: TensorDict) -> torch.Tensor:
    td = batch["next"].select(*loss.value_network.in_keys).copy()
    with loss.value_network_params.to_module(loss.value_network):
        return loss.value_network(td)[loss.tensor_keys.value].squeeze(-1)


def _expected_targets(loss: DTQLLoss, batch: TensorDict, lmbda: float) -> torch.Tensor:
    """The lambda-return, written as a backward loop over each trajectory (``lmbda=1``: the TD(1) return).

    ``G_t = r_t + gamma (1 - terminated_t) [(1 - lmbda) V(s'_t) + lmbda G_{t+1}]``, where ``G_{t+1}`` is replaced by
    ``V(s'_t)`` at an episode end (``done_t``) and at the end of the slice.
    """
    reward = batch["next", "reward"].squeeze(-1)
    done, terminated = batch["next", "done"].squeeze(-1), batch["next", "terminated"].squeeze(-1)
    next_value = _next_values(loss, batch)
    target = torch.zeros_like(reward)
    num, length = reward.shape
    for i in range(num):
        following = None
        for t in reversed(range(length)):
            bootstrap = next_value[i, t]
            continuation = bootstrap if following is None or done[i, t] else following
            blended = (1 - lmbda) * bootstrap + lmbda * continuation
            target[i, t] = reward[i, t] + GAMMA * (~terminated[i, t]).float() * blended
            following = target[i, t]
    return target


def _make_estimator(loss: DTQLLoss, value_type: ValueEstimators, **kwargs) -> float:
    """Builds the estimator; returns the lambda its targets use (1 for TD1)."""
    if value_type == ValueEstimators.TDLambda:
        loss.make_value_estimator(value_type, gamma=GAMMA, lmbda=LMBDA, **kwargs)
        return LMBDA
    loss.make_value_estimator(value_type, gamma=GAMMA, **kwargs)
    return 1.0


@pytest.mark.parametrize("value_type", MULTI_STEP, ids=str)
def test_multi_step_estimators_refuse_a_batch_of_sampled_transitions(value_type):
    loss = make_loss()
    _make_estimator(loss, value_type)
    batch = make_batch(32)
    # the problem (a batch read as one trajectory) and the fix (TD0, DTQL's target)
    message = r"(?s)multi-step returns.*one trajectory.*silently wrong.*TD0.*make_value_estimator\(ValueEstimators.TD0"
    with pytest.raises(ValueError, match=message):
        loss(batch)
    with pytest.raises(ValueError, match=message):
        loss.qvalue_loss(batch)
    with pytest.raises(ValueError, match=message):  # the default step takes the plain path here, and refuses too
        dtql_update_step(loss, make_dtql_optimizers(loss), batch)


@pytest.mark.parametrize("value_type", MULTI_STEP, ids=str)
def test_named_trajectory_batches_get_the_multi_step_targets(value_type):
    loss = make_loss()
    lmbda = _make_estimator(loss, value_type)
    batch = _trajectories()
    batch.names = [None, "time"]
    _, metadata = loss.qvalue_loss(batch)
    # the estimator's vectorised recursion against a Python loop over the same float32 values: rounding only
    torch.testing.assert_close(metadata["target_value"], _expected_targets(loss, batch, lmbda), rtol=1e-5, atol=1e-5)
    out = loss(batch)
    assert out["loss_qvalue"].shape == () and torch.isfinite(out["loss_qvalue"])


@pytest.mark.parametrize("value_type", MULTI_STEP, ids=str)
def test_an_explicit_time_dim_is_accepted(value_type):
    loss = make_loss()
    lmbda = _make_estimator(loss, value_type, time_dim=1)
    batch = _trajectories()  # no names: the estimator was told where time runs
    # as above: a vectorised recursion against a loop, float32 rounding only
    torch.testing.assert_close(loss.qvalue_target(batch), _expected_targets(loss, batch, lmbda), rtol=1e-5, atol=1e-5)


def test_what_the_refusal_prevents():
    """On a flat batch TorchRL's TD1 reads the rows as one trajectory: the target of a transition then depends on
    which transitions happen to follow it. TD0's does not (it commutes with shuffling the batch)."""
    loss = make_loss()
    loss.make_value_estimator(ValueEstimators.TD1, gamma=GAMMA)
    batch = make_batch(32)
    batch["next", "done"].zero_()
    batch["next", "terminated"].zero_()
    permutation = torch.randperm(32, generator=torch.Generator().manual_seed(0))
    td1 = loss.value_estimator.value_estimate(batch.clone()).squeeze(-1)  # what the guard stops
    td1_shuffled = loss.value_estimator.value_estimate(batch[permutation].clone()).squeeze(-1)
    assert not torch.allclose(td1_shuffled, td1[permutation])

    loss.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    td0 = loss.qvalue_target(batch)
    # one computation per row in both orders: float32 rounding at most
    torch.testing.assert_close(loss.qvalue_target(batch[permutation]), td0[permutation], rtol=1e-6, atol=1e-6)
    expected = batch["next", "reward"].squeeze(-1) + GAMMA * _next_values(loss, batch)
    torch.testing.assert_close(td0, expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("value_type", MULTI_STEP, ids=str)
def test_one_step_trajectories_reduce_to_td0(value_type):
    """Each transition as its own trajectory of length 1 ([B, 1], time named): the multi-step target is TD0's."""
    loss = make_loss()
    batch = make_batch(16)
    loss.make_value_estimator(ValueEstimators.TD0, gamma=GAMMA)
    td0 = loss.qvalue_target(batch)
    _make_estimator(loss, value_type)
    trajectories = batch.unsqueeze(-1)
    trajectories.names = [None, "time"]
    # the same one-step formula through two estimators: float32 rounding at most
    torch.testing.assert_close(loss.qvalue_target(trajectories).squeeze(-1), td0, rtol=1e-6, atol=1e-6)


def test_td0_is_the_default():
    assert DTQLLoss.default_value_estimator == ValueEstimators.TD0
    loss = make_loss()
    assert type(loss.value_estimator).__name__ == "TD0Estimator"
    loss.qvalue_loss(make_batch(32))  # a flat batch of transitions is what TD0 is for
