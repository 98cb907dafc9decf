"""Builders and helpers for ``dtql_offline.py``: data, evaluation env, networks, optimizers, evaluation, outputs.

Grouped as the script uses them (general, data, environment, model, optimizers, evaluation, checkpoints, logging and
outputs). The evaluation itself (envs, seeded episodes, score tables) and the acting policies are the package's
(:mod:`torchrl_dtql.evaluation`, :mod:`torchrl_dtql.policies`); the builders here only read the config. Everything a
user can get wrong (paths, ids, checkpoints, envs) raises an error listed in :data:`USER_ERRORS`, whose message names
the culprit; :func:`exit_on_user_error` turns those into a one-line exit instead of a traceback.
"""
from __future__ import annotations

import contextlib
import functools
import json
import logging
import math
import os
import platform
import random
import sys
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from tensordict.nn import TensorDictModuleBase
from torch.optim.lr_scheduler import CosineAnnealingLR
from torchrl.envs import EnvBase
from torchrl.record.loggers import generate_exp_name, get_logger, Logger

from torchrl_dtql import DTQLLoss, DTQLOptimizers, make_dtql_modules, make_dtql_optimizers
from torchrl_dtql.checkpoint import CheckpointError, CheckpointMismatchError, config_mismatches, read_checkpoint
from torchrl_dtql.data import DEFAULT_DATASET, make_offline_replay_buffer, OfflineDatasetError, OfflineDatasetInfo
from torchrl_dtql.evaluation import EvalEnvSpec, EvaluationEnvError, make_eval_env, normalized_returns, resolve_eval_env
from torchrl_dtql.io import atomic_write, atomic_write_text
from torchrl_dtql.policies import ACTING_MODES, make_acting_policies, UnknownActingModeError

# =====================================================================================================================
# General
# =====================================================================================================================


class ExampleError(Exception):
    """A problem with the command line or the files it names, which the user can fix."""


#: Errors that end the run with their message only (no traceback): they all name what is wrong.
USER_ERRORS = (ExampleError, CheckpointError, OfflineDatasetError, EvaluationEnvError)

#: Config keys allowed to differ between a checkpoint and the run resuming it: they change where and how the run
#: reports, not what it trains (evaluation draws from its own seeded generator, so it never moves training).
RESUME_IGNORED_KEYS = (
    "resume",
    "output_dir",
    "device",
    "compile",
    "compile_mode",
    "num_threads",
    "logger",
    "checkpoint",
    "export",
    "env.eval_envs",
    "env.parallel",
    "replay_buffer.prefetch",
    "paper",
)


def compose_example_config(overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The example's configuration as ``python examples/dtql_offline.py <overrides>`` would build it, resolved (hydra's
    ``output_dir`` interpolation replaced by a placeholder): what a committed run is checked against.

    Examples:
        >>> compose_example_config(["seed=3"])["seed"]
        3
    """
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(Path(__file__).resolve().parent / "config"), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, "output_dir=unused"])
    return OmegaConf.to_container(cfg, resolve=True)


def exit_on_user_error(main: Callable[[DictConfig], Any]) -> Callable[[DictConfig], Any]:
    """Wraps the script's main so that the errors of :data:`USER_ERRORS` exit with ``error: <message>`` (code 1)."""

    @functools.wraps(main)
    def wrapped(cfg: DictConfig) -> Any:
        try:
            return main(cfg)
        except USER_ERRORS as err:
            sys.exit(f"dtql_offline.py: error: {err}")
        except KeyboardInterrupt:  # a second Ctrl-C, while the first one's checkpoint was being written
            message = "interrupted; resume=true continues from the last complete checkpoint."
            print(f"\ndtql_offline.py: {message}", file=sys.stderr)
            sys.exit(130)

    return wrapped


#: Config sections whose keys are free-form (passed through to a library), so unknown keys are allowed there.
FREE_FORM_KEYS = ("env.kwargs",)

