"""Swap IQL for DTQL in a TorchRL offline pipeline: only the loss and its optimizers change.

The pipeline is TorchRL's offline IQL recipe (``sota-implementations/iql/iql_offline.py``) cut to its bones: a
``TensorDictReplayBuffer`` of TED transitions, a ``CSVLogger``, a ``SoftUpdate`` target updater, an ``update(batch)``
function, and an evaluation ``env.rollout`` under ``ExplorationType.DETERMINISTIC`` (the package's seeded
:func:`torchrl_dtql.evaluation.evaluate_policies`, so both algorithms act from the same initial states).
:func:`make_iql` and :func:`make_dtql` fill the same three slots (the loss, its ``update`` function, the evaluation
policies); everything else is shared.

The diff an IQL user makes (see ``docs/torchrl_integration.md``)::

    - loss = IQLLoss(actor, qvalue, value, loss_function="l2", temperature=3.0, expectile=0.7)
    + loss = DTQLLoss(**make_dtql_modules(obs_spec, action_spec), alpha=5.0, expectile=0.7)
    - optimizer = group_optimizers(Adam(actor), Adam(qvalue), Adam(value))
    + optimizers = make_dtql_optimizers(loss, lr=1e-4)          # critic, diffusion, actor
    - loss_td = loss(batch); (loss_td["loss_actor"] + loss_td["loss_qvalue"] + loss_td["loss_value"]).backward()
    - optimizer.step(); optimizer.zero_grad(); target_updater.step()
    + dtql_update_step(loss, optimizers, batch, pretrain=step < pretrain_steps, target_updater=target_updater)
    - policy = actor
    + policy = QRerankingActor.from_loss(loss, num_candidates=1024)   # or the one-step actor

Run (Pendulum-v1 random transitions collected here; about a minute on 2 CPUs)::

    python examples/iql_to_dtql.py
    python examples/iql_to_dtql.py --dataset embedded/hopper/medium-v0 --steps 20000 --pretrain-steps 5000

``--dataset`` takes anything :func:`torchrl_dtql.data.make_offline_replay_buffer` reads (a Minari id, a D4RL HDF5
file, the embedded default dataset) and evaluates in the env the dataset names.
"""
from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

import torch
from tensordict import TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import DoubleToFloat, EnvBase, GymEnv, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, NormalParamExtractor, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import group_optimizers, IQLLoss, SoftUpdate
from torchrl.record.loggers.csv import CSVLogger

from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_modules, make_dtql_optimizers, QRerankingActor
from torchrl_dtql.evaluation import evaluate_policies

UpdateFn = Callable[[TensorDictBase], TensorDictBase]
GAMMA = 0.99  # discount, both algorithms
TAU = 0.005  # Polyak rate of the target critic, both algorithms
EVAL_SEED_OFFSET = 100  # evaluation episodes start from env seed seed + 100, as in dtql_offline.py


# ---------------------------------------------------------------------------- shared: data, env
def make_env(env_id: str, seed: int) -> EnvBase:
    env = TransformedEnv(GymEnv(env_id), DoubleToFloat())
    env.set_seed(seed)
    return env


def make_replay_buffer(env: EnvBase, dataset: str | None, num_transitions: int, batch_size: int):
    """A TED ``TensorDictReplayBuffer``: a dataset from ``torchrl_dtql.data``, or random transitions from ``env``."""
    if dataset is not None:
        from torchrl_dtql.data import make_offline_replay_buffer

        return make_offline_replay_buffer(dataset, batch_size)
    with set_exploration_type(ExplorationType.RANDOM):
        transitions = env.rollout(num_transitions, break_when_any_done=False)  # random policy, auto-reset
    replay_buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(num_transitions), batch_size=batch_size)
    replay_buffer.extend(transitions)
    return replay_buffer


