"""DTQL in TorchRL pipelines: the config-driven ``DTQLTrainer`` and the IQL -> DTQL swap in an offline recipe."""
from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import gymnasium as gym
import minari
import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from minari.data_collector import EpisodeBuffer
from tensordict import TensorDict, TensorDictBase
from tensordict.nn import TensorDictModule
from torch import nn
from torchrl.collectors import Collector
from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
from torchrl.envs import DoubleToFloat, GymEnv, TransformedEnv
from torchrl.envs.utils import ExplorationType, set_exploration_type
from torchrl.modules import MLP, NormalParamExtractor, ProbabilisticActor, TanhNormal, ValueOperator
from torchrl.objectives import group_optimizers, IQLLoss, SoftUpdate
from torchrl.record.loggers.csv import CSVLogger
from torchrl.trainers import LogValidationReward
from torchrl.trainers.algorithms.configs import AdamConfig

import torchrl_dtql.trainers.configs as dtql_configs
from torchrl_dtql import DTQLLoss, dtql_update_step, make_dtql_modules, make_dtql_optimizers, QRerankingActor
from torchrl_dtql.trainers import DTQLOptimizationStepper, DTQLTrainer, OfflineSchedule

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "torchrl_dtql" / "trainers" / "config"
DATASET_ID = "test/pendulum/random-v0"
NUM_EPISODES, EPISODE_STEPS = 4, 50
HIDDEN = 32
PENDULUM_WORST_REWARD = -(np.pi**2 + 0.1 * 8**2 + 0.001 * 2**2)  # -(theta^2 + 0.1 theta_dot^2 + 0.001 u^2), ~ -16.27

pytestmark = pytest.mark.filterwarnings("error")


# ---------------------------------------------------------------------------- fixtures: real data and envs
def write_pendulum_minari_dataset(root: Path) -> None:
    """A real Minari dataset of random Pendulum-v1 episodes (4 x 50 steps), written without jax."""
    env = gym.make("Pendulum-v1", max_episode_steps=EPISODE_STEPS)
    buffers = []
    for episode in range(NUM_EPISODES):
        observation, _ = env.reset(seed=episode)
        env.action_space.seed(episode)
        observations, actions, rewards, terminations, truncations = [observation], [], [], [], []
        while True:
            action = env.action_space.sample()
            observation, reward, terminated, truncated, _ = env.step(action)
            observations.append(observation)
            actions.append(action)
            rewards.append(reward)
            terminations.append(terminated)
            truncations.append(truncated)
            if terminated or truncated:
                break
        buffers.append(
            EpisodeBuffer(
                id=episode,
                seed=episode,
                observations=np.asarray(observations),
                actions=np.asarray(actions, dtype=np.float32),
                rewards=np.asarray(rewards),
                terminations=np.asarray(terminations),
                truncations=np.asarray(truncations),
                infos={},
            )
        )
    with warnings.catch_warnings():  # minari recommends metadata (code_permalink, author, ...) a test has no use for
        warnings.filterwarnings("ignore", category=UserWarning, module="minari")
        minari.create_dataset_from_buffers(
            dataset_id=DATASET_ID,
            buffer=buffers,
            env=env,
            algorithm_name="random",
            ref_min_score=-1500.0,  # both given, so that minari does not roll out reference episodes
            ref_max_score=0.0,
        )


@pytest.fixture
def pendulum_dataset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("MINARI_DATASETS_PATH", str(tmp_path / "minari"))
    write_pendulum_minari_dataset(tmp_path / "minari")
    return DATASET_ID


def make_pendulum_env() -> TransformedEnv:
    env = TransformedEnv(GymEnv("Pendulum-v1"), DoubleToFloat())
    env.set_seed(0)
    return env


def snapshot(params: TensorDictBase) -> TensorDictBase:
    return params.detach().clone()


def changed(before: TensorDictBase, after: TensorDictBase) -> bool:
    return any(not torch.equal(a, b) for a, b in zip(before.values(True, True), after.values(True, True)))


