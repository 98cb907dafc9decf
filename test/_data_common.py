"""Tiny real dataset files for the data tests: Minari (Minari's own API) and D4RL HDF5 (h5py)."""
from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

OBS_DIM = 11  # Hopper-v5
ACT_DIM = 3
# (length, terminated at the end?) per episode; the others end by truncation.
EPISODES = ((5, True), (4, False), (3, True))


def episode_arrays(seed: int = 0):
    """Deterministic, all-distinct episode arrays: list of dicts with T+1 observations."""
    rng = np.random.default_rng(seed)
    eps = []
    for i, (t, term) in enumerate(EPISODES):
        obs = rng.normal(size=(t + 1, OBS_DIM)) + 10.0 * i
        act = rng.uniform(-1, 1, size=(t, ACT_DIM)).astype(np.float32)
        rew = rng.normal(size=t) + 1.0
        terminations = np.zeros(t, dtype=bool)
        truncations = np.zeros(t, dtype=bool)
        (terminations if term else truncations)[-1] = True
        eps.append(dict(observations=obs, actions=act, rewards=rew, terminations=terminations,
                        truncations=truncations))
    return eps


def write_minari(dataset_id: str, episodes=None, *, env: str | None = "Hopper-v5", **kwargs):
    """Write a Minari dataset under $MINARI_DATASETS_PATH with create_dataset_from_buffers."""
    import minari
    from minari.data_collector import EpisodeBuffer

    episodes = episode_arrays() if episodes is None else episodes
    bufs = [EpisodeBuffer(id=i, seed=None, infos={}, **ep) for i, ep in enumerate(episodes)]
    kwargs.setdefault("ref_min_score", -20.272305)
    kwargs.setdefault("ref_max_score", 3234.3)
    return minari.create_dataset_from_buffers(
        dataset_id=dataset_id,
        buffer=bufs,
        env=env,
        eval_env=env,
        algorithm_name="test",
        description="a tiny test dataset",
        author="test",
        author_email="test@example.com",
        code_permalink="https://example.com",
        data_format="hdf5",
        **kwargs,
    )


def write_d4rl(path: Path, *, n: int = 12, timeouts_at=(5,), terminals_at=(2, 9), next_observations=False,
               nan_obs_at=(), inf_reward_at=(), seed: int = 0, drop_key: str | None = None) -> dict:
    """Write a D4RL-format HDF5 file with h5py; returns the arrays written."""
    import h5py

    rng = np.random.default_rng(seed)
    arrays = {
        "observations": rng.normal(size=(n, OBS_DIM)),
        "actions": rng.uniform(-1, 1, size=(n, ACT_DIM)).astype(np.float32),
        "rewards": rng.normal(size=n).astype(np.float32),
        "terminals": np.isin(np.arange(n), terminals_at),
        "timeouts": np.isin(np.arange(n), timeouts_at),
    }
    if next_observations:
        arrays["next_observations"] = rng.normal(size=(n, OBS_DIM))
    for i in nan_obs_at:
        arrays["observations"][i, 0] = np.nan
    for i in inf_reward_at:
        arrays["rewards"][i] = np.inf
    if drop_key:
        arrays.pop(drop_key)
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)
    return arrays


def fingerprint(folder_or_file: Path) -> dict:
    """sha256 + mtime of every file (to check that sources are never modified)."""
    p = Path(folder_or_file)
    files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
    return {str(f): (hashlib.sha256(f.read_bytes()).hexdigest(), os.stat(f).st_mtime_ns) for f in files}
