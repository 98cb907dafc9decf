"""``DTQLEvaluation``: the example's evaluation (same evaluator, modes and seeds) as a TorchRL trainer hook."""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from tensordict import TensorDictBase
from torchrl.objectives import LossModule
from torchrl.trainers import Trainer, TrainerHookBase

from torchrl_dtql.data import OfflineDatasetInfo
from torchrl_dtql.evaluation import evaluate_policies, make_eval_env, resolve_eval_env, score_table
from torchrl_dtql.policies import make_acting_policies

__all__ = ["DTQLEvaluation", "EVAL_SEED_OFFSET"]

#: The reference evaluates in envs seeded ``seed + 100``, as the example does.
EVAL_SEED_OFFSET = 100


class DTQLEvaluation(TrainerHookBase):
    """Evaluates the trained policy every ``eval_iter`` main-phase gradient steps and at the end of training.

    The same evaluation as ``examples/dtql_offline.py``: the dataset's evaluation env under its family's protocol
    (:attr:`env_spec`; checked against the data, with the dataset's observation transforms), each acting mode of
    ``eval_modes`` (the paper's Q-reranked policy, the mean action, diffusion BC) on the same ``eval_episodes``
    episodes seeded ``seed + 100``, raw and normalized returns.
    Registered after the optimisation steps of each trainer batch, so ``eval_iter`` is best a multiple of the
    trainer's ``optim_steps_per_batch``; it logs ``eval/<mode>/normalized_score`` (or ``/return`` when the dataset
    has no reference scores), keeps every evaluation in :attr:`history` and the final and best scores in
    :meth:`scores`.

    Args:
        loss: the trainer's :class:`~torchrl_dtql.DTQLLoss` (its parameters are read by reference).
        info: the dataset's metadata (``replay_buffer.metadata``).

    Keyword Args:
        eval_iter: main-phase gradient steps between evaluations.
        eval_episodes, eval_max_steps, eval_envs: episodes per mode, their length, envs stepped together.
        eval_modes: acting modes (:data:`~torchrl_dtql.policies.ACTING_MODES`), the first one shown in the bar.
        num_candidates, temperature, use_target_qvalue: the Q-reranked policy's settings.
        seed: the run's seed; the envs get ``seed + 100``.
        env_name, env_kwargs, parallel, backend, observation_norm: the env, as
            :func:`~torchrl_dtql.evaluation.make_eval_env` takes them (``env_name=None``: the dataset's env).
        pretrain_steps: the trainer's pretraining steps (main-phase steps are counted after them); set by
            :meth:`register` from the trainer when it has them.

    Examples:
        >>> hook = DTQLEvaluation(loss, replay_buffer.metadata, eval_iter=1000, eval_episodes=5)  # doctest: +SKIP
        >>> hook.register(trainer)  # doctest: +SKIP
    """

    def __init__(
        self,
        loss: LossModule,
        info: OfflineDatasetInfo,
        *,
        eval_iter: int,
        eval_episodes: int = 10,
        eval_max_steps: int = 1000,
        eval_envs: int = 10,
        eval_modes: Sequence[str] = ("reranked", "mean"),
        num_candidates: int = 1024,
        temperature: float = 1.0,
        use_target_qvalue: bool = True,
        seed: int = 0,
        env_name: str | None = None,
        env_kwargs: Mapping[str, Any] | None = None,
        parallel: bool = False,
        backend: str = "gymnasium",
        observation_norm: bool = False,
        pretrain_steps: int = 0,
    ) -> None:
        if eval_iter < 1:
            raise ValueError(f"eval_iter must be >= 1 main-phase steps, got {eval_iter}.")
        self.info = info
        self.eval_iter = eval_iter
        self.eval_modes = list(eval_modes)
        self.policies = make_acting_policies(
            loss, self.eval_modes, num_candidates=num_candidates, temperature=temperature,
            use_target_qvalue=use_target_qvalue,
        )  # fmt: skip
        #: the env, its kwargs and the protocol scoring it (the dataset's evaluation env, as the example's)
        self.env_spec = resolve_eval_env(info, env_id=env_name, env_kwargs=env_kwargs)
        self.env = make_eval_env(
            info,
            spec=self.env_spec,
            num_envs=max(1, min(eval_envs, eval_episodes)),
            parallel=parallel,
            backend=backend,
            observation_norm=observation_norm,
        )
        self.episodes, self.max_steps, self.seed = eval_episodes, eval_max_steps, seed + EVAL_SEED_OFFSET
        self.pretrain_steps = pretrain_steps
        self.trainer: Trainer | None = None
        self.history: list[dict[str, Any]] = []

    def evaluate(self, main_step: int) -> dict[str, Any]:
        """One evaluation of every acting mode, recorded in :attr:`history` as the example records it."""
        modes = evaluate_policies(
            self.env, self.policies, episodes=self.episodes, max_steps=self.max_steps, seed=self.seed, info=self.info
        )
        record = {"step": main_step, "modes": modes}
        self.history.append(record)
        return record

    def scores(self) -> dict[str, dict[str, Any]]:
        """Final and best scores of each acting mode over the evaluations so far."""
        return score_table(self.history, self.eval_modes)

    def __call__(self, batch: TensorDictBase | None = None) -> dict[str, float] | None:
        if self.trainer is None:
            raise RuntimeError("DTQLEvaluation.register(trainer) first: it counts the trainer's gradient steps.")
        main_step = self.trainer.collected_frames - self.pretrain_steps
        done = self.trainer.collected_frames >= self.trainer.total_frames
        last = self.history[-1]["step"] if self.history else 0
        if main_step <= 0 or main_step == last or (main_step // self.eval_iter == last // self.eval_iter and not done):
            return None
        record = self.evaluate(main_step)
        logged = {}
        for mode, result in record["modes"].items():
            key = "normalized_score" if result["normalized_score"]["mean"] is not None else "return"
            logged[f"eval/{mode}/{key}"] = result[key]["mean"]
            logged[f"eval/{mode}/episode_length"] = result["episode_length"]
        return logged

    def register(self, trainer: Trainer, name: str = "dtql_evaluation") -> None:
        """Runs after each trainer batch's optimisation steps; saved with the trainer's state."""
        self.trainer = trainer
        self.pretrain_steps = getattr(trainer, "pretrain_steps", self.pretrain_steps)
        trainer.register_op("post_steps_log", self)
        trainer.register_module(name, self)

    def state_dict(self) -> dict[str, Any]:
        return {"history": list(self.history)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict["history"])
