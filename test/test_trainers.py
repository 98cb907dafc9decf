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
CONFIG_DIR = REPO / "torchrl_dtql" / "trainers" / "recipes"
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


def recipe_overrides(dataset_id: str, log_dir: Path, *, pretrain_steps: int, total_frames: int,
                     optim_steps_per_batch: int, seed: int = 0, lr_decay_steps: int | None = None,
                     evaluation: bool = False) -> list[str]:
    """The shipped recipe on a few Pendulum steps, with the example's key names; sizes come from the dataset."""
    gradient_steps = total_frames - pretrain_steps
    assert lr_decay_steps in (None, gradient_steps), "the recipe decays over the whole main phase"
    return [
        *[f"network.{name}={HIDDEN}" for name in ("actor_hidden_dim", "critic_hidden_dim", "denoiser_hidden_dim")],
        f"replay_buffer.dataset={dataset_id}",
        "optim.batch_size=32",
        f"optim.pretrain_steps={pretrain_steps}",
        f"optim.gradient_steps={gradient_steps}",
        f"optim.lr_decay={str(lr_decay_steps is not None).lower()}",
        f"seed={seed}",
        f"trainer.optim_steps_per_batch={optim_steps_per_batch}",
        "trainer.progress_bar=false",
        f"logger.log_dir={log_dir}",
        *([] if evaluation else ["trainer.evaluation=null"]),
    ]


def compose_dtql_config(dataset_id: str, log_dir: Path, **recipe):
    """The shipped ``dtql_offline.yaml``, through Hydra overrides only (see :func:`recipe_overrides`)."""
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        return compose("dtql_offline", overrides=recipe_overrides(dataset_id, log_dir, **recipe))


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
        *recipe_overrides(pendulum_dataset, tmp_path / "logs", pretrain_steps=2, total_frames=4,
                          optim_steps_per_batch=2, lr_decay_steps=2),
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
        # TorchRL's own length keys (total_frames, lr_decay_steps), so that the interrupted trainer runs the first
        # 4 steps of the uninterrupted 8-step schedule
        overrides = recipe_overrides(pendulum_dataset, tmp_path / f"logs{total_steps}", pretrain_steps=3,
                                     total_frames=8, optim_steps_per_batch=2, seed=0)
        overrides += ["trainer.gradient_steps=null", f"trainer.total_frames={total_steps}", "trainer.lr_decay_steps=5"]
        with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
            cfg = compose("dtql_offline", overrides=overrides)
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


# ---------------------------------------------------------------------------- one recipe: the trainer route
def test_recipe_takes_the_network_sizes_from_the_dataset(pendulum_dataset: str, tmp_path: Path) -> None:
    cfg = compose_dtql_config(pendulum_dataset, tmp_path / "logs", pretrain_steps=2, total_frames=4,
                              optim_steps_per_batch=2)
    actor, qvalue = cfg.models.actor, cfg.models.qvalue  # Pendulum-v1: 3-dim observation, one action in [-2, 2]
    assert (actor.observation_dim, actor.action_dim, list(actor.action_low), list(actor.action_high)) == (
        3, 1, [-2.0], [2.0])
    assert (qvalue.observation_dim, qvalue.action_dim, cfg.models.value.observation_dim) == (3, 1, 3)


def test_recipe_keys_are_the_examples(tmp_path: Path) -> None:
    """The settings both recipes have carry the same names and, for the hopper-medium preset, the same values."""
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        trainer_cfg = compose("dtql_offline", overrides=["trainer.evaluation=null"])
    with initialize_config_dir(config_dir=str(REPO / "examples" / "config"), version_base="1.3"):
        example_cfg = compose("config", overrides=["task=hopper-medium-v2", f"output_dir={tmp_path}"])
    shared = {
        "seed": None, "replay_buffer": ("reward_shift", "observation_norm", "drop_nonfinite", "prefetch"), "network": None,
        "loss": ("alpha", "auto_alpha", "trust_region_ratio", "alpha_init", "alpha_per_q", "expectile", "gamma_nll",
                 "discount", "tau"),
        "optim": ("pretrain_steps", "gradient_steps", "batch_size", "lr", "critic_lr", "alpha_lr", "lr_decay"),
    }
    for section, keys in shared.items():
        if keys is None and section == "seed":
            assert trainer_cfg.seed == example_cfg.seed
            continue
        mine, theirs = trainer_cfg[section], example_cfg[section]
        for key in keys or OmegaConf.to_container(theirs):
            assert mine[key] == theirs[key], f"{section}.{key}: trainer {mine[key]} != example {theirs[key]}"
    # the example's evaluation keys, under `evaluation`
    assert trainer_cfg.evaluation.eval_iter == example_cfg.logger.eval_iter
    assert list(trainer_cfg.evaluation.eval_modes) == list(example_cfg.logger.eval_modes)
    assert trainer_cfg.evaluation.num_candidates == example_cfg.policy.num_candidates


def test_recipe_evaluates_with_the_examples_evaluator(pendulum_dataset: str, tmp_path: Path) -> None:
    """Every eval_iter main-phase steps and at the end: the dataset's env, each mode, seeds seed + 100, logged."""
    from torchrl_dtql.evaluation import evaluate_policies, make_eval_env
    from torchrl_dtql.policies import make_acting_policies

    overrides = recipe_overrides(pendulum_dataset, tmp_path / "logs", pretrain_steps=2, total_frames=6,
                                 optim_steps_per_batch=2, seed=3, evaluation=True)
    overrides += ["evaluation.eval_iter=2", "evaluation.eval_episodes=2", "evaluation.eval_max_steps=10",
                  "evaluation.eval_envs=2", "evaluation.num_candidates=8"]
    with initialize_config_dir(config_dir=str(CONFIG_DIR), version_base="1.3"):
        cfg = compose("dtql_offline", overrides=overrides)
    trainer = instantiate(cfg.trainer)
    trainer.train()

    history = trainer.evaluation.history
    assert [record["step"] for record in history] == [2, 4]
    assert set(trainer.evaluation.scores()) == {"reranked", "mean"}
    scalars = tmp_path / "logs" / "dtql_hopper_medium" / "scalars" / "eval"
    assert len(read_csv_column(scalars / "reranked" / "normalized_score.csv")) == 2
    # the last evaluation is the package evaluator's on the trained loss, same env, same seed (exact on purpose:
    # the same code path runs twice on one machine)
    info = trainer.replay_buffer.metadata
    env = make_eval_env(info, num_envs=2)
    again = evaluate_policies(env, make_acting_policies(trainer.loss_module, ["reranked", "mean"], num_candidates=8),
                              episodes=2, max_steps=10, seed=3 + 100, info=info)
    assert again == history[-1]["modes"]
    assert trainer.evaluation.state_dict()["history"] == history  # saved with the trainer's state


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"total_frames": None, "pretrain_steps": 2, "gradient_steps": None, "lr_decay": False,
          "lr_decay_steps": None}, "Set the run's length"),
        ({"total_frames": 5, "pretrain_steps": 2, "gradient_steps": 4, "lr_decay": False,
          "lr_decay_steps": None}, "contradicts"),
        ({"total_frames": None, "pretrain_steps": 2, "gradient_steps": None, "lr_decay": True,
          "lr_decay_steps": None}, "lr_decay: true"),
    ],
)
def test_run_length_refuses_contradictions(kwargs: dict, message: str) -> None:
    from torchrl_dtql.trainers.configs.trainers import run_length

    with pytest.raises(ValueError, match=message):
        run_length(dict(kwargs))
