"""``python -m torchrl_dtql.trainers [hydra overrides]``: offline DTQL through TorchRL's config-driven trainer.

Composes ``torchrl_dtql/trainers/recipes/dtql_offline.yaml`` (the example's recipe with the hopper-medium preset on
the embedded dataset), instantiates ``cfg.trainer`` (a :class:`~torchrl_dtql.trainers.DTQLTrainer` with the
example's evaluation as a hook), trains it and prints the final and best scores of each acting mode. Overrides use
the example's key names, e.g. ``replay_buffer.dataset=mujoco/hopper/medium-v0 optim.gradient_steps=20000
optim.pretrain_steps=5000 evaluation.eval_iter=5000``.
"""
from __future__ import annotations

import hydra
from omegaconf import DictConfig

import torchrl_dtql.trainers.configs  # noqa: F401  (registers trainer/dtql, loss/dtql, model/..., the resolver)


@hydra.main(config_path="pkg://torchrl_dtql.trainers.recipes", config_name="dtql_offline", version_base="1.3")
def main(cfg: DictConfig) -> None:
    trainer = hydra.utils.instantiate(cfg.trainer)
    trainer.train()
    if trainer.evaluation is not None:
        for mode, row in trainer.evaluation.scores().items():
            final, best = row["final_normalized_score"], row["best_normalized_score"]
            score = "return" if final is None else "normalized score"
            final, best = (row["final_return"], row["best_return"]) if final is None else (final, best)
            print(f"{mode}: final {score} {final:.1f} (main-phase step {row['final_step']}), best {best:.1f} "
                  f"(step {row['best_step']})", flush=True)


if __name__ == "__main__":
    main()