#: The config schema: every key the example understands, with its default.
SCHEMA_PATH = Path(__file__).resolve().parent / "config" / "config.yaml"


def _leaf_keys(node: Any, prefix: str = "") -> list[str]:
    if isinstance(node, Mapping) and node and not any(prefix.rstrip(".") == key for key in FREE_FORM_KEYS):
        return [leaf for key, value in node.items() for leaf in _leaf_keys(value, f"{prefix}{key}.")]
    return [prefix.rstrip(".")]


def _is_free_form(key: str) -> bool:
    return any(key == section or key.startswith(f"{section}.") for section in FREE_FORM_KEYS)


def check_config_keys(cfg: DictConfig, schema_path: Path = SCHEMA_PATH) -> None:
    """Refuses any key the schema (``config/config.yaml``) does not define, naming the nearest valid key.

    Hydra already refuses a misspelt override, but suggests ``+key=value``, which adds the key and would let the run
    start with the setting silently ignored; task presets can also add keys. This check runs after composition and
    catches both. Keys under :data:`FREE_FORM_KEYS` are passed through to a library and may be anything.

    Examples:
        >>> from omegaconf import OmegaConf
        >>> check_config_keys(OmegaConf.create({"env": {"kwargs": {"frame_skip": 2}}}))  # free-form: accepted
        >>> check_config_keys(OmegaConf.create({"optim": {"gradient_step": 10}}))  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        ExampleError: unknown config key 'optim.gradient_step' (did you mean 'optim.gradient_steps'?)
    """
    schema = OmegaConf.to_container(OmegaConf.load(schema_path), resolve=False)
    schema.pop("defaults", None)
    schema.pop("hydra", None)
    valid = set(_leaf_keys(schema))
    given = _leaf_keys(OmegaConf.to_container(cfg, resolve=False))
    unknown = [key for key in given if key not in valid and not _is_free_form(key)]
    if not unknown:
        return
    import difflib

    described = []
    for key in unknown:
        section = key.rsplit(".", 1)[0] if "." in key else ""
        same_section = [name for name in valid if name.rsplit(".", 1)[0] == section] if section else []
        match = difflib.get_close_matches(key, same_section, n=1, cutoff=0.6) or difflib.get_close_matches(
            key, sorted(valid), n=1, cutoff=0.5
        )
        hint = f" (did you mean {match[0]!r}?)" if match else ""
        described.append(f"{key!r}{hint}")
    raise ExampleError(
        f"unknown config key {', '.join(described)}. The keys the example understands are those of "
        f"{schema_path.name} (free-form sections: {', '.join(FREE_FORM_KEYS)}); a key added with `+` is refused "
        "too, so that a misspelt setting never starts a run that ignores it."
    )


def resolve_device(name: str | None) -> torch.device:
    """``None`` means CUDA when present, else CPU; an explicit CUDA device must exist."""
    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError as err:
        raise ExampleError(f"device={name!r} is not a device name ({err}).") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ExampleError(f"device={name!r} but CUDA is not available here; use device=cpu or leave device unset.")
    return device


def seed_everything(seed: int) -> None:
    """Seeds torch (all devices), numpy and ``random``."""
    torch.manual_seed(seed)
    np.random.seed(seed)
    random.seed(seed)


def prepare_output_dir(path: str | os.PathLike) -> Path:
    """Creates the output folder (absolute) and checks that files can be written in it."""
    output_dir = Path(path).expanduser().absolute()
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=output_dir, prefix=".write_test_"):
            pass
    except OSError as err:
        raise ExampleError(f"output_dir={str(output_dir)!r} is not a writable folder: {err.strerror or err}.") from err
    return output_dir


def config_to_dict(cfg: DictConfig) -> dict[str, Any]:
    """The resolved configuration as plain Python values."""
    return OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)