# ---------------------------------------------------------------------------- IQL, as TorchRL's offline recipe
def make_iql(env: EnvBase, args: argparse.Namespace) -> tuple[IQLLoss, UpdateFn, dict[str, TensorDictModule]]:
    action_spec = env.action_spec_unbatched
    obs_dim, action_dim = env.observation_spec["observation"].shape[-1], action_spec.shape[-1]
    actor_net = nn.Sequential(MLP(obs_dim, 2 * action_dim, num_cells=[256, 256]), NormalParamExtractor())
    actor = ProbabilisticActor(
        TensorDictModule(actor_net, in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"],
        spec=action_spec,
        distribution_class=TanhNormal,
        distribution_kwargs={"low": action_spec.space.low, "high": action_spec.space.high, "tanh_loc": False},
        default_interaction_type=ExplorationType.RANDOM,
    )
    qvalue = ValueOperator(MLP(obs_dim + action_dim, 1, num_cells=[256, 256]), in_keys=["observation", "action"])
    value = ValueOperator(MLP(obs_dim, 1, num_cells=[256, 256]), in_keys=["observation"])

    loss = IQLLoss(actor, qvalue, value, loss_function="l2", temperature=3.0, expectile=0.7)
    loss.make_value_estimator(gamma=GAMMA)
    target_updater = SoftUpdate(loss, tau=TAU)
    optimizer = group_optimizers(
        torch.optim.Adam(loss.actor_network_params.flatten_keys().values(), lr=3e-4),
        torch.optim.Adam(loss.qvalue_network_params.flatten_keys().values(), lr=3e-4),
        torch.optim.Adam(loss.value_network_params.flatten_keys().values(), lr=3e-4),
    )

    def update(batch: TensorDictBase) -> TensorDictBase:
        loss_td = loss(batch)
        (loss_td["loss_actor"] + loss_td["loss_qvalue"] + loss_td["loss_value"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        target_updater.step()
        return loss_td.detach()

    return loss, update, {"mean": actor}


# ---------------------------------------------------------------------------- DTQL: the same three slots
def make_dtql(env: EnvBase, args: argparse.Namespace) -> tuple[DTQLLoss, UpdateFn, dict[str, TensorDictModule]]:
    modules = make_dtql_modules(env.observation_spec, env.action_spec_unbatched)

    loss = DTQLLoss(**modules, alpha=5.0, expectile=0.7)
    loss.make_value_estimator(gamma=GAMMA)
    target_updater = SoftUpdate(loss, tau=TAU)
    optimizers = make_dtql_optimizers(loss, lr=1e-4)  # critic (lr 3e-4), diffusion and actor (lr)
    steps_done = 0

    def update(batch: TensorDictBase) -> TensorDictBase:
        nonlocal steps_done
        pretrain = steps_done < args.pretrain_steps  # diffusion + critic only; no target update
        steps_done += 1
        return dtql_update_step(loss, optimizers, batch, pretrain=pretrain, target_updater=target_updater)

    policies = {
        "mean": modules["actor_network"],  # the one-step actor, tanh(loc) under DETERMINISTIC
        "reranked": QRerankingActor.from_loss(loss, num_candidates=args.num_candidates),  # the paper's policy
    }
    return loss, update, policies


# ---------------------------------------------------------------------------- shared: the training loop
def train(name: str, update: UpdateFn, replay_buffer, logger: CSVLogger, steps: int, log_every: int) -> None:
    for step in range(steps):
        loss_info = update(replay_buffer.sample())
        if step % log_every == 0 or step == steps - 1:
            for key in ("loss_qvalue", "loss_value", "loss_actor"):
                if key in loss_info.keys():
                    logger.log_scalar(f"{name}/{key}", loss_info[key].item(), step=step)


def main(args: argparse.Namespace) -> dict[str, dict[str, float]]:
    torch.manual_seed(args.seed)
    env = make_env(args.env, args.seed)
    replay_buffer = make_replay_buffer(env, args.dataset, args.num_transitions, args.batch_size)
    if args.dataset is not None:  # evaluate in the env the data were recorded in
        env = make_env(replay_buffer.metadata.env_id, args.seed)
    logger = CSVLogger(exp_name="iql_to_dtql", log_dir=args.log_dir)

    returns = {}
    for name, make in (("iql", make_iql), ("dtql", make_dtql)):
        torch.manual_seed(args.seed)
        _, update, policies = make(env, args)
        train(name, update, replay_buffer, logger, args.steps, args.log_every)
        seed = args.seed + EVAL_SEED_OFFSET  # the same episode for every algorithm and mode
        results = evaluate_policies(env, policies, episodes=1, max_steps=args.eval_steps, seed=seed)
        returns[name] = {mode: result["return"]["mean"] for mode, result in results.items()}
        for mode, value in returns[name].items():
            logger.log_scalar(f"{name}/eval_return_{mode}", value, step=args.steps)
        print(f"{name}: " + ", ".join(f"return ({mode}) {value:.1f}" for mode, value in returns[name].items()))
    print(f"logs: {Path(args.log_dir) / 'iql_to_dtql'}")
    return returns


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--env", default="Pendulum-v1", help="env of the random data and of the evaluation")
    parser.add_argument("--dataset", default=None, help="an offline dataset instead of random transitions")
    parser.add_argument("--num-transitions", type=int, default=5000, help="random transitions to collect")
    parser.add_argument("--steps", type=int, default=500, help="gradient steps per algorithm")
    parser.add_argument("--pretrain-steps", type=int, default=100, help="DTQL: diffusion + critic steps first")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--num-candidates", type=int, default=1024, help="DTQL: actions scored by the critic")
    parser.add_argument("--eval-steps", type=int, default=200, help="steps of the evaluation episode")
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--log-dir", default="iql_to_dtql_logs")
    parser.add_argument("--seed", type=int, default=0)
    return parser.parse_args(argv)


if __name__ == "__main__":
    args = parse_args()
    main(args)
