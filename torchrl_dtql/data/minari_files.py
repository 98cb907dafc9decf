"""Minari datasets: find one by id (downloading it through Minari only when allowed and possible), load it as TED.

Ids are looked up under :func:`~torchrl_dtql.io.minari_root` (``$MINARI_DATASETS_PATH``, default
``~/.minari/datasets``), as Minari itself does. A missing id is downloaded only when ``download`` is allowed,
``HF_HUB_OFFLINE``/``TORCHRL_DTQL_OFFLINE`` are unset, ``huggingface_hub`` is installed and the hub answers;
otherwise :class:`~torchrl_dtql.data.DatasetNotFoundError` says where it looked and how to provide the data.
``local/...`` ids are made on this machine by the dataset maker and are never downloaded.
"""
from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

from tensordict import TensorDict

from torchrl_dtql.io import minari_root

from .conversion import episodes_to_tensordict
from .envs import dict_observation_keys, make_specs
from .info import DatasetNotFoundError, OfflineDatasetError, OfflineDatasetInfo
from .local_ids import KINDS, MAKER_SIDECAR, is_local_id, maker_arguments

__all__ = ["locate_minari_dataset", "load_minari", "recorded_env"]


def _hub_reachable(timeout: float = 3.0) -> bool:
    """Whether huggingface.co:443 accepts a TCP connection within ``timeout`` seconds."""
    result: list[bool] = []

    def probe() -> None:
        try:
            with socket.create_connection(("huggingface.co", 443), timeout=timeout):
                result.append(True)
        except OSError:
            result.append(False)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout + 0.5)  # DNS resolution may ignore the socket timeout
    return bool(result and result[0])


def _offline_mode() -> bool:
    """Whether ``HF_HUB_OFFLINE`` or ``TORCHRL_DTQL_OFFLINE`` forbids downloads."""
    flags = (os.environ.get("HF_HUB_OFFLINE", ""), os.environ.get("TORCHRL_DTQL_OFFLINE", ""))
    return any(f.strip().lower() in ("1", "true", "yes", "on") for f in flags)


def _not_found_message(dataset_id: str, looked_in: list[str], why: str) -> str:
    paths = "\n".join(f"  - {p}" for p in looked_in)
    return (
        f"Offline dataset {dataset_id!r} was not found.\nLooked in:\n{paths}\n{why}\n"
        "To provide it locally, either:\n"
        f"  * copy the Minari dataset folder to $MINARI_DATASETS_PATH/{dataset_id}/ "
        "(it holds data/main_data.hdf5), or run `minari download "
        f"{dataset_id}` on a machine with network access and copy ~/.minari/datasets over;\n"
        "  * pass the path of a D4RL-format HDF5 file (observations, actions, rewards, terminals, "
        "timeouts) or of a Minari dataset folder instead of an id;\n"
        "  * make a D4RL-style dataset here with `python -m torchrl_dtql.data.make_dataset --env "
        "Hopper-v5 --kinds medium` (ids local/<env>/<kind>-v0), or use "
        "torchrl_dtql.data.DEFAULT_DATASET."
    )


def _local_not_found_message(dataset_id: str, looked_in: list[str]) -> str:
    """The error for a missing ``local/...`` id: such ids are made by the dataset maker, never downloaded.

    Examples:
        >>> print(_local_not_found_message("local/hopper/medium-v0", ["/data"]).splitlines()[-4])
          python -m torchrl_dtql.data.make_dataset --env Hopper-v5 --kinds medium
    """
    paths = "\n".join(f"  - {p}" for p in looked_in)
    head = (
        f"Offline dataset {dataset_id!r} was not found.\nLooked in:\n{paths}\n"
        "'local/...' ids are written on this machine by the package's dataset maker "
        "(torchrl_dtql.data.make_dataset); they are not on the Minari hub, so they cannot be downloaded.\n"
    )
    arguments = maker_arguments(dataset_id)
    if arguments is None:
        return head + (
            f"The maker names its datasets local/<env>/<kind>-v<version> with <kind> one of {', '.join(KINDS)}; "
            f"{dataset_id!r} is not such a name. Or use torchrl_dtql.data.DEFAULT_DATASET (no making needed)."
        )
    return head + (
        "Make it with (it trains a SAC behaviour agent first, then records the data; resumable):\n"
        f"  python -m torchrl_dtql.data.make_dataset {arguments}\n"
        f"  (or: dtql-make-dataset {arguments})\n"
        "It writes under $MINARI_DATASETS_PATH (default ~/.minari/datasets), where this loader looks;\n"
        "or use torchrl_dtql.data.DEFAULT_DATASET, which needs no making."
    )