def compose_dtql_config(dataset_id: str, log_dir: Path, **trainer_overrides):
    """The shipped ``dtql_offline.yaml``, resized to Pendulum and a few steps, through Hydra overrides only."""
    overrides = [
        "data_spec.observation_dim=3",
        "data_spec.action_dim=1",
        "data_spec.action_low=-2.0",
        "data_spec.action_high=2.0",
        *[f"models.{m}.hidden_dim={HIDDEN}" for m in ("actor", "diffusion", "qvalue", "value")],
        f"replay_buffer.source={dataset_id}",
        "replay_buffer.batch_size=32",
        "trainer.progress_bar=false",
        "trainer.lr_decay_steps=null",
        f"logger.log_dir={log_dir}",
        *[f"trainer.{key}={value}" for key, value in trainer_overrides.items()],
    ]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base=None):
        return compose("dtql_offline", overrides=overrides)


def read_csv_column(path: Path) -> list[float]:
    return [float(line.split(",")[1]) for line in path.read_text().splitlines()]


# ---------------------------------------------------------------------------- the config-driven trainer
class StepRecorder:
    """A ``post_optim`` hook noting, after each gradient step, which parameters moved since the start."""

    names = ("actor_network_params", "qvalue_network_params", "diffusion_network_params",
             "target_qvalue_network_params")

    def __init__(self, loss: DTQLLoss) -> None:
        self.loss = loss
        self.initial = {name: snapshot(getattr(loss, name)) for name in self.names}
        self.moved: list[dict[str, bool]] = []

    def __call__(self) -> None:
        self.moved.append({name: changed(self.initial[name], getattr(self.loss, name)) for name in self.names})


def test_dtql_trainer_selected_by_config_alone(pendulum_dataset: str, tmp_path: Path) -> None:
    pretrain_steps, total_steps, steps_per_batch = 3, 8, 2
    cfg = compose_dtql_config(
        pendulum_dataset, tmp_path / "logs", pretrain_steps=pretrain_steps, total_frames=total_steps,
        optim_steps_per_batch=steps_per_batch, seed=0,
    )
    assert cfg.trainer._target_.endswith("_make_dtql_trainer") and cfg.loss._target_.endswith("_make_dtql_loss")

    trainer = instantiate(cfg.trainer)
    assert isinstance(trainer, DTQLTrainer) and isinstance(trainer.loss_module, DTQLLoss)
    assert trainer.replay_buffer.metadata.num_transitions == NUM_EPISODES * EPISODE_STEPS
    loss = trainer.loss_module
    assert float(loss.alpha) == 5.0 and loss.value_estimator.gamma.item() == pytest.approx(0.99)
    assert [opt.param_groups[0]["lr"] for opt in trainer.optimizers] == [3e-4, 1e-4, 1e-4]  # critic, diffusion, actor
    assert trainer.target_net_updater.eps == pytest.approx(1 - 0.005)  # tau from the config
    before = {name: snapshot(getattr(loss, name)) for name in
              ("actor_network_params", "diffusion_network_params", "qvalue_network_params", "value_network_params")}
    recorder = StepRecorder(loss)
    trainer.register_op("post_optim", recorder)
    eval_env = make_pendulum_env()
    LogValidationReward(
        record_interval=1, record_frames=20, environment=eval_env, exploration_type=ExplorationType.DETERMINISTIC,
        policy_exploration=QRerankingActor.from_loss(loss, num_candidates=8),
    ).register(trainer)

    trainer.train()

    # every part trained; the critic and the diffusion model on every step, the actor after pretraining only
    for name, params in before.items():
        assert changed(params, getattr(loss, name)), name
    adam_steps = {part: opt.state_dict()["state"][0]["step"].item() for part, opt in trainer.optimizers._asdict().items()}
    assert adam_steps == {"critic": total_steps, "diffusion": total_steps, "actor": total_steps - pretrain_steps}
    assert trainer.optimization_stepper.update_count == total_steps and trainer.collected_frames == total_steps
    # the actor and the target critic stay put while pretraining and move at every main-phase step
    assert len(recorder.moved) == total_steps
    for step, moved in enumerate(recorder.moved):
        in_pretraining = step < pretrain_steps
        assert moved["qvalue_network_params"] and moved["diffusion_network_params"]
        assert moved["actor_network_params"] is not in_pretraining, step
        assert moved["target_qvalue_network_params"] is not in_pretraining, step

    scalars = tmp_path / "logs" / "dtql_hopper_medium" / "scalars"
    assert read_csv_column(scalars / "pretraining.csv") == [1.0, 0.5, 0.0, 0.0]  # 3 of the first 4 steps
    assert read_csv_column(scalars / "loss_actor.csv")[0] == 0.0
    assert all(np.isfinite(read_csv_column(scalars / f"{key}.csv")).all()
               for key in ("loss_qvalue", "loss_value", "loss_diffusion", "loss_actor"))
    evaluation = read_csv_column(scalars / "total_r_evaluation.csv")
    assert len(evaluation) == total_steps // steps_per_batch  # one 20-step evaluation episode per logged batch
    assert all(20 * PENDULUM_WORST_REWARD <= r <= 0 for r in evaluation)


