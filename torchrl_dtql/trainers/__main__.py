"""``python -m torchrl_dtql.trainers [hydra overrides]``: offline DTQL through TorchRL's config-driven trainer.

Composes ``torchrl_dtql/trainers/config/dtql_offline.yaml`` (the reference's hopper-medium preset on the embedded
dataset), instantiates ``cfg.trainer`` (a :class:`~torchrl_dtql.trainers.DTQLTrainer`) and trains it. Any field is an
override, e.g. ``replay_buffer.source=mujoco/hopper/medium-v0 trainer.total_frames=20000 trainer.pretrain_steps=5000``.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

import torchrl_dtql.trainers.configs  # noqa: F401  (registers trainer/dtql, loss/dtql, model/..., replay_buffer/offline)


@hydra.main(config_path="pkg://torchrl_dtql.trainers.config", config_name="dtql_offline", version_base=None)
def main(cfg: DictConfig) -> None:
    hydra.utils.instantiate(cfg.trainer).train()


if __name__ == "__main__":
    main()