def library_versions() -> dict[str, str]:
    """Versions of the libraries a result depends on."""
    versions = {"python": platform.python_version()}
    for name in ("torch", "torchrl", "tensordict", "torchrl_dtql", "numpy", "gymnasium", "mujoco", "minari"):
        try:
            versions[name] = str(__import__(name).__version__)
        except (ImportError, AttributeError):
            versions[name] = "n/a"
    return versions


# =====================================================================================================================
# Data
# =====================================================================================================================


def resolve_dataset_source(source: str | None) -> str:
    """A dataset given as a path becomes absolute; ids (Minari, embedded) are kept as they are."""
    if source is None:
        return DEFAULT_DATASET
    path = Path(source).expanduser()
    return str(path.absolute()) if path.exists() else source


def make_replay_buffer(cfg: DictConfig, device: torch.device):
    """The whole offline dataset in a replay buffer on ``device``, sampled uniformly with replacement (reference).

    The buffer gets its own generator, seeded from ``cfg.seed``, so that checkpoints can save and restore its state.
    Its ``.metadata`` is the dataset's :class:`~torchrl_dtql.data.OfflineDatasetInfo`.
    """
    source = resolve_dataset_source(cfg.replay_buffer.dataset)
    replay_buffer = make_offline_replay_buffer(
        source,
        cfg.optim.batch_size,
        sampler="random",
        prefetch=cfg.replay_buffer.prefetch,
        device=device,
        observation_norm=cfg.replay_buffer.observation_norm,
        reward_shift=cfg.replay_buffer.reward_shift,
        drop_nonfinite=cfg.replay_buffer.drop_nonfinite,
        goal_terminals=cfg.replay_buffer.goal_terminals,
    )
    # the sampler draws its indices on the storage's device, so the generator lives there too
    replay_buffer.set_rng(torch.Generator(device=replay_buffer.storage.device).manual_seed(cfg.seed))
    return replay_buffer


def behaviour_policy_score(info: OfflineDatasetInfo) -> tuple[float | None, float | None]:
    """Mean episode return of the dataset (the behaviour policy) and its normalized score, when known.

    Episodes cut by the end of the data count as they are, as in D4RL's dataset statistics.
    """
    if info.episode_returns is None or len(info.episode_returns) == 0:
        return None, None
    raw = float(np.mean(info.episode_returns))
    normalized = normalized_returns(info, np.asarray([raw]))
    return raw, None if normalized is None else float(normalized[0])


# =====================================================================================================================
# Environment
# =====================================================================================================================


def resolve_eval_env_from_config(cfg: DictConfig, info: OfflineDatasetInfo) -> EvalEnvSpec:
    """The evaluation env, its kwargs and its protocol (:func:`torchrl_dtql.evaluation.resolve_eval_env`): the
    dataset's evaluation env under its family's protocol, with ``env.name`` and ``env.kwargs`` as overrides (one that
    contradicts the dataset's spec or the protocol warns)."""
    return resolve_eval_env(info, env_id=cfg.env.name, env_kwargs=dict(cfg.env.kwargs))


def make_eval_env_from_config(cfg: DictConfig, info: OfflineDatasetInfo, spec: EvalEnvSpec | None = None) -> EnvBase:
    """The batched evaluation envs of :func:`torchrl_dtql.evaluation.make_eval_env`, as the config sets them.

    ``env.eval_envs`` copies (at most ``logger.eval_episodes``) of the env of ``spec`` (default:
    :func:`resolve_eval_env_from_config`), in a ``SerialEnv``, or a ``ParallelEnv`` with ``env.parallel=true``; each
    applies the dataset's observation transforms (dict concatenation, float32, normalisation with
    ``replay_buffer.observation_norm``) and records what the protocol scores.
    """
    return make_eval_env(
        info,
        spec=spec if spec is not None else resolve_eval_env_from_config(cfg, info),
        num_envs=max(1, min(cfg.env.eval_envs, cfg.logger.eval_episodes)),
        parallel=cfg.env.parallel,
        backend=cfg.env.backend,
        observation_norm=cfg.replay_buffer.observation_norm,
    )