def test_dtql_trainer_command_line(pendulum_dataset: str, tmp_path: Path) -> None:
    """``python -m torchrl_dtql.trainers`` with Hydra overrides: the documented command, on a tiny budget."""
    overrides = [
        "data_spec.observation_dim=3", "data_spec.action_dim=1", "data_spec.action_low=-2", "data_spec.action_high=2",
        *[f"models.{m}.hidden_dim={HIDDEN}" for m in ("actor", "diffusion", "qvalue", "value")],
        f"replay_buffer.source={pendulum_dataset}", "replay_buffer.batch_size=32",
        "trainer.total_frames=4", "trainer.pretrain_steps=2", "trainer.optim_steps_per_batch=2",
        "trainer.lr_decay_steps=2", "trainer.progress_bar=false", f"logger.log_dir={tmp_path / 'logs'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "torchrl_dtql.trainers", *overrides], capture_output=True,
                            text=True, env=env, cwd=tmp_path, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    scalars = tmp_path / "logs" / "dtql_hopper_medium" / "scalars"
    assert read_csv_column(scalars / "pretraining.csv") == [1.0, 0.0]
    assert read_csv_column(scalars / "optim_steps.csv") == [2.0, 4.0]


def test_dtql_trainer_resumes_exactly_from_its_state_dict(pendulum_dataset: str, tmp_path: Path) -> None:
    """4 steps, save, restore into a new trainer, 4 more steps == 8 uninterrupted steps, bit for bit (CPU)."""

    def make_trainer(total_steps: int) -> DTQLTrainer:
        cfg = compose_dtql_config(pendulum_dataset, tmp_path / f"logs{total_steps}", pretrain_steps=3,
                                  lr_decay_steps=5, total_frames=total_steps, optim_steps_per_batch=2, seed=0)
        torch.manual_seed(0)  # the network initialisation; the trainer seeds its own run with cfg.trainer.seed
        return instantiate(cfg.trainer)

    uninterrupted = make_trainer(8)
    uninterrupted.train()

    interrupted = make_trainer(4)
    interrupted.train()
    state, rng_state = interrupted.state_dict(), torch.get_rng_state()
    assert interrupted.optimization_stepper.update_count == 4 and not interrupted.in_pretraining

    resumed = make_trainer(8)
    resumed.load_state_dict(state)
    torch.set_rng_state(rng_state)
    assert resumed.collected_frames == 4 and resumed.collector.batches_yielded == 2
    assert resumed.optimization_stepper.update_count == 4
    resumed.train()

    assert resumed.collected_frames == 8 and resumed.optimizers.actor.state_dict()["state"][0]["step"].item() == 5
    final, expected = resumed.loss_module.state_dict(), uninterrupted.loss_module.state_dict()
    assert final.keys() == expected.keys()
    for key in expected:
        assert torch.equal(final[key], expected[key]), key
    assert resumed.optimizers.critic.param_groups[0]["lr"] == uninterrupted.optimizers.critic.param_groups[0]["lr"]


def tiny_replay_buffer(n: int = 64) -> TensorDictReplayBuffer:
    g = torch.Generator().manual_seed(0)
    done = torch.zeros(n, 1, dtype=torch.bool)
    data = TensorDict(
        observation=torch.randn(n, 3, generator=g), action=torch.rand(n, 1, generator=g) * 2 - 1,
        next=TensorDict(observation=torch.randn(n, 3, generator=g), reward=torch.randn(n, 1, generator=g),
                        done=done, terminated=done.clone(), batch_size=[n]),
        batch_size=[n],
    )
    replay_buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(n), batch_size=16)
    replay_buffer.extend(data)
    return replay_buffer


