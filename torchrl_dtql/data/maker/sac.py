"""The behaviour agent of the dataset maker: TorchRL's own SAC, resumable.

This module trains the data-collecting agent only. It is built from stock TorchRL parts:
a :class:`~torchrl.envs.GymEnv`, a :class:`~torchrl.collectors.Collector`, a
:class:`~torchrl.data.TensorDictReplayBuffer` and :class:`~torchrl.objectives.SACLoss`
with a :class:`~torchrl.objectives.SoftUpdate` target. Every ``eval_every`` environment
steps the deterministic policy is evaluated, the actor is saved as a snapshot (a few hundred
KB) and the whole training state (networks, optimizers, replay buffer, RNG) is checkpointed
atomically, so a killed run resumes from the last evaluation. Ctrl-C (or SIGTERM) loses nothing:
the collector batch in progress finishes, the state is checkpointed there, and ``train`` returns
with :attr:`SACBehaviourTrainer.stopped_by` set.

The replay buffer is never overwritten (its capacity is the step budget), so it is also the
ordered record of every transition the agent saw: the maker cuts D4RL's ``medium-replay``
dataset out of it.
"""
from __future__ import annotations

import dataclasses
import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import torch
from tensordict import TensorDict
from torch import nn

from torchrl_dtql.data.maker.behaviour_actor import make_behaviour_actor, save_behaviour_actor
from torchrl_dtql.interrupt import GracefulStop
from torchrl_dtql.io import atomic_torch_save, atomic_write_json

__all__ = ["EvalRecord", "SACBehaviourTrainer", "SACConfig"]

# Keys kept from collector batches: the TED transition plus the episode id.
_TRANSITION_KEYS = (
    "observation",
    "action",
    ("next", "observation"),
    ("next", "reward"),
    ("next", "terminated"),
    ("next", "truncated"),
    ("next", "done"),
)


def _make_qvalue(observation_size: int, action_size: int, hidden_sizes: Sequence[int]):
    from torchrl.modules import MLP, ValueOperator

    net = MLP(
        in_features=observation_size + action_size,
        out_features=1,
        num_cells=list(hidden_sizes),
        activation_class=nn.ReLU,
    )
    return ValueOperator(net, in_keys=["observation", "action"])


@dataclass
class SACConfig:
    """Hyper-parameters of the behaviour SAC agent (the usual SAC defaults).

    Attributes:
        env_id: gymnasium id, e.g. ``"Hopper-v5"``.
        seed: seeds torch, the training env (``seed``) and the eval env (``seed + 10_000``).
        total_steps: environment-step budget (one gradient update per step by default).
        init_random_steps: uniformly random steps before learning starts.
        frames_per_batch: collector batch; ``eval_every`` must be a multiple of it.
        utd_ratio: gradient updates per environment step.
        batch_size: SAC minibatch.
        hidden_sizes: MLP widths of the actor and both critics.
        lr: Adam learning rate of actor, critics and temperature.
        gamma: discount.
        tau: Polyak rate of the target critics.
        eval_every: environment steps between evaluations (= snapshots = checkpoints).
        eval_episodes: deterministic episodes per evaluation.
        stop_return: stop as soon as an evaluation reaches this mean return (None: never).
        stochastic_eval_steps: when positive, every evaluation also records this many steps of the
            *sampled* policy (as the dataset recorder does) and keeps their mean episode return: the
            statistic a D4RL dataset's behaviour score is. ``0``: deterministic evaluation only.
        stop_stochastic_return: stop as soon as that sampled return reaches this value (None: never).
    """

    env_id: str
    seed: int = 0
    total_steps: int = 1_000_000
    init_random_steps: int = 5_000
    frames_per_batch: int = 1_000
    utd_ratio: float = 1.0
    batch_size: int = 256
    hidden_sizes: tuple[int, ...] = (256, 256)
    lr: float = 3e-4
    gamma: float = 0.99
    tau: float = 0.005
    eval_every: int = 5_000
    eval_episodes: int = 5
    stop_return: float | None = None
    stochastic_eval_steps: int = 0
    stop_stochastic_return: float | None = None

    def __post_init__(self) -> None:
        self.hidden_sizes = tuple(int(h) for h in self.hidden_sizes)
        self.frames_per_batch = min(self.frames_per_batch, self.eval_every)
        if self.eval_every % self.frames_per_batch:
            raise ValueError("eval_every must be a multiple of frames_per_batch.")
        if self.total_steps % self.eval_every:
            raise ValueError("total_steps must be a multiple of eval_every.")
        if self.stop_stochastic_return is not None and self.stochastic_eval_steps <= 0:
            raise ValueError("stop_stochastic_return needs stochastic_eval_steps > 0.")


