"""``DTQLTrainer``: DTQL in TorchRL's ``Trainer`` machinery, built the way ``torchrl.trainers.algorithms.IQLTrainer`` is."""
from __future__ import annotations

import pathlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

from tensordict import TensorDict
from torchrl.checkpoint import Checkpoint, CheckpointRotation
from torchrl.collectors import BaseCollector
from torchrl.data.replay_buffers.replay_buffers import ReplayBuffer
from torchrl.objectives.utils import TargetNetUpdater
from torchrl.record.loggers import Logger
from torchrl.trainers import LogScalar, ReplayBufferTrainer, Trainer, UpdateWeights, UTDRHook

from torchrl_dtql.objectives.dtql import DTQLLoss
from torchrl_dtql.objectives.update import DTQLOptimizers, make_dtql_optimizers
from torchrl_dtql.trainers.offline import OfflineSchedule
from torchrl_dtql.trainers.stepper import DTQLOptimizationStepper

__all__ = ["DTQLTrainer"]


class DTQLTrainer(Trainer):
    """A TorchRL trainer for Diffusion Trusted Q-Learning, offline by default.

    See also :class:`~torchrl_dtql.trainers.configs.DTQLTrainerConfig` for the Hydra configuration counterpart.

    It takes the arguments of :class:`~torchrl.trainers.algorithms.IQLTrainer` and wires the same pieces (a replay
    buffer sampled at every optimisation step, a target-network updater, loggers, checkpoints), with two
    differences that DTQL needs:

    - **Three optimizers and a pretraining phase.** The update is a
      :class:`~torchrl_dtql.trainers.DTQLOptimizationStepper`: for the first ``pretrain_steps`` gradient steps it
      trains the diffusion model and the critic only; afterwards it runs the reference's critic, diffusion, actor
      steps followed by ``target_net_updater.step()``. The target critic therefore moves in the main phase only.
    - **Offline by default.** With ``collector=None`` the trainer iterates over an
      :class:`~torchrl_dtql.trainers.OfflineSchedule`: ``total_frames`` is the number of gradient steps
      (pretraining included), logged every ``optim_steps_per_batch`` steps (and at most once per ``log_interval``
      steps). The replay buffer is only sampled, never extended. Pass a collector to train on collected data
      instead, exactly as with ``IQLTrainer`` (the buffer is extended with each batch and the collector's policy
      weights are refreshed from the one-step actor).

    The losses of every step (``loss_qvalue``, ``loss_value``, ``loss_diffusion``, ``loss_actor``, the actor's
    diagnostics, and ``pretraining``, 1 for a pretraining step) are averaged per batch and logged. To evaluate as the
    example does (the dataset's env, every acting mode, seeds ``seed + 100``, normalized scores), register a
    :class:`~torchrl_dtql.trainers.DTQLEvaluation` hook (the config's ``evaluation`` does it and keeps it as
    :attr:`evaluation`); TorchRL's :class:`~torchrl.trainers.LogValidationReward` works too.

    Args are keyword-only.

    Keyword Args:
        collector: a TorchRL collector, or ``None`` (default) for offline training.
        total_frames: frames to collect, or offline the number of gradient steps (a multiple of
            ``optim_steps_per_batch``).
        optim_steps_per_batch: gradient steps per collected batch, or offline per logged "epoch".
        loss_module: the :class:`~torchrl_dtql.DTQLLoss`.
        replay_buffer: the buffer the batches are sampled from (e.g.
            :func:`~torchrl_dtql.data.make_offline_replay_buffer`); its ``batch_size`` sets the batch.
        target_net_updater: updates the target critic after each main-phase step (reference:
            ``SoftUpdate(loss, tau=0.005)``); required, since the Q-reranked policy acts with the target critic.
        optimizers: the critic, diffusion and actor optimizers; default ``make_dtql_optimizers(loss_module)``.
        pretrain_steps: diffusion + critic steps before the first actor step (reference: 50_000).
        lr_decay_steps: cosine decay of the three learning rates to 0 over this many main-phase steps (the
            reference's ``lr_decay``; ``None``: constant).
        optimization_stepper: a ready :class:`~torchrl_dtql.trainers.DTQLOptimizationStepper`, instead of
            ``optimizers``, ``pretrain_steps`` and ``lr_decay_steps``.
        frame_skip: frames skipped by the collector's env (must stay 1 offline).
        logger: a TorchRL logger (CSV, TensorBoard, W&B, ...).
        clip_grad_norm: kept for interface parity with ``IQLTrainer``; unused, since DTQL does not clip.
        clip_norm: must be ``None``: the reference does not clip gradients and
            :func:`~torchrl_dtql.dtql_update_step` does not either.
        progress_bar: show a tqdm bar.
        seed: seeds torch, numpy and the collector.
        save_trainer_interval: frames (offline: gradient steps) between two checkpoints.
        log_interval: frames (offline: gradient steps) between two logged values of a key.
        save_trainer_file: where to save the trainer's state.
        checkpoint: a :class:`~torchrl.checkpoint.Checkpoint` for scheduled saves and restores.
        checkpoint_rotation: retention policy for ``checkpoint``.
        checkpoint_metadata: function of the trainer returning metadata for rotated checkpoints.
        enable_logging: log statistics of the collected batches (online only; losses are always logged).
        log_rewards: log reward statistics of the collected batches.
        log_actions: log the norm of the collected actions.
        log_observations: log the norm of the collected observations.
        async_collection: collect asynchronously (online only).
        log_timings: log the time spent in every hook.
        auto_log_optim_steps: log ``optim_steps`` and the averaged losses after each batch.

    Examples:
        >>> import torch
        >>> from tensordict import TensorDict
        >>> from torchrl.data import LazyTensorStorage, TensorDictReplayBuffer
        >>> from torchrl.objectives import SoftUpdate
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> n = 64
        >>> data = TensorDict(observation=torch.randn(n, 3), action=torch.rand(n, 2) * 2 - 1, next=TensorDict(
        ...     observation=torch.randn(n, 3), reward=torch.randn(n, 1), done=torch.zeros(n, 1, dtype=torch.bool),
        ...     terminated=torch.zeros(n, 1, dtype=torch.bool), batch_size=[n]), batch_size=[n])
        >>> replay_buffer = TensorDictReplayBuffer(storage=LazyTensorStorage(n), batch_size=16)
        >>> _ = replay_buffer.extend(data)
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=16), alpha=1.0)
        >>> trainer = DTQLTrainer(total_frames=6, optim_steps_per_batch=2, pretrain_steps=2, loss_module=loss,
        ...     replay_buffer=replay_buffer, target_net_updater=SoftUpdate(loss, tau=0.005), progress_bar=False)
        >>> trainer.train()
        >>> trainer.optimizers.actor.state_dict()["state"][0]["step"].item()  # 6 steps, 2 of them pretraining
        4.0
    """

    def __init__(
        self,
        *,
        collector: BaseCollector | None = None,
        total_frames: int,
        optim_steps_per_batch: int,
        loss_module: DTQLLoss,
        replay_buffer: ReplayBuffer,
        target_net_updater: TargetNetUpdater,
        optimizers: DTQLOptimizers | None = None,
        pretrain_steps: int = 0,
        lr_decay_steps: int | None = None,
        optimization_stepper: DTQLOptimizationStepper | None = None,
        frame_skip: int = 1,
        logger: Logger | None = None,
        clip_grad_norm: bool = True,
        clip_norm: float | None = None,
        progress_bar: bool = True,
        seed: int | None = None,
        save_trainer_interval: int = 10000,
        log_interval: int = 10000,
        save_trainer_file: str | pathlib.Path | None = None,
        checkpoint: Checkpoint | None = None,
        checkpoint_rotation: CheckpointRotation | None = None,
        checkpoint_metadata: Callable[[Trainer], Mapping[str, Any]] | None = None,
        enable_logging: bool = True,
        log_rewards: bool = True,
        log_actions: bool = True,
        log_observations: bool = False,
        async_collection: bool = False,
        log_timings: bool = False,
        auto_log_optim_steps: bool = True,
    ) -> None:
        self._check_arguments(loss_module, replay_buffer, target_net_updater, clip_norm)
        optimization_stepper = self._make_stepper(
            loss_module, optimizers, pretrain_steps, lr_decay_steps, optimization_stepper
        )
        offline = collector is None
        if offline:
            if async_collection:
                raise ValueError("async_collection needs a collector; offline training (collector=None) has none.")
            if frame_skip != 1:
                raise ValueError(f"Offline, frames are gradient steps: frame_skip must be 1, got {frame_skip}.")
            if optim_steps_per_batch is None:
                raise ValueError("Offline training needs an integer optim_steps_per_batch (gradient steps per epoch).")
            collector = OfflineSchedule(total_frames, optim_steps_per_batch)
        super().__init__(
            collector=collector,
            total_frames=total_frames,
            frame_skip=frame_skip,
            optim_steps_per_batch=optim_steps_per_batch,
            loss_module=loss_module,
            optimizer=None,
            optimization_stepper=optimization_stepper,
            replay_buffer=replay_buffer,
            target_net_updater=target_net_updater,
            logger=logger,
            clip_grad_norm=clip_grad_norm,
            clip_norm=clip_norm,
            progress_bar=progress_bar,
            seed=seed,
            save_trainer_interval=save_trainer_interval,
            log_interval=log_interval,
            save_trainer_file=save_trainer_file,
            checkpoint=checkpoint,
            checkpoint_rotation=checkpoint_rotation,
            checkpoint_metadata=checkpoint_metadata,
            async_collection=async_collection,
            log_timings=log_timings,
            auto_log_optim_steps=auto_log_optim_steps,
        )
        self.offline = offline
        self.pretrain_steps = optimization_stepper.pretrain_steps
        self.evaluation = None  # a DTQLEvaluation hook, when the config asks for one (see configs.DTQLEvaluationConfig)

        rb_trainer = ReplayBufferTrainer(
            replay_buffer,
            batch_size=None,
            flatten_tensordicts=True,
            memmap=False,
            device=getattr(replay_buffer.storage, "device", "cpu"),
            iterate=True,
        )
        if not offline and not async_collection:
            self.register_op("pre_epoch", rb_trainer.extend)
        self.register_op("process_optim_batch", rb_trainer.sample)
        # no TargetNetUpdaterHook: the stepper steps the target updater, in the main phase only

        self.enable_logging = enable_logging
        self.log_rewards = log_rewards
        self.log_actions = log_actions
        self.log_observations = log_observations
        if not offline:
            policy_weights_getter = partial(TensorDict.from_module, self.loss_module.actor_network)
            self.register_op("post_steps", UpdateWeights(self.collector, 1, policy_weights_getter=policy_weights_getter))
            if enable_logging:
                self._setup_collection_logging()

    @staticmethod
    def _check_arguments(
        loss_module: Any, replay_buffer: Any, target_net_updater: Any, clip_norm: float | None
    ) -> None:
        if not isinstance(loss_module, DTQLLoss):
            raise TypeError(f"DTQLTrainer trains a DTQLLoss, got loss_module of type {type(loss_module).__name__}.")
        if replay_buffer is None:
            raise ValueError("DTQLTrainer needs a replay_buffer to sample batches from (offline: the dataset).")
        if not isinstance(target_net_updater, TargetNetUpdater):
            raise ValueError(
                "DTQLTrainer needs a target_net_updater such as SoftUpdate(loss, tau=0.005): the Q-reranked policy "
                f"acts with the target critic. Got {type(target_net_updater).__name__}."
            )
        if clip_norm is not None:
            raise ValueError(
                f"DTQLTrainer does not clip gradients (nor does the DTQL reference); got clip_norm={clip_norm}. "
                "Leave clip_norm=None."
            )

    @staticmethod
    def _make_stepper(
        loss_module: DTQLLoss,
        optimizers: DTQLOptimizers | None,
        pretrain_steps: int,
        lr_decay_steps: int | None,
        optimization_stepper: DTQLOptimizationStepper | None,
    ) -> DTQLOptimizationStepper:
        if optimization_stepper is None:
            if optimizers is None:
                optimizers = make_dtql_optimizers(loss_module)
            return DTQLOptimizationStepper(optimizers, pretrain_steps=pretrain_steps, lr_decay_steps=lr_decay_steps)
        if optimizers is not None or pretrain_steps or lr_decay_steps is not None:
            raise ValueError(
                "Pass either optimization_stepper or optimizers/pretrain_steps/lr_decay_steps: the stepper already "
                "holds them."
            )
        if not isinstance(optimization_stepper, DTQLOptimizationStepper):
            raise TypeError(
                "optimization_stepper must be a DTQLOptimizationStepper, got "
                f"{type(optimization_stepper).__name__}."
            )
        return optimization_stepper

    @property
    def optimizers(self) -> DTQLOptimizers:
        """The critic, diffusion and actor optimizers (owned by the optimization stepper)."""
        return self.optimization_stepper.optimizers

    @property
    def in_pretraining(self) -> bool:
        """Whether the next gradient step is a pretraining (diffusion + critic only) step."""
        return self.optimization_stepper.in_pretraining

    def _setup_collection_logging(self) -> None:
        """Statistics of the collected batches, as ``IQLTrainer`` logs them (online training only)."""
        hook_dest = "pre_steps_log" if not self.async_collection else "post_optim_log"
        self.register_op(
            hook_dest,
            LogScalar(key=("next", "done"), logname="done_percentage", log_pbar=True, include_std=False),
        )
        if self.log_rewards:
            self.register_op(hook_dest, LogScalar(key=("next", "reward"), logname="r_training", log_pbar=True))
            self.register_op(
                hook_dest,
                LogScalar(key=("next", "reward"), logname="r_max", include_std=False, reduction="max"),
            )
        if self.log_actions:
            self.register_op(hook_dest, LogScalar(key="action", logname="action_norm"))
        if self.log_observations:
            self.register_op(hook_dest, LogScalar(key="observation", logname="obs_norm"))
        self.register_op("pre_steps_log", UTDRHook(self))