# =====================================================================================================================
# Model
# =====================================================================================================================


def make_loss(cfg: DictConfig, info: OfflineDatasetInfo, device: torch.device) -> DTQLLoss:
    """The DTQL networks, sized from the dataset's specs, inside a :class:`~torchrl_dtql.DTQLLoss`."""
    # config.yaml's `network` section is make_dtql_modules' keyword arguments, one for one
    modules = make_dtql_modules(info.observation_spec, info.action_spec, **cfg.network, device=device)
    loss = DTQLLoss(
        **modules,
        alpha=cfg.loss.alpha,
        auto_alpha=cfg.loss.auto_alpha,
        trust_region_ratio=cfg.loss.trust_region_ratio,
        alpha_init=cfg.loss.alpha_init,
        alpha_per_q=cfg.loss.alpha_per_q,
        gamma_nll=cfg.loss.gamma_nll,
        expectile=cfg.loss.expectile,
        num_qvalue_nets=cfg.network.num_qvalue_nets,
        loss_function=cfg.loss.loss_function,
        check_finite=cfg.loss.check_finite,
    )
    loss.make_value_estimator(gamma=cfg.loss.discount)
    return loss.to(device)


# =====================================================================================================================
# Optimizers
# =====================================================================================================================


def make_optimizers(cfg: DictConfig, loss: DTQLLoss) -> DTQLOptimizers:
    """The reference's three Adams (critic, diffusion, actor), fused on CPU and CUDA, plus the multiplier's when
    ``loss.alpha=auto``.

    ``compile=true`` compiles the loss computations only; the optimizer steps stay eager, so a scheduler changing
    the (float) learning rates never triggers a recompilation.
    """
    return make_dtql_optimizers(
        loss,
        actor_lr=cfg.optim.lr,
        diffusion_lr=cfg.optim.lr,
        critic_lr=cfg.optim.critic_lr,
        alpha_lr=cfg.optim.alpha_lr,
    )


def make_lr_schedulers(cfg: DictConfig, optimizers: DTQLOptimizers) -> list[CosineAnnealingLR]:
    """Cosine decay to 0 over the main phase on the three network optimizers when ``optim.lr_decay`` (else none; a
    learnt alpha's optimizer keeps its rate)."""
    if not cfg.optim.lr_decay:
        return []
    t_max = max(1, cfg.optim.gradient_steps)
    return [
        CosineAnnealingLR(optimizer, T_max=t_max, eta_min=0.0) for optimizer in optimizers.network_optimizers()
    ]


# =====================================================================================================================
# Evaluation
# =====================================================================================================================


def make_eval_policies(cfg: DictConfig, loss: DTQLLoss) -> dict[str, TensorDictModuleBase]:
    """The acting policies of ``logger.eval_modes`` (:func:`torchrl_dtql.policies.make_acting_policies`), by name.

    * ``reranked``: ``policy.num_candidates`` one-step samples, one picked by ``softmax(min Q_target / T)`` (the
      paper's evaluation policy);
    * ``mean``: the one-step policy's mean action ``tanh(loc)``;
    * ``diffusion_bc``: the behaviour-cloning diffusion model sampled with ``network.diffusion_num_steps`` steps,
      i.e. plain diffusion BC trained with the same number of gradient steps (a baseline, slower to evaluate).

    They read the loss's parameters by reference.
    """
    try:
        return make_acting_policies(
            loss,
            list(cfg.logger.eval_modes),
            num_candidates=cfg.policy.num_candidates,
            temperature=cfg.policy.temperature,
            use_target_qvalue=cfg.policy.use_target_qvalue,
        )
    except UnknownActingModeError as err:
        modes = list(cfg.logger.eval_modes)
        raise ExampleError(f"logger.eval_modes={modes}: choose among {list(ACTING_MODES)}.") from err


