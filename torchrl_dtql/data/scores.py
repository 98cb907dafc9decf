"""Normalized scores on the paper's 0-100 scale.

``score = 100 * (return - ref_min) / (ref_max - ref_min)``, where ``ref_min`` is the mean return
of a random policy and ``ref_max`` that of an expert. The references come, in this order, from:

1. an :class:`~torchrl_dtql.data.OfflineDatasetInfo` that carries them;
2. the metadata of a local Minari dataset (``ref_min_score`` / ``ref_max_score``, under
   :func:`~torchrl_dtql.io.minari_root`);
3. the D4RL v2 table below, matched by task family (``hopper``, ``halfcheetah``, ``walker2d``,
   ``ant``, ``antmaze``, ``pen``/``door``/``hammer``/``relocate``, ``kitchen``), from a D4RL
   dataset name (``hopper-medium-v2``), a Minari id (``mujoco/hopper/medium-v0``) or a gymnasium
   env id (``Hopper-v5``, ``AntMaze_UMaze-v4``, ``AdroitHandPen-v1``, ``FrankaKitchen-v1``).

The D4RL references were measured on the old ``-v2`` MuJoCo envs (mujoco-py); on gymnasium's
``-v5`` envs they are a close but approximate yardstick.
"""
from __future__ import annotations

import json
import re
from typing import Any

import numpy as np

from torchrl_dtql.io import minari_root

__all__ = ["D4RL_DATASET_SCORES", "D4RL_REF_SCORES", "reference_scores", "get_normalized_score", "task_family"]

#: ``family -> (ref_min_score, ref_max_score)``, from D4RL's ``infos.py`` (gym v2, AntMaze v0/v2,
#: Adroit v1 which reuses the ``*-human-v0`` values, Kitchen v0).
D4RL_REF_SCORES: dict[str, tuple[float, float]] = {
    "halfcheetah": (-280.178953, 12135.0),
    "hopper": (-20.272305, 3234.3),
    "walker2d": (1.629008, 4592.3),
    "ant": (-325.6, 3879.7),
    "antmaze": (0.0, 1.0),
    "pen": (96.262799, 3076.8331017826877),
    "door": (-56.512833, 2880.5693087298737),
    "hammer": (-274.856578, 12794.134825156867),
    "relocate": (-6.425911, 4233.877797728884),
    "kitchen": (0.0, 4.0),
}

#: ``(family, kind) -> normalized score`` of the behaviour data of D4RL's v2 gym datasets: the mean
#: episode return of the dataset's episodes, normalized with :data:`D4RL_REF_SCORES` (D4RL's
#: published dataset statistics: mean returns 4770.3, 1422.1 and 2852.1 for the medium sets). The
#: maker's ``--medium-score d4rl`` matches the sampled medium policy to these.
D4RL_DATASET_SCORES: dict[tuple[str, str], float] = {
    ("halfcheetah", "medium"): 40.7,
    ("hopper", "medium"): 44.3,
    ("walker2d", "medium"): 62.1,
}

# Ordered: the first pattern that matches wins ("antmaze" before "ant").
_FAMILY_PATTERNS: tuple[tuple[str, str], ...] = (
    ("antmaze", r"antmaze"),
    ("halfcheetah", r"half_?cheetah"),
    ("hopper", r"hopper"),
    ("walker2d", r"walker"),
    ("kitchen", r"kitchen"),
    ("pen", r"(?:^|[/_\-])pen(?:$|[/_\-])|adroithandpen"),
    ("door", r"(?:^|[/_\-])door(?:$|[/_\-])|adroithanddoor"),
    ("hammer", r"(?:^|[/_\-])hammer(?:$|[/_\-])|adroithandhammer"),
    ("relocate", r"(?:^|[/_\-])relocate(?:$|[/_\-])|adroithandrelocate"),
    ("ant", r"(?:^|[/_\-])ant(?:$|[/_\-])"),
)


