"""Diffusion Trusted Q-Learning (DTQL), offline: the paper's training and evaluation protocol with TorchRL.

This is a self-contained example of an offline DTQL run (Chen, Wang and Zhou, NeurIPS 2024). Its builders are in
``utils.py`` and its configuration in ``config/`` (``config.yaml`` plus one preset per paper task in
``config/task/``). The protocol follows the authors' code (``dtql_spec.md`` sections 3-5):

1. pretraining: ``optim.pretrain_steps`` steps of the diffusion (behaviour-cloning) model and the critic;
2. main phase: ``optim.gradient_steps`` steps, each updating the critic, then the diffusion model, then the one-step
   policy (three Adam optimizers, optional cosine decay of all three), then the Polyak-averaged target critic;
3. every ``logger.eval_iter`` main-phase steps and at the end: ``logger.eval_episodes`` episodes per acting mode
   (Q-reranked candidates, as the paper reports, and the deterministic mean action), in envs reseeded with
   ``seed + 100`` each time; raw and normalized returns, final and best.

Run it::

    python examples/dtql_offline.py                                  # embedded default dataset, a few minutes on CPU
    python examples/dtql_offline.py task=hopper-medium-v2 seed=1     # a paper preset (50k + 1M steps)
    python examples/dtql_offline.py output_dir=runs/a resume=true    # continue a stopped or killed run, exactly
    python examples/dtql_offline.py resume=true                      # continue the newest run of this task and seed

Ctrl-C or SIGTERM ends the step in progress, writes a checkpoint and prints the command that continues the run.

Outputs (``output_dir``): ``summary.json``, ``learning_curve.png``, ``policy.pt2`` (the exported acting policy),
``logs/`` (TorchRL logger), ``checkpoints/last.pt``, ``config.yaml``, ``dtql_offline.log`` (the run's log lines and
training metrics, continued by a resumed run).
"""
from __future__ import annotations

import contextlib
import functools
import logging
import shlex
import sys
import time
from pathlib import Path

try:
    import torchrl_dtql  # noqa: F401
except ImportError:  # a source checkout without `pip install -e .`
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import hydra
import torch
import tqdm
from omegaconf import DictConfig, OmegaConf
from tqdm.contrib.logging import logging_redirect_tqdm
from torchrl._utils import timeit
from torchrl.objectives import SoftUpdate

from torchrl_dtql import make_dtql_update_fn
from torchrl_dtql.checkpoint import load_checkpoint, save_checkpoint
from torchrl_dtql.evaluation import evaluate_policies, score_table
from torchrl_dtql.export import export_policy, make_exportable_policy
from torchrl_dtql.interrupt import GracefulStop, StopRequested
from utils import (
    atomic_write_text,
    behaviour_policy_score,
    check_config_keys,
    check_resume,
    checkpoint_interval,
    checkpoint_path,
    config_to_dict,
    evaluation_metrics,
    exit_on_user_error,
    format_score,
    format_summary,
    latest_run_to_resume,
    library_versions,
    log_file,
    log_metrics,
    make_eval_env_from_config,
    make_eval_policies,
    make_logger,
    make_loss,
    make_lr_schedulers,
    make_optimizers,
    make_replay_buffer,
    METRICS_LOGGER,
    plot_learning_curve,
    prepare_output_dir,
    remove_unused_run_dir,
    resolve_device,
    resolve_eval_env_from_config,
    seed_everything,
    training_budget,
    truncate_csv_logs,
    write_summary,
)

try:  # the submitit (SLURM) launcher pickles main: send utils.py along, workers cannot import it by name
    import cloudpickle
    import utils

    cloudpickle.register_pickle_by_value(utils)
except ImportError:
    pass

EVAL_SEED_OFFSET = 100  # the reference evaluates in envs seeded seed + 100

log = logging.getLogger("dtql_offline")
metrics_log = logging.getLogger(METRICS_LOGGER)  # the training metrics: the log file only


@hydra.main(config_path="config", config_name="config", version_base="1.3")
@exit_on_user_error
def main(cfg: DictConfig) -> None:
    with GracefulStop() as stop, logging_redirect_tqdm(), contextlib.ExitStack() as cleanup:
        try:
            train_and_evaluate(cfg, stop, cleanup)
        except StopRequested:  # while the dataset loaded: nothing trained, nothing to save
            log.info("Stopped (%s) before training; nothing to save. Run the same command again.", stop.signal_name)
            sys.exit(stop.exit_code)