@dataclass
class EvalRecord:
    """One evaluation of the deterministic policy and the snapshot it was saved to."""

    step: int
    return_mean: float
    return_std: float
    episode_length: float
    wall_time_s: float
    snapshot: str
    returns: list[float] = field(default_factory=list)
    stochastic_return_mean: float | None = None


class SACBehaviourTrainer:
    """Train (or resume) the SAC behaviour agent in a work folder.

    Folder layout: ``checkpoint.pt`` (full state, atomic), ``evals.json`` (history) and
    ``snapshots/actor_<step>.pt`` (one actor per evaluation; step 0 is the randomly initialised
    actor used for D4RL's ``random`` kind).

    Args:
        config: the hyper-parameters.
        workdir: the work folder (created if missing). A folder holding a checkpoint made with
            another config raises unless only ``total_steps``/``stop_return`` differ.

    Examples:
        >>> import tempfile
        >>> cfg = SACConfig("Hopper-v5", total_steps=200, init_random_steps=100,
        ...                 frames_per_batch=100, eval_every=100, eval_episodes=1, batch_size=16,
        ...                 hidden_sizes=(8,))
        >>> trainer = SACBehaviourTrainer(cfg, tempfile.mkdtemp())
        >>> evals = trainer.train(progress=False)  # doctest: +SKIP
    """

    def __init__(self, config: SACConfig, workdir: str | Path) -> None:
        self.config = config
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "snapshots").mkdir(exist_ok=True)
        self.checkpoint_path = self.workdir / "checkpoint.pt"
        self.evals_path = self.workdir / "evals.json"
        #: ``"SIGINT"`` / ``"SIGTERM"`` when the last :meth:`train` call was stopped by that signal, else ``None``;
        #: its state is then checkpointed at env step :attr:`stopped_at_step`.
        self.stopped_by: str | None = None
        self.stopped_at_step: int | None = None

    # ------------------------------------------------------------------ building blocks
    def _make_env(self, seed: int):
        from torchrl.envs import Compose, DoubleToFloat, GymEnv, StepCounter, TransformedEnv

        env = TransformedEnv(GymEnv(self.config.env_id, device="cpu"), Compose(DoubleToFloat(), StepCounter()))
        env.set_seed(seed)
        return env

    def _build(self, env):
        from torchrl.objectives import SACLoss, SoftUpdate

        cfg = self.config
        spec = env.action_spec_unbatched
        obs_size = int(env.observation_spec["observation"].shape[-1])
        actor = make_behaviour_actor(obs_size, spec.space.low, spec.space.high, cfg.hidden_sizes)
        qvalue = _make_qvalue(obs_size, int(spec.shape[-1]), cfg.hidden_sizes)
        loss = SACLoss(
            actor,
            qvalue,
            num_qvalue_nets=2,
            loss_function="l2",
            action_spec=spec,
            delay_qvalue=True,
            alpha_init=1.0,
        )
        loss.make_value_estimator(gamma=cfg.gamma)
        updater = SoftUpdate(loss, tau=cfg.tau)
        optimizers = {
            "actor": torch.optim.Adam(loss.actor_network_params.values(True, True), lr=cfg.lr),
            "qvalue": torch.optim.Adam(loss.qvalue_network_params.values(True, True), lr=cfg.lr),
            "alpha": torch.optim.Adam([loss.log_alpha], lr=cfg.lr),
        }
        self._actor_meta = {
            "env_id": cfg.env_id,
            "observation_size": obs_size,
            "action_low": spec.space.low.tolist(),
            "action_high": spec.space.high.tolist(),
            "hidden_sizes": list(cfg.hidden_sizes),
        }
        return actor, loss, updater, optimizers

    def _make_buffer(self):
        from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer

        return TensorDictReplayBuffer(
            storage=LazyTensorStorage(self.config.total_steps),
            batch_size=self.config.batch_size,
        )

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def _evaluate(self, actor, env) -> tuple[list[float], float]:
        from torchrl_dtql.evaluation import run_episodes

        # seed=None: the eval env continues its own stream (seeded once, and again on resume), as it always has
        results = run_episodes(env, actor, episodes=self.config.eval_episodes, max_steps=1000, seed=None)
        return results.returns.tolist(), float(results.lengths.double().mean())

    def _evaluate_sampled(self, actor, step: int) -> float | None:
        """Mean episode return of ``stochastic_eval_steps`` recorded steps of the sampled policy.

        It runs in its own env with its own seeded RNG scope (``record_episodes``), so it changes
        neither the training streams nor the deterministic evaluation's.
        """
        from .recording import actor_sampler, record_episodes

        if self.config.stochastic_eval_steps <= 0:
            return None
        _, stats = record_episodes(self.config.env_id, actor_sampler(actor), self.config.stochastic_eval_steps,
                                   seed=self.config.seed + 20_000 + step, progress=False)
        return stats.return_mean

    # ------------------------------------------------------------------ state
    def load_evals(self) -> list[EvalRecord]:
        """The evaluation history written so far (empty if none)."""
        if not self.evals_path.exists():
            return []
        return [EvalRecord(**r) for r in json.loads(self.evals_path.read_text())["evals"]]

    def replay_data(self) -> TensorDict:
        """The ordered transitions of the last checkpoint (TED layout plus ``episode``, ``step``)."""
        blob = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
        return TensorDict(blob["replay"], batch_size=[blob["replay"]["episode"].shape[0]])

    def _config_dict(self) -> dict:
        d = dataclasses.asdict(self.config)
        d["hidden_sizes"] = list(d["hidden_sizes"])
        return d

    def _check_compatible(self, saved: dict) -> None:
        mine = self._config_dict()
        free = {"total_steps", "stop_return", "stop_stochastic_return"}
        diff = {k for k in mine if k not in free and saved.get(k) != mine[k]}
        if diff:
            raise ValueError(
                f"{self.workdir} holds a SAC run made with different settings ({sorted(diff)}: "
                f"{ {k: saved.get(k) for k in diff} } vs { {k: mine[k] for k in diff} }). "
                "Use another --workdir or the same settings."
            )

    def is_finished(self) -> bool:
        """True when the checkpoint reached ``total_steps`` or ``stop_return``."""
        evals = self.load_evals()
        if not evals:
            return False
        last = evals[-1]
        if last.step >= self.config.total_steps:
            return True
        return any(self._reached_stop(e) for e in evals)

    def _reached_stop(self, rec: EvalRecord) -> bool:
        cfg = self.config
        if cfg.stop_return is not None and rec.return_mean >= cfg.stop_return:
            return True
        stop = cfg.stop_stochastic_return
        return stop is not None and rec.stochastic_return_mean is not None and rec.stochastic_return_mean >= stop

    # ------------------------------------------------------------------ main loop
    def train(self, progress: bool = True, until_step: int | None = None) -> list[EvalRecord]:
        """Train until ``total_steps`` or ``stop_return``, resuming from the last checkpoint.

        Args:
            progress: show a tqdm progress bar.
            until_step: stop (with a checkpoint) once this many env steps are done; ``0`` only
                creates the step-0 snapshot of the randomly initialised actor.

        Returns:
            The evaluation history (one record per snapshot). After Ctrl-C or SIGTERM it returns early, with the
            state checkpointed at the last whole collector batch and :attr:`stopped_by` naming the signal; calling
            ``train`` again continues from there.
        """
        from tqdm.auto import tqdm

        self.stopped_by = self.stopped_at_step = None

        Collector = _import_collector()

        cfg = self.config
        evals = self.load_evals()
        if self.is_finished():
            return evals

        torch.manual_seed(cfg.seed)  # network initialisation
        env = self._make_env(cfg.seed)
        eval_env = self._make_env(cfg.seed + 10_000)
        actor, loss, updater, optimizers = self._build(env)
        rb = self._make_buffer()

        step, episode_offset, train_time = 0, 0, 0.0
        if self.checkpoint_path.exists():
            blob = torch.load(self.checkpoint_path, map_location="cpu", weights_only=True)
            self._check_compatible(blob["config"])
            loss.load_state_dict(blob["loss"])
            for name, opt in optimizers.items():
                opt.load_state_dict(blob["optimizers"][name])
            replay = TensorDict(blob["replay"], batch_size=[blob["replay"]["episode"].shape[0]])
            if replay.shape[0]:
                rb.extend(replay)
                episode_offset = int(replay["episode"].max()) + 1
            step = int(blob["step"])
            train_time = float(blob["train_time_s"])
            torch.set_rng_state(blob["torch_rng"])
            # The environment cannot be restored mid-episode: restart it with a fresh seed.
            env.set_seed(cfg.seed + step)
            eval_env.set_seed(cfg.seed + 10_000 + step)
            evals = [e for e in evals if e.step <= step]
        else:
            # Step 0: evaluate and snapshot the randomly initialised actor.
            evals = []
            self._snapshot_and_checkpoint(actor, loss, optimizers, rb, eval_env, evals, 0, 0, 0.0)

        if until_step is not None and step >= until_step:
            env.close()
            eval_env.close()
            return evals
        remaining = cfg.total_steps - step
        collector = Collector(
            env,
            actor,
            frames_per_batch=cfg.frames_per_batch,
            total_frames=remaining,
            # rounded up to whole collector batches (the collector would do it anyway, warning)
            init_random_frames=-(-max(0, cfg.init_random_steps - step) // cfg.frames_per_batch)
            * cfg.frames_per_batch,
            auto_register_policy_transforms=False,
        )
        pbar = tqdm(total=cfg.total_steps, initial=step, desc=f"SAC {cfg.env_id}", disable=not progress,
                    unit="step", dynamic_ncols=True)
        t_start = time.time()
        last_train_time = train_time
        stop_message = "finishing the current batch and writing a checkpoint (Ctrl-C again to quit at once)"
        with GracefulStop(message=stop_message) as stop:
            try:
                for batch in collector:
                    batch = batch.reshape(-1)
                    transitions = batch.select(*_TRANSITION_KEYS)
                    transitions["episode"] = batch["collector", "traj_ids"].long() + episode_offset
                    transitions["step"] = torch.arange(step, step + batch.shape[0])
                    rb.extend(transitions)
                    step += batch.shape[0]
                    pbar.update(batch.shape[0])
                    if step > cfg.init_random_steps:
                        self._update(loss, updater, optimizers, rb, int(round(batch.shape[0] * cfg.utd_ratio)))
                    if step % cfg.eval_every == 0:
                        train_time = last_train_time + (time.time() - t_start)
                        rec = self._snapshot_and_checkpoint(
                            actor, loss, optimizers, rb, eval_env, evals, step, episode_offset, train_time
                        )
                        pbar.set_postfix(eval_return=f"{rec.return_mean:.0f}")
                        sampled = (f", sampled {rec.stochastic_return_mean:.1f}"
                                   if rec.stochastic_return_mean is not None else "")
                        pbar.write(
                            f"[{cfg.env_id}] step {step}: eval return {rec.return_mean:.1f} +- {rec.return_std:.1f}"
                            f"{sampled} (len {rec.episode_length:.0f}, {train_time / 60:.1f} min)"
                        )
                        if self._reached_stop(rec):
                            break
                        if until_step is not None and step >= until_step:
                            break
                    if stop.requested:
                        if step % cfg.eval_every:  # an evaluation step has just been checkpointed
                            train_time = last_train_time + (time.time() - t_start)
                            self._checkpoint(loss, optimizers, rb, step, train_time)
                        self.stopped_by, self.stopped_at_step = stop.signal_name, step
                        break
            finally:
                pbar.close()
                collector.shutdown()
                env.close()
                eval_env.close()
        return evals

    def _update(self, loss, updater, optimizers, rb, num_updates: int) -> None:
        for _ in range(num_updates):
            sample = rb.sample()
            out = loss(sample)
            total = out["loss_actor"] + out["loss_qvalue"] + out["loss_alpha"]
            for opt in optimizers.values():
                opt.zero_grad(set_to_none=True)
            total.backward()
            for opt in optimizers.values():
                opt.step()
            updater.step()

    def _snapshot_and_checkpoint(self, actor, loss, optimizers, rb, eval_env, evals, step, episode_offset, train_time):
        returns, length = self._evaluate(actor, eval_env)
        mean = sum(returns) / len(returns)
        std = math.sqrt(sum((r - mean) ** 2 for r in returns) / len(returns))
        snap = self.workdir / "snapshots" / f"actor_{step:08d}.pt"
        save_behaviour_actor(actor, snap, train_step=step, eval_return=mean, **self._actor_meta)
        rec = EvalRecord(step, mean, std, length, train_time, str(snap.relative_to(self.workdir)), returns,
                         stochastic_return_mean=self._evaluate_sampled(actor, step))
        evals.append(rec)
        self._checkpoint(loss, optimizers, rb, step, train_time)
        atomic_write_json({"config": self._config_dict(), "evals": [dataclasses.asdict(e) for e in evals]},
                          self.evals_path)
        return rec

    def _checkpoint(self, loss, optimizers, rb, step: int, train_time: float) -> None:
        """The whole training state at ``step``, written atomically."""
        n = len(rb)
        replay = rb.storage[:n].exclude("index") if n else None
        blob = {
            "config": self._config_dict(),
            "loss": loss.state_dict(),
            "optimizers": {k: o.state_dict() for k, o in optimizers.items()},
            "replay": replay.to_dict() if replay is not None else _empty_replay(self._actor_meta),
            "step": step,
            "train_time_s": train_time,
            "torch_rng": torch.get_rng_state(),
        }
        atomic_torch_save(blob, self.checkpoint_path)


def _import_collector():
    """``torchrl.collectors.Collector``, without the DeprecationWarning that TorchRL 0.14 emits
    at import time for its own ``VanillaWeightUpdater`` class (nothing we can act on)."""
    import warnings

    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="Creating .* inherits from WeightUpdaterBase", category=DeprecationWarning)
        from torchrl.collectors import Collector
    return Collector


def _empty_replay(meta: dict) -> dict:
    obs, act = meta["observation_size"], len(meta["action_low"])
    flag = torch.zeros(0, 1, dtype=torch.bool)
    return {
        "observation": torch.zeros(0, obs),
        "action": torch.zeros(0, act),
        "episode": torch.zeros(0, dtype=torch.long),
        "step": torch.zeros(0, dtype=torch.long),
        "next": {
            "observation": torch.zeros(0, obs),
            "reward": torch.zeros(0, 1),
            "terminated": flag,
            "truncated": flag.clone(),
            "done": flag.clone(),
        },
    }