# =====================================================================================================================
# Checkpoints
# =====================================================================================================================


def checkpoint_path(output_dir: Path) -> Path:
    """Where the run's (single, latest) checkpoint lives."""
    return output_dir / "checkpoints" / "last.pt"


#: A default run checkpoints about this many times, and at least every 50k steps (``checkpoint.interval=null``).
CHECKPOINTS_PER_RUN = 10
MAX_CHECKPOINT_INTERVAL = 50_000


def checkpoint_interval(cfg: DictConfig) -> int:
    """Gradient steps between checkpoints: ``checkpoint.interval``, or when it is null a tenth of the run, at most
    50k steps, so that a run killed without warning (SIGKILL, power loss) loses at most a tenth of its work.

    Examples:
        >>> from omegaconf import OmegaConf
        >>> checkpoint_interval(OmegaConf.create({"checkpoint": {"interval": None},
        ...                                       "optim": {"pretrain_steps": 1000, "gradient_steps": 2000}}))
        300
    """
    if cfg.checkpoint.interval is not None:
        return int(cfg.checkpoint.interval)
    total = cfg.optim.pretrain_steps + cfg.optim.gradient_steps
    return max(1, min(MAX_CHECKPOINT_INTERVAL, math.ceil(total / CHECKPOINTS_PER_RUN)))


def latest_run_to_resume(cfg: DictConfig) -> Path | None:
    """The run folder that ``resume=true`` continues when no ``output_dir`` is given on the command line.

    The default ``output_dir`` is a new timestamped folder (``outputs/<task>/seed<seed>/<time>``) on every call, so
    ``resume=true`` alone would start from step 0; instead the newest sibling folder of the same task and seed that
    holds a checkpoint is resumed. Returns ``None`` (keep ``cfg.output_dir``) when ``resume`` is off, when
    ``output_dir`` or ``hydra.run.dir`` was set explicitly, in a multirun, or when no such folder exists.
    """
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not cfg.resume or not HydraConfig.initialized():
        return None
    hydra_cfg = HydraConfig.get()
    explicit = {override.lstrip("+~").split("=", 1)[0] for override in hydra_cfg.overrides.task}
    if hydra_cfg.mode != RunMode.RUN or explicit & {"output_dir", "hydra.run.dir"}:
        return None
    current = Path(hydra_cfg.runtime.output_dir).absolute()
    if Path(cfg.output_dir).expanduser().absolute() != current or not current.parent.is_dir():
        return None
    runs = [path for path in current.parent.iterdir() if path != current and checkpoint_path(path).is_file()]
    return max(runs, key=lambda path: checkpoint_path(path).stat().st_mtime) if runs else None


def remove_unused_run_dir(path: Path) -> None:
    """Removes the folder hydra made for this call when the run continues elsewhere and nothing else is in it."""
    if path.is_dir() and {entry.name for entry in path.iterdir()} <= {".hydra"}:
        import shutil

        shutil.rmtree(path, ignore_errors=True)


def check_resume(cfg: DictConfig, output_dir: Path, config: Mapping[str, Any]) -> Path | None:
    """Decides, before any heavy work, whether the run resumes; refuses a mismatched or corrupt checkpoint.

    Returns the checkpoint to resume from, or ``None`` for a fresh run.
    """
    path = checkpoint_path(output_dir)
    if not cfg.resume:
        if path.exists():
            raise ExampleError(
                f"output_dir={str(output_dir)!r} already holds a checkpoint ({path}); pass resume=true to continue "
                "that run, or choose another output_dir."
            )
        return None
    if not path.exists():
        logging.getLogger("dtql_offline").info("resume=true but %s does not exist: starting from step 0.", path)
        return None
    payload = read_checkpoint(path)
    mismatches = config_mismatches(payload.get("config") or {}, config, ignore=RESUME_IGNORED_KEYS)
    if mismatches:
        raise CheckpointMismatchError(
            f"checkpoint {str(path)!r} was written with a different configuration; refusing to resume. "
            "Differences:\n  " + "\n  ".join(mismatches)
            + "\nResume with the checkpoint's settings, or start a new run in another output_dir."
        )
    return path


