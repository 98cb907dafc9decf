"""Training checkpoints that resume a DTQL run exactly: networks, optimizers, schedulers, step, RNG states, config.

A checkpoint is one ``torch.save`` file written atomically (a temporary file in the same folder, flushed, then
``os.replace``d over the target), so a run killed while saving leaves the previous checkpoint intact. It holds:

* ``loss``: ``DTQLLoss.state_dict()``, i.e. every network *and* the target critic;
* ``optimizers`` and ``schedulers``: their ``state_dict()``;
* ``step``: the number of gradient steps done;
* ``rng``: the torch (CPU and CUDA), numpy and ``random`` states, and the replay buffer's own generator if it has one;
* ``config``: the run's configuration as a plain dict, compared key by key on load;
* ``extra``: anything else the caller needs to continue (logger state, evaluation history, ...).

Restoring all of these before the next step makes a CPU run resumed at step ``k`` end with parameters identical, bit
for bit, to those of a run that was never interrupted.
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from torchrl_dtql.io import atomic_torch_save

__all__ = [
    "CHECKPOINT_FORMAT",
    "CheckpointError",
    "CheckpointMismatchError",
    "atomic_torch_save",
    "capture_rng_state",
    "restore_rng_state",
    "config_mismatches",
    "save_checkpoint",
    "read_checkpoint",
    "load_checkpoint",
]

#: Written into every checkpoint; files without it are refused.
CHECKPOINT_FORMAT = "torchrl_dtql.checkpoint/1"


class CheckpointError(RuntimeError):
    """A checkpoint file is missing, unreadable, corrupt, or does not fit the objects it is loaded into."""


class CheckpointMismatchError(CheckpointError):
    """A checkpoint was written by a run whose configuration differs from the current one."""


# ---------------------------------------------------------------------------------------------------------------
# Random number generators
# ---------------------------------------------------------------------------------------------------------------
def _buffer_generator(replay_buffer: Any) -> torch.Generator | None:
    return getattr(replay_buffer, "_rng", None) if replay_buffer is not None else None


def capture_rng_state(*, replay_buffer: Any = None) -> dict[str, Any]:
    """The state of every random number generator a training run draws from.

    Args:
        replay_buffer: a TorchRL replay buffer; if it was given its own generator (``rb.set_rng(...)``), that
            generator's state is captured too.

    Returns:
        A dict of tensors and plain Python values (loadable with ``torch.load(..., weights_only=True)``).

    Examples:
        >>> state = capture_rng_state()
        >>> a = torch.rand(2)
        >>> restore_rng_state(state)
        >>> torch.equal(a, torch.rand(2))
        True
    """
    bit_generator, key, pos, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    state: dict[str, Any] = {
        "torch": torch.get_rng_state(),
        "numpy": {
            "bit_generator": str(bit_generator),
            "key": torch.from_numpy(np.asarray(key, dtype=np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "random": random.getstate(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    generator = _buffer_generator(replay_buffer)
    if generator is not None:
        state["replay_buffer"] = generator.get_state()
    return state


def restore_rng_state(state: Mapping[str, Any], *, replay_buffer: Any = None) -> None:
    """Puts back the generator states captured by :func:`capture_rng_state`.

    Args:
        state: the dict returned by :func:`capture_rng_state`.
        replay_buffer: the buffer whose own generator (if any) gets the saved state.

    Raises:
        CheckpointError: the state holds a replay-buffer generator but the buffer has none (or the reverse).
    """
    torch.set_rng_state(state["torch"])
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            numpy_state["bit_generator"],
            numpy_state["key"].numpy().astype(np.uint32),
            numpy_state["pos"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    version, internal, gauss = state["random"]
    random.setstate((version, tuple(internal), gauss))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if replay_buffer is None:
        return
    generator = _buffer_generator(replay_buffer)
    if ("replay_buffer" in state) != (generator is not None):
        raise CheckpointError(
            "The checkpoint and the replay buffer disagree on whether the buffer has its own random generator: "
            f"saved={'replay_buffer' in state}, now={generator is not None}."
        )
    if generator is not None:
        generator.set_state(state["replay_buffer"])


# ---------------------------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------------------------
def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{name}."))
        else:
            flat[name] = value
    return flat


def _ignored(key: str, ignore: Iterable[str]) -> bool:
    return any(key == pattern or key.startswith(f"{pattern}.") for pattern in ignore)


def config_mismatches(
    saved: Mapping[str, Any], current: Mapping[str, Any], *, ignore: Iterable[str] = ()
) -> list[str]:
    """The dotted keys on which two nested configurations differ, each with both values.

    Args:
        saved: the configuration stored in a checkpoint.
        current: the configuration of the run that wants to load it.

    Keyword Args:
        ignore: dotted keys (or key prefixes, e.g. ``"logger"``) allowed to differ.

    Returns:
        One line per difference, e.g. ``"loss.alpha: checkpoint=5.0, now=1.0"``; empty when they agree.

    Examples:
        >>> config_mismatches({"loss": {"alpha": 5.0}, "seed": 0}, {"loss": {"alpha": 1.0}, "seed": 0})
        ['loss.alpha: checkpoint=5.0, now=1.0']
        >>> config_mismatches({"logger": {"eval_iter": 10}}, {"logger": {"eval_iter": 20}}, ignore=["logger"])
        []
    """
    flat_saved, flat_current = _flatten(saved), _flatten(current)
    missing = object()
    lines = []
    for key in sorted(set(flat_saved) | set(flat_current)):
        if _ignored(key, ignore):
            continue
        old, new = flat_saved.get(key, missing), flat_current.get(key, missing)
        if old != new:
            old_text = "<absent>" if old is missing else repr(old)
            new_text = "<absent>" if new is missing else repr(new)
            lines.append(f"{key}: checkpoint={old_text}, now={new_text}")
    return lines


# ---------------------------------------------------------------------------------------------------------------
# Save / load
# ---------------------------------------------------------------------------------------------------------------
def alpha_rule_of_state(loss_state: Mapping[str, Any]) -> str:
    """How the loss whose ``state_dict`` this is set its alpha: ``"fixed"``, ``"multiplier"`` or ``"q_scale"``
    (from the entries only those rules have: ``log_alpha``, ``alpha_per_q``).

    Examples:
        >>> alpha_rule_of_state({"alpha": torch.tensor(5.0)}), alpha_rule_of_state({"log_alpha": torch.tensor(0.0)})
        ('fixed', 'multiplier')
    """
    if "log_alpha" in loss_state:
        return "multiplier"
    return "q_scale" if "alpha_per_q" in loss_state else "fixed"


def _scheduler_list(schedulers: Sequence[Any] | Mapping[str, Any] | None) -> list[Any]:
    if schedulers is None:
        return []
    if isinstance(schedulers, Mapping):
        return list(schedulers.values())
    return list(schedulers)


def save_checkpoint(
    path: str | os.PathLike,
    *,
    loss: torch.nn.Module,
    optimizers: Any,
    step: int,
    schedulers: Sequence[Any] | Mapping[str, Any] | None = None,
    config: Mapping[str, Any] | None = None,
    replay_buffer: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> Path:
    """Writes everything needed to continue training exactly, atomically.

    Args:
        path: the checkpoint file.

    Keyword Args:
        loss: the loss module (its ``state_dict`` holds every network and the target parameters).
        optimizers: an object with ``state_dict()`` (e.g. :class:`~torchrl_dtql.DTQLOptimizers`, or one optimizer).
        step: the number of gradient steps done.
        schedulers: learning-rate schedulers, in a fixed order (or a mapping).
        config: the run's configuration as a plain nested dict (e.g. ``OmegaConf.to_container(cfg, resolve=True)``).
        replay_buffer: the replay buffer, whose own generator state is saved if it has one.
        extra: more picklable state (plain Python values and tensors), returned as is by :func:`load_checkpoint`.

    Returns:
        The path written.

    Examples:
        >>> import tempfile
        >>> from torchrl_dtql import DTQLLoss, make_dtql_modules, make_dtql_optimizers
        >>> loss = DTQLLoss(**make_dtql_modules(3, 2, hidden_dim=8), alpha=1.0)
        >>> optimizers = make_dtql_optimizers(loss)
        >>> path = save_checkpoint(Path(tempfile.mkdtemp()) / "last.pt", loss=loss, optimizers=optimizers, step=7,
        ...                        config={"loss": {"alpha": 1.0}})
        >>> load_checkpoint(path, loss=loss, optimizers=optimizers, config={"loss": {"alpha": 1.0}})["step"]
        7
    """
    payload = {
        "format": CHECKPOINT_FORMAT,
        "step": int(step),
        "loss": loss.state_dict(),
        "optimizers": optimizers.state_dict(),
        "schedulers": [scheduler.state_dict() for scheduler in _scheduler_list(schedulers)],
        "rng": capture_rng_state(replay_buffer=replay_buffer),
        "config": dict(config) if config is not None else None,
        "extra": dict(extra) if extra is not None else {},
        "versions": {"torch": str(torch.__version__)},
    }
    return atomic_torch_save(payload, path)


def read_checkpoint(path: str | os.PathLike, *, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Reads and validates a checkpoint file without applying it.

    Args:
        path: the checkpoint file.

    Keyword Args:
        map_location: where to load tensors (CPU by default, so a GPU checkpoint opens anywhere).

    Raises:
        CheckpointError: the file is missing, truncated, corrupt, or not a torchrl_dtql checkpoint; the message
            names the file.

    Examples:
        >>> import tempfile
        >>> bad = Path(tempfile.mkdtemp()) / "last.pt"
        >>> _ = bad.write_bytes(b"not a checkpoint")
        >>> read_checkpoint(bad)  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        torchrl_dtql.checkpoint.CheckpointError: Cannot read checkpoint ...
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises many types for a damaged file (pickle, zip, EOF, runtime)
        raise CheckpointError(
            f"Cannot read checkpoint {str(path)!r}: the file is corrupt or truncated ({type(err).__name__}: "
            f"{str(err).splitlines()[0] if str(err) else ''}). Delete it to start over, or restore a copy."
        ) from err
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        found = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(
            f"{str(path)!r} is not a torchrl_dtql checkpoint (expected format {CHECKPOINT_FORMAT!r}, found {found!r})."
        )
    return payload


def load_checkpoint(
    path: str | os.PathLike,
    *,
    loss: torch.nn.Module,
    optimizers: Any = None,
    schedulers: Sequence[Any] | Mapping[str, Any] | None = None,
    replay_buffer: Any = None,
    config: Mapping[str, Any] | None = None,
    ignore_config_keys: Iterable[str] = (),
    restore_rng: bool = True,
    map_location: str | torch.device | None = "cpu",
) -> dict[str, Any]:
    """Loads a checkpoint into live objects, after checking that it belongs to the same configuration.

    Args:
        path: the checkpoint file.

    Keyword Args:
        loss: receives the saved networks and target parameters (strict: every key must match).
        optimizers: receives the optimizer states (``None``: skipped).
        schedulers: receive the scheduler states, in the order they were saved.
        replay_buffer: receives its generator state, if it has its own generator.
        config: the current configuration; if given, it must equal the saved one except for ``ignore_config_keys``.
        ignore_config_keys: dotted keys or prefixes allowed to differ (output folder, logging, device, ...).
        restore_rng: restore the torch / numpy / random (and buffer) generator states.
        map_location: see :func:`read_checkpoint`.

    Returns:
        The checkpoint's content: ``step``, ``config``, ``extra``, and the raw state dicts.

    Raises:
        CheckpointError: unreadable file, or a state that does not fit the objects (the message names the file).
        CheckpointMismatchError: the configurations differ; the message lists every differing key.
    """
    payload = read_checkpoint(path, map_location=map_location)
    if config is not None and payload.get("config") is not None:
        mismatches = config_mismatches(payload["config"], config, ignore=ignore_config_keys)
        if mismatches:
            raise CheckpointMismatchError(
                f"Checkpoint {str(path)!r} was written with a different configuration; refusing to resume. "
                "Differences:\n  " + "\n  ".join(mismatches)
                + "\nRun with the checkpoint's settings, or start a new run in another output folder."
            )
    scheduler_list = _scheduler_list(schedulers)
    if len(scheduler_list) != len(payload["schedulers"]):
        raise CheckpointError(
            f"Checkpoint {str(path)!r} holds {len(payload['schedulers'])} learning-rate schedulers but the run has "
            f"{len(scheduler_list)} (was lr_decay changed?)."
        )
    saved_rule = alpha_rule_of_state(payload["loss"])
    rule = getattr(loss, "auto_alpha", None) or "fixed"
    if saved_rule != rule:
        def setting(rule: str) -> str:
            return "a fixed alpha" if rule == "fixed" else f"alpha='auto' with auto_alpha={rule!r}"

        raise CheckpointError(
            f"Checkpoint {str(path)!r} was saved with {setting(saved_rule)} but this loss has {setting(rule)}: "
            "resume with the alpha setting the run was started with."
        )
    try:
        loss.load_state_dict(payload["loss"])
        if optimizers is not None:
            optimizers.load_state_dict(payload["optimizers"])
        for scheduler, state in zip(scheduler_list, payload["schedulers"]):
            scheduler.load_state_dict(state)
    except (RuntimeError, KeyError, ValueError) as err:
        raise CheckpointError(
            f"Checkpoint {str(path)!r} does not fit this run's networks or optimizers: {str(err).splitlines()[0]}"
        ) from err
    if restore_rng:
        restore_rng_state(payload["rng"], replay_buffer=replay_buffer)
    return payload