def test_trainer_config_optimizer_fallbacks() -> None:
    """``optimizer`` fills the parts without their own optimizer; each part optimizes exactly its parameters."""
    loss = DTQLLoss(**make_dtql_modules(3, 1, hidden_dim=16), alpha=1.0)
    cfg = dtql_configs.DTQLTrainerConfig(
        total_frames=2, optim_steps_per_batch=2, loss_module=loss, replay_buffer=tiny_replay_buffer(),
        optimizer=AdamConfig(lr=1e-3, eps=1e-8), optimizer_actor=AdamConfig(lr=5e-5, eps=1e-8), progress_bar=False,
    )
    trainer = instantiate(cfg)
    lrs = {part: opt.param_groups[0]["lr"] for part, opt in trainer.optimizers._asdict().items()}
    assert lrs == {"critic": 1e-3, "diffusion": 1e-3, "actor": 5e-5}
    expected = make_dtql_optimizers(loss)
    for part, optimizer in trainer.optimizers._asdict().items():
        ids = {id(p) for p in optimizer.param_groups[0]["params"]}
        assert ids == {id(p) for p in getattr(expected, part).param_groups[0]["params"]}, part
    assert trainer.target_net_updater.eps == pytest.approx(1 - dtql_configs.REFERENCE_TAU)


def test_partial_qvalue_config_builds_independent_members() -> None:
    """A Q-network factory (a ``_partial_`` config) is called once per member; the loss stacks those very networks."""
    common = {"observation_dim": 3, "action_dim": 1, "hidden_dim": 16}
    networks = {
        "actor_network": dtql_configs.OneStepActorModelConfig(**common),
        "diffusion_network": dtql_configs.EDMDiffusionActorModelConfig(**common),
        "value_network": dtql_configs.DTQLValueModelConfig(observation_dim=3, hidden_dim=16),
    }
    cfg = dtql_configs.DTQLLossConfig(
        **networks, qvalue_network=dtql_configs.DTQLQValueModelConfig(**common, _partial_=True), num_qvalue_nets=3
    )
    weights = instantiate(cfg).qvalue_network_params["module", "net", "0", "weight"]
    assert weights.shape[0] == 3 and not torch.equal(weights[0], weights[1])

    built = []

    def qvalue_factory() -> ValueOperator:
        built.append(instantiate(dtql_configs.DTQLQValueModelConfig(**common)))
        return built[-1]

    loss = instantiate(dtql_configs.DTQLLossConfig(**networks, num_qvalue_nets=3), qvalue_network=qvalue_factory)
    assert len(built) == 3
    for member, network in enumerate(built):  # independently initialised, not re-sampled copies of one network
        assert torch.equal(loss.qvalue_network_params["module", "net", "0", "weight"][member],
                           network.module.net[0].weight)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"clip_norm": 1.0}, "does not clip"),
        ({"target_net_updater": None}, "target_net_updater"),
        ({"total_frames": 5}, "multiple of optim_steps_per_batch"),
        ({"optimization_stepper": "stepper", "pretrain_steps": 2}, "either optimization_stepper"),
    ],
)
def test_dtql_trainer_rejects_bad_arguments(kwargs: dict, message: str) -> None:
    loss = DTQLLoss(**make_dtql_modules(3, 1, hidden_dim=16), alpha=1.0)
    arguments = {
        "total_frames": 4, "optim_steps_per_batch": 2, "loss_module": loss, "replay_buffer": tiny_replay_buffer(),
        "target_net_updater": SoftUpdate(loss, tau=0.005), "progress_bar": False,
    }
    if kwargs.get("optimization_stepper") == "stepper":
        kwargs = {**kwargs, "optimization_stepper": DTQLOptimizationStepper(make_dtql_optimizers(loss))}
    with pytest.raises(ValueError, match=message):
        DTQLTrainer(**{**arguments, **kwargs})