# =====================================================================================================================
# Logging and outputs
# =====================================================================================================================


#: The logger of the training metrics: written to the run's log file only, never to the console.
METRICS_LOGGER = "dtql_offline.metrics"


@contextlib.contextmanager
def log_file(path: Path) -> Iterator[None]:
    """Appends the run's log lines (the console's) and the training metrics (:data:`METRICS_LOGGER`) to ``path``.

    Appending, so that a resumed run continues the same file; the file is closed when the block ends, however it
    ends (a stop, an error).
    """
    handler = logging.FileHandler(path, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("[%(asctime)s][%(levelname)s] %(message)s"))
    metrics = logging.getLogger(METRICS_LOGGER)
    metrics.setLevel(logging.INFO)
    metrics.propagate = False  # the console (and tqdm's redirection of it) never sees them
    for logger in (logging.getLogger(), metrics):
        logger.addHandler(handler)
    try:
        yield
    finally:
        for logger in (logging.getLogger(), metrics):
            logger.removeHandler(handler)
        handler.close()


def make_logger(
    cfg: DictConfig, output_dir: Path, config: Mapping[str, Any], state: Mapping[str, Any] | None = None
) -> Logger | None:
    """A TorchRL logger writing under ``<output_dir>/logs`` (``None`` when ``logger.backend`` is empty).

    ``state`` (from ``logger.state_dict()`` in a checkpoint) continues the same experiment after a resume.
    """
    backend = cfg.logger.backend
    if not backend:
        return None
    exp_name = generate_exp_name("DTQL", cfg.logger.exp_name)
    try:
        return get_logger(
            backend,
            logger_name=str(output_dir / "logs"),
            experiment_name=exp_name,
            state_dict=state,
            wandb_kwargs={
                "config": dict(config),
                "project": cfg.logger.project_name,
                "group": cfg.logger.group_name,
                "mode": cfg.logger.mode,
            },
        )
    except ImportError as err:
        raise ExampleError(
            f"logger.backend={backend!r} needs a package that is not installed ({err}); install it, or use "
            "logger.backend=csv (or logger.backend= for none)."
        ) from err
    except NotImplementedError as err:
        raise ExampleError(f"logger.backend={backend!r}: {err}") from err


def truncate_csv_logs(logger: Logger | None, last_step: int) -> None:
    """Drops CSV rows logged after ``last_step`` (by a run killed after its last checkpoint) before resuming."""
    log_dir = getattr(getattr(logger, "experiment", None), "log_dir", None)
    if log_dir is None or type(logger).__name__ != "CSVLogger":
        return
    for csv_file in Path(log_dir, "scalars").rglob("*.csv"):
        rows = csv_file.read_text().splitlines()
        kept = [row for row in rows if row and int(float(row.split(",", 1)[0])) <= last_step]
        if len(kept) != len(rows):
            csv_file.write_text("".join(f"{row}\n" for row in kept))


def log_metrics(logger: Logger | None, metrics: Mapping[str, float], step: int) -> None:
    """Logs scalars (skipping ``None``)."""
    if logger is None:
        return
    for name, value in metrics.items():
        if value is not None:
            logger.log_scalar(name, float(value), step=step)


def evaluation_metrics(record: Mapping[str, Any]) -> dict[str, float | None]:
    """Flat ``eval/<mode>/<stat>`` scalars of one evaluation record."""
    metrics = {}
    for mode, result in record["modes"].items():
        metrics[f"eval/{mode}/return"] = result["return"]["mean"]
        metrics[f"eval/{mode}/normalized_score"] = result["normalized_score"]["mean"]
        metrics[f"eval/{mode}/normalized_score_stderr"] = result["normalized_score"]["stderr"]
        metrics[f"eval/{mode}/episode_length"] = result["episode_length"]
        for name in PROTOCOL_METRICS:  # the protocol's own measures (AntMaze success, Kitchen subtasks)
            if name in result:
                metrics[f"eval/{mode}/{name}"] = result[name]["mean"]
    return metrics


