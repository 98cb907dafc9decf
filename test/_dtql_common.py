"""Small builders shared by the core tests: tiny DTQL networks and TED batches."""
from __future__ import annotations

import torch
from tensordict import TensorDict
from torchrl.envs.utils import ExplorationType, set_exploration_type

from torchrl_dtql import DTQLLoss, make_dtql_modules

OBS_DIM = 3
ACTION_DIM = 2
BATCH = 16
HIDDEN = 32


def make_batch(
    batch: int = BATCH,
    obs_dim: int = OBS_DIM,
    action_dim: int = ACTION_DIM,
    *,
    observation_key: str = "observation",
    action_key: str = "action",
    reward_key: str = "reward",
    done_key: str = "done",
    terminated_key: str = "terminated",
    seed: int = 0,
) -> TensorDict:
    """A TED batch with random observations, actions in [-1, 1], and some terminated transitions."""
    g = torch.Generator().manual_seed(seed)
    terminated = torch.rand(batch, 1, generator=g) < 0.25
    return TensorDict(
        {
            observation_key: torch.randn(batch, obs_dim, generator=g),
            action_key: torch.rand(batch, action_dim, generator=g) * 2 - 1,
            "next": TensorDict(
                {
                    observation_key: torch.randn(batch, obs_dim, generator=g),
                    reward_key: torch.randn(batch, 1, generator=g),
                    done_key: terminated.clone(),
                    terminated_key: terminated,
                },
                batch_size=[batch],
            ),
        },
        batch_size=[batch],
    )


def make_loss(**kwargs) -> DTQLLoss:
    """A tiny DTQLLoss with reference-shaped networks."""
    module_kwargs = {k: kwargs.pop(k) for k in list(kwargs) if k in ("hidden_dim", "device")}
    module_kwargs.setdefault("hidden_dim", HIDDEN)
    modules = make_dtql_modules(OBS_DIM, ACTION_DIM, **module_kwargs)
    kwargs.setdefault("alpha", 1.0)
    return DTQLLoss(**modules, **kwargs)


# Two implementations of one float32 computation (different kernels, fused vs unfused ops, vmap vs a loop, another
# CPU's vector width) agree to a few ulps, not bit for bit: ~1e-6 relative on the values of these tiny networks.
# Actions are compared with 10x that margin.
ACTION_RTOL, ACTION_ATOL = 1e-5, 1e-5
# Two candidates whose min-Q differ by less than this (relative to max(1, |best min-Q|)) are a tie that rounding may
# break either way: min Q differs between two code paths by a few ulps (~1e-6 relative), so 1e-4 is far above
# rounding and far below the gaps between genuinely different candidates of these random networks.
Q_TIE = 1e-4


def assert_same_reranked_pick(
    got: torch.Tensor,
    expected: torch.Tensor,
    candidates: torch.Tensor,
    min_q: torch.Tensor,
    *,
    temperature: float,
) -> None:
    """Assert that two implementations of Q-reranking picked the same candidate for every state.

    ``expected`` comes from the path that produced ``candidates`` (``[*B, N, act]``) and their scores ``min_q``
    (``[*B, N]``); ``got`` from another implementation run on the same random draws. Rows are compared to
    float32 rounding (:data:`ACTION_RTOL`, :data:`ACTION_ATOL`). With ``temperature == 0`` (argmax) a row may
    differ when its best candidates are tied in ``min_q`` to within :data:`Q_TIE` (relative): rounding
    differences between the two paths may then pick either one, and both picks must be among the tied best
    candidates. With sampling (``temperature > 0``) the same uniform draw picks the same candidate unless it falls
    within rounding (~1e-7) of a boundary of the cumulative softmax, which is not allowed for (~1e-6 per state).

    Examples:
        >>> cands = torch.tensor([[[0.0], [1.0], [2.0]]])
        >>> assert_same_reranked_pick(torch.tensor([[1.0]]), torch.tensor([[2.0]]), cands,
        ...                           torch.tensor([[0.0, 5.0, 5.0 - 1e-6]]), temperature=0.0)  # a tie: both fine
    """
    act = candidates.shape[-1]
    got, expected = got.reshape(-1, act), expected.reshape(-1, act)
    candidates, min_q = candidates.reshape(-1, candidates.shape[-2], act), min_q.reshape(-1, candidates.shape[-2])
    close = torch.isclose(got, expected, rtol=ACTION_RTOL, atol=ACTION_ATOL).all(-1)
    for row in (~close).nonzero().flatten().tolist():
        where = f"state {row}: got {got[row].tolist()}, expected {expected[row].tolist()}"
        assert temperature == 0, f"{where} (sampled with temperature {temperature}: no tie to excuse it)"
        picks = []
        for action in (got[row], expected[row]):
            distance = (candidates[row] - action).abs().amax(-1)
            index = int(distance.argmin())
            assert torch.isclose(candidates[row, index], action, rtol=ACTION_RTOL, atol=ACTION_ATOL).all(), (
                f"{where}: {action.tolist()} is none of the candidates"
            )
            picks.append(index)
        best = float(min_q[row].max())
        gaps = [best - float(min_q[row, i]) for i in picks]
        tie = Q_TIE * max(1.0, abs(best))
        assert max(gaps) <= tie, f"{where}: candidates {picks} are {gaps} below the best min-Q, not a tie"


@torch.no_grad()
def reference_rerank(
    loss: DTQLLoss, observation: torch.Tensor, num_candidates: int, temperature: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The reference's selection: the policy on N copies of every state, target min-Q, softmax (or argmax).

    Returns ``(action [*B, act], candidates [*B, N, act], min_q [*B, N])``, drawing the same random numbers as
    :class:`~torchrl_dtql.QRerankingActor` and the exported policy (``test_fast_update.py`` checks that).

    Examples:
        >>> action, candidates, min_q = reference_rerank(make_loss(), torch.zeros(4, OBS_DIM), 8, 1.0)
        >>> action.shape, candidates.shape, min_q.shape
        (torch.Size([4, 2]), torch.Size([4, 8, 2]), torch.Size([4, 8]))
    """
    batch_shape = observation.shape[:-1]
    states = observation.unsqueeze(-2).expand(*batch_shape, num_candidates, observation.shape[-1])
    states = states.reshape(-1, observation.shape[-1])
    td = TensorDict(observation=states, batch_size=states.shape[:1])
    with set_exploration_type(ExplorationType.RANDOM), loss.actor_network_params.to_module(loss.actor_network):
        actions = loss.actor_network(td)["action"]
    values = []
    for i in range(loss.num_qvalue_nets):
        with loss.target_qvalue_network_params[i].to_module(loss.qvalue_network):
            td = TensorDict(observation=states, action=actions, batch_size=states.shape[:1])
            values.append(loss.qvalue_network(td)["state_action_value"])
    min_q = torch.stack(values).amin(0).reshape(*batch_shape, num_candidates)
    actions = actions.reshape(*batch_shape, num_candidates, -1)
    if temperature == 0:
        index = min_q.argmax(-1)
    else:
        probs = torch.softmax(min_q / temperature, -1)
        index = torch.multinomial(probs.reshape(-1, num_candidates), 1).reshape(batch_shape)
    chosen = actions.gather(-2, index[..., None, None].expand(*batch_shape, 1, actions.shape[-1])).squeeze(-2)
    return chosen, actions, min_q