def locate_minari_dataset(dataset_id: str, download: bool) -> Path:
    """Return the ``<root>/<id>/data`` folder of a Minari dataset, downloading it first if allowed and possible.

    Args:
        dataset_id: a Minari id, e.g. ``"mujoco/hopper/medium-v0"`` or ``"local/hopper/medium-v0"``.
        download: allow a download through Minari when the id is not local (never for ``local/...`` ids).

    Raises:
        DatasetNotFoundError: not found locally and not downloaded; the message lists where it looked, why it did
            not download, and how to provide the data.

    Examples:
        >>> locate_minari_dataset("mujoco/hopper/medium-v0", download=False)  # doctest: +SKIP
        PosixPath('/home/me/.minari/datasets/mujoco/hopper/medium-v0/data')
    """
    data_dir = minari_root() / dataset_id / "data"
    looked_in = [str(data_dir)]
    if (data_dir / "metadata.json").is_file():
        return data_dir
    if is_local_id(dataset_id):  # made here by the maker, never on the hub: no download to try
        raise DatasetNotFoundError(_local_not_found_message(dataset_id, looked_in))
    if not download:
        raise DatasetNotFoundError(_not_found_message(dataset_id, looked_in, "Downloading was disabled."))
    if _offline_mode():
        raise DatasetNotFoundError(
            _not_found_message(dataset_id, looked_in, "Not downloading: HF_HUB_OFFLINE / TORCHRL_DTQL_OFFLINE is set.")
        )
    try:
        import huggingface_hub  # noqa: F401
    except ImportError:
        raise DatasetNotFoundError(
            _not_found_message(
                dataset_id, looked_in, 'Cannot download: huggingface_hub is missing (pip install "torchrl-dtql[hub]").'
            )
        ) from None
    if not _hub_reachable():
        raise DatasetNotFoundError(
            _not_found_message(dataset_id, looked_in, "Cannot download: the Hugging Face hub is unreachable.")
        )
    import minari

    try:
        minari.download_dataset(dataset_id)
    except Exception as err:  # noqa: BLE001 - any hub failure becomes one clear error
        raise DatasetNotFoundError(
            _not_found_message(dataset_id, looked_in, f"Download failed: {type(err).__name__}: {err}")
        ) from err
    if not (data_dir / "metadata.json").is_file():  # pragma: no cover - minari wrote elsewhere
        raise DatasetNotFoundError(_not_found_message(dataset_id, looked_in, "Download left no data."))
    return data_dir


def _optional_float(x: Any) -> float | None:
    return None if x is None else float(x)


def recorded_env(metadata: dict[str, Any], key: str = "eval_env_spec") -> dict[str, Any] | None:
    """``{"id", "kwargs", "entry_point"}`` of the env spec a Minari dataset records under ``key``, or ``None``.

    Minari stores the specs as gymnasium ``EnvSpec`` JSON: ``env_spec`` (the env the data was recorded in) and
    ``eval_env_spec`` (the env to evaluate in, ``create_dataset(..., eval_env=...)``). ``kwargs`` are the
    ``gymnasium.make`` keyword arguments, with the spec's ``max_episode_steps`` added; they are plain JSON values.

    Examples:
        >>> spec = '{"id": "AntMaze_UMaze-v4", "entry_point": "m:E", "max_episode_steps": 700, "kwargs": {"a": 1}}'
        >>> recorded_env({"eval_env_spec": spec})
        {'id': 'AntMaze_UMaze-v4', 'kwargs': {'a': 1, 'max_episode_steps': 700}, 'entry_point': 'm:E'}
    """
    text = metadata.get(key)
    if not text:
        return None
    spec = json.loads(text) if isinstance(text, str) else dict(text)
    kwargs = json.loads(json.dumps(spec.get("kwargs") or {}))  # plain lists and dicts, whatever the JSON held
    if spec.get("max_episode_steps") is not None:
        kwargs.setdefault("max_episode_steps", int(spec["max_episode_steps"]))
    entry_point = spec.get("entry_point")
    return {"id": spec["id"], "kwargs": kwargs, "entry_point": entry_point if isinstance(entry_point, str) else None}


