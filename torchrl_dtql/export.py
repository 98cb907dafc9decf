"""Deployment: the trained DTQL acting policy as one self-contained ``torch.export`` file, and its loader.

DTQL acts with its one-step policy only (the diffusion model is a training-time regulariser), optionally choosing
among ``num_candidates`` sampled actions by the target critic's ``min Q`` (the reference's evaluation policy). That
makes the deployed policy small: the Gaussian MLP plus, with reranking, the Q ensemble.

:func:`make_exportable_policy` copies those networks out of a trained :class:`~torchrl_dtql.DTQLLoss` into a plain
``nn.Module`` (:class:`ExportablePolicy`) that maps a float observation batch to an action batch, with the dataset's
observation normalisation folded in (both live in :mod:`torchrl_dtql.policies` and are re-exported here). This
module is the file format: :func:`export_policy` writes it with :func:`torch.export.export` (a ``.pt2``
file needing only ``torch`` to run, with a dynamic batch dimension and metadata), and :func:`load_policy` reads it
back as a callable that acts on raw observations (numpy or torch, one observation or a batch)::

    act = load_policy("policy.pt2")
    action = act(observation)          # numpy in, numpy out
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn, Tensor

from torchrl_dtql.policies.exportable import ExportablePolicy, make_exportable_policy

__all__ = ["ExportablePolicy", "LoadedPolicy", "export_policy", "intra_op_threads", "load_policy", "make_exportable_policy"]

EXPORT_FORMAT = "torchrl_dtql.policy/1"
_METADATA_FILE = "torchrl_dtql_policy.json"


def export_policy(
    policy: ExportablePolicy,
    path: str | os.PathLike,
    *,
    observation_dim: int | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Writes an :class:`ExportablePolicy` as a self-contained ``torch.export`` program (``.pt2``).

    The batch dimension is dynamic. The file is written atomically (temporary file + rename).

    Args:
        policy: from :func:`make_exportable_policy`.
        path: the destination (by convention ending in ``.pt2``).

    Keyword Args:
        observation_dim: size of the flat observation; read from the policy's first layer when ``None``.
        metadata: JSON-serialisable facts stored beside the program (env id, dataset, observation keys, ...) and
            returned by :func:`load_policy` as ``.metadata``.

    Returns:
        The path written.

    Examples:
        >>> import tempfile
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=8), alpha=1.0)
        >>> path = export_policy(make_exportable_policy(loss, num_candidates=0), Path(tempfile.mkdtemp()) / "p.pt2")
        >>> act = load_policy(path)
        >>> act(np.zeros(3)).shape
        (2,)
    """
    policy = policy.cpu().eval()
    if observation_dim is None:
        first_linear = next(m for m in policy.policy_network.modules() if isinstance(m, nn.Linear))
        observation_dim = first_linear.in_features
    action_dim = int(policy.action_loc.shape[-1])
    example = torch.zeros(2, observation_dim)
    batch = torch.export.Dim("batch", min=1)
    with torch.no_grad():
        program = torch.export.export(policy, (example,), dynamic_shapes={"observation": {0: batch}})
    info = {
        "format": EXPORT_FORMAT,
        "observation_dim": int(observation_dim),
        "action_dim": action_dim,
        "num_candidates": policy.num_candidates,
        "temperature": policy.temperature,
        "torch_version": torch.__version__,
        **dict(metadata or {}),
    }
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.pt2")  # torch.export wants a .pt2 name
    try:
        torch.export.save(program, tmp, extra_files={_METADATA_FILE: json.dumps(info)})
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


@contextlib.contextmanager
def intra_op_threads(num_threads: int | None) -> Iterator[None]:
    """Runs the block with ``torch.set_num_threads(num_threads)``, restoring the previous count after it.

    ``None`` leaves the count as it is. Switching costs well under a microsecond, so it can wrap every call.

    Examples:
        >>> before = torch.get_num_threads()
        >>> with intra_op_threads(1):
        ...     torch.get_num_threads()
        1
        >>> torch.get_num_threads() == before
        True
    """
    if num_threads is None or num_threads == torch.get_num_threads():
        yield
        return
    previous = torch.get_num_threads()
    torch.set_num_threads(num_threads)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _leaf(observation: Mapping[str, Any], key: str | list[str]) -> Any:
    """``observation[key]``, or the entry at the path ``key`` of a nested dict observation."""
    for part in [key] if isinstance(key, str) else key:
        observation = observation[part]
    return observation


