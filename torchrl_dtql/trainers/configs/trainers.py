"""``DTQLTrainerConfig``: the Hydra configuration of :class:`~torchrl_dtql.trainers.DTQLTrainer`, shaped like ``IQLTrainerConfig``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torchrl.collectors import BaseCollector
from torchrl.objectives import SoftUpdate
from torchrl.objectives.utils import TargetNetUpdater
from torchrl.record.loggers import Logger
from torchrl.trainers import TrainerHookBase
from torchrl.trainers.algorithms.configs.trainers import TrainerConfig

from torchrl_dtql.objectives.dtql import DTQLLoss
from torchrl_dtql.objectives.update import DTQLOptimizers, make_dtql_optimizers
from torchrl_dtql.trainers.dtql import DTQLTrainer

__all__ = ["DTQLTrainerConfig", "REFERENCE_TAU"]

#: The Polyak rate of the reference's target critic (used when the config names no target_net_updater).
REFERENCE_TAU = 0.005


@dataclass
class DTQLTrainerConfig(TrainerConfig):
    """Hydra configuration for :class:`~torchrl_dtql.trainers.DTQLTrainer`.

    Every keyword of ``DTQLTrainer.__init__`` is a field, with ``IQLTrainerConfig``'s names, plus the optimizer of
    each DTQL part. ``collector: null`` (the default) trains offline: ``total_frames`` then counts gradient steps,
    the first ``pretrain_steps`` of which train the diffusion model and the critic only. Offline, the run's length
    can instead be given as the example names it: ``pretrain_steps`` + ``gradient_steps`` (main-phase steps), with
    ``lr_decay: true`` for a cosine decay over the main phase (``total_frames`` and ``lr_decay_steps`` then follow).
    ``evaluation`` (an :class:`~torchrl_dtql.trainers.configs.DTQLEvaluationConfig`) evaluates the policy in the
    dataset's env with the package's evaluator, as the example does.

    Optimizers are ``_partial_`` optimizer configs (TorchRL's ``optimizer`` group, e.g. ``adam``):
    ``optimizer_critic``, ``optimizer_diffusion`` and ``optimizer_actor`` each fall back to ``optimizer``, and to
    :func:`~torchrl_dtql.make_dtql_optimizers`'s Adam (lr 3e-4) when that is unset too. ``optimizer_alpha`` steps
    ``log(alpha)`` when the loss learns it (``alpha: auto``; otherwise it is not used) and falls back to
    ``make_dtql_optimizers``' Adam (lr 3e-3) only. The reference uses Adam with
    lr 3e-4 for the critic and the per-task lr for the other two. Beware that TorchRL's ``AdamConfig`` defaults to
    ``eps: 1e-4``, not PyTorch's 1e-8 that the reference uses: set ``eps`` in the config.

    The target updater defaults to the reference's ``SoftUpdate(loss, tau=0.005)``. TorchRL's ``soft`` config
    defaults to ``tau: 0.001``; set ``tau`` when you select it.
    """

    loss_module: Any  # a DTQLLossConfig (or a DTQLLoss)
    replay_buffer: Any  # offline: an OfflineReplayBufferConfig (the dataset)
    total_frames: int | None = None  # offline: gradient steps, pretraining included; online: frames to collect
    gradient_steps: int | None = None  # offline, instead of total_frames: main-phase steps after pretrain_steps
    lr_decay: bool = False  # offline, with gradient_steps: cosine decay of the 3 lrs over the main phase
    evaluation: Any = None  # a DTQLEvaluationConfig: evaluate in the dataset's env every eval_iter steps
    collector: Any = None  # None: offline training
    optim_steps_per_batch: int | None = 1000  # offline: gradient steps per logged epoch (reference epoch: 1000)
    pretrain_steps: int = 0  # diffusion + critic steps before the first actor step (reference: 50_000)
    lr_decay_steps: int | None = None  # cosine decay of the 3 lrs over this many main-phase steps (None: constant)
    optimizer: Any = None  # fallback optimizer of the three parts (a _partial_ optimizer config)
    optimizer_critic: Any = None  # optimizer of the Q ensemble and V (reference: Adam, lr 3e-4)
    optimizer_diffusion: Any = None  # optimizer of the diffusion model (reference: Adam, per-task lr)
    optimizer_actor: Any = None  # optimizer of the one-step policy (reference: Adam, per-task lr)
    optimizer_alpha: Any = None  # optimizer of log(alpha) when the loss has alpha="auto" (default: Adam, lr 3e-3)
    logger: Any = None
    save_trainer_file: Any = None
    frame_skip: int = 1
    clip_grad_norm: bool = True  # unused: DTQL does not clip
    clip_norm: float | None = None  # must stay None
    progress_bar: bool = True
    seed: int | None = None
    save_trainer_interval: int = 10000
    log_interval: int = 10000
    create_env_fn: Any = None  # accepted for parity with TorchRL's trainer configs; unused
    actor_network: Any = None  # networks handed to a _partial_ loss_module
    diffusion_network: Any = None
    qvalue_network: Any = None
    value_network: Any = None
    target_net_updater: Any = None  # None: SoftUpdate(loss, tau=0.005)
    async_collection: bool = False
    log_timings: bool = False
    auto_log_optim_steps: bool = True
    enable_logging: bool = True
    log_rewards: bool = True
    log_actions: bool = True
    log_observations: bool = False
    hooks: list[Any] | None = None  # TrainerHookBase instances registered on the trainer
    checkpoint: Any = None
    checkpoint_rotation: Any = None
    checkpoint_metadata: Any = None
    _target_: str = "torchrl_dtql.trainers.configs.trainers._make_dtql_trainer"

    def __post_init__(self) -> None:
        super().__post_init__()


def _build(factory: Any) -> Any:
    return factory() if factory is not None and not isinstance(factory, torch.nn.Module) else factory


def _make_loss(loss_module: Any, networks: dict[str, Any]) -> DTQLLoss:
    if isinstance(loss_module, DTQLLoss):
        return loss_module
    if not callable(loss_module):
        raise TypeError(f"loss_module must be a DTQLLoss or a DTQLLossConfig, got {type(loss_module).__name__}.")
    loss_module = loss_module(**{name: net for name, net in networks.items() if net is not None})
    if not isinstance(loss_module, DTQLLoss):
        raise TypeError(f"loss_module must build a DTQLLoss, got {type(loss_module).__name__}.")
    return loss_module


def _make_optimizers(loss: DTQLLoss, fallback: Any, **per_part: Any) -> DTQLOptimizers:
    """Each part's optimizer from its config, else the fallback's (not for a learnt alpha's), else
    make_dtql_optimizers' default Adam."""
    default = make_dtql_optimizers(loss)
    optimizers = {}
    for part, optimizer in default.present().items():
        factory = per_part[part] if per_part[part] is not None or part == "alpha" else fallback
        if factory is None:
            optimizers[part] = optimizer
        elif isinstance(factory, torch.optim.Optimizer):
            optimizers[part] = factory
        else:
            optimizers[part] = factory(params=optimizer.param_groups[0]["params"])
    return DTQLOptimizers(**optimizers)


def _make_dtql_trainer(**kwargs) -> DTQLTrainer:
    collector = kwargs.pop("collector")
    async_collection = kwargs["async_collection"]
    replay_buffer = kwargs["replay_buffer"]
    if collector is not None and not isinstance(collector, BaseCollector):
        collector = collector(replay_buffer=replay_buffer) if async_collection else collector()

    networks = {name: _build(kwargs.pop(name)) for name in
                ("actor_network", "diffusion_network", "qvalue_network", "value_network")}
    loss_module = _make_loss(kwargs.pop("loss_module"), networks)

    target_net_updater = kwargs.pop("target_net_updater")
    if target_net_updater is None:
        target_net_updater = SoftUpdate(loss_module, tau=REFERENCE_TAU)
    elif not isinstance(target_net_updater, TargetNetUpdater):
        target_net_updater = target_net_updater(loss_module)

    optimizers = _make_optimizers(
        loss_module,
        kwargs.pop("optimizer"),
        critic=kwargs.pop("optimizer_critic"),
        diffusion=kwargs.pop("optimizer_diffusion"),
        actor=kwargs.pop("optimizer_actor"),
        alpha=kwargs.pop("optimizer_alpha"),
    )
    run_length(kwargs)
    evaluation = kwargs.pop("evaluation")
    logger = kwargs["logger"]
    if logger is not None and not isinstance(logger, Logger):
        raise TypeError(f"logger must be a TorchRL Logger, got {type(logger).__name__}.")
    kwargs.pop("create_env_fn")
    hooks = kwargs.pop("hooks") or []

    trainer = DTQLTrainer(
        collector=collector,
        loss_module=loss_module,
        target_net_updater=target_net_updater,
        optimizers=optimizers,
        **kwargs,
    )
    for index, hook in enumerate(hooks):
        if not isinstance(hook, TrainerHookBase):
            raise TypeError(f"trainer hooks must be TrainerHookBase instances, got {type(hook).__name__} at {index}.")
        hook.register(trainer)
    if evaluation is not None:
        trainer.evaluation = evaluation(loss=loss_module, info=trainer.replay_buffer.metadata)
        trainer.evaluation.register(trainer)
    return trainer


def run_length(kwargs: dict[str, Any]) -> None:
    """Fills ``total_frames`` and ``lr_decay_steps`` from the example's ``gradient_steps`` and ``lr_decay``.

    Examples:
        >>> kwargs = {"total_frames": None, "pretrain_steps": 2, "gradient_steps": 4, "lr_decay": True,
        ...           "lr_decay_steps": None}
        >>> run_length(kwargs)
        >>> kwargs["total_frames"], kwargs["lr_decay_steps"]
        (6, 4)
    """
    gradient_steps, lr_decay = kwargs.pop("gradient_steps"), kwargs.pop("lr_decay")
    if gradient_steps is None:
        if lr_decay:
            raise ValueError("lr_decay: true decays over gradient_steps; set gradient_steps (or lr_decay_steps).")
        if kwargs["total_frames"] is None:
            raise ValueError("Set the run's length: gradient_steps (main-phase steps) or total_frames.")
        return
    total = kwargs["pretrain_steps"] + gradient_steps
    if kwargs["total_frames"] not in (None, total):
        raise ValueError(
            f"total_frames={kwargs['total_frames']} contradicts pretrain_steps + gradient_steps = {total}: set one."
        )
    kwargs["total_frames"] = total
    if lr_decay:
        if kwargs["lr_decay_steps"] not in (None, gradient_steps):
            raise ValueError("lr_decay: true decays over gradient_steps; leave lr_decay_steps unset.")
        kwargs["lr_decay_steps"] = gradient_steps