#: Per-episode measures that an evaluation protocol reports beside the score (see torchrl_dtql.evaluation.protocols).
PROTOCOL_METRICS = ("success", "tasks_completed")


def write_summary(summary: Mapping[str, Any], output_dir: Path) -> Path:
    """``<output_dir>/summary.json``."""
    return atomic_write_text(json.dumps(summary, indent=2, default=str) + "\n", output_dir / "summary.json")


def plot_learning_curve(
    history: Sequence[Mapping[str, Any]],
    path: Path,
    *,
    title: str,
    behaviour_score: float | None = None,
) -> Path | None:
    """Normalized score (raw return when no reference scores are known) per acting mode against main-phase steps.

    Shaded bands are one standard error over the evaluation episodes; the dashed line is the behaviour policy's
    (dataset's) score.
    """
    if not history:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    use_normalized = all(
        result["normalized_score"]["mean"] is not None for record in history for result in record["modes"].values()
    )
    key = "normalized_score" if use_normalized else "return"
    figure, axis = plt.subplots(figsize=(6.4, 4.0))
    modes = list(dict.fromkeys(mode for record in history for mode in record["modes"]))
    for mode in modes:
        points = [(record["step"], record["modes"][mode][key]) for record in history if mode in record["modes"]]
        steps = np.array([step for step, _ in points])
        mean = np.array([stats["mean"] for _, stats in points])
        stderr = np.array([stats["stderr"] for _, stats in points])
        axis.plot(steps, mean, marker="o", label=mode)
        axis.fill_between(steps, mean - stderr, mean + stderr, alpha=0.2)
    if behaviour_score is not None and use_normalized:
        axis.axhline(behaviour_score, color="gray", linestyle="--", label="behaviour policy (dataset)")
    axis.set_xlabel("main-phase gradient steps (after pretraining)")
    axis.set_ylabel("normalized score" if use_normalized else "return")
    axis.set_title(title)
    axis.grid(alpha=0.3)
    axis.legend()
    figure.tight_layout()
    atomic_write(path, lambda file: figure.savefig(file, format="png", dpi=120))
    plt.close(figure)
    return path


#: Below this fraction of the paper's gradient steps, a run is called a smoke run in its summary.
SMOKE_BUDGET_FRACTION = 0.1

#: How each acting mode is named in the end-of-run report.
MODE_LABELS = {
    "reranked": "DTQL, Q-reranked",
    "mean": "DTQL, mean action",
    "diffusion_bc": "diffusion BC, same steps",
}


def training_budget(cfg: DictConfig) -> dict[str, Any]:
    """The run's gradient steps beside the paper's for its task (``paper.*``), and whether it is a smoke run.

    Examples:
        >>> from omegaconf import OmegaConf
        >>> budget = training_budget(OmegaConf.create({
        ...     "optim": {"pretrain_steps": 1000, "gradient_steps": 2000},
        ...     "paper": {"pretrain_steps": 50000, "gradient_steps": 1000000}}))
        >>> round(budget["fraction"], 4), budget["smoke"]
        (0.0029, True)
    """
    steps = cfg.optim.pretrain_steps + cfg.optim.gradient_steps
    paper_steps = cfg.paper.pretrain_steps + cfg.paper.gradient_steps
    fraction = steps / paper_steps if paper_steps > 0 else 1.0
    return {
        "pretrain_steps": cfg.optim.pretrain_steps,
        "gradient_steps": cfg.optim.gradient_steps,
        "paper_pretrain_steps": cfg.paper.pretrain_steps,
        "paper_gradient_steps": cfg.paper.gradient_steps,
        "fraction": fraction,
        "smoke": fraction < SMOKE_BUDGET_FRACTION,
    }


