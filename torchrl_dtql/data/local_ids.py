"""The names of what the dataset maker writes, shared with the loader: dataset ids and the sidecar file.

The maker (:mod:`torchrl_dtql.data.maker`) names its datasets ``<namespace>/<env name>/<kind>-v<version>`` with
:func:`dataset_id_for` and writes :data:`MAKER_SIDECAR` next to Minari's files; the Minari loader reads the
sidecar into ``info.extra["maker"]``, and reads the names back with :func:`maker_arguments` to tell the user the
command that makes a missing ``local/...`` dataset (such ids are never on the Minari hub).
"""
from __future__ import annotations

from .envs import env_id_for_name

__all__ = ["KINDS", "LOCAL_NAMESPACE", "MAKER_SIDECAR", "dataset_id_for", "is_local_id", "maker_arguments"]

#: The dataset kinds the maker makes, as D4RL's.
KINDS = ("random", "medium", "medium-replay", "expert", "medium-expert")

#: The maker's default namespace: ids under it are made on this machine, never downloaded.
LOCAL_NAMESPACE = "local"

#: The JSON file the maker writes beside a dataset's ``data/`` folder: the behaviour policy, its returns, the command.
MAKER_SIDECAR = "torchrl_dtql.json"


def dataset_id_for(env_id: str, kind: str, namespace: str = LOCAL_NAMESPACE, version: int = 0) -> str:
    """The Minari id the maker writes: ``<namespace>/<env name>/<kind>-v<version>``.

    Examples:
        >>> dataset_id_for("Hopper-v5", "medium")
        'local/hopper/medium-v0'
        >>> dataset_id_for("HalfCheetah-v5", "medium-replay", "mine", 2)
        'mine/halfcheetah/medium-replay-v2'
    """
    name = env_id.split("/")[-1].rsplit("-v", 1)[0].lower()
    return f"{namespace}/{name}/{kind}-v{version}"


def is_local_id(dataset_id: str) -> bool:
    """Whether ``dataset_id`` is in the maker's default namespace (``local/...``).

    Examples:
        >>> is_local_id("local/hopper/medium-v0"), is_local_id("mujoco/hopper/medium-v0")
        (True, False)
    """
    return dataset_id.startswith(LOCAL_NAMESPACE + "/")


def maker_arguments(dataset_id: str) -> str | None:
    """The maker's command-line arguments that make ``dataset_id``, or ``None`` if the maker never writes that name.

    The env is the newest gymnasium version of the id's env name (``<gymnasium env id>`` when none is registered).

    Examples:
        >>> maker_arguments("local/hopper/medium-v0")
        '--env Hopper-v5 --kinds medium'
        >>> maker_arguments("local/walker2d/expert-v3")
        '--env Walker2d-v5 --kinds expert --version 3'
        >>> maker_arguments("local/hopper/best-v0") is None
        True
    """
    parts = dataset_id.split("/")
    if len(parts) != 3:
        return None
    kind, _, version = parts[-1].rpartition("-v")
    if kind not in KINDS or not version.isdigit():
        return None
    arguments = f"--env {env_id_for_name(parts[1]) or '<gymnasium env id>'} --kinds {kind}"
    return arguments + (f" --version {version}" if version != "0" else "")