def task_family(name: str) -> str | None:
    """Return the D4RL task family of a dataset or env id, or ``None``.

    Args:
        name: a D4RL dataset name, a Minari id, a gymnasium env id or a file name.

    Examples:
        >>> task_family("hopper-medium-v2"), task_family("mujoco/halfcheetah/expert-v0")
        ('hopper', 'halfcheetah')
        >>> task_family("AntMaze_UMaze-v4"), task_family("Ant-v5"), task_family("D4RL/pen/human-v2")
        ('antmaze', 'ant', 'pen')
        >>> task_family("CartPole-v1") is None
        True
    """
    low = name.lower()
    for family, pattern in _FAMILY_PATTERNS:
        if re.search(pattern, low):
            return family
    return None


def _minari_metadata_refs(dataset_id: str) -> tuple[float, float] | None:
    """Reference scores from a *local* Minari dataset's metadata; never downloads."""
    if "/" not in dataset_id or dataset_id.endswith((".hdf5", ".h5")):
        return None
    meta_file = minari_root() / dataset_id / "data" / "metadata.json"
    try:
        if not meta_file.is_file():
            return None
    except OSError:  # a string that cannot be a path (too long, ...) simply is not a local dataset
        return None
    meta = json.loads(meta_file.read_text())
    lo, hi = meta.get("ref_min_score"), meta.get("ref_max_score")
    if lo is None or hi is None:
        return None
    return float(lo), float(hi)


def reference_scores(dataset_or_env_id: Any) -> tuple[float, float]:
    """Return ``(ref_min_score, ref_max_score)`` for a dataset, an env id or a dataset info.

    Args:
        dataset_or_env_id: an :class:`~torchrl_dtql.data.OfflineDatasetInfo` (its own references,
            else its dataset id, else its env id), a Minari dataset id, a D4RL dataset name or a
            gymnasium env id.

    Raises:
        KeyError: no reference is known for it.

    Examples:
        >>> reference_scores("hopper-medium-v2")
        (-20.272305, 3234.3)
        >>> reference_scores("antmaze-umaze-diverse-v0")
        (0.0, 1.0)
    """
    candidates: list[str] = []
    if hasattr(dataset_or_env_id, "dataset_id"):  # an OfflineDatasetInfo (duck-typed)
        info = dataset_or_env_id
        if info.ref_min_score is not None and info.ref_max_score is not None:
            return float(info.ref_min_score), float(info.ref_max_score)
        candidates += [c for c in (info.dataset_id, info.env_id) if c]
    else:
        candidates.append(str(dataset_or_env_id))
    for name in candidates:
        refs = _minari_metadata_refs(name)
        if refs is not None:
            return refs
    for name in candidates:
        family = task_family(name)
        if family is not None:
            return D4RL_REF_SCORES[family]
    raise KeyError(
        f"No reference scores known for {candidates}: not a local Minari dataset with "
        f"ref_min_score/ref_max_score, and no D4RL family ({', '.join(D4RL_REF_SCORES)}) in the name."
    )


def get_normalized_score(dataset_or_env_id: Any, raw_return: Any) -> Any:
    """Normalize an undiscounted episode return to the paper's 0-100 scale.

    Args:
        dataset_or_env_id: see :func:`reference_scores`.
        raw_return: a number, or an array/tensor of returns.

    Returns:
        A float for a scalar input, else a numpy array of the same shape.

    Examples:
        >>> round(get_normalized_score("hopper-medium-v2", 3234.3), 6)
        100.0
        >>> round(get_normalized_score("Hopper-v5", -20.272305), 6)
        0.0
        >>> round(get_normalized_score("halfcheetah-medium-v2", 4922.0), 1)
        41.9
        >>> get_normalized_score("antmaze-umaze-v0", [0.0, 1.0]).tolist()
        [0.0, 100.0]
    """
    lo, hi = reference_scores(dataset_or_env_id)
    if hasattr(raw_return, "detach"):  # torch tensor
        raw_return = raw_return.detach().cpu().numpy()
    arr = np.asarray(raw_return, dtype=np.float64)
    score = 100.0 * (arr - lo) / (hi - lo)
    return float(score) if score.ndim == 0 else score
