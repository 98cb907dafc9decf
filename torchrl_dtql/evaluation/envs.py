"""Evaluation envs for an offline dataset: the env the dataset names, checked against the data, batched, observing
what the dataset recorded, under its family's evaluation protocol.

Which env and which ``gymnasium.make`` kwargs (:func:`resolve_eval_env`), in order of precedence:

1. the user's overrides (``env_id``, ``env_kwargs``): an override that contradicts the dataset's evaluation spec or
   the protocol warns, and says what it changes;
2. the protocol's episode rules (:mod:`~torchrl_dtql.evaluation.protocols`: an AntMaze episode ends at the goal, a
   kitchen subtask counts once, D4RL's Adroit episode lengths);
3. the dataset's evaluation env: ``info.env_id`` and ``info.env_kwargs`` (a Minari dataset's ``eval_env_spec`` with
   all its kwargs: maze map, tasks to complete, episode length; a D4RL file's protocol env).

An env id that is not registered stops before anything is built, naming the package that provides it.
"""
from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from torchrl.envs import EnvBase, EnvCreator, GymEnv, ParallelEnv, SerialEnv, TransformedEnv
from torchrl.envs.libs.gym import set_gym_backend

from torchrl_dtql.data import check_env_compatibility, make_env_transforms, OfflineDatasetError, OfflineDatasetInfo
from torchrl_dtql.evaluation.protocols import EpisodeInfoReader, EvaluationProtocol, protocol_for

__all__ = [
    "EvalEnvSpec",
    "EvalEnvOverrideWarning",
    "EvalSpecWarning",
    "EvaluationEnvError",
    "make_eval_env",
    "make_single_eval_env",
    "register_robotics_envs",
    "resolve_eval_env",
]

#: The install command of gymnasium-robotics' envs (AntMaze, Adroit, Kitchen), pinned to versions that build them.
ROBOTICS_INSTALL = 'pip install "torchrl-dtql[robotics]"'


class EvaluationEnvError(ValueError):
    """The evaluation env cannot be named or built (the message says which and why)."""


class EvalEnvOverrideWarning(UserWarning):
    """An override of the evaluation env contradicts the dataset's evaluation spec or the D4RL protocol."""


class EvalSpecWarning(UserWarning):
    """The dataset's evaluation env spec looks wrong for its data (e.g. a maze with other walls)."""


def register_robotics_envs() -> bool:
    """Registers gymnasium-robotics' envs (AntMaze, Adroit, Kitchen) with gymnasium; ``False`` if not installed.

    Examples:
        >>> register_robotics_envs() in (True, False)
        True
    """
    return not robotics_install_hint()


def robotics_install_hint() -> str:
    """``""`` once gymnasium-robotics' envs are registered; else the hint that names the package extra to install."""
    try:
        import gymnasium
        import gymnasium_robotics
    except ImportError:
        return ' (AntMaze, Adroit and Kitchen envs need gymnasium-robotics: pip install "torchrl-dtql[robotics]")'
    gymnasium.register_envs(gymnasium_robotics)
    return ""


@dataclass(frozen=True)
class EvalEnvSpec:
    """The evaluation env of a run: its id, its ``gymnasium.make`` kwargs, the protocol scoring it, and where each
    setting came from (``"dataset"``, ``"protocol"``, ``"override"``).

    Examples:
        >>> spec = EvalEnvSpec("Hopper-v5", {}, protocol_for(None), {"env_id": "dataset"})
        >>> spec.describe().split(";")[0]
        'Hopper-v5 [dataset], no kwargs'
    """

    env_id: str
    kwargs: dict[str, Any]
    protocol: EvaluationProtocol
    sources: dict[str, str] = field(default_factory=dict)

    def describe(self) -> str:
        """One line for the logs: the env and its source, each kwarg with its source, the protocol's score."""
        kwargs = ", ".join(f"{k}={_short(v)} [{self.sources.get(k, '?')}]" for k, v in self.kwargs.items())
        return (
            f"{self.env_id} [{self.sources.get('env_id', '?')}], " + (f"kwargs {kwargs}" if kwargs else "no kwargs")
            + f"; protocol {self.protocol.name}: {self.protocol.description}"
        )

    def as_dict(self) -> dict[str, Any]:
        """Plain values for ``summary.json``."""
        return {
            "env_id": self.env_id,
            "kwargs": json.loads(json.dumps(self.kwargs, default=str)),
            "sources": dict(self.sources),
            "protocol": self.protocol.name,
            "score": self.protocol.description,
        }


