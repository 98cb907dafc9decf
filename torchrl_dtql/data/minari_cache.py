"""Pre-fill TorchRL's own ``MinariExperienceReplay`` cache with correct values.

TorchRL 0.11-0.14.1 builds that cache with ``memmap_like``, which allocates the files but copies
nothing, so every value the class loads is zero. The workaround here writes the cache
ourselves: the TED TensorDict of :func:`~torchrl_dtql.data.load_minari` is *copied* into the
memmap (``memmap_``) under ``<root>/<dataset_id>/`` with the ``env_metadata.json`` TorchRL
expects, after which ``MinariExperienceReplay(dataset_id, batch_size, root=root,
download=False)`` loads the right numbers.
"""
from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import asdict
from pathlib import Path

from .minari_files import load_minari, locate_minari_dataset

__all__ = ["prefill_minari_experience_replay", "make_minari_experience_replay", "torchrl_minari_cache_root"]


def torchrl_minari_cache_root() -> Path:
    """TorchRL's own cache of converted Minari datasets (``~/.cache/torchrl/minari``), as ``MinariExperienceReplay``
    uses by default; not Minari's datasets folder (:func:`~torchrl_dtql.io.minari_root`), which it is filled from.

    Examples:
        >>> torchrl_minari_cache_root().parts[-2:]
        ('torchrl', 'minari')
    """
    from torchrl.data.datasets.utils import _get_root_dir

    return Path(_get_root_dir("minari"))


def prefill_minari_experience_replay(
    dataset_id: str,
    root: str | os.PathLike | None = None,
    *,
    overwrite: bool = False,
) -> Path:
    """Write the cache of ``torchrl.data.datasets.MinariExperienceReplay`` for a local Minari dataset.

    Args:
        dataset_id: a Minari id available locally (under :func:`~torchrl_dtql.io.minari_root`).
        root: TorchRL's cache root (default :func:`torchrl_minari_cache_root`).
        overwrite: replace an existing cache (e.g. one zeroed by TorchRL's converter).

    Returns:
        ``<root>/<dataset_id>``.

    Examples:
        >>> from torchrl.data.datasets import MinariExperienceReplay
        >>> root = prefill_minari_experience_replay("local/hopper/medium-v0")  # doctest: +SKIP
        >>> rb = MinariExperienceReplay("local/hopper/medium-v0", 256, root=root.parents[2],
        ...                             download=False)  # doctest: +SKIP
    """
    import minari
    from torchrl.data.datasets.minari_data import _spec_to_dict

    root = Path(root) if root is not None else torchrl_minari_cache_root()
    final = root / dataset_id
    if final.exists():
        if not overwrite:
            return final
        shutil.rmtree(final)
    data_dir = locate_minari_dataset(dataset_id, download=False)
    td, _ = load_minari(data_dir.parent, download=False)
    ds = minari.MinariDataset(data_dir)
    metadata = asdict(ds.spec)
    metadata["observation_space"] = _spec_to_dict(ds.observation_space)
    metadata["action_space"] = _spec_to_dict(ds.action_space)

    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".prefill-", dir=final.parent))
    try:
        target = staging / "data"
        td.memmap_(target)  # copies the values, unlike memmap_like
        (target / "env_metadata.json").write_text(json.dumps(metadata, default=str))
        os.replace(target, final)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return final


def make_minari_experience_replay(dataset_id: str, batch_size: int, *, root: str | os.PathLike | None = None, **kwargs):
    """``MinariExperienceReplay`` over a correctly pre-filled cache (see :func:`prefill_minari_experience_replay`).

    Args:
        dataset_id: a local Minari id.
        batch_size: samples per ``sample()``.
        root: TorchRL's cache root.
        **kwargs: forwarded to ``MinariExperienceReplay`` (``sampler``, ``transform``, ...);
            ``download`` is forced to ``False``.

    Examples:
        >>> rb = make_minari_experience_replay("local/hopper/medium-v0", 256)  # doctest: +SKIP
    """
    from torchrl.data.datasets import MinariExperienceReplay

    root = Path(root) if root is not None else torchrl_minari_cache_root()
    prefill_minari_experience_replay(dataset_id, root)
    kwargs.pop("download", None)
    return MinariExperienceReplay(dataset_id, batch_size, root=root, download=False, **kwargs)