def train_and_evaluate(cfg: DictConfig, stop: GracefulStop, cleanup: contextlib.ExitStack) -> None:
    wall_start = time.perf_counter()

    # Config, output folder and log file: fail early on an unknown key, an unwritable folder or a checkpoint that
    # does not match. resume=true alone continues the newest run of this task and seed.
    check_config_keys(cfg)
    previous_run = latest_run_to_resume(cfg)
    if previous_run is not None:
        remove_unused_run_dir(Path(cfg.output_dir))
        cfg.output_dir = str(previous_run)
    output_dir = prepare_output_dir(cfg.output_dir)
    cleanup.enter_context(log_file(output_dir / "dtql_offline.log"))
    config = config_to_dict(cfg)
    resume_from = check_resume(cfg, output_dir, config)
    atomic_write_text(OmegaConf.to_yaml(cfg, resolve=True), output_dir / "config.yaml")
    log.info("DTQL %s: outputs in %s", cfg.task_name, output_dir)

    # Seeds, device, threads
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    if cfg.num_threads:
        torch.set_num_threads(cfg.num_threads)

    # Data: the whole dataset in a replay buffer, with its metadata (specs, env, reference scores)
    with stop.immediately():  # loading (a first use regenerates an embedded dataset): a stop exits at once
        replay_buffer = make_replay_buffer(cfg, device)
    info = replay_buffer.metadata

    # Evaluation envs: the dataset's evaluation env and kwargs under its family's protocol (AntMaze success rate,
    # Kitchen subtasks, D4RL's Adroit return), checked against the dataset's observation and action sizes
    eval_spec = resolve_eval_env_from_config(cfg, info)
    log.info("Evaluation env: %s", eval_spec.describe())
    eval_env = make_eval_env_from_config(cfg, info, eval_spec)

    # Networks inside the loss, target critic updater, optimizers, LR schedules
    loss = make_loss(cfg, info, device)
    target_updater = SoftUpdate(loss, tau=cfg.loss.tau)
    optimizers = make_optimizers(cfg, loss)
    schedulers = make_lr_schedulers(cfg, optimizers)
    eval_policies = make_eval_policies(cfg, loss)

    # The update step, in the reference order (critic, diffusion, actor, target critic) with the critic and diffusion
    # backward fused; compile=true compiles its loss computations. It returns detached losses and never syncs.
    update = make_dtql_update_fn(
        loss, optimizers, target_updater=target_updater, compile=cfg.compile, compile_mode=cfg.compile_mode
    )
    pretrain_update = functools.partial(update, pretrain=True)
    main_update = functools.partial(update, pretrain=False)

    # Resume: networks, optimizers, schedulers, RNG states, logger, evaluation history
    start_step, history, totals, logger_state = 0, [], {"train_time_s": 0.0, "wall_time_s": 0.0, "steps": 0}, None
    if resume_from is not None:
        checkpoint = load_checkpoint(
            resume_from, loss=loss, optimizers=optimizers, schedulers=schedulers, replay_buffer=replay_buffer
        )
        start_step, extra = checkpoint["step"], checkpoint["extra"]
        history, totals = extra["history"], extra["totals"]
        logger_state = extra["logger"] if extra.get("logger_backend") == cfg.logger.backend else None
        log.info("Resuming from %s at step %d.", resume_from, start_step)
    logger = make_logger(cfg, output_dir, config, state=logger_state)
    if resume_from is not None:
        truncate_csv_logs(logger, start_step)

    def save(step: int) -> None:
        with timeit("checkpoint"):
            totals_now = dict(totals)
            totals_now["wall_time_s"] += time.perf_counter() - wall_start
            save_checkpoint(
                checkpoint_path(output_dir),
                loss=loss,
                optimizers=optimizers,
                schedulers=schedulers,
                step=step,
                config=config,
                replay_buffer=replay_buffer,
                extra={
                    "history": history,
                    "totals": totals_now,
                    "logger": logger.state_dict() if logger is not None else None,
                    "logger_backend": cfg.logger.backend,
                },
            )

    def run_evaluation(main_step: int) -> None:
        with timeit("eval"):
            modes = evaluate_policies(
                eval_env,
                eval_policies,
                episodes=cfg.logger.eval_episodes,
                max_steps=cfg.logger.eval_max_steps,
                seed=cfg.seed + EVAL_SEED_OFFSET,
                info=info,
                device=device,
                progress=eval_progress_bar,
            )
        record = {"step": main_step, "modes": modes}
        history.append(record)
        log_metrics(logger, evaluation_metrics(record), cfg.optim.pretrain_steps + main_step)
        results = ", ".join(
            f"{mode} {format_score(result['normalized_score']['mean'], result['normalized_score']['stderr'])}"
            if result["normalized_score"]["mean"] is not None
            else f"{mode} return {result['return']['mean']:.1f}"
            for mode, result in record["modes"].items()
        )
        log.info("eval at main-phase step %d: %s", main_step, results)
        primary = record["modes"][cfg.logger.eval_modes[0]]
        score = primary["normalized_score"]["mean"]
        pbar.set_postfix({"score": f"{score:.1f}" if score is not None else f"R={primary['return']['mean']:.0f}"})

    # Training loop
    pretrain_steps, gradient_steps = cfg.optim.pretrain_steps, cfg.optim.gradient_steps
    total_steps = pretrain_steps + gradient_steps
    stop_at_step, interval = cfg.checkpoint.stop_at_step, checkpoint_interval(cfg)
    pbar = tqdm.tqdm(total=total_steps, initial=start_step, desc=f"DTQL {cfg.task_name}", unit="step")
    loop_start, steps_before = time.perf_counter(), start_step
    timeit.erase()
    for step in range(start_step, total_steps):
        pretraining = step < pretrain_steps
        with timeit("sample"):
            batch = replay_buffer.sample()
        with timeit("update"):
            if pretraining:
                losses = pretrain_update(batch)
            else:
                losses = main_update(batch)
                for scheduler in schedulers:
                    scheduler.step()
        pbar.update(1)
        steps_done, main_steps_done = step + 1, step + 1 - pretrain_steps

        if steps_done % cfg.logger.log_iter == 0 or steps_done == total_steps:  # the only host syncs of the loop
            phase = "pretrain" if pretraining else "train"
            metrics = {f"{phase}/{key}": value.item() for key, value in losses.items()}
            metrics[f"{phase}/lr"] = float(optimizers.actor.param_groups[0]["lr"])
            metrics["time/speed"] = pbar.format_dict["rate"]
            metrics.update(timeit.todict(prefix="time"))
            log_metrics(logger, metrics, steps_done)
            values = ", ".join(f"{name}={value:.5g}" for name, value in metrics.items() if value is not None)
            metrics_log.info("step %d: %s", steps_done, values)
        if not pretraining and main_steps_done % cfg.logger.eval_iter == 0 and steps_done < total_steps:
            run_evaluation(main_steps_done)
        stopping = stop.requested or steps_done == stop_at_step
        if (interval and steps_done % interval == 0) or steps_done == total_steps or stopping:
            save(steps_done)
        if stopping and steps_done < total_steps:
            pbar.close()
            reason = stop.signal_name or "checkpoint.stop_at_step"
            log.info(
                "Stopped at step %d (%s); checkpoint %s. Continue with:\n  %s",
                steps_done,
                reason,
                checkpoint_path(output_dir),
                resume_command(output_dir),
            )
            if stop.requested:
                sys.exit(stop.exit_code)
            return
    train_time = time.perf_counter() - loop_start - timeit.todict(percall=False).get("eval", 0.0)
    train_time -= timeit.todict(percall=False).get("checkpoint", 0.0)
    totals["train_time_s"] += train_time
    totals["steps"] += total_steps - steps_before

    # Final evaluation, at the end of training (the number the paper reports)
    if not history or history[-1]["step"] != gradient_steps:
        run_evaluation(gradient_steps)
    pbar.close()
    if stop.requested:  # training is complete and checkpointed; a resume only redoes the final evaluation
        log.info(
            "Stopped (%s) after training; write the summary with:\n  %s", stop.signal_name, resume_command(output_dir)
        )
        sys.exit(stop.exit_code)

    # Outputs: exported policy, learning curve, summary
    scores = score_table(history, cfg.logger.eval_modes)
    primary = scores[cfg.logger.eval_modes[0]]
    behaviour_return, behaviour_score = behaviour_policy_score(info)
    policy_path = None
    if cfg.export.enabled:
        exportable = make_exportable_policy(
            loss,
            num_candidates=cfg.export.num_candidates,
            temperature=cfg.policy.temperature,
            use_target_qvalue=cfg.policy.use_target_qvalue,
            observation_loc=info.obs_loc,
            observation_scale=info.obs_scale,
        )
        metadata = {
            "env_id": eval_spec.env_id,
            "env_kwargs": eval_spec.as_dict()["kwargs"],
            "dataset": info.dataset_id,
            "task_name": cfg.task_name,
            "observation_keys": list(info.observation_keys) if info.observation_keys else None,
        }
        policy_path = str(export_policy(exportable, output_dir / "policy.pt2", metadata=metadata))
    curve_path = None
    if cfg.logger.plot:
        curve = plot_learning_curve(
            history,
            output_dir / "learning_curve.png",
            title=f"DTQL {cfg.task_name} ({info.dataset_id}), seed {cfg.seed}",
            behaviour_score=behaviour_score,
        )
        curve_path = str(curve) if curve is not None else None
    wall_time = totals["wall_time_s"] + time.perf_counter() - wall_start
    summary = {
        "task_name": cfg.task_name,
        "dataset": info.dataset_id,
        "dataset_source": info.source_path,
        "env": eval_spec.env_id,
        "eval_env": eval_spec.as_dict(),
        "seed": cfg.seed,
        "eval_seed": cfg.seed + EVAL_SEED_OFFSET,
        "seeds": {"torch_numpy_random": cfg.seed, "replay_buffer": cfg.seed, "eval": cfg.seed + EVAL_SEED_OFFSET},
        "device": str(device),
        "num_threads": torch.get_num_threads(),
        "pretrain_steps": pretrain_steps,
        "gradient_steps": gradient_steps,
        "batch_size": cfg.optim.batch_size,
        "budget": training_budget(cfg),
        "primary_mode": cfg.logger.eval_modes[0],
        "final_normalized_score": primary["final_normalized_score"],
        "final_normalized_score_stderr": primary["final_normalized_score_stderr"],
        "final_return": primary["final_return"],
        "best_normalized_score": primary["best_normalized_score"],
        "best_step": primary["best_step"],
        "scores": scores,
        "behaviour_return": behaviour_return,
        "behaviour_normalized_score": behaviour_score,
        "behaviour_episodes": None if info.episode_returns is None else len(info.episode_returns),
        "eval_episodes": cfg.logger.eval_episodes,
        "steps_per_second": totals["steps"] / totals["train_time_s"] if totals["train_time_s"] > 0 else 0.0,
        "train_time_s": totals["train_time_s"],
        "wall_time_s": wall_time,
        "time_per_call_s": timeit.todict(),
        "resumed_from_step": None if resume_from is None else steps_before,
        "evaluations": history,
        "output_dir": str(output_dir),
        "policy_path": policy_path,
        "learning_curve_path": curve_path,
        "versions": library_versions(),
        "config": config,
    }
    write_summary(summary, output_dir)
    if logger is not None and hasattr(logger, "experiment") and hasattr(logger.experiment, "flush"):
        logger.experiment.flush()
    eval_env.close()
    log.info(format_summary(summary))


def eval_progress_bar(mode: str, total_env_steps: int) -> tqdm.tqdm:
    """One acting mode's evaluation bar, in env steps, under the training bar (gone when it ends)."""
    return tqdm.tqdm(total=total_env_steps, desc=f"  eval {mode}", unit="env step", leave=False, mininterval=1.0)


def resume_command(output_dir: Path) -> str:
    """The command line that continues the run in ``output_dir``."""
    kept = [arg for arg in sys.argv[1:] if not arg.startswith(("output_dir=", "resume="))]
    return shlex.join(["python", sys.argv[0], *kept, f"output_dir={output_dir}", "resume=true"])


if __name__ == "__main__":
    main()