def test_dtql_trainer_with_a_collector_extends_the_buffer_like_iql_trainer() -> None:
    """Given a collector, the trainer behaves as ``IQLTrainer``: collected batches go to the buffer, then updates."""
    env = make_pendulum_env()
    modules = make_dtql_modules(env.observation_spec, env.action_spec_unbatched, hidden_dim=16)
    loss = DTQLLoss(**modules, alpha=1.0)
    collector = Collector(env, modules["actor_network"], frames_per_batch=16, total_frames=48,
                          auto_register_policy_transforms=False)
    replay_buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(100), batch_size=8)
    trainer = DTQLTrainer(
        collector=collector, total_frames=48, optim_steps_per_batch=2, pretrain_steps=1, loss_module=loss,
        replay_buffer=replay_buffer, target_net_updater=SoftUpdate(loss, tau=0.005), progress_bar=False,
        log_interval=0,
    )
    trainer.train()
    assert len(replay_buffer) == 48 and trainer.collected_frames == 48
    assert trainer.optimizers.actor.state_dict()["state"][0]["step"].item() == 3 * 2 - 1
    assert {"r_training", "loss_actor", "pretraining"} <= set(trainer._log_dict)


def test_offline_schedule_counts_gradient_steps() -> None:
    schedule = OfflineSchedule(total_steps=6, steps_per_batch=3)
    assert [batch.numel() for batch in schedule] == [3, 3] and schedule.state_dict() == {"batches_yielded": 2}
    with pytest.raises(ValueError, match="multiple"):
        OfflineSchedule(total_steps=7, steps_per_batch=3)


# ---------------------------------------------------------------------------- the IQL -> DTQL swap
def make_iql(env: TransformedEnv):
    """TorchRL's offline IQL: loss, optimizer, update (with its target update) and evaluation policy."""
    spec = env.action_spec_unbatched
    actor = ProbabilisticActor(
        TensorDictModule(nn.Sequential(MLP(3, 2, num_cells=[HIDDEN, HIDDEN]), NormalParamExtractor()),
                         in_keys=["observation"], out_keys=["loc", "scale"]),
        in_keys=["loc", "scale"], spec=spec, distribution_class=TanhNormal,
        distribution_kwargs={"low": spec.space.low, "high": spec.space.high, "tanh_loc": False},
        default_interaction_type=ExplorationType.RANDOM,
    )
    qvalue = ValueOperator(MLP(4, 1, num_cells=[HIDDEN, HIDDEN]), in_keys=["observation", "action"])
    value = ValueOperator(MLP(3, 1, num_cells=[HIDDEN, HIDDEN]), in_keys=["observation"])
    loss = IQLLoss(actor, qvalue, value, loss_function="l2", temperature=3.0, expectile=0.7)
    loss.make_value_estimator(gamma=0.99)
    target_updater = SoftUpdate(loss, tau=0.005)
    optimizer = group_optimizers(*[torch.optim.Adam(params.flatten_keys().values(), lr=3e-4) for params in
                                   (loss.actor_network_params, loss.qvalue_network_params, loss.value_network_params)])

    def update(batch: TensorDictBase) -> TensorDictBase:
        loss_td = loss(batch)
        (loss_td["loss_actor"] + loss_td["loss_qvalue"] + loss_td["loss_value"]).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        target_updater.step()
        return loss_td.detach()

    return loss, update, {"mean": actor}