def load_minari(dataset_id_or_path: str | os.PathLike, *, download: bool = True) -> tuple[TensorDict, OfflineDatasetInfo]:
    """Load a Minari dataset (by id or by folder) as a TED TensorDict.

    Args:
        dataset_id_or_path: a Minari id, or a dataset folder (``<id>/`` or ``<id>/data/``).
        download: allow a download through Minari when the id is not local.

    Returns:
        ``(data, info)``; ``info.source_kind == "minari"``; ``info.env_id`` / ``info.env_kwargs`` are the
        dataset's evaluation env spec (the recording env's when it has none), ``info.extra["recorded_env"]`` the
        recording env when the two differ.

    Examples:
        >>> td, info = load_minari("local/hopper/medium-v0")  # doctest: +SKIP
    """
    from minari import MinariDataset

    path = Path(dataset_id_or_path)
    if path.is_dir():
        data_dir = path / "data" if (path / "data").is_dir() else path
        if not (data_dir / "metadata.json").is_file():
            raise DatasetNotFoundError(f"{path} is not a Minari dataset folder (no data/metadata.json).")
    else:
        data_dir = locate_minari_dataset(str(dataset_id_or_path), download)
    try:
        ds = MinariDataset(data_dir)
    except Exception as err:  # noqa: BLE001 - corrupt metadata, unreadable HDF5, ...
        raise OfflineDatasetError(f"could not read the Minari dataset at {data_dir}: {err}") from err
    keys = dict_observation_keys(ds.observation_space)
    try:
        td = episodes_to_tensordict(ds.iterate_episodes(), keys)
    except OfflineDatasetError:
        raise
    except Exception as err:  # noqa: BLE001
        raise OfflineDatasetError(f"could not read the episodes of {data_dir}: {err}") from err
    meta = ds.storage.metadata
    recording = recorded_env(meta, "env_spec")
    evaluation = recorded_env(meta, "eval_env_spec")
    env = evaluation or recording
    observation_spec, action_spec = make_specs(td["observation"].shape[-1], ds.action_space)
    info = OfflineDatasetInfo(
        dataset_id=str(meta.get("dataset_id", dataset_id_or_path)),
        env_id=env["id"] if env is not None else None,
        env_kwargs=dict(env["kwargs"]) if env is not None else {},
        env_source=None if env is None else ("minari eval_env_spec" if evaluation else "minari env_spec"),
        observation_spec=observation_spec,
        action_spec=action_spec,
        ref_min_score=_optional_float(meta.get("ref_min_score")),
        ref_max_score=_optional_float(meta.get("ref_max_score")),
        num_transitions=td.shape[0],
        num_episodes=int(ds.total_episodes),
        source_path=str(data_dir.parent),
        source_kind="minari",
        observation_keys=keys,
        extra={k: meta[k] for k in ("algorithm_name", "description", "author") if meta.get(k) is not None},
    )
    if env is not None and env["entry_point"]:
        info.extra["eval_env_entry_point"] = env["entry_point"]
    if recording is not None and evaluation is not None and recording != evaluation:
        info.extra["recorded_env"] = {"id": recording["id"], "kwargs": recording["kwargs"]}
    sidecar = data_dir.parent / MAKER_SIDECAR
    if sidecar.is_file():
        info.extra["maker"] = json.loads(sidecar.read_text())
    return td, info