class LoadedPolicy:
    """A deployed DTQL policy: call it on raw observations to get actions.

    Accepts a numpy array or a tensor of any float dtype, one observation ``[obs]`` or a batch ``[B, obs]``, or a
    dict of arrays for dict-observation envs (concatenated in ``metadata["observation_keys"]`` order; a key that is a
    list is the path of an entry of a nested dict, FrankaKitchen's goals). Returns the
    same kind (numpy in, numpy out) and the same batching.

    Each call runs on ``num_threads`` torch intra-op threads (default 1): the policy's MLPs are far too small for a
    thread pool to pay off, and on a machine whose cores are busy a pool of torch's default size (one thread per
    core) makes every call wait for the slowest thread (measured on a busy 2-core machine, batch 1, 1024
    candidates: 78 ms per action with 2 threads, 16 ms with 1; ``benchmarks/bench_acting.py`` measures it on yours).

    Attributes:
        module: the exported program as an ``nn.Module`` (``observation [B, obs] float32 -> action [B, act]``).
        metadata: the facts stored at export time.
        num_threads: intra-op threads per call; ``None`` uses the process's setting (``torch.get_num_threads()``).
    """

    def __init__(self, module: nn.Module, metadata: Mapping[str, Any], num_threads: int | None = 1) -> None:
        if num_threads is not None and num_threads < 1:
            raise ValueError(f"num_threads must be a positive int or None, got {num_threads!r}.")
        self.module = module
        self.metadata = dict(metadata)
        self.num_threads = num_threads

    def _flat_observation(self, observation: Any) -> Any:
        if isinstance(observation, Mapping):
            keys = self.metadata.get("observation_keys")
            if not keys:
                raise ValueError("This policy takes a flat observation vector, not a dict.")
            parts = [_leaf(observation, key) for key in keys]
            if all(isinstance(part, Tensor) for part in parts):
                return torch.cat([part.float() for part in parts], -1)
            return np.concatenate([np.asarray(part, dtype=np.float32) for part in parts], -1)
        return observation

    def __call__(self, observation: Any) -> Any:
        observation = self._flat_observation(observation)
        as_numpy = not isinstance(observation, Tensor)
        obs = torch.as_tensor(np.asarray(observation) if as_numpy else observation).float().cpu()
        expected = self.metadata["observation_dim"]
        if obs.shape[-1] != expected:
            raise ValueError(f"Expected observations of size {expected}, got shape {tuple(obs.shape)}.")
        single = obs.ndim == 1
        with torch.no_grad(), intra_op_threads(self.num_threads):
            action = self.module(obs.unsqueeze(0) if single else obs.reshape(-1, expected))
        action = action.squeeze(0) if single else action.reshape(*obs.shape[:-1], -1)
        return action.numpy() if as_numpy else action

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.metadata})"


def load_policy(path: str | os.PathLike, *, num_threads: int | None = 1) -> LoadedPolicy:
    """Loads a policy written by :func:`export_policy`: ``act = load_policy(path); action = act(observation)``.

    Needs only ``torch`` (and numpy for numpy inputs): no torchrl, no torchrl_dtql classes.

    Args:
        path: the ``.pt2`` file.

    Keyword Args:
        num_threads: torch intra-op threads used by each call (see :class:`LoadedPolicy`); ``None`` keeps the
            process's setting, e.g. for large observation batches on an otherwise idle machine.

    Raises:
        ValueError: the file is not a torchrl_dtql policy export.
    """
    extra = {_METADATA_FILE: ""}
    program = torch.export.load(os.fspath(path), extra_files=extra)
    if not extra[_METADATA_FILE]:
        raise ValueError(f"{os.fspath(path)!r} is a torch.export file but not a torchrl_dtql policy export.")
    metadata = json.loads(extra[_METADATA_FILE])
    return LoadedPolicy(program.module(), metadata, num_threads=num_threads)