def make_dtql(env: TransformedEnv, pretrain_steps: int):
    """DTQL in the same slots: only the loss, its optimizers and the update call differ."""
    modules = make_dtql_modules(env.observation_spec, env.action_spec_unbatched, hidden_dim=HIDDEN)
    loss = DTQLLoss(**modules, alpha=5.0, expectile=0.7)
    loss.make_value_estimator(gamma=0.99)
    target_updater = SoftUpdate(loss, tau=0.005)
    optimizers = make_dtql_optimizers(loss, lr=1e-4)
    steps_done = 0

    def update(batch: TensorDictBase) -> TensorDictBase:
        nonlocal steps_done
        pretrain, steps_done = steps_done < pretrain_steps, steps_done + 1
        return dtql_update_step(loss, optimizers, batch, pretrain=pretrain, target_updater=target_updater)

    policies = {"mean": modules["actor_network"], "reranked": QRerankingActor.from_loss(loss, num_candidates=16)}
    return loss, update, policies


def test_iql_to_dtql_swap_in_a_torchrl_offline_pipeline(tmp_path: Path) -> None:
    torch.manual_seed(0)
    env = make_pendulum_env()
    with set_exploration_type(ExplorationType.RANDOM):
        transitions = env.rollout(300, break_when_any_done=False)  # offline data: random Pendulum transitions
    replay_buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(300), batch_size=32)
    replay_buffer.extend(transitions)
    logger = CSVLogger(exp_name="swap", log_dir=str(tmp_path))
    num_steps, eval_steps = 6, 25

    results = {}
    for name, (loss, update, policies) in {"iql": make_iql(env), "dtql": make_dtql(env, pretrain_steps=2)}.items():
        trained = {key: snapshot(params) for key, params in loss.named_children() if key.endswith("_params")}
        assert "target_qvalue_network_params" in trained
        for step in range(num_steps):  # the same loop for both
            loss_info = update(replay_buffer.sample())
            logger.log_scalar(f"{name}/loss_qvalue", loss_info["loss_qvalue"].item(), step=step)
        for key, params in trained.items():
            assert changed(params, getattr(loss, key)), (name, key)
        for mode, policy in policies.items():  # the same evaluation for both
            with set_exploration_type(ExplorationType.DETERMINISTIC), torch.no_grad():
                rollout = env.rollout(eval_steps, policy=policy, auto_cast_to_device=True, break_when_any_done=True)
            assert rollout.batch_size == torch.Size([eval_steps])
            assert ((rollout["action"] >= -2.0) & (rollout["action"] <= 2.0)).all()
            results[name, mode] = rollout["next", "reward"].sum().item()
        assert read_csv_column(tmp_path / "swap" / "scalars" / name / "loss_qvalue.csv")[-1] == pytest.approx(
            loss_info["loss_qvalue"].item())

    assert set(results) == {("iql", "mean"), ("dtql", "mean"), ("dtql", "reranked")}
    assert all(np.isfinite(value) and value <= 0 for value in results.values())  # Pendulum rewards are <= 0


def test_iql_to_dtql_example_runs(tmp_path: Path) -> None:
    command = [
        sys.executable, str(REPO / "examples" / "iql_to_dtql.py"), "--steps", "3", "--pretrain-steps", "1",
        "--num-transitions", "64", "--batch-size", "16", "--num-candidates", "8", "--eval-steps", "10",
        "--log-dir", str(tmp_path),
    ]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    result = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "iql: return (mean)" in result.stdout and "dtql: return (mean)" in result.stdout
    assert "return (reranked)" in result.stdout
    scalars = tmp_path / "iql_to_dtql" / "scalars"
    for name in ("iql", "dtql"):
        assert len(read_csv_column(scalars / name / "loss_qvalue.csv")) == 2  # steps 0 and 2
        assert (scalars / name / "eval_return_mean.csv").is_file()