def _short(value: Any, limit: int = 60) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def resolve_eval_env(
    info: OfflineDatasetInfo, *, env_id: str | None = None, env_kwargs: Mapping[str, Any] | None = None
) -> EvalEnvSpec:
    """Which env to evaluate a dataset in, with which kwargs, under which protocol (see the module's docstring).

    Args:
        info: the dataset's metadata (``info.env_id``, ``info.env_kwargs``: its evaluation env).

    Keyword Args:
        env_id: a gymnasium id that replaces the dataset's env (its kwargs are then not used); ``None``: the dataset's.
        env_kwargs: ``gymnasium.make`` kwargs over the dataset's and the protocol's.

    Warns:
        EvalEnvOverrideWarning: ``env_id`` differs from the dataset's evaluation env, or ``env_kwargs`` changes a
            value that the dataset's evaluation spec or the protocol sets.
        EvalSpecWarning: the protocol's check finds the env wrong for the data (an AntMaze evaluation maze whose
            walls differ from the recorded maze's).

    Raises:
        EvaluationEnvError: neither the dataset nor ``env_id`` names an env.

    Examples:
        >>> from torchrl.data import Bounded, Unbounded
        >>> info = OfflineDatasetInfo("D4RL/antmaze/umaze-v1", "AntMaze_UMaze-v4", Unbounded(shape=(31,)),
        ...     Bounded(-1.0, 1.0, shape=(8,)), 0.0, 1.0, 1, 1, None, env_kwargs={"continuing_task": True,
        ...     "max_episode_steps": 700})
        >>> spec = resolve_eval_env(info)
        >>> spec.kwargs
        {'continuing_task': False, 'max_episode_steps': 700, 'reset_target': False}
        >>> spec.sources["continuing_task"], spec.protocol.name
        ('protocol (dataset: true)', 'antmaze')
    """
    dataset_env = info.env_id
    chosen = env_id or dataset_env
    if chosen is None:
        raise EvaluationEnvError(
            f"dataset {info.dataset_id!r} does not name the env it was recorded in; set env.name=<gymnasium id>."
        )
    sources = {"env_id": "dataset" if env_id is None or env_id == dataset_env else "override"}
    dataset_kwargs = dict(info.env_kwargs or {}) if sources["env_id"] == "dataset" else {}
    if sources["env_id"] == "override" and dataset_env is not None:
        _warn(
            f"env.name={env_id!r} replaces the dataset's evaluation env {dataset_env!r}"
            + (f"; its kwargs ({', '.join(info.env_kwargs)}) are not used" if info.env_kwargs else "")
            + "."
        )
    kwargs = dict(dataset_kwargs)
    sources.update({key: "dataset" for key in kwargs})
    protocol = protocol_for(info, chosen)
    for key, value in protocol.env_rules.items():
        if key in kwargs and kwargs[key] != value:
            sources[key] = f"protocol (dataset: {_short(kwargs[key], 20)})"
        else:
            sources[key] = "protocol"
        kwargs[key] = value
    for key, value in dict(env_kwargs or {}).items():
        if key in protocol.env_rules and protocol.env_rules[key] != value:
            _warn(
                f"env.kwargs.{key}={_short(value)} contradicts the {protocol.name} protocol ({key}="
                f"{_short(protocol.env_rules[key])}): the score is no longer D4RL's ({protocol.description})."
            )
        elif key in dataset_kwargs and dataset_kwargs[key] != value:
            _warn(
                f"env.kwargs.{key}={_short(value)} overrides the dataset's evaluation spec ({key}="
                f"{_short(dataset_kwargs[key])}, {info.env_source or 'recorded with the data'})."
            )
        kwargs[key] = value
        sources[key] = "override"
    for message in protocol.check(kwargs, info) if protocol.check is not None else ():
        _warn(message, EvalSpecWarning)
    return EvalEnvSpec(chosen, kwargs, protocol, sources)


def _warn(message: str, category: type[Warning] = EvalEnvOverrideWarning) -> None:
    warnings.warn(message, category, stacklevel=3)


def check_env_installed(env_id: str, entry_point: str | None = None) -> None:
    """Raise :class:`EvaluationEnvError` naming the package to install when ``env_id`` is not registered.

    Args:
        env_id: a gymnasium id.
        entry_point: the ``module:Class`` that the dataset's spec records for it (names the package).

    Examples:
        >>> check_env_installed("Hopper-v5")
        >>> check_env_installed("NoSuchEnv-v0", "no_such_package.envs:Env")  # doctest: +IGNORE_EXCEPTION_DETAIL
        Traceback (most recent call last):
        EvaluationEnvError: ... needs the package 'no_such_package', which is not installed ...
    """
    import gymnasium

    robotics_hint = robotics_install_hint()
    if env_id in gymnasium.envs.registry:
        return
    module = (entry_point or "").split(":", 1)[0]
    top = module.split(".", 1)[0]
    if top == "gymnasium_robotics" or (not top and robotics_hint and _looks_like_robotics(env_id)):
        if robotics_hint:
            raise EvaluationEnvError(f"the evaluation env {env_id!r} is not installed{robotics_hint}.")
        raise EvaluationEnvError(
            f"the evaluation env {env_id!r} is not registered by the installed gymnasium-robotics "
            f"{importlib.metadata.version('gymnasium-robotics')}; install the versions this package is tested with: "
            f"{ROBOTICS_INSTALL}."
        )
    if top and importlib.util.find_spec(top) is None:
        raise EvaluationEnvError(
            f"the evaluation env {env_id!r} (entry point {entry_point!r}) needs the package {top!r}, which is not "
            f"installed: pip install {top.replace('_', '-')} (or set env.name=<an installed gymnasium id>)."
        )
    raise EvaluationEnvError(
        f"the evaluation env {env_id!r} is not registered with gymnasium"
        + (f" (entry point {entry_point!r}: import the module that registers it)" if entry_point else "")
        + f"{robotics_hint}; set env.name=<an installed gymnasium id>."
    )