def format_score(mean: float | None, stderr: float | None = None) -> str:
    """A score with one decimal and its standard error with two significant digits (``16.4 +/- 0.049``).

    Examples:
        >>> format_score(16.43, 0.0491), format_score(31.6, 1.27), format_score(None)
        ('16.4 +/- 0.049', '31.6 +/- 1.3', 'n/a')
    """
    if mean is None:
        return "n/a"
    if stderr is None:
        return f"{mean:.1f}"
    return f"{mean:.1f} +/- {stderr:.2g}" if stderr < 1 else f"{mean:.1f} +/- {stderr:.1f}"


def format_summary(summary: Mapping[str, Any]) -> str:
    """The end-of-run report printed to the terminal: the budget, then DTQL beside the behaviour policy (and
    diffusion BC when it was evaluated), with one standard error over the evaluation episodes."""
    budget = summary["budget"]
    lines = [
        f"DTQL on {summary['dataset']} ({summary['env']}), task {summary['task_name']}, seed {summary['seed']}",
        f"  evaluation: {summary['eval_env']['env_id']}, {summary['eval_env']['score']}",
        f"  budget: {budget['pretrain_steps']:,} pretraining + {budget['gradient_steps']:,} main-phase steps = "
        f"{100 * budget['fraction']:.2g}% of the paper's {budget['paper_pretrain_steps']:,} + "
        f"{budget['paper_gradient_steps']:,} for this task; {summary['steps_per_second']:.1f} steps/s, "
        f"wall time {summary['wall_time_s']:.0f} s",
    ]
    if budget["smoke"]:
        lines.append(
            f"  SMOKE BUDGET (under {100 * SMOKE_BUDGET_FRACTION:.0f}% of the paper's steps): these scores show that "
            "the pipeline runs, not what DTQL reaches; for a result use a task preset (task=<name>) or raise "
            "optim.gradient_steps."
        )
    lines.append(f"  {'policy':<28}{'final score':>20}{'best score (step)':>20}{'final return':>15}")
    for mode, row in summary["scores"].items():
        final = format_score(row["final_normalized_score"], row["final_normalized_score_stderr"])
        best = f"{format_score(row['best_normalized_score'])} ({row['best_step']})"
        final_return = "n/a" if row["final_return"] is None else f"{row['final_return']:.1f}"
        lines.append(f"  {MODE_LABELS.get(mode, mode):<28}{final:>20}{best:>20}{final_return:>15}")
    behaviour = summary["behaviour_normalized_score"]
    if summary["behaviour_return"] is not None:
        episodes = f"  ({summary['behaviour_episodes']} dataset episodes)"
        lines.append(
            f"  {'behaviour policy (dataset)':<28}{format_score(behaviour):>20}{'':>20}"
            f"{summary['behaviour_return']:>15.1f}{episodes}"
        )
    primary = summary["scores"].get(summary["primary_mode"], {})
    dtql = primary.get("final_normalized_score")
    comparisons = []
    if dtql is not None and behaviour is not None:
        comparisons.append(f"{dtql - behaviour:+.1f} against the behaviour policy")
    bc = summary["scores"].get("diffusion_bc", {}).get("final_normalized_score")
    if dtql is not None and bc is not None and summary["primary_mode"] != "diffusion_bc":
        comparisons.append(f"{dtql - bc:+.1f} against diffusion BC")
    if comparisons:
        label = MODE_LABELS.get(summary["primary_mode"], summary["primary_mode"])
        lines.append(f"  {label}, final: " + ", ".join(comparisons) + " (normalized points)")
    timing = ", ".join(f"{name} {value * 1000:.1f} ms" for name, value in summary["time_per_call_s"].items())
    lines.append(f"  time per call: {timing}")
    lines.append(f"  outputs in {summary['output_dir']}")
    return "\n".join(lines)
