"""File-system helpers: atomic writes (a temporary file in the same folder, fsync, rename) and the default folders.

Every file the package and its examples write for a user (checkpoints, datasets' metadata, summaries, figures,
exported policies) goes through :func:`atomic_write`, so a run killed mid-write leaves the previous file intact.
"""
from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO

import torch

__all__ = [
    "atomic_torch_save",
    "atomic_write",
    "atomic_write_json",
    "atomic_write_text",
    "default_cache_dir",
    "minari_root",
]


def default_cache_dir() -> Path:
    """Return the folder where torchrl_dtql caches regenerated data.

    ``$TORCHRL_DTQL_CACHE`` when set, else ``$XDG_CACHE_HOME/torchrl_dtql``, else
    ``~/.cache/torchrl_dtql``.

    Examples:
        >>> default_cache_dir().name in ("torchrl_dtql",) or "TORCHRL_DTQL_CACHE" in os.environ
        True
    """
    env = os.environ.get("TORCHRL_DTQL_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    base = Path(xdg).expanduser() if xdg else Path.home() / ".cache"
    return base / "torchrl_dtql"


def minari_root(root: str | os.PathLike | None = None) -> Path:
    """Return the Minari datasets folder: ``root`` if given, else ``$MINARI_DATASETS_PATH``, else ``~/.minari/datasets``.

    The same rule as Minari's own ``minari.storage.get_dataset_path``, without its side effect (it creates the
    folder): the loaders look here, the dataset maker writes here, and the scores read reference returns here.

    Args:
        root: an explicit folder (``~`` is expanded); ``None`` (the default) follows the environment.

    Examples:
        >>> minari_root("/data/minari").as_posix()
        '/data/minari'
        >>> minari_root().name == "datasets" or "MINARI_DATASETS_PATH" in os.environ
        True
    """
    if root is None:
        root = os.environ.get("MINARI_DATASETS_PATH") or Path.home() / ".minari" / "datasets"
    return Path(root).expanduser()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write(path: str | os.PathLike, write_fn: Callable[[BinaryIO], Any]) -> Path:
    """Calls ``write_fn(file)`` on a binary temporary file next to ``path``, fsyncs it and renames it to ``path``.

    Readers never see a half-written file: either the old content or the new one. On any error the temporary file
    is removed and ``path`` is left as it was. The folder is created if needed.

    Examples:
        >>> import tempfile
        >>> p = atomic_write(Path(tempfile.mkdtemp()) / "x.bin", lambda f: f.write(b"ab"))
        >>> p.read_bytes()
        b'ab'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> Path:
    """``torch.save`` to a temporary file in the same folder, then ``os.replace`` it.

    A reader never sees a half-written file, even if the process is killed mid-write.

    Examples:
        >>> import tempfile, torch
        >>> p = atomic_torch_save({"a": torch.ones(2)}, Path(tempfile.mkdtemp()) / "x.pt")
        >>> torch.load(p, weights_only=True)["a"].sum().item()
        2.0
    """
    return atomic_write(path, lambda f: torch.save(obj, f))


def atomic_write_text(text: str, path: str | os.PathLike) -> Path:
    """Write ``text`` (UTF-8) atomically to ``path``.

    Examples:
        >>> import tempfile
        >>> p = atomic_write_text("hi", Path(tempfile.mkdtemp()) / "x.txt")
        >>> p.read_text()
        'hi'
    """
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_json(obj: Any, path: str | os.PathLike) -> Path:
    """Write ``obj`` as indented JSON atomically to ``path``.

    Examples:
        >>> import tempfile
        >>> p = atomic_write_json({"a": 1}, Path(tempfile.mkdtemp()) / "x.json")
        >>> json.loads(p.read_text())
        {'a': 1}
    """
    return atomic_write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n", path)