def _looks_like_robotics(env_id: str) -> bool:
    return env_id.startswith(("AntMaze", "PointMaze", "AdroitHand", "FrankaKitchen", "Fetch", "HandManipulate"))


def make_single_eval_env(
    env_id: str,
    env_kwargs: Mapping[str, Any],
    backend: str,
    info: OfflineDatasetInfo,
    observation_norm: bool,
    protocol: EvaluationProtocol | None = None,
) -> TransformedEnv:
    """One evaluation env: ``GymEnv(env_id, **env_kwargs)`` with the dataset's observation transforms and the
    protocol's info entries (also run in the workers of a ``ParallelEnv``, hence a module-level function that
    registers the robotics envs itself).

    Args:
        protocol: whose ``info_entries`` each step records (default: :func:`protocol_for` the dataset and env).

    Examples:
        >>> env = make_single_eval_env("Hopper-v5", {}, "gymnasium", info, False)  # doctest: +SKIP
    """
    register_robotics_envs()
    protocol = protocol if protocol is not None else protocol_for(info, env_id)
    with set_gym_backend(backend):
        env = GymEnv(env_id, **dict(env_kwargs))
    if protocol.info_entries:
        env.set_info_dict_reader(EpisodeInfoReader(protocol.info_entries))
    return TransformedEnv(env, make_env_transforms(info, observation_norm=observation_norm))


def make_eval_env(
    info: OfflineDatasetInfo,
    *,
    env_id: str | None = None,
    env_kwargs: Mapping[str, Any] | None = None,
    spec: EvalEnvSpec | None = None,
    num_envs: int,
    parallel: bool = False,
    backend: str = "gymnasium",
    observation_norm: bool = False,
) -> EnvBase:
    """``num_envs`` evaluation envs stepped together, checked against the dataset before any is built.

    The env and its kwargs are :func:`resolve_eval_env`'s (the dataset's evaluation env under its family's
    protocol, with the overrides); each env records the protocol's info entries. The env's observation and action
    sizes must match the dataset's
    (:func:`~torchrl_dtql.data.check_env_compatibility`). Each env applies the dataset's observation transforms
    (:func:`~torchrl_dtql.data.make_env_transforms`: dict concatenation, float32, optional normalisation), so
    policies trained on the data act on its observations.

    Args:
        info: the dataset's metadata (a replay buffer's ``.metadata``).

    Keyword Args:
        env_id: the gymnasium id; ``None``: the dataset's evaluation env (``info.env_id``).
        env_kwargs: ``gymnasium.make`` keyword arguments over the dataset's (``info.env_kwargs``) and the protocol's.
        spec: an already resolved :class:`EvalEnvSpec` (then ``env_id`` and ``env_kwargs`` are not used).
        num_envs: how many envs (a ``[num_envs]`` batch).
        parallel: a ``ParallelEnv`` (one process per env) instead of a ``SerialEnv``; the latter is faster on few
            cores.
        backend: the gym backend (``set_gym_backend``).
        observation_norm: normalise observations by the dataset's statistics (``info`` must carry them).

    Raises:
        EvaluationEnvError: no env id is known, or the env cannot be built (an unknown id, a missing package: the
            message names the package to install).
        EnvCompatibilityError: the env's sizes differ from the dataset's (a
            :class:`~torchrl_dtql.data.OfflineDatasetError`).

    Examples:
        >>> from torchrl_dtql.data import make_offline_replay_buffer, DEFAULT_DATASET
        >>> info = make_offline_replay_buffer(DEFAULT_DATASET, 256).metadata  # doctest: +SKIP
        >>> make_eval_env(info, num_envs=4).batch_size  # doctest: +SKIP
        torch.Size([4])
    """
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1, got {num_envs}.")
    spec = spec if spec is not None else resolve_eval_env(info, env_id=env_id, env_kwargs=env_kwargs)
    entry_point = info.extra.get("eval_env_entry_point") if spec.env_id == info.env_id else None
    check_env_installed(spec.env_id, entry_point)
    try:
        check_env_compatibility(info, spec.env_id, spec.kwargs)
    except OfflineDatasetError:
        raise
    except Exception as err:  # gymnasium raises its own error types for unknown or unbuildable envs
        raise EvaluationEnvError(
            f"env.name={spec.env_id!r} with kwargs {_short(spec.kwargs, 200)} cannot be built: "
            f"{type(err).__name__}: {err}{robotics_install_hint()}"
        ) from err
    make_env = functools.partial(
        make_single_eval_env, spec.env_id, dict(spec.kwargs), backend, info, observation_norm, spec.protocol
    )
    if parallel:
        return ParallelEnv(num_envs, EnvCreator(make_env), serial_for_single=True)
    return SerialEnv(num_envs, make_env)
